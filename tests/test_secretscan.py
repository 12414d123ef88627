"""Tests for convosyncd.secretscan: detection per kind, redaction, description, robustness.

Every fake secret is assembled at runtime from pieces (prefix + deterministic random
characters), so this file contains no literal token that a push-protection scanner could
flag; test_source_files_contain_no_secrets checks that with the scanner itself.
"""

from __future__ import annotations

import base64
import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convosyncd import secretscan
from convosyncd.handoff import task_line
from convosyncd.secretscan import Finding, describe, redact, scan
from tests.support.fake_secrets import (
    _ALNUM,
    IN_CONTEXT,
    SAMPLES,
    _b64url_json,
    _jwt,
    _pem,
    _rand,
)


def _handoff(secret_line: str) -> tuple[str, int]:
    """A short handoff with `secret_line` as one of its bullets; returns (text, line no)."""
    lines = [
        "## Handoff: sync daemon",
        "",
        "### Current Task",
        "Wire the secret scanner into the commit path.",
        "",
        "### Important Context",
        secret_line,
        "- Deployment config lives in `deploy/values.yaml`.",
        "",
        "### Next Steps",
        "1. Rotate the credential above.",
    ]
    return "\n".join(lines) + "\n", 7


def _cases() -> list[tuple[str, str]]:
    return [(kind, make()) for kind, makers in SAMPLES.items() for make in makers]


def _case_ids() -> list[str]:
    # Ids name the kind only, so test reports never show a token-shaped string.
    return [f"{kind}-{i}" for kind, makers in SAMPLES.items() for i in range(len(makers))]


@pytest.mark.parametrize(("kind", "secret"), _cases(), ids=_case_ids())
def test_each_kind_is_found_and_redacted(kind: str, secret: str) -> None:
    text, line = _handoff(f"- The person pasted their key {secret} into .env by mistake.")
    findings = scan(text)

    assert [(f.kind, f.line, f.end_line) for f in findings] == [(kind, line, line)]
    f = findings[0]
    assert text.splitlines()[line - 1][f.start : f.end] == secret
    redacted = redact(text, findings)
    assert f"[REDACTED:{kind}]" in redacted
    assert secret not in redacted
    assert redacted == text.replace(secret, f"[REDACTED:{kind}]")
    assert scan(redacted) == []


@pytest.mark.parametrize(
    "template",
    [
        'export OPENAI_API_KEY="{s}"',
        "Authorization: Bearer {s}",
        "    token = '{s}'",
        "`{s}`",
        "see https://api.example.com/v1?key={s}&x=1",
        "({s})",
        "{s}",
    ],
)
def test_tokens_are_found_in_common_surroundings(template: str) -> None:
    for kind, make in [
        ("github-token", SAMPLES["github-token"][0]),
        ("jwt", _jwt),
        ("google-api-key", SAMPLES["google-api-key"][0]),
        ("anthropic-key", SAMPLES["anthropic-key"][0]),
    ]:
        secret = make()
        text = template.format(s=secret)
        assert [f.kind for f in scan(text)] == [kind], (kind, template)
        assert redact(text, scan(text)) == text.replace(secret, f"[REDACTED:{kind}]")


def test_aws_secret_key_quoted_and_unquoted() -> None:
    key_id = "AK" + "IA" + _rand(16, string.ascii_uppercase + string.digits)
    secret = _rand(40, _ALNUM + "/+")
    other = _rand(40, _ALNUM + "/+")
    text = (
        "### Important Context\n"
        "- They pasted ~/.aws/credentials:\n"
        "    [default]\n"
        f"    aws_access_key_id = {key_id}\n"
        f"    aws_secret_access_key = {secret}\n"
        f'- and later in the app config: AWS_SECRET_KEY: "{other}"\n'
        "- rotate both.\n"
    )
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [
        ("aws-access-key", 4),
        ("aws-secret-key", 5),
        ("aws-secret-key", 6),
    ]
    redacted = redact(text, findings)
    assert key_id not in redacted
    assert secret not in redacted
    assert other not in redacted
    assert "    aws_secret_access_key = [REDACTED:aws-secret-key]\n" in redacted
    assert "- rotate both.\n" in redacted


def test_password_in_url_keeps_the_rest_of_the_url() -> None:
    password = _rand(14)
    url = f"postgres://app_user:{password}@db.internal.example.com:5432/handoffs?sslmode=require"
    text, line = _handoff(f"- Connection string from the person: {url}")
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [("password-in-url", line)]
    redacted = redact(text, findings)
    assert password not in redacted
    assert (
        "postgres://app_user:[REDACTED:password-in-url]@db.internal.example.com:5432/handoffs"
        in redacted
    )


def test_password_with_reserved_characters_is_fully_redacted() -> None:
    password = "p@ss" + "!w0rd;" + _rand(6)
    text = f"clone with https://alice:{password}@git.example.com/team/repo.git\n"
    redacted = redact(text, scan(text))
    assert redacted == (
        "clone with https://alice:[REDACTED:password-in-url]@git.example.com/team/repo.git\n"
    )


