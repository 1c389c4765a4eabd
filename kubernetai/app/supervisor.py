"""The server over its whole life: start, reload on SIGUSR1, stop on SIGTERM, tell systemd.

What `twistd kubernetai` runs. It owns the stanzas' clusters itself (not the configuration
of the moment) so that a reload can keep every stanza whose options did not change, with its
warm cache and running informers, and start only the new ones:

* **reload** (SIGUSR1, systemd's `ExecReload`): re-read the Corefile off the reactor thread;
  a broken one is logged and the running configuration keeps serving. Otherwise new stanzas
  start and get their `startup_timeout` to sync while the old configuration still answers;
  then the listening sockets switch to the new routing in one step (queries in flight finish
  with the resolvers they started on), and stanzas no longer used are stopped.
  A reload is bounded in time and all-or-nothing: reading the configuration (Corefile,
  imports, kubeconfigs, certificates, kubeconfig `exec` credential plugins) gets
  `read_timeout` seconds on a thread of its own and is abandoned after that; a stanza it
  starts that has not synced within its `startup_timeout` (a wrong token, CA or endpoint)
  makes the whole new configuration be discarded. Either way the running configuration
  keeps serving, the failure is logged and shown in STATUS until a reload succeeds, and
  the next SIGUSR1 tries again. A reload that fails once the new Corefile parsed is counted
  (`reload_failures`, `coredns_reload_failed_total`); one that does not parse is only
  logged, as CoreDNS's *reload* plugin counts.
* **the `reload` directive** (a process service of the configuration): the supervisor hands
  itself to it as its reloader (`attach`), with the SHA512 digest of the running
  configuration; the check reads the digest off the reactor thread (`read_digest`) and
  calls `reload("reload")` when it changed.
* **stop** (SIGTERM): process services are told (`stopping()`: `/ready` answers 503 from
  then on) and no reload starts; health's lameduck keeps everything serving that long;
  then stop reading queries, give those in flight `grace` seconds, close the sockets, stop
  the informer threads; bounded, and twistd then exits 0.
* **systemd** (`Type=notify`): READY=1 once every stanza has synced or passed its
  `startup_timeout`, STATUS= saying which clusters are synced, RELOADING=1 / READY=1 around a
  reload, STOPPING=1, and WATCHDOG=1 pings when `WatchdogSec=` is set.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

import kubernetai.corefile as corefile
from kubernetai.app.load import PortPlan, clusters_of, plans_of
from kubernetai.app.sdnotify import Notifier
from kubernetai.app.server import KubernetaiService
from kubernetai.core import gcpolicy
from kubernetai.core.metrics import PROCESS
from kubernetai.pkg.gosyntax import go_duration
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.informer import excerpt

log = Logger()

#: Seconds a reload may spend reading its configuration: the Corefile and its imports,
#: kubeconfigs and certificates, and building the API clients. From local files that takes
#: milliseconds; the one slow step that is legitimate is a kubeconfig `exec` credential
#: plugin, which the Python client runs while loading the kubeconfig (client-go runs it at
#: the first request, inside CoreDNS's startup_timeout wait). Cloud CLIs such as
#: `aws eks get-token` answer in about a second, a few on a cold start: 10 s is several
#: times that, twice CoreDNS's default startup_timeout, and leaves a whole reload (this
#: plus the new stanzas' startup_timeout, 5 s by default) well inside the 90 s the unit
#: gives (TimeoutStartSec=, which systemd also applies to a Type=notify-reload reload).
#: Something that blocks (a FIFO, a plugin waiting for a prompt) is abandoned after it.
READ_TIMEOUT = 10.0

#: Abandoned reads still blocked, each on a thread of its own, beyond which a reload is
#: refused at once instead of starting yet another thread (threads are not free, and a
#: read that blocks once will most likely block again until the operator fixes it).
MAX_ABANDONED = 3


#: Seconds a reload waits at most for the stanzas it starts to sync: their
#: `startup_timeout`, capped (a `startup_timeout 2562047h` must not hold reloading
#: for good), and extended up to this for a stanza that is still listing without
#: errors. With READ_TIMEOUT it stays inside the unit's TimeoutStartSec=90s.
RELOAD_SYNC_LIMIT = 60.0


#: CoreDNS's reload plugin's counter; here every kind of reload counts in it (SIGUSR1 too).
RELOAD_FAILED = PROCESS.counter("coredns_reload_failed_total",
                                "Counter of the number of failed reload attempts.")
RELOAD_FAILED.inc((), 0)  # shown as 0 from the start, as CoreDNS's


class Unparsable(Exception):
    """The Corefile (or a file it imports) does not parse: the reload changed nothing and,
    as in CoreDNS, is not counted as a failed reload."""

    unparsable = True


class ReloadAbandoned(Exception):
    """Reading the configuration for a reload did not finish within its deadline."""


class ReloadRefused(Exception):
    """Too many earlier reloads are still blocked reading; none is started."""


class ReloadNotSynced(Exception):
    """A stanza the new configuration starts did not sync in time: nothing was switched."""


def _exit(code: int) -> None:
    """Leave with `code` once the reactor has shut down (twistd itself would exit 0)."""
    import os
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass(slots=True)
class Configuration:
    """One reading of the Corefile: what runs, and the digest that tells it apart."""

    plans: list[PortPlan]
    digest: str


def config_digest(blocks: Iterable[corefile.ServerBlock]) -> str:
    """SHA512 (hex) of a parsed Corefile, imports spliced in and ``{$ENV}`` substituted.

    As CoreDNS's reload plugin, which hashes its parsed server blocks (each token with its
    file and line): what changes it is what the configuration says and where it says it,
    not a comment edited within a line. Every block, key and directive line (with its
    file, line and nested lines) goes in, as canonical JSON.
    """
    text = json.dumps([asdict(block) for block in blocks], separators=(",", ":"))
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


def parse_corefile(path: str) -> tuple[tuple[corefile.ServerBlock, ...], str]:
    """The Corefile's server blocks and their digest (blocking: files are read)."""
    blocks = corefile.parse_file(path)
    return blocks, config_digest(blocks)


