"""The `reload DURATION` check of one `hosts` directive: re-read its file when it changes.

Every DURATION (5 s by default) a worker thread stats the file and, if its modification
time or size moved, reads and parses it; the reactor thread then swaps the entries in
(:meth:`HostsSource.install`), which moves the source's generation when they differ, so
the answer memo drops what it kept from the old file. At most one check runs at a time: a
file that blocks its reader delays the next checks, never the answers.

It is a *process service* of the configuration that set it up (a key of its own): it
starts when that configuration starts serving, and stops when the server stops or a
reload replaces the configuration (the new one has its own). An embedding application,
which runs no process services, answers from what was read at set-up.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kubernetai.plugins.hosts.source import HostsSource, Loaded

__all__ = ["HostsWatcher"]

log = Logger()
_keys = itertools.count(1)


class HostsWatcher(service.Service):
    """Re-reads ``source``'s file every ``interval`` seconds (0: never) while running."""

    def __init__(self, source: HostsSource, interval: float, reactor: Any = None) -> None:
        self.source = source
        self.interval = interval
        self.reactor = reactor
        # One per directive and configuration: a reload starts the new one, stops this.
        self.key = ("hosts", next(_keys))
        self.checks = 0           # checks finished (tests wait on it)
        self._loop: LoopingCall | None = None
        self._busy = False

    def adopt(self, newer: HostsWatcher) -> None:
        """Never called: no other configuration has this key."""

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        super().startService()
        self.source.publish()
        if self.interval > 0:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return None

    def check(self) -> None:
        """Start a check on a worker thread, unless one is still running."""
        if self._busy or not self.running:
            return
        self._busy = True
        reactor = self.reactor

        def run() -> None:
            try:
                outcome: Loaded | Failure | None = self.source.read()
            except Exception:  # noqa: BLE001 - reported on the reactor thread
                outcome = Failure()
                outcome.cleanFailure()
            reactor.callFromThread(self._done, outcome)

        threading.Thread(target=run, name="hosts-reload", daemon=True).start()

    def _done(self, outcome: Loaded | Failure | None) -> None:
        self._busy = False
        self.checks += 1
        if isinstance(outcome, Failure):
            log.failure("plugin/hosts: reading {path} failed", outcome, path=self.source.path)
            return
        if outcome is None or not self.running:
            return
        self.source.install(outcome)
        self.source.publish()
