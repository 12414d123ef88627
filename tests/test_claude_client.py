"""The real Claude Code client with the real plugin, talking to a Messages API stand-in.

``claude`` (npm's ``@anthropic-ai/claude-code``) validates and installs the packaged
plugin into a temporary home, then runs sessions with ``claude -p`` in a device's clone
against :mod:`tests.support.messages_api` on 127.0.0.1: what the plugin's hook hands
over must be in the session's first model request, once; a handoff written through
``/convosync:generate-handoff`` must reach the other device's next session.

The plugin is installed once per module (``installed``); each device gets a copy of
that home (:meth:`tests.support.claude.Client.home_of`). A new end-to-end check is a
few lines: arrange the devices, then ``client.start_session(device, prompt)`` and look
at ``session.first``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convosyncd import __version__
from convosyncd.plugin import MARKETPLACE_NAME, PLUGIN_ID, PLUGIN_ROOT, installed_status
from tests.support.claude import (
    HOOK_CONTEXT_PREFIX,
    HOOKS_FILE,
    MISSING_CLAUDE,
    Client,
    InstalledHome,
    Session,
    entries,
    find_claude,
    hook_entries,
    install_plugin,
    make_shim,
    run_claude,
)
from tests.support.dbus_session import missing
from tests.support.devices import REPO_ROOT, Device, git, handoff_text, make_device, wait_until
from tests.support.messages_api import REPLY, MessagesAPI, messages_api

# Facts without quotes or markup, so no way of quoting the handoff can change them.
PIZZA = "the person says their favourite pizza is pear, gorgonzola and walnut"
TASK = "Porting the billing export to Parquet"


@pytest.fixture(scope="module")
def claude() -> Path:
    found = find_claude()
    if found is None:
        missing(MISSING_CLAUDE)
    return found


@pytest.fixture(scope="module")
def installed(claude: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledHome:
    """One Claude Code home with the plugin installed from the packaged folder."""
    return install_plugin(claude, tmp_path_factory.mktemp("claude-plugin") / "home")


@pytest.fixture
def api() -> Iterator[MessagesAPI]:
    with messages_api() as server:
        yield server


@pytest.fixture
def client(claude: Path, installed: InstalledHome, api: MessagesAPI, tmp_path: Path) -> Client:
    return Client(claude, installed.home, api, make_shim(tmp_path / "bin").parent)


@pytest.fixture
def alpha(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "alpha")


@pytest.fixture
def bravo(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "bravo")


def publish(device: Device, text: str) -> None:
    device.write_draft(text)
    result = device.cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr


def quoted(text: str) -> str:
    """``text`` as it appears inside a JSON string."""
    return json.dumps(text)[1:-1]


def handed_over(session: Session) -> str:
    """The text of the one hook entry in the session's first request."""
    found = hook_entries(session.first)
    assert len(found) == 1, f"{len(found)} entries carry the hook's context, not 1"
    (entry,) = found
    assert entry.role == "system", entry.role
    assert entry.text.startswith(HOOK_CONTEXT_PREFIX), entry.text[:200]
    return entry.text