def test_password_repeated_on_the_line_is_redacted_everywhere_but_not_inside_words() -> None:
    typed = "hunter" + "42pass"
    text = (
        f"- url https://bob:{typed}@example.org/ and the person typed {typed} again;"
        " the password-reset page is unrelated\n"
    )
    findings = scan(text)
    assert [f.kind for f in findings] == ["password-in-url", "password-in-url"]
    redacted = redact(text, findings)
    assert typed not in redacted
    assert redacted.count("[REDACTED:password-in-url]") == 2
    assert "the password-reset page is unrelated" in redacted


def test_short_password_is_not_redacted_inside_other_words() -> None:
    text = "use https://svc:" + "pass" + "@proxy.example.com/ (password is in the vault)\n"
    redacted = redact(text, scan(text))
    assert redacted == (
        "use https://svc:[REDACTED:password-in-url]@proxy.example.com/ (password is in the vault)\n"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://user:" + "<password>" + "@db.example.com/",
        "https://user:" + "${DB_PASSWORD}" + "@db.example.com/",
        "https://user:" + "****" + "@db.example.com/",
        "https://user:" + "$DB_PASSWORD" + "@db.example.com/",
        "https://user:" + "[REDACTED:password-in-url]" + "@db.example.com/",
        "https://github.com/acme/convosyncd/pull/42",
        "http://localhost:8080/health",
        "git@github.com:acme/convosyncd.git",
        "ssh://git@github.com:22/acme/convosyncd.git",
        "https://user@example.com/path",
    ],
)
def test_urls_without_real_passwords_are_not_findings(url: str) -> None:
    assert scan(f"- see {url} for details\n") == []


def test_multiple_secrets_on_one_line() -> None:
    gh = SAMPLES["github-token"][0]()
    aws = SAMPLES["aws-access-key"][0]()
    stripe = SAMPLES["stripe-key"][0]()
    text = f"- leaked: {gh}, {aws} and {stripe} (all three rotated)\n"
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [
        ("github-token", 1),
        ("aws-access-key", 1),
        ("stripe-key", 1),
    ]
    assert findings == sorted(findings, key=lambda f: (f.line, f.start))
    assert redact(text, findings) == (
        "- leaked: [REDACTED:github-token], [REDACTED:aws-access-key] and "
        "[REDACTED:stripe-key] (all three rotated)\n"
    )


def test_same_token_twice_on_a_line_is_redacted_twice() -> None:
    token = SAMPLES["github-token"][0]()
    text = f"GH_TOKEN={token} gh auth login --with-token {token}\n"
    findings = scan(text)
    assert len(findings) == 2
    assert redact(text, findings) == (
        "GH_TOKEN=[REDACTED:github-token] gh auth login --with-token [REDACTED:github-token]\n"
    )


def test_overlapping_detections_are_merged() -> None:
    token = SAMPLES["github-token"][3]()  # ghs_ tokens are used as URL passwords
    text = f"git remote set-url origin https://x-access-token:{token}@github.com/acme/app.git\n"
    findings = scan(text)
    assert [f.kind for f in findings] == ["github-token"]
    assert redact(text, findings) == (
        "git remote set-url origin "
        "https://x-access-token:[REDACTED:github-token]@github.com/acme/app.git\n"
    )


def test_crlf_line_endings_are_preserved() -> None:
    token = SAMPLES["gitlab-token"][0]()
    key = SAMPLES["aws-access-key"][0]()
    text = f"### Important Context\r\n- token {token}\r\n- key {key}\r\n- end\r\n"
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [("gitlab-token", 2), ("aws-access-key", 3)]
    assert all(f.end <= len(text.split("\n")[f.line - 1].rstrip("\r")) for f in findings)
    assert redact(text, findings) == (
        "### Important Context\r\n- token [REDACTED:gitlab-token]\r\n"
        "- key [REDACTED:aws-access-key]\r\n- end\r\n"
    )


def test_private_key_block_in_the_middle_of_a_note() -> None:
    _, block = _pem("RSA")
    before = ["### Important Context", "- The person pasted their deploy key:", "```"]
    after = ["```", "- It must be rotated.", "", "### Next Steps", "1. Rotate the key."]
    text = "\n".join([*before, *block, *after]) + "\n"

    findings = scan(text)
    assert findings == [
        Finding(
            kind="private-key",
            line=4,
            start=0,
            end=len(block[-1]),
            end_line=3 + len(block),
        )
    ]
    redacted = redact(text, findings)
    assert redacted == "\n".join([*before, "[REDACTED:private-key]", *after]) + "\n"
    for body_line in block[1:-1]:
        assert body_line not in redacted
    assert scan(redacted) == []


@pytest.mark.parametrize("kind", ["RSA", "EC", "OPENSSH", "ENCRYPTED", "DSA", ""])
def test_private_key_labels(kind: str) -> None:
    _, block = _pem(kind)
    text = "key:\n" + "\n".join(block) + "\nafter\n"
    assert redact(text, scan(text)) == "key:\n[REDACTED:private-key]\nafter\n"


