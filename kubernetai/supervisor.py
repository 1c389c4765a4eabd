"""The server over its whole life: start, reload on SIGUSR1, stop on SIGTERM, tell systemd.

What `twistd kubernetai` runs. It owns the stanzas' clusters itself (not the configuration
of the moment) so that a reload can keep every stanza whose options did not change, with its
warm cache and running informers, and start only the new ones:

* **reload** (SIGUSR1, systemd's `ExecReload`): re-read the Corefile off the reactor thread;
  a broken one is logged and the running configuration keeps serving. Otherwise new stanzas
  start and get their `startup_timeout` to sync while the old configuration still answers;
  then the listening sockets switch to the new routing in one step (queries in flight finish
  with the resolvers they started on), and stanzas no longer used are stopped.
* **stop** (SIGTERM): stop reading queries, give those in flight `grace` seconds, close the
  sockets, stop the informer threads; bounded, and twistd then exits 0.
* **systemd** (`Type=notify`): READY=1 once every stanza has synced or passed its
  `startup_timeout`, STATUS= saying which clusters are synced, RELOADING=1 / READY=1 around a
  reload, STOPPING=1, and WATCHDOG=1 pings when `WatchdogSec=` is set.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from . import corefile
from .cluster import Cluster
from .resolver import StanzaResolver
from .sdnotify import Notifier
from .server import KubernetaiService, PortPlan, clusters_of, compile_corefile, connect_all

log = Logger()


def _exit(code: int) -> None:
    """Leave with `code` once the reactor has shut down (twistd itself would exit 0)."""
    import os
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def read_plans(path: str, port_override: int | None) -> list[PortPlan]:
    """Parse and compile a Corefile and build its API clients.

    Blocking file reads (Corefile, imports, kubeconfigs, certificates): a reload runs this
    off the reactor thread. Clients built for stanzas that then reuse a running cluster
    are simply dropped.
    """
    blocks = corefile.parse_file(path)
    if not blocks:
        raise corefile.CorefileError(path, 1, "no server blocks in the Corefile")
    plans = compile_corefile(blocks, port_override=port_override)
    connect_all(plans)
    return plans


def reuse_clusters(plans: list[PortPlan], running: list[Cluster]) -> list[Cluster]:
    """Point new stanzas at running clusters with the same options; return the ones kept.

    Equal fingerprints mean the same API connection and the same answers, so the running
    cluster (warm cache, informers already watching) serves the new stanza unchanged.
    """
    available = {cluster.config.fingerprint(): cluster for cluster in running}
    kept: list[Cluster] = []
    for plan in plans:
        for block in plan.blocks:
            services = block.builder.services
            for resolver in block.builder.chain():
                if not isinstance(resolver, StanzaResolver):
                    continue
                old = available.pop(resolver.cluster.config.fingerprint(), None)
                if old is None:
                    continue
                if resolver.cluster in services:
                    services[services.index(resolver.cluster)] = old
                resolver.cluster = old
                kept.append(old)
    return kept


class Supervisor(service.MultiService):
    """Runs the Corefile at `path`; see the module docstring."""

    def __init__(self, path: str, *, port_override: int | None = None, reactor: Any = None,
                 notifier: Notifier | None = None, grace: float = 1.0,
                 status_interval: float = 10.0) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.path = path
        self.port_override = port_override
        self.notifier = notifier or Notifier(reactor=reactor)
        self.grace = grace
        self.reloads = 0
        self.exit_code = 0
        self._reloading: defer.Deferred[Any] | None = None
        plans = read_plans(path, port_override)
        self.clusters = service.MultiService()
        self.clusters.setServiceParent(self)
        for cluster in clusters_of(plans):
            cluster.setServiceParent(self.clusters)
        self.server = KubernetaiService(plans, reactor=reactor, own_clusters=False)
        self.server.setServiceParent(self)
        self._status = task.LoopingCall(self._report)
        self._status.clock = reactor
        self._status_interval = status_interval

    # -- lifecycle -------------------------------------------------------------------

    def startService(self) -> None:
        self.notifier.start_watchdog()
        super().startService()
        self.server.listening.addCallbacks(self._ready, self._cannot_serve)
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._on_sigusr1)

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def _ready(self, ports: list[Any]) -> list[Any]:
        self.notifier.ready(self.status())
        self._status.start(self._status_interval, now=False)
        return ports

    def _cannot_serve(self, failure: Any) -> None:
        """A port that cannot be bound is fatal, as in CoreDNS: exit 1, not run deaf."""
        self.notifier.status(f"cannot serve: {failure.getErrorMessage()}")
        self.exit_code = 1
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit, 1)
        self.reactor.stop()

    def _report(self) -> None:
        self.notifier.status(self.status())

    def status(self) -> str:
        """One line for `systemctl status`: which clusters have synced."""
        clusters = [c for c in self.clusters if isinstance(c, Cluster)]
        synced = sum(1 for c in clusters if c.synced)
        parts = [f"{c.config.primary_zone.rstrip('.')} ({c.config.filename}:{c.config.line}) "
                 f"{'synced' if c.synced else 'NOT synced'}" for c in clusters]
        return f"{synced}/{len(clusters)} clusters synced: " + ", ".join(parts)

    def stopService(self) -> defer.Deferred[Any]:
        self.notifier.stopping()
        self.notifier.stop_watchdog()
        if self._status.running:
            self._status.stop()
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.server.pause()
        drained = task.deferLater(self.reactor, self.grace, lambda: None)
        stopped = drained.addCallback(lambda _: super(Supervisor, self).stopService())
        return stopped.addBoth(self._stopped)

    def _stopped(self, result: Any) -> Any:
        self.notifier.close()
        # twistd re-raises the signal that stopped the reactor once it has run down, so the
        # process would end "killed by SIGTERM". A SIGTERM shutdown that completed is a
        # clean exit for a DNS server (CoreDNS exits 0), so forget the signal.
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None
        return result

    # -- reload ----------------------------------------------------------------------

    def reload(self) -> defer.Deferred[bool]:
        """Re-read the Corefile and switch to it; fires True if the switch happened."""
        if self._reloading is not None:
            log.info("kubernetai: a reload is already in progress")
            return defer.succeed(False)
        if not self.running or not self.server.listening.called:
            log.info("kubernetai: not serving yet (or stopping): reload ignored")
            return defer.succeed(False)
        self.notifier.reloading()
        log.info("kubernetai: reloading {path}", path=self.path)
        reading = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                            read_plans, self.path, self.port_override)
        self._reloading = reading.addCallback(self._switch).addErrback(self._reload_failed)
        return self._reloading.addBoth(self._reload_done)

    @defer.inlineCallbacks
    def _switch(self, plans: list[PortPlan]) -> Any:
        running = [c for c in self.clusters if isinstance(c, Cluster)]
        kept = reuse_clusters(plans, running)
        fresh = [c for c in clusters_of(plans) if c not in kept]
        for cluster in fresh:
            cluster.setServiceParent(self.clusters)
        yield defer.gatherResults([c.wait_synced(c.config.startup_timeout) for c in fresh])
        try:
            if not self.running:
                raise RuntimeError("the server is stopping")
            self.server.retarget(plans)
        except Exception:
            for cluster in fresh:  # the running configuration stays as it was
                yield defer.maybeDeferred(cluster.disownServiceParent)
            raise
        retired = [c for c in running if c not in kept]
        for cluster in retired:
            yield defer.maybeDeferred(cluster.disownServiceParent)
        self.reloads += 1
        log.info("kubernetai: reloaded {path}: {kept} stanza(s) kept warm, {new} started, "
                 "{old} stopped", path=self.path, kept=len(kept), new=len(fresh),
                 old=len(retired))
        return True

    def _reload_failed(self, failure: Any) -> bool:
        error = failure.value
        if isinstance(error, corefile.CorefileError):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
            log.failure("kubernetai: reload failed", failure)
        log.error("kubernetai: reload failed, still serving the previous configuration: "
                  "{message}", message=message)
        self.notifier.ready(f"reload failed, serving the previous configuration: {message}")
        return False

    def _reload_done(self, switched: Any) -> Any:
        self._reloading = None
        if switched is True:
            self.notifier.ready(self.status())
        return switched
