"""List-then-watch of one Kubernetes resource, on a thread, feeding the reactor.

An `Informer` keeps one stanza's view of one resource current, the way client-go's
reflector does for CoreDNS, but built for a Python process:

* It lists the resource across all namespaces, then watches from the list's
  resourceVersion with bookmarks, listing in as few requests as the server allows, in
  client-go's order of preference (see "Listing" below): watch-list, one watch request
  whose initial events are the list; else a ``resourceVersion=0`` list, which
  kube-apiserver answers whole from its watch cache; else pages. Every request goes
  through the official client (config, auth, TLS, proxies) with ``_preload_content=False``,
  and the informer parses the JSON itself, item by item, and hands each object to a
  ``convert`` function; the client's model objects, which cost ~0.5 ms and ~12 KB per
  Service, are never built, nor is a whole list's JSON tree held at once.
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
* After each full list, however it came, the receiver's ``prepare`` function runs on
  the informer thread and one `Replace` (with what it made) goes to the reactor. A
  re-list's `Replace` drops every object the receiver holds that the list no longer has.

Listing, first and again (after a 410, a move of the server's history, a failed list):

1. Watch-list: ``watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&
   allowWatchBookmarks=true`` with no resourceVersion, a consistent read (client-go's
   choice after a 410; its first list too). The server sends the current objects as
   ADDED events, then a BOOKMARK annotated ``k8s.io/initial-events-end: "true"`` whose
   resourceVersion is the list's; the objects gathered so far are then one `Replace`,
   and the same stream goes on as the watch: one request, one rate-limit token, no list
   request at all. A server without the WatchList feature answers 422 Invalid
   (``sendInitialEvents is forbidden for watch unless the WatchList feature gate is
   enabled``; a server older than 1.27 forbids resourceVersionMatch on a watch, also 422),
   and one that ignores sendInitialEvents ends the stream without the bookmark: either is
   remembered, and this informer lists from then on. Anything else going wrong before
   the bookmark (a cut, a stall, a 5xx) delivers nothing of what had come, and the next
   attempt, after the usual backoff, is a list (as client-go falls back to one), the one
   after it a watch-list again.
2. A ``resourceVersion=0`` list with a page size, which kube-apiserver serves from its
   watch cache in one response, ignoring the page size. Its state may be older than what
   this informer has seen (a watch cache behind etcd, another API server of the cluster
   behind this one), or come from a restored history, and nothing in it tells which; so
   a resourceVersion=0 answer below the last resourceVersion seen is not taken: a
   consistent list (3) follows at once, and its answer is the server's present. (client-go
   re-lists with the last resourceVersion and NotOlderThan instead, which kube-apiserver
   serves from etcd page by page when a page size is given, and falls back to "" after a
   410 or a too-large answer; the check above costs a second list only in those rare
   cases.)
3. Pages (``limit``/``continue``): what a server that pages resourceVersion=0 too answers
   to (2), and the consistent list (no resourceVersion) of (2)'s check. A continuation
   page spends no rate-limit token: a list is throttled as one request (the limiter's
   in-flight bound still applies to each page; see limiter.py).

Watch-list and consistent lists are the server's present: one older than the last
resourceVersion seen means the server's history was reset, and is taken and logged.

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
  seen, a consistent list or a watch-list older than the last one seen (the list is then
  the re-list, and logged),
  or the server's current resourceVersion, which the informer asks with a one-item
  consistent list before it watches again after a broken connection or a silent watch.
  That last check matters most: kube-apiserver's watch cache holds a watch from a
  resourceVersion it has not reached open without a word (it only ever sends what is
  newer), so a restarted or restored server gives no other sign at all.

resourceVersions are formally opaque, but every kube-apiserver (etcd, and kine) makes
them decimal revision numbers; the informer compares them only when both are integers.

Recovery, per situation:

==============================================  ===========================================
410 Gone, too-large resourceVersion,             re-list at once (watch-list, else rv=0) and
resourceVersion going backwards                  deliver a fresh Replace
watch-list refused (400/422, or the stream       list at once (rv=0), and never try
ends cleanly before its end bookmark)            watch-list again
watch-list failing before its end bookmark       back off, then list once (rv=0); nothing of
(cut, stall, 5xx, 429)                           the partial stream is delivered
rv=0 list older than the last rv seen            list again at once with a consistent read
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

import codecs
import email.utils
import functools
import json
import random
import re
import select
import socket
import ssl
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import urllib3
from twisted.logger import Logger

from kubernetai.core import gcpolicy
from kubernetai.plugins.kubernetai import k8sapi as k8s
from kubernetai.plugins.kubernetai.k8sapi import ApiException

__all__ = ["Watched", "Replace", "Changes", "Informer", "InformerObserver", "InformerStats",
           "RESOURCES"]

log = Logger(namespace="kubernetai.plugins.kubernetai.informer")

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"

# The annotation of the BOOKMARK that ends a watch-list's initial events.
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

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
    `prepared` is what the informer's ``prepare`` function made of `items` on the informer
    thread (None without one, or if it failed): the receiver's new state built off the
    reactor, so that taking it over there is a few assignments, not one upsert per object.
    """

    items: dict[str, Any]
    prepared: Any = None


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
    watch_lists: int = 0    # of `lists`, those that came by watch-list (no list request)
    protocol: str = ""      # how the last full list came: watch-list, rv=0 or consistent
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


