"""Compare two directory trees exactly, write files into them, and wait for a condition with a deadline.

The churn and integration tests assert that a destination is an exact mirror of
a source: same entries, same types, same permission bits, same file contents and
same symlink targets. Ownership, timestamps and hard-link structure are not
compared (a plain ``rsync -a`` does not promise them either).

    >>> wait_until_equal(source, destination, timeout=30)    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, TypeVar

EntryKind = Literal["file", "dir", "symlink", "other"]

# Errors that mean "the tree changed while it was being read": a poller retries.
_TRANSIENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ESTALE})
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a file swapped for a FIFO after the lstat must not hang open().
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ_CHUNK = 1 << 20
_MAX_REPORTED_DIFFERENCES = 20

T = TypeVar("T")


class TreeChangedError(OSError):
    """An entry changed type between being listed and being read."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """What is compared about one entry; fields that do not apply are None.

    ``mode`` is ``stat.S_IMODE`` (None for symlinks), ``size`` and ``digest``
    (blake2b of the bytes) are set for files only, ``target`` for symlinks only.
    """

    kind: EntryKind
    mode: int | None = None
    size: int | None = None
    digest: str | None = None
    target: str | None = None


def snapshot(root: str | os.PathLike[str]) -> dict[str, Entry]:
    """Return every entry below ``root`` (not root itself) keyed by relative path.

    Keys use ``/`` separators and ``os.fsdecode`` (undecodable bytes become
    surrogate escapes), e.g. ``{"a": Entry("dir", 0o755), "a/b": Entry("file", ...)}``.
    Symlinks are recorded, never followed. Directories are opened relative to
    their parent's descriptor, so depth is not limited by PATH_MAX.
    """
    entries: dict[str, Entry] = {}
    root_descriptor = os.open(os.fspath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _snapshot_directory(root_descriptor, "", entries)
    finally:
        os.close(root_descriptor)
    return entries


def _snapshot_directory(directory_descriptor: int, prefix: str, entries: dict[str, Entry]) -> None:
    with os.scandir(directory_descriptor) as listing:
        children = list(listing)
    for child in children:
        relative_path = prefix + child.name
        status = child.stat(follow_symlinks=False)
        if stat.S_ISLNK(status.st_mode):
            target = os.readlink(child.name, dir_fd=directory_descriptor)
            entries[relative_path] = Entry("symlink", target=target)
        elif stat.S_ISREG(status.st_mode):
            size, digest = _digest_file(child.name, directory_descriptor, relative_path)
            entries[relative_path] = Entry("file", stat.S_IMODE(status.st_mode), size, digest)
        elif stat.S_ISDIR(status.st_mode):
            entries[relative_path] = Entry("dir", stat.S_IMODE(status.st_mode))
            subdirectory = os.open(child.name, _DIRECTORY_FLAGS, dir_fd=directory_descriptor)
            try:
                _snapshot_directory(subdirectory, relative_path + "/", entries)
            finally:
                os.close(subdirectory)
        else:
            entries[relative_path] = Entry("other", stat.S_IMODE(status.st_mode))


def _digest_file(name: str, directory_descriptor: int, relative_path: str) -> tuple[int, str]:
    descriptor = os.open(name, _FILE_FLAGS, dir_fd=directory_descriptor)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise TreeChangedError(errno.ENOENT, "no longer a regular file", relative_path)
        hasher = hashlib.blake2b(digest_size=16)
        size = 0
        while chunk := os.read(descriptor, _READ_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    return size, hasher.hexdigest()


@dataclasses.dataclass(frozen=True)
class Listing:
    """Relative paths of a tree in sorted order by type; ``directories[0]`` is ``""``, the root."""

    files: list[str]
    directories: list[str]
    symlinks: list[str]

    @property
    def entries(self) -> list[str]:
        """Every entry except the root, sorted."""
        return sorted(self.files + self.directories[1:] + self.symlinks)


def list_tree(root: str | os.PathLike[str]) -> Listing:
    """List the tree below ``root`` without reading contents or following symlinks.

    Cheaper than ``snapshot`` and in a stable order, for choosing random paths.
    Entries that are neither files, directories nor symlinks are left out.
    """
    files: list[str] = []
    directories: list[str] = [""]
    symlinks: list[str] = []
    next_directory = 0
    while next_directory < len(directories):  # the list grows as subdirectories are found
        parent = directories[next_directory]
        next_directory += 1
        with os.scandir(os.path.join(root, parent) if parent else root) as listing:
            for child in listing:
                path = f"{parent}/{child.name}" if parent else child.name
                if child.is_symlink():
                    symlinks.append(path)
                elif child.is_dir(follow_symlinks=False):
                    directories.append(path)
                elif child.is_file(follow_symlinks=False):
                    files.append(path)
    return Listing(sorted(files), ["", *sorted(directories[1:])], sorted(symlinks))


def subtree_extent(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Bytes and levels the deepest descendant adds below ``path``; (0, 0) unless a real directory.

    For ``d`` holding ``d/x/yz`` it is ``(5, 2)``: ``/x/yz`` is 5 bytes, 2 levels.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        return 0, 0
    deepest_bytes = deepest_levels = 0
    for directory, subdirectories, files in os.walk(path):
        for name in subdirectories + files:
            relative = os.path.relpath(os.path.join(directory, name), path)
            deepest_bytes = max(deepest_bytes, len(os.fsencode(relative)) + 1)
            deepest_levels = max(deepest_levels, relative.count("/") + 1)
    return deepest_bytes, deepest_levels


def write_file(path: Path, data: str | bytes = "data\n") -> None:
    """Create or replace the file ``path``, and its missing parents, holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def display_path(relative_path: str) -> str:
    """Show a path on one line: as is when printable, else as a Python literal."""
    return relative_path if relative_path.isprintable() else repr(relative_path)


