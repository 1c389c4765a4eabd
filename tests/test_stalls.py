"""The reactor stall meter and the GC timer (kubernetai.core.stalls): a deliberate stall of
the reactor is recorded, a full collection is timed under generation 2, and a running
server exports both over real HTTP /metrics (stopped with SIGSTOP, it shows the stall)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from kubernetai.core import stalls
from kubernetai.core.metrics import MetricStore
from kubernetai.pkg import reactor_thread
from kubernetai.sandbox.ports import free_port

TWISTD = str(Path(sys.executable).parent / "twistd")
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def test_a_sleep_on_the_reactor_is_a_stall(reactor_running: None) -> None:
    from twisted.internet import reactor
    meter = reactor_thread.in_reactor(stalls.StallMeter, reactor, MetricStore())
    reactor_thread.in_reactor(meter.start)
    try:
        time.sleep(0.05)  # a few heartbeats on time first
        reactor_thread.in_reactor(time.sleep, 0.05)
        wait_for(lambda: meter.largest.values[()] > 0, what="a stall recorded")
        time.sleep(0.02)
    finally:
        reactor_thread.in_reactor(meter.stop)
    assert meter.largest.values[()] >= 0.04
    assert meter.busy.values[()] < 0.04  # a sleep is waiting, not computing
    counts, total = meter.stalls.cumulative(())
    assert counts[-1] >= 1 and total >= 0.04
    assert not meter.running


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_busy_reactor_is_a_busy_stall(reactor_running: None) -> None:
    from twisted.internet import reactor
    meter = reactor_thread.in_reactor(stalls.StallMeter, reactor, MetricStore())
    reactor_thread.in_reactor(meter.start)
    try:
        time.sleep(0.05)
        reactor_thread.in_reactor(spin, 0.05)
        wait_for(lambda: meter.largest.values[()] > 0, what="a stall recorded")
    finally:
        reactor_thread.in_reactor(meter.stop)
    assert meter.largest.values[()] >= 0.04
    assert meter.busy.values[()] >= 0.04


def test_a_punctual_reactor_records_nothing() -> None:
    clock = task.Clock()
    meter = stalls.StallMeter(clock, MetricStore(), clock=clock.seconds)
    meter.start()
    for _ in range(100):
        clock.advance(stalls.INTERVAL)
    assert meter.largest.values[()] == 0
    assert meter.stalls.cumulative(())[0][-1] == 0
    clock.advance(stalls.INTERVAL + 0.03)  # one beat 30 ms late
    assert meter.largest.values[()] == pytest.approx(0.03)
    assert meter.stalls.cumulative(())[0][-1] == 1
    meter.stop()
    assert not clock.getDelayedCalls()


def test_a_full_collection_is_timed_as_generation_2() -> None:
    timer = stalls.GCTimer(MetricStore())
    timer.start()
    try:
        gc.collect()
    finally:
        timer.stop()
    counts, total = timer.pauses.cumulative(("2",))
    assert counts[-1] >= 1 and total > 0
    assert timer.largest.values[("2",)] > 0
    assert 0 < timer.cpu.values[("2",)] <= total + 0.01
    assert timer._callback not in gc.callbacks


def test_start_and_stop_are_counted() -> None:
    clock = task.Clock()
    assert not stalls.running()
    stalls.start(clock)
    stalls.start(clock)
    stalls.stop()
    assert stalls.running() and clock.getDelayedCalls()
    stalls.stop()
    assert not stalls.running() and not clock.getDelayedCalls()
    stalls.stop()  # one too many: nothing happens
    assert not stalls.running()


# -- end to end: twistd with `prometheus` -----------------------------------------------------

COREFILE = """\
example.org:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    whoami
}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    dns_port, metrics_port = free_port(), free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE.format(dns=dns_port, metrics=metrics_port))
    log = tmp_path / "twistd.log"
    process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "kubernetai",
                                "--corefile", str(corefile)], cwd=tmp_path,
                               stdout=log.open("w"), stderr=subprocess.STDOUT, env=SOURCE_ENV)
    try:
        wait_for(lambda: scrape(metrics_port) or process.poll() is not None, timeout=60,
                 what="/metrics")
        assert process.poll() is None, log.read_text()
        yield process, metrics_port
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        process.wait(30)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_server_exports_stalls_and_gc_pauses(server: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = server
    first = scrape(port)
    assert first is not None
    assert ("kubernetai_reactor_stall_max_seconds", ()) in first
    assert ("kubernetai_reactor_stall_max_busy_seconds", ()) in first
    assert first[("kubernetai_gc_frozen_objects", ())] > 0  # frozen once serving
    assert ("kubernetai_reactor_stall_seconds_count", ()) in first
    for generation in "012":
        assert ("kubernetai_gc_pause_seconds_count", (("generation", generation),)) in first
        assert ("kubernetai_gc_pause_max_seconds", (("generation", generation),)) in first
        assert ("kubernetai_gc_cpu_seconds_total", (("generation", generation),)) in first
    # Stop the whole process for a moment: the heartbeat due meanwhile runs that late.
    before = first[("kubernetai_reactor_stall_seconds_count", ())]
    os.kill(process.pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    after = wait_for(lambda: (lambda s: s if s and s[("kubernetai_reactor_stall_max_seconds",
                                                       ())] >= 0.15 else None)(scrape(port)),
                     timeout=15, what="the stall in /metrics")
    assert after[("kubernetai_reactor_stall_seconds_count", ())] >= before + 1
    assert after[("kubernetai_reactor_stall_seconds_bucket", (("le", "0.1"),))] < \
        after[("kubernetai_reactor_stall_seconds_bucket", (("le", "+Inf"),))]
