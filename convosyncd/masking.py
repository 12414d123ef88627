"""Masking credentials that URLs carry, in text bound for a log, a message or crash.log.

This module owns one decision: which characters of a line are a credential a URL carries,
so that whatever writes the line (the log formatter, git's error messages, the crash
report) shows ``***`` instead.  Two places hold one:

* the user information before the host: ``https://user:password@host/`` becomes
  ``https://***@host/``.  People paste passwords unencoded, so the password may hold
  ``@``, ``/``, ``?`` or ``#``: when a ``:`` comes before the last ``@`` of the URL,
  everything up to that ``@`` is masked (``https://user:p@ss/word@host/`` becomes
  ``https://***@host/``).  That also masks ``host:8443/path/`` in the rare URL whose path
  holds an ``@``; hiding a host in a log is the cheaper mistake.
* query and connection-string parameters named like a credential: ``?private_token=``,
  ``&access_token=``, ``token=``, ``sig=``, ``;password=``, ``api_key=`` and anything
  else ending in token, secret, password, passwd, pwd, pass, key, sig, signature or auth
  keeps its name and loses its value: ``?private_token=***``.

A URL here starts with a scheme and ``:/`` (``pathlib`` turns ``https://`` into
``https:/`` in a path built from a URL, and such paths end up in tracebacks) and ends at
white space or a quote.  Masking is cheap and bounded: every pattern is linear in the
length of the text, so a log line with a megabyte of data in it costs milliseconds.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "mask_credentials"]

MASK: Final = "***"

# A scheme not glued to a longer word, then ":/" or "://" ("https:/" comes from pathlib).
# The scheme is at most 32 characters, so a long run of letters costs linear time.
_SCHEME: Final = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}:/{1,3}")
# Where a URL ends in running text, a shell command (shlex quotes) or a Python repr.
_URL_END: Final = re.compile(r"[\s'\"<>`]")
_CREDENTIAL_PARAMETER: Final = re.compile(
    r"(?i)(?P<name>[?&;][ \t]*[A-Za-z0-9_.\-]{0,40}?"
    r"(?:token|secret|password|passwd|pwd|pass|key|sig|signature|auth)[ \t]*=[ \t]*)"
    r"[^&#;\s'\"<>`]+"
)


def mask_credentials(text: str) -> str:
    """`text` with every credential a URL in it carries replaced by ``***``."""
    return _mask_parameters(_mask_user_information(text))


def _mask_user_information(text: str) -> str:
    parts: list[str] = []
    pos = 0
    for scheme in _SCHEME.finditer(text):
        start = scheme.end()
        if start <= pos:
            continue  # inside a stretch already masked
        end_match = _URL_END.search(text, start)
        end = end_match.start() if end_match else len(text)
        at = _user_information_end(text[start:end])
        if at > 0:
            parts.append(text[pos:start])
            parts.append(MASK)
            pos = start + at
    parts.append(text[pos:])
    return "".join(parts)


def _user_information_end(url: str) -> int:
    """Where the user information of `url` (the part after the scheme) ends, or -1.

    The last ``@`` ends it if a ``:`` (user:password) comes before that ``@``; otherwise
    (a user or a token alone) the last ``@`` before the path does.
    """
    last = url.rfind("@")
    if last <= 0:
        return -1
    if url.find(":", 0, last) != -1:
        return last
    slash = url.find("/")
    if slash == -1:
        return last
    return url.rfind("@", 0, slash)


def _mask_parameters(text: str) -> str:
    return _CREDENTIAL_PARAMETER.sub(rf"\g<name>{MASK}", text)
