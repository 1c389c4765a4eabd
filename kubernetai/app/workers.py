"""`--workers N`: N processes answer on the same DNS ports, one set of informers feeds them.

Python runs one query at a time per process; more processes answer more queries per second
on more cores. The kernel spreads a port's datagrams and connections over every socket
opened on it with SO_REUSEPORT (by a hash of the source address and port), so:

* **the main process** (the one systemd or the operator started) runs as without
  `--workers`: every stanza's informers, the health/ready/prometheus listeners, reloads;
  its DNS sockets are opened with SO_REUSEPORT. Once it serves, it starts N-1 workers
  (`WorkerPool`), each the same `twistd kubernetai` command with `--worker-of PID`, its
  standard input the read end of a pipe.
* **the feed**: every batch a stanza's informers deliver (a full list, or watch events),
  once applied in the main process, is forwarded to every worker (`Feed`): a new worker
  first gets a snapshot of every synced resource, then each batch in order. Frames are
  length-prefixed pickles of the converted objects, pickled once on a thread of the feed
  and written to each worker by a thread of its own, so the main reactor never waits for
  a worker; a worker more than `LAG_LIMIT` bytes behind is killed and started again (with
  a fresh snapshot). The API server sees one list and one watch per resource, whatever N.
* **a worker** (`WorkerServer`) parses the same Corefile, runs its stanzas without
  informers (their caches are filled from the feed, with the same ClusterCache
  replace/apply), opens only the DNS ports (SO_REUSEPORT), none of the process services.
  It exits when its standard input ends (the main process is gone, even SIGKILLed) and
  asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG).
* a worker that dies is started again after `RESPAWN_DELAY`; SIGTERM to the main process
  stops the workers too; a reload (SIGUSR1) that switched the configuration restarts them
  on the new one.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from typing import Any, Iterator

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from kubernetai.app.load import clusters_of
from kubernetai.plugins.kubernetai.controller import Cluster
from kubernetai.plugins.kubernetai.informer import Changes, Replace

log = Logger()

__all__ = ["Feed", "Link", "WorkerPool", "WorkerServer", "decode_frames", "encode"]

#: A frame: its length (4 bytes, network order), then a pickle of a message.
FRAME = struct.Struct("!I")

#: Bytes queued for one worker beyond which it is considered stuck and restarted.
LAG_LIMIT = 256 << 20

#: Objects per frame of a full list: pickling holds the GIL, so a big list is pickled (and
#: unpickled) a chunk at a time, letting the reactor thread run in between.
CHUNK = 1000

#: Seconds before a worker that ended is started again.
RESPAWN_DELAY = 1.0

#: Seconds stopping waits for the workers after SIGTERM before SIGKILL.
STOP_TIMEOUT = 5.0


def encode(message: Any) -> bytes:
    """One frame: a length, then the message pickled."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(data)) + data


def frames(message: Any) -> Iterator[bytes]:
    """The frames of a message: ``("replace", stanza, resource, {key: object})`` or
    ``("changes", stanza, resource, events)``, ``stanza`` the index of the cluster in
    `clusters_of` of the configuration both processes read. A big full list goes as
    ``("part", ...)`` frames of `CHUNK` objects, then a ``"replace"`` with the rest."""
    kind, index, resource, payload = message
    if kind == "replace" and len(payload) > CHUNK:
        entries = iter(payload.items())
        chunk = dict(itertools.islice(entries, CHUNK))
        while True:
            rest = dict(itertools.islice(entries, CHUNK))
            if not rest:
                break
            yield encode(("part", index, resource, chunk))
            chunk = rest
        yield encode(("replace", index, resource, chunk))
        return
    yield encode(message)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def decode_frames(fd: int) -> Any:
    """The messages read from ``fd``, until it ends (blocking: a thread's)."""
    while True:
        head = _read_exactly(fd, FRAME.size)
        if head is None:
            return
        body = _read_exactly(fd, FRAME.unpack(head)[0])
        if body is None:
            return
        yield pickle.loads(body)  # noqa: S301 - from our own parent process only


