"""The privilege a fanotify filesystem mark needs, given up once the mark is placed.

Placing a filesystem mark needs CAP_SYS_ADMIN at that moment only; the mark then reports
events for as long as its group is open. Making the events' directory handles into paths
(``open_by_handle_at``) needs CAP_DAC_READ_SEARCH for as long as the worker runs. So a worker
that was *granted* CAP_SYS_ADMIN for the mark (the shipped drop-in
``systemd/fanotify.conf.example`` gives the pirsyncd user CAP_SYS_ADMIN, CAP_SETPCAP and
CAP_DAC_READ_SEARCH as ambient capabilities) gives up CAP_SYS_ADMIN and CAP_SETPCAP right
after placing it (:func:`give_up_mark_privilege`), and keeps CAP_DAC_READ_SEARCH alone, as
under the default unit:

- the effective, permitted and inheritable sets in one ``capset`` (python-prctl's
  ``set_caps``); the kernel lowers the ambient set with them (a capability is ambient only
  while permitted and inheritable: capabilities(7)), which python-prctl 1.8.1 has no call for;
- the bounding set (``PR_CAPBSET_DROP``, python-prctl's ``capbset.drop``) while CAP_SETPCAP is
  still effective: that is what it is granted for. Without it the bounding set keeps the bit,
  which NoNewPrivileges= (the unit's) makes inert: no execve can raise a capability again.

Who gives it up: a worker not running as root. Root's power does not come from a grant for
the mark (run by hand, or with the preserve-ownership drop-in), so a worker running as root
keeps it and places a new mark itself when the source's file system is mounted again; a
worker that gave it up cannot (:class:`NewMarkNeeded`: it exits, and systemd starts it again
with the drop-in's capabilities).

The sets of any process are read from ``/proc/PID/status`` (:func:`parse_capabilities`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from pirsyncd.config import exitcodes
from pirsyncd.source.identity import SourceProblem

log = logging.getLogger("pirsyncd")

# Bit numbers (linux/capability.h).
CAP_DAC_READ_SEARCH = 2
CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
# Granted for the mark only: given up once it is placed.
FOR_THE_MARK = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_SETPCAP: "CAP_SETPCAP"}
SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """A process's capability sets as bit masks, by their /proc/PID/status names."""

    inheritable: int
    permitted: int
    effective: int
    bounding: int
    ambient: int

    def holding(self, bit: int) -> list[str]:
        """The names of the sets that hold capability ``bit``.

        >>> Capabilities(0, 1 << 21, 1 << 21, ~0, 0).holding(CAP_SYS_ADMIN)
        ['CapPrm', 'CapEff', 'CapBnd']
        """
        masks = (self.inheritable, self.permitted, self.effective, self.bounding, self.ambient)
        return [name for name, mask in zip(SETS, masks, strict=True) if mask >> bit & 1]


def parse_capabilities(status: str) -> Capabilities:
    """The capability sets in the text of /proc/PID/status.

    >>> text = ("Name:\\tpirsyncd\\nCapInh:\\t0000000000200004\\nCapPrm:\\t0000000000200004\\n"
    ...         "CapEff:\\t0000000000200004\\nCapBnd:\\t0000000000200004\\nCapAmb:\\t0000000000000004\\n")
    >>> parse_capabilities(text).holding(CAP_SYS_ADMIN)
    ['CapInh', 'CapPrm', 'CapEff', 'CapBnd']
    """
    found = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in SETS:
            found[name] = int(value.strip(), 16)
    return Capabilities(*(found.get(name, 0) for name in SETS))


def read_capabilities(pid: int | str = "self") -> Capabilities:
    """The capability sets of process ``pid`` now (OSError when it cannot be read)."""
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as status:
        return parse_capabilities(status.read())


def granted_for_the_mark(capabilities: Capabilities, uid: int) -> bool:
    """Whether a process of user ``uid`` holding ``capabilities`` gives up CAP_SYS_ADMIN once
    the mark is placed: it is not root and holds it (it was granted, for the mark).

    >>> granted_for_the_mark(Capabilities(1 << 21, 1 << 21, 1 << 21, 1 << 21, 1 << 21), uid=998)
    True
    >>> granted_for_the_mark(Capabilities(0, ~0, ~0, ~0, 0), uid=0)
    False
    """
    return uid != 0 and bool(capabilities.permitted >> CAP_SYS_ADMIN & 1)


def give_up_mark_privilege() -> bool:
    """Give up CAP_SYS_ADMIN and CAP_SETPCAP in every set, if this process was granted them for
    the mark (:func:`granted_for_the_mark`); True when it did. Logs one line saying what it
    kept; a warning when python-prctl is missing (the worker then keeps them)."""
    held = read_capabilities()
    if not granted_for_the_mark(held, os.geteuid()):
        return False
    try:
        import prctl  # python3-prctl: only a worker granted the mark's privilege needs it
    except ImportError:
        log.warning("the fanotify mark is placed, but CAP_SYS_ADMIN cannot be given up: python-prctl is not "
                    "installed (install python3-prctl); the worker keeps it")
        return False
    bits = [bit for bit in FOR_THE_MARK if held.permitted >> bit & 1]
    if held.effective >> CAP_SETPCAP & 1:
        prctl.capbset.drop(*(bit for bit in FOR_THE_MARK if held.bounding >> bit & 1))
    prctl.set_caps((bits, [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED, prctl.CAP_INHERITABLE], False))
    left = read_capabilities()
    still = [f"{FOR_THE_MARK[bit]} in {'/'.join(left.holding(bit))}" for bit in FOR_THE_MARK if left.holding(bit)]
    log.info("the fanotify mark is placed: gave up %s (kept CAP_DAC_READ_SEARCH, to make handles into paths)%s",
             " and ".join(FOR_THE_MARK[bit] for bit in bits),
             f"; left in the bounding set, inert under NoNewPrivileges: {', '.join(still)}" if still else "")
    return True


class NewMarkNeeded(SourceProblem):
    """The source is on a file system the fanotify mark no longer covers (unmounted and mounted
    again, or another one), and this worker gave up the privilege to place a new one: exit
    with :data:`exitcodes.NEW_MARK`, so that systemd starts it again with the drop-in's
    capabilities (the start's full sync catches up)."""

    def __init__(self, source: str) -> None:
        super().__init__(f"the source {source} is back on a file system the fanotify mark does not cover (mounted "
                         "again?), and this worker gave up CAP_SYS_ADMIN after placing its mark: exiting so that "
                         "it is started again (systemd's Restart=on-failure does) to place a new one",
                         exitcodes.NEW_MARK)
