"""Fake secrets of every kind the scanner must catch, built at run time from pieces.

No literal token appears in the repository: each value is a prefix split in two plus
deterministic random characters, so push-protection scanners have nothing to flag.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

_RNG = random.Random(20240611)
_ALNUM = string.ascii_letters + string.digits


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_RNG.choices(alphabet, k=n))


def _b64url_json(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _jwt() -> str:
    header = _b64url_json({"alg": "HS256", "typ": "JWT"})
    payload = _b64url_json({"sub": "user-1234", "iat": 1718000000, "scope": "repo"})
    return f"{header}.{payload}.{_rand(43, _ALNUM + '_-')}"


def _pem(kind: str = "RSA", body_lines: int = 6) -> tuple[str, list[str]]:
    """(label, lines) of a fake PEM private key block, BEGIN and END included."""
    label = f"{kind} PRIVATE KEY" if kind else "PRIVATE KEY"
    lines = ["-----" + "BEGIN " + label + "-----"]
    lines += [_rand(64, _ALNUM + "+/") for _ in range(body_lines)]
    lines.append(_rand(20, _ALNUM + "+/") + "==")
    lines.append("-----" + "END " + label + "-----")
    return label, lines


# kind -> factories of realistic fake secrets of that kind (the exact text that must go).
SAMPLES: dict[str, list[Callable[[], str]]] = {
    "aws-access-key": [
        lambda: "AK" + "IA" + _rand(16, string.ascii_uppercase + string.digits),
        lambda: "AS" + "IA" + _rand(16, string.ascii_uppercase + string.digits),
    ],
    "github-token": [
        lambda: "gh" + "p_" + _rand(36),
        lambda: "gh" + "o_" + _rand(36),
        lambda: "gh" + "u_" + _rand(36),
        lambda: "gh" + "s_" + _rand(36),
        lambda: "gh" + "r_" + _rand(36),
        lambda: "github" + "_pat_" + _rand(22) + "_" + _rand(59),
    ],
    "gitlab-token": [lambda: "gl" + "pat-" + _rand(20, _ALNUM + "_-")],
    "slack-token": [
        lambda: (
            "xo"
            + "xb-"
            + _rand(12, string.digits)
            + "-"
            + _rand(13, string.digits)
            + "-"
            # the final part is alphanumeric in real tokens
            + _rand(24)
        ),
        lambda: (
            "xo"
            + "xp-"
            + "-".join(_rand(12, string.digits) for _ in range(3))
            + "-"
            # user tokens end with 32 hex digits
            + _rand(32, "0123456789abcdef")
        ),
        lambda: (
            "https://hooks."
            + "slack.com/services/T"
            + _rand(8, string.ascii_uppercase)
            # webhook: team, bot and secret parts
            + "/B"
            + _rand(10, string.ascii_uppercase)
            + "/"
            + _rand(24)
        ),
    ],
    "openai-key": [
        lambda: "sk-" + "proj-" + _rand(74, _ALNUM + "_-") + "T3Blbk" + "FJ" + _rand(74),
        lambda: "sk-" + _rand(20) + "T3Blbk" + "FJ" + _rand(20),
        lambda: "sk-" + _rand(48),
    ],
    "anthropic-key": [
        lambda: "sk-" + "ant-api03-" + _rand(93, _ALNUM + "_-") + "AA",
        lambda: "sk-" + "ant-admin01-" + _rand(80, _ALNUM + "_-"),
    ],
    "stripe-key": [
        lambda: "sk" + "_live_" + _rand(24),
        lambda: "rk" + "_live_" + _rand(24),
        lambda: "sk" + "_test_" + _rand(99),
    ],
    "google-api-key": [lambda: "AI" + "za" + _rand(35, _ALNUM + "_-")],
    "jwt": [_jwt],
    "huggingface-token": [lambda: "hf" + "_" + _rand(34), lambda: "hf" + "_" + _rand(40)],
    "npm-token": [lambda: "np" + "m_" + _rand(36)],
}


def _password() -> str:
    # Letters, digits and the punctuation people put in passwords, never a placeholder.
    return _rand(6) + "!" + _rand(3, string.digits) + "#" + _rand(5)


def _base64_key() -> str:
    return base64.b64encode(_RNG.randbytes(32)).decode()


def _uuid() -> str:
    hexdigits = "0123456789abcdef"
    return "-".join(_rand(n, hexdigits) for n in (8, 4, 4, 4, 12))


def _sas_signature() -> str:
    # HMAC-SHA256 in base64, percent-encoded as it stands in a URL.
    signature = _base64_key()
    return signature.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


def _in_context(template: str, make: Callable[[], str]) -> Callable[[], tuple[str, str]]:
    def build() -> tuple[str, str]:
        secret = make()
        return template.replace("%s", secret), secret

    return build


# kind -> factories of (text, secret) for secrets that are secrets because of what
# stands around them: the secret takes the place of %s in the text, and is exactly what
# must go; the rest of the text stays.
IN_CONTEXT: dict[str, list[Callable[[], tuple[str, str]]]] = {
    "password-in-url": [
        _in_context("redis://:%s@cache.internal:6379/0", _password),
        _in_context("postgres://:%s@db.internal/app", _password),
    ],
    "azure-shared-access-key": [
        _in_context(
            "Endpoint=sb://acme.servicebus.windows.net/;"
            "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccess" + "Key=%s",
            _base64_key,
        ),
        _in_context(
            "HostName=acme.azure-devices.net;DeviceId=pi-4;SharedAccess" + "Key=%s",
            _base64_key,
        ),
    ],
    "sas-signature": [
        _in_context(
            "https://acme.blob.core.windows.net/backups/db.tar?sv=2022-11-02&ss=b&srt=o"
            "&sp=r&se=2026-01-01T00:00:00Z&spr=https&si" + "g=%s",
            _sas_signature,
        ),
        _in_context(
            "BlobEndpoint=https://acme.blob.core.windows.net/;"
            "SharedAccessSignature=sv=2022-11-02&ss=b&srt=sco&sp=rl&si" + "g=%s",
            _base64_key,
        ),
    ],
    "connection-string-password": [
        _in_context(
            "Server=tcp:acme.database.windows.net,1433;Database=app;User Id=admin;"
            "Pass" + "word=%s;Encrypt=True;",
            _password,
        ),
        _in_context("Host=db.internal;Username=app;Pw" + "d=%s", _password),
        _in_context("Pass" + "word=%s;Server=db.internal;Database=app", _password),
    ],
    "postgres-password": [
        _in_context("PGPASS" + "WORD=%s psql -h db.internal -U app app", _password),
        _in_context("export PGPASS" + "WORD=%s", _password),
        _in_context("export PGPASS" + "WORD='%s'", _password),
    ],
    "mysql-password": [
        # -p<password> goes with its flag: the password is glued to it.
        _in_context("mysql -u root %s app", lambda: "-p" + _password()),
        _in_context("mysqldump --pass" + "word=%s app > dump.sql", _password),
        _in_context("mysql -h db.internal -uroot -p'%s' app", _password),
        _in_context("MYSQL_" + "PWD=%s mysql -u root", _password),
    ],
    "secret-assignment": [
        _in_context("JWT_" + "SECRET=%s", _password),
        _in_context("export SECRET_" + 'KEY="%s"', _password),
        _in_context("    DB_PASS" + "WORD: %s", _password),
        _in_context('{"client_' + 'secret": "%s"}', _password),
    ],
    "npm-token": [
        _in_context("//registry.npmjs.org/:_auth" + "Token=%s", _uuid),
    ],
}
