"""watch_backend without a daemon: the option, the choice (the probe and the mount table given
as plain values), and how the status line, ``pirsyncd status`` and the metrics show it."""

from __future__ import annotations

import pytest

from pirsyncd.config import exitcodes
from pirsyncd.config.parse import ConfigError, parse
from pirsyncd.ops.report import status_line
from pirsyncd.ops.status import format_status
from pirsyncd.source.backend import BackendChoice, BackendUnavailable, choose_backend
from pirsyncd.source.identity import SourceProblem
from pirsyncd.source.mounts import Mount

BASE = "[sync]\nsource = /srv/www\ndestination = /var/backups/www\n"
ROOT = [Mount(1, "/", "ext4")]
OVERLAY = "/srv/www is on overlay (mounted at /srv), which cannot report file handles to fanotify"


def never_asked(source: str) -> str | None:
    raise AssertionError(f"the probe was run for {source}")


def test_the_default_is_auto_and_the_words_are_checked() -> None:
    assert parse(BASE).watch_backend == "auto"
    assert parse(BASE + "watch_backend = inotify\n").watch_backend == "inotify"
    with pytest.raises(ConfigError) as error:
        parse(BASE + "watch_backend = kqueue\n")
    assert "watch_backend" in str(error.value) and "auto, inotify, fanotify" in str(error.value)


def test_inotify_asked_for_probes_nothing() -> None:
    assert choose_backend("inotify", "/srv/www", False, never_asked, ROOT) == BackendChoice("inotify")


def test_auto_takes_fanotify_when_the_probe_finds_nothing_against_it() -> None:
    assert choose_backend("auto", "/srv/www", False, lambda source: None, ROOT) == BackendChoice("fanotify")


def test_auto_falls_back_to_inotify_with_the_probe_s_reason() -> None:
    assert choose_backend("auto", "/srv/www", False, lambda source: OVERLAY, ROOT) == BackendChoice("inotify", OVERLAY)


def test_auto_prefers_inotify_when_a_mirrored_file_system_is_mounted_below_the_source() -> None:
    table = [*ROOT, Mount(2, "/srv/www/data", "xfs"), Mount(3, "/srv/www/more", "ext4")]
    choice = choose_backend("auto", "/srv/www", False, never_asked, table)
    assert choice == BackendChoice("inotify", "another file system (xfs) is mounted below the source at data and "
                                              "1 more, which a fanotify mark would not reach")


def test_mounts_the_mirror_keeps_out_do_not_keep_auto_from_fanotify() -> None:
    """Pseudo file systems are never mirrored, and one_file_system keeps the others out: the
    mark need not reach them; a bind mount of the source's own file system it reaches."""
    table = [*ROOT, Mount(4, "/srv/www/proc", "proc"), Mount(1, "/srv/www/bound", "ext4")]
    assert choose_backend("auto", "/srv/www", False, lambda source: None, table).backend == "fanotify"
    table.append(Mount(2, "/srv/www/data", "xfs"))
    assert choose_backend("auto", "/srv/www", True, lambda source: None, table).backend == "fanotify"


def test_fanotify_asked_for_and_refused_is_one_line_with_its_exit_status() -> None:
    with pytest.raises(BackendUnavailable) as refused:
        choose_backend("fanotify", "/srv/www", False, lambda source: OVERLAY, ROOT)
    assert isinstance(refused.value, SourceProblem) and refused.value.exit_status == exitcodes.NO_FANOTIFY == 79
    assert str(refused.value) == (f"watch_backend = fanotify, but fanotify cannot watch /srv/www: {OVERLAY}; "
                                  "set watch_backend = auto or inotify, or remove the cause")
    assert "\n" not in str(refused.value)


def test_fanotify_asked_for_is_taken_with_mounts_below() -> None:
    """Asked for, fanotify is used even so (what is mounted below is covered by full syncs)."""
    table = [*ROOT, Mount(2, "/srv/www/data", "xfs")]
    assert choose_backend("fanotify", "/srv/www", False, lambda source: None, table) == BackendChoice("fanotify")


SNAPSHOT = {"state": "in-sync", "pending": 0, "watched_dirs": 1234}


def test_the_status_line_shows_the_backend_instead_of_the_watch_count_under_fanotify() -> None:
    assert status_line(SNAPSHOT) == "in sync · 1,234 dirs watched · 0 pending"
    assert status_line({**SNAPSHOT, "watch_backend": "inotify"}) == "in sync · 1,234 dirs watched · 0 pending"
    assert status_line({**SNAPSHOT, "watched_dirs": 0, "watch_backend": "fanotify"}) == (
        "in sync · watched by fanotify · 0 pending")


def test_pirsyncd_status_says_how_the_source_is_watched() -> None:
    plain = format_status({**SNAPSHOT, "watch_backend": "inotify", "watch_backend_reason": None})
    assert "watched dirs: 1234" in plain and "watching:" not in plain
    fell_back = format_status({**SNAPSHOT, "watch_backend": "inotify", "watch_backend_reason": OVERLAY})
    assert f"watched dirs: 1234\nwatching:     inotify, not fanotify: {OVERLAY}" in fell_back
    fanotify = format_status({**SNAPSHOT, "watched_dirs": 0, "watch_backend": "fanotify"})
    assert "watching:     fanotify (one filesystem mark" in fanotify and "watched dirs" not in fanotify


def test_the_metrics_name_the_backend_in_use() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    from prometheus_client import CollectorRegistry, core, generate_latest

    from pirsyncd.ops.metrics import _SnapshotCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector({**SNAPSHOT, "instance": "www", "watch_backend": "fanotify"},
                                         core))  # type: ignore[arg-type]
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in parser.text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples if sample.name == "pirsyncd_watch_backend"}
    assert samples == {("pirsyncd_watch_backend", (("backend", "fanotify"), ("instance", "www"), ("reason", ""))): 1.0}
