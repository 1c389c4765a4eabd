"""The sockets to one upstream: kept open, shared by concurrent queries, closed when idle.

CoreDNS keeps a stack of connections per upstream and protocol and hands each query one
of its own, so a busy upstream costs one socket per query in flight. On Twisted one socket
carries many queries at once instead: a UDP socket (connected to the upstream, on a random
source port the kernel picks) holds up to :data:`UDP_SHARE` queries in flight under
distinct random IDs; a TCP or TLS connection pipelines up to :data:`STREAM_SHARE`. A query
that finds such a socket with room counts as a connection cache hit, one that has to open
a new socket as a miss (``coredns_proxy_conn_cache_{hits,misses}_total``).

A socket idle for ``expire`` (10 s by default) is closed, as is one older than ``max_age``
when that is set; at most ``max_idle_conns`` idle sockets per protocol are kept. A socket
that failed (timed out, refused, sent garbage) takes no new query and closes once the
queries still on it are done, so the next query gets a fresh socket and source port.

Replies are matched by ID; one with an ID nobody waits for is dropped (an out-of-order or
forged reply), as CoreDNS drops it, and the query keeps waiting until its read timeout.
Failures carry Go's error texts (``read udp 127.0.0.1:40000->127.0.0.1:53: i/o timeout``)
because that is what `errors` prints and operators search for.

Everything here runs on the reactor thread and never blocks.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from typing import Any, Callable

from twisted.internet import defer, error, protocol
from twisted.python.failure import Failure

from kubernetai.plugins.forward import metrics
from kubernetai.plugins.forward.wire import (
    Answer,
    MalformedReply,
    header_id,
    parse_reply,
    truncated_answer,
)

__all__ = ["Transport", "UpstreamError", "UDP_SHARE", "STREAM_SHARE", "STOPPED"]

#: Queries in flight on one UDP socket / one TCP (TLS) connection.
UDP_SHARE = 64
STREAM_SHARE = 64
#: CoreDNS's ``ErrTransportStopped``.
STOPPED = "proxy: transport stopped"
#: Longest a TCP connect may take (CoreDNS's largest dial timeout).
MAX_DIAL = 30.0


class UpstreamError(Exception):
    """An exchange failed; ``str()`` is the text CoreDNS would log. ``cached_closed``:
    a reused connection turned out closed by the upstream (CoreDNS retries at once)."""

    def __init__(self, message: str, cached_closed: bool = False) -> None:
        super().__init__(message)
        self.cached_closed = cached_closed


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Pending:
    __slots__ = ("deferred", "timer", "cached")

    def __init__(self, deferred: defer.Deferred[Answer], timer: Any, cached: bool) -> None:
        self.deferred = deferred
        self.timer = timer
        self.cached = cached


class _Channel:
    """What the UDP and the stream channel share: the queries waiting on it."""

    kind = "udp"

    def __init__(self, owner: "Transport | None", probe: bool = False) -> None:
        self.owner = owner
        self.pending: dict[int, _Pending] = {}
        self.created = self.used = time.monotonic()
        self.retired = False
        self.closed = False
        self.idle_timer: Any = None
        # A health check's socket: any message with a header will do.
        self.probe = probe

    # -- queries ---------------------------------------------------------------------

    def new_id(self) -> int:
        pending = self.pending
        while True:
            qid = secrets.randbits(16)
            if qid not in pending:
                return qid

    def expect(self, qid: int, timeout: float, clock: Any, cached: bool
               ) -> defer.Deferred[Answer]:
        deferred: defer.Deferred[Answer] = defer.Deferred()
        timer = clock.callLater(timeout, self._timed_out, qid)
        self.pending[qid] = _Pending(deferred, timer, cached)
        self.used = time.monotonic()
        return deferred

    def deliver(self, qid: int, answer: Answer) -> None:
        waiting = self.pending.pop(qid, None)
        if waiting is None:
            return
        waiting.timer.cancel()
        self._settled()
        waiting.deferred.callback(answer)

    def fail(self, qid: int, reason: UpstreamError) -> None:
        waiting = self.pending.pop(qid, None)
        if waiting is None:
            return
        if waiting.timer.active():
            waiting.timer.cancel()
        self._settled()
        waiting.deferred.errback(Failure(reason))

    def fail_all(self, make: Callable[[_Pending], UpstreamError]) -> None:
        for qid, waiting in list(self.pending.items()):
            self.fail(qid, make(waiting))

    def _timed_out(self, qid: int) -> None:
        waiting = self.pending.get(qid)
        if waiting is None:
            return
        self.retire()
        self.fail(qid, UpstreamError(self.timeout_text()))

    def _settled(self) -> None:
        self.used = time.monotonic()
        if not self.pending:
            if self.retired or self.owner is None:
                self.close()
            else:
                self.owner.idle(self)

    def retire(self) -> None:
        """Take no new query; close once the ones on it are done."""
        if not self.retired:
            self.retired = True
            if self.owner is not None:
                self.owner.forget(self)
            if not self.pending:
                self.close()

    def probed(self, data: bytes) -> None:
        """A health check's reply. miekg's Exchange hands back any header it could read;
        the check takes a response, or a header with opcode QUERY, as a live upstream."""
        if data[2] & 0x80 or not data[2] & 0x78:
            for qid in list(self.pending):
                self.deliver(qid, truncated_answer(qid, data[2], data[3]))

    def close(self) -> None:
        """Fail the queries still waiting and let the socket go (once)."""
        if self.closed:
            return
        self.closed = True
        if self.idle_timer is not None and self.idle_timer.active():
            self.idle_timer.cancel()
        if self.owner is not None:
            self.owner.forget(self)
        self.fail_all(lambda waiting: UpstreamError(STOPPED))
        self.release()

    # -- to be provided ------------------------------------------------------------------

    def timeout_text(self) -> str:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Let the socket go."""
        raise NotImplementedError


