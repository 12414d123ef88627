"""Pure handoff logic: task lines, plain text, the stored file, the plugin format."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convosyncd.handoff import (
    Handoff,
    HandoffFormatError,
    Provenance,
    clean_text,
    describe_age,
    notification_for,
    parse_stored,
    plain_text,
    render_plugin,
    render_stored,
    summary_notification,
    task_line,
)
from convosyncd.layout import sealed_name
from tests.support.devices import handoff_text
from tests.support.plugin_format import plugin_parse

WHEN = datetime(2026, 11, 23, 22, 45, 35, 123000, tzinfo=timezone.utc)


def test_task_line_is_the_first_line_under_current_task() -> None:
    assert (
        task_line(handoff_text("Implementing OAuth refresh tokens"))
        == "Implementing OAuth refresh tokens"
    )


def test_task_line_skips_blank_lines_and_bullets() -> None:
    text = "## Current Task:\n\n- **Fix** the <b>login</b> page\n### Next Steps\n1. x\n"
    assert task_line(text) == "**Fix** the login page"


def test_task_line_without_a_task_section_uses_the_first_line() -> None:
    assert task_line("\n\n# Notes on caching\nmore\n") == "Notes on caching"
    assert task_line("   \n") == "(untitled handoff)"


def test_task_line_of_an_empty_task_section_falls_back() -> None:
    assert task_line("### Current Task\n### Progress So Far\n- done\n") == "Current Task"


def test_plain_text_removes_escapes_controls_and_markup() -> None:
    hostile = "\x1b[31mred\x1b[0m <a href='x'>link</a> & <script>x</script>\u202eevil\x07\n-next"
    cleaned = plain_text(hostile, 200)
    assert "\x1b" not in cleaned and "\x07" not in cleaned and "\u202e" not in cleaned
    assert "<" not in cleaned and ">" not in cleaned and "&" not in cleaned
    assert cleaned == "red link ＆ xevil -next"


def test_plain_text_never_starts_with_a_dash_and_is_bounded() -> None:
    assert plain_text("--help me", 50) == "help me"
    long = plain_text("word " * 100, 40)
    assert len(long) == 40 and long.endswith("…")


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_plain_text_is_always_one_safe_bounded_line(text: str, limit: int) -> None:
    cleaned = plain_text(text, limit)
    assert len(cleaned) <= limit
    assert not any(ord(char) < 32 or 0x7F <= ord(char) < 0xA0 for char in cleaned)
    assert not set("<>&") & set(cleaned)
    assert not cleaned.startswith("-")


HOSTILE_INVISIBLE = (
    "\x1b[31m",  # colour
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: write to the clipboard
    "\x1b]0;title\x1b\\",  # OSC 0: window title
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # byte order mark
    "\U000e0041\U000e0042",  # tag characters (invisible ASCII)
    "\x00\x07\x08\x7f\x85",  # controls, C0 and C1
    "\ue000",  # private use
)


@pytest.mark.parametrize("hostile", HOSTILE_INVISIBLE)
def test_clean_text_removes_what_could_show_one_thing_and_mean_another(hostile: str) -> None:
    cleaned = clean_text(f"before{hostile}after\n\tnext line\r\nlast")
    assert cleaned == "beforeafter\n\tnext line\nlast"


@given(st.text(max_size=300))
def test_clean_text_leaves_nothing_invisible(text: str) -> None:
    import unicodedata

    cleaned = clean_text(text)
    assert "\x1b" not in cleaned and "\r" not in cleaned
    assert all(
        char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Cn")
        for char in cleaned
    )


def test_clean_text_keeps_what_people_write() -> None:
    text = "### Current Task\n- ✅ café, naïve, 日本語, emoji 🍕, «quotes», tabs\tkept\n"
    assert clean_text(text) == text


def test_stored_file_round_trip() -> None:
    text = handoff_text("Ship it")
    data = render_stored(Provenance("desktop", WHEN, "3f2a9c1", "feature/oauth"), text)
    assert data.startswith(b"---\ndevice: desktop\ncreated: 2026-11-23T22:45:35Z\n")
    assert b"task: Ship it\n---\n### Current Task\n" in data
    handoff = parse_stored(data, device="desktop", name=sealed_name(WHEN, "a" * 16))
    assert handoff.task == "Ship it"
    assert handoff.repo_branch == "feature/oauth"
    assert handoff.repo_commit == "3f2a9c1"
    assert handoff.created == WHEN.replace(microsecond=0)
    assert handoff.body == text.rstrip("\n")


def test_stored_metadata_cannot_break_out_of_its_line() -> None:
    data = render_stored(Provenance("d", WHEN, "abc\n---\nx", "br\nanch"), "### Current Task\nT\n")
    header = data.split(b"\n---\n", 1)[0]
    assert header.count(b"\n") == 5


def test_parse_stored_trusts_the_path_not_the_front_matter() -> None:
    data = b"---\ncreated: 2026-11-23T22:45:35Z\ntask: <b>x</b>\x1b[2J\n---\nbody\n"
    handoff = parse_stored(data, device="laptop", name="20261123T224535.000Z-aaaaaaaaaaaa.md")
    assert handoff.device == "laptop"
    assert handoff.task == "x"
    with pytest.raises(HandoffFormatError, match="names the device"):
        parse_stored(b"---\ndevice: ../../evil\n---\nbody\n", device="laptop", name="x")


def test_parse_stored_rejects_bad_devices_and_unclosed_front_matter() -> None:
    with pytest.raises(HandoffFormatError):
        parse_stored(b"body", device="../x", name="20261123T224535.000Z-aaaaaaaaaaaa.md")
    with pytest.raises(HandoffFormatError):
        parse_stored(b"---\ncreated: x\n", device="d", name="20261123T224535.000Z-aaaaaaaaaaaa.md")
    with pytest.raises(HandoffFormatError):
        parse_stored(b"no front matter, no time", device="d", name="notes.md")


def test_parse_stored_without_front_matter_takes_the_time_from_the_name() -> None:
    handoff = parse_stored(
        b"### Current Task\nHi\n", device="d", name="20261123T224535.000Z-aaaaaaaaaaaa.md"
    )
    assert handoff.created == datetime(2026, 11, 23, 22, 45, 35, tzinfo=timezone.utc)
    assert handoff.task == "Hi"


def _handoff(device: str, minutes: int, body: str) -> Handoff:
    return Handoff(
        device=device,
        created=WHEN + timedelta(minutes=minutes),
        repo_commit="c" * 40,
        repo_branch="main",
        task="t",
        body=body,
    )


def test_plugin_format_is_what_the_plugin_parses_newest_first() -> None:
    rendered = render_plugin(
        [_handoff("laptop", 0, handoff_text("Old")), _handoff("desktop", 5, handoff_text("New"))]
    )
    assert rendered.startswith("# ConvoSync Session Handoffs\n\n---\n## Handoff from desktop\n")
    parsed = plugin_parse(rendered)
    assert [item["device"] for item in parsed] == ["desktop", "laptop"]
    assert parsed[0]["Timestamp"] == "2026-11-23T22:50:35Z"
    assert parsed[0]["Commit"] == "c" * 40
    assert parsed[0]["Branch"] == "main"
    assert parsed[0]["content"] == handoff_text("New").strip()


def test_a_horizontal_rule_in_a_body_does_not_split_the_handoff() -> None:
    body = "### Current Task\nA\n\n---\n\n### Next Steps\nB"
    parsed = plugin_parse(render_plugin([_handoff("desktop", 0, body)]))
    assert len(parsed) == 1
    content = parsed[0]["content"]
    assert content is not None and "### Next Steps\nB" in content and "- - -" in content


def test_describe_age() -> None:
    assert describe_age(WHEN, WHEN + timedelta(seconds=30)) == "just now"
    assert describe_age(WHEN, WHEN + timedelta(minutes=1)) == "1 minute ago"
    assert describe_age(WHEN, WHEN + timedelta(hours=3, minutes=5)) == "3 hours ago"
    assert describe_age(WHEN, WHEN + timedelta(days=2)) == "2 days ago"
    assert "future" in describe_age(WHEN, WHEN - timedelta(minutes=5))


def test_notification_names_device_repo_and_task_in_plain_text() -> None:
    handoff = _handoff("desktop", 0, "")
    handoff = Handoff(**{**handoff.__dict__, "task": "Implementing OAuth refresh tokens"})
    note = notification_for(handoff, "app")
    assert note.title == "Handoff from desktop"
    assert note.message == "app: Implementing OAuth refresh tokens"
    hostile = notification_for(handoff, "<i>-repo</i>\x1b[1m" + "x" * 500)
    assert (
        len(hostile.message) <= 200 and "<" not in hostile.message and "\x1b" not in hostile.message
    )


def test_a_burst_is_one_summary_notification() -> None:
    note = summary_notification(7, ["laptop", "phone", "tablet", "server", "pi"], "app")
    assert note.title == "7 handoffs from 5 devices"
    assert note.message == "app: laptop, phone, pi, server, …"


def test_stored_content_cannot_claim_another_device() -> None:
    data = render_stored(Provenance("laptop", WHEN, "c", "main"), "### Current Task\nT\n")
    with pytest.raises(HandoffFormatError, match="names the device 'laptop'"):
        parse_stored(data, device="desktop", name=sealed_name(WHEN, "a" * 16))


def test_stored_content_is_cleaned_where_it_is_read() -> None:
    text = "### Current Task\nFix \x1b]52;c;eA==\x07it\u202e\n\nBody \u200bhere\U000e0041\n"
    data = render_stored(Provenance("desktop", WHEN, "c", "ma\u202ein"), text)
    handoff = parse_stored(data, device="desktop", name=sealed_name(WHEN, "a" * 16))
    assert handoff.task == "Fix it"
    assert handoff.repo_branch == "main"
    assert "\x1b" not in handoff.body and "\u200b" not in handoff.body
    assert handoff.body.endswith("Body here")


def test_stored_content_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(HandoffFormatError, match="not UTF-8"):
        parse_stored(b"---\ndevice: desktop\n---\n\xff\xfe", device="desktop", name="x")


def test_the_plugin_file_is_capped_per_handoff_and_in_all() -> None:
    big = "### Current Task\nBig\n" + "word " * 40_000
    handoffs = [_handoff(f"device{i}", i, big) for i in range(10)]
    rendered = render_plugin(handoffs, per_handoff=1000, total=3500)
    assert len(rendered.encode()) < 3500 + 10 * 400
    assert rendered.count("(cut here; `convosyncd show device") == 10
    assert len(plugin_parse(rendered)) == 10
