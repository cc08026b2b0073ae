"""rsync command lines and the meaning of rsync's exit statuses (pure).

Paths never appear in argv: they go NUL-separated on stdin (``--files-from=- --from0``),
so a file named ``-e sh`` or containing a newline is a file, never an option.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re

from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config
from pirsyncd.replica.itemize import OUT_FORMAT


class RunMode(enum.Enum):
    """What one rsync run sends."""

    FULL = "full"  # everything: -a --delete SRC/ DST/
    CHANGES = "changes"  # listed files, removed paths and new directories, compared byte for byte
    VERIFY = "verify"  # listed directories, recursively, with rsync's quick check
    DELETIONS = "deletions"  # listed directories' own entries (not recursively), deleting what they lost
    DIRECTORIES = "directories"  # listed directories' own metadata, not their contents


class Outcome(enum.Enum):
    """What to do after one run."""

    OK = "ok"
    VANISHED = "vanished"  # files vanished while rsync ran: their events follow, send again
    PARTIAL = "partial"  # some files failed: keep them, retry with backoff
    RETRY = "retry"  # destination or transfer trouble: keep everything, retry with backoff
    DELETE_LIMIT = "delete-limit"  # max_delete stopped deletions: hold until a reload
    FATAL = "fatal"  # retrying cannot help: a user must fix something


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    meaning: str
    fix: str = ""
    exit_status: int = exitcodes.CONFIG  # for FATAL: how the daemon exits


# rsync(1) EXIT VALUES, one row each; anything else is RETRY, logged loudly.
EXIT_STATUSES: dict[int, Verdict] = {
    0: Verdict(Outcome.OK, "success"),
    1: Verdict(Outcome.FATAL, "syntax or usage error", "check rsync_flags and the rsync version"),
    2: Verdict(Outcome.FATAL, "protocol incompatibility", "install a compatible rsync at the destination"),
    3: Verdict(Outcome.RETRY, "errors selecting input/output files or directories"),
    4: Verdict(Outcome.FATAL, "requested action not supported", "remove the unsupported option from rsync_flags"),
    5: Verdict(Outcome.RETRY, "error starting client-server protocol"),
    6: Verdict(Outcome.RETRY, "daemon unable to append to log-file"),
    10: Verdict(Outcome.RETRY, "error in socket I/O"),
    11: Verdict(Outcome.RETRY, "error in file I/O"),
    12: Verdict(Outcome.RETRY, "error in rsync protocol data stream"),
    13: Verdict(Outcome.RETRY, "errors with program diagnostics"),
    14: Verdict(Outcome.RETRY, "error in IPC code"),
    19: Verdict(Outcome.RETRY, "received SIGUSR1"),
    20: Verdict(Outcome.RETRY, "received SIGUSR1 or SIGINT, or was stopped"),
    21: Verdict(Outcome.RETRY, "some error returned by waitpid()"),
    22: Verdict(Outcome.RETRY, "error allocating core memory buffers"),
    23: Verdict(Outcome.PARTIAL, "partial transfer due to error"),
    24: Verdict(Outcome.VANISHED, "partial transfer due to vanished source files"),
    25: Verdict(Outcome.DELETE_LIMIT, "the max_delete limit stopped deletions",
                "check the source; raise max_delete if the deletions are intended"),
    30: Verdict(Outcome.RETRY, "timeout in data send/receive"),
    35: Verdict(Outcome.RETRY, "timeout waiting for daemon connection"),
    127: Verdict(Outcome.FATAL, "rsync could not be run", "install rsync or fix rsync_binary"),
    255: Verdict(Outcome.RETRY, "ssh connection failed"),
}

# stderr texts that mean the destination refused us: retrying cannot fix them.
# The fix may name {host}, {known_hosts}, {module}, {identity} and {password_file}.
_REFUSALS: tuple[tuple[re.Pattern[str], str, str, int], ...] = (
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED"), "the ssh host key of {host} changed",
     "check the host, then remove its old key from {known_hosts} (ssh-keygen -R {host} -f {known_hosts})",
     exitcodes.NO_PERMISSION),
    (re.compile(r"Host key verification failed|No .* host key is known"), "the ssh host key of {host} is unknown",
     "add it to {known_hosts} (ssh-keyscan {host} >> {known_hosts}) or set ssh_accept_new_host_key = yes",
     exitcodes.NO_PERMISSION),
    (re.compile(r"Permission denied \((publickey|password|keyboard)"), "ssh to {host} was denied: the key was refused",
     "put the public key of {identity} in the authorized_keys of the destination user", exitcodes.NO_PERMISSION),
    (re.compile(r"@ERROR: auth failed"), "the rsync daemon on {host} refused the password (auth failed)",
     "fix the password in {password_file} or the user in the destination", exitcodes.NO_PERMISSION),
    (re.compile(r"@ERROR: Unknown module"), "the rsync daemon on {host} has no module {module}",
     "fix the module name in the destination", exitcodes.CONFIG),
    (re.compile(r"@ERROR: access denied"), "the rsync daemon on {host} denies this host",
     "allow it with 'hosts allow' in the daemon's rsyncd.conf", exitcodes.NO_PERMISSION),
    (re.compile(r"password file must not be other-accessible|could not open password file"),
     "rsync refused the password file {password_file}",
     "it must exist and not be readable by others: chmod 600 {password_file}", exitcodes.CONFIG),
)

_BROKEN_DELETE_MISSING_ARGS = re.compile(r"invalid file mode 0+ for")


def classify_exit_status(status: int, stderr_tail: str = "") -> Verdict:
    """Map rsync's exit status (negative: killed by that signal) to what to do next.

    >>> classify_exit_status(23).outcome
    <Outcome.PARTIAL: 'partial'>
    """
    for pattern, meaning, fix, exit_status in _REFUSALS:
        if status != 0 and pattern.search(stderr_tail):
            return Verdict(Outcome.FATAL, meaning, fix, exit_status)
    if status < 0:
        return Verdict(Outcome.RETRY, f"rsync was killed by signal {-status}")
    known = EXIT_STATUSES.get(status)
    if known is not None:
        return known
    return Verdict(Outcome.RETRY, f"unknown rsync exit status {status}")


def known_hosts_file(config: Config) -> str:
    """The known_hosts file ssh consults for this config (UserKnownHostsFile or ~/.ssh/known_hosts)."""
    words = list(config.ssh_options)
    for index, word in enumerate(words):
        text = word[2:] if word.startswith("-o") and len(word) > 2 else word
        key, separator, value = text.replace(" ", "=", 1).partition("=")
        if key.lower() == "userknownhostsfile" and separator:
            return value.split()[0]
        if word == "-o" and index + 1 < len(words) and words[index + 1].lower().startswith("userknownhostsfile"):
            return words[index + 1].replace(" ", "=", 1).partition("=")[2].split()[0]
    return os.path.expanduser("~/.ssh/known_hosts")


def explain(verdict: Verdict, config: Config) -> Verdict:
    """Fill in the names a person needs in a refusal's meaning and fix."""
    names = {"host": config.destination.host or "the destination", "known_hosts": known_hosts_file(config),
             "module": config.destination.module, "identity": config.ssh_identity_file or "your ssh key",
             "password_file": config.password_file or "password_file"}
    return dataclasses.replace(verdict, meaning=verdict.meaning.format(**names), fix=verdict.fix.format(**names))