class UDPChannel(_Channel, protocol.DatagramProtocol):
    """A UDP socket connected to the upstream; replies are read into a buffer the size the
    client allowed (CoreDNS sets its read buffer to the client's size): a larger reply is
    answered as truncated."""

    kind = "udp"
    transport: Any

    def __init__(self, owner: "Transport | None", host: str, port: int, reactor: Any,
                 source: str | None, probe: bool = False) -> None:
        _Channel.__init__(self, owner, probe)
        self.host, self.port = host, port
        self.limits: dict[int, int] = {}
        interface = source or ("::" if ":" in host else "0.0.0.0")
        self.listening = reactor.listenUDP(0, self, interface=interface, maxPacketSize=65535)
        self.transport.connect(host, port)

    def local(self) -> str:
        try:
            host, port = self.transport.socket.getsockname()[:2]
        except (OSError, AttributeError):
            return "?"
        return hostport(host, port)

    def remote(self) -> str:
        return hostport(self.host, self.port)

    def timeout_text(self) -> str:
        return f"read udp {self.local()}->{self.remote()}: i/o timeout"

    def send(self, data: bytes) -> None:
        try:
            self.transport.write(data)
        except OSError as exc:
            raise UpstreamError(f"write udp {self.local()}->{self.remote()}: "
                                f"write: {exc.strerror or exc}") from None

    def query(self, qid: int, data: bytes, timeout: float, limit: int, clock: Any,
              cached: bool) -> defer.Deferred[Answer]:
        deferred = self.expect(qid, timeout, clock, cached)
        self.limits[qid] = limit
        deferred.addBoth(self._forget_limit, qid)
        try:
            self.send(data)
        except UpstreamError as exc:
            self.retire()
            self.fail(qid, exc)
        return deferred

    def _forget_limit(self, result: Any, qid: int) -> Any:
        self.limits.pop(qid, None)
        return result

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return                                      # short read: keep waiting
        qid = header_id(data)
        if self.probe:
            self.probed(data)
            return
        if qid not in self.pending:
            return                                      # not ours (any more): dropped
        # CoreDNS reads into a buffer of the client's size: a larger reply is cut there
        # (and then, being cut, answered as truncated with its question).
        data = data[:self.limits.get(qid, 65535)]
        try:
            answer = parse_reply(data)
        except MalformedReply as exc:
            if exc.cut:
                self.deliver(qid, truncated_answer(qid, data[2], data[3], exc.question))
            else:
                self.retire()
                self.fail(qid, UpstreamError(str(exc)))
            return
        self.deliver(qid, answer)

    def connectionRefused(self) -> None:
        text = f"read udp {self.local()}->{self.remote()}: read: connection refused"
        self.retire()
        self.fail_all(lambda waiting: UpstreamError(text))

    def release(self) -> None:
        self.listening.stopListening()


