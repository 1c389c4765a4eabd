"""List-then-watch of one Kubernetes resource, on a thread, feeding the reactor.

An `Informer` keeps one stanza's view of one resource current, the way client-go's
reflector does for CoreDNS, but built for a Python process:

* It lists the resource across all namespaces page by page (``limit``/``continue``) and
  then watches from the list's resourceVersion with bookmarks. Both requests go through
  the official client (config, auth, TLS, proxies) with ``_preload_content=False``, and the
  informer parses the JSON itself and hands each object to a ``convert`` function; the
  client's model objects, which cost ~0.5 ms and ~12 KB per Service, are never built.
* It reads the watch stream chunk by chunk itself instead of using
  ``kubernetes.watch.Watch``, whose 410 handling retries from the same resourceVersion,
  whose ``deserialize=False`` mode fails on ERROR events, and which sets no read timeout.
* Every request carries a client read timeout, and a watch a tighter one, the silence
  limit (`stall_timeout`, 75 s by default; see `STALL_TIMEOUT`), so a half-dead connection
  (no bytes, no FIN) or a stalled server is noticed; watches ask for BOOKMARK events, which
  keep a healthy stream from ever being that silent and the resourceVersion fresh. Every
  socket also has TCP keepalive (see `_keepalive`), so a vanished peer is noticed even
  between bookmarks and middleboxes do not drop an idle watch connection.
* Each informer has a connection pool of its own (on the caller's configuration), so that
  stop() can shut its sockets and the retry policy is the informer's: urllib3 does not
  retry behind its back (see `_RETRIES`).
* What it learns reaches the reactor only through ``reactor.callFromThread``: a `Replace`
  after each full list and `Changes` batches for watch events, coalesced so that a burst
  of events costs a few reactor calls rather than one each. An ``observer`` (the metrics)
  is told the same way of each request and each watch restart: one call per request,
  never per event.
* Every list is a consistent read (no ``resourceVersion``): the answer is the server's
  current state, never an older cache, so a re-list after the server's history moved can
  never bring back what the old history had. A re-list's `Replace` drops every object the
  receiver holds that the list no longer has.

The server's history can move under an informer: etcd restored from a backup, or a
simulated API server restarted from its manifests, starts its resourceVersions below what
clients have seen. Watching on from the old resourceVersion would then miss every change
between the two histories for good (objects deleted meanwhile answered forever). These
signs mean "the last resourceVersion is no longer usable" and cause a fresh list:

* 410 Gone / Expired (HTTP, or an ERROR event): the resourceVersion left the history window;
* ``Timeout: Too large resource version`` (HTTP 504 whose Status has the cause
  ``ResourceVersionTooLarge``, or that Status in an ERROR event): kube-apiserver's answer
  to a list or continue token at a resourceVersion it has not reached (from its watch
  cache after waiting 3 s, from etcd at once), and to such a watch when etcd serves it;
* a resourceVersion going backwards: a watch event or bookmark older than the last one
  seen, a list older than the last one seen (the list is then the re-list, and logged),
  or the server's current resourceVersion, which the informer asks with a one-item
  consistent list before it watches again after a broken connection or a silent watch.
  That last check matters most: kube-apiserver's watch cache holds a watch from a
  resourceVersion it has not reached open without a word (it only ever sends what is
  newer), so a restarted or restored server gives no other sign at all.

resourceVersions are formally opaque, but every kube-apiserver (etcd, and kine) makes
them decimal revision numbers; the informer compares them only when both are integers.

Recovery, per situation:

==============================================  ===========================================
410 Gone, too-large resourceVersion,             re-list at once (a consistent read) and
resourceVersion going backwards                  deliver a fresh Replace
410 or too-large on a list's continue page,      list again from the first page, at once
pages of one list at different versions          (up to three times, then back off)
429 on a list page                               wait Retry-After, ask for that page again
watch ended normally (timeoutSeconds)            re-watch from the last resourceVersion
watch silent for `stall_timeout`                 check the server's resourceVersion, then
                                                 re-watch from the last one at once
connection refused/reset/cut, read timeout       back off, check the server's
                                                 resourceVersion, re-watch from the last one
429, 5xx, other HTTP errors, ERROR events        back off (exponential, jittered, at least
                                                 Retry-After) and re-watch from the last
                                                 resourceVersion (or re-list if none yet)
a watch that ends within a second with nothing   treated as an error (client-go does too),
                                                 so a misbehaving server is not hammered
==============================================  ===========================================
"""

from __future__ import annotations

import email.utils
import functools
import json
import random
import select
import socket
import ssl
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from twisted.logger import Logger

__all__ = ["Watched", "Replace", "Changes", "Informer", "InformerObserver", "InformerStats",
           "RESOURCES"]

log = Logger(namespace="kubernetai.plugins.kubernetai.informer")

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"

RESOURCES = ("services", "endpointslices", "pods", "namespaces", "serviceimports")

# client-go treats a watch that closes within this time having delivered nothing as an error.
_SHORT_WATCH = 1.0