def is_broken_delete_missing_args(status: int, stderr_tail: str) -> bool:
    """True for the rsync builds whose --delete-missing-args fails with --files-from."""
    return status == 2 and bool(_BROKEN_DELETE_MISSING_ARGS.search(stderr_tail))


def quote_for_rsync_shell(word: str) -> str:
    """Quote one word of the remote shell command for rsync's own splitter (no shell runs)."""
    if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    return "'" + word + "'"


def remote_shell_words(config: Config, control_path: str | None) -> list[str]:
    """The ssh command rsync runs for an ssh destination; never prompts."""
    words = ["ssh", "-o", "BatchMode=yes",
             "-o", f"StrictHostKeyChecking={'accept-new' if config.ssh_accept_new_host_key else 'yes'}",
             "-o", f"ConnectTimeout={max(1, int(config.io_timeout))}",
             "-o", "ServerAliveInterval=15"]
    if control_path:
        # One connection for all batches: a handshake per batch costs hundreds of ms.
        words += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}", "-o", "ControlPersist=300"]
    if config.ssh_port:
        words += ["-p", str(config.ssh_port)]
    if config.ssh_identity_file:
        words += ["-i", config.ssh_identity_file, "-o", "IdentitiesOnly=yes"]
    words += list(config.ssh_options)
    return words


