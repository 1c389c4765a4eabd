"""Hostile packets at the real server over UDP, and TCP abuse: crashes, tracebacks, hangs, RSS.

    python bench/fuzz_udp.py [--count 1000000] [--rate 3000] [--sockets 4] [--tcp] [--seed 1]

Starts three simulated API servers with the demo clusters (`kubernetai sandbox`, one with
a 500-endpoint headless service for large and truncated answers) and the real server
(`twistd -n kubernetai --corefile F --dns-port P`, with `errors` and `log`), all on
127.0.0.1. Then sends `--count` packets from `--sockets` UDP sockets at `--rate` packets
a second: valid queries, queries aimed at known weak spots (compression pointers, section
counts, COOKIEs of every length, large PADDING, EDNS versions, two OPT records, control
bytes in names), valid queries with bytes flipped, cut or inserted, and random bytes.
Every reply is parsed with dnspython and its size checked against max(512, the UDP size
its query advertised). Every `--probe-interval` seconds a valid probe query goes out from
a socket of its own; no probe answered for `--hang-seconds` is a hang.

With `--tcp`, the same generator also runs over pipelined TCP connections, then for
`--tcp-seconds` the server is held under TCP abuse at once: `--tcp-connections` idle
connections, connections that send half a message and stall, slowloris clients dripping
a byte a second, clients that send a query every 9 s to stay connected, while a fresh
client asks one TCP query every 2 s and the UDP probes go on. The roles use different
loopback source addresses (127.0.0.1 floods, 127.0.0.2 is slow, 127.0.0.3 asks), so the
server's per-client connection cap applies to each separately.

Printed at the end: packets sent, replies, replies that do not parse, replies larger than
allowed, crashes (the server exited), tracebacks and "Unhandled" lines in its log, log
lines holding raw control bytes or not shaped like any line the server writes (forged),
hangs, probe latency, the server's RSS (start, end, peak VmHWM), and the TCP figures.

Exit status: 1 on a crash, a traceback or a hang; 3 if only bad replies, bad log lines or
failed fresh TCP queries were found; 0 otherwise. Load stays on 127.0.0.1 and is bounded
by --rate, --count, --tcp-connections and --max-minutes.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode

from kubernetai.sandbox.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import (  # noqa: E402
    ROOT,
    QueryFuzzer,
    allowed_udp_reply,
    mib,
    open_fds,
    opt_record,
    proc_status,
    query,
)

HOST = "127.0.0.1"
PROBE_NAME = b"web.shared.svc.cluster.local"
PROBE_ADDRESS = "10.96.100.10"
CLUSTERS = ("cluster.local", "assemblage.local", "conglomeration.local")
EXAMPLES_SHOWN = 3

COREFILE = """\
cluster.local assemblage.local conglomeration.local in-addr.arpa ip6.arpa {{
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:0
{log}
    kubernetai cluster.local in-addr.arpa ip6.arpa {{
        endpoint {cluster}
        pods insecure
        fallthrough cluster.local in-addr.arpa ip6.arpa
    }}
    kubernetai assemblage.local cluster.local in-addr.arpa ip6.arpa {{
        endpoint {assemblage}
        endpoint_pod_names
        fallthrough in-addr.arpa ip6.arpa
    }}
    kubernetai conglomeration.local in-addr.arpa ip6.arpa {{
        endpoint {conglomeration}
    }}
}}
fall.test {{
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:0
{log}
    kubernetai fall.test {{
        endpoint {cluster}
        fallthrough
    }}
}}
"""


# ---------------------------------------------------------------------------------------
# The system under test


def big_headless(count: int) -> dict[str, Any]:
    """A List manifest: a headless service with `count` endpoints (large answers)."""
    endpoints = [{"addresses": [f"10.250.{i // 250}.{i % 250 + 1}"], "hostname": f"m-{i}",
                  "conditions": {"ready": True}} for i in range(count)]
    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big", "namespace": "shop"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "big-1", "namespace": "shop",
                      "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4", "endpoints": endpoints,
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]}


def wait_for_line(path: Path, prefix: str, process: subprocess.Popen, timeout: float) -> str:
    """The first line of `path` starting with `prefix`, once the process has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line.strip()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"no {prefix!r} line in {path}: {path.read_text()[-2000:]}")