# How long a watch may stay silent (no byte at all, not even a BOOKMARK) before it counts as
# stalled and is re-opened from the last resourceVersion. kube-apiserver sends a watch that
# asked for bookmarks one BOOKMARK about every minute (cacher.go: defaultBookmarkFrequency
# = 1 minute, dispatched in 1 s buckets by a timer jittered around 1 s) and one 2 s before
# the watch's timeoutSeconds; a healthy stream is therefore never silent much past 60 s.
# The 15 s of margin are the ones kube-apiserver itself grants a bookmark
# (DefaultEventFreshDuration = defaultBookmarkFrequency + 15 s). A false alarm (a server
# that sends no bookmarks, or one delayed past 75 s) costs one cheap re-watch from the
# same resourceVersion, no re-list, so the limit need not be generous; the previous
# 90 s read timeout was looser and the watch's 5-6 minute timeoutSeconds far looser.
STALL_TIMEOUT = 75.0

# TCP keepalive on every informer socket: first probe after 30 s idle, then every 5 s, the
# connection given up after 3 unanswered probes: a vanished peer (host gone, NAT or
# conntrack state lost) is noticed within 45 s, the budget of client-go's HTTP/2 health
# check (ReadIdleTimeout 30 s + PingTimeout 15 s), which an HTTP/1.1 client does not have.
# The probes also keep load balancers and NATs from expiring a quiet watch connection.
_KEEPALIVE = (30, 5, 3)  # idle seconds, interval seconds, probes

# A server's Retry-After is honoured up to this many seconds (a bogus huge value must not
# park the informer for hours).
_MAX_RETRY_AFTER = 60.0

# Times one list may start over from its first page (continue token expired or from
# another history, pages at different versions) or retry a throttled page before the
# list counts as failed and is retried after a backoff.
_LIST_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Watched:
    """What to watch: a resource across all namespaces, optionally filtered server-side."""

    resource: str  # one of RESOURCES
    label_selector: str | None = None
    field_selector: str | None = None


@dataclass(frozen=True, slots=True)
class Replace:
    """A complete list result: key ("ns/name", or "name" for cluster-scoped) -> converted.

    The receiver replaces its contents with these, dropping whatever is not in `items`.
    """

    items: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Changes:
    """Watch events in order: (ADDED | MODIFIED | DELETED, key, converted or None).

    ADDED and MODIFIED carry the converted object and are best applied as an upsert;
    DELETED carries None and is best applied as a discard. An object `convert` returns
    None for is skipped, as CoreDNS skips it: no event at all, so a MODIFIED that turns
    an object unconvertible (a pod getting a deletionTimestamp) leaves the receiver's
    previous version in place until its DELETED; a re-list's Replace omits it.
    """

    events: tuple[tuple[str, str, Any], ...]


@dataclass(slots=True)
class InformerStats:
    """Counters, written by the informer thread only; for tests, logs and metrics."""

    lists: int = 0          # full lists completed (each delivered a Replace)
    relists: int = 0        # of which were not the first
    pages: int = 0          # list requests that returned a page
    watches: int = 0        # watch requests made
    errors: int = 0         # failed requests, broken/stalled streams, ERROR events
    events: int = 0         # ADDED/MODIFIED/DELETED events received
    bookmarks: int = 0
    batches: int = 0        # Changes delivered
    skipped: int = 0        # objects `convert` returned None for (or raised on)
    resets: int = 0         # times the server's history moved (too-large or backwards RV)
    stalls: int = 0         # watches silent for `stall_timeout` (also counted in errors)
    restarts: int = 0       # watches that ended and were opened again (any reason)
    probes: int = 0         # answered one-item lists checking the server's resourceVersion
    last_error: str = ""


class InformerObserver(Protocol):
    """Told what an informer does, on the reactor thread (the metrics)."""

    def request(self, code: str, seconds: float | None, waited: float | None) -> None:
        """One API request ended: its HTTP status (``<error>`` when no response came), the
        seconds it took for a list (None for a watch, which streams), the seconds it
        waited for the rate limiter (None without a limiter)."""

    def watch_restarted(self, reason: str) -> None:
        """A watch ended and another is opened; ``reason`` is ``ended`` (the server
        closed it), ``stalled``, ``expired`` (a re-list comes first) or ``error``."""


@dataclass(slots=True)
class _Call:
    """What is known of one request, for the observer."""

    code: str = "<error>"
    waited: float | None = None


class _Gone(Exception):
    """410: the resourceVersion (or continue token) is too old; a fresh list is needed."""


class _HistoryMoved(Exception):
    """The server's history no longer contains our resourceVersion: a fresh list is needed.

    Raised on ``Too large resource version`` and on a resourceVersion going backwards:
    the server was restored or restarted with a history that starts below what this
    informer has seen, so watching on from the last resourceVersion would miss changes.
    """