def _is_ignored(relative_path: str, ignore: tuple[str, ...]) -> bool:
    # An ignored directory hides its whole subtree, so test every ancestor too.
    parts = relative_path.split("/")
    for depth in range(1, len(parts) + 1):
        candidate = "/".join(parts[:depth])
        if any(fnmatch.fnmatchcase(candidate, pattern) for pattern in ignore):
            return True
    return False


def _under_reported_directory(relative_path: str, reported: set[str]) -> bool:
    parts = relative_path.split("/")
    return any("/".join(parts[:depth]) in reported for depth in range(1, len(parts)))


def differences(
    source_root: str | os.PathLike[str],
    destination_root: str | os.PathLike[str],
    ignore: Iterable[str] = (),
) -> list[str]:
    """List, one human-readable line each, how destination differs from source.

    An empty list means the trees are equal. Lines look like
    ``missing at destination: a/b``, ``extra at destination: c``,
    ``type differs: d file != dir``, ``content differs: x (size 3 != 5)``,
    ``mode differs: x 0644 != 0600``, ``symlink target differs: l 'a' != 'b'``;
    ``.`` names the roots themselves (their modes are compared too). A missing,
    extra or retyped directory is one line, not one per descendant.

    ``ignore`` holds ``fnmatch`` patterns matched against relative paths; a
    matching directory hides its subtree on both sides. A missing destination
    root is reported as ``missing at destination: .``. Raises ``OSError`` when a
    tree changes while being read (``wait_until_equal`` retries those).
    """
    ignore_patterns = tuple(ignore)
    try:
        destination_mode = stat.S_IMODE(os.stat(destination_root).st_mode)
    except FileNotFoundError:
        return ["missing at destination: ."]
    lines: list[str] = []
    source_mode = stat.S_IMODE(os.stat(source_root).st_mode)
    if source_mode != destination_mode:
        lines.append(f"mode differs: . {source_mode:04o} != {destination_mode:04o}")
    source_entries = snapshot(source_root)
    destination_entries = snapshot(destination_root)
    reported_directories: set[str] = set()
    for relative_path in sorted(source_entries.keys() | destination_entries.keys()):
        if _is_ignored(relative_path, ignore_patterns):
            continue
        if _under_reported_directory(relative_path, reported_directories):
            continue
        shown = display_path(relative_path)
        source_entry = source_entries.get(relative_path)
        destination_entry = destination_entries.get(relative_path)
        if source_entry is None or destination_entry is None:
            present = source_entry or destination_entry
            assert present is not None
            where = "missing at destination" if destination_entry is None else "extra at destination"
            lines.append(f"{where}: {shown}")
            if present.kind == "dir":
                reported_directories.add(relative_path)
            continue
        lines.extend(_compare_entries(relative_path, shown, source_entry, destination_entry))
        if source_entry.kind != destination_entry.kind and "dir" in (
            source_entry.kind,
            destination_entry.kind,
        ):
            reported_directories.add(relative_path)
    return lines


