"""What one sync sends (a Batch, taken from the pending set), and the renames it replays."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Move:
    """A rename seen at the source, to replay at the destination when it can."""

    old_path: str
    new_path: str
    is_dir: bool


@dataclasses.dataclass
class Batch:
    """What one sync sends. ``full`` means: ignore the lists, sync everything."""

    full: bool = False
    changed: list[str] = dataclasses.field(default_factory=list)  # content or metadata changed
    removed: list[str] = dataclasses.field(default_factory=list)  # gone from the source
    new_dirs: list[str] = dataclasses.field(default_factory=list)  # sent whole, recursively
    moves: list[Move] = dataclasses.field(default_factory=list)
    moved_paths: list[str] = dataclasses.field(default_factory=list)  # to verify after renaming
    directories: list[str] = dataclasses.field(default_factory=list)  # metadata changed: quick check
    entries: list[str] = dataclasses.field(default_factory=list)  # directories whose own entries to check
    change_seq: int = 0
    first_change_at: float | None = None  # when its oldest change was read (clock of the pending set)

    @property
    def path_count(self) -> int:
        return (len(self.changed) + len(self.removed) + len(self.new_dirs) + len(self.moved_paths)
                + len(self.directories) + len(self.entries))

    def covered_paths(self) -> list[str]:
        """The paths the batch sends whole (with what lies below them) or deletes; '.' for a
        full sync. Not ``directories``: only their own metadata is sent."""
        if self.full:
            return ["."]
        return [*self.changed, *self.removed, *self.new_dirs, *self.moved_paths,
                *(move.new_path for move in self.moves)]