def read_configuration(path: str, port_override: int | None) -> Configuration:
    """Parse and compile a Corefile and build its API clients; CorefileError if wrong.

    Blocking file reads (Corefile, imports, kubeconfigs, certificates): a reload reads
    off the reactor thread (in two steps, see `Supervisor._read`). Clients built for
    stanzas that then reuse a running cluster are simply dropped.
    """
    blocks, digest = parse_corefile(path)
    if not blocks:
        raise corefile.CorefileError(str(path), 1, "no server blocks in the Corefile")
    return Configuration(plans_of(blocks, port_override=port_override), digest)


def parse_for_reload(path: str) -> tuple[tuple[corefile.ServerBlock, ...], str]:
    """:func:`parse_corefile`, a Corefile that does not parse raised as Unparsable."""
    try:
        return parse_corefile(path)
    except corefile.CorefileError as error:
        raise Unparsable(str(error)) from None


def read_in_thread(reactor: Any, timeout: float, read: Callable[[], Any]
                   ) -> tuple[defer.Deferred[Any], threading.Thread]:
    """Run `read` on a daemon thread of its own; its Deferred fails after `timeout` seconds.

    Not the reactor's thread pool: twistd joins the pool's threads at shutdown, so a read
    blocked for good (a FIFO) would hang SIGTERM too, and it would hold a pool worker that
    stopping the informers needs. A daemon thread never delays the exit. Once the deadline
    has passed the Deferred has fired, and whatever the thread returns when it wakes up is
    dropped: an abandoned reload can never switch the configuration.
    """
    result: defer.Deferred[Any] = defer.Deferred()
    started = time.monotonic()

    def expire() -> None:
        result.errback(ReloadAbandoned(
            f"reading the configuration did not finish within {timeout:g}s (a file that "
            "blocks, such as a FIFO, or a kubeconfig exec plugin that does not answer?); "
            "the reload was abandoned"))

    timer = reactor.callLater(timeout, expire)

    def deliver(outcome: Any) -> None:  # on the reactor thread
        if result.called:
            log.warn("kubernetai: a reload abandoned after {timeout:g}s finished reading after "
                     "{elapsed:.1f}s; its result is discarded", timeout=timeout,
                     elapsed=time.monotonic() - started)
            return
        timer.cancel()
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    def run() -> None:
        try:
            outcome: Any = read()
        except BaseException:  # noqa: BLE001 - handed to the reactor, which reports it
            outcome = Failure()
            outcome.cleanFailure()  # no frames kept alive across threads
        reactor.callFromThread(deliver, outcome)

    thread = threading.Thread(target=run, name="kubernetai-reload", daemon=True)
    thread.start()
    return result, thread