def build_rsync_command(config: Config, mode: RunMode, *, control_path: str | None = None,
                        delete_missing_args: bool = True, kept_out: list[str] | None = None,
                        progress: bool = False, itemize: bool = False) -> list[str]:
    """argv for one rsync run; paths for every mode but FULL are read from stdin. ``kept_out``:
    directories (relative to the source) whose contents stay out (:func:`kept_out_rules`).
    ``progress``: rsync reports how far it is (``--info=progress2``, read by
    :mod:`pirsyncd.replica.progress`; run it with ``LC_ALL=C``). ``itemize``: rsync names each entry
    it creates, updates or deletes (:data:`pirsyncd.replica.itemize.OUT_FORMAT`, for on_sync).

    >>> build_rsync_command(config, RunMode.CHANGES)  # doctest: +SKIP
    ['rsync', '-a', '--stats', '--timeout=60', '-r', '--files-from=-', '--from0',
     '--ignore-times', '--delete', '--delete-missing-args', '--force', '/srv/www/', '/backup/www/']
    """
    argv = [config.rsync_binary, "-a", "--stats", f"--timeout={max(1, round(config.io_timeout))}"]
    if progress:
        argv.append("--info=progress2")
    if itemize:
        argv.append(OUT_FORMAT)
    if config.max_delete >= 0:
        argv.append(f"--max-delete={config.max_delete}")
    if config.partial:
        argv.append("--partial")
    if config.append_verify:
        argv.append("--append-verify")
    if config.max_size:
        argv.append(f"--max-size={config.max_size}")
    if config.min_size:
        argv.append(f"--min-size={config.min_size}")
    if config.one_file_system:
        argv.append("-x")
    argv += [f"--exclude={pattern}" for pattern in config.exclude]
    argv += kept_out_rules(kept_out or [])
    argv += list(config.rsync_flags)
    destination = config.destination
    if destination.kind == DestinationKind.SSH:
        argv.append("--rsh=" + " ".join(quote_for_rsync_shell(w) for w in remote_shell_words(config, control_path)))
    elif destination.kind == DestinationKind.DAEMON and config.password_file:
        argv.append(f"--password-file={config.password_file}")
    if mode == RunMode.FULL:
        argv += ["--delete", "--force"]
        if config.full_sync_checksum:
            argv.append("--checksum")
    elif mode == RunMode.DIRECTORIES:
        argv += ["--files-from=-", "--from0", "--ignore-missing-args"]
    elif mode == RunMode.DELETIONS:
        # "DIR/." with --dirs: DIR's own entries, one level, and --delete removes what DIR lost.
        argv += ["-d", "--files-from=-", "--from0", "--ignore-missing-args", "--delete", "--force"]
    else:
        # -a does not imply -r with --files-from; -r makes listed directories go whole.
        argv += ["-r", "--files-from=-", "--from0", "--delete", "--force"]
        if mode == RunMode.CHANGES:
            argv.append("--ignore-times")  # the paths changed: never trust size and mtime
            argv.append("--delete-missing-args" if delete_missing_args else "--ignore-missing-args")
        else:
            argv.append("--ignore-missing-args")  # a path gone since the plan is not an error
    argv += [config.source.rstrip("/") + "/", destination.rsync_target()]
    return argv


