"""Waiting for the store to reach a resourceVersion, without blocking the reactor.

kube-apiserver's watch cache answers a read at a resourceVersion it has not reached yet by
waiting for it, up to 3 s (watch_cache.go, waitUntilFreshAndBlock), and then with
"Timeout: Too large resource version". Here a waiter is a Deferred that fires True as soon
as the store's resourceVersion gets there, or False when the delay runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .store import Store

# watch_cache.go's blockTimeout.
DEFAULT_DELAY = 3.0


@dataclass(eq=False, slots=True)
class _Waiter:
    rv: int
    deferred: defer.Deferred[bool]
    timer: IDelayedCall | None = field(default=None)


class Freshness:
    """The waiters for one store; every method runs on the reactor thread."""

    def __init__(self, store: Store, reactor: IReactorTime) -> None:
        self.store = store
        self.reactor = reactor
        self._waiters: set[_Waiter] = set()

    def wait(self, rv: int, delay: float) -> defer.Deferred[bool]:
        """A Deferred firing True once the store's resourceVersion is at least `rv`, or
        False after `delay` seconds if it is not."""
        if self.store.rv >= rv:
            return defer.succeed(True)
        waiter = _Waiter(rv, defer.Deferred())
        waiter.timer = self.reactor.callLater(max(0.0, delay), self._finish, waiter, False)
        if not self._waiters:
            self.store.add_progress_listener(self._progressed)
        self._waiters.add(waiter)
        return waiter.deferred

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _progressed(self, rv: int) -> None:
        for waiter in [w for w in self._waiters if rv >= w.rv]:
            self._finish(waiter, True)

    def _finish(self, waiter: _Waiter, fresh: bool) -> None:
        if waiter not in self._waiters:
            return
        self._waiters.discard(waiter)
        if not self._waiters:
            self.store.remove_progress_listener(self._progressed)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.deferred.callback(fresh)

    def cancel_all(self) -> Any:
        """Answer every waiter now (False): the server is stopping."""
        for waiter in list(self._waiters):
            self._finish(waiter, False)
