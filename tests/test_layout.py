"""Names and paths on the sync branch: made and parsed, nothing else accepted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from convosyncd.layout import (
    Location,
    handoff_location,
    month_of,
    parse_name,
    parse_path,
    sealed_name,
)

WHEN = datetime(2026, 11, 23, 22, 45, 35, 123000, tzinfo=timezone.utc)


def test_a_handoff_is_filed_under_its_device_and_month() -> None:
    location = handoff_location("desktop", WHEN, "0123456789abcdef")
    assert location.path == "handoffs/desktop/2026-11/20261123T224535.123Z-0123456789abcdef.sealed"
    assert location.key == "desktop/20261123T224535.123Z-0123456789abcdef.sealed"
    assert parse_path(location.path) == location


def test_names_sort_by_time_and_parse_back() -> None:
    name = sealed_name(WHEN, "0123456789abcdef")
    later = sealed_name(WHEN + timedelta(milliseconds=1), "0000000000000000")
    assert later > name
    parsed = parse_name(name)
    assert parsed is not None and parsed.created == WHEN and parsed.kind == "sealed"
    assert month_of(WHEN) == "2026-11"


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "20261399T224535.123Z-0123456789abcdef.sealed",
        "20261123T224535.123Z-0123456789ABCDEF.sealed",
        "20261123T224535.123Z-0123456789abcde.sealed",
        "20261123T224535.123Z-0123456789abcdef.sealed/x",
        "20261123T224535.123Z-0123456789abcdef.md",
        "notes.txt",
    ],
)
def test_anything_else_is_no_handoff_name(name: str) -> None:
    parsed = parse_name(name)
    assert parsed is None or parsed.kind != "sealed"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "handoffs/desktop/20261123T224535.123Z-3f2a9c1d0e4b.md",
            Location("desktop", "", "20261123T224535.123Z-3f2a9c1d0e4b.md"),
        ),
        (
            "handoffs/desktop/forgotten/20261123T224535.123Z-0123456789abcdef.forget",
            Location("desktop", "forgotten", "20261123T224535.123Z-0123456789abcdef.forget"),
        ),
        ("handoffs/../2026-11/20261123T224535.123Z-0123456789abcdef.sealed", None),
        ("handoffs/desktop/2026-13/20261123T224535.123Z-0123456789abcdef.sealed", None),
        ("handoffs/desktop/2026-11/x/20261123T224535.123Z-0123456789abcdef.sealed", None),
        ("handoffs/desktop/forgotten/20261123T224535.123Z-0123456789abcdef.sealed", None),
        ("other/desktop/2026-11/20261123T224535.123Z-0123456789abcdef.sealed", None),
        ("handoffs/desktop/2026-11/20261123T224535.123Z-3f2a9c1d0e4b.md", None),
    ],
)
def test_only_the_shapes_of_the_format_are_locations(path: str, expected: Location | None) -> None:
    assert parse_path(path) == expected
