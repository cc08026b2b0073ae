"""bash completion (completions/pirsyncd): run through bash's own completion variables, as
``complete -F _pirsyncd`` would, with instance names from a config directory."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from pirsyncd.completion import render_bash_completion

SHIPPED = Path(__file__).resolve().parents[2] / "completions" / "pirsyncd"


def complete(*words: str, config_dir: Path | None = None) -> list[str]:
    """What ``pirsyncd WORDS<TAB>`` offers: the last word is the one being completed."""
    script = (f"source {shlex.quote(str(SHIPPED))}; COMP_WORDS=(pirsyncd {shlex.join(words)}); "
              f"COMP_CWORD={len(words)}; _pirsyncd; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    environment = {"PATH": "/usr/bin:/bin"}
    if config_dir is not None:
        environment["PIRSYNCD_CONFIG_DIR"] = str(config_dir)
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                            env=environment, check=True, timeout=30)
    assert result.stderr == ""
    return [line for line in result.stdout.splitlines() if line]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pirsyncd"
    directory.mkdir()
    for name in ("www", "web-api", "example"):  # example.conf is the shipped template
        (directory / f"{name}.conf").write_text("[sync]\n")
    (directory / "notes.txt").write_text("not an instance\n")
    return directory


def test_the_shipped_completion_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == render_bash_completion(), (
        "run: python3 -c 'import pirsyncd.completion as c; print(c.render_bash_completion(), end=\"\")' "
        "> completions/pirsyncd")


def test_subcommands_and_instance_names_complete_the_first_word(config_dir: Path) -> None:
    assert complete("st", config_dir=config_dir) == ["status"]
    assert sorted(complete("", config_dir=config_dir)) == ["audit", "pause", "plan", "resume", "status", "wait",
                                                           "web-api", "www"]
    assert complete("w", config_dir=config_dir) == ["wait", "web-api", "www"]


def test_a_subcommand_completes_instance_names_and_its_own_options(config_dir: Path) -> None:
    assert complete("wait", "we", config_dir=config_dir) == ["web-api"]
    assert complete("pause", "", config_dir=config_dir) == ["web-api", "www"]
    assert complete("wait", "--t", config_dir=config_dir) == ["--timeout"]
    assert complete("status", "--js", config_dir=config_dir) == ["--json"]
    assert "--json" not in complete("wait", "--", config_dir=config_dir)
    assert complete("audit", "--con", config_dir=config_dir) == ["--config", "--config-dir", "--content"]
    assert complete("audit", "--rep", config_dir=config_dir) == ["--repair"]


def test_the_config_dir_on_the_line_is_where_instances_come_from(config_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "backup.conf").write_text("[sync]\n")
    assert complete("status", "--config-dir", str(other), "", config_dir=config_dir) == ["backup"]
    assert complete("status", "--config-dir", "=", str(other), "b", config_dir=config_dir) == ["backup"]


def test_options_and_their_values_come_from_the_option_table(config_dir: Path) -> None:
    assert complete("--del", config_dir=config_dir) == ["--delay", "--deletion-mode"]
    assert complete("www", "--no-par", config_dir=config_dir) == ["--no-partial"]
    assert complete("--startup-sync", "", config_dir=config_dir) == ["auto", "full", "none"]
    assert complete("--deletion-mode", "=", "p", config_dir=config_dir) == ["parents"]
    assert complete("--delay", "", config_dir=config_dir) == []  # a number: nothing to offer
    assert complete("--config-dir", str(config_dir.parent) + "/", config_dir=config_dir) == [str(config_dir)]
    assert complete("--config", str(config_dir / "ww"), config_dir=config_dir) == [str(config_dir / "www.conf")]


def test_plan_completes_instance_names_its_own_options_and_the_daemons(config_dir: Path) -> None:
    assert complete("plan", "w", config_dir=config_dir) == ["web-api", "www"]
    assert complete("plan", "--js", config_dir=config_dir) == ["--json"]
    assert complete("plan", "--fir", config_dir=config_dir) == ["--first"]
    assert complete("plan", "--max-del", config_dir=config_dir) == ["--max-delete"]
    assert complete("plan", "--deletion-mode", "", config_dir=config_dir) == ["auto", "missing-args", "parents"]
