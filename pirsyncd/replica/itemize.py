"""What rsync did (or, with ``--dry-run``, would do) to each entry, read from its itemized output
(pure). Runs that report it are given ``--out-format=%i %n`` (:data:`OUT_FORMAT`): one line per
entry created, updated or deleted at the destination::

    cd+++++++++ web/
    >f+++++++++ web/index.html
    >f.st...... about.html
    *deleting   old.html

rsync prints a name's unprintable bytes (a newline, and under ``LC_ALL=C`` every byte past ASCII)
as ``\\#ooo`` and a backslash before ``#`` as ``\\#134``, so every name is one line and is read back
exactly (:func:`unescape_name`). A reader takes the item lines out of the output it is fed chunk
by chunk and keeps the rest (the ``--stats``, messages) as it was.

    >>> reader = ItemizeReader(limit=10)
    >>> reader.feed(b"cd+++++++++ web/\\n>f+++++++++ web/index.html\\n*deleting   a\\\\#012b\\nsent 5 bytes\\n")
    b'sent 5 bytes\\n'
    >>> reader.changes.paths, reader.changes.created, reader.changes.deleted
    (['web', 'web/index.html', 'a\\nb'], 2, 1)
"""

from __future__ import annotations

import dataclasses
import os
import re

OUT_FORMAT = "--out-format=%i %n"
_ITEM = re.compile(rb"^(\*deleting  |[<>ch.][fdLDS][^\n]{9}) (.+)$")
_ESCAPE = re.compile(rb"\\#([0-7]{3})")
KINDS = ("created", "updated", "deleted")


def unescape_name(raw: bytes) -> str:
    """A name as rsync printed it, made the file system's name again.

    >>> unescape_name(b"back\\\\#134#065slash"), unescape_name(b"caf\\\\#303\\\\#251")
    ('back\\\\#065slash', 'café')
    """
    return os.fsdecode(_ESCAPE.sub(lambda match: bytes([int(match[1], 8)]), raw))


def item_kind(flags: bytes) -> str:
    """'deleted', 'created' (all attributes new: ``+++++++++``) or 'updated'.

    >>> item_kind(b"*deleting  "), item_kind(b">f+++++++++"), item_kind(b".d..t......")
    ('deleted', 'created', 'updated')
    """
    if flags.startswith(b"*"):
        return "deleted"
    return "created" if flags[2:].startswith(b"+++++++++") else "updated"


@dataclasses.dataclass
class ItemizedChanges:
    """What the items said: counts of each kind, the first ``limit`` names of each, and the first
    ``limit`` names of all (``paths``, in rsync's order, each once; ``truncated``: more came).
    Names are relative to the transfer's root, a directory without its trailing slash; the root
    itself (``./``) is not an entry."""

    limit: int
    created: int = 0
    updated: int = 0
    deleted: int = 0
    first: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {kind: [] for kind in KINDS})
    paths: list[str] = dataclasses.field(default_factory=list)
    truncated: bool = False
    _seen: set[str] = dataclasses.field(default_factory=set, repr=False)

    def add(self, kind: str, path: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.first[kind]) < self.limit:
            self.first[kind].append(path)
        if path in self._seen:
            return
        if len(self.paths) < self.limit:
            self.paths.append(path)
            self._seen.add(path)
        else:
            self.truncated = True


class ItemizeReader:
    """Reads rsync's stdout chunk by chunk (b"" at its end): item lines go into ``changes``, the
    rest is returned to be kept."""

    def __init__(self, limit: int, changes: ItemizedChanges | None = None) -> None:
        self.changes = changes if changes is not None else ItemizedChanges(limit)
        self._partial = b""

    def feed(self, data: bytes) -> bytes:
        """Take a chunk of output (b"" at its end); return what is not an item line."""
        text = self._partial + data
        if data:
            cut = text.rfind(b"\n") + 1
            text, self._partial = text[:cut], text[cut:]
        else:
            self._partial = b""
        kept = []
        for line in text.splitlines(keepends=True):
            match = _ITEM.match(line.rstrip(b"\n"))
            if match is None:
                kept.append(line)
                continue
            name = match[2].rstrip(b"/")
            if name in (b".", b""):
                continue
            self.changes.add(item_kind(match[1]), unescape_name(name))
        return b"".join(kept)


def read_itemized(output: bytes, limit: int) -> tuple[ItemizedChanges, bytes]:
    """A whole output at once: the changes, and the rest of the output."""
    reader = ItemizeReader(limit)
    kept = reader.feed(output) + reader.feed(b"")
    return reader.changes, kept
