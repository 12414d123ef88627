"""Secret scanning and redaction for handoff drafts before they are committed.

This module owns the decision "does this draft contain a credential, and where": it finds
secrets a person may have pasted into the conversation (cloud keys, API tokens, JWTs,
private key blocks, passwords inside URLs), replaces them with ``[REDACTED:<kind>]``
markers, and describes what it found in words that never repeat the secret.  It does not
read or write files, talk to git, or decide policy (block the push, notify, ...): callers
get :class:`Finding` objects and act on them.

Engine
    detect-secrets (1.5) is the engine.  Each scan enters ``transient_settings`` with an
    explicit plugin list (:data:`_BUILTIN_PLUGINS`) and no filters, and lets detect-secrets
    instantiate those plugins; no other code's global detect-secrets configuration leaks
    in, and a pasted ``pragma: allowlist secret`` comment cannot hide a secret.  The
    KeywordDetector and the high-entropy detectors are deliberately not enabled: handoffs
    are prose full of commit hashes and identifiers.  Each plugin's ``analyze_string`` is
    called per line, which is the core of detect-secrets' ``scan_line`` without its
    per-line filter and ``PotentialSecret`` bookkeeping (3x slower on inputs with many
    hits) and without any chance of network verification.  detect-secrets keeps
    process-global settings and is not thread-safe, so everything that touches it runs
    under :data:`_ENGINE_LOCK` (the daemon scans from several worker threads; other code
    in the process must not use detect-secrets concurrently with :func:`scan`).

Detectors we add or replace
    They are detect-secrets ``RegexBasedDetector`` subclasses rather than plain regexes
    beside the engine: every detector then goes through the same path (``analyze_string``
    -> ``secret_type`` -> :data:`_KIND_TABLE`), and replaced built-ins keep their other
    behaviour (the JWT structural check).  The classes are created on the first scan,
    because importing detect-secrets costs ~120 ms and the CLI imports this module on every
    start; the patterns themselves are plain module constants.

    * added: Anthropic keys, Google API keys, unquoted ``aws_secret_access_key = ...``
      assignments, Slack app/refresh tokens, every PEM ``BEGIN ... PRIVATE KEY`` header
      (the built-in list misses e.g. ``ENCRYPTED PRIVATE KEY``), Stripe test keys and
      keys longer than 24 characters, URL passwords containing reserved characters or
      with an empty user name, Hugging Face and npm tokens (and ``.npmrc`` auth tokens),
      Azure ``SharedAccessKey=`` and shared access signatures (``sig=``), ``Password=``
      and ``Pwd=`` in connection strings, ``PGPASSWORD``, ``mysql -p<password>`` /
      ``--password=`` / ``MYSQL_PWD``, and literal values assigned to ``JWT_SECRET``,
      ``SECRET_KEY``, ``*_PASSWORD``, ``*_TOKEN``, ``*_API_KEY`` and the like.
    * replaced: GitHub and GitLab (1.5.0 wraps the prefix in a capturing group, so
      ``findall`` reports just ``"ghp"``), JWT (unbounded quantifiers are quadratic on one
      long line, and the lazy tail drops the signature), OpenAI (quadratic; also misses
      ``sk-proj-`` keys without the ``T3BlbkFJ`` marker) and the AWS key id pattern (it
      matched inside upper-case hex digests; its quoted-secret-key pattern is kept).

Performance
    Drafts are up to 1 MiB.  Every pattern is bounded and, where a prefix could repeat
    (``eyJeyJ...``), anchored to a token boundary so a long run has one candidate start.
    Lines longer than :data:`_WINDOW` characters are scanned in overlapping windows (a
    secret up to :data:`_OVERLAP` characters long is always wholly inside one window).
    Lines are batched into segments pre-checked with the detectors' raw patterns; only
    segments with a hit are scanned line by line.

Positions
    Lines are separated by ``"\\n"`` only; a ``"\\r"`` before it belongs to the line but
    is never part of a secret, so CRLF drafts keep their line endings through
    :func:`redact`.  Offsets count characters (``str`` indices), not bytes.  When
    detect-secrets reports a value on a line, every occurrence of the value on that line
    is redacted (for passwords: every occurrence not glued to other letters or digits);
    this also covers every place a detector's regex actually matched.
    A redaction marker counts as part of a token on both sides, so that redacting one
    secret never makes a glued neighbour look like a new one.

Passwords
    Values people choose (URL and connection-string passwords, ``PGPASSWORD``, mysql's,
    the assignments) are redacted only where they are not glued to letters or digits,
    and never when they are placeholders or references (``<password>``, ``${VAR}``,
    ``$(command)``, ``%VAR%``, ``{{ secrets.X }}``, ``****``, ``true``, ``none``).  An
    assignment counts only with a literal value: ``NAME=value`` or ``NAME: value`` for
    upper-case names, a quoted value for any name; ``SECRET_KEY = os.environ[...]`` is
    code, not a secret.  Its value has six characters at least.

Derived text
    :func:`scan` can also be given a function that derives more published text from the
    draft (the task line goes into front matter, commit messages and notifications).
    That text is cleaned of escapes and invisible characters and cut to a length, so it
    can show a token the draft itself splits; such a secret is reported as the whole line
    that yields it.

Private keys
    A PEM header that starts a block (nothing but key material after it on its line) is
    redacted together with everything up to the next ``END ... PRIVATE KEY`` marker, or to
    the end of the text if there is none.  A header quoted inside a sentence is redacted on
    its own, so a note about PEM parsing does not lose everything after that sentence.
    PuTTY key files run from their first line to the ``Private-MAC`` line.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from detect_secrets.plugins.base import RegexBasedDetector

__all__ = ["Finding", "describe", "redact", "scan"]


@dataclass(frozen=True)
class Finding:
    """One secret in a text.  Never holds the secret itself, only where it is."""

    kind: str  # a stable short name such as "github-token"
    line: int  # 1-based line number where the secret starts
    start: int  # 0-based character offset of the secret within that line
    end: int  # exclusive end offset within line `end_line`
    end_line: int  # 1-based last line the secret covers (== line except for private keys)

    def __post_init__(self) -> None:
        if self.line < 1 or self.end_line < self.line or self.start < 0 or self.end < 0:
            raise ValueError(f"invalid finding position: {self!r}")
        if self.end_line == self.line and self.end <= self.start:
            raise ValueError(f"empty finding: {self!r}")


# --------------------------------------------------------------------------- limits

_WINDOW: Final = 16_384
"""Lines longer than this many characters are scanned in overlapping windows."""
_OVERLAP: Final = 4_096
"""Overlap between windows: the longest secret guaranteed to be caught in a long line."""
_SEGMENT: Final = 16_384
"""Approximate size of the batches of lines pre-checked with one regex search."""
_MAX_LINES_SHOWN: Final = 10
"""describe() lists at most this many line numbers per kind."""

_ENGINE_LOCK: Final = threading.Lock()
"""Serialises every use of detect-secrets (process-global settings, not thread-safe)."""


# --------------------------------------------------------------------------- patterns
# Characters that glue a token to what precedes it.  "]" is included so that a token
# which directly follows a redaction marker is treated the same before and after
# redaction ("...]ghp_..." is not a token start either way); for the same reason the
# look-aheads that end a token treat "[" as glue.
_GLUE: Final = r"A-Za-z0-9_\]\-"


def _unglued(prefix: str) -> str:
    """Regex for the literal `prefix` when it is not glued to a preceding token character.

    The look-behind is placed after the literal (it re-checks the literal plus one
    character) so the regex engine can still use its fast literal-prefix search.
    """
    lit = re.escape(prefix)
    return f"{lit}(?<![{_GLUE}]{lit})"


_AWS_KEY_ID: Final = re.compile(r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}")
# detect-secrets' key id pattern, but not inside a longer run of base64/hex characters
# (upper-case SHA-256 digests and GPG fingerprints contain "ACCA" + 16 more often).
_AWS_ID_PATTERN: Final = re.compile(
    rf"(?<![A-Za-z0-9+/\]]){_AWS_KEY_ID.pattern}(?![A-Za-z0-9+/\[])"
)

_GITHUB_PATTERNS: Final = [
    re.compile(rf"gh[pousr]_(?<![{_GLUE}]gh[pousr]_)[A-Za-z0-9]{{36,255}}"),
    re.compile(_unglued("github_pat_") + r"[A-Za-z0-9_]{22,255}"),
]
_GITLAB_PATTERNS: Final = [
    re.compile(r"(?:glpat|gldt|glft|glsoat|glrt|glffct)-[A-Za-z0-9_\-]{20,255}"),
    re.compile(r"GR1348941[A-Za-z0-9_\-]{20,255}"),
    re.compile(r"glcbt-(?:[0-9a-fA-F]{2}_)?[A-Za-z0-9_\-]{20,255}"),
    re.compile(r"glimt-[A-Za-z0-9_\-]{25,255}"),
    re.compile(r"glptt-[A-Za-z0-9_\-]{40,255}"),
    re.compile(r"glagent-[A-Za-z0-9_\-]{50,1024}"),
    re.compile(r"gloas-[A-Za-z0-9_\-]{64,255}"),
]
_JWT_SEGMENT: Final = r"[A-Za-z0-9_\-]{2,8192}={0,2}"
_JWT_PATTERNS: Final = [
    # The header holds at least {"alg":"..."}: 15 or more base64 characters.
    re.compile(
        _unglued("eyJ") + rf"[A-Za-z0-9_\-]{{12,8192}}={{0,2}}\.{_JWT_SEGMENT}(?:\.{_JWT_SEGMENT})?"
    ),
]
_OPENAI_PATTERNS: Final = [
    # Keys carrying the base64 "OpenAI" marker, any project/org prefix.
    re.compile(_unglued("sk-") + r"[A-Za-z0-9_\-]{1,250}?T3BlbkFJ[A-Za-z0-9_\-]{20,250}"),
    # Project, service-account and admin keys.
    re.compile(_unglued("sk-") + r"(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,250}"),
    # Legacy user keys: one unbroken run of letters and digits.
    re.compile(_unglued("sk-") + r"[A-Za-z0-9]{32,250}(?![A-Za-z0-9_\-\[])"),
]
_ANTHROPIC_PATTERNS: Final = [
    re.compile(_unglued("sk-ant-") + r"[A-Za-z0-9_\-]{20,300}"),
]
_GOOGLE_API_KEY_PATTERNS: Final = [
    re.compile(_unglued("AIza") + r"[0-9A-Za-z_\-]{35}"),
]
_STRIPE_PATTERNS: Final = [
    re.compile(rf"[rs]k_(?<![{_GLUE}][rs]k_)(?:live|test)_[0-9A-Za-z]{{20,247}}"),
]
_AWS_SECRET_ASSIGNMENT_PATTERNS: Final = [
    # aws_secret_access_key = ..., AWS_SECRET_ACCESS_KEY=..., "SecretAccessKey": "..."
    # (detect-secrets only finds quoted values next to the word "aws").
    re.compile(
        r"(?i:secret[_\-]?access[_\-]?key|aws[_\-]?secret[_\-]?key)"
        r"[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?([A-Za-z0-9/+]{40,128}={0,2})"
    ),
]
_SLACK_EXTRA_PATTERNS: Final = [
    re.compile(r"xapp-\d-[A-Za-z0-9]{1,64}-\d{1,32}-[A-Za-z0-9]{1,128}"),
    re.compile(r"xoxe(?:\.xox[bp])?-\d-[A-Za-z0-9]{1,255}"),
]
_PEM_HEADER_PATTERNS: Final = [
    re.compile(r"-{4,5} ?BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{4,5}"),
    re.compile(r"PuTTY-User-Key-File-[3]"),
]
_URL_PASSWORD_PATTERNS: Final = [
    # user:password@ where the password may contain reserved characters, even "@", "?"
    # or "#" (but not "/", which would make every host:port/path@x a password): the
    # greedy run backs off to the last "@" before the host.  The user name may be empty
    # (redis://:<password>@host, postgres://:<password>@host/db), which detect-secrets'
    # own pattern misses.
    re.compile(r"://[^/?#\s:@\[\]]{0,256}:([^/\s]{1,256})@(?=[^/?#\s@])"),
]
_HUGGINGFACE_PATTERNS: Final = [
    re.compile(_unglued("hf_") + r"[A-Za-z0-9]{34,255}"),
]
# An identifier made of words: an optional capital and two or more lower-case letters each.
_WORDS: Final = re.compile(r"(?:[A-Z]?[a-z]{2,})+")
_NPM_PATTERNS: Final = [
    # npm_ and 36 base62 characters (the last six a checksum); npm_config_registry and the
    # other npm_* variables npm sets have underscores in them.
    re.compile(_unglued("npm_") + r"[A-Za-z0-9]{36}(?![A-Za-z0-9_\-\[])"),
    # .npmrc: //registry.npmjs.org/:_authToken=<token> (legacy tokens are UUIDs); a
    # ${NPM_TOKEN} reference is not a secret, nor is a redaction marker.
    re.compile(r":_authToken[ \t]*=[ \t]*[\"']?([^\s\"'`$\[][^\s\"'`]{7,255})"),
]
_AZURE_SHARED_ACCESS_KEY_PATTERNS: Final = [
    # Service Bus, Event Hubs and IoT Hub connection strings; "SharedAccessKeyName=" names
    # the policy and is not a secret.
    re.compile(_unglued("SharedAccessKey=") + r"([A-Za-z0-9+/]{20,256}={0,2})"),
]
_SAS_SIGNATURE_PATTERNS: Final = [
    # The sig= of a shared access signature (a storage URL's query, a connection string's
    # SharedAccessSignature=, a Service Bus token): an HMAC-SHA256 in base64, 43 or 44
    # characters, often percent-encoded.
    re.compile(_unglued("sig=") + r"((?:%[0-9A-Fa-f]{2}|[A-Za-z0-9+/_\-]){40,512}={0,2})"),
]
# The value of a key in a connection string: quoted, in ODBC braces, or up to the next ";"
# (or the backquote that ends a connection string quoted as code in markdown).
_CONNECTION_VALUE: Final = (
    r"(?:\"([^\"\r\n]{1,256})\"|'([^'\r\n]{1,256})'|\{([^{}\r\n]{1,256})\}"
    r"|([^;\"'`\s{}][^;\"'`\s]{0,255}))"
)
_CONNECTION_PASSWORD_PATTERNS: Final = [
    # Server=...;Database=...;User Id=...;Password=...; (ADO.NET, ODBC, JDBC, Npgsql): a
    # Password or Pwd key that follows another key, or is followed by one.
    re.compile(r";[ \t]*(?i:password|pwd)[ \t]*=[ \t]*" + _CONNECTION_VALUE),
    # (its first letter first, so that the regex engine can skip ahead to it)
    re.compile(
        rf"[Pp](?<![{_GLUE}][Pp])(?i:assword|wd)[ \t]*=[ \t]*" + _CONNECTION_VALUE + r"[ \t]*;"
    ),
]


# The forms of an assignment of a literal value (see _assignments), as regex pieces:
# unquoted after "=" (.env files, export, NAME=value command); quoted after "=" or ":"
# (shell, JSON, YAML, PowerShell), the name quoted or not; a YAML key with the value
# alone on its line, unless the value is a plain lower-case word ("required",
# "example").  Python's NAME = os.environ[...] and NAME: str assign no literal.
_BARE_VALUE: Final = r"=([^\s\"'`]{%d,256})"
_QUOTED_VALUE: Final = r"[:=][ \t]{0,8}(?:\"(%s{%d,256})\"|'(%s{%d,256})')"
_YAML_VALUE: Final = (
    r":[ \t]+(?![a-z]+[ \t]*(?:#|$))"
    r"([^\s\"'`#\[\](){}<>,;][^\s\"'`\[\](){}<>,;]{%d,255})(?:[ \t]+#.*)?[ \t]*$"
)


def _quoted(minimum: int, *, spaces: bool) -> str:
    inner, inner_single = (r"[^\"\r\n]", r"[^'\r\n]") if spaces else (r"[^\"\s]", r"[^'\s]")
    return _QUOTED_VALUE % (inner, minimum, inner_single, minimum)


def _assignments(name: str, minimum: int, *, spaces: bool) -> list[re.Pattern[str]]:
    """Patterns for the variable `name` assigned a literal value of `minimum` characters.

    `spaces` lets a quoted value hold spaces.  A YAML key is a whole line (indented, maybe
    a list item): anchoring both ends also keeps the windows of a very long line from
    looking like one.
    """
    start = _unglued(name)
    return [
        re.compile(start + _BARE_VALUE % minimum),
        re.compile(start + r"[\"']?[ \t]{0,8}" + _quoted(minimum, spaces=spaces)),
        re.compile(r"^[ \t]*(?:-[ \t]+)?" + start + _YAML_VALUE % (minimum - 1), re.MULTILINE),
    ]


_POSTGRES_PASSWORD_PATTERNS: Final = _assignments("PGPASSWORD", 1, spaces=True)
_MYSQL_CLIENTS: Final = (
    r"(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mysqlslap"
    r"|mysqlsh|mariadb|mariadb-dump|mariadb-admin|mariadb-import|mariadb-check)"
)
_MYSQL_COMMAND: Final = re.compile(rf"(?<![{_GLUE}]){_MYSQL_CLIENTS}(?:\.exe)?(?![A-Za-z0-9_\-\[])")
# What ends a shell command line; a redaction marker too, since redacting a private key
# joins the lines around it.
_COMMAND_SEPARATOR: Final = re.compile(r"[\n|;&]|\[REDACTED:")
_MYSQL_PASSWORD_PATTERNS: Final = [
    # -p<password> and --password=<password>, which count when a mysql command starts
    # the same command line (MysqlPassword below checks); "-p" alone, then a space, makes
    # mysql prompt.  The password of -p<password> is reported with its "-p".  Unquoted,
    # it ends where the shell would end it.
    re.compile(
        r"[ \t](?P<flag>--password=|-p)(?:\"(?P<dq>[^\"\r\n]{1,128})\"|'(?P<sq>[^'\r\n]{1,128})'"
        r"|(?P<bare>[^\s\"'`|;&<>()]{1,128}))"
    ),
    *_assignments("MYSQL_PWD", 1, spaces=True),
]
# JWT_SECRET, SECRET_KEY, DB_PASSWORD, GITHUB_TOKEN, STRIPE_API_KEY and the like, in the
# same forms.  Six characters at least: shorter values are words like "test", "none" or
# "dev".  The patterns find the value; SecretAssignment then reads the name in front of
# it (a pattern that starts with the name has no literal to search for and costs four
# times as much on a long draft).
_SECRET_ASSIGNMENT_PATTERNS: Final = [
    re.compile(_quoted(6, spaces=False)),
    re.compile(_BARE_VALUE % 6),
    re.compile(_YAML_VALUE % 5, re.MULTILINE),
]
# The name in front of a value: an identifier not glued to a longer token or a marker.
_NAME_BEFORE: Final = re.compile(rf"(?<![{_GLUE}])[A-Za-z0-9_\-]{{1,80}}\Z")
# Upper-case names count in every form.
_SECRET_VARIABLE: Final = re.compile(
    r"(?:[A-Z0-9]+_)*(?:SECRET(?:_?KEY)?|PASSWORD|PASSWD|PASSPHRASE|TOKEN|API_?KEY)"
)
# In code and config files names come in any case (jwtSecret, "client_secret",
# db-password): only a quoted literal counts there, never an expression.
_SECRET_NAME: Final = re.compile(
    r"[A-Za-z0-9_\-]*?(?i:secret(?:[_\-]?key)?|passw(?:or)?d|passphrase|token|api[_\-]?key)"
)
_YAML_INDENT: Final = re.compile(r"(?:^|\n)[ \t]*(?:-[ \t]+)?\Z")

# Private key blocks.
_PEM_END: Final = re.compile(
    r"(?:-{4,5} ?)?END [A-Z0-9 ]{0,40}?PRIVATE KEY(?: BLOCK)?(?: ?-{4,5})?"
)
_PUTTY_END: Final = re.compile(r"Private-MAC:[ \t]*[0-9A-Fa-f]*")
_MARKER_TAIL: Final = re.compile(r"(?: BLOCK)?(?: ?-{4,5})?")
# What may follow a header on its line for it to count as the start of a real block:
# nothing (but quotes/punctuation), an escaped newline (JSON, .env), or key material.
_BLOCK_REST: Final = re.compile(r"[\s\"'`,;]*\Z|\s*(?:\\r)?\\n|\s*[A-Za-z0-9+/=]{16}")

# Values of a password (in a URL, a connection string, an assignment) that are
# placeholders or references, not secrets: <password>, {password}, {{ secrets.X }},
# ${VAR}, $VAR, $(command) (cut at its first space), %VAR%, %s, ****, xxxx, ...
_PASSWORD_PLACEHOLDER: Final = re.compile(
    r"<[^<>]*>|\{[^{}]*\}|\{\{[^{}]*\}\}|\$\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\$\(.*"
    r"|%[A-Za-z_][A-Za-z0-9_]*%|%(?:\([A-Za-z_]*\))?s|\*+|[xX]+|\.{2,3}|\u2026"
)
# Values that say something about a password rather than being one.
_NOT_PASSWORDS: Final = frozenset(
    {"true", "false", "yes", "no", "on", "off", "none", "null", "nil", "undefined", "empty"}
    | {"required", "optional", "unset", "str", "string", "bytes", "secretstr"}
)
_ALNUM: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


# --------------------------------------------------------------------------- kinds

# Priority when spans of different kinds overlap: the first listed wins.
_KIND_PRIORITY: Final[tuple[str, ...]] = (
    "private-key",
    "anthropic-key",
    "openai-key",
    "github-token",
    "gitlab-token",
    "slack-token",
    "stripe-key",
    "google-api-key",
    "aws-access-key",
    "aws-secret-key",
    "jwt",
    "azure-storage-key",
    "pypi-token",
    "sendgrid-key",
    "square-oauth-secret",
    "mailchimp-key",
    "huggingface-token",
    "npm-token",
    "azure-shared-access-key",
    "sas-signature",
    "password-in-url",
    "connection-string-password",
    "postgres-password",
    "mysql-password",
    "secret-assignment",
)
# Kinds whose values are chosen by people: short, maybe a placeholder, maybe a word.
_PASSWORD_KINDS: Final = frozenset(
    {
        "password-in-url",
        "connection-string-password",
        "postgres-password",
        "mysql-password",
        "secret-assignment",
    }
)
_FALLBACK_KIND: Final = "secret"

# The one table from detect-secrets' `secret_type` to our kind.  Each entry is a list of
# (kind, value pattern) rules; the first rule whose pattern fully matches the reported
# value (or has no pattern) wins.  AWS needs this: detect-secrets reports access key ids
# and secret keys under the same secret_type.
_KIND_TABLE: Final[Mapping[str, tuple[tuple[str, re.Pattern[str] | None], ...]]] = {
    # detect-secrets built-ins, used as they are
    "Azure Storage Account access key": (("azure-storage-key", None),),
    "Basic Auth Credentials": (("password-in-url", None),),
    "Mailchimp Access Key": (("mailchimp-key", None),),
    "Private Key": (("private-key", None),),
    "PyPI Token": (("pypi-token", None),),
    "SendGrid API Key": (("sendgrid-key", None),),
    "Slack Token": (("slack-token", None),),
    "Square OAuth Secret": (("square-oauth-secret", None),),
    "Stripe Access Key": (("stripe-key", None),),
    # detect-secrets built-ins whose patterns we replace (same secret_type)
    "AWS Access Key": (("aws-access-key", _AWS_KEY_ID), ("aws-secret-key", None)),
    "GitHub Token": (("github-token", None),),
    "GitLab Token": (("gitlab-token", None),),
    "JSON Web Token": (("jwt", None),),
    "OpenAI Token": (("openai-key", None),),
    # ours
    "Anthropic API Key": (("anthropic-key", None),),
    "Google API Key": (("google-api-key", None),),
    "AWS Secret Access Key": (("aws-secret-key", None),),
    "Hugging Face Token": (("huggingface-token", None),),
    "npm Access Token": (("npm-token", None),),
    "Azure Shared Access Key": (("azure-shared-access-key", None),),
    "Shared Access Signature": (("sas-signature", None),),
    "Connection String Password": (("connection-string-password", None),),
    "PostgreSQL Password": (("postgres-password", None),),
    "MySQL Password": (("mysql-password", None),),
    "Secret Assignment": (("secret-assignment", None),),
}

# detect-secrets plugins enabled by class name through its settings.
_BUILTIN_PLUGINS: Final[tuple[str, ...]] = (
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "MailchimpDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SquareOAuthDetector",
    "StripeDetector",
)
_SETTINGS: Final[Mapping[str, object]] = {
    "plugins_used": [{"name": name} for name in _BUILTIN_PLUGINS],
    "filters_used": [],
}


def _kind_for(secret_type: str, value: str) -> str:
    for kind, pattern in _KIND_TABLE.get(secret_type, ()):
        if pattern is None or pattern.fullmatch(value):
            return kind
    return _FALLBACK_KIND


def _rank(kind: str) -> int:
    try:
        return _KIND_PRIORITY.index(kind)
    except ValueError:
        return len(_KIND_PRIORITY)


# --------------------------------------------------------------------------- engine


@functools.lru_cache(maxsize=1)
def _own_plugins() -> tuple[RegexBasedDetector, ...]:
    """Our detectors and the replacements for broken built-ins (imports detect-secrets)."""
    from detect_secrets.plugins.aws import AWSKeyDetector
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.github_token import GitHubTokenDetector
    from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
    from detect_secrets.plugins.jwt import JwtTokenDetector
    from detect_secrets.plugins.openai import OpenAIDetector

    class AwsKey(AWSKeyDetector):
        # keep the built-in's second pattern (quoted secret key near "aws ... key")
        denylist = (_AWS_ID_PATTERN, AWSKeyDetector.denylist[1])

    class GitHubToken(GitHubTokenDetector):
        denylist = _GITHUB_PATTERNS

    class GitLabToken(GitLabTokenDetector):
        denylist = _GITLAB_PATTERNS

    class OpenAIToken(OpenAIDetector):
        denylist = _OPENAI_PATTERNS

    class JwtToken(JwtTokenDetector):
        denylist = _JWT_PATTERNS

        def analyze_string(self, string: str) -> Generator[str, None, None]:
            # Header and payload must decode to JSON (detect-secrets' own check); the
            # signature is not checked, so an oddly sized one still gets redacted.  A
            # rejected candidate must not hide a real token that starts inside it (plain
            # findall would skip past it), so the search resumes right after its start.
            for regex in self.denylist:
                pos = 0
                while (match := regex.search(string, pos)) is not None:
                    token = match.group()
                    head, _, rest = token.partition(".")
                    if _jwt_is_valid(head, rest.partition(".")[0]):
                        yield token
                        pos = match.end()
                    else:
                        pos = match.start() + 1

    # `secret_type` is detect-secrets' label for a detector (a key of _KIND_TABLE), which
    # ruff's S105 mistakes for a hard-coded password.
    class AnthropicKey(RegexBasedDetector):
        secret_type = "Anthropic API Key"  # noqa: S105
        denylist = _ANTHROPIC_PATTERNS

    class GoogleApiKey(RegexBasedDetector):
        secret_type = "Google API Key"  # noqa: S105
        denylist = _GOOGLE_API_KEY_PATTERNS

    class AwsSecretAssignment(RegexBasedDetector):
        secret_type = "AWS Secret Access Key"  # noqa: S105
        denylist = _AWS_SECRET_ASSIGNMENT_PATTERNS

    class StripeAnyKey(RegexBasedDetector):
        secret_type = "Stripe Access Key"  # noqa: S105
        denylist = _STRIPE_PATTERNS

    class SlackExtraToken(RegexBasedDetector):
        secret_type = "Slack Token"  # noqa: S105
        denylist = _SLACK_EXTRA_PATTERNS

    class PemHeader(RegexBasedDetector):
        secret_type = "Private Key"  # noqa: S105
        denylist = _PEM_HEADER_PATTERNS

    class UrlPassword(RegexBasedDetector):
        secret_type = "Basic Auth Credentials"  # noqa: S105
        denylist = _URL_PASSWORD_PATTERNS

    class HuggingFaceToken(RegexBasedDetector):
        secret_type = "Hugging Face Token"  # noqa: S105
        denylist = _HUGGINGFACE_PATTERNS

        def analyze_string(self, string: str) -> Generator[str, None, None]:
            # 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 is a name; a random token is made
            # of such words about once in 100,000.
            for token in super().analyze_string(string):
                if not _WORDS.fullmatch(token, 3):
                    yield token

    class NpmToken(RegexBasedDetector):
        secret_type = "npm Access Token"  # noqa: S105
        denylist = _NPM_PATTERNS

    class AzureSharedAccessKey(RegexBasedDetector):
        secret_type = "Azure Shared Access Key"  # noqa: S105
        denylist = _AZURE_SHARED_ACCESS_KEY_PATTERNS

    class SasSignature(RegexBasedDetector):
        secret_type = "Shared Access Signature"  # noqa: S105
        denylist = _SAS_SIGNATURE_PATTERNS

    class ConnectionStringPassword(RegexBasedDetector):
        secret_type = "Connection String Password"  # noqa: S105
        denylist = _CONNECTION_PASSWORD_PATTERNS

    class PostgresPassword(RegexBasedDetector):
        secret_type = "PostgreSQL Password"  # noqa: S105
        denylist = _POSTGRES_PASSWORD_PATTERNS

    class MysqlPassword(RegexBasedDetector):
        secret_type = "MySQL Password"  # noqa: S105
        denylist = _MYSQL_PASSWORD_PATTERNS

        def analyze_string(self, string: str) -> Generator[str, None, None]:
            option, *assignments = self.denylist
            commands = [m.start() for m in _MYSQL_COMMAND.finditer(string)]
            separators = [m.start() for m in _COMMAND_SEPARATOR.finditer(string)]
            for match in option.finditer(string) if commands else ():
                # The option counts if a mysql command comes before it with no pipe,
                # ";", "&" or new line between them.
                command = bisect.bisect_left(commands, match.start()) - 1
                separator = bisect.bisect_left(separators, match.start()) - 1
                if command < 0 or (separator >= 0 and separators[separator] > commands[command]):
                    continue
                value = match["dq"] or match["sq"] or match["bare"]
                if _is_placeholder_password(value):
                    continue
                # -p<password> is glued to its flag, and a password is only redacted
                # where it is not glued to letters (see _occurrences): the flag goes too.
                yield f"-p{value}" if match["flag"] == "-p" and match["bare"] else value
            for regex in assignments:
                for found in regex.findall(string):
                    yield from filter(None, found) if isinstance(found, tuple) else [found]

    class SecretAssignment(RegexBasedDetector):
        secret_type = "Secret Assignment"  # noqa: S105
        denylist = _SECRET_ASSIGNMENT_PATTERNS

        def analyze_string(self, string: str) -> Generator[str, None, None]:
            quoted, _, yaml = self.denylist
            for regex in self.denylist:
                pos = 0
                # Candidates may overlap (A=B=value): each "=" or ":" is tried.
                while (match := regex.search(string, pos)) is not None:
                    pos = match.start() + 1
                    end = match.start()
                    if regex is quoted:
                        # "name" : "value" -- back over the spacing and the name's quote
                        while end > 0 and match.start() - end < 8 and string[end - 1] in " \t":
                            end -= 1
                        if end > 0 and string[end - 1] in "\"'":
                            end -= 1
                    name = _NAME_BEFORE.search(string, max(0, end - 81), end)
                    if name is None:
                        continue
                    pattern = _SECRET_NAME if regex is quoted else _SECRET_VARIABLE
                    if not pattern.fullmatch(name.group()):
                        continue
                    if regex is yaml and not _YAML_INDENT.search(
                        string, max(0, name.start() - 64), name.start()
                    ):
                        continue
                    yield next(value for value in match.groups() if value)

    classes: tuple[type[RegexBasedDetector], ...] = (
        AwsKey,
        GitHubToken,
        GitLabToken,
        OpenAIToken,
        JwtToken,
        AnthropicKey,
        GoogleApiKey,
        AwsSecretAssignment,
        StripeAnyKey,
        SlackExtraToken,
        PemHeader,
        UrlPassword,
        HuggingFaceToken,
        NpmToken,
        AzureSharedAccessKey,
        SasSignature,
        ConnectionStringPassword,
        PostgresPassword,
        MysqlPassword,
        SecretAssignment,
    )
    return tuple(cls() for cls in classes)


@functools.lru_cache(maxsize=256)
def _jwt_is_valid(head: str, payload: str) -> bool:
    """detect-secrets' JWT check (both parts decode to JSON), safe on hostile input."""
    from detect_secrets.plugins.jwt import JwtTokenDetector

    try:
        return bool(JwtTokenDetector.is_formally_valid(f"{head}.{payload}"))
    except RecursionError:  # deeply nested JSON in a crafted header
        return False


