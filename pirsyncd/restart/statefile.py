"""The restart state: a watermark before which every change has reached the destinations,
what makes a mirror the same mirror, and the directory index (inode -> parent, name),
kept on disk so that a restart is not a full sync (see :mod:`pirsyncd.restart.warmscan`).

    STATE_FILE        a small JSON header, replaced atomically (write, fsync, rename)
    STATE_FILE.dirs   the directory index as of the watermark, rewritten only when the
                      watched tree changed; the header names the index it goes with

The kernel stamps every change of an inode with a ctime user space cannot set back, so a
watermark taken when nothing was pending (minus :data:`MARGIN` for events still on their
way and coarse timestamps) is safe at any moment: a kill -9 needs no clean shutdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pirsyncd.config.parse import Config
from pirsyncd.source.identity import SourceIdentity, file_handle

FORMAT = 2  # 2: file handles instead of mount ids
MARGIN = 2.0  # seconds the watermark lies before the moment it was taken
MIN_WRITE_INTERVAL = 5.0  # seconds between two writes (more when writing takes long)
MAX_FAILING = 1000  # failing paths a destination may carry in the state (more: a full sync)


class StateUnusable(Exception):
    """Why the state cannot start this daemon warm (the message completes "full sync at start: ")."""


Index = dict[int, tuple[int, str]]  # a directory's inode -> (its parent's inode, its name)


def boot_clock() -> tuple[str, float]:
    """This boot's id and the wall clock's offset from CLOCK_BOOTTIME: within one boot the
    offset only shrinks when the clock was set back."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as stream:
            boot_id = stream.read().strip()
    except OSError:
        boot_id = ""
    return boot_id, time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def destination_settings(config: Config) -> list[Any]:
    """The settings that change what the destination holds (not how it is sent)."""
    return [list(config.exclude), list(config.rsync_flags), config.max_size, config.min_size]


def mounts_below(source: str) -> list[list[str]]:
    """The mounts at and below the source (path relative to it, device, root, type, what,
    and last the file handle of its mount point, see :func:`file_handle`): another file
    system mounted there while the daemon was down is not the same tree. (Not the mount
    id: a unit's mount namespace, new at each start, gives every mount a new one, and ids
    are recycled.)"""
    found = []
    prefix = source.rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        point = _unescape(fields[4])
        if point == source.rstrip("/") or point.startswith(prefix):
            tail = fields[fields.index("-", 6) + 1:]
            found.append([point[len(prefix):] if point.startswith(prefix) else ".", fields[2],
                          _unescape(fields[3]), *tail[:2], file_handle(point)])
    return found


def _unescape(text: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash as \ooo."""
    if "\\" not in text:
        return text
    return text.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


@dataclasses.dataclass
class Header:
    """The state file's header, as written and as read back."""

    watermark: float
    source: str
    device: int
    inode: int
    fsid: int  # statvfs f_fsid: a file system's UUID on ext4, btrfs, a fresh one per tmpfs mount
    handle: str  # the source directory's file handle ("" where the file system has none)
    mounts: list[list[str]]
    boot_id: str
    boot_offset: float
    index_token: str
    # name -> {"destination": text, "settings": digest, "layout": bool, "failing": [paths]}
    destinations: dict[str, dict[str, Any]]
    written: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}


def read_header(path: str) -> Header:
    """The state file's header; StateUnusable (with the reason, for the log) when there is
    none or it cannot be read."""
    try:
        with open(path, "rb") as stream:
            data = json.loads(stream.read())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("unknown format")
        data.pop("format")
        header = Header(**data)
        float(header.watermark), int(header.device), int(header.inode)
        if not isinstance(header.destinations, dict):
            raise ValueError("no destinations")
    except FileNotFoundError:
        raise StateUnusable(f"no state file yet ({path})") from None
    except OSError as error:
        raise StateUnusable(f"the state file {path} is unreadable ({error.strerror})") from None
    except (ValueError, TypeError) as error:
        raise StateUnusable(f"the state file {path} is unreadable ({error})") from None
    return header


def read_index(path: str, token: str) -> Index:
    """The directory index the header names; StateUnusable when it is another one."""
    index: Index = {}
    try:
        with open(path + ".dirs", encoding="utf-8", errors="surrogateescape") as stream:
            if stream.readline().split() != ["pirsyncd-dirs", str(FORMAT), token]:
                raise ValueError("it belongs to another state")
            complete = False
            for line in stream:
                entry = json.loads(line)
                if entry[0] == "end":
                    complete = entry[1] == len(index)
                    break
                ino, parent, name = entry
                index[int(ino)] = (int(parent), str(name))
            if not complete:
                raise ValueError("it is incomplete")
    except (OSError, ValueError, TypeError) as error:
        text = error.strerror if isinstance(error, OSError) else str(error)
        raise StateUnusable(f"the directory index {path}.dirs is unreadable ({text})") from None
    return index