class Link:
    """The pipe to one worker, written by a thread of its own from a bounded queue."""

    def __init__(self, fd: int, limit: int = LAG_LIMIT) -> None:
        self.fd = fd
        self.limit = limit
        self.pending = 0  # bytes queued, not yet written
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kubernetai-feed-link",
                                        daemon=True)
        self._thread.start()

    def offer(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) if the worker is that far behind."""
        with self._lock:
            if self.pending and self.pending + len(data) > self.limit:
                return False
            self.pending += len(data)
        self._queue.put(data)
        return True

    def close(self) -> None:
        """Stop writing once what is queued is written (or the worker is gone)."""
        self._queue.put(None)

    def _run(self) -> None:
        broken = False
        try:
            while True:
                data = self._queue.get()
                if data is None:
                    return
                if not broken:
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(self.fd, view):]
                    except OSError:
                        broken = True  # the worker is gone; its end is reported elsewhere
                with self._lock:
                    self.pending -= len(data)
        finally:
            os.close(self.fd)


class Feed:
    """Forwards messages to every attached link, pickled once, on a thread of its own."""

    def __init__(self, reactor: Any, lagging: Any) -> None:
        self.reactor = reactor
        self._lagging = lagging  # called (reactor thread) with a link that fell behind
        self._queue: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kubernetai-feed", daemon=True)
        self._thread.start()

    def publish(self, message: Any) -> None:
        self._queue.put(("all", None, message))

    def attach(self, link: Link, snapshot: list[Any]) -> None:
        """``link`` gets ``snapshot`` (messages), then everything published after this call."""
        self._queue.put(("attach", link, snapshot))

    def detach(self, link: Link) -> None:
        self._queue.put(("detach", link, None))

    def stop(self) -> None:
        self._queue.put(("stop", None, None))

    def _run(self) -> None:
        links: list[Link] = []
        while True:
            op, link, message = self._queue.get()
            if op == "stop":
                for link in links:
                    link.close()
                return
            if op == "attach":
                links.append(link)
                for item in message:
                    for data in frames(item):
                        self._send(links, link, data)
            elif op == "detach":
                if link in links:
                    links.remove(link)
                    link.close()
            else:
                for data in frames(message):
                    for each in list(links):
                        self._send(links, each, data)

    def _send(self, links: list[Link], link: Link, data: bytes) -> None:
        if link in links and not link.offer(data):
            links.remove(link)
            link.close()
            self.reactor.callFromThread(self._lagging, link)


class _Child(protocol.ProcessProtocol):
    def __init__(self, pool: WorkerPool, slot: int) -> None:
        self.pool = pool
        self.slot = slot
        self.link: Link | None = None
        self.retiring = False  # asked to end (a reload): started again without a warning

    def processEnded(self, reason: Any) -> None:
        self.pool._ended(self, reason)


class WorkerPool(service.Service):
    """Starts and feeds the worker processes of `--workers` (main process side)."""

    def __init__(self, supervisor: Any, count: int, command: list[str], *,
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.supervisor = supervisor
        self.count = count
        self.command = command
        self.children: dict[int, _Child] = {}  # slot -> running worker
        self.started = 0  # workers started so far (restarts included)
        self._clusters: list[Cluster] = []
        self._feed: Feed | None = None
        self._stopping = False
        self._ended_waiters: list[defer.Deferred[None]] = []
        supervisor.switched.append(self._reloaded)

    def pids(self) -> list[int]:
        return [child.transport.pid for child in self.children.values()
                if child.transport is not None and child.transport.pid]

    def startService(self) -> None:
        super().startService()
        self._feed = Feed(self.reactor, self._lagging)
        self.supervisor.server.listening.addCallback(self._serving)

    def _serving(self, ports: Any) -> Any:
        if any(plan.port == 0 for plan in self.supervisor.server.plans):
            log.error("kubernetai: --workers needs fixed ports (port 0 is another port in "
                      "each process): serving from this process only")
            return ports
        if self.running and not self._stopping:
            self._tap()
            for slot in range(self.count - 1):
                self._spawn(slot)
        return ports

    def _tap(self) -> None:
        """Forward the batches of the clusters of the running configuration."""
        for cluster in self._clusters:
            if self._forward in cluster.taps:
                cluster.taps.remove(self._forward)
        self._clusters = [c for c in clusters_of(self.supervisor.server.plans)
                          if isinstance(c, Cluster)]
        for cluster in self._clusters:
            cluster.taps.append(self._forward)

    def _forward(self, cluster: Cluster, resource: str, batch: Replace | Changes) -> None:
        if self._feed is None or cluster not in self._clusters:
            return
        index = self._clusters.index(cluster)
        if isinstance(batch, Replace):  # the state applied (a listed-but-deleted pod kept)
            self._feed.publish(("replace", index, resource, dict(cluster.store(resource))))
        else:
            self._feed.publish(("changes", index, resource, batch.events))

    def _snapshot(self) -> list[Any]:
        return [("replace", index, resource, dict(cluster.store(resource)))
                for index, cluster in enumerate(self._clusters)
                for resource in cluster.watched if cluster.cache.synced.get(resource)]

    def _spawn(self, slot: int) -> None:
        if not self.running or self._stopping or slot in self.children or self._feed is None:
            return
        read_end, write_end = os.pipe()
        child = _Child(self, slot)
        try:
            process = self.reactor.spawnProcess(child, self.command[0], self.command,
                                                env=os.environ,
                                                childFDs={0: read_end, 1: 1, 2: 2})
        except Exception:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        child.link = Link(write_end)
        self.children[slot] = child
        self.started += 1
        self._feed.attach(child.link, self._snapshot())
        log.info("kubernetai: worker {slot} started (pid {pid})", slot=slot + 1,
                 pid=process.pid)

    def _ended(self, child: _Child, reason: Any) -> None:
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
        if child.link is not None and self._feed is not None:
            self._feed.detach(child.link)
        if self._stopping or not self.running:
            if not self.children:
                waiters, self._ended_waiters = self._ended_waiters, []
                for waiter in waiters:
                    waiter.callback(None)
            return
        if not child.retiring:
            log.warn("kubernetai: worker {slot} ended ({why}); starting it again",
                     slot=child.slot + 1, why=reason.getErrorMessage())
        self.reactor.callLater(RESPAWN_DELAY, self._spawn, child.slot)

    def _lagging(self, link: Link) -> None:
        for child in self.children.values():
            if child.link is link:
                log.warn("kubernetai: worker {slot} fell {size} bytes behind the feed; "
                         "restarting it", slot=child.slot + 1, size=link.pending)
                _signal(child, signal.SIGKILL)

    def _reloaded(self) -> None:
        """A reload switched the configuration: workers restart on it (`_ended`)."""
        if not self.running or self._stopping:
            return
        self._tap()
        for child in list(self.children.values()):
            child.retiring = True
            _signal(child, signal.SIGTERM)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._stopping = True
        for cluster in self._clusters:
            if self._forward in cluster.taps:
                cluster.taps.remove(self._forward)
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        if not self.children:
            return defer.succeed(None)
        ended: defer.Deferred[None] = defer.Deferred()
        self._ended_waiters.append(ended)
        for child in list(self.children.values()):
            _signal(child, signal.SIGTERM)

        def kill() -> None:
            for child in list(self.children.values()):
                _signal(child, signal.SIGKILL)
        timer = self.reactor.callLater(STOP_TIMEOUT, kill)
        return ended.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])


def _signal(child: _Child, signum: int) -> None:
    try:
        if child.transport is not None:
            child.transport.signalProcess(signum)
    except Exception:  # noqa: BLE001 - already gone: its end is reported anyway
        pass


def worker_command(path: str, port_override: int | None) -> list[str]:
    """The command of a worker of this process: the same plugin, `--worker-of` this PID."""
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
               "--nodaemon", "--pidfile=", "kubernetai",
               "--corefile", path, "--worker-of", str(os.getpid())]
    if port_override is not None:
        command += ["--dns-port", str(port_override)]
    return command


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent process ends (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the end of the feed stops the worker all the same


class WorkerServer(service.MultiService):
    """A worker process: the Corefile's DNS servers, stanzas fed by the main process."""

    def __init__(self, plans: list[Any], parent_pid: int, *, reactor: Any = None,
                 feed_fd: int = 0) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        from kubernetai.app.server import KubernetaiService
        self.reactor = reactor
        self.parent_pid = parent_pid
        self.feed_fd = feed_fd
        self.clusters = [c for c in clusters_of(plans) if isinstance(c, Cluster)]
        self.server = KubernetaiService(plans, reactor=reactor, own_clusters=False)
        self.server.reuse_port = True
        for extra in self.server.extras.values():  # health, ready, metrics: the main's
            extra.disownServiceParent()
        self.server.extras = {}
        self.server.setServiceParent(self)

    def startService(self) -> None:
        _die_with_parent()
        if os.getppid() != self.parent_pid:
            log.error("kubernetai: worker: the main process {pid} is gone", pid=self.parent_pid)
            self.reactor.callWhenRunning(self.reactor.stop)
        threading.Thread(target=self._read, name="kubernetai-feed-reader", daemon=True).start()
        super().startService()

    def _read(self) -> None:
        """Apply the feed (reader thread: full lists are prepared here, off the reactor)."""
        parts: dict[tuple[int, str], dict[str, Any]] = {}  # a full list's chunks so far
        try:
            for kind, index, resource, payload in decode_frames(self.feed_fd):
                cluster = self.clusters[index]
                if kind == "part":
                    parts.setdefault((index, resource), {}).update(payload)
                    continue
                if kind == "replace":
                    earlier = parts.pop((index, resource), None)
                    if earlier is not None:
                        earlier.update(payload)
                        payload = earlier
                    prepared = cluster.cache.prepare_replace(resource, payload)
                    batch: Replace | Changes = Replace(payload, prepared)
                else:
                    batch = Changes(payload)
                self.reactor.callFromThread(cluster.receive, resource, batch)
        except Exception:  # noqa: BLE001 - a broken feed: stop, the main starts another
            log.failure("kubernetai: worker: the feed from the main process broke")
        self.reactor.callFromThread(self._orphaned)

    def _orphaned(self) -> None:
        if not self.running:  # stopping already (SIGTERM)
            return
        log.info("kubernetai: worker: the feed from the main process ended; stopping")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass
