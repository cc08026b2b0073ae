"""rsync command lines and the meaning of rsync's exit statuses (pure).

Paths never appear in argv: they go NUL-separated on stdin (``--files-from=- --from0``),
so a file named ``-e sh`` or containing a newline is a file, never an option.
"""

from __future__ import annotations

import dataclasses
import os
import re

from pirsyncd.config import Config
from pirsyncd.destination import DAEMON, SSH

FULL = "full"  # everything: -a --delete SRC/ DST/
CHANGES = "changes"  # listed files, removed paths and new directories, compared byte for byte
VERIFY = "verify"  # listed directories, recursively, with rsync's quick check
DIRECTORIES = "directories"  # listed directories' own metadata, not their contents

# Outcomes of one run.
OK = "ok"
VANISHED = "vanished"  # files vanished while rsync ran: their events follow, send again
PARTIAL = "partial"  # some files failed: keep them, retry with backoff
RETRY = "retry"  # destination or transfer trouble: keep everything, retry with backoff
DELETE_LIMIT = "delete-limit"  # max_delete stopped deletions: keep them, retry with backoff
FATAL = "fatal"  # retrying cannot help: a user must fix something


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str
    meaning: str
    fix: str = ""


# rsync(1) EXIT VALUES, one row each; anything else is RETRY, logged loudly.
EXIT_STATUSES: dict[int, Verdict] = {
    0: Verdict(OK, "success"),
    1: Verdict(FATAL, "syntax or usage error", "check rsync_flags and the rsync version"),
    2: Verdict(FATAL, "protocol incompatibility", "install a compatible rsync at the destination"),
    3: Verdict(RETRY, "errors selecting input/output files or directories"),
    4: Verdict(FATAL, "requested action not supported", "remove the unsupported option from rsync_flags"),
    5: Verdict(RETRY, "error starting client-server protocol"),
    6: Verdict(RETRY, "daemon unable to append to log-file"),
    10: Verdict(RETRY, "error in socket I/O"),
    11: Verdict(RETRY, "error in file I/O"),
    12: Verdict(RETRY, "error in rsync protocol data stream"),
    13: Verdict(RETRY, "errors with program diagnostics"),
    14: Verdict(RETRY, "error in IPC code"),
    19: Verdict(RETRY, "received SIGUSR1"),
    20: Verdict(RETRY, "received SIGUSR1 or SIGINT, or was stopped"),
    21: Verdict(RETRY, "some error returned by waitpid()"),
    22: Verdict(RETRY, "error allocating core memory buffers"),
    23: Verdict(PARTIAL, "partial transfer due to error"),
    24: Verdict(VANISHED, "partial transfer due to vanished source files"),
    25: Verdict(DELETE_LIMIT, "the max_delete limit stopped deletions",
                "check the source; raise max_delete if the deletions are intended"),
    30: Verdict(RETRY, "timeout in data send/receive"),
    35: Verdict(RETRY, "timeout waiting for daemon connection"),
    127: Verdict(FATAL, "rsync could not be run", "install rsync or fix rsync_binary"),
    255: Verdict(RETRY, "ssh connection failed"),
}

# stderr texts that mean the destination refused us: retrying cannot fix them.
_AUTH_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Host key verification failed|No .* host key is known"),
     "the destination's ssh host key is not known: add it to known_hosts "
     "(ssh-keyscan HOST >> KNOWN_HOSTS) or set ssh_accept_new_host_key = yes"),
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED"),
     "the destination's ssh host key changed: check the host, then fix known_hosts"),
    (re.compile(r"Permission denied \((publickey|password|keyboard)"),
     "ssh refused the key: put the public key of ssh_identity_file in the destination's authorized_keys"),
    (re.compile(r"@ERROR: auth failed"),
     "the rsync daemon refused the password: fix password_file or the user in the destination"),
    (re.compile(r"@ERROR: Unknown module"),
     "the rsync daemon has no such module: fix the module name in the destination"),
    (re.compile(r"@ERROR: access denied"),
     "the rsync daemon denies this host: fix 'hosts allow' in rsyncd.conf"),
    (re.compile(r"password file must not be other-accessible|could not open password file"),
     "password_file must exist and not be readable by others: chmod 600 it"),
)

_BROKEN_DELETE_MISSING_ARGS = re.compile(r"invalid file mode 0+ for")


def classify_exit_status(status: int, stderr_tail: str = "") -> Verdict:
    """Map rsync's exit status (negative: killed by that signal) to what to do next.

    >>> classify_exit_status(23).outcome
    'partial'
    """
    for pattern, fix in _AUTH_FAILURES:
        if status != 0 and pattern.search(stderr_tail):
            return Verdict(FATAL, "the destination refused the connection", fix)
    if status < 0:
        return Verdict(RETRY, f"rsync was killed by signal {-status}")
    known = EXIT_STATUSES.get(status)
    if known is not None:
        return known
    return Verdict(RETRY, f"unknown rsync exit status {status}")


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


def build_rsync_command(config: Config, mode: str, *, control_path: str | None = None,
                        delete_missing_args: bool = True) -> list[str]:
    """argv for one rsync run; paths for CHANGES and VERIFY are read from stdin.

    >>> build_rsync_command(config, CHANGES)  # doctest: +SKIP
    ['rsync', '-a', '--stats', '--timeout=60', '-r', '--files-from=-', '--from0',
     '--ignore-times', '--delete', '--delete-missing-args', '--force', '/srv/www/', '/backup/www/']
    """
    argv = [config.rsync_binary, "-a", "--stats", f"--timeout={max(1, round(config.io_timeout))}"]
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
    argv += [f"--exclude={pattern}" for pattern in config.exclude]
    argv += list(config.rsync_flags)
    destination = config.destination
    if destination.kind == SSH:
        argv.append("--rsh=" + " ".join(quote_for_rsync_shell(w) for w in remote_shell_words(config, control_path)))
    elif destination.kind == DAEMON and config.password_file:
        argv.append(f"--password-file={config.password_file}")
    if mode == FULL:
        argv += ["--delete", "--force"]
        if config.full_sync_checksum:
            argv.append("--checksum")
    elif mode == DIRECTORIES:
        argv += ["--files-from=-", "--from0", "--ignore-missing-args"]
    else:
        # -a does not imply -r with --files-from; -r makes listed directories go whole.
        argv += ["-r", "--files-from=-", "--from0", "--delete", "--force"]
        if mode == CHANGES:
            argv.append("--ignore-times")  # the paths changed: never trust size and mtime
            argv.append("--delete-missing-args" if delete_missing_args else "--ignore-missing-args")
    argv += [config.source.rstrip("/") + "/", destination.rsync_target()]
    return argv


def encode_path_list(paths: list[str]) -> bytes:
    """NUL-terminated paths for --from0, in the file system's own encoding."""
    return b"".join(os.fsencode(path) + b"\0" for path in paths)


_STAT_LINES = {
    "Total bytes sent": "bytes_sent",
    "Number of regular files transferred": "files_transferred",
    "Number of deleted files": "files_deleted",
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