class _Stalled(Exception):
    """The watch sent nothing at all for `stall_timeout` seconds (headers or body)."""

    def __init__(self, seconds: float, received: int) -> None:
        what = f"after {received} message(s)" if received else "having sent nothing"
        super().__init__(f"watch stalled: no data for {seconds:g}s, {what}")
        self.received = received


class _WatchError(Exception):
    """An ERROR event other than 410, or a stream that could not be understood."""


class _StartOver(Exception):
    """A list must begin again from its first page; `cause` is raised if it cannot."""

    def __init__(self, why: str, cause: Exception) -> None:
        super().__init__(why)
        self.cause = cause


class _ShortWatch(Exception):
    """The watch closed almost at once with nothing delivered."""


class _Stopping(Exception):
    """stop() was called."""


# The informer retries by itself, with backoff, from the right resourceVersion. urllib3's
# own retries would hide that: a stalled request would be retried 3 times (4 read timeouts
# before anyone notices) and a 429 would sleep out Retry-After where stop() cannot reach.
_RETRIES = urllib3.Retry(total=0, respect_retry_after_header=False, raise_on_status=False,
                         raise_on_redirect=False)


class _Connections:
    """The connections one informer's private pool opened, so stop() can shut them all."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def connected(self, connection: Any) -> None:
        # Called on the informer thread right after a connection is established.
        with self._lock:
            self._connections.add(connection)
            stopping = self._stopping.is_set()
        if stopping:  # stop() came while connecting: it could not see this socket yet
            _shut(connection)

    def shutdown_all(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _private_client(api_client: k8s.ApiClient, connections: _Connections) -> k8s.ApiClient:
    """An ApiClient on the caller's configuration with a connection pool of its own.

    It shares the configuration (server, TLS, credentials and their refresh hooks, proxy)
    and the default headers, but its connections belong to this informer alone: stop()
    can shut them without touching another informer's, and the retry policy is ours.
    """
    private = k8s.ApiClient(configuration=api_client.configuration)
    private.default_headers = dict(api_client.default_headers)
    private.cookie = api_client.cookie
    manager = private.rest_client.pool_manager
    manager.pool_classes_by_scheme = {
        scheme: _tracking_pool(pool_class, connections)
        for scheme, pool_class in manager.pool_classes_by_scheme.items()}
    manager.connection_pool_kw["retries"] = _RETRIES
    return private


def _tracking_pool(pool_class: type, connections: _Connections) -> type:
    """A subclass of a urllib3 pool class whose connections report when they connect."""
    base = pool_class.ConnectionCls

    def connect(self: Any) -> None:
        base.connect(self)
        _keepalive(getattr(self, "sock", None))
        connections.connected(self)

    connection_class = type(f"Tracked{base.__name__}", (base,), {"connect": connect})
    return type(f"Tracked{pool_class.__name__}", (pool_class,),
                {"ConnectionCls": connection_class})


def _keepalive(sock: Any) -> None:
    """Turn on TCP keepalive with the informer's timings (`_KEEPALIVE`), where supported."""
    if sock is None:
        return
    idle, interval, probes = _KEEPALIVE
    # Linux names the idle time TCP_KEEPIDLE, macOS TCP_KEEPALIVE.
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for option, value in ((idle_option, idle), (getattr(socket, "TCP_KEEPINTVL", None), interval),
                          (getattr(socket, "TCP_KEEPCNT", None), probes)):
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except (OSError, AttributeError):
            pass  # not a TCP socket (a proxy tunnel, a test double): keep what it has


def lister(api_client: k8s.ApiClient, resource: str) -> Callable[..., Any]:
    if resource == "services":
        return k8s.CoreV1Api(api_client).list_service_for_all_namespaces
    if resource == "pods":
        return k8s.CoreV1Api(api_client).list_pod_for_all_namespaces
    if resource == "namespaces":
        return k8s.CoreV1Api(api_client).list_namespace
    if resource == "endpointslices":
        return k8s.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces
    if resource == "serviceimports":
        return functools.partial(k8s.CustomObjectsApi(api_client).list_cluster_custom_object,
                                 "multicluster.x-k8s.io", "v1alpha1", "serviceimports")
    raise ValueError(f"cannot watch {resource!r}: expected one of {', '.join(RESOURCES)}")


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name", "")
    return f"{namespace}/{name}" if namespace else name