def test_private_key_without_end_line_is_redacted_to_the_end() -> None:
    _, block = _pem("OPENSSH")
    truncated = block[:-1]
    text = "### Important Context\n- pasted (truncated):\n" + "\n".join(truncated) + "\n"
    findings = scan(text)
    assert [(f.kind, f.line, f.end_line) for f in findings] == [
        ("private-key", 3, 2 + len(truncated))
    ]
    assert redact(text, findings) == (
        "### Important Context\n- pasted (truncated):\n[REDACTED:private-key]\n"
    )


def test_private_key_block_with_crlf() -> None:
    _, block = _pem("EC")
    text = "a\r\n" + "\r\n".join(block) + "\r\nb\r\n"
    assert redact(text, scan(text)) == "a\r\n[REDACTED:private-key]\r\nb\r\n"


def test_private_key_on_one_line_with_escaped_newlines() -> None:
    _, block = _pem("")
    escaped = "\\n".join(block) + "\\n"
    text = f'{{"type": "service_account", "private_key": "{escaped}", "client_id": "42"}}\n'
    assert redact(text, scan(text)) == (
        '{"type": "service_account", "private_key": "[REDACTED:private-key]\\n", '
        '"client_id": "42"}\n'
    )


def test_private_key_header_in_prose_only_redacts_the_header() -> None:
    header = "-----" + "BEGIN RSA " + "PRIVATE KEY" + "-----"
    text = (
        f"- The PEM parser now accepts `{header}` headers without a blank line.\n"
        "- Next: support PKCS#8.\n"
    )
    findings = scan(text)
    assert [(f.kind, f.line, f.end_line) for f in findings] == [("private-key", 1, 1)]
    assert redact(text, findings) == (
        "- The PEM parser now accepts `[REDACTED:private-key]` headers without a blank line.\n"
        "- Next: support PKCS#8.\n"
    )


def test_two_private_keys() -> None:
    _, first = _pem("RSA")
    _, second = _pem("OPENSSH")
    text = "one:\n" + "\n".join(first) + "\nmiddle\n" + "\n".join(second) + "\nend"
    findings = scan(text)
    assert [(f.line, f.end_line) for f in findings] == [
        (2, 1 + len(first)),
        (3 + len(first), 2 + len(first) + len(second)),
    ]
    assert redact(text, findings) == (
        "one:\n[REDACTED:private-key]\nmiddle\n[REDACTED:private-key]\nend"
    )


def test_putty_key_file_is_redacted_to_its_mac_line() -> None:
    key_file = [
        "PuTTY-User-Key-File-" + "2: ssh-rsa",
        "Encryption: none",
        "Comment: rsa-key-20240611",
        "Public-Lines: 2",
        _rand(64, _ALNUM + "+/"),
        _rand(40, _ALNUM + "+/") + "=",
        "Private-Lines: 2",
        _rand(64, _ALNUM + "+/"),
        _rand(30, _ALNUM + "+/") + "==",
        "Private-MAC: " + _rand(40, "0123456789abcdef"),
    ]
    text = "- The .ppk file:\n" + "\n".join(key_file) + "\n- Rotate it.\n"
    findings = scan(text)
    assert [(f.kind, f.line, f.end_line) for f in findings] == [("private-key", 2, 11)]
    assert redact(text, findings) == "- The .ppk file:\n[REDACTED:private-key]\n- Rotate it.\n"


def test_allowlist_pragma_does_not_hide_a_secret() -> None:
    token = SAMPLES["github-token"][0]()
    text = f"GH_TOKEN={token}  # pragma: allowlist secret\n"
    assert [f.kind for f in scan(text)] == ["github-token"]


def test_jwt_behind_a_rejected_candidate_is_found() -> None:
    # "eyJ<header>.<not json>.<...>" is rejected; the real token that starts inside that
    # candidate's span must still be found.
    header = _b64url_json({"alg": "HS256"})
    real = _jwt()
    text = f"x {header}.{_rand(30)}.{real} y\n"
    findings = scan(text)
    assert [f.kind for f in findings] == ["jwt"]
    assert real not in redact(text, findings)


def test_crafted_jwt_with_deeply_nested_json_does_not_crash() -> None:
    header = base64.urlsafe_b64encode(b'{"a":' + b"[" * 6000).rstrip(b"=").decode()
    text = f"x {header}.{_b64url_json({'sub': 1})}.{_rand(43)} y\n"
    assert scan(text) == []


def test_scan_leaves_detect_secrets_global_settings_alone() -> None:
    from detect_secrets.settings import get_settings

    before = get_settings().json()
    scan("token " + SAMPLES["github-token"][0]() + "\n")
    assert get_settings().json() == before


# --------------------------------------------------------------------------- in context


def _context_cases() -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    return [(kind, make) for kind, makers in IN_CONTEXT.items() for make in makers]


def _context_ids() -> list[str]:
    return [f"{kind}-{i}" for kind, makers in IN_CONTEXT.items() for i in range(len(makers))]


