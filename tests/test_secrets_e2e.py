"""Secrets never reach the sync branch: redacted or blocked before anything is committed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import git, handoff_text, make_device, opened
from tests.support.fake_secrets import IN_CONTEXT, SAMPLES, _pem

KINDS = (*SAMPLES, *IN_CONTEXT, "password-in-url", "private-key")


def secret_draft() -> tuple[str, dict[str, str]]:
    """A handoff with secrets of every kind, and ``{label: secret}``."""
    secrets = {kind: makers[0]() for kind, makers in SAMPLES.items()}
    secrets["password-in-url"] = "hunter2-" + "Qx7"
    _, pem_lines = _pem()
    lines = [f"- {kind}: {value}" for kind, value in secrets.items() if kind != "password-in-url"]
    lines.append(
        f"- the db is at postgres://admin:{secrets['password-in-url']}@db.internal:5432/app"
    )
    # The forms that are secrets by what stands around them, each on its own line.
    for kind, makers in IN_CONTEXT.items():
        for index, make in enumerate(makers):
            snippet, secret = make()
            lines.append(f"- {snippet}")
            secrets[f"{kind}-{index}"] = secret
    body = "\n".join(lines) + "\n\n```\n" + "\n".join(pem_lines) + "\n```\n"
    secrets["private-key"] = pem_lines[1]
    return handoff_text("Rotate the leaked credentials", fact="see below") + body, secrets


def all_objects(repo: Path) -> bytes:
    return subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=repo,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def test_redact_replaces_every_kind_and_nothing_secret_is_stored(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", notify=True)
    laptop = make_device(tmp_path, remote, "laptop")
    text, secrets = secret_draft()
    desktop.write_draft(text)
    result = desktop.cli("sync", env=env_for_bus(session_bus))
    assert result.returncode == 0, result.stdout + result.stderr
    assert laptop.cli("sync").returncode == 0
    for repo in (desktop.repo, remote, laptop.repo):
        stored = all_objects(repo)
        for kind, secret in secrets.items():
            assert secret.encode() not in stored, f"{kind} is in a git object of {repo}"
    [path] = git(remote, "ls-tree", "-r", "--name-only", "convosync").splitlines()
    published = opened(remote, path)
    for kind, secret in secrets.items():
        assert secret not in published, f"{kind} is in the sealed handoff"
    for kind in KINDS:
        assert f"[REDACTED:{kind}]" in published, kind
    assert "postgres://admin:[REDACTED:password-in-url]@db.internal:5432/app" in published
    assert "Rotate the leaked credentials" in laptop.materialized.read_text(encoding="utf-8")
    told = result.stderr + "".join(str(n["body"]) for n in notification_server.notifications())
    assert "aws-access-key on line" in told and "private-key on lines" in told
    for secret in secrets.values():
        assert secret not in told


def test_block_refuses_the_draft_and_says_which_kinds_on_which_lines(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", notify=True, secrets="block")
    text, secrets = secret_draft()
    desktop.write_draft(text)
    result = desktop.cli("sync", env=env_for_bus(session_bus))
    assert result.returncode == 1
    assert desktop.draft.read_text(encoding="utf-8") == text, "the draft stays as it was"
    assert git(remote, "ls-tree", "-r", "--name-only", "convosync", check=False) == ""
    stored = all_objects(desktop.repo)
    for secret in secrets.values():
        assert secret.encode() not in stored
    problem = desktop.status()["repos"][0]["draft_problem"]["message"]
    assert 'secrets = "block"' in problem
    for kind in KINDS:
        assert f"{kind} on line" in problem, kind
    [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 5)
    assert note["summary"] == "convosyncd could not publish in app"
    for secret in secrets.values():
        assert secret not in problem and secret not in str(note["body"])


def files_under(root: Path, *, skip: Path) -> dict[Path, bytes]:
    """Every file a device has (config, state, log, work tree), except git's own and `skip`."""
    return {
        path: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts and path != skip
    }


# Each gives the task line as written, what must never appear in clear, the task line as
# published, and the kind the scan reports.


def _split_token() -> tuple[str, list[str], str, str]:
    # A zero-width space splits the GitHub token in the draft; every receiver drops it
    # (and the task line too) and would show the token whole, so the draft is cleaned
    # the same way before it is scanned: the token is found, and only it is replaced.
    token = SAMPLES["github-token"][0]()
    task = f"Rotate {token[:20]}\u200b{token[20:]} after the deploy"
    shown = "Rotate [REDACTED:github-token] after the deploy"
    return task, [token, token[:20], token[20:]], shown, "github-token"


def _plain_token() -> tuple[str, list[str], str, str]:
    token = SAMPLES["huggingface-token"][0]()
    task = f"Rotate {token} after the deploy"
    shown = "Rotate [REDACTED:huggingface-token] after the deploy"
    return task, [token], shown, "huggingface-token"


@pytest.mark.parametrize("mode", ["redact", "block"])
@pytest.mark.parametrize("make_task", [_split_token, _plain_token], ids=["split", "plain"])
def test_a_secret_in_the_task_line_is_never_in_clear(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
    mode: str,
    make_task: Callable[[], tuple[str, list[str], str, str]],
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", notify=True, secrets=mode)
    laptop = make_device(tmp_path, remote, "laptop", notify=True)
    task, secrets, shown, kind = make_task()
    text = handoff_text(task, fact="the task says which")
    desktop.write_draft(text)
    env = env_for_bus(session_bus)

    published = desktop.cli("--verbose", "sync", env=env)
    arrived = laptop.cli("--verbose", "sync", env=env)
    assert arrived.returncode == 0, arrived.stderr
    notes = notification_server.wait_for(lambda notes: len(notes) >= 1 + (mode == "redact"), 5)

    if mode == "redact":
        assert published.returncode == 0, published.stderr
        [path] = git(remote, "ls-tree", "-r", "--name-only", "convosync").splitlines()
        stored = opened(remote, path)
        assert f"task: {shown}\n" in stored
        assert f"### Current Task\n{shown}\n" in stored
        assert git(remote, "log", "-1", "--format=%B", "convosync") == "handoff(desktop)"
        assert f"published desktop/{path.rpartition('/')[2]} ({shown})" in published.stderr
        assert any(
            str(note["body"]).endswith(shown) and "desktop" in str(note["summary"])
            for note in notes
        ), notes
        assert shown in laptop.materialized.read_text(encoding="utf-8")
    else:
        assert published.returncode == 1
        assert desktop.draft.read_text(encoding="utf-8") == text, "the draft stays as it was"
        assert git(remote, "ls-tree", "-r", "--name-only", "convosync", check=False) == ""
        problem = desktop.status()["repos"][0]["draft_problem"]["message"]
        assert f"({kind} on line 2)" in problem
        assert [note["summary"] for note in notes] == ["convosyncd could not publish in app"]

    told = published.stdout + published.stderr + arrived.stdout + arrived.stderr
    told += "".join(str(note["summary"]) + str(note["body"]) for note in notes)
    places: dict[str, bytes] = {"output and notifications": told.encode()}
    for repo in (remote, desktop.repo, laptop.repo):
        places[f"git objects of {repo}"] = all_objects(repo)
    for device in (desktop, laptop):
        for file, data in files_under(device.root, skip=desktop.draft).items():
            places[str(file)] = data
    for where, data in places.items():
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is in {where}"