def on_remote(remote: Path, device: str) -> list[str]:
    """The files of ``device``'s handoffs on the remote's sync branch."""
    listing = git(remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync", check=False)
    return [line for line in listing.splitlines() if line.startswith(f"handoffs/{device}/")]


# -- the stand-in, on its own ----------------------------------------------------------


def post(
    api: MessagesAPI, path: str, body: Any, *, raw: bytes | None = None
) -> tuple[int, str, bytes]:
    """POST to the stand-in; its status, content type and body."""
    host, _, port = api.url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        payload = raw if raw is not None else json.dumps(body).encode("utf-8")
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def server_sent(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (event, data) pairs; every data line must be JSON."""
    found = []
    for chunk in payload.decode("utf-8").split("\n\n"):
        if chunk.strip():
            fields = dict(line.split(": ", 1) for line in chunk.splitlines())
            assert set(fields) == {"event", "data"}, chunk
            data = json.loads(fields["data"])
            assert data["type"] == fields["event"]
            found.append((fields["event"], data))
    return found


def conversation_body(text: str = "hi") -> dict[str, Any]:
    return {
        "model": "claude-x",
        "stream": True,
        "tools": [{"name": "Write", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": text}],
    }


def test_the_stand_in_streams_a_text_reply_as_the_service_does(api: MessagesAPI) -> None:
    status, kind, payload = post(api, "/v1/messages?beta=true", conversation_body())
    assert status == 200 and kind == "text/event-stream"
    stream = server_sent(payload)
    names = [name for name, _ in stream if name != "ping"]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = dict(stream)
    assert data["message_start"]["message"]["model"] == "claude-x"
    assert data["content_block_start"]["content_block"] == {"type": "text", "text": ""}
    assert data["content_block_delta"]["delta"] == {"type": "text_delta", "text": REPLY}
    assert data["message_delta"]["delta"]["stop_reason"] == "end_turn"
    (request,) = api.requests
    assert request.is_conversation and request.query == "beta=true"
    assert request.headers["content-type"] == "application/json"
    assert request.messages == [{"role": "user", "content": "hi"}]


def test_the_stand_in_answers_the_scripted_request_with_a_tool_call(api: MessagesAPI) -> None:
    call = api.tool_call("Write", {"file_path": "/x/draft.md", "content": "é ✅"}, request=2)
    side = {"model": "claude-x", "stream": True, "messages": [{"role": "user", "content": "t"}]}
    answers = []
    for body in (conversation_body(), side, conversation_body(), conversation_body()):
        answers.append(dict(server_sent(post(api, "/v1/messages?beta=true", body)[2])))
    # A side request (no tools) is answered with text and does not count.
    assert [answer["message_delta"]["delta"]["stop_reason"] for answer in answers] == [
        "end_turn",
        "end_turn",
        "tool_use",
        "end_turn",
    ]
    block = answers[2]["content_block_start"]["content_block"]
    assert block == {"type": "tool_use", "id": call.id, "name": "Write", "input": {}}
    delta = answers[2]["content_block_delta"]["delta"]
    assert delta["type"] == "input_json_delta"
    assert json.loads(delta["partial_json"]) == call.input
    assert [request.is_conversation for request in api.requests] == [True, False, True, True]
    assert len(api.conversation(since=2)) == 2
    with pytest.raises(ValueError, match="answered already"):
        api.tool_call("Write", {}, request=1)


def test_the_stand_in_answers_what_else_the_client_may_ask(api: MessagesAPI) -> None:
    body = {**conversation_body(), "stream": False}
    status, kind, payload = post(api, "/v1/messages", body)
    assert status == 200 and kind == "application/json"
    reply = json.loads(payload)
    assert reply["content"] == [{"type": "text", "text": REPLY}]
    assert reply["stop_reason"] == "end_turn"

    status, _, payload = post(api, "/v1/messages/count_tokens", body)
    assert status == 200 and json.loads(payload)["input_tokens"] > 0

    status, _, payload = post(api, "/v1/unknown", {})
    assert status == 404 and json.loads(payload)["type"] == "error"

    # A body that is not JSON is recorded as such and answered, not a crash.
    status, _, _ = post(api, "/v1/messages", None, raw=b"\xff{not json")
    assert status == 200
    assert api.requests[-1].body is None and not api.requests[-1].is_conversation


def test_the_stand_in_stops_cleanly() -> None:
    with messages_api() as api:
        assert post(api, "/v1/messages", conversation_body())[0] == 200
        port = int(api.url.rpartition(":")[2])
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass


# -- validate and install --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (REPO_ROOT / ".claude-plugin" / "marketplace.json", "marketplace"),
        (PLUGIN_ROOT, "marketplace"),
        (PLUGIN_ROOT / ".claude-plugin" / "plugin.json", "plugin"),
    ],
    ids=["repo-marketplace", "packaged-marketplace", "plugin"],
)
def test_claude_validates_the_marketplaces_and_the_plugin(
    claude: Path, tmp_path: Path, target: Path, kind: str
) -> None:
    # --strict: warnings (unknown fields, missing metadata) fail too.
    result = run_claude(
        claude, tmp_path / "claude-home", "plugin", "validate", "--strict", str(target)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Validating {kind} manifest" in result.stdout
    assert "Validation passed" in result.stdout


def test_claude_validate_reads_the_plugins_hooks(claude: Path, tmp_path: Path) -> None:
    """The check above can fail: a hooks file of the wrong shape is refused."""
    copy = Path(shutil.copytree(PLUGIN_ROOT, tmp_path / "plugin"))
    hooks = copy / "hooks" / "hooks.json"
    data = json.loads(hooks.read_text(encoding="utf-8"))
    data["hooks"]["SessionStart"] = "convosyncd resume --hook"
    hooks.write_text(json.dumps(data), encoding="utf-8")
    result = run_claude(
        claude,
        tmp_path / "claude-home",
        "plugin",
        "validate",
        "--strict",
        str(copy / ".claude-plugin" / "plugin.json"),
    )
    assert result.returncode != 0
    assert "hooks.SessionStart" in result.stdout + result.stderr


def test_the_plugin_installs_from_the_packaged_folder(
    claude: Path, installed: InstalledHome
) -> None:
    assert MARKETPLACE_NAME in installed.marketplace_add.stdout
    assert PLUGIN_ID in installed.plugin_install.stdout
    listed = run_claude(claude, installed.home, "plugin", "list")
    assert listed.returncode == 0, listed.stderr
    assert PLUGIN_ID in listed.stdout and __version__ in listed.stdout

    report = run_claude(claude, installed.home, "plugin", "list", "--json")
    assert report.returncode == 0, report.stderr
    (entry,) = [item for item in json.loads(report.stdout) if item["id"] == PLUGIN_ID]
    assert entry["enabled"] is True and entry["scope"] == "user"
    assert entry["version"] == __version__
    copy = Path(entry["installPath"]).resolve()
    assert copy.is_relative_to(installed.home.resolve()), copy
    assert (copy / "hooks" / "hooks.json").read_bytes() == HOOKS_FILE.read_bytes()

    # convosyncd's own check reads the records the client wrote as installed.
    ok, message = installed_status(installed.home / ".claude")
    assert ok, message
    assert f"{PLUGIN_ID} {__version__} is installed (user scope)" in message


# -- sessions --------------------------------------------------------------------------


def test_the_pizza_test_through_the_real_client(
    client: Client, alpha: Device, bravo: Device
) -> None:
    """A fact only alpha's handoff holds is in bravo's first model request, once."""
    publish(alpha, handoff_text(TASK, fact=PIZZA))
    assert bravo.cli("sync").returncode == 0

    session = client.start_session(bravo, "Where did I leave off?")
    assert session.output["is_error"] is False
    assert session.output["result"] == REPLY
    context = handed_over(session)
    assert PIZZA in context and TASK in context
    # Handed over once: the fact is nowhere else in what the model was sent.
    assert json.dumps(session.first.body).count(quoted(PIZZA)) == 1


def test_a_second_session_is_not_handed_the_same_handoff(
    client: Client, alpha: Device, bravo: Device
) -> None:
    publish(alpha, handoff_text(TASK, fact=PIZZA))
    assert bravo.cli("sync").returncode == 0
    assert PIZZA in handed_over(client.start_session(bravo, "Where did I leave off?"))

    again = client.start_session(bravo, "What next?")
    assert again.output["is_error"] is False
    assert hook_entries(again.first) == []
    assert quoted(PIZZA) not in json.dumps(again.first.body)

    # What is remembered is that handoff, not "hand nothing over": a newer one comes.
    newer = "their dog is called Pixel"
    publish(alpha, handoff_text("Adding the Parquet schema", fact=newer))
    assert bravo.cli("sync").returncode == 0
    context = handed_over(client.start_session(bravo, "And now?"))
    assert newer in context and "Adding the Parquet schema" in context
    assert PIZZA not in context


def test_a_handoff_written_by_generate_handoff_reaches_the_other_devices_next_session(
    client: Client, alpha: Device, bravo: Device, remote: Path
) -> None:
    task = "Moving the invoice mailer to the new queue"
    fact = "their cat is called Biscuit and they leave at 5 on Fridays"
    call = client.api.tool_call(
        "Write", {"file_path": str(alpha.draft), "content": handoff_text(task, fact=fact)}
    )
    daemon = alpha.start()
    try:
        session = client.start_session(alpha, "/convosync:generate-handoff")
        # The command ran as the plugin's skill: its instructions were the prompt...
        command = (PLUGIN_ROOT / "commands" / "generate-handoff.md").read_text(encoding="utf-8")
        instructions = command.split("\n---\n", 1)[1].strip().splitlines()[0]
        assert instructions in "\n".join(entry.text for entry in entries(session.first))
        # ...and its allowed-tools let the Write through without a prompt (no
        # --allowedTools here: a Write the person did not allow is denied under -p).
        assert session.output["is_error"] is False
        assert session.output["permission_denials"] == []
        results = [
            block
            for request in session.conversation
            for message in request.messages
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_result" and block.get("tool_use_id") == call.id
        ]
        assert results, "the client never sent the Write call's result back"
        assert not results[0].get("is_error"), results[0]

        wait_until(lambda: bool(on_remote(remote, "alpha")), 30, "alpha's handoff on the remote")
        wait_until(lambda: not alpha.draft.exists(), 10, "the published draft to be removed")
    finally:
        stopped = daemon.stop()
    assert stopped == 0, daemon.log()

    assert bravo.cli("sync").returncode == 0
    context = handed_over(client.start_session(bravo, "Where did I leave off?"))
    assert fact in context and task in context


@pytest.mark.timeout(900)
def test_a_handoff_pushed_a_second_before_a_session_starts_is_in_it_ten_times_out_of_ten(
    client: Client, alpha: Device, bravo: Device, remote: Path
) -> None:
    """Fresh at session start: both daemons poll only every minute, so only the hook's
    check of the remote (through bravo's daemon) can bring what alpha just pushed."""
    for device in (alpha, bravo):
        device.write_config(pull_interval=60.0)
    daemons = [alpha.start(), bravo.start()]
    try:
        daemons[1].wait_for_log("control socket ")
        for number in range(10):
            fact = f"the release train for step {number} leaves from platform {number + 3}"
            alpha.write_draft(handoff_text(f"Release step {number}", fact=fact))
            wait_until(
                lambda: len(on_remote(remote, "alpha")) == number + 1,  # noqa: B023 - at once
                30,
                f"alpha's handoff {number} on the remote",
            )
            time.sleep(1.0)
            context = handed_over(client.start_session(bravo, "Where did I leave off?"))
            assert fact in context, f"session {number} lacks the handoff pushed 1 s before it"
            assert f"Release step {number}" in context
    finally:
        stopped = [daemon.stop() for daemon in daemons]
    assert stopped == [0, 0], daemons[1].log()
    assert "pulled convosync from origin" in daemons[1].log()