@pytest.mark.parametrize(("kind", "make"), _context_cases(), ids=_context_ids())
def test_each_secret_in_context_is_found_and_redacted(
    kind: str, make: Callable[[], tuple[str, str]]
) -> None:
    snippet, secret = make()
    text, line = _handoff(snippet)
    findings = scan(text)

    assert [(f.kind, f.line, f.end_line) for f in findings] == [(kind, line, line)]
    f = findings[0]
    assert text.splitlines()[line - 1][f.start : f.end] == secret
    redacted = redact(text, findings)
    assert redacted == text.replace(secret, f"[REDACTED:{kind}]")
    assert scan(redacted) == []


def test_empty_user_url_password_with_reserved_characters() -> None:
    password = "p@ss" + "#w?rd" + _rand(6)
    text = f"- cache: rediss://:{password}@cache.example.com:6380/0\n"
    assert redact(text, scan(text)) == (
        "- cache: rediss://:[REDACTED:password-in-url]@cache.example.com:6380/0\n"
    )


def test_connection_string_password_in_odbc_braces() -> None:
    password = _rand(8) + ";" + _rand(4)
    text = "Driver={ODBC Driver 18};Server=db;Uid=app;P" + "wd={" + password + "};\n"
    assert redact(text, scan(text)) == (
        "Driver={ODBC Driver 18};Server=db;Uid=app;P"
        + "wd={[REDACTED:connection-string-password]};\n"
    )


def test_a_password_is_redacted_wherever_it_stands_on_the_line() -> None:
    password = _rand(12)
    text = f"PGPASS{'WORD'}={password} psql -c 'select 1'  # {password} is the old one\n"
    redacted = redact(text, scan(text))
    assert password not in redacted
    assert redacted.count("[REDACTED:postgres-password]") == 2


def test_a_token_assignment_keeps_the_token_kind() -> None:
    token = SAMPLES["huggingface-token"][0]()
    npm = SAMPLES["npm-token"][0]()
    text = "export HF_TOKEN=" + token + "\nNPM_TOKEN=" + npm + " npm publish\n"
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [("huggingface-token", 1), ("npm-token", 2)]
    assert redact(text, findings) == (
        "export HF_TOKEN=[REDACTED:huggingface-token]\nNPM_TOKEN=[REDACTED:npm-token] npm publish\n"
    )


def test_redacting_one_secret_uncovers_no_other() -> None:
    # Cases the property tests below found: a marker glues like the token it replaced,
    # and a private key redacted between two command lines does not join them into one.
    stripe = "sk" + "_live_" + _rand(24)
    _, block = _pem("RSA", body_lines=2)
    password = _rand(10)
    texts = [
        f"0{stripe}PGPASS" + "WORD=0\n",
        f"mysql -u root -p{password} app" + "\n".join(block) + f"mysql -u root -p{password} x\n",
    ]
    for text in texts:
        findings = scan(text)
        assert findings
        assert scan(redact(text, findings)) == []


