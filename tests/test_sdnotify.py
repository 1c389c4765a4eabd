"""kubernetai.app.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from kubernetai.app.sdnotify import MAX_DATAGRAM, Notifier


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound datagram socket we read from."""

    def __init__(self, address: str | bytes, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env_value = env_value  # what systemd would put in NOTIFY_SOCKET

    def environ(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def received(self) -> list[bytes]:
        """Every datagram queued so far, without waiting for more."""
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    """A notify socket at a filesystem path, as /run/systemd/notify is."""
    path = str(tmp_path / "notify")
    assert len(path.encode()) < 108, "AF_UNIX paths are limited to 107 bytes"
    fake = FakeSystemd(path, path)
    yield fake
    fake.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    """A notify socket in the abstract namespace, which $NOTIFY_SOCKET spells '@name'."""
    name = f"kubernetai-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name, "@" + name)
    yield fake
    fake.close()


@pytest.fixture
def warnings() -> Iterator[list[dict]]:
    """Log events of level warn or above emitted during the test."""
    events: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace") == "kubernetai.app.sdnotify" and event["log_level"].name in (
                "warn", "error", "critical"):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_ready_is_one_datagram(systemd: FakeSystemd) -> None:
    """READY=1 and its STATUS arrive together, as one datagram of KEY=VALUE lines."""
    notifier = Notifier(systemd.environ())
    assert notifier.enabled
    notifier.ready("3/3 clusters synced")
    assert systemd.received() == [b"READY=1\nSTATUS=3/3 clusters synced\n"]


def test_abstract_namespace(abstract_systemd: FakeSystemd) -> None:
    """A NOTIFY_SOCKET starting with '@' names an abstract socket (leading NUL)."""
    notifier = Notifier(abstract_systemd.environ())
    assert notifier.enabled
    notifier.status("waiting for cluster.local")
    assert abstract_systemd.received() == [b"STATUS=waiting for cluster.local\n"]


def test_each_message_exactly(systemd: FakeSystemd) -> None:
    """status, stopping and notify(**fields) send exactly the fields given, in order."""
    notifier = Notifier(systemd.environ())
    notifier.status("cluster.local synced; west.local waiting")
    notifier.stopping()
    assert notifier.notify(STATUS="x", EXTEND_TIMEOUT_USEC=5_000_000) is True
    assert systemd.received() == [
        b"STATUS=cluster.local synced; west.local waiting\n",
        b"STOPPING=1\n",
        b"STATUS=x\nEXTEND_TIMEOUT_USEC=5000000\n",
    ]


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC, CLOCK_MONOTONIC now in microseconds."""
    notifier = Notifier(systemd.environ())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = systemd.received()
    lines = message.decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after
    assert lines[2:] == [""]


def test_values_stay_on_one_line(systemd: FakeSystemd) -> None:
    """Newlines, carriage returns and NULs in a value cannot start a field of their own."""
    Notifier(systemd.environ()).status("a\nREADY=1\rb\0c")
    assert systemd.received() == [b"STATUS=a READY=1 b c\n"]


def test_long_status_is_cut_to_fit(systemd: FakeSystemd) -> None:
    """A STATUS too long for systemd's 4096-byte buffer is cut, not dropped with the READY."""
    status = "cluster-é.local synced; " * 400
    Notifier(systemd.environ()).ready(status)
    [message] = systemd.received()
    assert len(message) < MAX_DATAGRAM
    assert len(message) >= MAX_DATAGRAM - 5   # cut no more than needed (UTF-8 boundary)
    text = message.decode("utf-8")            # still valid UTF-8, which systemd insists on
    assert text.startswith("READY=1\nSTATUS=cluster-é.local synced; ")
    assert text.endswith("...\n")


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET every call is a quiet no-op (not run by systemd)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    clock = Clock()
    for notifier in (Notifier(), Notifier({}, reactor=clock)):
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
        assert notifier.notify(READY=1) is False
        notifier.ready("x")
        notifier.status("x")
        notifier.reloading()
        notifier.stopping()
        notifier.start_watchdog()
        notifier.stop_watchdog()
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify", "@"])
def test_unsupported_socket_disables(value: str, warnings: list[dict]) -> None:
    """A NOTIFY_SOCKET that is neither a path nor '@name' disables, with one warning."""
    notifier = Notifier({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert notifier.notify(READY=1) is False
    assert len(warnings) == 1


def test_reads_os_environ_by_default(systemd: FakeSystemd,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With no environ argument the process environment is read (and left as it was)."""
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env_value)
    Notifier().stopping()
    assert systemd.received() == [b"STOPPING=1\n"]
    assert os.environ["NOTIFY_SOCKET"] == systemd.env_value


def test_watchdog_with_matching_pid(systemd: FakeSystemd) -> None:
    """WATCHDOG_PID equal to our PID enables pings at half of WATCHDOG_USEC."""
    environ = systemd.environ(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()))
    notifier = Notifier(environ)
    assert notifier.watchdog_interval == 15.0


def test_watchdog_without_pid(systemd: FakeSystemd) -> None:
    """WATCHDOG_USEC without WATCHDOG_PID is for whoever reads it (sd_watchdog_enabled)."""
    assert Notifier(systemd.environ(WATCHDOG_USEC="500000")).watchdog_interval == 0.25


@pytest.mark.parametrize("extra", [
    {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},            # another process's watchdog
    {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"},
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "soon"},
    {},
])
def test_watchdog_not_ours(systemd: FakeSystemd, extra: dict[str, str]) -> None:
    """A watchdog for another PID, or a missing or bad WATCHDOG_USEC, means no pings."""
    clock = Clock()
    notifier = Notifier(systemd.environ(**extra), reactor=clock)
    assert notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.start_watchdog()
    assert clock.getDelayedCalls() == []
    assert systemd.received() == []


def test_watchdog_without_socket_is_off() -> None:
    """WATCHDOG_USEC without NOTIFY_SOCKET sends nothing: nobody would hear the pings."""
    notifier = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval is None


def test_watchdog_pings_on_schedule(systemd: FakeSystemd) -> None:
    """Pings go out at once, then every WATCHDOG_USEC/2 on the reactor's clock until stopped."""
    clock = Clock()
    notifier = Notifier(systemd.environ(WATCHDOG_USEC="2000000", WATCHDOG_PID=str(os.getpid())),
                        reactor=clock)
    notifier.start_watchdog()
    notifier.start_watchdog()  # idempotent: still one timer
    assert systemd.received() == [b"WATCHDOG=1\n"]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.999)
    assert systemd.received() == []
    clock.advance(0.001)
    assert systemd.received() == [b"WATCHDOG=1\n"]
    clock.pump([1.0, 1.0, 1.0])
    assert systemd.received() == [b"WATCHDOG=1\n"] * 3
    notifier.stop_watchdog()
    notifier.stop_watchdog()  # idempotent
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert systemd.received() == []


def test_send_failure_does_not_raise(systemd: FakeSystemd, tmp_path: Path,
                                     warnings: list[dict]) -> None:
    """A vanished socket makes notify return False and log once; it recovers when it is back."""
    notifier = Notifier(systemd.environ())
    assert notifier.notify(READY=1) is True
    systemd.close()
    os.unlink(systemd.env_value)
    assert notifier.notify(STATUS="one") is False
    notifier.status("two")
    notifier.stopping()
    assert len(warnings) == 1
    assert "could not notify systemd" in warnings[0]["log_format"]

    revived = FakeSystemd(systemd.env_value, systemd.env_value)
    try:
        assert notifier.notify(STATUS="back") is True
        assert revived.received() == [b"STATUS=back\n"]
        revived.close()
        os.unlink(systemd.env_value)
        assert notifier.notify(STATUS="gone again") is False
        assert len(warnings) == 2  # a new outage is reported again
    finally:
        revived.close()


def test_watchdog_failure_does_not_stop_the_timer(systemd: FakeSystemd) -> None:
    """A failed ping neither raises out of the LoopingCall nor stops later pings."""
    clock = Clock()
    notifier = Notifier(systemd.environ(WATCHDOG_USEC="2000000"), reactor=clock)
    notifier.start_watchdog()
    systemd.close()
    os.unlink(systemd.env_value)
    clock.advance(1)
    clock.advance(1)
    assert len(clock.getDelayedCalls()) == 1
    revived = FakeSystemd(systemd.env_value, systemd.env_value)
    try:
        clock.advance(1)
        assert revived.received() == [b"WATCHDOG=1\n"]
    finally:
        revived.close()
        notifier.stop_watchdog()


def test_never_blocks_when_systemd_does_not_read(systemd: FakeSystemd) -> None:
    """With systemd's queue full, sends fail at once (non-blocking) instead of stalling."""
    notifier = Notifier(systemd.environ())
    start = time.monotonic()
    results = [notifier.notify(WATCHDOG=1) for _ in range(5000)]
    assert time.monotonic() - start < 5
    assert results[0] is True
    assert False in results