class _WatchListIncomplete(Exception):
    """A watch-list stream ended cleanly before its ``k8s.io/initial-events-end``
    bookmark: the server does not do watch-list (it ignored sendInitialEvents)."""


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

    def __init__(self, why: str, cause: Exception, pages: int = 0) -> None:
        super().__init__(why)
        self.cause = cause
        self.pages = pages  # pages read before it (for the log)


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
    """The list/watch request of ``resource`` (see k8sapi: no generated API classes)."""
    return k8s.lister(api_client, resource)


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
                 observer: InformerObserver | None = None,
                 prepare: Callable[[dict[str, Any]], Any] | None = None,
                 watch_list: bool = True) -> None:
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
        self._prepare = prepare
        # Whether to try watch-list at all.
        self.watch_list = bool(watch_list)
        # None until the server answered a watch-list; False once it refused one (then
        # this informer lists instead, for good); True once one delivered a Replace.
        self.watch_list_supported: bool | None = None
        # A watch-list failed (not refused) before its end: the next attempt lists, as
        # client-go falls back, so a proxy cutting long streams cannot stop every sync.
        self._watch_list_skip = False
        self._need_list = True
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
        self._need_list = True
        while not self._stopping.is_set():
            watching = streamed = False
            try:
                if self._need_list:
                    # No full collection while the new state is being built (gcpolicy).
                    self._reactor.callFromThread(gcpolicy.listing, self._reactor, self)
                if self._need_list and self._use_watch_list():
                    # One request lists (the initial events) and then watches on.
                    streamed = True
                    self._watch(listing=reason)
                else:
                    if self._need_list:
                        self._list(reason)
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
            if streamed:
                # Past its end bookmark a watch-list is a watch like any other.
                watching = not self._need_list
                if self._need_list and self._watch_list_refused(failure):
                    continue  # list at once, the way the server supports
            if watching:
                self._restarted(_restart_reason(failure))
            self.stats.errors += 1
            self.stats.last_error = _describe(failure)
            if _may_hide_a_restart(failure):
                self._suspect = True
            if isinstance(failure, _Stalled) and not self._need_list:
                self.stats.stalls += 1
                log.warn("informer {name}: {why}; watching again from rv {rv}",
                         name=self.name, why=_describe(failure), rv=self.resource_version)
                continue  # the silence itself was the wait: no backoff on top of it
            if _is_gone(failure) or _history_moved(failure):
                self._need_list, reason = True, self._relist_reason(failure)
                if self._progressed:
                    continue  # re-list at once; _list logs one line with the reason
                # Nothing was received since the last list: do not re-list in a tight loop.
                why = f"{reason} right after a list; re-listing"
            elif self._need_list:
                reason = f"list failed: {_describe(failure)}"
                why = f"{reason}; listing again"
            else:
                why = f"{_describe(failure)}; watching again from rv {self.resource_version}"
            if self._pause(why, retry_after=_retry_after(failure)):
                return

    def _use_watch_list(self) -> bool:
        """Whether this full list is to come by watch-list (see the module docstring)."""
        if not self.watch_list or self.watch_list_supported is False:
            return False
        if self._watch_list_skip:
            self._watch_list_skip = False
            return False
        return True

    def _watch_list_refused(self, failure: BaseException) -> bool:
        """After a watch-list that failed before its end bookmark: True if the server
        refused the protocol (400/422: a server without the WatchList feature, or older
        than 1.27, rejects sendInitialEvents or resourceVersionMatch on a watch; or a
        stream that ended cleanly without the bookmark): watch-list is then off for good
        for this informer. Otherwise the next attempt is a list, once."""
        refused = isinstance(failure, _WatchListIncomplete) or (
            isinstance(failure, ApiException) and failure.status in (400, 422))
        if not refused:
            self._watch_list_skip = True
            return False
        self.watch_list_supported = False
        log.info("informer {name}: the API server does not support watch-list ({why}); "
                 "listing with resourceVersion=0 instead", name=self.name,
                 why=_describe(failure))
        return True

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
                 token: bool = True, **params: Any) -> Any:
        """One list or watch request; returns the urllib3 response (status 2xx). ``call``
        gets its status code and rate limiter wait. ``token`` False (a list's
        continuation page) passes the limiter without spending a token."""
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
                with self.limiter.request(token=token) as waited:
                    call.waited = waited
                    response = self._list_fn(_preload_content=False,
                                             _request_timeout=timeout, **params)
        except ApiException as error:
            if error.status:  # 0: the client's own failure (TLS), no response
                call.code = str(error.status)
            raise
        call.code = str(getattr(response, "status", "") or "<error>")
        return response

    def _fetch(self, *, token: bool = True,
               on_item: Callable[[dict[str, Any]], None] | None = None,
               **params: Any) -> dict[str, Any]:
        """One list request (a page), read whole and decoded; with `on_item`, each of its
        items is handed to it as soon as it is decoded and the document comes back
        without them (see `_decode_list`)."""
        with self._accounted(timed=True) as call:
            response = self._request(call, token=token, **params)
            body: bytes | None = None
            document: dict[str, Any] | None = None
            try:
                if on_item is None:
                    body = response.read()
                else:
                    document = _decode_list(_chunks(response), on_item)
            except (urllib3.exceptions.HTTPError, OSError):
                if self._stopping.is_set():
                    raise _Stopping() from None
                raise
            finally:
                self._release(response, reuse=body is not None or document is not None)
        if self._stopping.is_set():
            raise _Stopping()
        if document is not None:
            return document
        document = json.loads(body or b"")
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
        """A full list by list requests, then one Replace.

        First with resourceVersion=0, which kube-apiserver answers whole from its watch
        cache in one response. Such a list may be older than what this informer has seen
        (a watch cache lagging behind, another API server of the cluster behind this one)
        or come from a restored history, and only a consistent read can tell which: so a
        re-list whose resourceVersion=0 answer is below the last resourceVersion seen is
        done again as a consistent list, whose answer is the server's present.
        """
        started = time.monotonic()
        self._progressed = False
        items, resource_version, pages = self._read_list("0")
        protocol = "rv=0"
        if _older(resource_version, self.resource_version):
            log.info("informer {name}: the resourceVersion=0 list is at rv {rv}, below the "
                     "last one seen, {previous}; listing again with a consistent read",
                     name=self.name, rv=resource_version, previous=self.resource_version)
            items, resource_version, more = self._read_list(None)
            pages += more
            protocol = "consistent"
        self._listed(items, resource_version, reason=reason, started=started,
                     protocol=protocol, how=f"in {pages} page(s)")

    def _read_list(self, resource_version: str | None) -> tuple[dict[str, Any], str, int]:
        """One list (all its pages): (converted items by key, resourceVersion, pages).

        A continue token the server no longer honours (410 once compacted, or "too large"
        when it comes from a history the server no longer has), or pages reporting
        different resourceVersions, start the list over from the first page, at most
        `_LIST_ATTEMPTS` times in all; then the list has failed and is retried after a
        backoff.
        """
        attempts = pages = 0
        while True:
            attempts += 1
            try:
                items, version, read = self._read_pages(resource_version)
                return items, version, pages + read
            except _StartOver as start_over:
                pages += start_over.pages
                if attempts >= _LIST_ATTEMPTS:
                    raise start_over.cause from None
                log.info("informer {name}: {why}; listing from the start", name=self.name,
                         why=start_over)

    def _listed(self, items: dict[str, Any], resource_version: str, *, reason: str,
                started: float, protocol: str, how: str) -> None:
        """A full list arrived (by any protocol): take its resourceVersion and deliver it
        as one Replace, after the receiver's ``prepare`` ran on it here."""
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
        self._need_list = False
        first = not self.synced_once
        self.stats.lists += 1
        self.stats.protocol = protocol
        if protocol == "watch-list":
            self.stats.watch_lists += 1
            self.watch_list_supported = True
        if not first:
            self.stats.relists += 1
        self._post(Replace(items, self._prepared(items)))
        if not self._stopping.is_set():
            self._reactor.callFromThread(gcpolicy.listed, self._reactor, self)
        self.last_heard = time.monotonic()
        self.synced_once = True
        log.info("informer {name}: {what} {count} {resource} at rv {rv} by {protocol} {how}, "
                 "{seconds:.2f}s ({reason})", name=self.name,
                 what="listed" if first else "re-listed", count=len(items),
                 resource=self.watched.resource, rv=resource_version, protocol=protocol,
                 how=how, seconds=time.monotonic() - started, reason=reason)

    def _read_pages(self, resource_version: str | None) -> tuple[dict[str, Any], str, int]:
        """One list, page by page: (converted items by key, resourceVersion, pages).

        The first request carries `resource_version` (None: a consistent read) and a
        page size; a server that answers whole (resourceVersion=0 from the watch cache)
        sends no continue token and that is all. Continuation pages spend no rate-limit
        token: a list is one request to throttle, however it is cut.

        Raises `_StartOver` when the list must begin again from its first page. A 429
        waits out Retry-After and asks for the same page again (up to `_LIST_ATTEMPTS`
        times), so a throttled big list does not throw away the pages it has.
        """
        items: dict[str, Any] = {}
        token: str | None = None
        pages = throttled = 0
        list_version = ""
        while True:
            params: dict[str, Any] = {"limit": self.page_size}
            if token:
                params["_continue"] = token
            elif resource_version is not None:
                params["resource_version"] = resource_version
            page: list[tuple[str, Any]] = []
            try:
                document = self._fetch(token=not token, on_item=functools.partial(
                    self._take_item, page), **params)
            except ApiException as error:
                if error.status == 429 and throttled < _LIST_ATTEMPTS - 1:
                    throttled += 1
                    self._wait_throttled(error, pages)
                    continue
                if token and (error.status == 410 or _history_moved(error)):
                    raise _StartOver(f"continue token refused after {pages} page(s) "
                                     f"({_describe(error)})", error, pages) from error
                raise
            pages += 1
            self.stats.pages += 1
            meta = document.get("metadata") or {}
            page_version = str(meta.get("resourceVersion") or "")
            if list_version and page_version != list_version:
                # One list is one snapshot; a page of another one means the server's state
                # changed under the token (a restart between pages).
                why = (f"list page at rv {page_version} after pages at rv "
                       f"{list_version}")
                raise _StartOver(why, _WatchError(why), pages)
            list_version = page_version
            items.update(page)
            token = meta.get("continue") or None
            del document, page
            if not token:
                if not list_version:
                    raise _WatchError("the list carried no resourceVersion")
                return items, list_version, pages

    def _take_item(self, page: list[tuple[str, Any]], item: dict[str, Any]) -> None:
        converted = self._convert_safely(item)
        if converted is not None:
            page.append((object_key(item), converted))

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

    def _prepared(self, items: dict[str, Any]) -> Any:
        """``prepare(items)`` on this thread; None (the receiver then does the work on the
        reactor) if there is no such function or it failed."""
        if self._prepare is None:
            return None
        try:
            return self._prepare(items)
        except Exception:  # noqa: BLE001 - the receiver can still take the plain items
            log.failure("informer {name}: prepare() failed; delivering the plain list",
                        name=self.name)
            return None

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

    def _watch(self, listing: str | None = None) -> None:
        """One watch request from the last resourceVersion, read until it ends.

        With `listing` (the reason of the list it stands for), a watch-list instead: a
        consistent read (no resourceVersion) whose initial ADDED events are gathered
        until the BOOKMARK annotated ``k8s.io/initial-events-end``, which delivers them
        as one Replace at the bookmark's resourceVersion; the same stream then goes on
        as the watch. Ending cleanly before that bookmark raises `_WatchListIncomplete`.

        Returns on a normal end of the stream; raises on everything else: `_Stalled` when
        nothing at all came for `stall_timeout` seconds, before the headers or after them
        (every read of the stream is bounded by it, so any byte, a bookmark included,
        restarts the count).
        """
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        started = time.monotonic()
        self.stats.watches += 1
        initial: _Initial | None = None
        params: dict[str, Any] = {"resource_version": self.resource_version}
        if listing is not None:
            self._progressed = False
            initial = _Initial(listing, started)
            params = {"send_initial_events": True, "resource_version_match": "NotOlderThan"}
        try:
            with self._accounted(timed=False) as call:
                response = self._request(call, watch=True, allow_watch_bookmarks=True,
                                         timeout_seconds=timeout,
                                         read_timeout=self.stall_timeout, **params)
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
                end = buffer.rfind(b"\n")
                # The complete lines, decoded at once (a chunk often holds many events).
                lines = _text(buffer[:end]).split("\n") if end >= 0 else ()
                del buffer[:end + 1]
                for line in lines:
                    if line.strip():
                        received += 1
                        if initial is None:
                            self._handle(line, pending, unknown)
                        elif self._initial_event(line, initial, unknown):
                            self._listed(initial.items, initial.resource_version,
                                         reason=initial.reason, started=initial.started,
                                         protocol="watch-list",
                                         how=f"in {initial.events} event(s)")
                            initial = None
                del lines
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
        if initial is not None:
            why = (f"the watch-list stream ended after {initial.events} event(s) without the "
                   f"{INITIAL_EVENTS_END} bookmark")
            if time.monotonic() - started >= timeout:
                # Its timeoutSeconds ran out first (a very slow read): no sign of refusal.
                raise _WatchError(why + f", at its timeout of {timeout}s")
            raise _WatchListIncomplete(why)
        if not received and time.monotonic() - started < _SHORT_WATCH:
            raise _ShortWatch("the watch closed at once without sending anything")
        self._progress()

    def _initial_event(self, line: str, initial: _Initial, unknown: set[str]) -> bool:
        """One event of a watch-list before its end: gathered into `initial` (the list
        being built; an object's own resourceVersion says nothing of the list's, so none
        is checked). Returns True on the end bookmark, which gives the list its
        resourceVersion."""
        kind, obj = _decode_event(line)
        if kind == BOOKMARK:
            self.stats.bookmarks += 1
            meta = obj.get("metadata") or {}
            annotations = meta.get("annotations") or {}
            if not (isinstance(annotations, dict)
                    and annotations.get(INITIAL_EVENTS_END) == "true"):
                return False
            version = str(meta.get("resourceVersion") or "")
            if not version:
                raise _WatchError("the initial-events-end bookmark carried no "
                                  "resourceVersion")
            initial.resource_version = version
            return True
        if kind == ERROR:
            _raise_error_event(obj)
        if kind not in (ADDED, MODIFIED, DELETED):
            self._unknown_event(kind, unknown)
            return False
        initial.events += 1
        key = object_key(obj)
        converted = None if kind == DELETED else self._convert_safely(obj)
        if converted is None:
            initial.items.pop(key, None)
        else:
            initial.items[key] = converted
        return False

    def _handle(self, line: str | bytes, pending: list[tuple[str, str, Any]],
                unknown: set[str]) -> None:
        kind, obj = _decode_event(line)
        if kind == ERROR:
            _raise_error_event(obj)
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
            self._unknown_event(kind, unknown)
            return
        if resource_version:
            self.resource_version = str(resource_version)
        self.last_heard = time.monotonic()
        self._progress()

    def _unknown_event(self, kind: Any, unknown: set[str]) -> None:
        if kind not in unknown:
            unknown.add(kind)
            log.warn("informer {name}: skipping watch events of unknown type {kind!r}",
                     name=self.name, kind=kind)

    def _flush(self, pending: list[tuple[str, str, Any]]) -> None:
        self.stats.batches += 1
        self._post(Changes(tuple(pending)))


@dataclass(slots=True)
class _Initial:
    """A watch-list's initial events, gathered until its end bookmark."""

    reason: str
    started: float
    items: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    resource_version: str = ""


_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, at: int) -> int:
    """The index of the first character at or after `at` that is not JSON whitespace."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _decode_list(chunks: Iterable[bytes],
                 on_item: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """A list answer ({..., "items": [...]}) decoded item by item as its bytes arrive:
    each item goes to `on_item` as soon as it is decoded, and the rest of the document is
    returned.

    ``json.loads`` of a whole 100,000-pod list (68 MB) holds every decoded object alive
    until the end, and the cyclic garbage collector, triggered again and again by the
    millions of new containers, walks them all each time: 7 s for the parse where item by
    item, each item freed once converted, takes 0.6 s. Reading as it decodes, it never
    holds more than a chunk or two of the body either (a whole body and its text would be
    twice 68 MB). Raises `_WatchError` on anything that is not a JSON object whose items,
    if any, are objects.
    """
    document: dict[str, Any] = {}
    reader = _JSONReader(iter(chunks))
    try:
        reader.expect("{")
        while reader.peek() != "}":
            key = reader.value()
            if not isinstance(key, str):
                raise ValueError(f"bad member name {key!r}")
            reader.expect(":")
            if key == "items" and reader.peek() == "[":
                reader.expect("[")
                while reader.peek() != "]":
                    item = reader.value()
                    if not isinstance(item, dict):
                        raise ValueError("an item is not a JSON object")
                    on_item(item)
                    if not reader.separator("]"):
                        break
                reader.expect("]")
            else:
                document[key] = reader.value()
            if not reader.separator("}"):
                break
        reader.expect("}")
        if reader.peek():
            raise ValueError("data after the object")
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are
        raise _WatchError(f"undecodable list answer ({error})") from None
    return document


class _JSONReader:
    """JSON text read from a stream of byte chunks, a value at a time (see _decode_list).

    Only the text not yet consumed is kept. A value that fails to decode, or ends right at
    the end of the text read so far (a number may go on in the next chunk), is decoded
    again once more has arrived.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._at = 0
        self._done = False

    def _more(self) -> bool:
        """Read on; False once the stream has ended."""
        while not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
                new = self._utf8.decode(b"", final=True)
            else:
                new = self._utf8.decode(chunk)
            if new:
                self._text = self._text[self._at:] + new
                self._at = 0
                return True
        return False

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the stream)."""
        while True:
            self._at = _skip(self._text, self._at)
            if self._at < len(self._text) or not self._more():
                return self._text[self._at:self._at + 1]

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            raise ValueError(f"expected {char!r}, found {found or 'the end'!r}")
        self._at += 1

    def separator(self, close: str) -> bool:
        """After a member or an item: True past a comma (another must follow), False
        before `close`."""
        found = self.peek()
        if found == ",":
            self._at += 1
            if self.peek() == close:
                raise ValueError(f"trailing comma before {close!r}")
            return True
        if found != close:
            raise ValueError(f"expected ',' or {close!r}, found {found or 'the end'!r}")
        return False

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._text, self._at)
            except ValueError:
                if self._more():
                    continue
                raise
            if end < len(self._text) or not self._more():
                self._at = end
                return value


def _text(data: bytearray) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _WatchError(f"undecodable watch stream ({error})") from None


def _decode_event(line: str | bytes) -> tuple[Any, dict[str, Any]]:
    """One watch event line: (type, object)."""
    try:
        event = json.loads(line)
        kind = event["type"]
        obj = event["object"]
        if not isinstance(obj, dict):
            raise TypeError("object is not a JSON object")
    except (ValueError, KeyError, TypeError) as error:
        raise _WatchError(f"undecodable watch event ({error})") from None
    return kind, obj


def _raise_error_event(status: dict[str, Any]) -> None:
    """An ERROR event's Status, raised as what it means for the informer."""
    code = status.get("code")
    message = f"{status.get('reason', '')}: {status.get('message', '')}".strip(": ")
    if code == 410:
        raise _Gone(message or "resource version too old")
    if _is_too_large(status):
        raise _HistoryMoved(f"ERROR event {code} {message}")
    raise _WatchError(f"ERROR event {code} {message}")


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
