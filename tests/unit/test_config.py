"""Config parsing and validation: plain text in, a Config or every problem out."""

from __future__ import annotations

import re

import pytest

from pirsyncd.config.destination import DestinationError, DestinationKind, parse_destination
from pirsyncd.config.options import OPTIONS, Kind, Option
from pirsyncd.config.parse import ConfigError, parse, render_sample_config
from pirsyncd.config.values import convert, parse_duration

MINIMAL = "[sync]\nsource = /srv/www\ndestination = /var/backups/www\n"


def problems_of(text: str, **overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "www.conf", overrides)
    return caught.value.problems


def test_minimal_config_takes_defaults() -> None:
    config = parse(MINIMAL, "www.conf")
    assert config.source == "/srv/www"
    assert config.destination.kind == DestinationKind.LOCAL
    assert config.delay == 1.0
    assert config.initial_sync is True
    assert config.exclude == ()


def test_every_option_has_help_and_example_and_a_config_field() -> None:
    config = parse(MINIMAL, "www.conf")
    for option in OPTIONS:
        assert option.help.endswith((".", ")")), option.key
        assert option.example, option.key
        assert hasattr(config, option.key), option.key


def test_all_problems_are_reported_at_once_with_file_section_and_key() -> None:
    text = ("[sync]\nsource = relative/path\ndelay = ten\ntrigger_paths = -3\nbogus = 1\n"
            "[rsync]\nmax_size = huge\nrsync_flags = --remove-source-files -avn\n[nonsense]\nx = 1\n")
    problems = problems_of(text)
    joined = "\n".join(problems)
    assert "www.conf: [sync] source: is a relative path" in joined
    assert "www.conf: [sync] delay: not a number of seconds" in joined
    assert "'ten'" in joined
    assert "www.conf: [sync] trigger_paths: must be 1 or more" in joined
    assert "www.conf: [sync] bogus: unknown key" in joined
    assert "www.conf: [rsync] max_size: not a size" in joined
    assert "--remove-source-files is not allowed" in joined
    assert "-n (--dry-run) is not allowed" in joined
    assert "www.conf: [nonsense]: unknown section" in joined
    assert "www.conf: [sync] destination: missing" in joined


def test_key_in_the_wrong_section_names_the_right_one() -> None:
    problems = problems_of(MINIMAL + "[rsync]\ndelay = 1\n")
    assert problems == ["www.conf: [rsync] delay: unknown key; it belongs in [sync]"]


@pytest.mark.parametrize("source, destination, fragment", [
    ("/srv/www", "/srv/www/mirror", "is inside the source"),
    ("/srv/www/site", "/srv", "is inside the destination"),
    ("/srv/www", "/srv/www", "is inside the source"),
])
def test_source_and_destination_must_not_nest(source: str, destination: str, fragment: str) -> None:
    problems = problems_of(f"[sync]\nsource = {source}\ndestination = {destination}\n")
    assert any(fragment in problem for problem in problems), problems


def test_command_line_overrides_the_file() -> None:
    config = parse(MINIMAL + "delay = 5\n", "www.conf", {"delay": "0", "exclude": ["*.tmp", "/cache/"]})
    assert config.delay == 0.0
    assert config.exclude == ("*.tmp", "/cache/")


def test_override_errors_name_the_flag() -> None:
    problems = problems_of(MINIMAL, delay="-1")
    assert problems == ["command line: --delay: not a number of seconds (like 1.5, 500ms, 30s, 5m, 6h): '-1'"]


def test_multi_line_excludes_and_bad_patterns() -> None:
    config = parse(MINIMAL + "exclude = *.tmp\n    /cache/\n    .git/\n", "www.conf")
    assert config.exclude == ("*.tmp", "/cache/", ".git/")
    problems = problems_of(MINIMAL + "exclude = [unclosed\n")
    assert problems == ["www.conf: [sync] exclude: pattern '[unclosed' has an unclosed '['"]


