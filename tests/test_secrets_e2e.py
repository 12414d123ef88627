"""Secrets never reach the sync branch: redacted or blocked before anything is committed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import git, handoff_text, make_device, opened
from tests.support.fake_secrets import SAMPLES, _pem


def secret_draft() -> tuple[str, dict[str, str]]:
    """A handoff with one secret of every kind, and ``{kind: secret}``."""
    secrets = {kind: makers[0]() for kind, makers in SAMPLES.items()}
    secrets["password-in-url"] = "hunter2-" + "Qx7"
    _, pem_lines = _pem()
    lines = [f"- {kind}: {value}" for kind, value in secrets.items() if kind != "password-in-url"]
    lines.append(
        f"- the db is at postgres://admin:{secrets['password-in-url']}@db.internal:5432/app"
    )
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
    for kind in (*SAMPLES, "password-in-url", "private-key"):
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
    assert 'secrets = "block"' in problem and "github-token on line" in problem
    [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 5)
    assert note["summary"] == "convosyncd could not publish in app"
    for secret in secrets.values():
        assert secret not in problem and secret not in str(note["body"])
