"""Destination strings, parsed the way rsync reads them.

>>> parse_destination("/var/backups/www").kind
<DestinationKind.LOCAL: 'local'>
>>> parse_destination("backup@mirror.example:/srv/www").kind
<DestinationKind.SSH: 'ssh'>
>>> parse_destination("rsync://backup@mirror.example:8730/www/site").module
'www'
"""

from __future__ import annotations

import dataclasses
import enum
import re


class DestinationKind(enum.Enum):
    LOCAL = "local"
    SSH = "ssh"
    DAEMON = "daemon"


_URL = re.compile(r"^rsync://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)(?::(?P<port>\d+))?/(?P<rest>.*)$")
_DOUBLE_COLON = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/]+)::(?P<rest>.*)$")
_SSH = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/]+):(?P<path>.*)$")


class DestinationError(ValueError):
    """A destination string that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where to mirror to, as parsed from its text: a local path, ``[user@]host:path`` over ssh,
    or an rsync daemon's module (``host::module/path`` or ``rsync://``)."""

    kind: DestinationKind
    text: str
    path: str  # local path, remote path, or path inside the daemon module
    host: str = ""
    user: str = ""
    port: int | None = None
    module: str = ""

    @property
    def login(self) -> str:
        """'user@host', or 'host' when no user is named."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def rsync_target(self) -> str:
        """The destination argument for rsync, always ending in '/' (copy contents)."""
        if self.kind == DestinationKind.LOCAL:
            return self.path.rstrip("/") + "/"
        if self.kind == DestinationKind.SSH:
            return f"{self.login}:{self.path.rstrip('/')}/"
        port = f":{self.port}" if self.port else ""
        inner = f"{self.module}/{self.path.strip('/')}".rstrip("/")
        return f"rsync://{self.login}{port}/{inner}/"


def parse_destination(text: str) -> Destination:
    """Parse a destination string or raise DestinationError."""
    if not text or text != text.strip():
        raise DestinationError("is empty or has leading or trailing spaces")
    match = _URL.match(text)
    if match:
        module, _, path = match["rest"].partition("/")
        if not module:
            raise DestinationError("names no module (rsync://host/MODULE/path)")
        return Destination(DestinationKind.DAEMON, text, path, match["host"], match["user"] or "",
                           int(match["port"]) if match["port"] else None, module)
    if text.startswith("rsync://"):
        raise DestinationError("is not a valid rsync:// URL (rsync://[user@]host[:port]/module/path)")
    match = _DOUBLE_COLON.match(text)
    if match:
        module, _, path = match["rest"].partition("/")
        if not module:
            raise DestinationError("names no module (host::MODULE/path)")
        return Destination(DestinationKind.DAEMON, text, path, match["host"], match["user"] or "", None, module)
    match = _SSH.match(text)
    if match and not text.startswith("/"):
        if not match["path"]:
            raise DestinationError("names no remote path (host:/path)")
        return Destination(DestinationKind.SSH, text, match["path"], match["host"], match["user"] or "")
    if not text.startswith("/"):
        raise DestinationError("is a relative path; give an absolute path")
    return Destination(DestinationKind.LOCAL, text, text.rstrip("/") or "/")