class _Span(NamedTuple):
    start: int  # absolute offset in the text
    end: int  # absolute, exclusive
    kind: str


class _Unit(NamedTuple):
    """A whole line, or one window of a very long line."""

    offset: int  # absolute offset of text[0]
    text: str  # without a trailing "\r"


def _line_starts(lines: Sequence[str]) -> list[int]:
    starts = [0] * len(lines)
    pos = 0
    for i, line in enumerate(lines):
        starts[i] = pos
        pos += len(line) + 1
    return starts


def _units(lines: Sequence[str], starts: Sequence[int]) -> Iterator[_Unit]:
    step = _WINDOW - _OVERLAP
    for i, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        if len(line) <= _WINDOW:
            if line:
                yield _Unit(starts[i], line)
            continue
        pos = 0
        while True:
            yield _Unit(starts[i] + pos, line[pos : pos + _WINDOW])
            if pos + _WINDOW >= len(line):
                break
            pos += step


def _segments(units: Iterable[_Unit]) -> Iterator[tuple[str, list[_Unit]]]:
    """Batches of units joined by newlines, for a cheap combined pre-check."""
    group: list[_Unit] = []
    size = 0
    for unit in units:
        if group and size + len(unit.text) > _SEGMENT:
            yield "\n".join(u.text for u in group), group
            group, size = [], 0
        group.append(unit)
        size += len(unit.text) + 1
    if group:
        yield "\n".join(u.text for u in group), group


