"""One watch request: a chunked stream of newline-delimited JSON events.

The stream follows kube-apiserver: it replays history after the requested resourceVersion
(or sends the current objects as synthetic ADDED events when none, or "0", is given), then
forwards live events; with sendInitialEvents=true (the watch-list protocol) the current
objects come first as ADDED events, then a BOOKMARK annotated ``k8s.io/initial-events-end``
when the client allows bookmarks; an object that starts or stops matching the selectors is sent as
ADDED or DELETED; BOOKMARK events carry the current resourceVersion when the client asked
for them; a resourceVersion older than the kept history gets one ERROR event with a 410
Expired Status and the stream ends; `timeoutSeconds` ends it cleanly.

A resourceVersion the store has not reached (a client of the server before a restart or an
etcd restore) is answered as kube-apiserver's watch cache answers it: the stream opens and
stays silent, passing on only events and bookmarks newer than that resourceVersion
(cacheWatcher.process); no error ever comes. Objects can be rendered another way than their
stored JSON (the Table form for kubectl).
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport
from twisted.web.server import Request

from kubernetai.pkg.selectors import FieldSelector, LabelSelector

from .faults import Faults
from .resources import ResourceType
from .status import ApiError
from .store import ADDED, DELETED, MODIFIED, Event, Store, Stored, dumps

# kube-apiserver's --min-request-timeout: a watch without timeoutSeconds lasts a random
# time between this and twice this.
MIN_REQUEST_TIMEOUT = 1800.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# Events of a burst (the current objects) written to the connection at once.
WRITE_BATCH = 200


class WatchStream:
    """Streams one resource's events to one client until the client or a fault ends it."""

    def __init__(self, request: Request, *, store: Store, resource: ResourceType,
                 namespace: str | None, labels: LabelSelector, fields: FieldSelector,
                 bookmarks: bool, bookmark_interval: float, timeout: float | None,
                 faults: Faults, reactor: IReactorTime,
                 on_close: Callable[["WatchStream"], None],
                 render: Callable[[bytes], bytes] | None = None) -> None:
        self.request = request
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.bookmark_interval = bookmark_interval
        self.faults = faults
        self.reactor = reactor
        self._on_close = on_close
        self.render = render
        # Set for a watch from a resourceVersion the store had not reached: nothing at or
        # below it is sent.
        self.after: int | None = None
        self.sent = 0
        self.closed = False
        self.stalled = False
        self._timers: list[IDelayedCall] = []
        if timeout is None:
            timeout = MIN_REQUEST_TIMEOUT * (1 + random.random())
        self._timeout = timeout

    # -- lifecycle ----------------------------------------------------------------

    def start(self, resource_version: str, send_initial_events: bool | None) -> None:
        """Begin streaming; called once the request has been authenticated and parsed.

        `send_initial_events` is the query's sendInitialEvents (None when absent):
        True streams the current state as ADDED events, then (when the client allows
        bookmarks) the BOOKMARK annotated ``k8s.io/initial-events-end``, the watch-list
        protocol; None keeps the legacy meaning (the current state for a resourceVersion
        of "" or "0", a replay after any other); False never sends the current state.
        """
        self.request.notifyFinish().addBoth(lambda _: self._cleanup())
        initial: list[Event] | None = None
        start_rv = parse_resource_version(resource_version)
        if start_rv is not None and not send_initial_events and start_rv > self.store.rv:
            self.after = start_rv
        if start_rv is not None and not send_initial_events:
            try:
                replay = self.store.events_since(self.resource, start_rv)
            except ApiError as error:
                self._begin()
                self.fail(error)
                return
            initial = replay
        elif send_initial_events is False:
            initial = []  # from now on, nothing of the present state
        self._begin()
        self.store.subscribe(self.resource, self._on_event)
        if initial is None:
            self._send_present()
            if send_initial_events and self.bookmarks and not self.closed:
                self._bookmark(initial_events_end=True)
        else:
            for event in initial:
                self._on_event(event)
        if self.closed:
            return
        self._timers.append(self.reactor.callLater(self._timeout, self.close))
        if self.bookmarks:
            self._schedule_bookmark()

    def _begin(self) -> None:
        self.request.setResponseCode(200)
        self.request.setHeader(b"content-type", b"application/json")
        self.request.setHeader(b"cache-control", b"no-cache, private")
        # kube-apiserver flushes the headers at once, so a client knows the watch is open.
        self._write(b"")

    def close(self) -> None:
        """End the stream cleanly, as on timeoutSeconds: the terminating chunk is sent."""
        if not self.closed:
            self.closed = True
            self._cleanup()
            if not self.request.finished and not self.request._disconnected:
                self.request.finish()

    def refuse(self, error: ApiError) -> None:
        """Answer the watch with one ERROR event and nothing else (a 200 stream, as
        kube-apiserver's errWatcher sends errors found after the request was accepted)."""
        self.request.notifyFinish().addBoth(lambda _: self._cleanup())
        self._begin()
        self.fail(error)

    def fail(self, error: ApiError) -> None:
        """Send one ERROR event carrying a Status and end the stream, as for 410 Expired."""
        self._write(b'{"type":"ERROR","object":' + dumps(error.status()) + b"}\n")
        self.close()

    def cut(self) -> None:
        """Close the connection mid-stream, after what was sent, with no terminating chunk.

        This is what a proxy or load balancer timing a watch out looks like to a client.
        """
        if not self.closed:
            self.closed = True
            self._cleanup()
            transport = self.request.channel.transport if self.request.channel else None
            if transport is not None:
                transport.loseConnection()
                # Over TLS loseConnection waits for the channel's producer, which a watch
                # never lets go: abort, as a proxy dropping the connection would.
                if ISSLTransport.providedBy(transport):
                    transport.abortConnection()

    def _cleanup(self) -> None:
        self.closed = True
        self.store.unsubscribe(self.resource, self._on_event)
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._on_close(self)

    # -- events -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if self.after is not None and event.rv <= self.after:
            return
        kind = self._translate(event)
        if kind is not None:
            self._send(kind, event.obj)

    def _translate(self, event: Event) -> str | None:
        """Which event this watcher sees, given its selectors (None: none)."""
        matches_now = event.obj.matches(self.namespace, self.labels, self.fields)
        if event.type != MODIFIED or event.previous is None:
            return event.type if matches_now else None
        matched_before = event.previous.matches(self.namespace, self.labels, self.fields)
        if matched_before and matches_now:
            return MODIFIED
        if matches_now:
            return ADDED
        if matched_before:
            return DELETED
        return None

    def _send(self, kind: str, stored: Stored) -> None:
        if self.closed:
            return
        self._write(self._line(kind, stored))
        self.sent += 1
        limit = self.faults.cut_watch_after
        if limit is not None and self.sent >= limit:
            self.cut()

    def _send_present(self) -> None:
        """The current objects as ADDED events, several to a write: kube-apiserver's watch
        server flushes only when no further event is queued, so a burst (the initial
        events above all) reaches the client in large chunks, not one chunk per event."""
        batch: list[bytes] = []
        limit = self.faults.cut_watch_after
        for stored in self.store.items(self.resource):
            if not stored.matches(self.namespace, self.labels, self.fields):
                continue
            batch.append(self._line(ADDED, stored))
            self.sent += 1
            if limit is not None and self.sent >= limit:
                self._write(b"".join(batch))
                self.cut()
                return
            if len(batch) >= WRITE_BATCH:
                self._write(b"".join(batch))
                batch = []
        if batch:
            self._write(b"".join(batch))

    def _line(self, kind: str, stored: Stored) -> bytes:
        body = stored.body if self.render is None else self.render(stored.body)
        return b'{"type":"' + kind.encode() + b'","object":' + body + b"}\n"

    def _bookmark(self, *, initial_events_end: bool = False) -> None:
        if self.after is not None and self.store.rv < self.after:
            return  # the watch cache drops bookmarks older than the watch's resourceVersion
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv),
                                    "creationTimestamp": None}
        if initial_events_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {"kind": self.resource.kind, "apiVersion": self.resource.api_version,
               "metadata": metadata}
        self._write(b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n")

    def _schedule_bookmark(self) -> None:
        def fire() -> None:
            if not self.closed:
                self._bookmark()
                self._schedule_bookmark()
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.reactor.callLater(self.bookmark_interval, fire))

    def _write(self, data: bytes) -> None:
        # A stalled stream keeps its connection open and sends nothing at all, and stays
        # that way (like a half-dead TCP connection): a client must notice and reconnect.
        if self.faults.stall_watches:
            self.stalled = True
        if self.stalled or self.request.finished or self.request._disconnected:
            return
        self.request.write(data)


def parse_resource_version(text: str) -> int | None:
    """None means "start from the current state" ("" or "0"), as kube-apiserver treats them."""
    if text in ("", "0"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f'invalid resource version "{text}"') from None
    if value < 0:
        raise ApiError(400, f'invalid resource version "{text}"')
    return value