class Informer:
    """Keeps a receiver's copy of one resource current: list, then watch, on a thread.

    `read_timeout` bounds every read of every request (a list page can take a while on a
    big cluster); `stall_timeout` is the tighter silence limit of a watch (headers, then
    any byte of the stream): see `STALL_TIMEOUT` for why 75 s. A watch ends after
    `watch_timeout` seconds (times a random 1-1.2) by asking the server to end it.
    """

    def __init__(self, api_client: k8s.ApiClient, watched: Watched, *,
                 convert: Callable[[dict[str, Any]], Any | None],
                 deliver: Callable[[Replace | Changes], None],
                 reactor: Any = None, read_timeout: float = 90.0, page_size: int = 500,
                 backoff: tuple[float, float] = (0.2, 30.0), batch_interval: float = 0.05,
                 name: str = "", watch_timeout: int = 300,
                 connect_timeout: float = 10.0, limiter: Any = None,
                 stall_timeout: float = STALL_TIMEOUT,
                 observer: InformerObserver | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if read_timeout <= 0 or page_size <= 0 or watch_timeout <= 0 or stall_timeout <= 0:
            raise ValueError("read_timeout, page_size, watch_timeout and stall_timeout must be "
                             "positive")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"bad backoff {backoff!r}: need 0 < initial <= maximum")
        self.watched = watched
        self.limiter = limiter  # a limiter.RequestLimiter shared by the stanza's informers
        self.observer = observer
        self.name = name or watched.resource
        self._stopping = threading.Event()
        self._connections = _Connections(self._stopping)
        self._api = _private_client(api_client, self._connections)
        self._list_fn = lister(self._api, watched.resource)
        self._convert = convert
        self._deliver = deliver
        self._reactor = reactor
        self.read_timeout = float(read_timeout)
        self.stall_timeout = float(min(stall_timeout, read_timeout))
        self.connect_timeout = float(min(connect_timeout, read_timeout))
        self.page_size = int(page_size)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.batch_interval = max(0.0, float(batch_interval))
        # How long a stream must stay silent to count as idle, so that a pending batch is
        # flushed at once instead of waiting out the whole batch interval.
        self._idle_grace = min(self.batch_interval, max(0.001, self.batch_interval / 10))
        self.watch_timeout = int(watch_timeout)
        self.stats = InformerStats()
        self.synced_once = False
        self.resource_version: str | None = None  # the latest one seen (thread-written)
        # time.monotonic() of start(), and of the last watch event, bookmark or list: the
        # thread writes them, anyone may read them (a float assignment is atomic).
        self.started_at: float | None = None
        self.last_heard: float | None = None
        self._failures = 0
        self._progressed = False  # anything received since the last list
        # The last watch broke or went silent: check the server's resourceVersion before
        # the next one (see _check_history).
        self._suspect = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread that lists and watches until stop()."""
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}",
                                        daemon=True)
        self.started_at = time.monotonic()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Make the thread exit and wait for it up to `timeout` seconds.

        Every socket of the informer's own pool is shut, which ends a blocked read at
        once, whether of a watch stream, a list body or response headers. Only a TCP
        connect or TLS handshake in progress cannot be cut short; it ends within
        `connect_timeout` (the thread is a daemon either way). Nothing is delivered
        after stop() is called, even a batch already on its way to the reactor. It blocks
        for up to `timeout`, so the reactor thread should call it only at shutdown.
        """
        self.request_stop()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warn("informer {name}: thread still blocked {timeout}s after stop(); "
                     "it will exit when its request times out", name=self.name,
                     timeout=timeout)

    def request_stop(self) -> None:
        """Tell the thread to exit and cut its blocked reads, without waiting for it.

        Stopping many informers: request all, then `stop()` each, so they wind down at once.
        """
        self._stopping.set()
        self._interrupt()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _interrupt(self) -> None:
        """Shut every socket of this informer's pool, so that a blocked read returns."""
        self._connections.shutdown_all()

    @staticmethod
    def _release(response: Any, *, reuse: bool) -> None:
        """Free a response: back to the pool when fully read, else closed."""
        try:
            if not reuse:
                response.close()
            response.release_conn()
        except Exception:  # noqa: BLE001 - cleaning up a broken connection
            pass

    # -- delivery -----------------------------------------------------------------

    def _post(self, batch: Replace | Changes) -> None:
        """Hand a batch to the reactor thread; the only way data leaves this thread."""
        if not self._stopping.is_set():
            self._reactor.callFromThread(self._deliver_now, batch)

    def _tell(self, method: Callable[..., None], *args: Any) -> None:
        """Call an observer's method on the reactor thread (not once stopping)."""
        if not self._stopping.is_set():
            self._reactor.callFromThread(self._tell_now, method, *args)

    def _tell_now(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:  # noqa: BLE001 - a metrics bug must not reach the reactor
            log.failure("informer {name}: the observer failed", name=self.name)

    def _restarted(self, reason: str) -> None:
        self.stats.restarts += 1
        if self.observer is not None:
            self._tell(self.observer.watch_restarted, reason)

    def _deliver_now(self, batch: Replace | Changes) -> None:
        # Runs on the reactor thread.
        if self._stopping.is_set():
            return
        try:
            self._deliver(batch)
        except Exception:  # noqa: BLE001 - a receiver's bug must not reach the reactor
            log.failure("informer {name}: deliver() failed on a {kind}", name=self.name,
                        kind=type(batch).__name__)

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - a bug here must at least be seen
            log.failure("informer {name}: thread died", name=self.name)
        finally:
            try:
                self._api.close()
            except Exception:  # noqa: BLE001
                pass
        log.debug("informer {name}: stopped", name=self.name)

    def _loop(self) -> None:
        reason = "initial list"
        need_list = True
        while not self._stopping.is_set():
            watching = False
            try:
                if need_list:
                    self._list(reason)
                    need_list = False
                elif self._suspect:
                    self._check_history()
                watching = True
                self._watch()
                if self._stopping.is_set():
                    return
                # A normal end (timeoutSeconds): watch again from the last RV, no list.
                log.debug("informer {name}: watch ended normally; re-watching from rv {rv}",
                          name=self.name, rv=self.resource_version)
                self._restarted("ended")
                continue
            except _Stopping:
                return
            except Exception as error:  # noqa: BLE001 - every failure is retried
                if self._stopping.is_set():
                    return
                failure = error
            if watching:
                self._restarted(_restart_reason(failure))
            self.stats.errors += 1
            self.stats.last_error = _describe(failure)
            if _may_hide_a_restart(failure):
                self._suspect = True
            if isinstance(failure, _Stalled) and not need_list:
                self.stats.stalls += 1
                log.warn("informer {name}: {why}; watching again from rv {rv}",
                         name=self.name, why=_describe(failure), rv=self.resource_version)
                continue  # the silence itself was the wait: no backoff on top of it
            if _is_gone(failure) or _history_moved(failure):
                need_list, reason = True, self._relist_reason(failure)
                if self._progressed:
                    continue  # re-list at once; _list logs one line with the reason
                # Nothing was received since the last list: do not re-list in a tight loop.
                why = f"{reason} right after a list; re-listing"
            elif need_list:
                reason = f"list failed: {_describe(failure)}"
                why = f"{reason}; listing again"
            else:
                why = f"{_describe(failure)}; watching again from rv {self.resource_version}"
            if self._pause(why, retry_after=_retry_after(failure)):
                return

    def _relist_reason(self, failure: BaseException) -> str:
        """Why a re-list is needed (for the log), counting moves of the server's history."""
        if _is_gone(failure):
            return f"410 Gone: {_describe(failure)}"
        self.stats.resets += 1
        log.warn("informer {name}: the API server's history moved ({why}); the last "
                 "resourceVersion {rv} is unusable, re-listing", name=self.name,
                 why=_describe(failure), rv=self.resource_version)
        return f"history moved: {_describe(failure)}"

    def _check_history(self) -> None:
        """Before watching again after a broken connection or a silent watch: is the server
        still on our history? Raises `_HistoryMoved` if its resourceVersion is below ours.

        A restarted API server (or one whose etcd was restored) drops every connection and
        comes back; if its resourceVersions start below ours, kube-apiserver's watch cache
        holds a watch from ours open without a word, only ever sending what is newer, so
        the watch alone would learn nothing until the silence limit, and then again
        nothing. One one-item consistent list tells at once. It costs one small request
        per reconnect, where client-go re-lists everything after most watch errors.
        """
        current = self._server_resource_version()
        self._suspect = False
        if _older(current, self.resource_version):
            raise _HistoryMoved(f"the server is at rv {current}, below the last one seen, "
                                f"{self.resource_version}")

    def _pause(self, why: str, *, retry_after: float | None) -> bool:
        """Back off before the next attempt: exponential with jitter, at least Retry-After.

        Returns True if stop() was called meanwhile.
        """
        self._failures += 1
        first, cap = self.backoff
        ceiling = min(cap, first * 2 ** min(self._failures - 1, 30))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after:
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER))
        log.warn("informer {name}: {why} in {delay:.2f}s", name=self.name, why=why, delay=delay)
        return self._stopping.wait(delay)

    def _progress(self) -> None:
        self._failures = 0
        self._progressed = True

    @contextmanager
    def _accounted(self, timed: bool) -> Iterator[_Call]:
        """Tell the observer about the request made inside the block (as client-go counts
        every request, and times those that are not watches, from before the rate limiter
        to the end of the answer). A request cut short by stop() is not told."""
        call = _Call()
        started = time.monotonic()
        try:
            yield call
        finally:
            observer = self.observer
            if observer is not None and not self._stopping.is_set():
                self._tell(observer.request, call.code,
                           time.monotonic() - started if timed else None, call.waited)

    def _request(self, call: _Call, *, read_timeout: float | None = None,
                 **params: Any) -> Any:
        """One list or watch request; returns the urllib3 response (status 2xx). ``call``
        gets its status code and rate limiter wait."""
        watched = self.watched
        if watched.label_selector:
            params["label_selector"] = watched.label_selector
        if watched.field_selector:
            params["field_selector"] = watched.field_selector
        if self._stopping.is_set():
            raise _Stopping()
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        try:
            if self.limiter is None:
                response = self._list_fn(_preload_content=False, _request_timeout=timeout,
                                         **params)
            else:
                # apiserver_qps/_burst/_max_inflight: the slot is held until the headers
                # arrive, as client-go's limits apply to starting requests, not to reading
                # watch streams.
                with self.limiter.request() as waited:
                    call.waited = waited
                    response = self._list_fn(_preload_content=False,
                                             _request_timeout=timeout, **params)
        except ApiException as error:
            if error.status:  # 0: the client's own failure (TLS), no response
                call.code = str(error.status)
            raise
        call.code = str(getattr(response, "status", "") or "<error>")
        return response

    def _fetch(self, **params: Any) -> dict[str, Any]:
        """One list request (a page), read whole and decoded."""
        with self._accounted(timed=True) as call:
            response = self._request(call, **params)
            body = None
            try:
                body = response.read()
            finally:
                self._release(response, reuse=body is not None)
        if self._stopping.is_set():
            raise _Stopping()
        document = json.loads(body)
        if not isinstance(document, dict):
            raise _WatchError("the list answer is not a JSON object")
        return document

    def _server_resource_version(self) -> str:
        """The server's current resourceVersion, from a one-item consistent list."""
        document = self._fetch(limit=1)
        self.stats.probes += 1
        return str((document.get("metadata") or {}).get("resourceVersion") or "")

    # -- list ---------------------------------------------------------------------

    def _list(self, reason: str) -> None:
        """List every page (a consistent read), then deliver one Replace.

        A continue token the server no longer honours (410 once compacted, or "too large"
        when it comes from a history the server no longer has), or pages reporting
        different resourceVersions, start the list over from the first page, at most
        `_LIST_ATTEMPTS` times in all; then the list has failed and is retried after a
        backoff.
        """
        started = time.monotonic()
        self._progressed = False
        attempts = 0
        while True:
            attempts += 1
            try:
                items, resource_version, pages = self._read_pages()
                break
            except _StartOver as start_over:
                if attempts >= _LIST_ATTEMPTS:
                    raise start_over.cause from None
                log.info("informer {name}: {why}; listing from the start", name=self.name,
                         why=start_over)
        previous = self.resource_version
        if _older(resource_version, previous):
            # A consistent read is the server's present: take it, and say so loudly.
            self.stats.resets += 1
            log.warn("informer {name}: the list's resourceVersion {rv} is below the last one "
                     "seen, {previous}: the API server's history was reset (restored or "
                     "restarted); its list replaces everything", name=self.name,
                     rv=resource_version, previous=previous)
        self.resource_version = resource_version
        self._suspect = False
        first = not self.synced_once
        self.stats.lists += 1
        if not first:
            self.stats.relists += 1
        self._post(Replace(items))
        self.last_heard = time.monotonic()
        self.synced_once = True
        log.info("informer {name}: {what} {count} {resource} at rv {rv} in {pages} page(s), "
                 "{seconds:.2f}s ({reason})", name=self.name,
                 what="listed" if first else "re-listed", count=len(items),
                 resource=self.watched.resource, rv=resource_version, pages=pages,
                 seconds=time.monotonic() - started, reason=reason)

    def _read_pages(self) -> tuple[dict[str, Any], str, int]:
        """One list, page by page: (converted items by key, resourceVersion, pages).

        Raises `_StartOver` when the list must begin again from its first page. A 429
        waits out Retry-After and asks for the same page again (up to `_LIST_ATTEMPTS`
        times), so a throttled big list does not throw away the pages it has.
        """
        items: dict[str, Any] = {}
        token: str | None = None
        pages = throttled = 0
        resource_version = ""
        while True:
            params: dict[str, Any] = {"limit": self.page_size}
            if token:
                params["_continue"] = token
            try:
                document = self._fetch(**params)
            except ApiException as error:
                if error.status == 429 and throttled < _LIST_ATTEMPTS - 1:
                    throttled += 1
                    self._wait_throttled(error, pages)
                    continue
                if token and (error.status == 410 or _history_moved(error)):
                    raise _StartOver(f"continue token refused after {pages} page(s) "
                                     f"({_describe(error)})", error) from error
                raise
            pages += 1
            self.stats.pages += 1
            meta = document.get("metadata") or {}
            page_version = str(meta.get("resourceVersion") or "")
            if resource_version and page_version != resource_version:
                # One list is one snapshot; a page of another one means the server's state
                # changed under the token (a restart between pages).
                why = (f"list page at rv {page_version} after pages at rv "
                       f"{resource_version}")
                raise _StartOver(why, _WatchError(why))
            resource_version = page_version
            for item in document.get("items") or ():
                converted = self._convert_safely(item)
                if converted is not None:
                    items[object_key(item)] = converted
            token = meta.get("continue") or None
            del document
            if not token:
                if not resource_version:
                    raise _WatchError("the list carried no resourceVersion")
                return items, resource_version, pages

    def _wait_throttled(self, error: ApiException, pages: int) -> None:
        """A 429 on a list page: wait what the server asks (or one backoff step)."""
        self.stats.errors += 1
        self.stats.last_error = _describe(error)
        delay = min(_retry_after(error) or self.backoff[0], _MAX_RETRY_AFTER)
        log.info("informer {name}: list throttled after {pages} page(s) ({why}); asking again "
                 "in {delay:.2f}s", name=self.name, pages=pages, why=_describe(error),
                 delay=delay)
        if self._stopping.wait(delay):
            raise _Stopping()

    def _convert_safely(self, obj: dict[str, Any]) -> Any | None:
        try:
            converted = self._convert(obj)
        except Exception:  # noqa: BLE001 - one odd object must not stop the informer
            log.failure("informer {name}: convert() failed on {key}; skipping it",
                        name=self.name, key=excerpt(object_key(obj), 120))
            converted = None
        if converted is None:
            self.stats.skipped += 1
        return converted

    # -- watch --------------------------------------------------------------------

    def _watch(self) -> None:
        """One watch request from the last resourceVersion, read until it ends.

        Returns on a normal end of the stream; raises on everything else: `_Stalled` when
        nothing at all came for `stall_timeout` seconds, before the headers or after them
        (every read of the stream is bounded by it, so any byte, a bookmark included,
        restarts the count).
        """
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        started = time.monotonic()
        self.stats.watches += 1
        try:
            with self._accounted(timed=False) as call:
                response = self._request(call, watch=True,
                                         resource_version=self.resource_version,
                                         allow_watch_bookmarks=True, timeout_seconds=timeout,
                                         read_timeout=self.stall_timeout)
        except urllib3.exceptions.HTTPError as error:
            if _is_read_timeout(error) and not self._stopping.is_set():
                raise _Stalled(self.stall_timeout, 0) from error
            raise
        received = 0
        pending: list[tuple[str, str, Any]] = []
        first_pending = 0.0
        unknown: set[str] = set()
        clean = False
        try:
            buffer = bytearray()
            for chunk in _chunks(response):
                buffer += chunk
                start = 0
                while True:
                    end = buffer.find(b"\n", start)
                    if end < 0:
                        break
                    line = bytes(buffer[start:end])
                    start = end + 1
                    if line.strip():
                        received += 1
                        self._handle(line, pending, unknown)
                del buffer[:start]
                if pending:
                    now = time.monotonic()
                    if not first_pending:
                        first_pending = now
                    remaining = first_pending + self.batch_interval - now
                    if remaining <= 0 or not _data_ready(response,
                                                         min(remaining, self._idle_grace)):
                        self._flush(pending)
                        pending = []
                        first_pending = 0.0
            if buffer.strip():
                raise _WatchError("the watch stream ended in the middle of an event")
            clean = True
        except (urllib3.exceptions.HTTPError, OSError) as error:
            if self._stopping.is_set():
                raise _Stopping() from None
            if _is_read_timeout(error):
                raise _Stalled(self.stall_timeout, received) from error
            raise _StreamBroken(error, received) from error
        finally:
            if pending and not self._stopping.is_set():
                self._flush(pending)
            self._release(response, reuse=clean)
        if self._stopping.is_set():
            raise _Stopping()
        if not received and time.monotonic() - started < _SHORT_WATCH:
            raise _ShortWatch("the watch closed at once without sending anything")
        self._progress()

    def _handle(self, line: bytes, pending: list[tuple[str, str, Any]],
                unknown: set[str]) -> None:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a JSON object")
        except (ValueError, KeyError, TypeError) as error:
            raise _WatchError(f"undecodable watch event ({error})") from None
        if kind == ERROR:
            code = obj.get("code")
            message = f"{obj.get('reason', '')}: {obj.get('message', '')}".strip(": ")
            if code == 410:
                raise _Gone(message or "resource version too old")
            if _is_too_large(obj):
                raise _HistoryMoved(f"ERROR event {code} {message}")
            raise _WatchError(f"ERROR event {code} {message}")
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in (BOOKMARK, ADDED, MODIFIED, DELETED) and resource_version \
                and _older(str(resource_version), self.resource_version):
            # A watch from a resourceVersion only ever goes forward; one going back comes
            # from another history (the server was restored or restarted).
            raise _HistoryMoved(f"resourceVersion went back from {self.resource_version} "
                                f"to {resource_version} in a {kind} event")
        if kind == BOOKMARK:
            self.stats.bookmarks += 1
        elif kind in (ADDED, MODIFIED, DELETED):
            self.stats.events += 1
            key = object_key(obj)
            if kind == DELETED:
                pending.append((DELETED, key, None))
            else:
                converted = self._convert_safely(obj)
                if converted is not None:
                    pending.append((kind, key, converted))
        else:
            if kind not in unknown:
                unknown.add(kind)
                log.warn("informer {name}: skipping watch events of unknown type {kind!r}",
                         name=self.name, kind=kind)
            return
        if resource_version:
            self.resource_version = str(resource_version)
        self.last_heard = time.monotonic()
        self._progress()

    def _flush(self, pending: list[tuple[str, str, Any]]) -> None:
        self.stats.batches += 1
        self._post(Changes(tuple(pending)))