def _is_placeholder_password(value: str) -> bool:
    return (
        "[REDACTED:" in value
        or value.lower() in _NOT_PASSWORDS
        or _PASSWORD_PLACEHOLDER.fullmatch(value) is not None
    )


def _occurrences(line: str, value: str, kind: str) -> Iterator[tuple[int, int]]:
    """Spans of every occurrence of `value` in `line` that should be redacted as `kind`.

    Occurrences may overlap (a value reported twice can be found at a position that the
    regex match came from and at an earlier one overlapping it), so the search steps one
    character at a time and overlapping occurrences come out as one merged span.
    """
    if not value:
        return
    password = kind in _PASSWORD_KINDS
    if password and _is_placeholder_password(value):
        return
    width = len(value)
    run_start = run_end = -1
    i = line.find(value)
    while i != -1:
        j = i + width
        # A password is redacted wherever it stands on its own, but not inside a longer
        # word ("pass" in "password"); tokens are long and random, every hit counts.
        if not password or (
            (i == 0 or line[i - 1] not in _ALNUM) and (j == len(line) or line[j] not in _ALNUM)
        ):
            if i < run_end:
                run_end = j
            else:
                if run_end >= 0:
                    yield run_start, run_end
                run_start, run_end = i, j
        i = line.find(value, i + 1)
    if run_end >= 0:
        yield run_start, run_end