class StreamChannel(_Channel, protocol.Protocol):
    """A TCP (or TLS) connection: length-prefixed messages, pipelined, matched by ID."""

    transport: Any

    def __init__(self, owner: "Transport | None", host: str, port: int, reactor: Any,
                 source: str | None, tls: Any, probe: bool = False) -> None:
        _Channel.__init__(self, owner, probe)
        self.kind = "tcp-tls" if tls is not None else "tcp"
        self.host, self.port = host, port
        self.outbox: list[bytes] | None = []
        self.buffer = b""
        self.connected = False
        factory = _StreamFactory(self)
        bind = (source, 0) if source else None
        if tls is not None:
            self.connector = reactor.connectSSL(host, port, factory, tls, timeout=MAX_DIAL,
                                                bindAddress=bind)
        else:
            self.connector = reactor.connectTCP(host, port, factory, timeout=MAX_DIAL,
                                                bindAddress=bind)

    def local(self) -> str:
        try:
            host = self.transport.getHost()
            return hostport(host.host, host.port)
        except AttributeError:
            return "?"

    def remote(self) -> str:
        return hostport(self.host, self.port)

    def timeout_text(self) -> str:
        if not self.connected:
            return f"dial tcp {self.remote()}: i/o timeout"
        return f"read tcp {self.local()}->{self.remote()}: i/o timeout"

    def query(self, qid: int, data: bytes, timeout: float, clock: Any,
              cached: bool) -> defer.Deferred[Answer]:
        deferred = self.expect(qid, timeout, clock, cached)
        self.send(len(data).to_bytes(2, "big") + data)
        return deferred

    def send(self, data: bytes) -> None:
        if self.outbox is not None:
            self.outbox.append(data)
        elif not self.closed:
            self.transport.write(data)

    def connectionMade(self) -> None:
        self.connected = True
        outbox, self.outbox = self.outbox or [], None
        if self.closed:
            self.transport.loseConnection()
            return
        if outbox:
            self.transport.writeSequence(outbox)

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer + data
        while len(buffer) >= 2:
            size = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + size:
                break
            frame, buffer = buffer[2:2 + size], buffer[2 + size:]
            self._frame(frame)
        self.buffer = buffer

    def _frame(self, frame: bytes) -> None:
        if len(frame) < 12:
            self.retire()
            self.fail_all(lambda waiting: UpstreamError("dns: short read"))
            return
        if self.probe:
            self.probed(frame)
            return
        qid = header_id(frame)
        if qid not in self.pending:
            return
        try:
            answer = parse_reply(frame)
        except MalformedReply as exc:
            self.retire()
            self.fail(qid, UpstreamError(str(exc)))
            return
        self.deliver(qid, answer)

    def failed_to_connect(self, reason: Failure) -> None:
        self.closed = True
        if self.owner is not None:
            self.owner.forget(self)
        text = _dial_text(self.remote(), reason)
        self.fail_all(lambda waiting: UpstreamError(text))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        was_closed, self.closed = self.closed, True
        if self.owner is not None:
            self.owner.forget(self)
        if was_closed and not self.pending:
            return
        text = _lost_text(self, reason)
        clean = reason.check(error.ConnectionDone) is not None
        self.fail_all(lambda waiting: UpstreamError(
            text, cached_closed=clean and waiting.cached))

    def release(self) -> None:
        if self.connected:
            self.transport.loseConnection()
        else:
            self.connector.stopConnecting()


class _StreamFactory(protocol.ClientFactory):
    def __init__(self, channel: StreamChannel) -> None:
        self.channel = channel

    def buildProtocol(self, addr: Any) -> StreamChannel:
        return self.channel

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.channel.closed or self.channel.pending:
            self.channel.failed_to_connect(reason)


def _dial_text(remote: str, reason: Failure) -> str:
    if reason.check(error.ConnectionRefusedError):
        return f"dial tcp {remote}: connect: connection refused"
    if reason.check(error.TimeoutError, error.TCPTimedOutError):
        return f"dial tcp {remote}: i/o timeout"
    if reason.check(error.UserError, error.ConnectingCancelledError):
        return STOPPED
    return f"dial tcp {remote}: {reason.getErrorMessage()}"


