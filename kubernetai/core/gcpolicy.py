"""Keeping the cyclic garbage collector away from the long-lived cluster state.

A cluster's view is hundreds of thousands of small objects (services, slices, pods and
their indexes) that live until the next change of each. CPython's collector walks every
tracked object of the generations it collects, and a full collection walks all of them
that are not frozen: about 80 ns an object here, so with 100,000 pods' worth of objects
(and the JSON they were parsed from) in the generations, each full collection stalls the
reactor (every thread: it holds the GIL) for 100-200 ms, and a start-up sync at that
scale triggered a dozen of them. What this module does about it, and why:

* **freeze after each bulk install** (:func:`settled`): after the first list or a re-list
  is installed, ``gc.freeze()`` moves every tracked object into the permanent
  generation, which no collection walks; it costs no walk at all (a list splice). The
  cluster state holds no reference cycles, so objects replaced later are still freed by
  reference counting, frozen or not (freeing an object takes it out of the permanent
  generation): nothing accumulates across re-lists. What a freeze does keep for good is
  cyclic garbage not collected yet at that moment; young collections run all the time,
  so that is what the last moments left, and the debounce (:data:`FREEZE_DELAY`, one
  freeze for the resources of a stanza listed together) keeps freezes rare.
* **no automatic collection during the start-up sync** (:func:`hold` /
  :func:`release`, wired by the server around its first sync): JSON pages being parsed
  and the objects made from them all survive, so each collection would walk them for
  nothing and promote them to the oldest generation, where full collections walk them
  again and again. They are acyclic and freed by reference counting, so the collector
  has nothing to find; it is switched back on (and the state frozen) when the server
  starts answering, or after :data:`HOLD_LIMIT` seconds whatever happens.
* **no full collection during a re-list** (:func:`listing`, called by the informer as a
  full list begins, and :func:`listed` once it is delivered): with the state frozen, the oldest
  generation holds what was made since, and a re-list adds the new state and its JSON to
  it, so a full collection in the middle of one walks all of that (190 ms measured at
  10,000 services, with the cluster and caches warm). Young and middle collections go
  on (the query path's cyclic garbage is still collected), the third threshold waits
  until every list begun is delivered, and the new state is then frozen;
  :data:`LIST_LIMIT` bounds it if a list never ends.
* **rarer full collections** (:func:`configure`, at server start): thresholds
  (1000, 10, 100) instead of (700, 10, 10): young passes a little rarer and as short
  (at most 1,000 new objects), middle ones walking at most 10,000 objects (a few
  milliseconds; at 2,000 x 20 they took up to 18 ms under an uncached flood, which
  fills the answer cache with survivors), and a full collection every 100 middle ones
  instead of 10, so that a re-list (parsed with the collector on) meets few of them.

The measurements are ``kubernetai_gc_pause_seconds``, ``kubernetai_gc_cpu_seconds_total``,
``kubernetai_gc_frozen_objects`` and ``kubernetai_reactor_stall_seconds``
(:mod:`kubernetai.core.stalls`), and ``bench/scale.py``: at 10,000 services and 100,000
pods (`pods verified`), 378,000 objects frozen after the sync, 511,000 after a re-list
(the caches and objects made since the sync, frozen with the new state) and 511,000 after
the next one; young passes cost 0.4 ms of CPU each, middle ones 2-3 ms.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from kubernetai.pkg import memtrim

__all__ = ["settled", "configure", "hold", "release", "held", "listing", "listed", "listings",
           "thaw", "THAW_DELAY", "FREEZE_DELAY", "THRESHOLDS", "HOLD_LIMIT", "LIST_LIMIT"]

#: Seconds between the last bulk install and the freeze.
FREEZE_DELAY = 0.5
#: ``gc.set_threshold`` for a server (the interpreter's default is 700, 10, 10).
THRESHOLDS = (1000, 10, 100)
#: Seconds automatic collection may stay off for one :func:`hold` at most.
HOLD_LIMIT = 300.0
#: Seconds full collections may wait for lists (:func:`listing`) at most.
LIST_LIMIT = 60.0

_pending: dict[int, Any] = {}


def settled(reactor: Any) -> None:
    """A bulk of long-lived objects was just installed: freeze them soon (reactor thread)."""
    call = _pending.get(id(reactor))
    if call is not None and call.active():
        call.reset(FREEZE_DELAY)
        return
    _pending[id(reactor)] = reactor.callLater(FREEZE_DELAY, _freeze, reactor)


def _freeze(reactor: Any) -> None:
    _pending.pop(id(reactor), None)
    gc.freeze()
    # The state the install replaced has just been freed: hand the heap back.
    memtrim.trim()


class _Lists:
    """Full lists under way (by who lists), during which full collections wait."""

    def __init__(self) -> None:
        self.listers: set[object] = set()
        # Listers whose hold ran out before they listed: no hold again until they have
        # (weakly held: an informer that stopped does not stay here).
        self.overdue: weakref.WeakSet[Any] = weakref.WeakSet()
        self.thresholds: tuple[int, int, int] | None = None
        self.expiry: Any = None

    def begin(self, reactor: Any, who: object) -> None:
        if who in self.listers or self._overdue(who):
            # A list tried again after a failure is the same list: its deadline stays the
            # one of its first attempt, and once it has passed, the list gets no hold
            # until it succeeds, so a list that keeps failing (an API server down, a 403)
            # cannot keep full collections off for good.
            return
        if self.thresholds is None:
            self.thresholds = gc.get_threshold()
            young, middle, _ = self.thresholds
            gc.set_threshold(young, middle, _NEVER)
        self.listers.add(who)
        if self.expiry is not None and self.expiry.active():
            self.expiry.reset(LIST_LIMIT)
        else:
            self.expiry = reactor.callLater(LIST_LIMIT, self.end)

    def _overdue(self, who: object) -> bool:
        try:
            return who in self.overdue
        except TypeError:  # not weakly referenceable (a test's name): never overdue
            return False

    def done(self, who: object) -> None:
        self.listers.discard(who)
        if self._overdue(who):
            self.overdue.discard(who)
        if not self.listers:
            self.end()

    def end(self) -> None:
        for who in self.listers:
            try:
                self.overdue.add(who)
            except TypeError:  # not weakly referenceable (a test's name): forgotten
                pass
        self.listers.clear()
        expiry, self.expiry = self.expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()
        if self.thresholds is not None:
            # Freeze first: the oldest generation now holds the new state, which the
            # first full collection allowed would walk whole.
            gc.freeze()
            gc.set_threshold(*self.thresholds)
            self.thresholds = None


_lists = _Lists()
#: A third threshold no list reaches.
_NEVER = 1_000_000_000


def listing(reactor: Any, who: object) -> None:
    """``who`` (an informer) begins a full list: no full collection until every list
    begun is :func:`listed`, or :data:`LIST_LIMIT` seconds after the last one began
    (reactor thread; an informer thread calls it through ``reactor.callFromThread``).
    Young and middle collections go on. Again for the same ``who`` (a list that failed
    and is tried again) is the same list."""
    _lists.begin(reactor, who)


def listed(reactor: Any, who: object) -> None:
    """``who``'s full list was delivered (after its Replace, reactor thread): once no
    list is under way, the new state is frozen and full collections may run again."""
    _lists.done(who)


#: Seconds after a reload before what it replaced is collected and the rest frozen again.
THAW_DELAY = 5.0


def thaw(reactor: Any) -> None:
    """A reload replaced part of the server (reactor thread): what it replaced may have
    been frozen, and a frozen object that dies in a reference cycle (Twisted's ports and
    protocols, pipelines) is never collected. Unfreeze everything, and once the old parts
    have stopped, collect once (one full walk per reload) and freeze again."""
    gc.unfreeze()
    call = _pending.get(id(reactor))
    if call is not None and call.active():
        call.cancel()
    _pending[id(reactor)] = reactor.callLater(THAW_DELAY, _collect_and_freeze, reactor)


def _collect_and_freeze(reactor: Any) -> None:
    gc.collect()
    _freeze(reactor)


def listings() -> int:
    """Full lists under way (:func:`listing` not yet :func:`listed`)."""
    return len(_lists.listers)


def configure(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Set a server's collection thresholds (once, at start; the process is a server's)."""
    gc.set_threshold(*thresholds)