def _engine_spans(units: Iterable[_Unit]) -> list[_Span]:
    from detect_secrets.settings import get_plugins, transient_settings

    spans: list[_Span] = []
    with _ENGINE_LOCK, transient_settings(dict(_SETTINGS)):
        plugins: list[RegexBasedDetector] = [*get_plugins(), *_own_plugins()]
        for segment, group in _segments(units):
            for plugin in plugins:
                if not any(regex.search(segment) for regex in plugin.denylist):
                    continue
                secret_type: str = plugin.secret_type
                for unit in group:
                    for value in set(plugin.analyze_string(unit.text)):
                        kind = _kind_for(secret_type, value)
                        spans.extend(
                            _Span(unit.offset + i, unit.offset + j, kind)
                            for i, j in _occurrences(unit.text, value, kind)
                        )
    return spans


# --------------------------------------------------------------------------- private keys


def _dashes_before(text: str, pos: int) -> int:
    """Where a ``-----`` or ``---- `` in front of a BEGIN header at `pos` starts."""
    j = pos - 1 if pos > 0 and text[pos - 1] == " " else pos
    k = j
    while k > 0 and j - k < 5 and text[k - 1] == "-":
        k -= 1
    return k if j - k >= 4 else pos


def _private_key_spans(text: str, starts: Sequence[int], markers: Iterable[_Span]) -> list[_Span]:
    """Turn BEGIN-header spans into spans covering their whole block."""
    headers: set[tuple[int, int, bool]] = set()
    for marker in markers:
        start, end = marker.start, marker.end
        putty = text.startswith("PuTTY", start)
        if not putty:
            start = _dashes_before(text, start)
            tail = _MARKER_TAIL.match(text, end)
            if tail is not None:
                end = tail.end()
        headers.add((start, end, putty))
    if not headers:
        return []

    pem_ends = [(m.start(), m.end()) for m in _PEM_END.finditer(text)]
    putty_ends = (
        [(m.start(), m.end()) for m in _PUTTY_END.finditer(text)]
        if any(putty for _, _, putty in headers)
        else []
    )
    text_end = len(text.rstrip("\r\n"))
    spans: list[_Span] = []
    covered = -1
    for start, end, putty in sorted(headers):
        if end <= covered:
            continue  # inside the previous block
        line_index = bisect.bisect_right(starts, start) - 1
        line_end = starts[line_index + 1] - 1 if line_index + 1 < len(starts) else len(text)
        if putty:
            is_block = text.startswith(":", end) and start == starts[line_index]
            ends = putty_ends
        else:
            is_block = _BLOCK_REST.match(text, end, line_end) is not None
            ends = pem_ends
        if is_block:
            k = bisect.bisect_left(ends, (end, -1))
            end = ends[k][1] if k < len(ends) else max(end, text_end)
        spans.append(_Span(start, end, "private-key"))
        covered = max(covered, end)
    return spans