class _StreamBroken(Exception):
    """The watch connection failed mid-stream (cut, reset, read timeout)."""

    def __init__(self, error: BaseException, received: int) -> None:
        super().__init__(f"{_describe(error)} after {received} message(s)")
        self.error = error


def _chunks(response: Any) -> Iterator[bytes]:
    """The body as it arrives: whole HTTP chunks, or whatever one read returns."""
    if response.chunked and response.supports_chunked_reads():
        yield from response.read_chunked(None, decode_content=True)
        return
    while True:
        data = response.read1(65536)
        if not data:
            return
        yield data


def _data_ready(response: Any, wait: float) -> bool:
    """Whether more of the body can be read now (or within `wait` seconds).

    Looks at the bytes already buffered by http.client (and inside TLS) without
    blocking, then polls the socket. When the response's internals are not what they are
    expected to be, reports False: the caller then flushes its batch early, which costs
    only coalescing.
    """
    try:
        reader = response._fp.fp  # http.client's BufferedReader over the socket
        sock = response.connection.sock
    except AttributeError:
        return False
    if reader is None or sock is None:
        return False
    previous = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        try:
            if reader.peek(1):
                return True
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (OSError, ValueError):
            return False
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    if wait <= 0:
        return False
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(wait * 1000))
        readable, _, _ = select.select([sock], [], [], wait)
        return bool(readable)
    except (OSError, ValueError):
        return False