# Each is a near miss of one of the forms above: a placeholder, a reference, an empty
# value, a prompt, a name without a value, code that reads a secret from elsewhere.
NOT_SECRETS = [
    "SECRET_" + "KEY=",
    "SECRET_KEY=${SECRET_KEY}",
    "JWT_SECRET=<your-secret>",
    'JWT_SECRET="<your-secret>"',
    "SECRET_KEY=$(openssl rand -hex 32)",
    "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
    'token: "${{ secrets.NPM_TOKEN }}"',
    "set DB_PASSWORD=%DB_PASSWORD%",
    "API_KEY=********",
    "REDIS_PASSWORD=...",
    "REQUIRE_PASSWORD=false USE_TOKEN=true",
    "MAX_TOKENS=4096 TOKEN_TTL=3600 PASSWORD_MIN_LENGTH=12 MAX_TOKEN=4096",
    "SECRET_KEY = os.environ['SECRET_KEY']",
    "JWT_SECRET = process.env.JWT_SECRET",
    "SECRET_KEY: str = os.environ['SECRET_KEY']",
    "JWT_SECRET: Optional[str] = None",
    "- JWT_SECRET: required",
    "  POSTGRES_PASSWORD: example",
    "password = getpass.getpass()",
    "conn = connect(user=user, password=password)",
    '"max_tokens": 4096, "token_type": "bearer"',
    'the error said: password: "must be longer"',
    "Set `JWT_SECRET` and `SECRET_KEY` in the Vercel dashboard.",
    "PGPASSWORD=$DB_PASS psql -h db",
    "export PGPASSWORD=",
    "mysql -p",
    "mysql -u root -p app",
    "mysql -h db -P 3306 -p --ssl-mode=REQUIRED app",
    "mysql -u root -p$MYSQL_ROOT_PASSWORD app",
    "Server=db;Database=app;User Id=app;Password=${DB_PASSWORD};",
    "Server=db;Database=app;Trusted_Connection=True;Password=;",
    "Masked in logs: `;password=`, `?private_token=` and `&sig=`.",
    "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey",
    "SharedAccessKey=<key>",
    "The sig= parameter of a SAS URL expires after an hour.",
    "https://acme.blob.core.windows.net/c/b?sv=2022-11-02&sig=abc",
    "redis://localhost:6379/0 and redis://:@localhost:6379",
    "redis://:${REDIS_PASSWORD}@cache:6379",
    "http://localhost:8080/#/login and https://example.com/search?q=a@b.com",
    "hf_hub_download(repo_id='acme/model', filename='config.json'); HF_TOKEN is read",
    "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",
    "npm_config_registry npm_package_version npm_lifecycle_event",
    "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_near_misses_of_the_new_forms_are_not_findings(text: str) -> None:
    assert scan(text + "\n") == []


NEGATIVE_CONFIG_HANDOFF = """\
## Handoff: move the API to Azure

### Current Task
Moving the API's secrets from `.env` files to Key Vault; JWT_SECRET and SECRET_KEY first.

### Progress So Far
- `.env.example` now lists `JWT_SECRET=`, `SECRET_KEY=` and `DB_PASSWORD=` with no values.
- docker-compose reads `POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}` from the environment.
- `settings.py`: `SECRET_KEY = os.environ["SECRET_KEY"]`, `DEBUG = False`.
- CI sets `PGPASSWORD: ${{ secrets.PGPASSWORD }}` before `psql`, and the local script
  runs `mysql -u root -p app` (it prompts).
- The Service Bus connection string has `SharedAccessKeyName=RootManageSharedAccessKey`;
  the key itself is in Key Vault as `servicebus-key`.
- SAS URLs are made on demand (`sig=` lasts an hour); nothing is stored.
- SQL connection: `Server=tcp:acme.database.windows.net,1433;Database=app;User Id=api;`
  with `Password=<from Key Vault>;` added at start-up.
- Hugging Face downloads go through `hf_hub_download`; HF_TOKEN comes from Key Vault.
- npm: `npm_config_registry` points at the Azure Artifacts feed;
  `.npmrc` has `//pkgs.dev.azure.com/acme/_packaging/feed/npm/registry/:_authToken=${NPM_TOKEN}`.
- Redis runs locally at redis://localhost:6379/0 (no password in dev).

### Key Decisions Made
- REQUIRE_PASSWORD=true in production, false in dev; TOKEN_TTL=3600, MAX_TOKENS=4096.
- `jwt.encode(payload, settings.JWT_SECRET, algorithm="HS256")` stays as it is.
- Passwords are at least 12 characters: `PASSWORD_MIN_LENGTH=12`.

### Next Steps
1. Rotate JWT_SECRET (the person will do it in the portal).
2. Remove `SECRET_KEY: str = "..."` from `config.py`.
"""


def test_realistic_config_handoff_without_secrets_has_no_findings() -> None:
    assert scan(NEGATIVE_CONFIG_HANDOFF) == []
    assert scan(NEGATIVE_CONFIG_HANDOFF, derived=task_line) == []


# --------------------------------------------------------------------------- derived text


def _task_handoff(task: str) -> str:
    return f"## Handoff\n\n### Current Task\n{task}\n\n### Next Steps\n1. Ship it.\n"


@pytest.mark.parametrize(
    "glue",
    ["\u200b", "\u2060", "\u202e", "\x1b[0m", "\x1b]8;;\x07", "<b>", "</span>"],
    ids=["zero-width-space", "word-joiner", "bidi-override", "sgr", "osc-8", "b", "span"],
)
def test_a_token_only_the_task_line_joins_is_redacted_with_its_line(glue: str) -> None:
    token = SAMPLES["github-token"][0]()
    task = f"Rotate {token[:20]}{glue}{token[20:]} today"
    text = _task_handoff(task)
    assert scan(text) == [], "the draft alone hides it"
    assert token in task_line(text), "its task line shows it"

    findings = scan(text, derived=task_line)
    assert [(f.kind, f.line, f.start, f.end_line, f.end) for f in findings] == [
        ("github-token", 4, 0, 4, len(task))
    ]
    redacted = redact(text, findings)
    assert redacted == _task_handoff("[REDACTED:github-token]")
    assert task_line(redacted) == "[REDACTED:github-token]"


def test_a_token_the_task_line_cuts_free_is_redacted() -> None:
    key = "sk-" + _rand(40)
    # The key ends where the task line is cut (120 characters with the ellipsis); in the
    # draft it runs on into "-legacy", which keeps it from looking like a key.
    task = "Check " + "word " * 14 + key + "-legacy and the rest of a long sentence"
    text = _task_handoff(task)
    assert scan(text) == []
    assert task_line(text).endswith(key + "…")

    findings = scan(text, derived=task_line)
    assert [(f.kind, f.line) for f in findings] == [("openai-key", 4)]
    assert task_line(redact(text, findings)) == "[REDACTED:openai-key]"


def test_a_secret_already_redacted_leaves_the_rest_of_the_task_line() -> None:
    token = SAMPLES["huggingface-token"][0]()
    text = _task_handoff(f"Rotate {token} after the deploy")
    assert scan(text, derived=task_line) == scan(text)
    assert task_line(redact(text, scan(text))) == (
        "Rotate [REDACTED:huggingface-token] after the deploy"
    )


def test_a_secret_no_single_line_yields_redacts_the_whole_text() -> None:
    token = SAMPLES["github-token"][0]()
    text = f"first {token[:20]}\n{token[20:]} second\r\n"

    def joined(value: str) -> str:
        return value.replace("\r", "").replace("\n", "")

    assert scan(text) == []
    findings = scan(text, derived=joined)
    assert [(f.kind, f.line, f.start, f.end_line, f.end) for f in findings] == [
        ("github-token", 1, 0, 2, len(token) - 20 + len(" second"))
    ]
    assert redact(text, findings) == "[REDACTED:github-token]\r\n"
    assert scan(joined(redact(text, findings))) == []


NEGATIVE_HANDOFF = """\
## Handoff — convosyncd, 2024-06-11

### Current Task
Make the sync daemon push handoff notes to `convosync/handoffs` without blocking the
editor. The person wants the push to happen within 5 s of the note being written.

### Progress So Far
- ✅ Watcher debounces writes (commit 3f9c2a1b7d4e8f60a1b2c3d4e5f60718293a4b5c)
- ✅ Lock file moved to `$XDG_RUNTIME_DIR/convosyncd.lock` (see 9b1e7c3d)
- ✅ Config schema v2 with `sync_branch` and `remote = "origin"`
- ⏳ Retry with backoff when `git push` fails (draft in `convosyncd/push.py`)
- ⏳ Desktop notification through plyer; falls back to logging on headless hosts
- ⏳ Secret scan before commit (this note is the test fixture for it)
- ⏳ `convosyncd status --json` output (schema in `docs/status.schema.json`)

Timings measured on the person's laptop: debounce 250 ms, commit 40 ms, push 1.2 s.

### Key Decisions Made
- Use GitPython rather than shelling out; `Repo.git.push("origin", "HEAD:refs/heads/x")`.
- Keep one worker per repository; the job id is `repo-7c9e6679-7425-40de-944b-e07fc1f90ae7`.
- Task-runner stays APScheduler 3.x; the disk-usage check runs every 10 min.
- We don't use scikit-learn (sk-learn) or any ML; the "risk-based" ordering is a sort.
- Scanner must not flag e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.

### Important Context
- Upstream: https://github.com/acme/convosyncd (PR https://github.com/acme/convosyncd/pull/42)
- Staging API: http://localhost:8080/api/v1/health and https://staging.example.com:8443/status
- Remote URL is `git@github.com:acme/convosyncd.git`; CI uses ssh://git@github.com:22/acme/x.git
- Database URL comes from the environment: postgres://app@db.internal:5432/handoffs
- Tokens are passed as `Authorization: Bearer <token>`; never commit them.
- GitHub tokens start with "ghp_" and AWS key ids with "AKIA"; the scanner knows both.
- The test vector for base64 is `SGVsbG8sIHdvcmxkIQ==` and
  `data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf`.
- A JWT header alone (`eyJhbGciOiJIUzI1NiJ9`) is not a token.
- The person's machine: Fedora 40, Python 3.12.3, 192.168.1.23, user@example.com.
- Run id 01HZX8K2M3N4P5Q6R7S8T9V0WX; build 2024.06.11-rc1+g3f9c2a1.
- Password policy text mentions "password", "passwd" and "secret" as plain words.
- Env vars read: `CONVOSYNCD_CONFIG`, `GIT_SSH_COMMAND`, `XDG_STATE_HOME` (no secrets).
- Pinned wheel: detect_secrets-1.5.0-py3-none-any.whl sha256:2f3b9c1e0d7a6b5c4e3f2a1b0c9d8e7f
- Release tarball SHA256 894455118A61C58840CB68A925ACCAD75CEACE863D806916228F0614191A1CD5,
  signed by 4DAACCAC7608DBDADAAE732D66B3E7F87E797563 (upper-case hex is not an AWS key id).

### Next Steps
1. Finish retry/backoff in `convosyncd/push.py` and cover it in `tests/test_push.py`.
2. Hook `secretscan.scan()` into `convosyncd/commit.py` before `index.add()`.
3. Ask the person whether the sync branch may be force-pushed.
4. Update `systemd/convosyncd.service` with `Restart=on-failure`.

### Files Modified
- `convosyncd/watcher.py` — debounce (250 ms)
- `convosyncd/config.py` — schema v2, migration from v1
- `convosyncd/commands/status.py` — prints `sync_branch` and last push sha
- `tests/test_watcher.py`, `tests/test_config.py`
- `systemd/convosyncd.service`
- `/home/dev/.config/convosyncd/config.toml` (local only, not committed)

### Open Questions
- Should a failed scan block the push or only notify? (leaning: block)
- Is `sk-` followed by a short word ever a key? e.g. sk-dev or sk-test-suite: no.
- Do we keep a copy of redacted drafts in `~/.local/state/convosyncd/`?
- What about notes bigger than 1 MiB?
- Who reviews the redaction markers before the person resumes on the other machine?
"""


def test_realistic_handoff_without_secrets_has_no_findings() -> None:
    assert len(NEGATIVE_HANDOFF.splitlines()) >= 60
    assert scan(NEGATIVE_HANDOFF) == []
    assert redact(NEGATIVE_HANDOFF, []) == NEGATIVE_HANDOFF
    assert describe([]) == "no secrets found"


def test_secret_added_to_the_realistic_handoff_is_the_only_change() -> None:
    token = SAMPLES["anthropic-key"][0]()
    text = NEGATIVE_HANDOFF.replace(
        "- Tokens are passed as",
        "- The person pasted ANTHROPIC_API_KEY=" + token + "\n- Tokens are",
    )
    findings = scan(text)
    assert [f.kind for f in findings] == ["anthropic-key"]
    redacted = redact(text, findings)
    assert redacted == text.replace(token, "[REDACTED:anthropic-key]")


def test_describe_names_kinds_and_lines_never_secrets() -> None:
    key = SAMPLES["aws-access-key"][0]()
    token1 = SAMPLES["github-token"][0]()
    token2 = SAMPLES["github-token"][1]()
    _, block = _pem("RSA", body_lines=3)
    lines = ["a", "b", f"id {key}", "c", "d", "e", f"t {token1}", "f", f"u {token2}", *block]
    text = "\n".join(lines) + "\n"
    findings = scan(text)
    message = describe(findings)
    assert message == (
        "aws-access-key on line 3, github-token on lines 7 and 9, private-key on lines 10-15"
    )
    for secret in (key, token1, token2, *block[1:-1]):
        assert secret not in message


def test_describe_many_lines_is_capped() -> None:
    findings = [Finding("jwt", n, 0, 5, n) for n in range(1, 30)]
    assert describe(findings) == "jwt on lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 19 more"


def test_describe_never_repeats_a_bogus_kind() -> None:
    token = SAMPLES["github-token"][0]()
    assert token not in describe([Finding(token, 1, 0, 3, 1)])


def test_redact_rejects_findings_from_another_text() -> None:
    with pytest.raises(ValueError, match="beyond"):
        redact("short\n", [Finding("jwt", 1, 0, 50, 1)])
    with pytest.raises(ValueError, match="beyond"):
        redact("short\n", [Finding("jwt", 5, 0, 1, 5)])


def test_finding_validates_its_position() -> None:
    with pytest.raises(ValueError, match="empty"):
        Finding("jwt", 1, 4, 4, 1)
    with pytest.raises(ValueError, match="invalid"):
        Finding("jwt", 0, 0, 1, 0)
    with pytest.raises(ValueError, match="invalid"):
        Finding("jwt", 3, 0, 1, 2)


def test_redact_merges_overlapping_findings_it_is_given() -> None:
    text = "abcdefghij"
    findings = [Finding("jwt", 1, 2, 6, 1), Finding("private-key", 1, 4, 8, 1)]
    assert redact(text, findings) == "ab[REDACTED:private-key]ij"


def test_secret_inside_a_huge_single_line() -> None:
    token = SAMPLES["github-token"][0]()
    jwt = _jwt()
    filler = ("lorem ipsum dolor sit amet " * 40_000)[: 1 << 20]
    # One secret in the middle, one straddling the first window boundary.
    boundary = secretscan._WINDOW - 20
    text = filler[:boundary] + " " + jwt + " " + filler[boundary:600_000] + f" {token} " + filler
    findings = scan(text)
    assert [(f.kind, f.line) for f in findings] == [("jwt", 1), ("github-token", 1)]
    redacted = redact(text, findings)
    assert jwt not in redacted
    assert token not in redacted
    assert len(redacted) == len(text) - len(jwt) - len(token) + len(
        "[REDACTED:jwt][REDACTED:github-token]"
    )


_PATHOLOGICAL: dict[str, Callable[[], str]] = {
    "eyJ": lambda: "eyJ" * 100_000,
    "AKIA": lambda: "AK" + "IA" * 150_000,
    "BEGIN": lambda: "-----BEGIN" * 30_000,
    "url": lambda: "https://a:" * 30_000,
    "url-at": lambda: ("https://a:" + "b@") * 25_000,
    "sk-": lambda: "sk-" * 100_000,
    "base64ish": lambda: "".join(random.Random(1).choices(_ALNUM + "+/_-", k=300_000)),
    "headers": lambda: ("-----" + "BEGIN RSA " + "PRIVATE KEY----- x ") * 10_000,
    "hf_": lambda: "hf_" * 100_000,
    "npm_": lambda: "npm_" * 75_000,
    "sig=": lambda: "&sig=" * 60_000,
    "connection": lambda: (";Pass" + "word=") * 30_000,
    "mysql": lambda: "mysql -u " * 35_000,
    "mysql-prompt": lambda: "mysql -p " * 35_000,
    "names": lambda: "A_" * 150_000 + "TOKEN=",
    "assignments": lambda: "SECRET_" + "KEY=" * 75_000,
    "yaml": lambda: "DB_PASSWORD: " * 25_000,
    "quoted": lambda: ("db" + 'Password="' + "x" * 50) * 5_000,
}


@pytest.mark.parametrize("name", sorted(_PATHOLOGICAL))
def test_pathological_input_is_fast(name: str) -> None:
    text = _PATHOLOGICAL[name]()
    started = time.perf_counter()
    findings = scan(text)
    elapsed = time.perf_counter() - started
    # ~300 KB each, well under 0.3 s here (1 MiB inputs are measured separately, all
    # under 1 s); the limit leaves room for a loaded CI machine.
    assert elapsed < 2.0
    assert scan(redact(text, findings)) == []


# --------------------------------------------------------------------------- properties

_FRAGMENTS = [make() for makers in SAMPLES.values() for make in makers] + [
    "https://user:" + _rand(8) + "@host.example/",
    "://:" + _rand(6) + "@h",
    "aws_secret_access_key=" + _rand(40, _ALNUM + "/+"),
    "\n".join(_pem("RSA", body_lines=2)[1]),
    "-----" + "BEGIN EC " + "PRIVATE KEY-----",
    "-----" + "END EC PRIVATE KEY-----",
    "PuTTY-User-Key-File-" + "2: ssh-rsa\nEncryption: none\n",
    "Private-MAC: " + _rand(40, "0123456789abcdef"),
    "eyJ",
    "AKIA",
    "sk-",
    "ghp_",
    "[REDACTED:jwt]",
    *(make()[0] for makers in IN_CONTEXT.values() for make in makers),
    "PGPASS" + "WORD=",
    "mysql -p",
    " -p",
    "JWT_" + "SECRET=",
    "JWT_" + "SECRET: ",
    "SharedAccess" + "Key=",
    "&si" + "g=",
    ";Pass" + "word=",
    "hf_",
    "npm_",
    ":_auth" + "Token=",
    "'",
    '"',
    "{",
    "}",
    "#",
    ";",
    "=",
    "$",
    "\r\n",
    "\n",
    " ",
    "@",
    ":",
    "/",
    "-",
    "_",
    "]",
]


@st.composite
def _texts(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(st.text(max_size=30), st.sampled_from(_FRAGMENTS)),
            max_size=12,
        )
    )
    return "".join(parts)


