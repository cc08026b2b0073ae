"""What an audit runs and what it reads back (pure): rsync argv for the dry runs and the repair,
the itemized output turned into drift, and the slices of ``--content=K/N``.

An audit is a dry run of the live sync's own full-sync command (:func:`build_rsync_command`
with ``RunMode.FULL``: the same filters, ``-x``, kept-out mount points, ssh or daemon options),
with ``--dry-run --itemize-changes`` instead of ``--stats``, without ``--max-delete`` (a dry run
deletes nothing; the limit would hide extra entries) and without ``--partial`` and
``--append-verify`` (``--append`` skips a destination file as long as the source one, which
would hide a rewrite). Every line rsync itemizes is tagged (``--out-format=pirsyncd-audit %i
%n``), so no other line of its output is taken for one; rsync escapes a byte of a name that is
not printable (a newline, with ``LC_ALL=C`` every byte past 127) and a backslash that looks like
an escape as ``\\#ooo``, so every name comes back whole.

    >>> parse_itemized(b"pirsyncd-audit >f.st...... www/index.html\\n"
    ...                b"pirsyncd-audit *deleting   old\\\\#012name\\n")
    {'www/index.html': 'modified', 'old\\nname': 'extra'}
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Callable, Iterable

from pirsyncd.config.parse import Config
from pirsyncd.replica.rsync import RunMode, build_rsync_command, deletion_entries, encode_path_list

MISSING, EXTRA, MODIFIED, ATTRIBUTES = "missing", "extra", "modified", "attributes"
KINDS = (MISSING, EXTRA, MODIFIED, ATTRIBUTES)
TAG = b"pirsyncd-audit "
OUT_FORMAT = "--out-format=pirsyncd-audit %i %n"
_NOT_FOR_AUDITS = ("--stats", "--partial", "--append-verify", "--checksum", "-c")
_REMOTE_ONLY = ("--rsh=", "--password-file=")  # how to reach the destination: a listing of the source refuses them
_ESCAPE = re.compile(rb"\\#([0-7]{3})")


def classify(flags: str) -> str | None:
    """The kind of one itemized change (rsync(1), --itemize-changes ``YXcstpoguax``), or None
    for a line that is no difference.

    >>> [classify(flags) for flags in ("*deleting  ", ">f+++++++++", ">fc........", ".f...p.....",
    ...                                "cLc........", ".d..t......", ">f..t......", ".f         ")]
    ['extra', 'missing', 'modified', 'attributes', 'attributes', 'attributes', 'modified', None]
    """
    if flags.startswith("*deleting"):
        return EXTRA
    if len(flags) < 11:
        return None
    update, file_type, attributes = flags[0], flags[1], flags[2:]
    if "+" in attributes:
        return MISSING
    if update == "h" or (file_type == "f" and update in "<>"):
        return MODIFIED  # a file to send again (content, size or mtime), or a hard link to make
    if attributes.strip(". ") or update == "c":
        return ATTRIBUTES
    return None


def unescape_name(raw: bytes) -> str:
    """A name as rsync printed it, with its ``\\#ooo`` escapes undone, in the file system's encoding."""
    return os.fsdecode(_ESCAPE.sub(lambda match: bytes([int(match[1], 8)]), raw))


def parse_itemized(output: bytes) -> dict[str, str]:
    """Drift from a tagged, itemized dry run: path (relative, no trailing '/'; the top is '.')
    → kind. A path missing at the destination with an extra one at or below it is a *type*
    change: modified. (A directory where the destination has a file shows as missing: rsync
    names no deletion for it.)"""
    drift: dict[str, str] = {}
    for line in output.split(b"\n"):
        if not line.startswith(TAG):
            continue
        body = line[len(TAG):]
        flags, name = body[:11].decode("ascii", "replace"), body[12:]
        kind = classify(flags)
        if kind is None:
            continue
        path = unescape_name(name).rstrip("/") or "."
        if path.startswith("./"):
            path = path[2:]
        drift[path] = MODIFIED if drift.get(path, kind) != kind else kind
    extras = [path for path, kind in drift.items() if kind == EXTRA]
    for path, kind in list(drift.items()):
        if kind == MISSING and any(extra == path or extra.startswith(path + "/") for extra in extras):
            drift[path] = MODIFIED
    return drift


