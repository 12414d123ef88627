"""The original convosync plugin's reading of ``session-handoff.md``, restated for tests.

Its ``/convosync:resume`` splits the file on lines that are exactly ``---``, finds
``## Handoff from <device>``, the ``**Timestamp:**``, ``**Commit:**`` and ``**Branch:**``
lines, and takes the text after the ``**Branch:**`` line as the handoff.
"""

from __future__ import annotations

import re


def plugin_parse(content: str) -> list[dict[str, str | None]]:
    """The parsing rules of the convosync plugin's /convosync:resume, restated."""
    handoffs = []
    for raw in re.split(r"^---\s*$", content, flags=re.MULTILINE):
        section = raw.strip()
        if not section or section.startswith("# ConvoSync"):
            continue
        device = re.search(r"^## Handoff from (.+?)$", section, re.MULTILINE)
        if not device:
            continue
        found = {
            key: (
                m.group(1).strip()
                if (m := re.search(rf"\*\*{key}:\*\* (.+?)$", section, re.MULTILINE))
                else None
            )
            for key in ("Timestamp", "Commit", "Branch")
        }
        start = section.find("**Branch:**")
        content_start = section.find("\n", start)
        handoffs.append(
            {"device": device.group(1).strip(), **found, "content": section[content_start:].strip()}
        )
    return handoffs