def _lost_text(channel: StreamChannel, reason: Failure) -> str:
    if reason.check(error.ConnectionDone):
        return "EOF"
    if channel.kind == "tcp-tls" and not reason.check(error.ConnectionLost):
        return f"tls: {reason.getErrorMessage()}"
    if reason.check(error.ConnectionLost):
        return (f"read tcp {channel.local()}->{channel.remote()}: read: "
                "connection reset by peer")
    return f"read tcp {channel.local()}->{channel.remote()}: {reason.getErrorMessage()}"


class Transport:
    """The sockets to one upstream (CoreDNS's ``proxy.Transport``): per protocol, the
    open sockets with room for another query, reused until idle for ``expire``."""

    def __init__(self, reactor: Any, host: str, port: int, label: str, *,
                 tls: Any = None, expire: float = 10.0, max_age: float = 0.0,
                 max_idle: int = 0, source: str | None = None,
                 proxy_name: str = "forward") -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.label = label
        self.tls = tls
        self.expire = expire
        self.max_age = max_age
        self.max_idle = max_idle
        self.source = source
        self.proxy_name = proxy_name
        self.stopped = False
        self.channels: dict[str, list[Any]] = {"udp": [], "tcp": [], "tcp-tls": []}

    # -- the query path ------------------------------------------------------------------

    def exchange(self, proto: str, make: Callable[[int], bytes], timeout: float,
                 limit: int) -> defer.Deferred[Answer]:
        """Send ``make(id)`` over ``proto`` ("udp" or "tcp"; TLS upstreams always use
        their TLS connection) and wait up to ``timeout`` for the reply with that ID.
        ``limit`` is the UDP read buffer (a larger reply comes back truncated)."""
        if self.tls is not None:
            proto = "tcp-tls"
        channel, cached = self._channel(proto)
        (metrics.CONN_CACHE_HITS if cached else metrics.CONN_CACHE_MISSES).inc(
            (self.proxy_name, self.label, proto))
        qid = channel.new_id()
        data = make(qid)
        if proto == "udp":
            return channel.query(qid, data, timeout, limit, self.reactor, cached)
        return channel.query(qid, data, timeout, self.reactor, cached)

    def _channel(self, proto: str) -> tuple[Any, bool]:
        share = UDP_SHARE if proto == "udp" else STREAM_SHARE
        oldest = time.monotonic() - self.max_age if self.max_age > 0 else None
        for channel in self.channels[proto]:
            if oldest is not None and channel.created < oldest:
                continue
            if len(channel.pending) < share and not channel.retired:
                return channel, True    # its idle timer, if any, finds it busy or re-arms
        channel = self.open(proto)
        self.channels[proto].append(channel)
        return channel, False

    def open(self, proto: str, probe: bool = False) -> Any:
        """A new socket of ``proto`` (not pooled when ``probe``: a health check's)."""
        owner = None if probe else self
        if proto == "udp":
            return UDPChannel(owner, self.host, self.port, self.reactor, self.source, probe)
        return StreamChannel(owner, self.host, self.port, self.reactor, self.source,
                             self.tls if proto == "tcp-tls" else None, probe)

    # -- keeping sockets -------------------------------------------------------------------

    def idle(self, channel: Any) -> None:
        """``channel`` has no query in flight: keep it for ``expire``, or close it."""
        if self.stopped or self.expire <= 0:
            channel.close()
            return
        if self.max_age > 0 and channel.created < time.monotonic() - self.max_age:
            channel.close()
            return
        if self.max_idle > 0:
            idle = [c for c in self.channels[channel.kind] if not c.pending]
            if len(idle) > self.max_idle:
                channel.close()
                return
        if channel.idle_timer is None or not channel.idle_timer.active():
            channel.idle_timer = self.reactor.callLater(self.expire, self._expire, channel)

    def _expire(self, channel: Any) -> None:
        channel.idle_timer = None
        if channel.pending or channel.closed:
            return
        left = channel.used + self.expire - time.monotonic()
        if left > 0.001:
            channel.idle_timer = self.reactor.callLater(left, self._expire, channel)
        else:
            channel.close()

    def forget(self, channel: Any) -> None:
        channels = self.channels.get(channel.kind)
        if channels is not None and channel in channels:
            channels.remove(channel)

    def open_sockets(self) -> int:
        return sum(len(channels) for channels in self.channels.values())

    def stop(self) -> None:
        """Close the idle sockets now and the others once their queries are done."""
        self.stopped = True
        for channels in self.channels.values():
            for channel in list(channels):
                if channel.pending:
                    channel.retire()
                else:
                    channel.close()


def is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
