"""The worker's capacity and how it reads its streams.

**One owner of capacity.** :class:`Capacity` holds the worker's ``concurrency`` slots.
A read takes slots before it may deliver entries (a blocked XREADGROUP holds them while
it blocks), the reclaimer takes them before it claims, and each entry keeps its slot
until its outcome is written (the settler's flush), so the entries in this consumer's
pending list never outnumber ``concurrency``.

**Fetch groups.** A blocking read over several streams must stay in one hash slot on a
cluster, so the worker's streams are grouped by slot (one server: one group of all) and
each group has a reader of its own. A reader that may claim an entry of every stream of
its group at once (free slots >= streams) blocks in one XREADGROUP, as a one-type worker
always does. With fewer free slots than streams it never blocks in XREADGROUP (each
stream could deliver an entry, more than it may hold): it waits in an XREAD over *every*
stream of its group from the position up to which each stream is known to be delivered
(:class:`ReadState`), which claims nothing, then claims from the streams that woke it
with a non-blocking XREADGROUP sized to its free slots. A job in any type wakes the
reader at once, whatever the number of types and the concurrency.

**Priority levels.** A type's ``high`` and ``low`` jobs wait in streams of their own, in
the type's slot (``TypeKeys.level``), read once they exist. A type with more than one such
stream is read level by level: each claim takes from its first level that may hold
entries (:func:`first_levels`), and looks at the top of the levels above it in the same
round trip (:meth:`ReadState.watched`), so a job of a higher level is claimed next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from redis.crc import key_slot

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streamjobs.keys import TypeKeys


class Capacity:
    """A worker's slots: taken before a read or a reclaim, given back per entry settled
    and for what a read did not use. FIFO: no taker waits behind a faster one forever."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = anyio.Lock()
        self._freed = anyio.Event()

    @property
    def free(self) -> int:
        return self.total - self.used

    async def take(self, want: int) -> int:
        """Wait for a free slot, then take up to ``want`` (>= 1) of the free ones."""
        async with self._lock:
            while self.used >= self.total:
                self._freed = anyio.Event()
                await self._freed.wait()
            n = min(want, self.total - self.used)
            self.used += n
            return n

    def give(self, n: int = 1) -> None:
        if n > 0:
            self.used -= n
            self._freed.set()


def fetch_groups(keys: Mapping[str, TypeKeys], cluster: bool) -> list[list[str]]:
    """The worker's tags grouped so each group is read by one command: by hash slot on a
    cluster, all together on one server."""
    if not cluster:
        return [list(keys)]
    by_slot: dict[int, list[str]] = {}
    for tag, tk in keys.items():
        by_slot.setdefault(key_slot(tk.stream.encode()), []).append(tag)
    return list(by_slot.values())


@dataclass
class ReadState:
    """What a reader knows of its streams: ``ready`` ones may hold undelivered entries
    (never looked at, woken, or last read in full); every other stream is delivered up to
    ``after[tag]`` (all its entries up to that id were delivered to some consumer), so an
    XREAD from there wakes on anything new. An older position is never wrong, only
    slower (a wake for entries another worker took)."""

    tags: list[str]
    ready: set[str] = field(default_factory=set)
    after: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Look at every stream again (after an error or a recreated group: what was
        delivered may be undelivered now, on a new primary or a new group)."""
        self.ready = set(self.tags)

    def rotate(self, n: int) -> None:
        """The next claim starts after the streams just read: no stream starves."""
        n %= max(1, len(self.tags))
        self.tags = self.tags[n:] + self.tags[:n]

    def read(self, tag: str, top: str | None, last: str | None, full: bool) -> None:
        """A claim of ``tag`` returned ``last`` (its last entry id, if any) and ``full``
        (as many entries as asked: more may wait). ``top`` was the stream's last id just
        before the claim (None: empty)."""
        if full:
            self.ready.add(tag)
            return
        self.ready.discard(tag)
        self.after[tag] = max((i for i in (top, last, self.after.get(tag)) if i),
                              key=_id_key, default="0-0")

    def woke(self, tags: Iterable[str]) -> None:
        self.ready.update(tags)

    def watched(self, tags: Iterable[str], tops: Iterable[str | None]) -> None:
        """The last ids of streams not claimed from: one with entries past its delivered
        position is ready again."""
        for tag, top in zip(tags, tops, strict=True):
            seen = self.after.get(tag)
            if top is not None and (seen is None or _id_key(top) > _id_key(seen)):
                self.ready.add(tag)


def by_level(keys: Mapping[str, TypeKeys], names: Iterable[str]) -> dict[str, list[str]]:
    """The types (by hash tag) read at more than one priority level among ``names``:
    their streams' names, the first read first. Empty when no type is."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(keys[name].tag, []).append(name)
    return {tag: sorted(ns, key=lambda n: keys[n].level.rank)
            for tag, ns in out.items() if len(ns) > 1}


def first_levels(keys: Mapping[str, TypeKeys], ready: list[str]) -> list[str]:
    """``ready`` with only the first level of each type (order kept)."""
    best: dict[str, int] = {}
    for name in ready:
        tk = keys[name]
        best[tk.tag] = min(best.get(tk.tag, 9), tk.level.rank)
    return [n for n in ready if keys[n].level.rank == best[keys[n].tag]]


def above(keys: Mapping[str, TypeKeys], chosen: Iterable[str],
          levels: Mapping[str, list[str]]) -> list[str]:
    """The streams of higher levels than those ``chosen`` of their types."""
    out: list[str] = []
    for name in chosen:
        tk = keys[name]
        out += [n for n in levels.get(tk.tag, ()) if keys[n].level.rank < tk.level.rank]
    return out


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
