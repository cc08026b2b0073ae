"""The option table: one entry per setting, shared by the config parser, the
command line, ``--examples``, the sample config and the docs.

Every option lives in one INI section of ``/etc/pirsyncd/NAME.conf`` and has a
command-line twin: key ``io_timeout`` in section ``[rsync]`` is ``--io-timeout``.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting. ``kind`` names the parser in :mod:`pirsyncd.config`."""

    section: str
    key: str
    # path, string, destinations, duration, int, bool, size, patterns, flags, command, rsync_log,
    # deletion_mode, startup_sync
    kind: str
    default: Any
    help: str
    example: str
    required: bool = False
    per_destination: bool = False  # may also be set in a [destination NAME] section

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    # -- what to mirror ------------------------------------------------------
    Option("sync", "source", "path", None,
           "Directory to watch and mirror (absolute path).",
           "/srv/www", required=True),
    Option("sync", "destination", "destinations", None,
           "Where the mirror lives: a local directory, [user@]host:/path (ssh), "
           "rsync://[user@]host[:port]/module/path or [user@]host::module/path; several, one per line, "
           "for several mirrors of one watched tree (each named after its host, or set in a "
           "[destination NAME] section of its own).",
           "/var/backups/www", required=True),
    Option("sync", "exclude", "patterns", (),
           "Paths neither watched nor sent, one rsync-style pattern per line "
           "(*, **, ?, [..]; a leading / anchors at the source, a trailing / matches directories only).",
           "*.tmp\n/cache/\n.git/"),
    # -- when to send --------------------------------------------------------
    Option("sync", "delay", "duration", 1.0,
           "The longest a change waits before it is sent, in seconds (0 sends at once): what is pending goes "
           "this long after the oldest of it was read, however much follows, plus the rsync run already "
           "in flight; under steady change a batch goes every delay seconds. A file still open for writing "
           "waits for its close, at most 10 times this (at least 1 s).",
           "0.5"),
    Option("sync", "trigger_paths", "int", 10000,
           "Send a batch as soon as this many distinct paths are pending, before the delay has passed.",
           "5000"),
    Option("sync", "full_sync_threshold", "int", 200000,
           "When more distinct paths than this are pending, send one full sync instead (bounds memory).",
           "100000"),
    Option("sync", "startup_sync", "startup_sync", "auto",
           "What a start sends: auto (what changed since the state file's watermark when the state "
           "is valid and current, else a full sync, saying why), full (always a full sync), none (nothing: "
           "trust the destination to be current).",
           "auto"),
    Option("sync", "state_file", "path", None,
           "Where the restart state lives (the watermark, what the mirror is, the directory index in "
           "STATE_FILE.dirs), so a restart sends what changed instead of a full sync (default under "
           "systemd: $STATE_DIRECTORY/NAME.state; otherwise none: a full sync at every start).",
           "/var/lib/pirsyncd/www.state"),
    Option("sync", "initial_sync", "bool", True,
           "Old spelling: initial_sync = no is startup_sync = none.",
           "yes"),
    Option("sync", "full_resync_interval", "duration", 0.0,
           "Also run a full sync this often, as a safety net (0 turns it off).",
           "6h"),
    Option("sync", "max_delete", "int", -1,
           "Refuse to delete more than this many entries in one rsync run; the run is reported "
           "and retried, and nothing beyond the limit is deleted (-1: no limit).",
           "1000", per_destination=True),
    Option("sync", "one_file_system", "bool", False,
           "Keep every file system mounted inside the source out of the mirror, as rsync -x does: "
           "neither watched nor sent (its mount point is mirrored as an empty directory). Pseudo file "
           "systems (proc, sysfs, devtmpfs, devpts, cgroup, ...) are kept out always.",
           "yes"),
    Option("sync", "allow_empty_source", "bool", False,
           "Allow an empty source to empty a non-empty destination (off: refuse, as an unmounted "
           "source looks empty).",
           "no"),
    Option("sync", "parallel_syncs", "int", 4,
           "With several destinations: how many may run rsync at the same time (initial syncs are also "
           "started a little apart).",
           "2"),
    Option("sync", "stop_timeout", "duration", 60.0,
           "On stop, seconds to let the running rsync finish and send what is pending.",
           "30"),
    Option("sync", "retry_max_interval", "duration", 300.0,
           "Longest wait between retries when the destination fails (waits double from 1 s up to this).",
           "60"),
    Option("sync", "status_file", "path", None,
           "JSON status file kept current by the daemon (default under systemd: "
           "$RUNTIME_DIRECTORY/NAME.json; otherwise none).",
           "/run/pirsyncd/www.json"),
    Option("sync", "pause_file", "path", None,
           "While this file exists the instance is paused: changes are read and kept but nothing is "
           "sent (pirsyncd pause NAME creates it, pirsyncd resume NAME removes it; default under "
           "systemd: $STATE_DIRECTORY/NAME.paused, otherwise the status file's name with .paused).",
           "/var/lib/pirsyncd/www.paused"),
    # -- how rsync runs ------------------------------------------------------
    Option("rsync", "rsync_binary", "string", "rsync",
           "The rsync program to run (a name looked up in PATH, or a path).",
           "/usr/bin/rsync", per_destination=True),
    Option("rsync", "rsync_flags", "flags", (),
           "Extra rsync options, split like a shell would (never run by one), e.g. to keep hard "
           "links, ACLs or xattrs.",
           "--hard-links --acls --xattrs", per_destination=True),
    Option("rsync", "partial", "bool", False,
           "Keep partially transferred files so an interrupted large transfer resumes (rsync --partial).",
           "yes", per_destination=True),
    Option("rsync", "append_verify", "bool", False,
           "Send only the appended tail of files that grew, verifying the whole file (rsync --append-verify); "
           "for append-only data such as logs.",
           "no", per_destination=True),
    Option("rsync", "max_size", "size", None,
           "Do not send files larger than this (rsync --max-size).",
           "2G", per_destination=True),
    Option("rsync", "min_size", "size", None,
           "Do not send files smaller than this (rsync --min-size).",
           "1", per_destination=True),
    Option("rsync", "full_sync_checksum", "bool", False,
           "Compare contents, not just size and time, in full syncs (slower; batches always compare the "
           "changed files).",
           "no", per_destination=True),
    Option("rsync", "deletion_mode", "deletion_mode", "auto",
           "How batches delete what is gone from the source: missing-args (rsync --delete-missing-args, "
           "which some rsync builds, Debian 12's 3.2.7 among them, get wrong), parents (re-check the "
           "parent directory's own entries, never a subtree), or auto (a probe of the installed rsync decides).",
           "auto", per_destination=True),
    Option("rsync", "io_timeout", "duration", 60.0,
           "Abort an rsync run when no data moves for this long (rsync --timeout).",
           "120", per_destination=True),
    Option("rsync", "time_limit", "duration", 3600.0,
           "Kill and retry a batch (not a full sync) still running after this long.",
           "1800", per_destination=True),
    # -- remote destinations -------------------------------------------------
    Option("remote", "ssh_port", "int", None,
           "ssh port of the destination host (default: ssh's own configuration).",
           "2222", per_destination=True),
    Option("remote", "ssh_identity_file", "path", None,
           "Private key for ssh (default: ssh's own configuration).",
           "/etc/pirsyncd/id_ed25519", per_destination=True),
    Option("remote", "ssh_options", "flags", (),
           "Extra ssh options, split like a shell would.",
           "-o Compression=no", per_destination=True),
    Option("remote", "ssh_accept_new_host_key", "bool", False,
           "Trust and remember the host key of a host seen for the first time (off: an unknown host "
           "key is an error to fix in known_hosts).",
           "no", per_destination=True),
    Option("remote", "password_file", "path", None,
           "File holding the rsync daemon password; must not be readable by others.",
           "/etc/pirsyncd/www.secret", per_destination=True),
    # -- logging -------------------------------------------------------------
    Option("log", "debug_events", "bool", False,
           "Log every inotify event received (verbose).",
           "no"),
    Option("log", "debug_commands", "bool", False,
           "Log every rsync command line and the paths it is given.",
           "no"),
    Option("log", "rsync_log", "rsync_log", "journal",
           "Where rsync's own output goes: journal (with pirsyncd's log), none, or an absolute file path.",
           "/var/log/pirsyncd/www-rsync.log"),
    Option("log", "metrics_file", "path", None,
           "Prometheus text-format file kept current for node_exporter's textfile collector (replaced "
           "atomically, mode 0644; none by default).",
           "/var/lib/prometheus/node-exporter/pirsyncd-www.prom"),
    # -- hooks ---------------------------------------------------------------
    Option("hooks", "on_sync", "command", (),
           "Command run after each successful batch or full sync, split like a shell would (never run "
           "by one); the changed paths come NUL-separated on its stdin, the facts in PIRSYNCD_* variables.",
           "/usr/local/bin/purge-cdn --quiet"),
    Option("hooks", "on_failure", "command", (),
           "Command run when a destination starts failing, is held or failed, or the source is lost "
           "(PIRSYNCD_EVENT says which), and once more when it recovers.",
           "/usr/local/bin/page-oncall pirsyncd"),
    Option("hooks", "hook_timeout", "duration", 60.0,
           "Seconds a hook may run before it is killed (a hook never delays syncing).",
           "30"),
)

OPTIONS_BY_KEY: dict[str, Option] = {option.key: option for option in OPTIONS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(option.section for option in OPTIONS))
PER_DESTINATION: tuple[Option, ...] = tuple(option for option in OPTIONS if option.per_destination)
