"""What the instance asks of the loop that drives it (pirsyncd.service.Service), so that
the instance needs no import of the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pirsyncd.edges.runner import Child, ChildResult


class Loop(Protocol):
    def watch_readable(self, fileobj: Any, callback: Callable[[], object]) -> None: ...
    def forget(self, fileobj: Any) -> None: ...
    def watch_child(self, child: Child, on_exit: Callable[[ChildResult], None]) -> None: ...
