"""The replicas of one configuration, one per destination: made at start, and matched
to the new configuration on a reload (a destination that stays keeps its replica, its
pending changes and its state)."""

from __future__ import annotations

from collections.abc import Sequence

from pirsyncd.config.parse import Config
from pirsyncd.replica.replica import Replica
from pirsyncd.replica.runlog import RsyncOutputLog


def make_replicas(config: Config, rsync_output: RsyncOutputLog, keep: Sequence[Replica] = (),
                  now: float = 0.0, old: Config | None = None) -> list[Replica]:
    """One replica per destination; on a reload (from ``old``), those that stay keep their
    state, and those with another source, destination or excludes run a full sync."""
    known = {replica.name: replica for replica in keep}
    configs = config.per_destination()
    replicas = []
    for each in configs:
        replica = known.pop(each.destination_name, None)
        if replica is None:
            replica = Replica(each, rsync_output, each.destination_name)
        else:
            was = replica.config
            replica.reconfigure(each)
        if old is not None and (replica not in keep or old.mirror_key(was) != config.mirror_key(each)):
            replica.request_full_sync(now, at_once=True, reason="reload")
        replica.prefix = f"{each.destination_name}: " if len(configs) > 1 else ""
        replicas.append(replica)
    for gone in known.values():
        gone.stop_job("destination removed", now)
        gone.deletion.close_probe()
    return replicas
