"""The option table: one entry per setting, shared by the config parser, the
command line, ``--examples``, the sample config and the docs.

Every option lives in one INI section of ``/etc/pirsyncd/NAME.conf`` and has a
command-line twin: key ``io_timeout`` in section ``[rsync]`` is ``--io-timeout``.
What a value may be lives here too: its :class:`Kind`, the words it may be
(``choices``) and the range of a number (``bounds``).

>>> OPTIONS_BY_KEY["ssh_port"].allowed(), OPTIONS_BY_KEY["startup_sync"].allowed()
('1 to 65535', 'auto, full or none')
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Kind(enum.Enum):
    """How the text of a setting becomes its value: one branch each in :func:`pirsyncd.config.values.convert`."""

    PATH = "path"  # an absolute path, normalised; or one of the option's choices
    STRING = "string"
    DESTINATIONS = "destinations"  # one destination a line
    DURATION = "duration"  # seconds: 1.5, 500ms, 30s, 5m, 6h
    INT = "int"
    BOOL = "bool"
    SIZE = "size"  # as rsync takes it: 500K, 2G
    PATTERNS = "patterns"  # exclude patterns, one a line
    FLAGS = "flags"  # words split like a shell would
    RSYNC_FLAGS = "rsync_flags"  # FLAGS, refusing the rsync options pirsyncd manages itself
    COMMAND = "command"  # a program and its arguments, split like a shell would
    CHOICE = "choice"  # one of the option's choices


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range of a number: at least ``low`` (more than ``low`` when ``low_excluded``), at most ``high``.

    >>> Bounds(1).problem(0), Bounds(0, low_excluded=True).problem(0.5)
    ('must be 1 or more', None)
    """

    low: float | None = None
    high: float | None = None
    low_excluded: bool = False

    def describe(self) -> str:
        """'1 or more', 'more than 0', '1 to 65535'."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"more than {self.low:g}" if self.low_excluded else f"{self.low:g} or more"
        return f"{self.high:g} or less"

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range ('must be 1 or more'), or None when it is within."""
        too_low = self.low is not None and (value <= self.low if self.low_excluded else value < self.low)
        too_high = self.high is not None and value > self.high
        return f"must be {self.describe()}" if too_low or too_high else None


