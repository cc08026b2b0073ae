"""Every mistake a user can make gets its own clear message and exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import run_pirsyncd

pytestmark = pytest.mark.auto_deletion_mode  # nothing here syncs: once is enough

EX_USAGE = EX_CONFIG = 78  # a command line is configuration too

# (case, config text with {src}/{dst}/{tmp} placeholders or raw bytes, expected message fragments)
CONFIG_CASES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("missing source", "[sync]\ndestination = {dst}\n", ("[sync] source: missing",)),
    ("missing destination", "[sync]\nsource = {src}\n", ("[sync] destination: missing",)),
    ("source does not exist", "[sync]\nsource = {tmp}/nope\ndestination = {dst}\n", ("does not exist",)),
    ("source is a file", "[sync]\nsource = {tmp}/a-file\ndestination = {dst}\n", ("is not a directory",)),
    ("destination inside the source", "[sync]\nsource = {src}\ndestination = {src}/mirror\n",
     ("[sync] destination", "is inside the source")),
    ("source inside the destination", "[sync]\nsource = {src}\ndestination = {tmp}\n",
     ("[sync] source", "is inside the destination")),
    ("relative source", "[sync]\nsource = src\ndestination = {dst}\n", ("[sync] source: is a relative path",)),
    ("relative destination", "[sync]\nsource = {src}\ndestination = dst\n",
     ("[sync] destination: is a relative path",)),
    ("unknown section", "[sync]\nsource = {src}\ndestination = {dst}\n[extra]\nx = 1\n", ("[extra]: unknown section",)),
    ("unknown key", "[sync]\nsource = {src}\ndestination = {dst}\nspeed = 9\n", ("[sync] speed: unknown key",)),
    ("non-numeric delay", "[sync]\nsource = {src}\ndestination = {dst}\ndelay = ten\n",
     ("[sync] delay: not a number of seconds", "'ten'")),
    ("negative delay", "[sync]\nsource = {src}\ndestination = {dst}\ndelay = -1\n", ("[sync] delay",)),
    ("bad size", "[sync]\nsource = {src}\ndestination = {dst}\n[rsync]\nmax_size = lots\n",
     ("[rsync] max_size: not a size",)),
    ("unusable exclude", "[sync]\nsource = {src}\ndestination = {dst}\nexclude = [oops\n",
     ("[sync] exclude: pattern '[oops' has an unclosed '['",)),
    ("flag that deletes the source", "[sync]\nsource = {src}\ndestination = {dst}\n"
     "[rsync]\nrsync_flags = --remove-source-files\n", ("--remove-source-files is not allowed",)),
    ("flag pirsyncd manages", "[sync]\nsource = {src}\ndestination = {dst}\n[rsync]\nrsync_flags = --files-from=x\n",
     ("--files-from is not allowed",)),
    ("password file readable by others", "[sync]\nsource = {src}\ndestination = rsync://u@127.0.0.1/m\n"
     "[remote]\npassword_file = {tmp}/open.secret\n", ("open.secret is readable by others", "chmod 600")),
    ("empty file", "", ("is empty",)),
    ("binary file", b"\x00\x01\x02binary", ("is a binary file",)),
    ("not UTF-8", b"[sync]\nsource = /caf\xe9\n", ("is not UTF-8",)),
    ("not INI", "source = /x\n", ("not a valid INI file",)),
    ("missing rsync", "[sync]\nsource = {src}\ndestination = {dst}\n[rsync]\nrsync_binary = /nonexistent/rsync\n",
     ("rsync_binary", "not an executable program")),
]


@pytest.mark.parametrize("case, text, fragments", CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_config_mistakes(tmp_path: Path, case: str, text: str | bytes, fragments: tuple[str, ...]) -> None:
    source, destination = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    destination.mkdir()
    (tmp_path / "a-file").write_text("x")
    secret = tmp_path / "open.secret"
    secret.write_text("password\n")
    secret.chmod(0o644)
    config = tmp_path / "www.conf"
    if isinstance(text, str):
        config.write_text(text.format(src=source, dst=destination, tmp=tmp_path))
    else:
        config.write_bytes(text)
    result = run_pirsyncd("--check", "--config", str(config))
    assert result.returncode == EX_CONFIG, (case, result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (case, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("pirsyncd: ") for line in lines), result.stderr
    assert result.stdout == ""


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    config = tmp_path / "www.conf"
    config.write_text("[sync]\nsource = rel\ndelay = x\nbogus = 1\n")
    result = run_pirsyncd("--check", "--config", str(config))
    assert result.returncode == EX_CONFIG
    assert len(result.stderr.strip().splitlines()) == 4, result.stderr  # source, destination, delay, bogus


def test_a_valid_config_checks_clean_by_instance_name(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "www.conf").write_text(f"[sync]\nsource = {tmp_path}/src\ndestination = {tmp_path}/dst\n")
    result = run_pirsyncd("--check", "www", "--config-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    result = run_pirsyncd("--check", "www", env={"PIRSYNCD_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    missing = run_pirsyncd("--check", "typo", "--config-dir", str(tmp_path))
    assert missing.returncode == EX_CONFIG and "typo.conf: no such file" in missing.stderr


@pytest.mark.parametrize("arguments, fragment", [
    (["www", "--config", "/etc/x.conf"], "either NAME or --config"),
    (["--no-such-option"], "unrecognized arguments"),
    (["../etc/passwd"], "is not allowed"),
    (["a/b"], "is not allowed"),
    ([".hidden"], "is not allowed"),
    ([], "nothing to mirror"),
    (["status", "../x"], "is not allowed"),
    (["--delay"], "expected one argument"),
])
def test_command_line_mistakes(arguments: list[str], fragment: str) -> None:
    result = run_pirsyncd(*arguments)
    assert result.returncode == EX_USAGE, (arguments, result.returncode, result.stderr)
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_running_with_a_missing_source_says_so_with_its_own_status(tmp_path: Path) -> None:
    result = run_pirsyncd("--source", str(tmp_path / "nope"), "--destination", str(tmp_path / "dst"))
    assert result.returncode == 66
    assert "does not exist; create or mount it" in result.stderr and "Traceback" not in result.stderr


def test_help_and_examples_cover_every_option() -> None:
    from pirsyncd.config.options import OPTIONS

    help_text = run_pirsyncd("--help").stdout
    examples = run_pirsyncd("--examples").stdout
    for option in OPTIONS:
        assert option.flag in help_text, option.flag
        assert f"[{option.section}] {option.key} = " in examples, option.key
