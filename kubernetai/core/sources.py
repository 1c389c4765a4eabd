"""The generations of what answers are read from, as integers in one array.

A kept answer (the answer cache, a stanza's memo, the ``cache`` plugin) is dropped when
something it was read from changes. It remembers what it read as ``(slot, generation)``
pairs of integers, and holds while ``GENERATIONS[slot] == generation`` for each.

Why integers rather than the objects that change: a tuple holding only integers, floats
and bytes is untracked by Python's cyclic garbage collector after the first collection
that sees it, so the many answers kept in the caches are not walked by each full
collection. Kept as references to objects, every cached name held about ten tracked
objects, and a full collection over 10,000 cached names stopped the reactor for
40-60 ms.

Two ways to own slots:

* :class:`Source` owns one for its life (a cluster's "anything changed", its SOA serial,
  a hosts file);
* :class:`KeySlots` hands slots out to keys (a service's name, an IP) from a bounded ring:
  a key keeps its slot until the ring comes round to it again, so memory stays bounded
  however many names clients ask, and a key that loses its slot drops the answers that
  depended on it (they are built again when asked).

A slot's generation moves before each new owner gets it, so a pair recorded under its
former owner never matches again; generations only grow. Slots of an owner that is
gone go back to a free list. Generations move on the reactor thread only; slots are
taken under a lock (a reload makes its sources on another thread).
"""

from __future__ import annotations

import threading
import weakref
from array import array
from collections.abc import Collection, Hashable, Iterable

__all__ = ["GENERATIONS", "Deps", "KeySlots", "Source", "changed"]

#: slot -> generation.
GENERATIONS = array("Q")

#: What a kept answer read: ``(slot, generation)`` pairs.
Deps = tuple[tuple[int, int], ...]

_free: list[int] = []
# A reload builds its sources on another thread while the reactor hands slots to keys.
_taking = threading.Lock()


def _take() -> int:
    """A slot no one owns, its generation moved past any pair recorded for it before."""
    with _taking:
        if _free:
            slot = _free.pop()
        else:
            slot = len(GENERATIONS)
            GENERATIONS.append(0)
        GENERATIONS[slot] += 1
    return slot


def _give_back(slots: list[int]) -> None:
    _free.extend(slots)


def changed(deps: Iterable[tuple[int, int]]) -> bool:
    """True if any of ``deps`` moved on (the check every cache hit makes, inlined there)."""
    generations = GENERATIONS
    return any(generations[slot] != generation for slot, generation in deps)


class Source:
    """One slot for the life of the object: a thing that changes as a whole."""

    __slots__ = ("slot", "__weakref__")

    def __init__(self) -> None:
        self.slot = _take()
        weakref.finalize(self, _give_back, [self.slot])

    @property
    def generation(self) -> int:
        return GENERATIONS[self.slot]

    def bump(self) -> None:
        GENERATIONS[self.slot] += 1

    def dep(self) -> tuple[int, int]:
        slot = self.slot
        return (slot, GENERATIONS[slot])


class KeySlots:
    """Slots for keys, at most ``size`` of them: a ring, the oldest key giving up its
    slot to a new one once it is full."""

    __slots__ = ("size", "_slots", "_keys", "_owned", "_next", "__weakref__")

    def __init__(self, size: int = 65_536) -> None:
        self.size = size
        self._slots: dict[Hashable, int] = {}   # key -> its slot
        self._keys: list[Hashable] = []          # ring position -> key
        self._owned: list[int] = []              # ring position -> slot
        self._next = 0
        weakref.finalize(self, _give_back, self._owned)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slots

    def items(self) -> Iterable[tuple[Hashable, int]]:
        """The keys that hold a slot, with it (for inspection)."""
        return list(self._slots.items())

    def slot(self, key: Hashable) -> int:
        """The slot of ``key``, given one if it has none."""
        found = self._slots.get(key)
        if found is not None:
            return found
        keys = self._keys
        if len(keys) < self.size:
            slot = _take()
            keys.append(key)
            self._owned.append(slot)
        else:
            at = self._next
            self._next = at + 1 if at + 1 < self.size else 0
            del self._slots[keys[at]]
            keys[at] = key
            slot = self._owned[at]
            GENERATIONS[slot] += 1
        self._slots[key] = slot
        return slot

    def dep(self, key: Hashable) -> tuple[int, int]:
        slot = self.slot(key)
        return (slot, GENERATIONS[slot])

    def touch(self, key: Hashable) -> None:
        """``key`` changed: what read it no longer holds (a key with no slot has nothing
        depending on it)."""
        slot = self._slots.get(key)
        if slot is not None:
            GENERATIONS[slot] += 1

    def touch_all(self, keys: Collection[Hashable]) -> None:
        """:meth:`touch` each of ``keys``, walking whichever side is smaller."""
        slots = self._slots
        if len(slots) < len(keys):
            for key, slot in slots.items():
                if key in keys:
                    GENERATIONS[slot] += 1
        else:
            for key in keys:
                found = slots.get(key)
                if found is not None:
                    GENERATIONS[found] += 1
