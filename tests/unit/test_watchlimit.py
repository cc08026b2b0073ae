"""What a person is told when fs.inotify.max_user_watches is exhausted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirsyncd.source import watchlimit


@pytest.mark.parametrize("complete", [True, False])
def test_the_count_of_unwatched_directories_says_when_it_was_cut_short(
        complete: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(watchlimit, "count_directories", lambda source, roots: (5000, complete))
    message, warning = watchlimit.limit_message(str(tmp_path), {"a"}, 300)
    counted = "5000" if complete else "at least 5000"
    assert warning == f"{counted} directories unwatched (raise fs.inotify.max_user_watches)"
    assert f", {counted} directories are not watched" in message and "watch_backend = fanotify" in message
    assert ("or more (the count was cut short)" in message) is not complete


def test_directories_are_counted_below_each_root(tmp_path: Path) -> None:
    for path in ("a/b/c", "a/d", "e"):
        (tmp_path / path).mkdir(parents=True)
    assert watchlimit.count_directories(str(tmp_path), {"a"}) == (4, True)
    assert watchlimit.count_directories(str(tmp_path), {"a"}, budget=-1) == (0, False)