def test_invalid_ini_and_duplicate_keys_are_one_clear_line() -> None:
    assert problems_of("source = /x\n")[0].startswith("www.conf: not a valid INI file")
    assert problems_of(MINIMAL + "delay = 1\ndelay = 2\n")[0].startswith("www.conf: not a valid INI file")


def test_password_file_only_with_a_daemon_destination() -> None:
    problems = problems_of(MINIMAL + "[remote]\npassword_file = /etc/pirsyncd/www.secret\n")
    assert "only used with an rsync daemon destination" in problems[0]


@pytest.mark.parametrize("text, seconds", [("1.5", 1.5), ("500ms", 0.5), ("30s", 30), ("5m", 300),
                                           ("6h", 21600), ("1d", 86400), ("0", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-1", "1e9999", "1.5.2", "5 minutes"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text, kind, host, module, path", [
    ("/var/backups/www", DestinationKind.LOCAL, "", "", "/var/backups/www"),
    ("mirror:/srv/www", DestinationKind.SSH, "mirror", "", "/srv/www"),
    ("backup@mirror.example:/srv/www", DestinationKind.SSH, "mirror.example", "", "/srv/www"),
    ("rsync://backup@mirror:8730/www/site", DestinationKind.DAEMON, "mirror", "www", "site"),
    ("backup@mirror::www/site", DestinationKind.DAEMON, "mirror", "www", "site"),
    ("mirror::www", DestinationKind.DAEMON, "mirror", "www", ""),
])
def test_destinations(text: str, kind: str, host: str, module: str, path: str) -> None:
    destination = parse_destination(text)
    assert (destination.kind, destination.host, destination.module, destination.path) == (kind, host, module, path)


def test_destination_rsync_targets() -> None:
    assert parse_destination("/var/backups/www/").rsync_target() == "/var/backups/www/"
    assert parse_destination("u@h:/srv/www").rsync_target() == "u@h:/srv/www/"
    assert parse_destination("rsync://u@h:8730/mod/sub").rsync_target() == "rsync://u@h:8730/mod/sub/"
    assert parse_destination("u@h::mod").rsync_target() == "rsync://u@h/mod/"


@pytest.mark.parametrize("text", ["", "relative/dir", "rsync://host", "host::", " /x"])
def test_bad_destinations(text: str) -> None:
    with pytest.raises(DestinationError):
        parse_destination(text)


def test_sample_config_parses_and_names_every_key() -> None:
    sample = render_sample_config()
    config = parse(sample, "example.conf")
    assert config.source == "/srv/www"
    for option in OPTIONS:
        assert re.search(rf"^#?{option.key} =", sample, re.MULTILINE), option.key


def commented_values(sample: str) -> dict[str, str]:
    """Key -> the value of its commented line (``#delay = 1``) in a sample config."""
    values = {}
    for line in sample.splitlines():
        match = re.fullmatch(r"#(\w+) =(?: (.*))?", line)
        if match:
            values[match[1]] = match[2] or ""
    return values


OPTIONAL = [option for option in OPTIONS if not option.required]


@pytest.mark.parametrize("option", OPTIONAL, ids=lambda option: option.key)
def test_the_sample_configs_commented_line_is_the_keys_default(option: Option) -> None:
    shown = commented_values(render_sample_config())
    assert option.key in shown, f"no '#{option.key} = ...' line in the sample config"
    assert convert(option, shown[option.key]) == option.default, (
        f"the sample config shows '#{option.key} = {shown[option.key]}'; the default is {option.default!r}")


def test_uncommenting_every_line_of_the_sample_config_changes_nothing() -> None:
    sample = render_sample_config()
    uncommented = re.sub(r"^#(\w+ =)", r"\1", sample, flags=re.MULTILINE)
    assert uncommented != sample
    assert parse(uncommented, "example.conf") == parse(sample, "example.conf")


def test_an_empty_value_leaves_a_setting_without_a_default_unset() -> None:
    config = parse(MINIMAL + "state_file =\n[rsync]\nmax_size =\n[remote]\nssh_port =\n", "www.conf")
    assert (config.state_file, config.max_size, config.ssh_port) == (None, None, None)
    assert any("delay: not a number" in problem for problem in problems_of(MINIMAL + "delay =\n"))


def test_the_shipped_example_config_is_the_generated_one() -> None:
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "etc" / "pirsyncd" / "example.conf"
    assert shipped.read_text() == render_sample_config(), "run: pirsyncd --sample-config > etc/pirsyncd/example.conf"


BOUNDED = [option for option in OPTIONS if option.bounds is not None]


@pytest.mark.parametrize("option", BOUNDED, ids=lambda option: option.key)
def test_a_number_out_of_the_tables_bounds_is_refused_naming_file_section_and_key(option: Option) -> None:
    bounds = option.bounds
    assert bounds is not None and bounds.low is not None
    below = bounds.low if bounds.low_excluded else bounds.low - 1
    text = f"{below:g}"
    section = "" if option.section == "sync" else f"[{option.section}]\n"
    assert problems_of(MINIMAL + f"{section}{option.key} = {text}\n") == [
        f"www.conf: [{option.section}] {option.key}: must be {bounds.describe()}: {text!r}"]
    if bounds.high is not None:
        assert problems_of(MINIMAL, **{option.key: f"{bounds.high + 1:g}"}) == [
            f"command line: {option.flag}: must be {bounds.describe()}: '{bounds.high + 1:g}'"]
    within = f"{bounds.high:g}" if bounds.high is not None else f"{bounds.low + 1:g}"
    assert getattr(parse(MINIMAL, "www.conf", {option.key: within}), option.key) == float(within)


@pytest.mark.parametrize("option", [option for option in OPTIONS if option.choices], ids=lambda option: option.key)
def test_every_choice_in_the_table_is_taken_and_nothing_else(option: Option) -> None:
    for choice in option.choices:
        assert getattr(parse(MINIMAL, "www.conf", {option.key: choice}), option.key) == choice
    problems = problems_of(MINIMAL, **{option.key: "bogus"})
    assert problems == [f"command line: {option.flag}: not {option.allowed()}: 'bogus'"
                        if option.kind is Kind.PATH else
                        f"command line: {option.flag}: not one of {', '.join(option.choices)}: 'bogus'"]


def test_only_numbers_have_bounds_and_only_words_have_choices() -> None:
    for option in OPTIONS:
        assert option.bounds is None or option.kind in (Kind.INT, Kind.DURATION), option.key
        assert not option.choices or option.kind in (Kind.CHOICE, Kind.PATH), option.key
        assert (option.kind is Kind.CHOICE) <= bool(option.choices), option.key


def test_rsync_report_flags_are_refused_only_when_on_sync_reads_the_report() -> None:
    base = "[sync]\nsource = /srv/www\ndestination = /backup/www\n[rsync]\nrsync_flags = -avi --log-format=%n\n"
    assert parse(base, "t.conf").rsync_flags == ("-avi", "--log-format=%n")  # allowed without on_sync
    with pytest.raises(ConfigError) as refused:
        parse(base + "[hooks]\non_sync = /usr/local/bin/purge\n", "t.conf")
    why = "is not allowed with on_sync: pirsyncd reads rsync's report of each entry itself"
    assert refused.value.problems == [f"t.conf: [rsync] rsync_flags: -i (--itemize-changes) {why}",
                                      f"t.conf: [rsync] rsync_flags: --log-format {why}"]
    # A short option's value is not more options: -T/tmp/dir is not -i.
    assert parse(base.replace("-avi --log-format=%n", "-a -T/tmp/index") + "[hooks]\non_sync = /bin/true\n",
                 "t.conf").rsync_flags == ("-a", "-T/tmp/index")