# --------------------------------------------------------------------------- spans


def _merge(spans: Iterable[_Span]) -> list[_Span]:
    """Sort spans and merge the overlapping ones (the higher-priority kind wins)."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            kind = last.kind if _rank(last.kind) <= _rank(span.kind) else span.kind
            merged[-1] = _Span(last.start, max(last.end, span.end), kind)
        else:
            merged.append(span)
    return merged


def _to_finding(span: _Span, starts: Sequence[int]) -> Finding:
    line = bisect.bisect_right(starts, span.start)
    end_line = bisect.bisect_right(starts, span.end - 1)
    return Finding(
        kind=span.kind,
        line=line,
        start=span.start - starts[line - 1],
        end=span.end - starts[end_line - 1],
        end_line=end_line,
    )


def _to_span(finding: Finding, lines: Sequence[str], starts: Sequence[int]) -> _Span:
    if finding.end_line > len(lines):
        raise ValueError(f"finding beyond the end of the text: {finding!r}")
    if finding.start > len(lines[finding.line - 1]) or finding.end > len(
        lines[finding.end_line - 1]
    ):
        raise ValueError(f"finding beyond the end of its line: {finding!r}")
    return _Span(
        starts[finding.line - 1] + finding.start,
        starts[finding.end_line - 1] + finding.end,
        finding.kind,
    )


# --------------------------------------------------------------------------- public API


def scan(text: str, *, derived: Callable[[str], str] | None = None) -> list[Finding]:
    """Find the secrets in `text`, sorted by position, overlapping ones merged.

    `derived` makes, from the text as it will be published, more text that is published
    with it (a handoff's task line: one line of it, cleaned of escapes and invisible
    characters and cut to a length, which can join the halves of a token or cut off what
    kept it from looking like one).  A secret in what it returns after redaction is
    reported as the whole line that yields it (a line whose own `derived` is the same), or,
    failing that, as the whole text, so that redacting the findings also cleans it.
    """
    if not text:
        return []
    lines = text.split("\n")
    starts = _line_starts(lines)
    spans = _scan_spans(text, lines, starts)
    if derived is not None:
        spans = _merge([*spans, *_derived_spans(text, lines, starts, _merge(spans), derived)])
    return [_to_finding(span, starts) for span in _merge(spans)]


def _scan_spans(text: str, lines: Sequence[str], starts: Sequence[int]) -> list[_Span]:
    spans = _engine_spans(_units(lines, starts))
    keys = [s for s in spans if s.kind == "private-key"]
    if keys:
        spans = [s for s in spans if s.kind != "private-key"]
        spans.extend(_private_key_spans(text, starts, keys))
    return spans


def _derived_spans(
    text: str,
    lines: Sequence[str],
    starts: Sequence[int],
    spans: Sequence[_Span],
    derived: Callable[[str], str],
) -> list[_Span]:
    summary = derived(_replace(text, spans))
    found = scan(summary)
    if not found:
        return []
    kind = found[0].kind
    extra: list[_Span] = []
    for index, raw in enumerate(lines):
        line = raw[:-1] if raw.endswith("\r") else raw
        low, high = starts[index], starts[index] + len(line)
        if not line.strip():
            continue
        inside = [
            _Span(max(s.start, low) - low, min(s.end, high) - low, s.kind)
            for s in spans
            if s.start < high and s.end > low
        ]
        if derived(_replace(line, inside)) == summary:
            extra.append(_Span(low, high, kind))
    if not extra or scan(derived(_replace(text, _merge([*spans, *extra])))):
        end = len(text.rstrip("\r\n"))
        extra = [_Span(0, end, kind)] if end else []
    return extra


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding in `text` by ``[REDACTED:<kind>]``; nothing else changes.

    Raises ValueError if a finding does not fit in `text` (it came from another text).
    """
    if not findings:
        return text
    lines = text.split("\n")
    starts = _line_starts(lines)
    return _replace(text, [_to_span(f, lines, starts) for f in findings])