def _audit_base(config: Config, kept_out: list[str] | None, content: bool) -> list[str]:
    """The live full sync's argv, fit for a dry run, before its SRC/ DST/ arguments."""
    argv = build_rsync_command(config, RunMode.FULL, kept_out=kept_out)
    words = [word for word in argv[:-2] if word not in _NOT_FOR_AUDITS and not word.startswith("--max-delete=")]
    words += ["--dry-run", OUT_FORMAT]
    if content:
        words.append("--checksum")
    return words + argv[-2:]


def build_audit_command(config: Config, *, content: bool = False, kept_out: list[str] | None = None) -> list[str]:
    """argv of the metadata pass over the whole tree (``content``: with checksums).

    >>> build_audit_command(config)  # doctest: +SKIP
    ['rsync', '-a', '--timeout=60', '--delete', '--force', '--dry-run',
     '--out-format=pirsyncd-audit %i %n', '/srv/www/', '/backup/www/']
    """
    return _audit_base(config, kept_out, content)


def _listed(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` reading its paths from stdin (and ``extra`` options), no longer recursive."""
    words = [word for word in argv[:-2] if word not in ("--delete", "--force")]
    return [*words, *extra, *argv[-2:]]


def build_slice_command(config: Config, *, kept_out: list[str] | None = None) -> list[str]:
    """argv of a ``--content=K/N`` pass: the listed files (stdin, NUL-separated) compared by checksum."""
    return _listed(_audit_base(config, kept_out, True), ["--files-from=-", "--from0", "--ignore-missing-args"])


def build_listing_command(config: Config, *, kept_out: list[str] | None = None) -> list[str]:
    """argv that lists the source as the metadata pass sees it (its filters, ``-x``, the kept-out
    mount points): ``rsync --list-only`` of the source alone, for :class:`SliceListing`.

    >>> build_listing_command(config)  # doctest: +SKIP
    ['rsync', '-a', '--timeout=60', '--list-only', '/srv/www/']
    """
    argv = _audit_base(config, kept_out, False)
    words = [word for word in argv[:-2] if word not in ("--delete", "--force", "--dry-run", OUT_FORMAT)
             and not word.startswith(_REMOTE_ONLY)]
    return [*words, "--list-only", argv[-2]]


def build_recheck_command(config: Config, *, content: bool = False, kept_out: list[str] | None = None) -> list[str]:
    """argv of a recheck: the listed paths themselves and the own entries of the listed
    ``DIR/.`` (where extra entries were), one level: ``-d --delete`` (see :func:`recheck_entries`)."""
    return _listed(_audit_base(config, kept_out, content),
                   ["-d", "--files-from=-", "--from0", "--ignore-missing-args", "--delete", "--force"])


def recheck_entries(drift: dict[str, str], is_directory: Callable[[str], bool]) -> list[str]:
    """What a recheck lists: each drifted path that is in the source, and for the extra ones
    the nearest directory of the source above them, as ``DIR/.`` (its own entries).

    >>> recheck_entries({"a": "missing", "a/f": "missing", "old/x": "extra", "old": "extra"},
    ...                 lambda path: path in ("a", "."))
    ['a', 'a/f', '.']
    >>> recheck_entries({".": "attributes", "d/gone": "extra"}, lambda path: path in (".", "d"))
    ['.', 'd/.']
    """
    listed = [path for path, kind in sorted(drift.items()) if kind != EXTRA]
    parents: set[str] = set()
    for path, kind in drift.items():
        if kind != EXTRA:
            continue
        parent = os.path.dirname(path) or "."
        while parent != "." and not is_directory(parent):
            parent = os.path.dirname(parent) or "."
        parents.add(parent)
    return listed + deletion_entries(sorted(parents))


def listable_recheck_entries(drift: dict[str, str], is_directory: Callable[[str], bool]) -> list[str]:
    """:func:`recheck_entries`, less those below what is no longer a directory at the source
    (rsync would fail on them: "Not a directory")."""
    return [entry for entry in recheck_entries(drift, is_directory)
            if is_directory(os.path.dirname(entry.removesuffix("/.")) or ".")
            and (not entry.endswith("/.") or is_directory(entry[:-2]))]


def confirmed(first: dict[str, str], again: dict[str, str]) -> dict[str, str]:
    """What a recheck confirms of the first audit's drift: each path still different (of the
    kind the recheck says); an extra path also when an extra directory above it is.

    >>> confirmed({"a": "modified", "b": "modified", "old/x": "extra"}, {"a": "attributes", "old": "extra"})
    {'a': 'attributes', 'old/x': 'extra'}
    """
    result: dict[str, str] = {}
    for path, kind in first.items():
        if path in again:
            result[path] = again[path]
        elif kind == EXTRA and any(again.get(above) == EXTRA for above in _ancestors(path)):
            result[path] = EXTRA
    return result


def _ancestors(path: str) -> Iterable[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def build_repair_send_command(config: Config, *, kept_out: list[str] | None = None) -> list[str]:
    """argv that sends the listed paths (stdin) themselves, not recursively, every file whole
    (``--ignore-times``: a rewrite with its old size and mtime too); ``--force`` replaces a
    directory by a file.

    >>> build_repair_send_command(config)  # doctest: +SKIP
    ['rsync', '-a', '--timeout=60', '--files-from=-', '--from0', '--ignore-missing-args',
     '--ignore-times', '--force', '/srv/www/', '/backup/www/']
    """
    argv = build_rsync_command(config, RunMode.DIRECTORIES, kept_out=kept_out)
    words = [word for word in argv[:-2] if word not in ("--stats", "--append-verify")]
    return [*words, "--ignore-times", "--force", *argv[-2:]]


def build_repair_delete_command(config: Config, *, kept_out: list[str] | None = None) -> list[str]:
    """argv that deletes what the listed ``DIR/.`` hold at the destination but not at the source,
    one level (the live sync's DELETIONS run; its ``--max-delete`` holds)."""
    argv = build_rsync_command(config, RunMode.DELETIONS, kept_out=kept_out)
    return [word for word in argv if word != "--stats"]


def repair_plan(drift: dict[str, str], is_directory: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(the ``DIR/.`` entries whose extra entries to delete, the paths to send), the deletions
    first: a file may have to make way for a directory. The directories above a drifted path
    are sent too (their own metadata): creating or deleting an entry changes their mtime.

    >>> repair_plan({"new": "missing", "old": "extra", "old/x": "extra", "d/m": "modified"},
    ...             lambda path: path in (".", "d"))
    (['.'], ['.', 'd', 'd/m', 'new'])
    """
    extras = {path: kind for path, kind in drift.items() if kind == EXTRA}
    deletions = recheck_entries(_top_most(extras), is_directory) if extras else []
    sends = {path for path, kind in drift.items() if kind != EXTRA}
    sends.update(parent for path in drift for parent in (*_ancestors(path), ".")
                 if parent not in extras and is_directory(parent))
    return deletions, sorted(sends)


def _top_most(extras: dict[str, str]) -> dict[str, str]:
    return {path: kind for path, kind in extras.items() if not any(above in extras for above in _ancestors(path))}


def counted_deletions(drift: dict[str, str]) -> int:
    """How many entries a repair deletes (what ``max_delete`` counts: each file and directory)."""
    return sum(kind == EXTRA for kind in drift.values())


def parse_slice(text: str) -> tuple[int, int]:
    """``K/N`` → (K, N), 1 ≤ K ≤ N; ValueError with the fix otherwise.

    >>> parse_slice("3/7")
    (3, 7)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--content={text}: give K/N with 1 <= K <= N, e.g. --content=1/7 (the first of 7 slices)")
    return int(match[1]), int(match[2])


def in_slice(path: str, part: int, parts: int) -> bool:
    """Whether a file (its path relative to the source) is in slice ``part`` of ``parts``: a CRC-32
    of its path's bytes, modulo ``parts``. Stable across runs and machines; a file stays in its
    slice as long as its name does, and the N slices together hold every file once.

    >>> [part for part in range(1, 4) if in_slice("www/index.html", part, 3)]
    [1]
    """
    return zlib.crc32(os.fsencode(path)) % parts == part - 1


def next_slice(last: int, parts: int) -> int:
    """The slice a periodic audit checks after slice ``last`` (0: none yet), in turn 1..``parts``.

    >>> [next_slice(last, 3) for last in (0, 1, 2, 3, 5)]
    [1, 2, 3, 1, 3]
    """
    return last % parts + 1


def with_slice(found: dict[str, str], sliced: dict[str, str]) -> dict[str, str]:
    """The drift of a metadata pass and of a content slice's pass: the first pass's kind wins.

    >>> with_slice({"a": "missing"}, {"a": "modified", "b": "modified"})
    {'a': 'missing', 'b': 'modified'}
    """
    return {**found, **{path: kind for path, kind in sliced.items() if path not in found}}


_LISTED = re.compile(rb"-\S{9} +[0-9,.]+ \d{4}/\d\d/\d\d \d\d:\d\d:\d\d (.*)")


class SliceListing:
    """The regular files of slice ``part`` of ``parts``, read from ``rsync --list-only`` output
    (:func:`build_listing_command`, ``LC_ALL=C``) a chunk at a time as it arrives, so the work
    per chunk is bounded: :meth:`feed` is a Child's ``stdout_sink`` (keeps nothing of the output).
    ``stdin`` is the slice as a ``--from0`` list, for :func:`build_slice_command`.

    >>> listing = SliceListing(1, 1)
    >>> listing.feed(b"drwxr-xr-x      4,096 2026/12/07 07:49:35 .\\n-rw-r--r--   1 2026/12/07 07:49:35 a b")
    b''
    >>> listing.feed(b"\\\\#012c\\nlrwxrwxrwx   3 2026/12/07 07:49:35 ln -> a\\n"), listing.feed(b"")
    (b'', b'')
    >>> bytes(listing.stdin), listing.count
    (b'a b\\nc\\x00', 1)
    """

    def __init__(self, part: int, parts: int) -> None:
        self.part, self.parts = part, parts
        self.stdin = bytearray()
        self.count = 0
        self._rest = b""

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop() if chunk else b""
        files = []
        for line in lines:
            match = _LISTED.fullmatch(line)
            if match:
                path = unescape_name(match[1])
                if in_slice(path, self.part, self.parts):
                    files.append(path)
        self.count += len(files)
        self.stdin += encode_path_list(files)
        return b""


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """One destination's audit: its name, what differs (path → kind), how it ended."""

    destination: str
    drift: dict[str, str]
    seconds: float = 0.0
    content: str = ""  # "", "all" or "K/N"
    repaired: dict[str, str] | None = None  # with --repair: what was found before the repair
    error: str = ""

    def counts(self) -> dict[str, int]:
        return {kind: sum(found == kind for found in self.drift.values()) for kind in KINDS}

    def as_json(self) -> dict[str, object]:
        entries = {kind: sorted(path for path, found in self.drift.items() if found == kind) for kind in KINDS}
        result: dict[str, object] = {"destination": self.destination, "identical": not self.drift and not self.error,
                                     "drift": entries, "counts": self.counts(), "seconds": round(self.seconds, 3),
                                     "content": self.content or None, "error": self.error or None}
        if self.repaired is not None:
            result["repaired"] = {kind: sorted(p for p, found in self.repaired.items() if found == kind)
                                  for kind in KINDS}
        return result


def count_of(number: int, noun: str) -> str:
    """'1 difference', '3 differences'."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def format_result(result: AuditResult, shown: int = 5) -> str:
    """A few lines for a person: the verdict, then the first paths of each kind.

    >>> print(format_result(AuditResult("web1", {"a": "missing", "b": "extra"}, 0.25)))
    web1: 2 differences (1 missing, 1 extra) in 0.2 s
      missing:    a
      extra:      b
    """
    what = "metadata" if not result.content else ("content" if result.content == "all"
                                                  else f"content slice {result.content}")
    if result.error:
        return f"{result.destination}: not audited: {result.error}"
    lines = []
    if result.repaired:
        lines.append(f"{result.destination}: repaired {len(result.repaired)} paths")
    if not result.drift:
        lines.append(f"{result.destination}: identical ({what}, {result.seconds:.1f} s)")
        return "\n".join(lines)
    counts = result.counts()
    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
    lines.append(f"{result.destination}: {count_of(len(result.drift), 'difference')} ({summary}) in "
                 f"{result.seconds:.1f} s")
    for kind in KINDS:
        paths = sorted(path for path, found in result.drift.items() if found == kind)
        for index, path in enumerate(paths[:shown]):
            label = f"{kind}:" if index == 0 else ""
            lines.append(f"  {label:<11} {path!r}" if not path.isprintable() else f"  {label:<11} {path}")
        if len(paths) > shown:
            lines.append(f"  {'':<11} ... and {len(paths) - shown} more (--json lists every one)")
    return "\n".join(lines)