def _check_findings_shape(text: str, findings: list[Finding]) -> None:
    lines = text.split("\n")
    previous: tuple[int, int] = (0, -1)
    for f in findings:
        assert f.end_line <= len(lines)
        assert f.end <= len(lines[f.end_line - 1])
        assert (f.line, f.start) >= previous, "sorted and non-overlapping"
        previous = (f.end_line, f.end)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts())
def test_redaction_removes_everything_scan_finds(text: str) -> None:
    findings = scan(text)
    _check_findings_shape(text, findings)
    redacted = redact(text, findings)
    assert scan(redacted) == []
    if not findings:
        assert redacted == text


_TASK_FRAGMENTS = [
    *_FRAGMENTS,
    "### Current Task\n",
    "## Next\n",
    "\u200b",
    "\u202e",
    "\x1b[0m",
    "<b>",
    "- ",
    "word " * 24,
]


@st.composite
def _task_texts(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(st.text(max_size=30), st.sampled_from(_TASK_FRAGMENTS)),
            max_size=12,
        )
    )
    return "".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_task_texts())
def test_redaction_also_cleans_the_task_line(text: str) -> None:
    findings = scan(text, derived=task_line)
    _check_findings_shape(text, findings)
    redacted = redact(text, findings)
    assert scan(task_line(redacted)) == []
    assert scan(redacted) == []


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_arbitrary_text_round_trips(text: str) -> None:
    findings = scan(text)
    redacted = redact(text, findings)
    assert scan(redacted) == []
    if not findings:
        assert redacted == text


# --------------------------------------------------------------------------- threads


def test_concurrent_scans_match_sequential_results() -> None:
    texts = []
    for i, (kind, secret) in enumerate(_cases()[:8]):
        extra = SAMPLES["jwt"][0]() if i % 2 else SAMPLES["stripe-key"][i % 3]()
        texts.append(
            NEGATIVE_HANDOFF.replace(
                "### Next Steps", f"- pasted {secret} ({kind})\n### Next Steps"
            )
            + f"\n- also {extra}\n" * (i + 1)
        )
    expected = [scan(t) for t in texts]
    assert all(expected)

    results: list[list[list[Finding]]] = [[] for _ in texts]
    barrier = threading.Barrier(len(texts))
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                results[index].append(scan(texts[index]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for index, runs in enumerate(results):
        assert runs == [expected[index]] * 15


# --------------------------------------------------------------------------- hygiene


def test_import_does_not_load_detect_secrets() -> None:
    code = "import sys, convosyncd.secretscan; print('detect_secrets' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False"


def test_source_files_contain_no_secrets() -> None:
    for path in (Path(secretscan.__file__), Path(__file__)):
        assert scan(path.read_text(encoding="utf-8")) == [], path
