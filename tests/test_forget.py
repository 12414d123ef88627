"""log, show, forget, purge and keep_days, end to end: real git, real bare remotes,
the CLI as a person runs it.

What a remote can do is tried first: a forget record forged without the key, sealed
with another key or moved to another path takes nothing back; another person's record
takes back that person's own files only; a file deleted without a record comes back.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from convosyncd import state as states
from convosyncd.gitcmd import Git
from convosyncd.gitstore import Identity, SyncBranch
from convosyncd.handoff import Provenance, render_stored
from convosyncd.keys import SyncKey
from convosyncd.layout import handoff_location
from convosyncd.seal import seal_forget, seal_handoff
from tests.support.devices import (
    OTHER_PERSON_KEY,
    PERSON_KEY,
    Device,
    commit_on_remote,
    git,
    handoff_paths,
    handoff_text,
    make_device,
    opened,
)

SYNC_REF = "refs/heads/convosync"


# -- helpers ----------------------------------------------------------------------------


def sync(device: Device) -> str:
    result = device.cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def publish(device: Device, task: str, fact: str = "nothing else") -> str:
    """Publish a draft through ``sync``; the path of the new handoff on the branch."""
    before = set(handoff_paths(device.repo, device.name))
    device.write_draft(handoff_text(task, fact=fact))
    sync(device)
    new = set(handoff_paths(device.repo, device.name)) - before
    # Another person's device of the same name may have brought its own: this one's is
    # the newest.
    return max(new, key=lambda path: path.rsplit("/", 1)[1])


def key_of(path: str) -> str:
    """``device/file name``: how ``log`` names the file at ``path``."""
    parts = path.split("/")
    return f"{parts[1]}/{parts[-1]}"


def sealed(key: SyncKey, device: str, task: str, when: datetime) -> tuple[str, bytes]:
    """A handoff sealed with ``key`` as if ``device`` had published it at ``when``."""
    text = handoff_text(task)
    location = handoff_location(device, when, key.digest(device, text.encode()))
    content = render_stored(Provenance(device, when, "0" * 40, "main"), text)
    return location.path, seal_handoff(key, location.path, content)


def record_path(device: str, token: str = "ab" * 8) -> str:
    return f"handoffs/{device}/forgotten/20261201T000000.000Z-{token}.forget"


def reachable_objects(repo: Path, ref: str = SYNC_REF) -> set[str]:
    """Every object id reachable from ``ref`` (commits, trees, blobs)."""
    output = git(repo, "rev-list", "--objects", ref)
    return {line.split(" ", 1)[0] for line in output.splitlines() if line}


def blob_at(repo: Path, path: str, ref: str = SYNC_REF) -> str:
    return git(repo, "rev-parse", f"{ref}:{path}")


@pytest.fixture
def alpha(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "alpha")


@pytest.fixture
def bravo(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "bravo")


@pytest.fixture
def charlie(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "charlie")


# -- log and show -----------------------------------------------------------------------


def test_log_lists_the_handoffs_newest_first_and_all_of_the_branch_with_all(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    first = publish(alpha, "Alpha's first")
    second = publish(alpha, "Alpha's second \x1b]52;c;cGF5bG9hZA==\x07with\u202e tricks")
    third = publish(bravo, "Bravo's only")
    foreign_path, foreign = sealed(
        OTHER_PERSON_KEY, "alpha", "Someone else's", datetime.now(timezone.utc)
    )
    plain_path = "handoffs/alpha/20260105T000000.000Z-aaaaaaaaaaaa.md"
    commit_on_remote(remote, {foreign_path: foreign, plain_path: b"---\ntask: old\n---\nold\n"})
    sync(alpha)

    result = alpha.cli("log", cwd=alpha.repo / ".convosync")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["created", "device", "verified", "name", "task"]
    rows = lines[1:4]
    assert [row.split()[3] for row in rows] == [key_of(third), key_of(second), key_of(first)]
    assert all(row.split()[2] == "yes" for row in rows)
    assert "Alpha's second with tricks" in rows[1]
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "2 more file(s)" in lines[4] and "log --all" in lines[4]

    everything = alpha.cli("log", "--all", str(alpha.repo)).stdout
    assert "no (foreign)" in everything and OTHER_PERSON_KEY.key_id in everything
    assert (
        "no (unverified)" in everything
        and "alpha/20260105T000000.000Z-aaaaaaaaaaaa.md" in everything
    )
    assert "Someone else's" not in everything

    listed = json.loads(alpha.cli("log", "--json", str(alpha.repo)).stdout)
    assert [entry["name"] for entry in listed] == [key_of(third), key_of(second), key_of(first)]
    entry = listed[2]
    assert entry["device"] == "alpha" and entry["verified"] is True
    assert entry["task"] == "Alpha's first" and entry["path"] == first
    assert entry["created"].endswith("Z") and entry["text"].startswith("### Current Task\n")
    assert "device: alpha" not in entry["text"], "the text is given without front matter"
    full = json.loads(alpha.cli("log", "--json", "--all", str(alpha.repo)).stdout)
    others = [item for item in full if not item["verified"]]
    assert sorted(item["verdict"] for item in others) == ["foreign", "unverified"]
    assert all(item["text"] is None and item["task"] is None for item in others)


def test_log_of_an_empty_branch_and_outside_a_repo(alpha: Device, tmp_path: Path) -> None:
    result = alpha.cli("log", cwd=alpha.repo)
    assert result.returncode == 0 and "No handoffs on the sync branch" in result.stdout
    purge = alpha.cli("forget", "--purge", cwd=alpha.repo)
    assert purge.returncode == 0 and "nothing to forget" in purge.stdout
    assert json.loads(alpha.cli("log", "--json", cwd=alpha.repo).stdout) == []
    outside = alpha.cli("log", cwd=tmp_path)
    assert outside.returncode == 2 and "not in a registered repo" in outside.stderr


def test_show_prints_one_handoff_by_either_name_and_refuses_what_does_not_open(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    path = publish(alpha, "The one to show", fact="the favourite pizza is Margherita")
    sync(bravo)
    name = path.rsplit("/", 1)[1]
    shown = bravo.cli("show", key_of(path), "--repo", str(bravo.repo))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Handoff from alpha, ")
    assert "Verified with your sync key." in shown.stdout and "Margherita" in shown.stdout
    assert "created:" not in shown.stdout
    assert bravo.cli("show", name, cwd=bravo.repo).stdout == shown.stdout
    assert bravo.cli("show", path, cwd=bravo.repo).stdout == shown.stdout

    # The same file copied into another device's folder: the name alone is ambiguous,
    # and the copy does not open (its path is sealed with it).
    copy = path.replace("handoffs/alpha/", "handoffs/alpha-2/")
    commit_on_remote(remote, {copy: git_blob(alpha.repo, path)})
    sync(bravo)
    ambiguous = bravo.cli("show", name, cwd=bravo.repo)
    assert ambiguous.returncode == 2
    assert key_of(path) in ambiguous.stderr and key_of(copy) in ambiguous.stderr
    refused = bravo.cli("show", key_of(copy), cwd=bravo.repo)
    assert refused.returncode == 1 and "does not open under your sync key" in refused.stderr
    assert "Margherita" not in refused.stdout + refused.stderr
    unknown = bravo.cli(
        "show", "alpha/20990101T000000.000Z-0000000000000000.sealed", cwd=bravo.repo
    )
    assert unknown.returncode == 2 and "convosyncd log" in unknown.stderr


def git_blob(repo: Path, path: str) -> bytes:
    return subprocess.run(
        ["git", "cat-file", "blob", f"{SYNC_REF}:{path}"],
        cwd=repo,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


# -- forget -----------------------------------------------------------------------------


def test_a_forgotten_handoff_never_comes_back_through_a_device_that_still_had_it(
    alpha: Device, bravo: Device, charlie: Device, remote: Path
) -> None:
    older = publish(alpha, "Alpha's older")
    secret = publish(alpha, "Alpha's newest", fact="the password slipped in here")
    sync(bravo)
    sync(charlie)
    assert "slipped in" in bravo.materialized.read_text(encoding="utf-8")
    # charlie goes quiet, still holding the handoff; alpha takes it back.
    result = alpha.cli("forget", key_of(secret), cwd=alpha.repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Forgot 1 handoff(s)" in result.stdout and "Pushed to origin" in result.stdout
    assert secret not in handoff_paths(remote) and older in handoff_paths(remote)
    assert git(remote, "log", "-1", "--format=%s", "convosync") == "forget(alpha)"
    # bravo had nothing new: it follows; its handoffs file falls back to the older one.
    sync(bravo)
    text = bravo.materialized.read_text(encoding="utf-8")
    assert "slipped in" not in text and "Alpha's older" in text
    # charlie publishes meanwhile (its branch has diverged) and then syncs: the union
    # merge drops the forgotten file, it does not bring it back.
    own = publish(charlie, "Charlie's work")
    for device in (charlie, bravo, alpha, charlie):
        sync(device)
    for repo in (remote, alpha.repo, bravo.repo, charlie.repo):
        paths = handoff_paths(repo)
        assert secret not in paths, repo
        assert older in paths and own in paths, repo
    logged = charlie.cli("log", cwd=charlie.repo).stdout
    assert key_of(secret) not in logged and key_of(older) in logged
    # Taken back is taken back: naming it again is an unknown name.
    again = alpha.cli("forget", key_of(secret), cwd=alpha.repo)
    assert again.returncode == 2 and "no handoff" in again.stderr


def test_forget_by_device_and_date_takes_that_devices_older_files_only(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    recent = publish(alpha, "Recent")
    others = publish(bravo, "Bravo's")
    january, old = sealed(
        PERSON_KEY, "alpha", "January", datetime(2026, 1, 10, tzinfo=timezone.utc)
    )
    march, newer = sealed(PERSON_KEY, "alpha", "March", datetime(2026, 3, 5, tzinfo=timezone.utc))
    plain = "handoffs/alpha/20260105T000000.000Z-aaaaaaaaaaaa.md"
    foreign_path, foreign = sealed(
        OTHER_PERSON_KEY, "alpha", "Not mine", datetime(2026, 1, 2, tzinfo=timezone.utc)
    )
    commit_on_remote(
        remote,
        {january: old, march: newer, plain: b"---\ntask: 0.1\n---\nx\n", foreign_path: foreign},
    )
    sync(alpha)

    assert alpha.cli("forget", "--before", "2026-02-01", cwd=alpha.repo).returncode == 2
    bad = alpha.cli("forget", "--device", "alpha", "--before", "last week", cwd=alpha.repo)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
    missing = alpha.cli("forget", "--device", "delta", cwd=alpha.repo)
    assert missing.returncode == 2 and "alpha, bravo" in missing.stderr
    both = alpha.cli("forget", key_of(recent), "--device", "alpha", cwd=alpha.repo)
    assert both.returncode == 2

    result = alpha.cli("forget", "--device", "alpha", "--before", "2026-02-01", cwd=alpha.repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Forgot 2 handoff(s)" in result.stdout
    assert "Left alone: 1 file(s)" in result.stdout
    files = git(remote, "ls-tree", "-r", "--name-only", "convosync").splitlines()
    assert january not in files and plain not in files, "older than the date: forgotten"
    assert march in files and recent in files and others in files
    assert foreign_path in files, "another person's file is not the person's to forget"
    # An ISO time works too, and nothing left before it is nothing to forget.
    nothing = alpha.cli(
        "forget", "--device", "alpha", "--before", "2026-02-01T00:00:00Z", cwd=alpha.repo
    )
    assert nothing.returncode == 0 and "Nothing to forget" in nothing.stdout
    everything = alpha.cli("forget", "--device", "alpha", cwd=alpha.repo)
    assert "Forgot 2 handoff(s)" in everything.stdout
    assert handoff_paths(remote, "alpha") == [foreign_path]


def test_forgetting_what_does_not_open_is_refused(alpha: Device, remote: Path) -> None:
    publish(alpha, "Mine")
    path, data = sealed(OTHER_PERSON_KEY, "alpha", "Theirs", datetime.now(timezone.utc))
    commit_on_remote(remote, {path: data})
    sync(alpha)
    result = alpha.cli("forget", key_of(path), cwd=alpha.repo)
    assert result.returncode == 2 and "not yours to forget" in result.stderr
    assert path in handoff_paths(remote)
    alpha.give_key(None)
    keyless = alpha.cli("forget", "--device", "alpha", cwd=alpha.repo)
    assert keyless.returncode == 1 and "no sync key" in keyless.stderr
    assert len(handoff_paths(remote)) == 2


def test_a_forget_made_offline_is_pushed_later(
    alpha: Device, bravo: Device, remote: Path, tmp_path: Path
) -> None:
    path = publish(alpha, "To forget offline")
    moved = tmp_path / "away.git"
    remote.rename(moved)
    result = alpha.cli("forget", key_of(path), cwd=alpha.repo)
    assert result.returncode == 1 and "Not pushed yet" in result.stdout
    assert path not in handoff_paths(alpha.repo)
    moved.rename(remote)
    sync(alpha)
    sync(bravo)
    assert path not in handoff_paths(remote) and path not in handoff_paths(bravo.repo)


# -- forget records from the remote: the hostile cases first ----------------------------


def test_forged_moved_or_foreign_records_take_nothing_back(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    target = publish(alpha, "Must stay", fact="the favourite pizza is Margherita")
    sync(bravo)
    header = f"convosyncd-forget/2 {PERSON_KEY.key_id}\n".encode()
    genuine_elsewhere = seal_forget(
        PERSON_KEY, record_path("alpha", "11" * 8), [target], purge=False
    )
    records = {
        # Without the key: the person's key id in the header, a made-up tag.
        record_path("mallory", "22" * 8): header + target.encode() + b"\n\n" + b"\0" * 28,
        # Sealed with another person's key, naming the person's file.
        record_path("mallory", "33" * 8): seal_forget(
            OTHER_PERSON_KEY, record_path("mallory", "33" * 8), [target], purge=True
        ),
        # A real record of the person's, sealed for another path, moved here.
        record_path("alpha", "44" * 8): genuine_elsewhere,
    }
    # And a deletion without any record.
    commit_on_remote(remote, records, remove=(target,))
    sync(bravo)
    assert target in handoff_paths(bravo.repo)
    assert "Margherita" in bravo.materialized.read_text(encoding="utf-8")
    assert target in handoff_paths(remote), "bravo's push put it back"
    sync(alpha)
    assert target in handoff_paths(alpha.repo)


def test_another_persons_record_takes_back_only_their_own_files(
    tmp_path: Path, remote: Path
) -> None:
    ann = make_device(tmp_path / "ann", remote, "laptop")
    ann_desk = make_device(tmp_path / "ann", remote, "desk")
    ben = make_device(tmp_path / "ben", remote, "laptop", key=OTHER_PERSON_KEY)
    anns = publish(ann, "Ann's", fact="Ann's cat is Miso")
    bens = publish(ben, "Ben's", fact="Ben's dog is Rex")
    for device in (ann, ben, ann_desk):
        sync(device)
    assert bens in handoff_paths(ann_desk.repo)
    # Ben forgets his own handoff with the CLI: Ann's devices respect it too.
    result = ben.cli("forget", key_of(bens), cwd=ben.repo)
    assert result.returncode == 0, result.stdout + result.stderr
    # Then a record of Ben's names Ann's handoff as well.
    grab = record_path("laptop", "55" * 8)
    commit_on_remote(remote, {grab: seal_forget(OTHER_PERSON_KEY, grab, [anns], purge=False)})
    for device in (ann_desk, ann, ann_desk):
        sync(device)
    for repo in (remote, ann.repo, ann_desk.repo):
        assert bens not in handoff_paths(repo), repo
        assert anns in handoff_paths(repo), repo
    assert "Miso" in opened(remote, anns)


# -- purge ------------------------------------------------------------------------------


def test_a_purge_leaves_no_reachable_commit_holding_it_and_loses_nothing_unpushed(
    alpha: Device, bravo: Device, charlie: Device, remote: Path
) -> None:
    kept = publish(alpha, "Kept")
    secret = publish(alpha, "Secret", fact="the token slipped in here")
    earlier = publish(bravo, "Forgotten before")
    for device in (bravo, charlie, alpha):
        sync(device)
    purged_blobs = {blob_at(remote, secret), blob_at(remote, earlier)}
    assert alpha.cli("forget", key_of(earlier), cwd=alpha.repo).returncode == 0
    sync(charlie)
    # charlie publishes while its remote cannot be reached: the handoff waits locally.
    url = git(charlie.repo, "remote", "get-url", "origin")
    git(charlie.repo, "remote", "set-url", "origin", str(remote) + "-gone")
    charlie.write_draft(handoff_text("Charlie offline", fact="written on the train"))
    assert charlie.cli("sync").returncode == 1
    git(charlie.repo, "remote", "set-url", "origin", url)
    [waiting] = handoff_paths(charlie.repo, "charlie")

    result = alpha.cli("forget", key_of(secret), "--purge", cwd=alpha.repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Purged" in result.stdout
    assert git(remote, "rev-list", "--count", "convosync") == "1"
    assert git(remote, "log", "--format=%s", "convosync") == "purge(alpha)"
    assert not purged_blobs & reachable_objects(remote)
    assert git(alpha.repo, "rev-parse", SYNC_REF) == git(remote, "rev-parse", SYNC_REF)

    # charlie still has the old history and its unpushed handoff: it continues on the
    # purged branch, pushes its handoff, and brings nothing purged back.
    sync(charlie)
    sync(bravo)
    for repo in (remote, charlie.repo, bravo.repo):
        paths = handoff_paths(repo)
        assert waiting in paths and kept in paths, repo
        assert secret not in paths and earlier not in paths, repo
        assert not purged_blobs & reachable_objects(repo), repo
    assert "written on the train" in opened(remote, waiting)
    sync(alpha)
    assert waiting in handoff_paths(alpha.repo)


def test_a_leased_push_never_overwrites_what_it_was_not_built_on(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    publish(alpha, "First")
    sync(bravo)
    stale = git(remote, "rev-parse", SYNC_REF)
    publish(bravo, "Pushed in between")
    moved = git(remote, "rev-parse", SYNC_REF)
    branch = SyncBranch(Git(alpha.repo, network_timeout=30), remote="origin", branch="convosync")
    who = Identity("alpha", "alpha@convosyncd.invalid")
    lone = branch.commit(
        branch.root_tree(stale), [], "purge(alpha)", who, datetime.now(timezone.utc)
    )
    refused = branch.push_leased(lone, stale)
    assert not refused.accepted and refused.rejected
    assert git(remote, "rev-parse", SYNC_REF) == moved
    assert not branch.push_leased(lone, None).accepted, "None means: no branch there yet"
    branch.fetch()
    assert branch.push_leased(lone, moved).accepted
    assert git(remote, "rev-parse", SYNC_REF) == lone


def test_purge_alone_rewrites_what_was_forgotten_before(alpha: Device, remote: Path) -> None:
    gone = publish(alpha, "Gone")
    publish(alpha, "Stays")
    blob = blob_at(remote, gone)
    assert alpha.cli("forget", key_of(gone), cwd=alpha.repo).returncode == 0
    assert blob in reachable_objects(remote), "a forget alone keeps the history"
    result = alpha.cli("forget", "--purge", cwd=alpha.repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert blob not in reachable_objects(remote)
    assert len(handoff_paths(remote)) == 1


# -- keep_days --------------------------------------------------------------------------


def test_keep_days_forgets_old_handoffs_of_every_device_once_a_day(
    alpha: Device, bravo: Device, remote: Path
) -> None:
    recent = publish(alpha, "Recent")
    now = datetime.now(timezone.utc)
    old_alpha, data_a = sealed(PERSON_KEY, "alpha", "Old alpha", now - timedelta(days=60))
    old_bravo, data_b = sealed(PERSON_KEY, "bravo", "Old bravo", now - timedelta(days=45))
    fresh_bravo, data_f = sealed(PERSON_KEY, "bravo", "Fresh bravo", now - timedelta(days=10))
    plain = "handoffs/alpha/20200105T000000.000Z-aaaaaaaaaaaa.md"
    foreign_path, foreign = sealed(OTHER_PERSON_KEY, "carol", "Carol's", now - timedelta(days=90))
    commit_on_remote(
        remote,
        {
            old_alpha: data_a,
            old_bravo: data_b,
            fresh_bravo: data_f,
            plain: b"---\ntask: 0.1\n---\nx\n",
            foreign_path: foreign,
        },
    )
    bravo.write_config(keep_days=30)
    out = sync(bravo)
    assert "forgot 2 handoff(s) older than keep_days" in out
    files = git(remote, "ls-tree", "-r", "--name-only", "convosync").splitlines()
    assert old_alpha not in files and old_bravo not in files
    assert recent in files and fresh_bravo in files
    assert plain in files and foreign_path in files, "only verified handoffs go for their age"
    sync(alpha)
    assert old_alpha not in handoff_paths(alpha.repo)

    # Once a day: what turns up later the same day waits for tomorrow.
    later, data_l = sealed(PERSON_KEY, "alpha", "Later", now - timedelta(days=40))
    commit_on_remote(remote, {later: data_l})
    sync(bravo)
    assert later in handoff_paths(remote)
    state_path = states.state_file(bravo.state, bravo.repo)
    saved = json.loads(state_path.read_text(encoding="utf-8"))
    assert saved["last_retention"]["message"] == "forgot 2 handoff(s) older than 30 days"
    saved["last_retention"]["time"] = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    state_path.write_text(json.dumps(saved), encoding="utf-8")
    sync(bravo)
    assert later not in handoff_paths(remote)
    # keep_days = 0 (the default) keeps everything.
    ancient, data_x = sealed(PERSON_KEY, "alpha", "Ancient", now - timedelta(days=400))
    commit_on_remote(remote, {ancient: data_x})
    sync(alpha)
    assert ancient in handoff_paths(remote)