def excerpt(text: str, limit: int = 200) -> str:
    """At most `limit` characters of an API server's message, control characters escaped.

    The message comes from the API server's answer: it must not be able to start a new
    line in a log, in STATUS or in `check`'s output, nor fill them.
    """
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        message = ""
        try:
            body = json.loads(error.body or "")
            if isinstance(body, dict):
                message = str(body.get("message") or body.get("reason") or "")
        except (TypeError, ValueError):
            message = str(error.body or "")
        message = excerpt(message)
        return f"HTTP {error.status} {excerpt(str(error.reason or ''), 80)}" + (
            f": {message}" if message else "")
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return _describe(error.reason)
    if isinstance(error, _StreamBroken):
        return f"watch broken: {error}"
    if isinstance(error, (_Gone, _WatchError, _ShortWatch, _HistoryMoved, _Stalled)):
        return str(error)
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return "read timed out (no data within the read timeout)"
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _is_gone(error: BaseException) -> bool:
    return isinstance(error, _Gone) or (isinstance(error, ApiException) and error.status == 410)


def _restart_reason(error: BaseException) -> str:
    """Why a failed watch is opened again (see `InformerObserver.watch_restarted`)."""
    if isinstance(error, _Stalled):
        return "stalled"
    if _is_gone(error) or _history_moved(error):
        return "expired"
    return "error"


