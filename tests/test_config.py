"""The config file: errors that name file, key, value and expectation; edits keep comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd.config import RepoConfig
from convosyncd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_file_means_the_defaults(tmp_path: Path) -> None:
    config = configs.load(tmp_path / "absent.toml")
    assert config.repos == ()
    assert config.pull_interval == 60 and config.settle == 1.0 and config.notify is True
    assert config.max_draft_bytes == 1_048_576 and config.secrets == "redact"
    assert config.state_dir == Path.home() / ".local" / "state" / "convosync"


def test_default_paths_follow_xdg(tmp_path: Path) -> None:
    assert configs.default_config_path() == Path.home() / ".config" / "convosync" / "config.toml"


def test_fractions_of_a_second_are_accepted(tmp_path: Path) -> None:
    config = configs.load(write(tmp_path, 'device = "d"\nsettle = 0.2\npull_interval = 1\n'))
    assert config.settle == 0.2 and config.pull_interval == 1.0


def test_every_problem_is_listed_with_file_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'device = "bad name!"\npull_interval = "soon"\nsettle = -1\nnotify = "yes"\n'
        'max_draft_bytes = 0\nsecrets = "maybe"\ncolour = "blue"\n'
        '[[repos]]\npath = "/x"\nbranch = "a..b"\n[[repos]]\nremote = "origin"\n',
    )
    with pytest.raises(ConfigError) as raised:
        configs.load(path)
    message = str(raised.value)
    assert str(path) in message
    for expected in (
        "'device' is 'bad name!'; expected 1 to 64 letters",
        "'pull_interval' is 'soon'; expected a number of seconds",
        "'settle' is -1; expected seconds between 0 and 86400",
        "'notify' is 'yes'; expected true or false",
        "'max_draft_bytes' is 0; expected a positive whole number",
        "'secrets' is 'maybe'; expected \"redact\" or \"block\"",
        "unknown key 'colour'",
        "'repos[1].branch' is 'a..b'; expected a valid git branch name",
        "'repos[2].path' is None; expected the path of a git work tree",
    ):
        assert expected in message
    assert "has 9 problems" in message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'device = "d"\nsettle = \n')
    with pytest.raises(ConfigError, match=r"config.toml is not valid TOML: .*line 2"):
        configs.load(path)


def test_repeated_repo_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[[repos]]\npath = "/a"\n[[repos]]\npath = "/a/"\n')
    with pytest.raises(ConfigError, match="repeats /a"):
        configs.load(path)


def test_add_and_remove_keep_comments(tmp_path: Path) -> None:
    path = write(tmp_path, '# my notes\ndevice = "desk"  # the desk one\nsettle = 0.5\n')
    assert configs.save_repo(path, RepoConfig(Path("/src/app"), "origin", "convosync"))
    assert not configs.save_repo(path, RepoConfig(Path("/src/app"), "origin", "convosync"))
    assert configs.save_repo(path, RepoConfig(Path("/src/lib"), "upstream", "handoffs"))
    text = path.read_text(encoding="utf-8")
    assert "# my notes" in text and "# the desk one" in text
    config = configs.load(path)
    assert [(r.path, r.remote, r.branch) for r in config.repos] == [
        (Path("/src/app"), "origin", "convosync"),
        (Path("/src/lib"), "upstream", "handoffs"),
    ]
    assert configs.drop_repo(path, Path("/src/app"))
    assert not configs.drop_repo(path, Path("/src/app"))
    assert [r.path for r in configs.load(path).repos] == [Path("/src/lib")]
    assert "# the desk one" in path.read_text(encoding="utf-8")


def test_add_creates_a_commented_config(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    configs.save_repo(path, RepoConfig(Path("/src/app")))
    text = path.read_text(encoding="utf-8")
    assert "# Seconds a draft must stay unchanged" in text
    assert configs.load(path).repos[0].path == Path("/src/app")


def test_editing_a_broken_file_refuses_and_leaves_it(tmp_path: Path) -> None:
    path = write(tmp_path, "settle = 'x'\n")
    with pytest.raises(ConfigError):
        configs.save_repo(path, RepoConfig(Path("/src/app")))
    assert path.read_text(encoding="utf-8") == "settle = 'x'\n"


def test_device_names_are_sanitized() -> None:
    assert configs.sanitize_device("My Laptop!") == "My-Laptop"
    assert configs.sanitize_device("---") == "device"
    assert configs.sanitize_device("a" * 100) == "a" * 64


def test_re_adding_with_another_remote_keeps_the_tables_other_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[repos]]\npath = "/src/app"  # my app\nremote = "origin"\nmode = "inline"\n',
    )
    assert configs.save_repo(path, RepoConfig(Path("/src/app"), "upstream", "convosync"))
    [repo] = configs.load(path).repos
    assert (repo.remote, repo.mode) == ("upstream", "inline")
    assert "# my app" in path.read_text(encoding="utf-8")


def test_fresh_timeout_defaults_to_two_seconds_and_0_turns_the_check_off(tmp_path: Path) -> None:
    assert configs.load(tmp_path / "absent.toml").fresh_timeout == 2.0
    assert configs.load(write(tmp_path, "fresh_timeout = 0\n")).fresh_timeout == 0.0
    assert configs.load(write(tmp_path, "fresh_timeout = 0.5\n")).fresh_timeout == 0.5
    for value, expected in (
        ("-1", "'fresh_timeout' is -1; expected seconds between 0 (no check at session start)"),
        ("61", "'fresh_timeout' is 61; expected seconds between 0"),
        ("true", "'fresh_timeout' is True; expected a number of seconds"),
        ("'soon'", "'fresh_timeout' is 'soon'; expected a number of seconds"),
    ):
        with pytest.raises(ConfigError) as raised:
            configs.load(write(tmp_path, f"fresh_timeout = {value}\n"))
        assert expected in str(raised.value)


def test_the_template_documents_and_sets_fresh_timeout(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    configs.save_repo(path, RepoConfig(Path("/src/app")))
    text = path.read_text(encoding="utf-8")
    assert "# Seconds a session start may wait while the remote is checked" in text
    assert configs.load(path).fresh_timeout == 2.0


def test_keep_days_is_a_whole_number_of_days(tmp_path: Path) -> None:
    assert configs.load(tmp_path / "absent.toml").keep_days == 0
    assert configs.load(write(tmp_path, "keep_days = 90\n")).keep_days == 90
    for value, expected in (
        ("-1", "'keep_days' is -1; expected a whole number of days (0 keeps everything)"),
        ("1.5", "'keep_days' is 1.5; expected a whole number of days"),
        ("true", "'keep_days' is True; expected a whole number of days"),
        ('"30"', "'keep_days' is '30'; expected a whole number of days"),
        ("100000", "'keep_days' is 100000; expected at most 36500 days"),
    ):
        with pytest.raises(ConfigError) as raised:
            configs.load(write(tmp_path, f"keep_days = {value}\n"))
        assert expected in str(raised.value)


def test_the_template_loads_and_says_what_keep_days_does(tmp_path: Path) -> None:
    text = configs.TEMPLATE.format(device="desk")
    assert "keep_days = 0" in text and "0 keeps everything" in text
    assert configs.load(write(tmp_path, text.replace("= 0", "= 7"))).keep_days == 7
