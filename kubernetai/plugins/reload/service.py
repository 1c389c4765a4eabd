"""The reload check: every INTERVAL (± JITTER/2) compare the Corefile's digest with the
running configuration's, and reload when it changed.

The plugin owns the schedule and the comparison; reading the files and the reload itself
belong to whatever runs the server (the supervisor of `twistd kubernetai`), which hands
itself over as a :class:`Reloader`: it reads the Corefile and its imports off the reactor
thread within its deadline, and reloads as SIGUSR1 does (unchanged stanzas keep their warm
caches; a failed reload keeps the running configuration, is logged and counted in
``coredns_reload_failed_total``).

It is a process service, so the `reload` line of the configuration *running now* governs:
a reload that removes the line stops the checks, one that changes INTERVAL or JITTER
restarts them with the new period, and a failed reload leaves the old line in force.

As CoreDNS does, a Corefile that does not parse is logged at every check (``Corefile parse
failed``) and not counted; a changed Corefile is tried once: if that reload fails, the same
file is not tried again until it changes (or SIGUSR1 asks).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kubernetai.core.metrics import PROCESS

log = Logger()

VERSION_INFO = PROCESS.gauge(
    "coredns_reload_version_info",
    "A metric with a constant '1' value labeled by hash, and value which type of hash "
    "generated.", ("hash", "value"))


class Reloader(Protocol):
    """What runs the server, as the reload check sees it."""

    #: The SHA512 (hex) of the configuration running now.
    digest: str
    #: The digest of the last configuration a reload read, whatever came of it.
    tried_digest: str | None

    def reload_possible(self) -> bool:
        """False while serving has not started, a reload is under way, or the process is
        stopping."""

    def read_digest(self) -> defer.Deferred[str]:
        """The digest of the Corefile on disk now, read off the reactor thread; fails with
        an exception whose ``unparsable`` attribute is true if it does not parse."""

    def reload(self, origin: str = ...) -> defer.Deferred[bool]:
        """Reload as SIGUSR1 does; fires True if the new configuration runs."""


class ReloadService(service.Service):
    """The periodic check; one per process (key ``("reload",)``)."""

    key = ("reload",)

    def __init__(self, interval: float, jitter: float, period: float,
                 reactor: Any = None) -> None:
        self.interval, self.jitter = interval, jitter
        self.period = period  # seconds between checks, jitter drawn
        self.reactor = reactor
        self.reloader: Reloader | None = None
        self.seen: str | None = None  # digest last acted on
        self._loop: LoopingCall | None = None
        self._checking = False

    def absorb(self, other: ReloadService) -> None:
        """Several blocks have `reload`: the last one set up wins, as in CoreDNS (whose
        plugin keeps one process-wide setting)."""
        self.interval, self.jitter, self.period = other.interval, other.jitter, other.period

    def adopt(self, newer: ReloadService) -> None:
        """A reload kept the check: take the new configuration's period (its jitter drawn
        anew, as CoreDNS does on every reload). It restarts when the reloader attaches."""
        self.absorb(newer)

    def attach(self, reloader: Reloader) -> None:
        """``reloader`` runs the server, and the configuration running now is its
        ``digest``: called before start and after every reload that switched."""
        self.reloader = reloader
        self.seen = reloader.digest
        if self.running:
            self._begin()

    def startService(self) -> None:
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        super().startService()
        if self.reloader is not None:
            self._begin()
        else:  # started by a reload: attached right after, on this same turn of the reactor
            self.reactor.callLater(0, self._unattached)

    def stopService(self) -> Any:
        super().stopService()
        self._stop_loop()
        VERSION_INFO.values.clear()
        return None

    def _unattached(self) -> None:
        if self.running and self.reloader is None:
            log.warn("plugin/reload: nothing can reload this server (it is not run by "
                     "`twistd kubernetai`): the Corefile is not checked for changes")

    def _begin(self) -> None:
        """Say which configuration runs, then check every period from now."""
        assert self.reloader is not None
        digest = self.reloader.digest
        log.info("plugin/reload: Running configuration SHA512 = {digest}", digest=digest)
        VERSION_INFO.values.clear()
        VERSION_INFO.set(("sha512", digest), 1)
        self._stop_loop()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.period, now=False)

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        try:
            self.check()  # the schedule does not wait for a read or a reload to end
        except Exception:  # noqa: BLE001 - the next check may fare better; keep checking
            self._checking = False
            log.failure("plugin/reload: check failed")

    def check(self) -> defer.Deferred[Any] | None:
        """One check: read the digest, reload if it changed. Never fails."""
        reloader = self.reloader
        if self._checking or reloader is None or not reloader.reload_possible():
            return None
        self._checking = True
        reading = reloader.read_digest()
        reading.addCallbacks(self._compare, self._unreadable)

        def done(result: Any) -> Any:
            self._checking = False
            if isinstance(result, Failure):
                log.failure("plugin/reload: check failed", result)
                return None
            return result
        return reading.addBoth(done)

    def _compare(self, digest: str) -> Any:
        reloader = self.reloader
        if not self.running or reloader is None:
            return None
        if digest in (self.seen, reloader.tried_digest) or not reloader.reload_possible():
            return None  # unchanged, already tried, or busy: the next check will see
        self.seen = digest  # a broken file is tried once, not at every check
        return reloader.reload("reload")

    def _unreadable(self, failure: Failure) -> None:
        if getattr(failure.value, "unparsable", False):
            log.warn("plugin/reload: Corefile parse failed: {error}", error=failure.value)
        else:
            log.warn("plugin/reload: cannot read the Corefile: {error}", error=failure.value)