def build_dry_run_command(config: Config, kept_out: list[str] | None = None) -> list[str]:
    """argv of ``pirsyncd plan``: the full sync the daemon would run, with the same options and
    filters, as a dry run that itemizes each entry it would create, update or delete
    (:mod:`pirsyncd.replica.itemize`), with no ``--max-delete`` so that every deletion is counted.

    >>> build_dry_run_command(config)  # doctest: +SKIP
    ['rsync', '-a', '--stats', '--timeout=60', '--delete', '--force', '--dry-run', '--out-format=%i %n',
     '/srv/www/', '/backup/www/']
    """
    argv = build_rsync_command(config, RunMode.FULL, kept_out=kept_out)
    options = [word for word in argv[:-2] if not word.startswith("--max-delete=")]
    return [*options, "--dry-run", OUT_FORMAT, *argv[-2:]]


def kept_out_rules(directories: list[str]) -> list[str]:
    """rsync options that keep the contents of these directories (relative to the source) out
    of a run, the directories themselves in; wildcard characters in a path are escaped. ``**``,
    not ``*``: a path listed in ``--files-from`` is matched whole, its directories are not.

    >>> kept_out_rules(["root/sys", "odd[1]*"])
    ['--exclude=/odd\\\\[1\\\\]\\\\*/**', '--exclude=/root/sys/**']
    """
    return ["--exclude=/" + re.sub(r"([*?\[\]\\])", r"\\\1", path) + "/**" for path in sorted(directories)]


def build_listing_command(config: Config) -> list[str]:
    """argv that lists the destination's top level (to tell an empty one from a full one).

    >>> build_listing_command(config)  # doctest: +SKIP
    ['rsync', '-a', '--timeout=60', '--list-only', '--no-recursive', '--dirs', 'host:/srv/www/']
    """
    argv = build_rsync_command(config, RunMode.FULL)
    listing = [word for word in argv[:-2] if word not in ("--delete", "--force", "--stats")]
    return [*listing, "--list-only", "--no-recursive", "--dirs", argv[-1]]


def listing_shows_entries(status: int, output: bytes) -> bool:
    """Read a listing's result; any failure but 'not there yet' (23) counts as entries.

    >>> listing_shows_entries(0, b"drwxr-xr-x 4,096 2026/12/01 10:00:00 .\\n")
    False
    """
    if status != 0:
        return status != 23  # 23: the destination path does not exist yet
    return any(line.strip() and not line.endswith(b" .") for line in output.splitlines())


def build_probe_command(rsync_binary: str, scratch_source: str, scratch_target: str) -> list[str]:
    """argv of the probe: does this rsync delete missing --files-from entries?"""
    return [rsync_binary, "-a", "--files-from=-", "--from0", "--delete-missing-args", "--force",
            scratch_source + "/", scratch_target + "/"]


PROBE_INPUT = b"present\0ghost\0ghost-dir\0"


def build_remote_rename_command(config: Config, control_path: str | None) -> list[str]:
    """ssh argv that renames (old, new) pairs read NUL-separated from stdin at the destination.

    The remote command is a constant: the paths travel on stdin, never through a shell.
    """
    return [*remote_shell_words(config, control_path), "--", config.destination.login, "xargs -0 -r -n 2 mv -T --"]


def build_close_connection_command(config: Config, control_path: str) -> list[str]:
    """ssh argv that tells the shared connection's master to exit."""
    return [*remote_shell_words(config, control_path), "-O", "exit", "--", config.destination.login]


def encode_path_list(paths: list[str], escape_comments: bool = True) -> bytes:
    """NUL-terminated paths for --from0, in the file system's own encoding.

    rsync skips --files-from entries starting with '#' or ';' as comments, even with
    --from0, so those get a harmless './' in front.
    """
    prefixes = ("#", ";") if escape_comments else ()
    return b"".join((b"./" if path.startswith(prefixes) else b"") + os.fsencode(path) + b"\0" for path in paths)


def deletion_entries(directories: list[str]) -> list[str]:
    """File-list entries for a DELETIONS run: each directory's own entries.

    >>> deletion_entries([".", "a/b"])
    ['.', 'a/b/.']
    """
    return ["." if directory in ("", ".") else f"{directory}/." for directory in directories]


