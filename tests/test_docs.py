"""The README and docs/ stay usable: short, self-contained, and true to .ci/run.

The README is for the person installing convosyncd and must stay short enough to read
in a few minutes; everything for maintainers lives in docs/. No page may send a reader
outside the repository (links rot, and a checkout must be complete on its own), and
every relative link and anchor must lead somewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from convosyncd.config import DEFAULTS
from tests.support.devices import REPO_ROOT

README = REPO_ROOT / "README.md"
README_MAX_LINES = 260

README_SECTIONS = (
    "Two commands",
    "Setup on each machine",
    "The Claude Code plugin",
    "Privacy and trust",
    "At session start, and after sleep",
    "Configuration",
    "Command line",
    "The service",
    "Troubleshooting",
    "Uninstalling and cleaning up",
    "Supported platforms",
)
DOCS_SECTIONS = {
    "design.md": (
        "Invariants (what no change may break)",
        "Layout",
        "How a handoff moves",
        "The two loops",
        "The sync branch",
        "Libraries, and why",
    ),
    "benchmarks.md": ("Running it", "Latest results", "Which targets hold"),
    "reliability.md": (
        "The test suite",
        "The fault campaign",
        "The latest full run",
        "Hostile input",
    ),
}

CONFIG_KEYS = (
    "device",
    "pull_interval",
    "settle",
    "notify",
    "max_draft_bytes",
    "secrets",
    "network_timeout",
    "notify_timeout",
    "fresh_timeout",
    "keep_days",
    "state_dir",
)

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^>\s]*)>")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WEB = re.compile(r"https?://", re.IGNORECASE)


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """``text`` without fenced code blocks, indented code blocks and code spans."""
    text = _FENCE.sub("", text)
    kept: list[str] = []
    in_code = False
    previous_blank = True
    for line in text.splitlines():
        indented = line.startswith(("    ", "\t"))
        in_code = indented and (in_code or previous_blank)
        if not in_code:
            kept.append(line)
        previous_blank = not line.strip()
    return _CODE_SPAN.sub("", "\n".join(kept))


def link_targets(text: str) -> list[str]:
    """Every link target in Markdown ``text``: inline, reference-style and autolinks."""
    body = prose(text)
    return [
        *_INLINE_LINK.findall(body),
        *_REFERENCE.findall(body),
        *_AUTOLINK.findall(body),
    ]


def headings(text: str) -> list[str]:
    """The ATX headings of ``text`` (outside code), without their ``#`` marks."""
    return [
        match.group(1).strip()
        for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", _FENCE.sub("", text), re.MULTILINE)
    ]