class Stack:
    """Three sandboxes and twistd, in a directory of their own; stopped on exit."""

    def __init__(self, workdir: Path, *, log_queries: bool) -> None:
        self.workdir = workdir
        self.log_queries = log_queries
        self.sandboxes: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None
        self.port = 0
        self.log = workdir / "server.log"

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        big = self.workdir / "big.json"
        big.write_text(json.dumps(big_headless(500)))
        urls = {}
        for zone in CLUSTERS:
            out = self.workdir / f"sandbox-{zone}.log"
            manifests = ["--manifests", str(ROOT / "examples" / zone)]
            if zone == "cluster.local":
                manifests += ["--manifests", str(big)]
            with out.open("w") as fh:
                process = subprocess.Popen(
                    [sys.executable, "-m", "kubernetai", "sandbox", *manifests,
                     "--host", HOST, "--port", "0"],
                    stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            self.sandboxes.append(process)
            urls[zone.split(".")[0]] = wait_for_line(out, "http://", process, 60)
        corefile = self.workdir / "Corefile"
        corefile.write_text(COREFILE.format(log="    log" if self.log_queries else "", **urls))
        self.port = free_port()
        twistd = str(Path(sys.executable).parent / "twistd")
        with self.log.open("wb") as fh:
            self.server = subprocess.Popen(
                [twistd, "--nodaemon", "--pidfile=", "kubernetai", "--corefile", str(corefile),
                 "--dns-port", str(self.port)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 90
        while not probe_once(self.port):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not come up: "
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        for process in ([self.server] if self.server else []) + self.sandboxes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in ([self.server] if self.server else []) + self.sandboxes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def alive(self) -> bool:
        return self.server is not None and self.server.poll() is None


def probe_once(port: int, *, tcp: bool = False, timeout: float = 2.0,
               source: str | None = None) -> bool:
    """Does the server answer the probe name correctly?"""
    message = dns.message.make_query(PROBE_NAME.decode(), "A")
    try:
        send = dns.query.tcp if tcp else dns.query.udp
        response = send(message, HOST, port=port, timeout=timeout, source=source)
    except Exception:  # noqa: BLE001 - timeouts, resets, refusals: not answered
        return False
    return any(rr.to_text() == PROBE_ADDRESS for rrset in response.answer for rr in rrset)


# ---------------------------------------------------------------------------------------
# Bookkeeping


@dataclass
class Report:
    sent: int = 0
    replies: int = 0
    unmatched: int = 0
    unparseable: int = 0
    oversized: int = 0
    crashed: bool = False
    hangs: int = 0
    longest_silence: float = 0.0
    probes: int = 0
    probes_answered: int = 0
    probe_latencies: list[float] = field(default_factory=list)
    rss_start: int | None = None
    rss_end: int | None = None
    hwm: int | None = None
    fds_peak: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    rcodes: Counter = field(default_factory=Counter)
    tcp: dict[str, Any] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)

    def example(self, kind: str, text: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_SHOWN:
            shown.append(text)


#: Bytes of each query kept for the examples printed at the end (the queries in flight are
#: remembered by ID, up to 65,536 per socket, so memory stays bounded).
KEPT_BYTES = 2048


def sent_record(packet: bytes, udp: bool) -> tuple[int, bytes]:
    """What is remembered of a query: the reply size it allows, and its first bytes."""
    return (allowed_udp_reply(packet) if udp else 65535), packet[:KEPT_BYTES]


def shown(packet: bytes) -> str:
    return packet.hex() + (" (cut)" if len(packet) == KEPT_BYTES else "")


def check_reply(report: Report, sent: tuple[int, bytes] | None, reply: bytes) -> None:
    """Parse one reply; compare its size with what its query allows (if it is known)."""
    try:
        message = dns.message.from_wire(reply)
    except Exception as error:  # noqa: BLE001 - the finding
        report.unparseable += 1
        report.example("reply does not parse",
                       f"{type(error).__name__}: {error}\n  query "
                       f"{shown(sent[1]) if sent else '?'}\n  reply {reply.hex()}")
        return
    report.rcodes[dns.rcode.to_text(message.rcode())] += 1
    if sent is None:
        report.unmatched += 1
        return
    allowed, packet = sent
    if len(reply) > allowed:
        report.oversized += 1
        report.example("reply larger than allowed",
                       f"{len(reply)} > {allowed} bytes\n  query {shown(packet)}")


class Prober:
    """Valid queries from a socket of their own: the server's pulse during the fuzzing."""

    def __init__(self, port: int, report: Report, interval: float, hang_seconds: float) -> None:
        self.port = port
        self.report = report
        self.interval = interval
        self.hang_seconds = hang_seconds
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.outstanding: dict[int, float] = {}
        self.next_at = 0.0
        self.ident = 0
        self.last_answer = time.monotonic()
        self.in_hang = False

    def tick(self, now: float) -> None:
        if now >= self.next_at:
            self.next_at = now + self.interval
            self.ident = (self.ident + 1) & 0xFFFF
            try:
                self.sock.sendto(query(PROBE_NAME, ident=self.ident,
                                       opt=opt_record(1232)), (HOST, self.port))
                self.outstanding[self.ident] = now
                self.report.probes += 1
            except OSError:
                pass
        for ident, sent in list(self.outstanding.items()):
            if now - sent > self.hang_seconds * 2:
                del self.outstanding[ident]
        silence = now - self.last_answer
        self.report.longest_silence = max(self.report.longest_silence, silence)
        if silence > self.hang_seconds and not self.in_hang:
            self.in_hang = True
            self.report.hangs += 1

    def readable(self, now: float) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return
            ident = struct.unpack_from("!H", data)[0] if len(data) >= 2 else -1
            sent = self.outstanding.pop(ident, None)
            if sent is None:
                continue
            try:
                message = dns.message.from_wire(data)
                good = any(rr.to_text() == PROBE_ADDRESS
                           for rrset in message.answer for rr in rrset)
            except Exception:  # noqa: BLE001
                good = False
            if good:
                self.report.probes_answered += 1
                self.report.probe_latencies.append(now - sent)
                self.last_answer = now
                self.in_hang = False


def sample(stack: Stack, report: Report) -> None:
    report.fds_peak = max(report.fds_peak, open_fds(stack.pid) or 0)
    hwm = proc_status(stack.pid, "VmHWM")
    if hwm:
        report.hwm = hwm


def still_up(stack: Stack, report: Report) -> bool:
    """A sample of the server's fds and memory; False (and a crash counted) once it died."""
    sample(stack, report)
    if not stack.alive():
        report.crashed = True
        return False
    return True


# ---------------------------------------------------------------------------------------
# UDP


def fuzz_udp(stack: Stack, args: argparse.Namespace, report: Report,
             fuzzer: QueryFuzzer) -> None:
    selector = selectors.DefaultSelector()
    socks = []
    for index in range(args.sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks.append(sock)
    prober = Prober(stack.port, report, args.probe_interval, args.hang_seconds)
    selector.register(prober.sock, selectors.EVENT_READ, -1)
    pending: list[dict[int, tuple[int, bytes]]] = [{} for _ in socks]
    target = (HOST, stack.port)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    next_check = started
    next_progress = started + 30
    drain_until = None
    while True:
        now = time.monotonic()
        if drain_until is None:
            due = min(args.count, int((now - started) * args.rate) + 1)
            burst = 0
            while report.sent < due and burst < 500:
                packet = fuzzer.next()[:args.max_packet]
                index = report.sent % len(socks)
                if len(packet) >= 2:
                    pending[index][struct.unpack_from("!H", packet)[0]] = sent_record(packet, True)
                try:
                    socks[index].sendto(packet, target)
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
                        raise
                report.sent += 1
                burst += 1
            if report.sent >= args.count or now > deadline:
                drain_until = now + 3.0
        prober.tick(now)
        for key, _ in selector.select(timeout=0.002):
            if key.data < 0:
                prober.readable(time.monotonic())
                continue
            sock = key.fileobj
            while True:
                try:
                    reply = sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                ident = struct.unpack_from("!H", reply)[0] if len(reply) >= 2 else -1
                report.replies += 1
                check_reply(report, pending[key.data].pop(ident, None), reply)
        if now >= next_check:
            next_check = now + 0.5
            if not still_up(stack, report):
                break
        if now >= next_progress:
            next_progress = now + 30
            print(f"... sent {report.sent}, replies {report.replies}, unparseable "
                  f"{report.unparseable}, oversized {report.oversized}, hangs {report.hangs}, "
                  f"RSS {mib(proc_status(stack.pid, 'VmRSS'))}", flush=True)
        if drain_until is not None and now > drain_until:
            break
    for sock in socks:
        sock.close()
    prober.sock.close()


# ---------------------------------------------------------------------------------------
# TCP


def fuzz_tcp(stack: Stack, args: argparse.Namespace, report: Report,
             fuzzer: QueryFuzzer) -> None:
    """The generator's packets over pipelined TCP connections (up to 16 in flight each)."""
    stats = Counter()
    deadline = time.monotonic() + args.max_minutes * 60
    conns: list[dict[str, Any]] = []

    def connect() -> dict[str, Any] | None:
        try:
            sock = socket.create_connection((HOST, stack.port), timeout=5)
        except OSError:
            stats["connect failed"] += 1
            return None
        sock.settimeout(5)
        stats["connections"] += 1
        return {"sock": sock, "buf": b"", "pending": {}}

    while stats["sent"] < args.tcp_count and time.monotonic() < deadline:
        if not stack.alive():
            report.crashed = True
            break
        while len(conns) < 4:
            conn = connect()
            if conn is None:
                time.sleep(0.2)
                break
            conns.append(conn)
        for conn in list(conns):
            batch = []
            for _ in range(16):
                packet = fuzzer.next()[:65535]
                if len(packet) >= 2:
                    conn["pending"][struct.unpack_from("!H", packet)[0]] = sent_record(packet,
                                                                                       False)
                batch.append(struct.pack("!H", len(packet)) + packet)
            stats["sent"] += len(batch)
            try:
                conn["sock"].sendall(b"".join(batch))
                read_replies(conn, report, stats, settle=0.005)
            except OSError:
                pass
            if conn.get("closed") or conn["sock"].fileno() < 0:
                stats["closed by the server"] += 1
                conn["sock"].close()
                conns.remove(conn)
    for conn in conns:
        conn["sock"].close()
    report.tcp["fuzz"] = dict(stats)


def read_replies(conn: dict[str, Any], report: Report, stats: Counter, settle: float) -> None:
    """Read what has arrived (waiting up to `settle` s for more); check each reply."""
    sock = conn["sock"]
    sock.settimeout(settle)
    while True:
        try:
            data = sock.recv(1 << 16)
        except (TimeoutError, socket.timeout):
            break
        except OSError:
            conn["closed"] = True
            break
        if not data:
            conn["closed"] = True
            break
        conn["buf"] += data
        buf = conn["buf"]
        while len(buf) >= 2 and len(buf) - 2 >= struct.unpack_from("!H", buf)[0]:
            length = struct.unpack_from("!H", buf)[0]
            reply, buf = buf[2:2 + length], buf[2 + length:]
            ident = struct.unpack_from("!H", reply)[0] if len(reply) >= 2 else -1
            stats["replies"] += 1
            check_reply(report, conn["pending"].pop(ident, None), reply)
        conn["buf"] = buf


#: Loopback source addresses, so the server's per-client caps tell the roles apart: the
#: flood of idle connections, the slow clients (half a message, a byte a second, a query
#: every 9 s), and a bystander asking fresh TCP queries.
FLOOD, SLOW, BYSTANDER = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def tcp_abuse(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    """Idle, half-sent, dripping and keep-alive connections at once; fresh clients meanwhile."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    held_target = max(0, min(args.tcp_connections, soft - 300))
    valid = query(PROBE_NAME, ident=7)
    framed = struct.pack("!H", len(valid)) + valid
    selector = selectors.DefaultSelector()
    opened: dict[str, int] = Counter()
    closed_after: dict[str, list[float]] = {k: [] for k in ("idle", "partial", "slowloris",
                                                            "keepalive")}
    conns: dict[socket.socket, dict[str, Any]] = {}

    def open_one(kind: str) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((FLOOD if kind == "idle" else SLOW, 0))
            sock.connect_ex((HOST, stack.port))
        except OSError:
            sock.close()
            opened[f"{kind} failed"] += 1
            return None
        conns[sock] = {"kind": kind, "opened": time.monotonic(), "sent": 0, "next": 0.0}
        selector.register(sock, selectors.EVENT_READ)
        opened[kind] += 1
        return sock

    def closed(sock: socket.socket, now: float) -> None:
        info = conns.pop(sock)
        selector.unregister(sock)
        sock.close()
        closed_after[info["kind"]].append(now - info["opened"])

    prober = Prober(stack.port, report, args.probe_interval, args.hang_seconds)
    fresh = Counter()
    fresh_latency: list[float] = []
    started = time.monotonic()
    end = started + args.tcp_seconds
    next_fresh = started
    next_check = started
    for kind, count in (("partial", 50), ("slowloris", 20), ("keepalive", 2)):
        for _ in range(count):
            open_one(kind)
    while time.monotonic() < end:
        now = time.monotonic()
        # open the idle connections gradually (about 500 a second), as a flood would
        while opened["idle"] + opened["idle failed"] < held_target and \
                opened["idle"] + opened["idle failed"] < (now - started) * 500:
            open_one("idle")
        for sock, info in list(conns.items()):
            try:
                if info["kind"] == "partial" and info["sent"] == 0 and now - info["opened"] > 0.2:
                    info["sent"] = sock.send(framed[:len(framed) // 2])
                elif info["kind"] == "slowloris" and now >= info["next"] and \
                        info["sent"] < len(framed):
                    info["sent"] += sock.send(framed[info["sent"]:info["sent"] + 1])
                    info["next"] = now + 1.0
                elif info["kind"] == "keepalive" and now >= info["next"]:
                    sock.send(framed)
                    info["next"] = now + 9.0
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                closed(sock, now)
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                closed(sock, time.monotonic())
        prober.tick(now)
        prober.readable(now)
        if now >= next_fresh:
            next_fresh = now + 2.0
            t0 = time.monotonic()
            ok = probe_once(stack.port, tcp=True, timeout=3.0, source=BYSTANDER)
            fresh["ok" if ok else "failed"] += 1
            if ok:
                fresh_latency.append(time.monotonic() - t0)
        if now >= next_check:
            next_check = now + 0.5
            if not still_up(stack, report):
                break
    still = Counter(info["kind"] for info in conns.values())
    for sock in list(conns):
        selector.unregister(sock)
        sock.close()
    prober.sock.close()
    report.tcp["abuse"] = {
        "seconds": args.tcp_seconds, "opened": dict(opened), "still open at the end": dict(still),
        "closed by the server (count, max s)": {
            k: (len(v), round(max(v), 1) if v else None) for k, v in closed_after.items()},
        "fresh TCP queries": dict(fresh),
        "fresh TCP latency max s": round(max(fresh_latency), 3) if fresh_latency else None,
    }


# ---------------------------------------------------------------------------------------
# The server's log

LINE_SHAPES = [re.compile(rb"^\[INFO\] \S+:\d+ - \d+ \"(?:[^\"\\]|\\.)*\" [A-Z0-9]+ [a-z,]* \d+ "
                          rb"[0-9.e-]+s$"),
               # the name escaped as CoreDNS writes it (\DDD, "\ " for a space)
               re.compile(rb"^\[ERROR\] plugin/errors: \d+ (?:[^\s\\]|\\.)+ \S+: .*$"),
               re.compile(rb"^\[WARNING\] .*$"),
               # The server's own lines, and the start-up banner (as CoreDNS's).
               re.compile(rb"^\[INFO\] (?:plugin/\S+|kubernetai|informer|malformed DNS request|"
                          rb"SIGTERM|SIGINT)"),
               re.compile(rb"^\S+:\d+(?: on \S+)?$"),
               re.compile(rb"^kubernetai-\S+$"),
               re.compile(rb"^\S+/\S+, python"),
               re.compile(rb"^\t")]
RAW = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f-\xff]")
#: A plugin error that no block's `errors` step wrote: the server's own fallback, at error
#: level in the Twisted log (``KubernetaiServerFactory.reportError``).
MISROUTED = re.compile(rb"^\[ERROR\] \d+ \S")


def scan_log(path: Path, report: Report) -> None:
    """Tracebacks, Unhandled errors, raw bytes and lines of no known shape in the log."""
    counts = Counter()
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\n")
            if b"Traceback (most recent call last)" in line:
                counts["tracebacks"] += 1
                report.example("traceback in the log", line.decode(errors="replace")[:300])
            if b"Unhandled" in line:
                counts["unhandled"] += 1
                report.example("Unhandled in the log", line.decode(errors="replace")[:300])
            if RAW.search(line.replace(b"\t", b" ", 1) if line.startswith(b"\t") else line):
                counts["raw bytes"] += 1
                report.example("log line with raw bytes", repr(line[:300]))
            if MISROUTED.search(line):
                counts["misrouted"] += 1
                report.example("errors line not written by the errors plugin", repr(line[:300]))
            if not any(shape.match(line) for shape in LINE_SHAPES):
                counts["unknown shape"] += 1
                report.example("log line of no known shape (forged?)", repr(line[:300]))
            counts["lines"] += 1
    report.log = dict(counts)


# ---------------------------------------------------------------------------------------


def print_report(report: Report, args: argparse.Namespace, seconds: float, log: Path) -> int:
    lat = sorted(report.probe_latencies)
    p99 = lat[int(len(lat) * 0.99) - 1] if lat else None
    print(f"\nfuzz_udp: {seconds:.0f} s, seed {args.seed}, rate {args.rate}/s, "
          f"{args.sockets} sockets")
    print(f"  packets sent                {report.sent}")
    print(f"  replies                     {report.replies}  (rcodes: "
          f"{dict(report.rcodes.most_common())})")
    print(f"  replies that do not parse   {report.unparseable}")
    print(f"  replies larger than allowed {report.oversized}")
    print(f"  crashes (server exited)     {int(report.crashed)}")
    print(f"  tracebacks in the log       {report.log.get('tracebacks', 0)}"
          f"  (Unhandled: {report.log.get('unhandled', 0)})")
    print(f"  log lines with raw bytes    {report.log.get('raw bytes', 0)}"
          f"  (of no known shape: {report.log.get('unknown shape', 0)}; "
          f"{report.log.get('lines', 0)} lines; errors lines outside `errors`: "
          f"{report.log.get('misrouted', 0)})")
    print(f"  hangs                       {report.hangs}  (no probe answered for "
          f"{args.hang_seconds} s; longest silence {report.longest_silence:.2f} s)")
    print(f"  probes answered             {report.probes_answered}/{report.probes}"
          f"  (latency p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms)" if lat else
          f"  probes answered             0/{report.probes}")
    print(f"  server RSS                  start {mib(report.rss_start)}, end "
          f"{mib(report.rss_end)}, peak (VmHWM) {mib(report.hwm)}; open fds peak "
          f"{report.fds_peak}")
    for section, figures in report.tcp.items():
        print(f"  tcp {section}:")
        for key, value in figures.items():
            print(f"      {key}: {value}")
    for kind, shown in report.examples.items():
        print(f"\n== {kind}")
        for text in shown:
            print(text)
    print(f"\nserver log: {log}")
    fresh_failed = report.tcp.get("abuse", {}).get("fresh TCP queries", {}).get("failed", 0)
    if report.crashed or report.hangs or report.log.get("tracebacks") or \
            report.log.get("unhandled"):
        return 1
    if report.unparseable or report.oversized or report.log.get("raw bytes") or \
            report.log.get("unknown shape") or report.log.get("misrouted") or fresh_failed:
        return 3
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="UDP packets to send")
    parser.add_argument("--rate", type=float, default=3000, help="UDP packets a second")
    parser.add_argument("--sockets", type=int, default=4, help="UDP client sockets")
    parser.add_argument("--max-packet", type=int, default=9000,
                        help="cut generated packets to this size (the server reads 8,192)")
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--hang-seconds", type=float, default=5.0,
                        help="no probe answered for this long is a hang")
    parser.add_argument("--tcp", action="store_true", help="also fuzz and abuse TCP")
    parser.add_argument("--tcp-count", type=int, default=20_000,
                        help="generated messages over pipelined TCP")
    parser.add_argument("--tcp-connections", type=int, default=2000,
                        help="idle TCP connections held during the abuse phase")
    parser.add_argument("--tcp-seconds", type=float, default=40,
                        help="length of the TCP abuse phase")
    parser.add_argument("--no-log", action="store_true",
                        help="leave `log` out of the Corefile (errors stays)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=120,
                        help="stop sending after this long, whatever --count says")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fuzz-udp-"))
    fuzzer = QueryFuzzer(random.Random(args.seed))
    report = Report()
    started = time.monotonic()
    status = None
    try:
        with Stack(workdir, log_queries=not args.no_log) as stack:
            print(f"server pid {stack.pid} on {HOST}:{stack.port}; work directory {workdir}",
                  flush=True)
            report.rss_start = proc_status(stack.pid, "VmRSS")
            fuzz_udp(stack, args, report, fuzzer)
            if args.tcp and not report.crashed:
                fuzz_tcp(stack, args, report, fuzzer)
                if not report.crashed:
                    tcp_abuse(stack, args, report)
            if stack.alive():
                report.rss_end = proc_status(stack.pid, "VmRSS")
                sample(stack, report)
                if not (probe_once(stack.port) or probe_once(stack.port, tcp=True)):
                    report.hangs += 1
                    report.example("hang", "no answer to the probe at the end (UDP or TCP)")
            else:
                report.crashed = True
        scan_log(stack.log, report)
        status = print_report(report, args, time.monotonic() - started, stack.log)
    finally:
        if not args.keep and status == 0:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