@dataclasses.dataclass(frozen=True)
class RunErrors:
    """What rsync's error lines say about one run (see :func:`analyse_errors`).

    ``failed`` maps source-relative paths rsync could not read or send to the reason
    ("vanished" for a path that went away or changed type while rsync ran);
    ``destination_trouble`` is any error that is not about one source path (the receiving
    side, the connection, a line we cannot read); ``deletions_skipped`` means rsync saw an
    I/O error on the sending side and skipped every deletion of the run.
    """

    failed: dict[str, str]
    destination_trouble: bool
    deletions_skipped: bool


_SENDER_ERROR = re.compile(r'^rsync: \[sender\] (?:[^"]*)"(?P<path>.*)"(?: failed)?: (?P<reason>[^()]*) \(\d+\)$')
_VANISHED = re.compile(r'^file has vanished: "(?P<path>.*)"$')
# A file that changed while rsync read it ("read errors mapping", then this): a source path.
_DISCARDED = re.compile(r"^(?:WARNING|ERROR): (?P<path>.*) failed verification -- update (?:discarded|retained)")
# Reasons that mean the path changed type or went away while rsync ran: its events are queued.
_CHANGED_UNDER_US = ("No such file or directory", "Not a directory", "Is a directory")
_DELETIONS_SKIPPED = "IO error encountered -- skipping file deletion"
_HARMLESS = ("rsync error: some files/attrs were not transferred", "rsync error: some files vanished",
             "rsync warning: some files vanished")


def _unescape(text: str) -> str:
    """rsync prints unprintable bytes of a name as \\#ooo (octal)."""
    raw = os.fsencode(text)
    return os.fsdecode(re.sub(rb"\\#([0-7]{3})", lambda match: bytes([int(match[1], 8)]), raw))


def analyse_errors(stderr: str, source: str, stdout: str = "") -> RunErrors:
    """Sort rsync's error lines into failed source paths and everything else.

    >>> errors = analyse_errors('rsync: [sender] send_files failed to open "/srv/www/a b": '
    ...                         'Permission denied (13)', "/srv/www")
    >>> errors.failed, errors.destination_trouble
    ({'a b': 'Permission denied'}, False)
    """
    prefix = source.rstrip("/") + "/"
    failed: dict[str, str] = {}
    trouble = skipped = False
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith(_HARMLESS):
            continue
        if line.startswith(_DELETIONS_SKIPPED):
            skipped = True
            continue
        match = _SENDER_ERROR.match(line)
        discarded = _DISCARDED.match(line) if match is None else None
        if discarded is not None:
            failed.setdefault(_unescape(discarded["path"]), "vanished")
            continue
        if match is None:
            match = _VANISHED.match(line)
            if match is not None:
                path = _unescape(match["path"])
                failed.setdefault(path[len(prefix):] if path.startswith(prefix) else path, "vanished")
                continue
            trouble = True
            continue
        path = _unescape(match["path"])
        if path.startswith(prefix):
            relative = path[len(prefix):].rstrip("/")
            if relative.endswith("/."):
                relative = relative[:-2]
            reason = match["reason"].strip()
            failed[relative or "."] = "vanished" if reason in _CHANGED_UNDER_US else reason
        elif path.rstrip("/") == source.rstrip("/"):
            failed["."] = match["reason"].strip()
        else:
            trouble = True
    # rsync says it on stdout (an informational message), not stderr.
    return RunErrors(failed, trouble, skipped or _DELETIONS_SKIPPED in stdout)


_STAT_LINES = {
    "Total bytes sent": "bytes_sent",
    "Number of regular files transferred": "files_transferred",
    "Number of deleted files": "files_deleted",
    "Number of files": "files",
    "Number of created files": "files_created",
    "Total transferred file size": "transferred_size",
}


def parse_stats(output: str) -> dict[str, int]:
    """Pick the figures pirsyncd reports from rsync --stats output."""
    figures: dict[str, int] = {}
    for line in output.splitlines():
        label, _, value = line.partition(":")
        key = _STAT_LINES.get(label.strip())
        if key:
            number = value.strip().split(" ", 1)[0].replace(",", "")
            if number.isdigit():
                figures[key] = int(number)
    return figures
