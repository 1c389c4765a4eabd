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
* Every request carries a client read timeout, so a half-dead connection (no bytes, no
  FIN) is noticed; watches also ask for BOOKMARK events, which keep a quiet stream alive
  and the resourceVersion fresh.
* Each informer has a connection pool of its own (on the caller's configuration), so that
  stop() can shut its sockets and the retry policy is the informer's: urllib3 does not
  retry behind its back (see `_RETRIES`).
* What it learns reaches the reactor only through ``reactor.callFromThread``: a `Replace`
  after each full list and `Changes` batches for watch events, coalesced so that a burst
  of events costs a few reactor calls rather than one each.

Recovery, per situation:

==============================================  ===========================================
410 Gone (ERROR event, or HTTP 410)              re-list at once, deliver a fresh Replace
watch ended normally (timeoutSeconds)            re-watch from the last resourceVersion
connection refused/reset/cut, read timeout,      back off (exponential, jittered) and
429, 5xx, other HTTP errors, ERROR events        re-watch from the last resourceVersion
                                                 (or re-list if there is none yet)
a watch that ends within a second with nothing   treated as an error (client-go does too),
                                                 so a misbehaving server is not hammered
==============================================  ===========================================
"""

from __future__ import annotations

import functools
import json
import random
import select
import socket
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from twisted.logger import Logger

__all__ = ["Watched", "Replace", "Changes", "Informer", "InformerStats", "RESOURCES"]

log = Logger(namespace="kubernetai.informer")

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"

RESOURCES = ("services", "endpointslices", "pods", "namespaces", "serviceimports")

# client-go treats a watch that closes within this time having delivered nothing as an error.
_SHORT_WATCH = 1.0


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
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Gone(Exception):
    """410: the resourceVersion (or continue token) is too old; a fresh list is needed."""


class _WatchError(Exception):
    """An ERROR event other than 410, or a stream that could not be understood."""


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
        connections.connected(self)

    connection_class = type(f"Tracked{base.__name__}", (base,), {"connect": connect})
    return type(f"Tracked{pool_class.__name__}", (pool_class,),
                {"ConnectionCls": connection_class})


def _lister(api_client: k8s.ApiClient, resource: str) -> Callable[..., Any]:
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
    """Keeps a receiver's copy of one resource current: list, then watch, on a thread."""

    def __init__(self, api_client: k8s.ApiClient, watched: Watched, *,
                 convert: Callable[[dict[str, Any]], Any | None],
                 deliver: Callable[[Replace | Changes], None],
                 reactor: Any = None, read_timeout: float = 90.0, page_size: int = 500,
                 backoff: tuple[float, float] = (0.2, 30.0), batch_interval: float = 0.05,
                 name: str = "", watch_timeout: int = 300,
                 connect_timeout: float = 10.0, limiter: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if read_timeout <= 0 or page_size <= 0 or watch_timeout <= 0:
            raise ValueError("read_timeout, page_size and watch_timeout must be positive")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError(f"bad backoff {backoff!r}: need 0 < initial <= maximum")
        self.watched = watched
        self.limiter = limiter  # a stanza.RequestLimiter shared by the stanza's informers
        self.name = name or watched.resource
        self._stopping = threading.Event()
        self._connections = _Connections(self._stopping)
        self._api = _private_client(api_client, self._connections)
        self._list_fn = _lister(self._api, watched.resource)
        self._convert = convert
        self._deliver = deliver
        self._reactor = reactor
        self.read_timeout = float(read_timeout)
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
        self._failures = 0
        self._progressed = False  # anything received since the last list
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread that lists and watches until stop()."""
        if self._thread is not None:
            raise RuntimeError(f"informer {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}",
                                        daemon=True)
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
            try:
                if need_list:
                    self._list(reason)
                    need_list = False
                self._watch()
                # A normal end (timeoutSeconds): watch again from the last RV, no list.
                log.debug("informer {name}: watch ended normally; re-watching from rv {rv}",
                          name=self.name, rv=self.resource_version)
                continue
            except _Stopping:
                return
            except Exception as error:  # noqa: BLE001 - every failure is retried
                if self._stopping.is_set():
                    return
                failure = error
            self.stats.errors += 1
            self.stats.last_error = _describe(failure)
            if _is_gone(failure):
                need_list, reason = True, f"410 Gone: {_describe(failure)}"
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

    def _pause(self, why: str, *, retry_after: float | None) -> bool:
        """Back off before the next attempt: exponential with jitter, at least Retry-After.

        Returns True if stop() was called meanwhile.
        """
        self._failures += 1
        first, cap = self.backoff
        ceiling = min(cap, first * 2 ** min(self._failures - 1, 30))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after:
            delay = min(cap, max(delay, retry_after))
        log.warn("informer {name}: {why} in {delay:.2f}s", name=self.name, why=why, delay=delay)
        return self._stopping.wait(delay)

    def _progress(self) -> None:
        self._failures = 0
        self._progressed = True

    def _request(self, **params: Any) -> Any:
        """One list or watch request; returns the urllib3 response (status 2xx)."""
        watched = self.watched
        if watched.label_selector:
            params["label_selector"] = watched.label_selector
        if watched.field_selector:
            params["field_selector"] = watched.field_selector
        if self._stopping.is_set():
            raise _Stopping()
        if self.limiter is None:
            return self._list_fn(_preload_content=False,
                                 _request_timeout=(self.connect_timeout, self.read_timeout),
                                 **params)
        # apiserver_qps/_burst/_max_inflight: the slot is held until the headers arrive,
        # as client-go's limits apply to starting requests, not to reading watch streams.
        with self.limiter.request():
            return self._list_fn(_preload_content=False,
                                 _request_timeout=(self.connect_timeout, self.read_timeout),
                                 **params)

    # -- list ---------------------------------------------------------------------

    def _list(self, reason: str) -> None:
        started = time.monotonic()
        self._progressed = False
        items: dict[str, Any] = {}
        token: str | None = None
        pages = restarts = 0
        resource_version = ""
        while True:
            if self._stopping.is_set():
                raise _Stopping()
            params: dict[str, Any] = {"limit": self.page_size}
            if token:
                params["_continue"] = token
            try:
                response = self._request(**params)
            except ApiException as error:
                if error.status == 410 and token and restarts < 3:
                    # The continue token expired mid-list: start over for a consistent list.
                    restarts += 1
                    log.info("informer {name}: continue token expired after {pages} pages; "
                             "listing from the start", name=self.name, pages=pages)
                    items.clear()
                    token, pages = None, 0
                    continue
                raise
            body = None
            try:
                body = response.read()
            finally:
                self._release(response, reuse=body is not None)
            if self._stopping.is_set():
                raise _Stopping()
            document = json.loads(body)
            del body
            pages += 1
            self.stats.pages += 1
            for item in document.get("items") or ():
                converted = self._convert_safely(item)
                if converted is not None:
                    items[object_key(item)] = converted
            meta = document.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            del document
            if not token:
                break
        if not resource_version:
            raise _WatchError("the list carried no resourceVersion")
        self.resource_version = resource_version
        first = not self.synced_once
        self.stats.lists += 1
        if not first:
            self.stats.relists += 1
        self._post(Replace(items))
        self.synced_once = True
        log.info("informer {name}: {what} {count} {resource} at rv {rv} in {pages} page(s), "
                 "{seconds:.2f}s ({reason})", name=self.name,
                 what="listed" if first else "re-listed", count=len(items),
                 resource=self.watched.resource, rv=resource_version, pages=pages,
                 seconds=time.monotonic() - started, reason=reason)

    def _convert_safely(self, obj: dict[str, Any]) -> Any | None:
        try:
            converted = self._convert(obj)
        except Exception:  # noqa: BLE001 - one odd object must not stop the informer
            log.failure("informer {name}: convert() failed on {key}; skipping it",
                        name=self.name, key=object_key(obj))
            converted = None
        if converted is None:
            self.stats.skipped += 1
        return converted

    # -- watch --------------------------------------------------------------------

    def _watch(self) -> None:
        """One watch request from the last resourceVersion, read until it ends.

        Returns on a normal end of the stream; raises on everything else.
        """
        timeout = int(self.watch_timeout * random.uniform(1.0, 1.2))
        started = time.monotonic()
        self.stats.watches += 1
        response = self._request(watch=True, resource_version=self.resource_version,
                                 allow_watch_bookmarks=True, timeout_seconds=timeout)
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
            raise _WatchError(f"ERROR event {code} {message}")
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
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


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        message = ""
        try:
            body = json.loads(error.body or "")
            if isinstance(body, dict):
                message = str(body.get("message") or body.get("reason") or "")
        except ValueError:
            message = (error.body or "")[:200]
        return f"HTTP {error.status} {error.reason or ''}{': ' + message if message else ''}"
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return _describe(error.reason)
    if isinstance(error, _StreamBroken):
        return f"watch broken: {error}"
    if isinstance(error, (_Gone, _WatchError, _ShortWatch)):
        return str(error)
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return "read timed out (no data within the read timeout)"
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _is_gone(error: BaseException) -> bool:
    return isinstance(error, _Gone) or (isinstance(error, ApiException) and error.status == 410)


def _retry_after(error: BaseException) -> float | None:
    headers = getattr(error, "headers", None) if isinstance(error, ApiException) else None
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
