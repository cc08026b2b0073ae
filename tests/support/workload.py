"""A seeded random workload that churns a directory tree, for churn tests and bench/.

    >>> workload = Workload(source, seed=123, profile="mixed", outside=scratch)  # doctest: +SKIP
    >>> workload.run(300)                                                        # doctest: +SKIP
    >>> print(workload.describe())                                               # doctest: +SKIP
    replay: PIRSYNCD_CHURN_SEED=123 profile=mixed

The same seed and profile applied to the same starting tree (and the same
``outside`` path and contents) produce the same tree. The workload keeps no model
of the tree: every operation lists the tree afresh, in sorted order, and draws
from ``random.Random(seed)`` only. Paths are kept within
``MAX_RELATIVE_PATH_BYTES`` and ``MAX_DEPTH`` by construction, so no operation
can fail with ENAMETOOLONG however deep the tree grows.

Profiles (``PROFILES``): ``mixed`` (every classic operation), ``hostile`` (the same, mostly
hostile names), ``renames``, ``burst`` (writes into a few hot directories), ``sneaky`` (changes
an inotify mirror can miss or misplace: truncate(2) by path, same-size rewrites keeping the mtime
and then a rename of their directory, writes through a second hard-link name, file <-> directory
<-> symlink swaps, editor-style atomic saves, rename chains, directory renames followed at once
by writes inside, moves out of the tree and back), ``deploy`` (releases, a ``current`` symlink
switched by ``ln -sfn`` or ``mv -T``, old releases pruned) and ``copylink`` (lsyncd #290:
``cp -r D copy; rm -r copy; ln -s D copy``, then writes and mkdirs inside ``D`` at once).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from .trees import Listing, display_path, list_tree, subtree_extent

PROFILES = ("mixed", "hostile", "renames", "burst", "sneaky", "deploy", "copylink")
SEED_VARIABLE = "PIRSYNCD_CHURN_SEED"
# Relative to the tree root; with a root of at most _MAX_ROOT_BYTES an absolute
# path stays well under PATH_MAX (4096) on both source and destination.
MAX_RELATIVE_PATH_BYTES = 3000
MAX_DEPTH = 20
NAME_MAX_BYTES = 255
_MAX_ROOT_BYTES = 900
_MIN_NAME_ROOM = 16  # enough for the short fallback name "n<counter>"

# Names that break naive shell quoting, option parsing, globbing, line-based
# file lists and UTF-8 assumptions. The last one is not valid UTF-8 (byte 0xE9).
# The one list of hostile names for every test (and the churn workload's pick).
HOSTILE_NAMES = (
    "-", "-rf", "--delete", "-e sh", "--", "-n", "--files-from=x", " leading space",
    "trailing space ", "two  spaces", "new\nline", "\n", "trailing newline\n", "tab\tname",
    "carriage\rreturn", "back\\slash", "\\", "single'quote", 'double"quote', "star*", "*",
    "question?", "[bracket]", "[", "]", "$HOME", "`true`", "semi;colon", "pipe|gt>lt<",
    "amp&", "#hash", "~tilde", "backup~", "é", "café", "日本", "日本語のファイル",
    "emoji-🎉", "🚀", ".hidden", "..double-dot", "...", ".-dash", "a:b", "percent%20",
    "combining-e\u0301", "zero\u200bwidth", os.fsdecode(b"latin1-\xe9"),
)
assert all("/" not in name and "\0" not in name and name not in (".", "..") for name in HOSTILE_NAMES)
# Names at NAME_MAX: 255 bytes, and 254 in two-byte UTF-8 (the workload makes its own mixed ones).
LONG_NAMES = ("x" * NAME_MAX_BYTES, "é" * (NAME_MAX_BYTES // 2))
_LONG_NAME_PIECES = ("é", "日本", "x", "🎉", " ", "-", "'", "\n")
_PLAIN_WORDS = ("file", "data", "notes", "img", "report", "cache", "dir", "src")
_HOSTILE_CHANCE = {"mixed": 0.2, "hostile": 0.75, "renames": 0.2, "burst": 0.1, "sneaky": 0.2, "deploy": 0.1,
                   "copylink": 0.1}
_HOT_DIRECTORIES = ("burst-a", "-burst b", "burst-日本")

_ALL_OPERATIONS = {
    "create_file": 14, "overwrite_file": 6, "append_file": 5, "truncate_file": 4,
    "rewrite_keeping_mtime": 3, "delete_file": 5, "delete_tree": 2,
    "make_deep_directories": 4, "make_filled_directory": 3, "rename_file": 5,
    "rename_over_existing": 2, "rename_directory": 3, "move_in_from_outside": 2,
    "move_out_to_outside": 2, "change_mode": 4, "make_symlink": 4, "make_hard_link": 2,
    "write_through_hard_link": 2, "swap_type": 2,
}
_PROFILE_WEIGHTS: dict[str, dict[str, int]] = {
    "mixed": _ALL_OPERATIONS,
    "hostile": _ALL_OPERATIONS,
    "renames": {
        "rename_file": 20, "rename_over_existing": 6, "rename_directory": 15,
        "move_in_from_outside": 8, "move_out_to_outside": 8, "create_file": 8,
        "make_deep_directories": 3, "make_filled_directory": 3, "overwrite_file": 2,
        "delete_file": 2, "make_symlink": 2, "swap_type": 1,
    },
    "burst": {
        "create_file": 40, "overwrite_file": 20, "append_file": 20, "delete_file": 8,
        "truncate_file": 2, "rewrite_keeping_mtime": 2,
    },
    # Changes an event-driven mirror can miss or misplace: no close after a write, no new
    # mtime, a second name, an entry changing type, a name reused at once, a path renamed
    # away right after a change inside it.
    "sneaky": {
        "create_file": 8, "make_deep_directories": 3, "make_filled_directory": 3,
        "truncate_file": 6, "rewrite_keeping_mtime": 5, "rewrite_then_rename_directory": 5,
        "make_hard_link": 3, "write_through_hard_link": 5, "swap_type": 5, "swap_file_and_symlink": 4,
        "atomic_save": 6, "rename_chain": 5, "rename_directory_then_write": 5,
        "move_out_and_back": 4, "move_in_from_outside": 2, "move_out_to_outside": 2,
        "delete_file": 2, "delete_tree": 1, "change_mode": 2,
    },
    # What deploy tools do: releases created (fresh or copied from the last), a ``current``
    # symlink switched (``ln -sfn``: unlink then symlink; ``mv -T``: a new link renamed over it),
    # old releases pruned, files written through ``current``.
    "deploy": {
        "deploy_release": 10, "create_file": 6, "make_filled_directory": 4, "make_deep_directories": 2,
        "overwrite_file": 3, "atomic_save": 3, "rename_directory_then_write": 2, "delete_tree": 1,
    },
    # lsyncd #290: copy a directory, remove the copy, put a symlink to the original in its place,
    # then write and mkdir inside the original at once.
    "copylink": {
        "deploy_copy_then_link": 8, "create_file": 6, "make_filled_directory": 4,
        "make_deep_directories": 3, "overwrite_file": 2, "deploy_release": 2, "delete_tree": 1,
    },
}
_RELEASES = "releases"
_CURRENT = "current"
_RELEASES_KEPT = 3


def seed_from_environment(default: int) -> int:
    """Return ``$PIRSYNCD_CHURN_SEED`` as an int, or ``default`` when unset, for replays."""
    value = os.environ.get(SEED_VARIABLE, "").strip()
    return int(value) if value else default


def _byte_length(text: str) -> int:
    return len(os.fsencode(text))


def _depth(relative_path: str) -> int:
    return relative_path.count("/") + 1 if relative_path else 0


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class Workload:
    """Apply random file-system operations to the tree under ``root``.

    ``outside`` is a scratch directory on the same file system but outside the
    tree, used for moves into and out of the tree and as an absolute symlink
    target. ``log`` collects one line per operation.

    ``hard_links=False`` leaves out the hard-link operations: once a file has two
    names, a write through one changes the other with no inotify event for it,
    which no inotify-driven mirror can see until its next full sync.
    """

    def __init__(
        self, root: Path, seed: int, profile: str, outside: Path, *, hard_links: bool = True
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown workload profile {profile!r}; choose one of {', '.join(PROFILES)}")
        for directory in (root, outside):
            if not directory.is_dir() or _byte_length(str(directory)) > _MAX_ROOT_BYTES:
                raise ValueError(f"{directory} must be a directory with a path under {_MAX_ROOT_BYTES} bytes")
        if root.stat().st_dev != outside.stat().st_dev:
            raise ValueError(f"{outside} must be on the same file system as {root} (moves use rename)")
        self.root = str(root)
        self.outside = str(outside)
        self.seed = seed
        self.profile = profile
        self.log: list[str] = []
        self._random = random.Random(seed)
        self._hostile_chance = _HOSTILE_CHANCE[profile]
        self._counter = 0
        self._listing: Listing | None = None
        weights = dict(_PROFILE_WEIGHTS[profile])
        if not hard_links:
            weights.pop("make_hard_link", None)
            weights.pop("write_through_hard_link", None)
        self._operation_names = sorted(weights)
        self._operation_weights = [weights[name] for name in self._operation_names]

    def describe(self) -> str:
        """The line to print on failure so the run can be replayed."""
        return f"replay: {SEED_VARIABLE}={self.seed} profile={self.profile}"

    def report(self, last: int = 40) -> str:
        """``describe()`` plus the last ``last`` operations, for assertion messages."""
        return "\n".join([self.describe(), *self.log[-last:]])

    def run(self, operations: int) -> None:
        """Apply ``operations`` random operations; successive calls continue the same sequence."""
        for _ in range(operations):
            self._listing = None
            name = self._random.choices(self._operation_names, self._operation_weights)[0]
            operation: Callable[[], str | None] = getattr(self, "_" + name)
            # An operation with nothing to act on (no files yet) changes nothing
            # and says so with None; creating a file is always possible instead.
            description = operation() or self._create_file()
            self.log.append(f"{len(self.log) + 1:5d} {description}")

    # -- reading the tree --------------------------------------------------

    def _absolute(self, relative_path: str) -> str:
        return os.path.join(self.root, relative_path) if relative_path else self.root

    def _list_tree(self) -> Listing:
        if self._listing is None:
            self._listing = list_tree(self.root)
        return self._listing

    def _choose(self, candidates: list[str]) -> str | None:
        return self._random.choice(candidates) if candidates else None

    def _choose_file(self, non_empty: bool = False) -> str | None:
        files = self._list_tree().files
        if non_empty:
            files = [path for path in files if os.path.getsize(self._absolute(path))]
        return self._choose(files)

    def _room(self, parent: str) -> int:
        return MAX_RELATIVE_PATH_BYTES - _byte_length(parent) - 1

    def _choose_parent(self, extent_bytes: int = 0, extent_depth: int = 0) -> str:
        """A real directory (never a symlink to one) with room for a new entry of that extent."""
        if self.profile == "burst":
            hot = self._random.choice(_HOT_DIRECTORIES)
            os.makedirs(self._absolute(hot), exist_ok=True)
            return hot
        eligible = [
            directory for directory in self._list_tree().directories
            if self._room(directory) - extent_bytes >= _MIN_NAME_ROOM
            and _depth(directory) + 1 + extent_depth <= MAX_DEPTH
        ]
        return self._random.choice(eligible) if eligible else ""

    def _new_entry_path(self) -> str:
        """A fresh relative path for a new leaf entry (file, symlink, hard link)."""
        parent = self._choose_parent()
        name = self._new_name(self._absolute(parent), self._room(parent))
        assert name is not None, "_choose_parent returns directories with room for a name"
        return _join(parent, name)

    # -- names and contents ------------------------------------------------

    def _new_name(self, parent_absolute: str, room: int) -> str | None:
        """A name not yet in ``parent_absolute`` of at most ``room`` bytes, often a hostile one."""
        room = min(room, NAME_MAX_BYTES)
        if room < _MIN_NAME_ROOM:
            return None
        self._counter += 1
        if self._random.random() < self._hostile_chance:
            name = self._long_name() if self._random.random() < 0.12 else self._random.choice(HOSTILE_NAMES)
        else:
            name = f"{self._random.choice(_PLAIN_WORDS)}{self._counter}"
        if _byte_length(name) > room:
            name = f"n{self._counter}"
        while os.path.lexists(os.path.join(parent_absolute, name)):
            self._counter += 1
            suffixed = f"{name}.{self._counter}"
            name = suffixed if _byte_length(suffixed) <= room else f"n{self._counter}"
        return name

    def _long_name(self) -> str:
        """A name of exactly NAME_MAX_BYTES bytes in UTF-8, mixing multi-byte characters."""
        name = f"long{self._counter}-"
        while _byte_length(name) < NAME_MAX_BYTES - 8:
            name += self._random.choice(_LONG_NAME_PIECES)
        return name + "x" * (NAME_MAX_BYTES - _byte_length(name))

    def _content(self) -> bytes:
        roll = self._random.random()
        if roll < 0.12:
            return b""
        if roll < 0.14 and self.profile != "burst":
            return self._random.randbytes(self._random.randint(1 << 20, 4 << 20))
        if roll < 0.25:
            return self._random.randbytes(self._random.randint(8 << 10, 256 << 10))
        return self._random.randbytes(self._random.randint(1, 8 << 10))

    def _write(self, relative_path: str, data: bytes, mode: str = "wb") -> None:
        with open(self._absolute(relative_path), mode) as stream:
            stream.write(data)

    # -- operations: each returns a description, or None when it had nothing to act on

    def _create_file(self) -> str:
        path, data = self._new_entry_path(), self._content()
        self._write(path, data)
        return f"create {display_path(path)} ({len(data)} bytes)"

    def _overwrite_file(self) -> str | None:
        if (path := self._choose_file()) is None:
            return None
        data = self._content()
        self._write(path, data)
        return f"overwrite {display_path(path)} ({len(data)} bytes)"

    def _append_file(self) -> str | None:
        if (path := self._choose_file()) is None:
            return None
        self._write(path, self._random.randbytes(self._random.randint(1, 4096)), "ab")
        return f"append to {display_path(path)}"

    def _truncate_file(self) -> str | None:
        """Shrink a file in place, to zero about half the time."""
        if (path := self._choose_file(non_empty=True)) is None:
            return None
        old_size = os.path.getsize(self._absolute(path))
        size = 0 if self._random.random() < 0.5 else self._random.randrange(old_size)
        os.truncate(self._absolute(path), size)
        return f"truncate {display_path(path)} to {size} bytes"

    def _rewrite_keeping_mtime(self) -> str | None:
        """Same size, new bytes, old timestamps: only a content check can see the change."""
        if (path := self._choose_file(non_empty=True)) is None:
            return None
        size = self._rewrite_in_place(path)
        return f"rewrite {display_path(path)} keeping size {size} and mtime"

    def _rewrite_in_place(self, path: str) -> int:
        """New bytes of the same size, the old timestamps put back; return the size."""
        before = os.lstat(self._absolute(path))
        with open(self._absolute(path), "r+b") as stream:
            old = stream.read()
            new = bytearray(self._random.randbytes(len(old)))
            if new == old:
                new[0] ^= 0xFF
            stream.seek(0)
            stream.write(new)
        os.utime(self._absolute(path), ns=(before.st_atime_ns, before.st_mtime_ns))
        return len(old)

    def _delete_file(self) -> str | None:
        listing = self._list_tree()
        if (path := self._choose(sorted(listing.files + listing.symlinks))) is None:
            return None
        os.unlink(self._absolute(path))
        return f"delete {display_path(path)}"

    def _delete_tree(self) -> str | None:
        if (path := self._choose(self._list_tree().directories[1:])) is None:
            return None
        shutil.rmtree(self._absolute(path))
        return f"delete tree {display_path(path)}"

    def _make_deep_directories(self) -> str:
        path = self._choose_parent()
        for _ in range(self._random.randint(2, 12)):
            name = self._new_name(self._absolute(path), self._room(path))
            if name is None or _depth(path) >= MAX_DEPTH - 1:
                break
            path = _join(path, name)
        os.makedirs(self._absolute(path), exist_ok=True)
        if self._random.random() < 0.5 and (name := self._new_name(self._absolute(path), self._room(path))):
            self._write(_join(path, name), self._content())
        return f"mkdir -p {display_path(path)}"

    def _make_filled_directory(self) -> str | None:
        parent = self._choose_parent(extent_bytes=2 * _MIN_NAME_ROOM, extent_depth=1)
        name = self._new_name(self._absolute(parent), self._room(parent) - 2 * _MIN_NAME_ROOM)
        if name is None:
            return None
        directory = _join(parent, name)
        os.mkdir(self._absolute(directory))
        count = self._random.randint(2, 8)
        for _ in range(count):
            # Short names: the room left below this directory is only guaranteed for them.
            self._counter += 1
            self._write(_join(directory, f"f{self._counter}"), self._content())
        return f"mkdir {display_path(directory)} and fill it with {count} files"

    def _move(self, source_absolute: str, destination_parent: str, room: int, verb: str) -> str | None:
        name = self._new_name(self._absolute(destination_parent), room)
        if name is None:
            return None
        destination = _join(destination_parent, name)
        os.rename(source_absolute, self._absolute(destination))
        return f"{verb} -> {display_path(destination)}"

    def _rename_file(self) -> str | None:
        listing = self._list_tree()
        if (path := self._choose(sorted(listing.files + listing.symlinks))) is None:
            return None
        same_directory = self._random.random() < 0.3
        parent = os.path.dirname(path) if same_directory else self._choose_parent()
        return self._move(self._absolute(path), parent, self._room(parent), f"rename {display_path(path)}")

    def _rename_over_existing(self) -> str | None:
        listing = self._list_tree()
        if len(listing.files) < 2:
            return None
        source, target = self._random.sample(listing.files, 2)
        os.replace(self._absolute(source), self._absolute(target))
        return f"rename {display_path(source)} over {display_path(target)}"

    def _parents_with_room_for(self, directory: str) -> tuple[list[str], int]:
        """Directories that can take a copy or move of ``directory`` (never itself or below it),
        and the bytes its subtree needs below the new name."""
        extent_bytes, extent_depth = subtree_extent(self._absolute(directory))
        eligible = [
            parent for parent in self._list_tree().directories
            if parent != directory and not parent.startswith(directory + "/")
            and self._room(parent) - extent_bytes >= _MIN_NAME_ROOM
            and _depth(parent) + 1 + extent_depth <= MAX_DEPTH
        ]
        return eligible, extent_bytes

    def _rename_directory(self) -> str | None:
        if (path := self._choose(self._list_tree().directories[1:])) is None:
            return None
        eligible, extent_bytes = self._parents_with_room_for(path)
        if (parent := self._choose(eligible)) is None:
            return None
        room = self._room(parent) - extent_bytes
        return self._move(self._absolute(path), parent, room, f"rename directory {display_path(path)}")

    def _move_in_from_outside(self) -> str | None:
        staged = sorted(os.listdir(self.outside))
        if not staged or self._random.random() < 0.3:
            # Stage something new, the way a download lands in /tmp before a mv.
            self._counter += 1
            staged = [f"staged-{self._counter}"]
            parts = [staged[0]]
            if self._random.random() < 0.5:
                os.mkdir(os.path.join(self.outside, staged[0]))
                count = self._random.randint(1, 5)
                parts = [os.path.join(staged[0], f"part{index}") for index in range(count)]
            for part in parts:
                with open(os.path.join(self.outside, part), "wb") as stream:
                    stream.write(self._content())
        source = os.path.join(self.outside, self._random.choice(staged))
        extent_bytes, extent_depth = subtree_extent(source)
        parent = self._choose_parent(extent_bytes, extent_depth)
        room = self._room(parent) - extent_bytes
        verb = f"move in from outside {display_path(os.path.basename(source))}"
        return self._move(source, parent, room, verb)

    def _move_out_to_outside(self) -> str | None:
        if (path := self._choose(self._list_tree().entries)) is None:
            return None
        self._counter += 1
        os.rename(self._absolute(path), os.path.join(self.outside, f"out-{self._counter}"))
        return f"move out to outside {display_path(path)}"

    def _change_mode(self) -> str:
        listing = self._list_tree()
        # The root is a candidate too: its own mode is part of the mirror.
        path = self._random.choice(sorted(listing.files + listing.directories))
        # Owners keep rw on files and rwx on directories so the workload (and an
        # unprivileged rsync) can still read, write and traverse everything.
        is_directory = path in listing.directories
        mode = self._random.randrange(0o1000) | (0o700 if is_directory else 0o600)
        os.chmod(self._absolute(path), mode)
        return f"chmod {mode:04o} {display_path(path) or '.'}"

    def _make_symlink(self) -> str:
        path = self._new_entry_path()
        parent = os.path.dirname(path)
        style = self._random.choice(("relative", "absolute", "dangling"))
        entries = self._list_tree().entries
        if style == "relative" and entries:
            target = os.path.relpath(self._random.choice(entries), parent or ".")
        elif style == "absolute":
            staged = sorted(os.listdir(self.outside)) or ["nothing-here"]
            target = os.path.join(self.outside, self._random.choice(staged))
        else:
            target = "../" * self._random.randint(0, 3) + self._random.choice((*HOSTILE_NAMES, "gone"))
        os.symlink(target, self._absolute(path))
        return f"symlink {display_path(path)} -> {target!r}"

    def _make_hard_link(self) -> str | None:
        if (existing := self._choose_file()) is None:
            return None
        path = self._new_entry_path()
        os.link(self._absolute(existing), self._absolute(path))
        return f"hard link {display_path(path)} to {display_path(existing)}"

    def _write_through_hard_link(self) -> str | None:
        linked = [path for path in self._list_tree().files if os.lstat(self._absolute(path)).st_nlink > 1]
        if (path := self._choose(linked)) is None:
            return self._make_hard_link()
        mode = self._random.choice(("wb", "ab"))
        self._write(path, self._random.randbytes(self._random.randint(1, 4096)), mode)
        return f"write ({mode}) through hard-linked name {display_path(path)}"

    def _swap_type(self) -> str | None:
        listing = self._list_tree()
        if (path := self._choose(listing.entries)) is None:
            return None
        absolute = self._absolute(path)
        if path in listing.directories:
            shutil.rmtree(absolute)
            if self._random.random() < 0.5:
                self._write(path, self._content())
                return f"replace directory {display_path(path)} with a file"
            # Dangling, or to another directory of the tree (a deploy's "link to the original").
            others = [other for other in listing.directories if other != path and not other.startswith(path + "/")]
            if self._random.random() < 0.5:
                target = os.path.relpath(self._random.choice(others) or ".", os.path.dirname(path) or ".")
            else:
                target = self._random.choice(HOSTILE_NAMES)
            os.symlink(target, absolute)
            return f"replace directory {display_path(path)} with a symlink -> {target!r}"
        os.unlink(absolute)
        os.mkdir(absolute)
        has_room = self._room(path) >= _MIN_NAME_ROOM and _depth(path) < MAX_DEPTH
        if self._random.random() < 0.7 and has_room:
            self._counter += 1
            self._write(_join(path, f"inside{self._counter}"), self._content())
        return f"replace {display_path(path)} with a directory"

    # -- sneaky operations: each is several system calls in a row, with nothing in between

    def _writes_inside(self, directory: str, count: int) -> list[str]:
        """``count`` new files and directories at random places under ``directory`` (a real
        directory of the tree), each made right after the one before; returns their paths."""
        made: list[str] = []
        for _ in range(count):
            below = [
                _join(directory, path) if path else directory
                for path in list_tree(self._absolute(directory)).directories
            ]
            below = [path for path in below if self._room(path) >= _MIN_NAME_ROOM and _depth(path) < MAX_DEPTH]
            if (parent := self._choose(below)) is None:
                break
            self._counter += 1
            if self._random.random() < 0.3 and _depth(parent) < MAX_DEPTH - 1:
                path = _join(parent, f"d{self._counter}")
                os.mkdir(self._absolute(path))
            else:
                path = _join(parent, f"w{self._counter}")
                self._write(path, self._random.randbytes(self._random.randint(0, 4096)))
            made.append(path)
        return made

    def _rewrite_then_rename_directory(self) -> str | None:
        """A same-size, same-mtime rewrite, then the file's directory (or an ancestor) renamed away."""
        listing = self._list_tree()
        inside = [path for path in listing.files if "/" in path and os.path.getsize(self._absolute(path))]
        if (path := self._choose(inside)) is None:
            return None
        ancestors = [path[:index] for index, character in enumerate(path) if character == "/"]
        directory = self._random.choice(ancestors)
        eligible, extent_bytes = self._parents_with_room_for(directory)
        if not eligible:
            return None
        self._rewrite_in_place(path)
        parent = self._random.choice(eligible)
        moved = self._move(self._absolute(directory), parent, self._room(parent) - extent_bytes,
                           f"rename directory {display_path(directory)}")
        return f"rewrite {display_path(path)} keeping size and mtime, then {moved}"

    def _swap_file_and_symlink(self) -> str | None:
        """A file becomes a symlink (to a sibling or a directory of the tree), or a symlink a file."""
        listing = self._list_tree()
        if (path := self._choose(sorted(listing.files + listing.symlinks))) is None:
            return None
        absolute = self._absolute(path)
        os.unlink(absolute)
        if path in listing.symlinks:
            self._write(path, self._content())
            return f"replace symlink {display_path(path)} with a file"
        target = os.path.relpath(self._random.choice(listing.directories) or ".", os.path.dirname(path) or ".")
        os.symlink(target, absolute)
        return f"replace file {display_path(path)} with a symlink -> {target!r}"

    def _atomic_save(self) -> str | None:
        """An editor's save: write a temporary name beside the file, then rename it over the file."""
        if (path := self._choose_file()) is None:
            return None
        parent = os.path.dirname(path)
        self._counter += 1
        temporary = _join(parent, f".{self._counter}.swp" if self._random.random() < 0.5 else f"tmp{self._counter}~")
        data = self._content()
        self._write(temporary, data)
        os.chmod(self._absolute(temporary), stat.S_IMODE(os.lstat(self._absolute(path)).st_mode))
        os.replace(self._absolute(temporary), self._absolute(path))
        return f"atomic save of {display_path(path)} ({len(data)} bytes) via {display_path(temporary)}"

    def _rename_chain(self) -> str | None:
        """a -> b -> c (-> d) at once, for a file, symlink or directory, in place or across the tree."""
        listing = self._list_tree()
        if (path := self._choose(listing.entries)) is None:
            return None
        is_directory = path in listing.directories
        hops = []
        for _ in range(self._random.randint(2, 4)):
            self._listing = None
            if is_directory:
                eligible, extent_bytes = self._parents_with_room_for(path)
            else:
                eligible, extent_bytes = [self._choose_parent()], 0
            same_directory = self._random.random() < 0.5
            if (parent := os.path.dirname(path) if same_directory else self._choose(eligible)) is None:
                break
            if (name := self._new_name(self._absolute(parent), self._room(parent) - extent_bytes)) is None:
                break
            destination = _join(parent, name)
            os.rename(self._absolute(path), self._absolute(destination))
            hops.append(display_path(destination))
            path = destination
        return f"rename chain -> {' -> '.join(hops)}" if hops else None

    def _rename_directory_then_write(self) -> str | None:
        """A directory renamed, then files and directories written inside its new name at once."""
        listing = self._list_tree()
        if (path := self._choose(listing.directories[1:])) is None:
            return None
        eligible, extent_bytes = self._parents_with_room_for(path)
        parent = self._choose(eligible)
        if parent is None:
            return None
        name = self._new_name(self._absolute(parent), self._room(parent) - extent_bytes)
        if name is None:
            return None
        destination = _join(parent, name)
        os.rename(self._absolute(path), self._absolute(destination))
        self._listing = None
        made = self._writes_inside(destination, self._random.randint(1, 6))
        return f"rename directory {display_path(path)} -> {display_path(destination)}, then write {len(made)} inside"

    def _move_out_and_back(self) -> str | None:
        """An entry moved out of the tree and back in at once, under its name or elsewhere."""
        if (path := self._choose(self._list_tree().entries)) is None:
            return None
        self._counter += 1
        outside = os.path.join(self.outside, f"round-trip-{self._counter}")
        os.rename(self._absolute(path), outside)
        self._listing = None
        if self._random.random() < 0.5:
            os.rename(outside, self._absolute(path))
            return f"move {display_path(path)} out and back"
        extent_bytes, extent_depth = subtree_extent(outside)
        parent = self._choose_parent(extent_bytes, extent_depth)
        moved = self._move(outside, parent, self._room(parent) - extent_bytes, "back")
        if moved is None:
            os.rename(outside, self._absolute(path))
            return f"move {display_path(path)} out and back"
        return f"move {display_path(path)} out and {moved}"

    # -- deploy patterns

    def _deploy_copy_then_link(self) -> str | None:
        """lsyncd #290: ``cp -r D P/N; rm -r P/N; ln -s REL(D) P/N``, then writes and mkdirs in D."""
        listing = self._list_tree()
        directories = [path for path in listing.directories[1:] if _depth(path) < MAX_DEPTH - 1]
        if (original := self._choose(directories)) is None:
            return None
        eligible, extent_bytes = self._parents_with_room_for(original)
        if (parent := self._choose(eligible)) is None:
            return None
        name = self._new_name(self._absolute(parent), self._room(parent) - extent_bytes)
        if name is None:
            return None
        copy = _join(parent, name)
        shutil.copytree(self._absolute(original), self._absolute(copy), symlinks=True)
        shutil.rmtree(self._absolute(copy))
        target = os.path.relpath(original, parent or ".")
        os.symlink(target, self._absolute(copy))
        self._listing = None
        made = self._writes_inside(original, self._random.randint(0, 20))
        return (f"cp -r {display_path(original)} {display_path(copy)}; rm -r; ln -s {target!r}; "
                f"then {len(made)} writes and mkdirs inside {display_path(original)}")

    def _deploy_release(self) -> str | None:
        """A new release beside the others, ``current`` switched to it, the oldest pruned."""
        listing = self._list_tree()
        applications = [
            os.path.dirname(path) for path in listing.directories
            if os.path.basename(path) == _RELEASES and self._room(path) >= 4 * _MIN_NAME_ROOM
            and _depth(path) < MAX_DEPTH - 3
        ]
        if not applications or self._random.random() < 0.1:
            application = self._choose_parent(extent_bytes=4 * _MIN_NAME_ROOM, extent_depth=4)
            name = self._new_name(self._absolute(application), self._room(application) - 4 * _MIN_NAME_ROOM)
            if name is None:
                return None
            application = _join(application, name)
            os.makedirs(self._absolute(_join(application, _RELEASES)))
        else:
            application = self._random.choice(applications)
        releases = _join(application, _RELEASES)
        current = _join(application, _CURRENT)
        existing = sorted(os.listdir(self._absolute(releases)))
        self._counter += 1
        release = _join(releases, f"r{self._counter:06d}")
        previous = [
            name for name in existing
            if stat.S_ISDIR(os.lstat(self._absolute(_join(releases, name))).st_mode) and name.startswith("r0")
        ]
        if previous and self._random.random() < 0.5:
            shutil.copytree(self._absolute(_join(releases, previous[-1])), self._absolute(release), symlinks=True)
        else:
            os.makedirs(self._absolute(_join(release, "static")))
        for index in range(self._random.randint(1, 5)):
            # A release copied from the last may hold a directory by that name (made by other operations).
            if not os.path.isdir(self._absolute(path := _join(release, f"file{index}"))):
                self._write(path, self._random.randbytes(self._random.randint(0, 2048)))
        target = os.path.relpath(release, application)
        style = self._random.choice(("ln -sfn", "mv -T"))
        if style == "mv -T" or not os.path.lexists(self._absolute(current)):
            self._counter += 1
            temporary = _join(application, f"{_CURRENT}.tmp{self._counter}")
            os.symlink(target, self._absolute(temporary))
            os.replace(self._absolute(temporary), self._absolute(current))
        else:  # ln -sfn without an atomic rename: unlink, then symlink
            if stat.S_ISDIR(os.lstat(self._absolute(current)).st_mode):
                shutil.rmtree(self._absolute(current))
            else:
                os.unlink(self._absolute(current))
            os.symlink(target, self._absolute(current))
        if self._random.random() < 0.5:  # the new release writes through the switched link
            self._write(_join(current, f"runtime{self._counter}"), self._random.randbytes(100))
        pruned = previous[:max(0, len(previous) + 1 - _RELEASES_KEPT)]
        for old in pruned:
            shutil.rmtree(self._absolute(_join(releases, old)))
        return f"release {display_path(release)}, {style} {display_path(current)}, pruned {len(pruned)}"
