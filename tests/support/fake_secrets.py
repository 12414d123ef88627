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
}