def reuse_clusters(plans: list[PortPlan], running: list[Cluster],
                   written: dict[Cluster, Any] | None = None) -> list[Cluster]:
    """Point new stanzas at running clusters with the same options; return the ones kept.

    Equal fingerprints mean the same API connection and the same answers, so the running
    cluster (warm cache, informers already watching) serves the new stanza unchanged.
    ``written`` gets, for each kept cluster, the new stanza's configuration (where it is
    written now), for :meth:`Cluster.relocate` once the switch is made.
    """
    available = {cluster.config.fingerprint(): cluster for cluster in running}
    kept: list[Cluster] = []
    for plan in plans:
        for block in plan.blocks:
            for entry in block.builder.sources:
                new = entry.source
                old = available.pop(new.config.fingerprint(), None)
                if old is None:
                    continue
                entry.rebind(old)
                entry.source = old
                kept.append(old)
                if written is not None:
                    written[old] = new.config
    return kept


class Supervisor(service.MultiService):
    """Runs the Corefile at `path`; see the module docstring.

    :param read_timeout: seconds a reload may spend reading its configuration
        (`READ_TIMEOUT`); the new stanzas then get their own `startup_timeout` to sync.
    """

    def __init__(self, path: str, *, port_override: int | None = None, reactor: Any = None,
                 notifier: Notifier | None = None, grace: float = 1.0,
                 status_interval: float = 10.0, read_timeout: float = READ_TIMEOUT) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.path = path
        self.port_override = port_override
        self.notifier = notifier or Notifier(reactor=reactor)
        self.grace = grace
        self.read_timeout = read_timeout
        #: Reloads that switched to a new configuration.
        self.reloads = 0
        #: Reloads that failed (the previous configuration kept serving) once the new
        #: Corefile parsed: what `coredns_reload_failed_total` counts for this supervisor.
        self.reload_failures = 0
        #: Why the last reload failed, until a reload succeeds (also shown in `status()`).
        self.last_reload_error: str | None = None
        self.exit_code = 0
        self._reloading: defer.Deferred[Any] | None = None
        self._abandoned: list[threading.Thread] = []  # reads given up on, maybe still blocked
        self._stopping = False
        configuration = read_configuration(path, port_override)
        plans = configuration.plans
        #: SHA512 of the configuration running (see `config_digest`).
        self.digest = configuration.digest
        #: The digest of the last configuration a reload read, whatever came of it.
        self.tried_digest: str | None = None
        self.clusters = service.MultiService()
        self.clusters.setServiceParent(self)
        for cluster in clusters_of(plans):
            cluster.setServiceParent(self.clusters)
        self.server = KubernetaiService(plans, reactor=reactor, own_clusters=False)
        self.server.setServiceParent(self)
        self._attach_extras()
        self._status = task.LoopingCall(self._report)
        self._status.clock = reactor
        self._status_interval = status_interval
        self._gc_held = False  # this supervisor holds automatic collection off (gcpolicy)
        #: Called (reactor thread) after each reload that switched the configuration.
        self.switched: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------

    def startService(self) -> None:
        self.notifier.start_watchdog()
        # The first sync makes the long-lived cluster state: no automatic collection
        # until it is served, then it is frozen (kubernetai.core.gcpolicy).
        gcpolicy.hold(self.reactor)
        self._gc_held = True
        try:
            super().startService()
        except CannotListenError as error:
            self._release_gc()
            # A process service's port (health, ready, prometheus) is taken: one line and
            # exit 1, as CoreDNS, not a traceback.
            log.error("kubernetai: cannot start serving: {error}", error=error)
            self.reactor.callWhenRunning(self._cannot_serve, Failure(error))
            return
        # With no stanza to wait for, the ports are opened (or fail) before the reactor
        # runs, when stopping it would do nothing: the failure waits for it to run.
        self.server.listening.addBoth(self._release_gc)
        self.server.listening.addCallbacks(
            self._ready, lambda failure: self.reactor.callWhenRunning(self._cannot_serve,
                                                                       failure))
        _set_sigusr1(self._on_sigusr1)

    def _release_gc(self, result: Any = None) -> Any:
        if self._gc_held:
            self._gc_held = False
            gcpolicy.release(self.reactor)
        return result

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
        """One line for `systemctl status`: which clusters have synced, and a failed reload.

        The failure stays in the line (the periodic STATUS included) until a reload
        succeeds, so an operator who looks a minute later still sees that the file on
        disk is not what is being served.
        """
        clusters = [c for c in self.clusters if isinstance(c, Cluster)]
        synced = sum(1 for c in clusters if c.synced)
        parts = [f"{c.config.primary_zone.rstrip('.')} ({c.config.filename}:{c.config.line}) "
                 f"{'synced' if c.synced else 'NOT synced'}" for c in clusters]
        line = f"{synced}/{len(clusters)} clusters synced: " + ", ".join(parts)
        if self.last_reload_error is not None:
            line += f"; last reload failed: {self.last_reload_error}"
        return line

    def stopService(self) -> defer.Deferred[Any]:
        self._stopping = True  # no reload starts from now on
        self._release_gc()
        self.notifier.stopping()
        self._tell_extras("stopping")
        self.notifier.stop_watchdog()
        if self._status.running:
            self._status.stop()
        _set_sigusr1(signal.SIG_DFL)
        lameduck = self.server.lameduck() if self.server is not None else 0.0
        if lameduck > 0:
            # health's lameduck: keep answering DNS and /health for that long, then stop.
            log.info("plugin/health: Going into lameduck mode for {duration}",
                     duration=go_duration(round(lameduck * 1e9)))
        waited = task.deferLater(self.reactor, lameduck, lambda: None)

        def drain(_: Any) -> defer.Deferred[None]:
            if self.server is not None:
                self.server.pause()
            return task.deferLater(self.reactor, self.grace, lambda: None)
        stopped = waited.addCallback(drain)
        stopped.addCallback(lambda _: super(Supervisor, self).stopService())
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

    def reload_possible(self) -> bool:
        """Whether `reload` would start now: serving, not stopping, no reload under way."""
        return (self._reloading is None and bool(self.running) and not self._stopping
                and self.server.listening.called)

    def reload(self, origin: str = "SIGUSR1") -> defer.Deferred[bool]:
        """Re-read the Corefile and switch to it; fires True if the switch happened.

        ``origin`` says what asked (``"SIGUSR1"``, or ``"reload"``: the directive's check,
        whose failures are logged in CoreDNS's words).
        Never fails and always ends: RELOADING=1 is followed by READY=1 within
        `read_timeout` plus the largest `startup_timeout` of the stanzas it starts,
        at most `RELOAD_SYNC_LIMIT` (plus stopping the stanzas of a discarded one).
        """
        if self._reloading is not None:
            log.info("kubernetai: a reload is already in progress")
            return defer.succeed(False)
        if not self.running or self._stopping or not self.server.listening.called:
            log.info("kubernetai: not serving yet (or stopping): reload ignored")
            return defer.succeed(False)
        self.notifier.reloading()
        log.info("kubernetai: reloading {path}", path=self.path)
        self._reloading = self._read().addCallback(self._switch)
        self._reloading.addErrback(self._reload_failed, origin)
        return self._reloading.addBoth(self._reload_done)

    def read_digest(self) -> defer.Deferred[str]:
        """The digest of the Corefile on disk now (`config_digest`), read off the reactor
        thread within `read_timeout`; fails with Unparsable if it does not parse."""
        return self._in_thread(lambda: parse_for_reload(self.path)[1])

    def _read(self) -> defer.Deferred[Configuration]:
        """The new configuration, read off the reactor thread within the deadline: parsed
        (its digest is then `tried_digest`, whatever comes of the rest), then set up."""
        deadline = self.reactor.seconds() + self.read_timeout

        def set_up(parsed: tuple[tuple[corefile.ServerBlock, ...], str]
                   ) -> defer.Deferred[Configuration]:
            blocks, digest = parsed
            self.tried_digest = digest

            def build() -> Configuration:
                if not blocks:
                    raise corefile.CorefileError(self.path, 1, "no server blocks in the Corefile")
                return Configuration(plans_of(blocks, port_override=self.port_override), digest)
            return self._in_thread(build, max(deadline - self.reactor.seconds(), 0.001))
        return self._in_thread(lambda: parse_for_reload(self.path)).addCallback(set_up)

    def _in_thread(self, read: Callable[[], Any],
                   timeout: float | None = None) -> defer.Deferred[Any]:
        """`read_in_thread` with the deadline (`read_timeout` unless given), counting the
        reads given up on (and refusing to start one more while MAX_ABANDONED are still
        blocked)."""
        self._abandoned = [thread for thread in self._abandoned if thread.is_alive()]
        if len(self._abandoned) >= MAX_ABANDONED:
            return defer.fail(ReloadRefused(
                f"{len(self._abandoned)} earlier reloads are still blocked reading the "
                "configuration; not starting another until one of them ends"))
        reading, thread = read_in_thread(self.reactor, self.read_timeout if timeout is None
                                         else timeout, read)

        def abandoned(failure: Failure) -> Failure:
            if failure.check(ReloadAbandoned):
                self._abandoned.append(thread)
            return failure
        return reading.addErrback(abandoned)

    def _attach_extras(self) -> None:
        """Process services that reload the server (the `reload` directive's check) get
        this supervisor, and so the running configuration's digest."""
        for extra in self.server.extras.values():
            attach = getattr(extra, "attach", None)
            if attach is not None:
                attach(self)

    def _tell_extras(self, hook: str) -> None:
        for extra in self.server.extras.values():
            told = getattr(extra, hook, None)
            if told is not None:
                told()

    @defer.inlineCallbacks
    def _switch(self, configuration: Configuration) -> Any:
        """Start the new stanzas, wait for them to sync, then switch; or change nothing.

        All-or-nothing: if any stanza the new configuration starts (changed or new) has not
        synced within its startup_timeout, the new configuration is discarded and the
        running one, informers and warm caches included, keeps serving. A changed stanza
        that cannot reach its cluster must not replace one that can; and a new stanza
        served unsynced would answer SERVFAIL (and, without fallthrough, hide the stanzas
        after it). Unlike at start-up, where there is nothing better to serve, a reload
        has something better: what is running.
        """
        plans = configuration.plans
        running = [c for c in self.clusters if isinstance(c, Cluster)]
        written: dict[Cluster, Any] = {}
        kept = reuse_clusters(plans, running, written)
        fresh = [c for c in clusters_of(plans) if c not in kept]
        for cluster in fresh:
            cluster.setServiceParent(self.clusters)
        try:
            synced = yield defer.gatherResults(
                [c.wait_synced(min(c.config.startup_timeout, RELOAD_SYNC_LIMIT))
                 for c in fresh])
            # A stanza still listing without any error is slow (a big cluster, a low
            # apiserver_qps), not broken: it may use what is left of RELOAD_SYNC_LIMIT.
            slow = [i for i, (c, ok) in enumerate(zip(fresh, synced))
                    if not ok and not _last_error(c)
                    and c.config.startup_timeout < RELOAD_SYNC_LIMIT]
            if slow and self.running:
                late = yield defer.gatherResults(
                    [fresh[i].wait_synced(RELOAD_SYNC_LIMIT - fresh[i].config.startup_timeout)
                     for i in slow])
                for i, ok in zip(slow, late):
                    synced[i] = ok
            if not self.running or self._stopping:
                raise RuntimeError("the server is stopping")
            unsynced = [c for c, ok in zip(fresh, synced) if not ok]
            if unsynced:
                raise ReloadNotSynced("; ".join(_not_synced(c) for c in unsynced)
                                      + "; the new configuration was not used")
            self.server.retarget(plans)
        except Exception:
            for cluster in fresh:  # the running configuration stays as it was
                yield defer.maybeDeferred(cluster.disownServiceParent)
            raise
        for cluster, config in written.items():  # named where the stanza is written now
            cluster.relocate(config)
        self.digest = configuration.digest
        self._attach_extras()  # on the turn of the switch: a `reload` it started waits for it
        retired = [c for c in running if c not in kept]
        for cluster in retired:
            yield defer.maybeDeferred(cluster.disownServiceParent)
        self.reloads += 1
        log.info("kubernetai: reloaded {path}: {kept} stanza(s) kept warm, {new} started, "
                 "{old} stopped", path=self.path, kept=len(kept), new=len(fresh),
                 old=len(retired))
        return True

    def _reload_failed(self, failure: Failure, origin: str) -> bool:
        error = failure.value
        if isinstance(error, (corefile.CorefileError, Unparsable, ReloadAbandoned,
                              ReloadRefused, ReloadNotSynced, CannotListenError)):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
            log.failure("kubernetai: reload failed", failure)
        parsed = not isinstance(error, Unparsable)
        if parsed and not self._stopping:  # CoreDNS counts a reload that fails once the
            # Corefile parsed (and one given up because the process stops is no failure)
            self.reload_failures += 1
            RELOAD_FAILED.inc()
        self.last_reload_error = message
        if origin != "reload":
            log.error("kubernetai: reload failed, still serving the previous configuration: "
                      "{message}", message=message)
        elif parsed:
            log.error("plugin/reload: Corefile changed but reload failed: {message}",
                      message=message)
        else:
            log.warn("plugin/reload: Corefile parse failed: {message}", message=message)
        if not self._stopping:  # after STOPPING=1, no READY=1
            self.notifier.ready(f"reload failed, serving the previous configuration: "
                                f"{message}")
        return False

    def _reload_done(self, switched: Any) -> Any:
        self._reloading = None
        if switched is True:
            self.last_reload_error = None
            self.notifier.ready(self.status())
            gcpolicy.thaw(self.reactor)
            for hook in self.switched:
                hook()
        return switched


def _not_synced(cluster: Cluster) -> str:
    """Which stanza did not sync, in how long, and the API server's last answer."""
    config = cluster.config
    why = excerpt(_last_error(cluster))
    return (f"{config.filename}:{config.line} {config.primary_zone.rstrip('.')} did not "
            f"sync within {config.startup_timeout:g}s" + (f" ({why})" if why else ""))


def _last_error(cluster: Cluster) -> str:
    """The most recent error of the cluster's informers ("HTTP 401 Unauthorized", ...).

    Read from the informers' counters (plain strings, written by their threads; reading
    one is atomic). Uses `Cluster.last_error` when the cluster offers it.
    """
    offered = getattr(cluster, "last_error", None)
    if isinstance(offered, str):
        return offered
    errors = [informer.stats.last_error for informer in getattr(cluster, "_informers", [])
              if informer.stats.last_error]
    return "; ".join(dict.fromkeys(errors))


def _set_sigusr1(handler: Any) -> None:
    """Install the SIGUSR1 handler where Python allows it: from the main thread only.

    twistd runs the reactor (and so this) on the main thread. An application that runs
    the reactor on another thread gets no signal handler and calls `reload()` itself.
    """
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, handler)
