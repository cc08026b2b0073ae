"""rsync's itemized output (pirsyncd.replica.itemize): what was created, updated and deleted, read
in chunks cut anywhere, names with newlines, backslashes and non-ASCII bytes read back exactly."""

from __future__ import annotations

import pytest

from pirsyncd.replica.itemize import ItemizeReader, read_itemized

# What rsync 3.2.7 prints with --out-format='%i %n' under LC_ALL=C, between its other lines.
OUTPUT = (b"created directory /backup/www\n"
          b"*deleting   old/f\n*deleting   old/\n*deleting   top\n"
          b"cd+++++++++ ./\n"
          b">f+++++++++ back\\#134#065slash\n>f+++++++++ caf\\#303\\#251\n>f+++++++++ we ird\\#012name\n"
          b"cd+++++++++ web/\n>f+++++++++ web/index.html\n>f.st...... about.html\n.d..t...... kept/\n"
          b"cL+++++++++ link\n\nNumber of files: 6 (reg: 4, dir: 2)\nsent 364 bytes  received 135 bytes\n")
REST = (b"created directory /backup/www\n\nNumber of files: 6 (reg: 4, dir: 2)\n"
        b"sent 364 bytes  received 135 bytes\n")


@pytest.mark.parametrize("size", [1, 5, 33, len(OUTPUT)])
def test_items_are_read_and_the_rest_kept_however_the_output_is_cut(size: int) -> None:
    reader = ItemizeReader(limit=100)
    kept = b"".join(reader.feed(OUTPUT[start:start + size]) for start in range(0, len(OUTPUT), size))
    kept += reader.feed(b"")
    changes = reader.changes
    assert kept == REST
    assert (changes.created, changes.updated, changes.deleted) == (6, 2, 3)
    assert changes.first["deleted"] == ["old/f", "old", "top"]
    assert changes.first["created"] == ["back\\#065slash", "café", "we ird\nname", "web", "web/index.html", "link"]
    assert changes.first["updated"] == ["about.html", "kept"]
    assert changes.paths[:3] == ["old/f", "old", "top"] and not changes.truncated


def test_a_limit_bounds_the_names_kept_never_the_counts() -> None:
    changes, _ = read_itemized(OUTPUT, limit=2)
    assert (changes.created, changes.updated, changes.deleted) == (6, 2, 3)
    assert changes.first == {"created": ["back\\#065slash", "café"], "updated": ["about.html", "kept"],
                             "deleted": ["old/f", "old"]}
    assert changes.paths == ["old/f", "old"] and changes.truncated


def test_a_path_named_twice_is_listed_once() -> None:
    changes, _ = read_itemized(b"*deleting   a\n>f+++++++++ a\n", limit=10)
    assert (changes.paths, changes.created, changes.deleted) == (["a"], 1, 1)
