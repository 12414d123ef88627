"""Credentials in URLs are masked in logs, git's messages and crash.log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from convosyncd import gitcmd, logs, masking
from convosyncd.masking import mask_credentials
from tests.support.devices import run_cli

# Assembled from pieces, like the scanner's fake secrets.
PASSWORD = "hunter2" + "Secret"
TOKEN = "tok" + "3n-value-42"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            f"https://person:{PASSWORD}@git.example.com/team/app.git",
            "https://***@git.example.com/team/app.git",
        ),
        (f"https://{TOKEN}@github.com/acme/app.git", "https://***@github.com/acme/app.git"),
        (f"ssh://git:{PASSWORD}@host:2222/srv/app.git", "ssh://***@host:2222/srv/app.git"),
        ("ssh://git@host:22/srv/app.git", "ssh://***@host:22/srv/app.git"),
        (f"file://person:{PASSWORD}@localhost/srv/app.git", "file://***@localhost/srv/app.git"),
        (
            f"fatal: unable to access 'https://person:{PASSWORD}@git.example.com/app.git/': 403",
            "fatal: unable to access 'https://***@git.example.com/app.git/': 403",
        ),
        (
            f"['add', 'https://person:{PASSWORD}@git.example.com/app']",
            "['add', 'https://***@git.example.com/app']",
        ),
        # pathlib turns "https://" into "https:/" in a path made from a URL
        (
            f"No such file: '/home/me/https:/person:{PASSWORD}@git.example.com/app'",
            "No such file: '/home/me/https:/***@git.example.com/app'",
        ),
    ],
    ids=[
        "user-and-password",
        "token-alone",
        "ssh-password",
        "ssh-user",
        "file",
        "in-git-message",
        "in-repr",
        "pathlib",
    ],
)
def test_user_information_is_masked(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


@pytest.mark.parametrize(
    "password",
    ["p@ss/word", "p@ss", "pa/ss", "pa/ss@", "p#ss?w@rd", "@/@/@"],
    ids=["at-and-slash", "at", "slash", "slash-then-at", "fragment-and-query", "only-reserved"],
)
def test_a_password_with_unencoded_reserved_characters_is_masked_whole(password: str) -> None:
    text = f"push to https://person:{password}@git.example.com/team/app.git failed\n"
    assert mask_credentials(text) == "push to https://***@git.example.com/team/app.git failed\n"


def test_an_at_sign_in_the_path_after_credentials_never_uncovers_the_password() -> None:
    # The URL's own "@" (an npm scope) is indistinguishable from one in a password: the
    # mask goes to the last "@", hiding the host too rather than any of the password.
    text = f"GET https://person:{PASSWORD}@registry.example.com/@acme/tool 404"
    masked = mask_credentials(text)
    assert masked == "GET https://***@acme/tool 404"
    assert PASSWORD not in masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            f"https://gitlab.example.com/api/v4/projects?private_token={TOKEN}&per_page=5",
            "https://gitlab.example.com/api/v4/projects?private_token=***&per_page=5",
        ),
        (
            f"https://api.example.com/cb?state=x&access_token={TOKEN}#frag",
            "https://api.example.com/cb?state=x&access_token=***#frag",
        ),
        (f"https://hooks.example.com/in?token={TOKEN}", "https://hooks.example.com/in?token=***"),
        (
            f"https://acme.blob.core.windows.net/c/b?sv=2022-11-02&se=2026&sig={TOKEN}%3D",
            "https://acme.blob.core.windows.net/c/b?sv=2022-11-02&se=2026&sig=***",
        ),
        (
            f"https://db.example.com/admin?user=app&password={PASSWORD}",
            "https://db.example.com/admin?user=app&password=***",
        ),
        (
            f"jdbc:sqlserver://db.example.com:1433;user=app;password={PASSWORD};encrypt=true",
            "jdbc:sqlserver://db.example.com:1433;user=app;password=***;encrypt=true",
        ),
        (
            f"https://s3.example.com/b/k?X-Amz-Signature={TOKEN}&X-Amz-Date=20260101",
            "https://s3.example.com/b/k?X-Amz-Signature=***&X-Amz-Date=20260101",
        ),
        (
            f"https://maps.example.com/api?key={TOKEN}&q=berlin",
            "https://maps.example.com/api?key=***&q=berlin",
        ),
        (
            f"https://person:{PASSWORD}@git.example.com/app.git?private_token={TOKEN}",
            "https://***@git.example.com/app.git?private_token=***",
        ),
    ],
    ids=[
        "private_token",
        "access_token",
        "token",
        "sig",
        "password",
        "jdbc",
        "aws-signature",
        "key",
        "both",
    ],
)
def test_credential_query_parameters_are_masked(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "https://github.com/acme/convosyncd/pull/42",
        "http://localhost:8080/health?verbose=1",
        "git@github.com:acme/convosyncd.git",
        "https://example.com/users/me@example.com",
        "https://example.com/search?q=token&page=2&sort=name&tokens=5",
        "https://example.com/login?token=&next=/",
        "published desktop/20260101T000000Z-abc.md (Rotate the token)",
        "person@example.com wrote: key=value; a: b",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert mask_credentials(text) == text


def test_masking_twice_changes_nothing_more() -> None:
    text = (
        f"https://person:p@ss/word@git.example.com/app.git?private_token={TOKEN} "
        f"and ssh://git:{PASSWORD}@host/x"
    )
    once = mask_credentials(text)
    assert mask_credentials(once) == once
    assert PASSWORD not in once and TOKEN not in once and "ss/word" not in once


def test_a_megabyte_line_is_masked() -> None:
    # Guards against patterns that backtrack quadratically (pytest's time limit fails it).
    filler = "a" * 500_000
    text = f"{filler} https://person:{PASSWORD}@host/x?token={TOKEN} {'b:' * 250_000}"
    masked = mask_credentials(text)
    assert masked.startswith(filler + " https://***@host/x?token=*** ")
    assert PASSWORD not in masked and TOKEN not in masked


def test_git_module_and_log_use_the_same_masking() -> None:
    assert gitcmd.mask_credentials is masking.mask_credentials
    assert gitcmd.describe_command(
        ["push", f"https://person:p@ss/word@git.example.com/app.git?private_token={TOKEN}"]
    ) == ("git push 'https://***@git.example.com/app.git?private_token=***'")
    formatter = logs._MaskingFormatter("%(message)s")
    record = logging.LogRecord(
        "convosyncd", logging.ERROR, __file__, 1, "fetch %s failed", (f"?token={TOKEN}",), None
    )
    assert formatter.format(record) == "fetch ?token=*** failed"


# --------------------------------------------------------------------------- crash.log


def _crashing_url() -> str:
    # A path longer than PATH_MAX makes `add` fail inside pathlib with an OSError no
    # code expects: a real crash, through the real command line.
    return (
        f"https://person:p@ss/{PASSWORD}@git.example.invalid/"
        + "a" * 5000
        + f"?private_token={TOKEN}"
    )


def _assert_masked(text: str) -> None:
    for secret in (PASSWORD, TOKEN, "p@ss"):
        assert secret not in text
    assert "https:/***@git.example.invalid/" in text  # the path pathlib made of the URL
    assert "?private_token=***" in text


def test_crash_log_masks_credentials_in_argv_and_traceback(tmp_path: Path) -> None:
    result = run_cli("add", _crashing_url(), cwd=tmp_path)

    assert result.returncode == 70, result.stderr[:500]
    crash_log = tmp_path / "home" / ".local" / "state" / "convosync" / "crash.log"
    assert f"the details are in {crash_log}" in result.stderr
    report = crash_log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in report
    assert "OSError" in report
    assert "argv ['add', 'https://***@git.example.invalid/aaa" in report
    _assert_masked(report)
    _assert_masked(result.stderr)


def test_a_crash_report_that_cannot_be_written_is_masked_on_stderr(tmp_path: Path) -> None:
    # The state folder's parent is a file: crash.log cannot be made, so the report goes
    # to standard error instead.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("", encoding="utf-8")
    result = run_cli("add", _crashing_url(), cwd=tmp_path, env={"XDG_STATE_HOME": str(blocked)})

    assert result.returncode == 70, result.stderr[:500]
    assert "the details are in <stderr>" in result.stderr
    assert f"(could not write {blocked}/convosync/crash.log: " in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    _assert_masked(result.stderr)
