"""The garbage-collector policy (kubernetai.core.gcpolicy): one debounced freeze per bulk
install, automatic collection held off during a sync and back on after it (or its time
limit), and frozen cluster state that does not pile up when it is replaced again and again."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Iterator

import pytest
from twisted.internet import task

from kubernetai.core import gcpolicy


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    """The process's collector as it was, afterwards."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def freezes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each gc.freeze() made."""
    calls: list[str] = []
    real = gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append("freeze"), real())[1])
    return calls


def test_bulk_installs_close_together_cost_one_freeze(freezes: list[str]) -> None:
    clock = task.Clock()
    gcpolicy.settled(clock)
    clock.advance(gcpolicy.FREEZE_DELAY / 2)
    gcpolicy.settled(clock)                 # another resource of the stanza
    clock.advance(gcpolicy.FREEZE_DELAY / 2)
    assert freezes == []
    clock.advance(gcpolicy.FREEZE_DELAY / 2)
    assert freezes == ["freeze"]
    gcpolicy.settled(clock)                 # a re-list later: a freeze of its own
    clock.advance(gcpolicy.FREEZE_DELAY)
    assert freezes == ["freeze", "freeze"]
    assert not clock.getDelayedCalls()


def test_a_hold_keeps_collection_off_until_the_last_release(freezes: list[str]) -> None:
    clock = task.Clock()
    gc.enable()
    gcpolicy.hold(clock)
    gcpolicy.hold(clock)
    assert not gc.isenabled() and gcpolicy.held()
    gcpolicy.release(clock)
    assert not gc.isenabled() and freezes == []
    gcpolicy.release(clock)
    # What the sync made is frozen before the collector may walk it.
    assert gc.isenabled() and not gcpolicy.held() and freezes == ["freeze"]
    assert not clock.getDelayedCalls()
    gcpolicy.release(clock)                 # one too many: nothing happens
    assert gc.isenabled() and freezes == ["freeze"]


def test_a_hold_ends_at_its_limit(freezes: list[str]) -> None:
    clock = task.Clock()
    gc.enable()
    gcpolicy.hold(clock, limit=10)
    clock.advance(9)
    assert not gc.isenabled()
    clock.advance(1)
    assert gc.isenabled() and not gcpolicy.held() and freezes == ["freeze"]
    gcpolicy.release(clock)                 # the late release changes nothing
    assert gc.isenabled() and freezes == ["freeze"]


def test_a_hold_leaves_a_disabled_collector_disabled() -> None:
    clock = task.Clock()
    gc.disable()
    gcpolicy.hold(clock)
    gcpolicy.release(clock)
    assert not gc.isenabled()


def test_configure_sets_the_thresholds() -> None:
    gcpolicy.configure()
    assert gc.get_threshold() == gcpolicy.THRESHOLDS


class Pod:
    """Shaped like the cluster state: slotted, acyclic, with tracked containers inside."""

    __slots__ = ("name", "namespace", "ips", "labels")

    def __init__(self, index: int, generation: int) -> None:
        self.name = f"pod-{generation}-{index}"
        self.namespace = f"ns-{index % 100}"
        self.ips = [f"10.{generation}.{index // 256 % 256}.{index % 256}"]
        self.labels = {"app": self.name, "generation": [generation]}


def state(generation: int, count: int = 10_000) -> dict[str, Pod]:
    return {f"{i}": Pod(i, generation) for i in range(count)}


