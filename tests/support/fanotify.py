"""fanotify for tests: event buffers built byte by byte (as the kernel lays them out), a
recorder of real ones, and the reason a test that needs filesystem marks must skip here.

Recorded buffers live in tests/unit/data/ (``python -m tests.support.fanotify DIR`` records
them again, as root, on a tmpfs it mounts under DIR: see :func:`record_workload`).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pirsyncd.source.fanotify_events import (
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FANOTIFY_METADATA_VERSION,
    FileHandle,
)

DATA = Path(__file__).resolve().parents[1] / "unit" / "data"
RECORDED_WORKLOAD = DATA / "fanotify-workload.bin"


def handle(number: int, fsid: bytes = b"FSID0001") -> FileHandle:
    """A made-up handle, distinct per ``number`` (8 bytes, type 1 like ext4's and tmpfs's)."""
    return FileHandle(fsid, 1, struct.pack("=Q", number))


def info_record(info_type: int, file_handle: FileHandle, name: str | None = None) -> bytes:
    """One information record: header, fsid, struct file_handle and (for the *_NAME types) the
    name with its NUL, padded to 4 bytes as the kernel does."""
    body = file_handle.fsid + struct.pack("=Ii", len(file_handle.handle), file_handle.handle_type) + file_handle.handle
    if name is not None:
        body += os.fsencode(name) + b"\0"
    length = 4 + len(body)
    padding = -length % 4
    return struct.pack("=BBH", info_type, 0, length + padding) + body + b"\0" * padding


def event(mask: int, *records: bytes, pid: int = 4242) -> bytes:
    """One event: struct fanotify_event_metadata (fd FAN_NOFD) followed by its records."""
    body = b"".join(records)
    return struct.pack("=IBBHQii", 24 + len(body), FANOTIFY_METADATA_VERSION, 0, 24, mask, -1, pid) + body


def entry_event(mask: int, directory: FileHandle, name: str, target: FileHandle | None = None) -> bytes:
    """An event about ``name`` in ``directory`` (DFID_NAME, then FID when ``target`` is given)."""
    records = [info_record(FAN_EVENT_INFO_TYPE_DFID_NAME, directory, name)]
    if target is not None:
        records.append(info_record(FAN_EVENT_INFO_TYPE_FID, target))
    return event(mask, *records)


def rename_event(mask: int, old: tuple[FileHandle, str], new: tuple[FileHandle, str],
                 target: FileHandle | None = None) -> bytes:
    """A FAN_RENAME event: OLD_DFID_NAME, NEW_DFID_NAME (and FID)."""
    records = [info_record(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, *old),
               info_record(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, *new)]
    if target is not None:
        records.append(info_record(FAN_EVENT_INFO_TYPE_FID, target))
    return event(mask, *records)


def filesystem_marks_refusal(path: str | os.PathLike[str]) -> str | None:
    """Why filesystem marks cannot be placed on ``path``'s file system here (a skip reason),
    or None."""
    from pirsyncd.source.fanotify_probe import filesystem_marks_refusal as refusal
    return refusal(os.fspath(path))


def the_workload(root: Path) -> None:
    """The recorded workload: nested new directories, a file written in the deepest, moved
    up, a directory renamed, a file created and deleted, the tree removed."""
    (root / "t" / "n" / "b" / "c").mkdir(parents=True)
    (root / "t" / "a").mkdir()
    (root / "t" / "n" / "b" / "c" / "f").write_text("x")
    os.rename(root / "t" / "n" / "b" / "c" / "f", root / "t" / "a" / "g")
    os.rename(root / "t" / "n", root / "t" / "m")
    (root / "t" / "a" / "h").touch()
    (root / "t" / "a" / "h").unlink()
    os.chmod(root / "t" / "a", 0o700)
    subprocess.run(["rm", "-r", str(root / "t")], check=True)


def record_workload(root: Path, workload: Callable[[Path], None] = the_workload) -> bytes:
    """Mark ``root``'s file system, run ``workload(root)``, and return the raw bytes read (all
    of the file system's events meanwhile: on a private tmpfs, only the workload's)."""
    from pirsyncd.source.fanotify import Fanotify

    chunks = []
    with Fanotify() as group:
        group.mark(str(root))
        workload(root)
        while chunk := group.read():
            chunks.append(chunk)
    return b"".join(chunks)


def main(directory: str) -> None:
    """Record :func:`the_workload` on a tmpfs mounted under ``directory`` into tests/unit/data."""
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", scratch], check=True)
        try:
            RECORDED_WORKLOAD.write_bytes(record_workload(Path(scratch)))
        finally:
            subprocess.run(["umount", scratch], check=True)
    print(f"recorded {RECORDED_WORKLOAD.stat().st_size} bytes into {RECORDED_WORKLOAD}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir())