def _replace(text: str, spans: Iterable[_Span]) -> str:
    parts: list[str] = []
    pos = 0
    for span in _merge(spans):
        parts.append(text[pos : span.start])
        parts.append(f"[REDACTED:{span.kind}]")
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


_SAFE_KIND: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")


def describe(findings: Sequence[Finding]) -> str:
    """Say for a person which kinds of secret were found on which lines.

    E.g. ``"aws-access-key on line 3, github-token on lines 7 and 9, private-key on lines
    12-40"``.  Only kinds and line numbers appear, never the secrets.
    """
    if not findings:
        return "no secrets found"
    by_kind: dict[str, list[tuple[int, int]]] = {}
    seen: set[tuple[str, int, int]] = set()
    for f in sorted(findings, key=lambda f: (f.line, f.start, f.end_line, f.end)):
        kind = f.kind if _SAFE_KIND.fullmatch(f.kind) else _FALLBACK_KIND
        if (kind, f.line, f.end_line) not in seen:
            seen.add((kind, f.line, f.end_line))
            by_kind.setdefault(kind, []).append((f.line, f.end_line))
    parts = []
    for kind, ranges in by_kind.items():
        labels = [str(a) if a == b else f"{a}-{b}" for a, b in ranges]
        word = "line" if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else "lines"
        shown = labels[:_MAX_LINES_SHOWN]
        if len(labels) > len(shown):
            where = f"{', '.join(shown)} and {len(labels) - len(shown)} more"
        elif len(shown) == 1:
            where = shown[0]
        else:
            where = f"{', '.join(shown[:-1])} and {shown[-1]}"
        parts.append(f"{kind} on {word} {where}")
    return ", ".join(parts)
