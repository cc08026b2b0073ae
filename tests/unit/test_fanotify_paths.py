"""The handle cache of the fanotify path resolver against a plain model: the same answers
after any sequence of lookups, renames and deletions (the resolver keeps a tree of paths so
that a deletion costs its subtree, not a scan of the cache)."""

from __future__ import annotations

import random

import pytest

from pirsyncd.source.fanotify_events import FileHandle, Gone
from pirsyncd.source.fanotify_paths import HandleResolver


class Model:
    """What the resolver must answer, by scanning every cached answer."""

    def __init__(self) -> None:
        self.cache: dict[FileHandle, str | Gone] = {}

    def below(self, path: str, known: str | Gone) -> bool:
        prefix = path.rstrip("/") + "/"
        return isinstance(known, str) and (known == path or known.startswith(prefix))

    def answered_below(self, path: str) -> bool:
        return any(self.below(path, known) for known in self.cache.values())

    def forget_below(self, path: str) -> None:
        self.cache = {handle: known for handle, known in self.cache.items() if not self.below(path, known)}


def random_path(chooser: random.Random) -> str:
    return "/" + "/".join(chooser.choice("abc") for _ in range(chooser.randint(1, 4)))


@pytest.mark.parametrize("seed", range(40))
def test_the_resolver_answers_as_a_scan_of_its_cache_would(seed: int) -> None:
    chooser = random.Random(seed)
    world: dict[FileHandle, str | Gone] = {}  # where each handle is (or Gone), as the kernel would say
    resolver, model = HandleResolver(lambda handle: world[handle]), Model()
    for _ in range(300):
        action = chooser.random()
        path = random_path(chooser)
        if action < 0.5:
            handle = FileHandle(b"fs", 1, bytes([chooser.randrange(40)]))
            world.setdefault(handle, Gone("stale") if chooser.random() < 0.1 else path)
            found = resolver.resolve(handle)
            assert found == model.cache.setdefault(handle, world[handle])
        elif action < 0.75:
            assert resolver.answered_below(path) == model.answered_below(path), path
        else:
            resolver.forget_below(path)
            model.forget_below(path)
            for handle, known in list(world.items()):  # what was below has moved on
                if model.below(path, known):
                    world[handle] = random_path(chooser)
        assert resolver.cache == model.cache
    assert resolver.answered_below("/") == model.answered_below("/")