def anchors(text: str) -> set[str]:
    """The fragment ids a Markdown renderer gives the headings of ``text``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in headings(text):
        plain = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
        slug = re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@dataclass(frozen=True)
class BadLink:
    page: str
    target: str
    why: str


def bad_links(page: Path, root: Path) -> list[BadLink]:
    """What is wrong with each link in ``page``: outside the repo, missing, or a bad anchor."""
    text = page.read_text(encoding="utf-8")
    name = str(page.relative_to(root))
    problems: list[BadLink] = []
    for target in link_targets(text):
        if not target:
            problems.append(BadLink(name, target, "empty link"))
            continue
        if _SCHEME.match(target) or target.startswith(("//", "/")):
            problems.append(BadLink(name, target, "points outside the repository"))
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.is_relative_to(root.resolve()):
            problems.append(BadLink(name, target, "leaves the repository"))
            continue
        if not destination.exists():
            problems.append(BadLink(name, target, "no such file in the repository"))
            continue
        if (
            fragment
            and destination.suffix == ".md"
            and fragment not in anchors(destination.read_text(encoding="utf-8"))
        ):
            problems.append(BadLink(name, target, "no such heading"))
    return problems


def last_command(script: str) -> str:
    """The last line of a shell script that is not blank and not a comment."""
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines if line and not line.startswith("#")][-1]


def python_neutral(text: str) -> str:
    """``text`` with ``python3`` read as ``python``: the README may use either."""
    return re.sub(r"\bpython3\b", "python", text)


# -- the checker itself, on pages made to fail ---------------------------------------


def test_the_link_checker_catches_what_it_must(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A part\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "\n".join(
            [
                "# Title",
                "[web](https://example.invalid/x) [insecure](HTTP://example.invalid)",
                "[mail](mailto:someone@example.invalid) [rooted](/etc/passwd)",
                "[missing](docs/nothing.md) [escape](../outside.md)",
                "[bad anchor](docs/other.md#no-such-part) [self](#nowhere)",
                "[fine](docs/other.md#a-part) [also fine](#title) [image](docs/other.md)",
                "[ref]: https://example.invalid/ref",
                "<https://example.invalid/auto>",
                "`[in code](https://example.invalid/code)`",
                "",
                "    [indented code](https://example.invalid/indented)",
            ]
        ),
        encoding="utf-8",
    )
    found = {(bad.target, bad.why) for bad in bad_links(page, tmp_path)}
    assert found == {
        ("https://example.invalid/x", "points outside the repository"),
        ("HTTP://example.invalid", "points outside the repository"),
        ("mailto:someone@example.invalid", "points outside the repository"),
        ("/etc/passwd", "points outside the repository"),
        ("docs/nothing.md", "no such file in the repository"),
        ("../outside.md", "leaves the repository"),
        ("docs/other.md#no-such-part", "no such heading"),
        ("#nowhere", "no such heading"),
        ("https://example.invalid/ref", "points outside the repository"),
        ("https://example.invalid/auto", "points outside the repository"),
    }


def test_anchors_follow_the_renderers_rules() -> None:
    text = "# convosyncd\n## Libraries, and why\n## At `session` start\n## Notes\n## Notes\n"
    assert anchors(text) == {
        "convosyncd",
        "libraries-and-why",
        "at-session-start",
        "notes",
        "notes-1",
    }


def test_the_test_command_is_read_from_the_last_line_of_the_script() -> None:
    script = "#!/bin/sh\nset -e\n# The README's test command:\npip install x && pytest\n\n"
    assert last_command(script) == "pip install x && pytest"
    assert python_neutral("python3 -m pytest") == python_neutral("python -m pytest")
    assert python_neutral("python3.11 -m pytest") != "python -m pytest"


# -- the real pages ---------------------------------------------------------------------


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: it is for the "
        "person installing convosyncd; move what is for maintainers to docs/"
    )


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: page.name)
def test_every_link_stays_inside_the_repository(page: Path) -> None:
    assert bad_links(page, REPO_ROOT) == []


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: page.name)
def test_no_web_address_anywhere(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [line for line in text.splitlines() if _WEB.search(line)]
    assert found == [], f"{page.name} names a web address; link to a file in the repo instead"


def test_the_readme_names_the_command_ci_runs() -> None:
    command = last_command((REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert "pytest" in command, f".ci/run no longer ends with the test command: {command}"
    readme = python_neutral(README.read_text(encoding="utf-8"))
    assert python_neutral(command) in readme, (
        f"README.md must give the test command that .ci/run runs: {command}"
    )
    assert "python3 -m pip install . && convosyncd demo" in README.read_text(encoding="utf-8")


def test_the_readme_has_every_section_a_user_looks_for() -> None:
    text = README.read_text(encoding="utf-8")
    found = headings(text)
    assert found[0] == "convosyncd", "the README starts with what convosyncd is"
    missing = [section for section in README_SECTIONS if section not in found]
    assert missing == []


def test_the_readme_documents_every_config_key() -> None:
    text = README.read_text(encoding="utf-8")
    keys = sorted({*CONFIG_KEYS, *DEFAULTS})  # a key the code accepts must be documented
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert missing == []
    for key in ("path", "remote", "branch", "mode"):
        assert f"| `[[repos]]` `{key}` |" in text


@pytest.mark.parametrize("name", sorted(DOCS_SECTIONS))
def test_each_page_in_docs_has_its_sections(name: str) -> None:
    found = headings((REPO_ROOT / "docs" / name).read_text(encoding="utf-8"))
    missing = [section for section in DOCS_SECTIONS[name] if section not in found]
    assert missing == []