class _Hold:
    """Who keeps automatic collection off, and whether it was on before."""

    def __init__(self) -> None:
        self.holders = 0
        self.was_enabled = False
        self.expiry: Any = None


_hold = _Hold()


def hold(reactor: Any, limit: float = HOLD_LIMIT) -> None:
    """A bulk of long-lived objects is coming (the start-up sync): no automatic
    collection until :func:`release`, or ``limit`` seconds (reactor thread)."""
    if _hold.holders == 0:
        _hold.was_enabled = gc.isenabled()
        gc.disable()
        _hold.expiry = reactor.callLater(limit, _expire)
    _hold.holders += 1


def release(reactor: Any) -> None:
    """One :func:`hold` is over; after the last one, collection is back on and what was
    made meanwhile is frozen (reactor thread)."""
    if _hold.holders == 0:
        return
    _hold.holders -= 1
    if _hold.holders == 0:
        _resume()


def held() -> bool:
    """Whether automatic collection is held off by :func:`hold`."""
    return _hold.holders > 0


def _expire() -> None:
    _hold.expiry = None
    _hold.holders = 0
    _resume()


def _resume() -> None:
    expiry, _hold.expiry = _hold.expiry, None
    if expiry is not None and expiry.active():
        expiry.cancel()
    # Freeze first: with collection off, everything made since the hold sits in the
    # youngest generation, which the next collection would walk whole.
    gc.freeze()
    if _hold.was_enabled:
        gc.enable()