AT_LEAST_ONE = Bounds(1)
MORE_THAN_ZERO = Bounds(0, low_excluded=True)


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: where it lives, how its text is read (``kind``), what it may be (``choices``,
    ``bounds``), its default, help and example."""

    section: str
    key: str
    kind: Kind
    default: Any
    help: str
    example: str
    required: bool = False
    per_destination: bool = False  # may also be set in a [destination NAME] section
    choices: tuple[str, ...] = ()  # CHOICE: the words allowed; PATH: words allowed besides a path
    bounds: Bounds | None = None  # INT and DURATION: the range allowed

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def help_with_bounds(self) -> str:
        """The help, and the range of a number when it has one, as --help, --examples, the sample
        config and the man pages give it: '... (-1: no limit). Allowed: -1 or more.'"""
        return self.help + (f" Allowed: {self.bounds.describe()}." if self.bounds is not None else "")

    def default_text(self) -> str:
        """The default as a config file writes it, for the sample config's commented line
        ('#delay = 1'); empty when the option has none (an empty value leaves it unset).

        >>> OPTIONS_BY_KEY["delay"].default_text(), OPTIONS_BY_KEY["partial"].default_text()
        ('1', 'no')
        """
        value = self.default
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, tuple):
            return "\n".join(str(word) for word in value)
        return str(value)

    def allowed(self) -> str | None:
        """What the value may be, for --help and the docs when the kind alone does not say it:
        '1 or more', 'auto, full or none', 'journal, none or an absolute path'."""
        if self.bounds is not None:
            return self.bounds.describe()
        if self.choices:
            words = list(self.choices) + (["an absolute path"] if self.kind is Kind.PATH else [])
            return ", ".join(words[:-1]) + " or " + words[-1]
        return None


OPTIONS: tuple[Option, ...] = (
    # -- what to mirror ------------------------------------------------------
    Option("sync", "source", Kind.PATH, None,
           "Directory to watch and mirror (absolute path).",
           "/srv/www", required=True),
    Option("sync", "destination", Kind.DESTINATIONS, None,
           "Where the mirror lives: a local directory, [user@]host:/path (ssh), "
           "rsync://[user@]host[:port]/module/path or [user@]host::module/path; several, one per line, "
           "for several mirrors of one watched tree (each named after its host, or set in a "
           "[destination NAME] section of its own).",
           "/var/backups/www", required=True),
    Option("sync", "exclude", Kind.PATTERNS, (),
           "Paths neither watched nor sent, one rsync-style pattern per line "
           "(*, **, ?, [..]; a leading / anchors at the source, a trailing / matches directories only).",
           "*.tmp\n/cache/\n.git/"),
    # -- when to send --------------------------------------------------------
    Option("sync", "delay", Kind.DURATION, 1.0,
           "The longest a change waits before it is sent, in seconds (0 sends at once): what is pending goes "
           "this long after the oldest of it was read, however much follows, plus the rsync run already "
           "in flight; under steady change a batch goes every delay seconds. A file still open for writing "
           "waits for its close, at most 10 times this (at least 1 s).",
           "0.5"),
    Option("sync", "trigger_paths", Kind.INT, 10000,
           "Send a batch as soon as this many distinct paths are pending, before the delay has passed.",
           "5000", bounds=AT_LEAST_ONE),
    Option("sync", "full_sync_threshold", Kind.INT, 200000,
           "When more distinct paths than this are pending, send one full sync instead (bounds memory).",
           "100000", bounds=AT_LEAST_ONE),
    Option("sync", "startup_sync", Kind.CHOICE, "auto",
           "What a start sends: auto (what changed since the state file's watermark when the state "
           "is valid and current, else a full sync, saying why), full (always a full sync), none (nothing: "
           "trust the destination to be current).",
           "auto", choices=("auto", "full", "none")),
    Option("sync", "state_file", Kind.PATH, None,
           "Where the restart state lives (the watermark, what the mirror is, the directory index in "
           "STATE_FILE.dirs), so a restart sends what changed instead of a full sync (default under "
           "systemd: $STATE_DIRECTORY/NAME.state; otherwise none: a full sync at every start).",
           "/var/lib/pirsyncd/www.state"),
    Option("sync", "initial_sync", Kind.BOOL, True,
           "Old spelling: initial_sync = no is startup_sync = none.",
           "yes"),
    Option("sync", "full_resync_interval", Kind.DURATION, 0.0,
           "Also run a full sync this often, as a safety net (0 turns it off).",
           "6h"),
    Option("sync", "audit_interval", Kind.DURATION, 0.0,
           "Audit each destination this often, as pirsyncd audit does: a dry run that finds what differs "
           "at the destination (changes made there); the result goes to the status, the journal, the metrics "
           "and on_failure (0 turns it off).",
           "24h"),
    Option("sync", "audit_content", Kind.BOOL, False,
           "Periodic audits also compare contents by checksum: they read both trees' bytes "
           "(all of them at every audit, unless audit_content_slices spreads them over several).",
           "yes"),
    Option("sync", "audit_content_slices", Kind.INT, 1,
           "Each periodic audit checksums one slice of the content of this many (audit_content = yes "
           "is implied), the next one at the next audit (slice K holds the files whose path's CRC-32 "
           "modulo N is K-1, as "
           "pirsyncd audit --content=K/N), so the content of a large tree is covered over N audits; "
           "every audit still compares the whole tree's metadata. The rotation starts again at slice 1 "
           "when the daemon starts (1: the whole content at every audit).",
           "7", bounds=Bounds(1, 10000)),
    Option("sync", "audit_repair", Kind.BOOL, False,
           "Send again what a periodic audit finds different, and delete what is extra (within max_delete).",
           "yes"),
    Option("sync", "max_delete", Kind.INT, -1,
           "Refuse to delete more than this many entries in one rsync run; the run is reported "
           "and retried, and nothing beyond the limit is deleted (-1: no limit).",
           "1000", per_destination=True, bounds=Bounds(-1)),
    Option("sync", "one_file_system", Kind.BOOL, False,
           "Keep every file system mounted inside the source out of the mirror, as rsync -x does: "
           "neither watched nor sent (its mount point is mirrored as an empty directory). Pseudo file "
           "systems (proc, sysfs, devtmpfs, devpts, cgroup, ...) are kept out always.",
           "yes"),
    Option("sync", "watch_backend", Kind.CHOICE, "auto",
           "How the source is watched: auto (fanotify when a probe at start says it works and no other file "
           "system is mounted below the source, else inotify; the reason is logged and in the status), inotify "
           "(a watch on every directory, placed by a walk of the tree at start; bounded by max_user_watches), or "
           "fanotify (one filesystem mark covers the whole tree: no watch per directory, no walk at start, no "
           "max_user_watches; needs CAP_SYS_ADMIN to place the mark and CAP_DAC_READ_SEARCH, Linux 5.17 or "
           "later, 5.15.154 or 5.10.220, and a file system that reports file handles: not overlayfs, FUSE or a "
           "btrfs subvolume; a warm restart first scans the directories, with no watch; a file system mounted "
           "below the source is covered by full syncs only).",
           "inotify", choices=("auto", "inotify", "fanotify")),
    Option("sync", "allow_empty_source", Kind.BOOL, False,
           "Allow an empty source to empty a non-empty destination (off: refuse, as an unmounted "
           "source looks empty).",
           "no"),
    Option("sync", "parallel_syncs", Kind.INT, 4,
           "With several destinations: how many may run rsync at the same time (initial syncs are also "
           "started a little apart).",
           "2", bounds=AT_LEAST_ONE),
    Option("sync", "stop_timeout", Kind.DURATION, 60.0,
           "On stop, seconds to let the running rsync finish and send what is pending.",
           "30"),
    Option("sync", "retry_max_interval", Kind.DURATION, 300.0,
           "Longest wait between retries when the destination fails (waits double from 1 s up to this).",
           "60", bounds=MORE_THAN_ZERO),
    Option("sync", "status_file", Kind.PATH, None,
           "JSON status file kept current by the daemon (default under systemd: "
           "$RUNTIME_DIRECTORY/NAME.json; otherwise none).",
           "/run/pirsyncd/www.json"),
    Option("sync", "pause_file", Kind.PATH, None,
           "While this file exists the instance is paused: changes are read and kept but nothing is "
           "sent (pirsyncd pause NAME creates it, pirsyncd resume NAME removes it; default under "
           "systemd: $STATE_DIRECTORY/NAME.paused, otherwise the status file's name with .paused).",
           "/var/lib/pirsyncd/www.paused"),
    # -- how rsync runs ------------------------------------------------------
    Option("rsync", "rsync_binary", Kind.STRING, "rsync",
           "The rsync program to run (a name looked up in PATH, or a path).",
           "/usr/bin/rsync", per_destination=True),
    Option("rsync", "rsync_flags", Kind.RSYNC_FLAGS, (),
           "Extra rsync options, split like a shell would (never run by one), e.g. to keep hard "
           "links, ACLs or xattrs.",
           "--hard-links --acls --xattrs", per_destination=True),
    Option("rsync", "partial", Kind.BOOL, False,
           "Keep partially transferred files so an interrupted large transfer resumes (rsync --partial).",
           "yes", per_destination=True),
    Option("rsync", "append_verify", Kind.BOOL, False,
           "Send only the appended tail of files that grew, verifying the whole file (rsync --append-verify); "
           "for append-only data such as logs.",
           "no", per_destination=True),
    Option("rsync", "max_size", Kind.SIZE, None,
           "Do not send files larger than this (rsync --max-size).",
           "2G", per_destination=True),
    Option("rsync", "min_size", Kind.SIZE, None,
           "Do not send files smaller than this (rsync --min-size).",
           "1", per_destination=True),
    Option("rsync", "full_sync_checksum", Kind.BOOL, False,
           "Compare contents, not just size and time, in full syncs (slower; batches always compare the "
           "changed files).",
           "no", per_destination=True),
    Option("rsync", "deletion_mode", Kind.CHOICE, "auto",
           "How batches delete what is gone from the source: missing-args (rsync --delete-missing-args, "
           "which some rsync builds, Debian 12's 3.2.7 among them, get wrong), parents (re-check the "
           "parent directory's own entries, never a subtree), or auto (a probe of the installed rsync decides).",
           "auto", per_destination=True, choices=("auto", "missing-args", "parents")),
    Option("rsync", "io_timeout", Kind.DURATION, 60.0,
           "Abort an rsync run when no data moves for this long (rsync --timeout).",
           "120", per_destination=True, bounds=MORE_THAN_ZERO),
    Option("rsync", "time_limit", Kind.DURATION, 3600.0,
           "Kill and retry a batch (not a full sync) still running after this long.",
           "1800", per_destination=True, bounds=MORE_THAN_ZERO),
    # -- remote destinations -------------------------------------------------
    Option("remote", "ssh_port", Kind.INT, None,
           "ssh port of the destination host (default: ssh's own configuration).",
           "2222", per_destination=True, bounds=Bounds(1, 65535)),
    Option("remote", "ssh_identity_file", Kind.PATH, None,
           "Private key for ssh (default: ssh's own configuration).",
           "/etc/pirsyncd/id_ed25519", per_destination=True),
    Option("remote", "ssh_options", Kind.FLAGS, (),
           "Extra ssh options, split like a shell would.",
           "-o Compression=no", per_destination=True),
    Option("remote", "ssh_accept_new_host_key", Kind.BOOL, False,
           "Trust and remember the host key of a host seen for the first time (off: an unknown host "
           "key is an error to fix in known_hosts).",
           "no", per_destination=True),
    Option("remote", "password_file", Kind.PATH, None,
           "File holding the rsync daemon password; must not be readable by others.",
           "/etc/pirsyncd/www.secret", per_destination=True),
    # -- logging -------------------------------------------------------------
    Option("log", "debug_events", Kind.BOOL, False,
           "Log every inotify event received (verbose).",
           "no"),
    Option("log", "debug_commands", Kind.BOOL, False,
           "Log every rsync command line and the paths it is given.",
           "no"),
    Option("log", "rsync_log", Kind.PATH, "journal",
           "Where rsync's own output goes: journal (with pirsyncd's log), none, or an absolute file path.",
           "/var/log/pirsyncd/www-rsync.log", choices=("journal", "none")),
    Option("log", "metrics_file", Kind.PATH, None,
           "Prometheus text-format file kept current for node_exporter's textfile collector (replaced "
           "atomically, mode 0644; none by default).",
           "/var/lib/prometheus/node-exporter/pirsyncd-www.prom"),
    # -- hooks ---------------------------------------------------------------
    Option("hooks", "on_sync", Kind.COMMAND, (),
           "Command run after each successful batch or full sync, split like a shell would (never run "
           "by one); the changed paths come NUL-separated on its stdin, the facts in PIRSYNCD_* variables.",
           "/usr/local/bin/purge-cdn --quiet"),
    Option("hooks", "on_failure", Kind.COMMAND, (),
           "Command run when a destination starts failing, is held or failed, or the source is lost "
           "(PIRSYNCD_EVENT says which), and once more when it recovers.",
           "/usr/local/bin/page-oncall pirsyncd"),
    Option("hooks", "hook_timeout", Kind.DURATION, 60.0,
           "Seconds a hook may run before it is killed (a hook never delays syncing).",
           "30", bounds=MORE_THAN_ZERO),
)

OPTIONS_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(option.section for option in OPTIONS))
PER_DESTINATION: tuple[Option, ...] = tuple(option for option in OPTIONS if option.per_destination)