def _may_hide_a_restart(error: BaseException) -> bool:
    """Whether a failed watch may mean the server restarted: the connection broke, could
    not be made, or went silent. An HTTP error came from a running server (it is asked
    about its history on the next attempt only if the connection had broken before)."""
    if isinstance(error, (_StreamBroken, _Stalled, _ShortWatch)):
        return True
    return not isinstance(error, (ApiException, _Gone, _HistoryMoved, _WatchError))


def _history_moved(error: BaseException) -> bool:
    """A too-large resourceVersion (HTTP or ERROR event) or one going backwards."""
    if isinstance(error, _HistoryMoved):
        return True
    return isinstance(error, ApiException) and _is_too_large(_status_of(error))


def _status_of(error: ApiException) -> dict[str, Any]:
    """The Status object an API error carried, or {} if its body is not one."""
    try:
        body = json.loads(error.body or "")
    except (ValueError, TypeError):
        return {}
    if not isinstance(body, dict):
        return {}
    body.setdefault("code", error.status)
    return body


def _is_too_large(status: dict[str, Any]) -> bool:
    """Whether a Status is kube-apiserver's ``Timeout: Too large resource version``.

    The cause ``ResourceVersionTooLarge`` says it; servers 1.17-1.18.5 only set the cause
    message and older ones only the Status message, so those are accepted on a 504 too,
    as client-go's isTooLargeResourceVersionError does.
    """
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    for cause in causes if isinstance(causes, list) else ():
        if isinstance(cause, dict) and cause.get("reason") == "ResourceVersionTooLarge":
            return True
    if status.get("code") != 504 and status.get("reason") != "Timeout":
        return False
    for cause in causes if isinstance(causes, list) else ():
        if isinstance(cause, dict) and cause.get("message") == "Too large resource version":
            return True
    return "Too large resource version" in str(status.get("message") or "")


def _older(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is below `than` (both must be integers to tell)."""
    if not version or not than or not version.isdigit() or not than.isdigit():
        return False
    return int(version) < int(than)


def _is_read_timeout(error: BaseException) -> bool:
    """Whether a urllib3 error (possibly wrapped in MaxRetryError) is a read timeout."""
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        error = error.reason if error.reason is not None else error
    return isinstance(error, (urllib3.exceptions.ReadTimeoutError, socket.timeout))


def _retry_after(error: BaseException) -> float | None:
    """Retry-After of an API error, in seconds (the header is a number or an HTTP date)."""
    headers = getattr(error, "headers", None) if isinstance(error, ApiException) else None
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