def write_index(path: str, directories: Iterable[tuple[int, int, str]]) -> str:
    """Write the directory index, one JSON line per directory (streamed: a large tree's
    index is never held in memory as a whole); return its token (for the header)."""
    token = os.urandom(8).hex()

    def lines() -> Iterator[bytes]:
        yield f"pirsyncd-dirs {FORMAT} {token}\n".encode()
        batch, count = [], 0
        for entry in directories:
            batch.append(json.dumps(entry))
            count += 1
            if len(batch) == 1024:
                yield ("\n".join(batch) + "\n").encode()
                batch = []
        batch.append(json.dumps(["end", count]))  # a truncated index is not a shorter one
        yield ("\n".join(batch) + "\n").encode()

    _write_atomically(path + ".dirs", lines())
    return token


def write_header(path: str, header: Header) -> None:
    header.written = time.time()
    _write_atomically(path, [json.dumps(header.to_json(), indent=1).encode()])


def _write_atomically(path: str, chunks: Iterable[bytes]) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as stream:
            for chunk in chunks:
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def judge(header: Header, now: Header, full_resync_interval: float) -> None:
    """Raise StateUnusable when the header cannot start this source warm; ``now`` is a
    header of what the source is now (:func:`describe_source`)."""
    if header.source != now.source:
        raise StateUnusable(f"the state file is from another source ({header.source})")
    if (header.device, header.fsid) != (now.device, now.fsid):
        raise StateUnusable("the source is on another file system now (its device or file system id changed)")
    if header.inode != now.inode:
        raise StateUnusable("the source is another directory now (its inode changed)")
    if header.watermark > now.watermark:
        raise StateUnusable("the state file's watermark is in the future (the clock went back)")
    same_boot = bool(now.boot_id) and now.boot_id == header.boot_id
    if same_boot and now.boot_offset < header.boot_offset - 1.0:
        raise StateUnusable(f"the clock went back {header.boot_offset - now.boot_offset:.0f} s since the state "
                            "was written")
    if full_resync_interval and now.watermark - header.watermark > full_resync_interval:
        raise StateUnusable(f"the state is older than full_resync_interval ({full_resync_interval:g} s)")
    if [mount[:-1] for mount in header.mounts] != [mount[:-1] for mount in now.mounts]:
        raise StateUnusable("the mounts at or below the source changed")
    if _handles_differ([header.handle, *(mount[-1] for mount in header.mounts)],
                       [now.handle, *(mount[-1] for mount in now.mounts)]):
        raise StateUnusable("the source's file system was made or mounted anew since the state was written "
                            "(another file system at the same place?)")


def _handles_differ(before: list[str], now: list[str]) -> bool:
    """File handles compared where both sides have one (a file system without handles
    is judged by its device and fsid alone)."""
    return any(old and new and old != new for old, new in zip(before, now, strict=True))  # mounts: same list


def describe_source(source: str, identity: SourceIdentity, watermark: float, index_token: str = "",
                    destinations: dict[str, dict[str, Any]] | None = None) -> Header:
    """A header for the source as it is now (for writing, or to judge a saved one against)."""
    boot_id, offset = boot_clock()
    return Header(watermark=watermark, source=source, device=identity.device, inode=identity.inode,
                  fsid=os.statvfs(source).f_fsid, handle=file_handle(source), mounts=mounts_below(source),
                  boot_id=boot_id, boot_offset=offset, index_token=index_token, destinations=destinations or {})


def judge_destination(header: Header, config: Config) -> dict[str, Any]:
    """The header's entry for one destination; StateUnusable when it has none that fits."""
    name = config.destination_name
    entry = header.destinations.get(name)
    if entry is None:
        known = ", ".join(sorted(header.destinations)) or "none"
        raise StateUnusable(f"the state file is from another destination (it knows {known})")
    if entry.get("destination") != config.destination.text:
        raise StateUnusable(f"the state file is from another destination ({entry.get('destination')})")
    if entry.get("settings") != destination_settings(config):
        raise StateUnusable("the state file is from other settings (exclude, rsync_flags, max_size or min_size)")
    last_full = entry.get("last_full")
    interval = config.full_resync_interval
    if interval and (not isinstance(last_full, (int, float)) or time.time() - last_full > interval):
        raise StateUnusable(f"a full sync is due: the last one ran more than full_resync_interval ({interval:g} s) "
                            "ago")
    return entry