def _compare_entries(relative_path: str, shown: str, source: Entry, destination: Entry) -> list[str]:
    if source.kind != destination.kind:
        return [f"type differs: {shown} {source.kind} != {destination.kind}"]
    lines: list[str] = []
    if source.size != destination.size:
        lines.append(f"content differs: {shown} (size {source.size} != {destination.size})")
    elif source.digest != destination.digest:
        lines.append(f"content differs: {shown} (same size {source.size})")
    if source.target != destination.target:
        lines.append(f"symlink target differs: {shown} {source.target!r} != {destination.target!r}")
    if source.mode is not None and destination.mode is not None and source.mode != destination.mode:
        lines.append(f"mode differs: {shown} {source.mode:04o} != {destination.mode:04o}")
    return lines


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    message: str | Callable[[], str],
    poll: float = 0.05,
    *,
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Call ``predicate`` every ``poll`` seconds until it returns a truthy value.

    Returns that value. After ``timeout`` seconds raises ``error`` (``AssertionError``
    unless given, e.g. ``TimeoutError``) with ``message`` (a callable is called then, so
    it can describe the final state). The one wait-with-a-deadline of the test harness
    and bench/: the poll interval is the only sleep.

    >>> wait_for(lambda: [], 0, "nothing came")
    Traceback (most recent call last):
    AssertionError: nothing came (gave up after 0 s)
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            text = message() if callable(message) else message
            raise error(f"{text} (gave up after {timeout:g} s)")
        time.sleep(min(poll, remaining))


def wait_until_equal(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    timeout: float,
    poll: float = 0.05,
    ignore: Iterable[str] = (),
) -> None:
    """Return as soon as ``differences(source, destination)`` is empty.

    After ``timeout`` seconds raises ``AssertionError`` listing up to 20
    differences. A tree changing under the scan (a file vanishing mid-read)
    counts as "not equal yet", not as an error.
    """
    ignore_patterns = tuple(ignore)
    last_differences: list[str] = []

    def trees_equal() -> bool:
        nonlocal last_differences
        try:
            last_differences = differences(source, destination, ignore_patterns)
        except TreeChangedError as error:
            last_differences = [f"changed while reading: {error}"]
        except OSError as error:
            if error.errno not in _TRANSIENT_ERRNOS:
                raise
            last_differences = [f"changed while reading: {error}"]
        return not last_differences

    def describe_differences() -> str:
        shown = last_differences[:_MAX_REPORTED_DIFFERENCES]
        more = len(last_differences) - len(shown)
        lines = [f"{os.fspath(destination)} is not a mirror of {os.fspath(source)}:", *shown]
        if more:
            lines.append(f"... and {more} more")
        return "\n  ".join(lines)

    wait_for(trees_equal, timeout, describe_differences, poll)


def real_directories(root: str | os.PathLike[str]) -> set[str]:
    """Every directory below ``root`` by its real path, relative ('' for ``root``); symlinks
    to directories are not followed nor counted."""
    found = {""}
    for parent, names, _ in os.walk(root):
        relative = os.path.relpath(parent, root)
        found |= {name if relative == "." else f"{relative}/{name}" for name in names
                  if not os.path.islink(os.path.join(parent, name))}
    return found
