"""systemd's readiness protocol, sd_notify(3), spoken directly over ``$NOTIFY_SOCKET``.

Under a ``Type=notify`` unit, systemd passes the path of a datagram socket in
``$NOTIFY_SOCKET`` and waits for ``READY=1`` before it counts the service as started (and
before units ordered after it start). The protocol is small enough that speaking it here
costs less than a dependency: each message is one ``AF_UNIX``/``SOCK_DGRAM`` datagram of
newline-separated ``KEY=VALUE`` lines. The socket is a filesystem path (``/run/systemd/notify``)
or, when the variable starts with ``@``, a name in the abstract namespace.

How the server uses it (the whole protocol, see sd_notify(3) and systemd.service(5)):

* ``READY=1`` once every stanza has synced or given up waiting (its ``startup_timeout``)
  and the DNS ports listen; ``STATUS=`` lines on the way, saying which clusters are synced,
  which ``systemctl status`` shows.
* ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload begins, then ``READY=1`` when it is
  done: what ``Type=notify-reload`` (systemd 253 and later) waits for, and what older
  systemd shows as the "reloading" state.
* ``STOPPING=1`` when shutdown begins, so systemd shows "deactivating" at once.
* ``WATCHDOG=1`` every half ``WatchdogSec=`` from a reactor timer: if the reactor stalls,
  the pings stop and systemd kills (SIGABRT) and restarts the service
  (``Restart=on-failure``).

Outside systemd (no ``$NOTIFY_SOCKET``), every method is a no-op, so callers need not check.

The variables are *not* removed from ``os.environ`` (sd_notify's ``unset_environment``):
a second `Notifier` made later in the process, for instance on reload, must still find
them. Child processes (kubeconfig ``exec`` credential plugins are the only ones) do inherit
them, but the unit's ``NotifyAccess=main`` makes systemd ignore any datagram not sent by the
main PID, and ``WATCHDOG_PID`` (our PID) tells a child that the watchdog is not its job.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Notifier", "MAX_DATAGRAM"]

log = Logger(namespace="kubernetai.app.sdnotify")

#: systemd reads a notification into a buffer of this size (PIPE_BUF) and drops any
#: longer message whole, with only a warning in its own log; ours stay a byte shorter.
#: A long STATUS (many clusters) is cut to fit rather than losing the whole message.
MAX_DATAGRAM = 4096

_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\0": " "})


def _address(value: str) -> bytes | None:
    """The socket address for a ``$NOTIFY_SOCKET`` value, or None if unsupported.

    sd_notify accepts an absolute path or ``@name`` (abstract namespace, a leading NUL on
    the wire). Newer systemd also passes ``vsock:CID:PORT`` to virtual machines, which
    this server never runs as; such values disable notification instead of failing.
    """
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


class Notifier:
    """sd_notify(3) over ``$NOTIFY_SOCKET``; a no-op when the variable is unset.

    :param environ: where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``
        (default ``os.environ``); tests pass their own.
    :param reactor: the clock for the watchdog timer (default: the global reactor).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 reactor: Any = None) -> None:
        env = os.environ if environ is None else environ
        self._reactor = reactor
        self._socket: socket.socket | None = None
        self._address: bytes | None = None
        self._failing = False   # a failure has been logged since the last success
        self._watchdog: LoopingCall | None = None

        raw = env.get("NOTIFY_SOCKET", "")
        if raw:
            self._address = _address(raw)
            if self._address is None:
                log.warn("NOTIFY_SOCKET={value!r} is not a path or @abstract name: "
                         "not notifying systemd", value=raw)
        #: Whether messages go anywhere: systemd started us with a notify socket.
        self.enabled: bool = self._address is not None

        #: Seconds between watchdog pings (half of WatchdogSec=), or None if systemd wants
        #: none, or wants them from another process (WATCHDOG_PID).
        self.watchdog_interval: float | None = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises; None if not for us.

        Without a notify socket nobody would hear the pings, so none are sent.
        A ``WATCHDOG_PID`` other than ours means the variables were inherited from the
        process systemd is watching; sd_watchdog_enabled returns 0 then, and so do we.
        """
        usec = env.get("WATCHDOG_USEC")
        if not usec or not env.get("NOTIFY_SOCKET"):
            return None
        try:
            value = int(usec)
        except ValueError:
            log.warn("WATCHDOG_USEC={value!r} is not a number: no watchdog pings", value=usec)
            return None
        if value <= 0:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                log.warn("WATCHDOG_PID={value!r} is not a number: no watchdog pings", value=pid)
                return None
        return value / 2 / 1_000_000

    # -- sending -----------------------------------------------------------------------

    def notify(self, **fields: str | int) -> bool:
        """Send the fields as ONE datagram of ``KEY=VALUE`` lines; True if it was sent.

        One datagram, because systemd applies a message's fields together: READY=1 and
        the STATUS that explains it arrive at once. Never raises, since a DNS server must
        not fail because its supervisor went away: the first failure is logged, further
        ones are not until a send succeeds again. The socket is non-blocking, so a
        systemd that is not reading costs a dropped message, never a stalled reactor.
        """
        if not self.enabled or not fields:
            return False
        data = self._encode(fields)
        try:
            if self._socket is None:
                # Python sockets are close-on-exec already (PEP 446): no child gets it.
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(data, self._address)  # type: ignore[arg-type]
        except OSError as error:
            if not self._failing:
                self._failing = True
                log.warn("could not notify systemd ({fields}): {error}",
                         fields=",".join(fields), error=error)
            return False
        if self._failing:
            self._failing = False
            log.info("notifying systemd works again")
        return True

    @staticmethod
    def _encode(fields: Mapping[str, str | int]) -> bytes:
        r"""``KEY=VALUE\n`` lines, each value on one line, the whole under MAX_DATAGRAM.

        systemd splits a message at both ``\n`` and ``\r``, so either inside a value would
        start a bogus field; it becomes a space (and a NUL, which makes systemd drop the
        whole message, too). If the message is too long, STATUS (the only free text) is
        cut at a UTF-8 character boundary, ending in "...": systemd also ignores a STATUS
        that is not valid UTF-8.
        """
        values = {key: str(value).translate(_ONE_LINE) for key, value in fields.items()}

        def encode() -> bytes:
            return "".join(f"{key}={value}\n" for key, value in values.items()).encode()

        data = encode()
        excess = len(data) - (MAX_DATAGRAM - 1)
        if excess > 0 and "STATUS" in values:
            status = values["STATUS"].encode()
            keep = max(0, len(status) - excess - 3)
            values["STATUS"] = status[:keep].decode(errors="ignore") + "..."
            data = encode()
        return data

    def ready(self, status: str) -> None:
        """READY=1 with a STATUS: started (or reloaded), and what state it is in."""
        self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        """A STATUS line for ``systemctl status``, e.g. which clusters have synced."""
        self.notify(STATUS=status)

    def reloading(self) -> None:
        """RELOADING=1, with the CLOCK_MONOTONIC time in µs that Type=notify-reload needs.

        When systemd 253+ has sent a ``Type=notify-reload`` unit its reload signal, only a
        RELOADING=1 whose MONOTONIC_USEC is not older than that signal counts as the answer
        (an earlier, unrelated RELOADING=1 must not end the wait). Plain ``Type=notify``
        takes the timestamp harmlessly. Send `ready` when the reload is done: READY=1 is
        what ends the "reloading" state.
        """
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=now_usec)

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        self.notify(STOPPING=1)

    # -- watchdog ----------------------------------------------------------------------

    def start_watchdog(self) -> None:
        """Ping WATCHDOG=1 every `watchdog_interval` from a reactor timer; no-op without one.

        The pings come from the reactor, so they stop exactly when the reactor stops
        turning, which is when DNS stops being answered. systemd arms the watchdog at
        READY=1 (startup is bounded by TimeoutStartSec= instead) and disarms it once
        stopping begins. A ping before READY=1 only arms it early, harmless while pings
        keep coming: so start this when the reactor starts, and it is surely running by
        READY=1. Idempotent.
        """
        if self.watchdog_interval is None:
            return
        if self._watchdog is not None and self._watchdog.running:
            return
        clock = self._reactor
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self._watchdog = LoopingCall(self.notify, WATCHDOG=1)
        self._watchdog.clock = clock
        self._watchdog.start(self.watchdog_interval, now=True)

    def stop_watchdog(self) -> None:
        """Stop the pings (idempotent)."""
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None

    def close(self) -> None:
        """Stop the pings and close the socket; a later `notify` opens it again."""
        self.stop_watchdog()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