def test_frozen_state_replaced_twice_does_not_pile_up() -> None:
    """After each re-list the previous state, frozen, is freed by reference counting: the
    permanent generation and the memory stay where the first sync left them."""
    clock = task.Clock()
    gc.collect()
    tracemalloc.start()
    try:
        cluster = {"pods": state(0)}
        gcpolicy.settled(clock)
        clock.advance(gcpolicy.FREEZE_DELAY)
        frozen, memory = gc.get_freeze_count(), tracemalloc.get_traced_memory()[0]
        for generation in (1, 2):
            cluster["pods"] = state(generation)     # the re-list: one assignment
            gcpolicy.settled(clock)
            clock.advance(gcpolicy.FREEZE_DELAY)
            # 10,000 pods hold 40,000 tracked objects: a leak of one state would show.
            assert gc.get_freeze_count() < frozen + 3_000
            assert tracemalloc.get_traced_memory()[0] < memory * 1.1
        assert cluster["pods"]["0"].name == "pod-2-0"
        del cluster
        assert gc.get_freeze_count() < frozen - 25_000  # freed while frozen
    finally:
        tracemalloc.stop()


def test_lists_hold_off_full_collections_until_delivered(freezes: list[str]) -> None:
    clock = task.Clock()
    gc.set_threshold(1000, 10, 100)
    gcpolicy.listing(clock, "services")
    gcpolicy.listing(clock, "pods")
    gcpolicy.listing(clock, "pods")         # its list failed and starts over: the same
    young, middle, oldest = gc.get_threshold()
    assert (young, middle) == (1000, 10) and oldest > 1_000_000
    assert gcpolicy.listings() == 2
    gcpolicy.listed(clock, "services")
    assert gc.get_threshold()[2] > 1_000_000 and freezes == []
    gcpolicy.listed(clock, "pods")
    # The new state is frozen before a full collection may walk it.
    assert gc.get_threshold() == (1000, 10, 100) and freezes == ["freeze"]
    assert gcpolicy.listings() == 0 and not clock.getDelayedCalls()
    gcpolicy.listed(clock, "pods")          # again: nothing happens
    assert freezes == ["freeze"] and gc.get_threshold() == (1000, 10, 100)


def test_a_list_that_never_ends_lets_full_collections_back(freezes: list[str]) -> None:
    clock = task.Clock()
    gc.set_threshold(1000, 10, 100)
    gcpolicy.listing(clock, "pods")
    clock.advance(gcpolicy.LIST_LIMIT / 2)
    gcpolicy.listing(clock, "services")     # the limit counts from the last list begun
    clock.advance(gcpolicy.LIST_LIMIT * 0.75)
    assert gc.get_threshold()[2] > 1_000_000
    clock.advance(gcpolicy.LIST_LIMIT / 4)
    assert gc.get_threshold() == (1000, 10, 100) and gcpolicy.listings() == 0
    assert freezes == ["freeze"] and not clock.getDelayedCalls()


def test_a_list_that_keeps_failing_does_not_keep_collections_off(freezes: list[str]) -> None:
    """An informer asks `listing` before every attempt; a list that fails for good (API
    server down, 403) must not push the deadline back each time."""
    clock = task.Clock()
    gc.set_threshold(1000, 10, 100)

    class Informer:
        pass
    pods = Informer()
    for _ in range(6):                      # attempts every 30 s (the backoff's cap)
        gcpolicy.listing(clock, pods)
        clock.advance(30)
    assert gc.get_threshold() == (1000, 10, 100) and gcpolicy.listings() == 0
    assert freezes == ["freeze"] and not clock.getDelayedCalls()
    gcpolicy.listed(clock, pods)            # it got through: its next list holds again
    gcpolicy.listing(clock, pods)
    assert gc.get_threshold()[2] > 1_000_000
    gcpolicy.listed(clock, pods)
    assert gc.get_threshold() == (1000, 10, 100)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_thaw_lets_frozen_cycles_be_collected(freezes: list[str]) -> None:
    """After a reload, what it replaced (frozen, and cyclic) is collected, then the rest
    is frozen again."""
    import weakref
    clock = task.Clock()
    old = _Cycle()
    gone = weakref.ref(old)
    gc.freeze()
    del old
    gc.collect()
    assert gone() is not None               # frozen: the collector does not see it
    gcpolicy.thaw(clock)
    clock.advance(gcpolicy.THAW_DELAY)
    assert gone() is None
    assert gc.get_freeze_count() > 0 and len(freezes) == 2
