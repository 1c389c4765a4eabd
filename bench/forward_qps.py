#!/usr/bin/env python3
"""Forwarded queries: cache-hit and cache-miss QPS, our server against stock Twisted Names.

Starts, each in its own process, on 127.0.0.1 only:

* an upstream authoritative server (this file, ``--upstream-server``): a plain blocking
  UDP loop (and a TCP thread) answering every name under ``fwd.bench.`` with one A record
  ``192.0.2.N`` (N from the name, TTL 300), NXDOMAIN with the zone SOA under
  ``nx.fwd.bench.``, NODATA with the SOA for other types, REFUSED elsewhere. It counts the
  queries it gets and tells the count to a TXT query for ``count.control.bench.``, so
  each run reports upstream queries per client query. It is checked alone under dnsperf
  first, to show it is not the bottleneck;
* our server, ``twistd -n kubernetai --corefile F`` on
  ``.:PORT { bind 127.0.0.1; errors; forward . 127.0.0.1:UP; cache 30 }``;
* stock Twisted Names (this file, ``--stock-server``):
  ``server.DNSServerFactory(caches=[cache.CacheResolver()],
  clients=[client.Resolver(servers=[("127.0.0.1", UP)])])`` over UDP and TCP, untuned
  (its per-query client sockets are bound to 127.0.0.1 instead of 0.0.0.0, nothing else).

``--no-cache-too`` adds, for the miss phase, our server with ``forward`` alone and stock
Twisted with ``client.Resolver`` alone.

Before any load, a few names (A, NXDOMAIN, NODATA, a REFUSED name outside the zone, one
with EDNS) go to the upstream directly and to both servers: our answers must carry the
upstream's rcode, records and AA bit (TTLs capped by the cache), and a second ask one
second later must be a cache hit (the upstream count does not move) with a lower TTL.
Differences of the stock server are printed, not judged.

Then two phases, each server in turn (``--runs`` runs, alternating, after a warm-up):

* cache hit: a small set of names (``--hit-names``, default 100) repeated, all in the
  cache after the warm-up;
* cache miss: every query a name never asked before: a fresh dnsperf file per run and
  server (``dnsperf -n 1``, so no name comes twice; its size follows the warm-up's rate).

Printed per run and as medians: QPS, average and maximum latency, lost queries, response
codes, the server's CPU (% of one core) and queries per server CPU-second, the upstream's
CPU and upstream queries per answered client query, the server's memory (RSS and peak);
and the ratio ours / stock. Every process it started is stopped on exit, Ctrl-C included.

Needs dnsperf (Debian/Ubuntu: ``apt-get install -y dnsperf``); exits 2 without it.

    python bench/forward_qps.py [--seconds 5] [--runs 3] [--hit-names 100] [--denial 0]
                                [--clients 4] [--outstanding 100] [--mode udp|tcp]
                                [--no-cache-too] [--pin] [--keep]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    Result,
    Server,
    cpu_seconds,
    have_dnsperf,
    in_workspace,
    log_problems,
    proc_status,
    read_first_line,
    repo_env,
    run_dnsperf,
    twistd,
    wait_until,
)

from kubernetai.sandbox.ports import free_port  # noqa: E402

ZONE = "fwd.bench"
NX_ZONE = f"nx.{ZONE}"
CONTROL = "count.control.bench"

# --- the upstream (run as a subprocess: --upstream-server) -------------------------------------

SUFFIX = b"\x03fwd\x05bench\x00"
NX_SUFFIX = b"\x02nx" + SUFFIX
CONTROL_WIRE = b"\x05count\x07control\x05bench\x00"
_SOA_RDATA = (b"\x02ns" + SUFFIX + b"\x0ahostmaster" + SUFFIX
              + struct.pack("!IIIII", 1, 3600, 600, 86400, 60))
SOA_RR = SUFFIX + struct.pack("!HHIH", 6, 1, 60, len(_SOA_RDATA)) + _SOA_RDATA
OPT_RR = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"     # 1232 bytes, no options
A_RRS = [b"\xc0\x0c\x00\x01\x00\x01" + struct.pack("!IH", 300, 4) + bytes((192, 0, 2, n))
         for n in range(1, 255)]
QTYPE_A = b"\x00\x01"


class Counter:
    """Queries the upstream got (control queries excluded)."""

    def __init__(self) -> None:
        self.udp = 0
        self.tcp = 0
        self.lock = threading.Lock()


def respond(data: bytes, counter: Counter, tcp: bool = False) -> bytes | None:
    """The reply to one query, built from bytes: as cheap as Python allows, so that the
    upstream is never what limits a run."""
    if len(data) < 17 or data[2] & 0x80:            # too short, or a response
        return None
    end = data.find(b"\x00", 12)                     # queries carry no compression
    if end < 0 or len(data) < end + 5:
        return None
    qname = data[12:end + 1].lower()
    question = data[12:end + 5]
    edns = data[10:12] != b"\x00\x00" and data[end + 5:end + 8] == b"\x00\x00\x29"
    rd = data[2] & 0x01
    answer = authority = b""
    rcode = 0
    if qname == CONTROL_WIRE:
        text = str(counter.udp + counter.tcp).encode()
        answer = (b"\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x00"
                  + struct.pack("!HB", len(text) + 1, len(text)) + text)
    else:
        if tcp:
            with counter.lock:
                counter.tcp += 1
        else:
            counter.udp += 1
        if data[2] & 0x78:                           # not a QUERY: NOTIMP
            rcode = 4
        elif qname.endswith(NX_SUFFIX):
            rcode, authority = 3, SOA_RR
        elif qname.endswith(SUFFIX):
            if question[-4:-2] == QTYPE_A and qname != SUFFIX:
                answer = A_RRS[zlib.crc32(qname) % 254]
            else:
                authority = SOA_RR
        else:
            rcode = 5
    aa = 0x04 if rcode != 5 else 0                   # authoritative for its zone only
    header = data[:2] + bytes((0x80 | aa | rd, rcode)) + struct.pack(
        "!HHHH", 1, 1 if answer else 0, 1 if authority else 0, 1 if edns else 0)
    return header + question + answer + authority + (OPT_RR if edns else b"")


def serve_tcp(listener: socket.socket, counter: Counter) -> None:
    def client(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            buffer = b""
            try:
                while True:
                    while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2],
                                                                                  "big"):
                        size = int.from_bytes(buffer[:2], "big")
                        reply = respond(buffer[2:2 + size], counter, tcp=True)
                        buffer = buffer[2 + size:]
                        if reply:
                            conn.sendall(len(reply).to_bytes(2, "big") + reply)
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
            except OSError:
                return
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=client, args=(conn,), daemon=True).start()


def run_upstream() -> int:
    """Bind UDP and TCP on one free loopback port, print it, answer until killed."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            tcp.close()
    else:
        print("no free port", file=sys.stderr)
        return 2
    tcp.listen(128)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        udp.setsockopt(socket.SOL_SOCKET, option, 1 << 22)
    counter = Counter()
    threading.Thread(target=serve_tcp, args=(tcp, counter), daemon=True).start()
    print(port, flush=True)
    recvfrom, sendto = udp.recvfrom, udp.sendto
    while True:
        data, peer = recvfrom(4096)
        reply = respond(data, counter)
        if reply is not None:
            sendto(reply, peer)


# --- stock Twisted Names (run as a subprocess: --stock-server PORT --upstream UP [--bare]) -----

def run_stock_server(port: int, upstream: int, with_cache: bool) -> int:
    """DNSServerFactory with CacheResolver and client.Resolver, as the Twisted docs show."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.names import cache, client, dns, server

    class LoopbackClient(client.Resolver):
        """client.Resolver, whose fresh socket per query is bound to loopback, not 0.0.0.0."""

        def _connectedProtocol(self, interface: str = "") -> Any:
            return super()._connectedProtocol(interface=interface or "127.0.0.1")

    print(f"stock twisted.names server on 127.0.0.1:{port}, upstream 127.0.0.1:{upstream}"
          f"{'' if with_cache else ', no cache'}", flush=True)
    # Warnings and errors only: Twisted logs the start and stop of every client socket
    # (one per forwarded query) at info, and writing those lines is not the job measured.
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])])
    caches = [cache.CacheResolver()] if with_cache else None
    factory = server.DNSServerFactory(
        caches=caches, clients=[LoopbackClient(servers=[("127.0.0.1", upstream)])])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()
    return 0


# --- asking and describing ---------------------------------------------------------------------

def query_wire(name: str, qtype: str, edns: bool = False) -> bytes:
    import dns.message
    message = dns.message.make_query(name, qtype, use_edns=0 if edns else False)
    message.id = int.from_bytes(os.urandom(2), "big")
    return message.to_wire()


def ask(port: int, name: str, qtype: str = "A", edns: bool = False,
        timeout: float = 2.0) -> bytes:
    """One UDP query; the response bytes."""
    wire = query_wire(name, qtype, edns)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(wire, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data, _ = sock.recvfrom(65535)
            if data[:2] == wire[:2]:
                return data
    raise TimeoutError(f"no answer from 127.0.0.1:{port} for {name} {qtype}")


def upstream_count(port: int) -> int:
    """The upstream's query count (three tries: a UDP datagram may be lost)."""
    import dns.message
    for attempt in range(3):
        try:
            message = dns.message.from_wire(ask(port, CONTROL, "TXT", timeout=1.0))
            return int(message.answer[0][0].strings[0])
        except TimeoutError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass
class Answer:
    rcode: str
    flags: str
    sections: dict[str, list[str]]        # records without TTL
    ttls: list[int]

    def text(self) -> str:
        body = "; ".join(f"{k} {v}" for k, v in self.sections.items() if v)
        return f"{self.rcode} [{self.flags}] {body or '(empty)'} ttl {self.ttls}"


def describe(wire: bytes) -> Answer:
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdatatype
    message = dns.message.from_wire(wire)
    sections, ttls = {}, []
    for label, section in (("answer", message.answer), ("authority", message.authority),
                           ("additional", message.additional)):
        lines = []
        for rrset in section:
            ttls.append(rrset.ttl)
            lines += [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
                      for rdata in rrset]
        sections[label] = sorted(lines)
    flags = " ".join(f for f in ("qr", "aa", "tc", "rd", "ra")
                     if message.flags & dns.flags.from_text(f))
    if message.edns >= 0:
        flags += " edns"
    return Answer(dns.rcode.to_text(message.rcode()), flags, sections, ttls)


CHECKS = [(f"c1.{ZONE}", "A", False), (f"c2.{NX_ZONE}", "A", False),
          (f"c3.{ZONE}", "AAAA", False), ("outside.example", "A", False),
          (f"c4.{ZONE}", "A", True)]


def check_answers(upstream: int, servers: list[ForwardServer]) -> list[str]:
    """Our servers against the upstream; stock differences printed. Returns our faults."""
    faults: list[str] = []
    truth = {c: describe(ask(upstream, c[0], c[1], c[2])) for c in CHECKS}
    first: dict[tuple[str, str], Answer] = {}
    for server in servers:
        for check in CHECKS:
            before = upstream_count(upstream)
            got = describe(ask(server.port, check[0], check[1], check[2]))
            asked = upstream_count(upstream) - before
            first[(server.label, check[0])] = got
            want = truth[check]
            note = []
            if got.rcode != want.rcode:
                note.append(f"rcode {got.rcode} (upstream {want.rcode})")
            for section in ("answer", "authority"):
                if got.sections[section] != want.sections[section]:
                    note.append(f"{section} {got.sections[section]} (upstream "
                                f"{want.sections[section]})")
            # CoreDNS passes the upstream's header bits through (its cache sets AA on hits).
            if ("aa" in got.flags.split()) != ("aa" in want.flags.split()):
                note.append(f"AA {'set' if 'aa' in got.flags.split() else 'cleared'}")
            if server.ours and server.cached and any(t > 30 for t in got.ttls):
                note.append(f"TTL {got.ttls} above the cache's 30")
            if asked != 1:
                note.append(f"{asked} upstream queries for a first ask")
            tag = "ok" if not note else ("WRONG: " if server.ours else "differs: ") + \
                "; ".join(note)
            print(f"  {server.label:28s} {check[0]} {check[1]}{' +edns' if check[2] else ''}"
                  f": {got.text()}  -- {tag}")
            if note and server.ours:
                faults.append(f"{server.label} {check[0]} {check[1]}: {'; '.join(note)}")
    time.sleep(1.2)
    for server in servers:
        if not server.cached:
            continue
        name, qtype, edns = CHECKS[0]
        before = upstream_count(upstream)
        again = describe(ask(server.port, name, qtype, edns))
        asked = upstream_count(upstream) - before
        earlier = first[(server.label, name)]
        hit = asked == 0 and again.sections == earlier.sections
        down = again.ttls and earlier.ttls and max(again.ttls) < max(earlier.ttls)
        tag = "ok" if hit and down else ("WRONG" if server.ours else "differs")
        print(f"  {server.label:28s} {name} {qtype} again 1.2 s later: ttl {earlier.ttls} -> "
              f"{again.ttls}, {asked} upstream queries -- {tag}")
        if server.ours and not (hit and down):
            faults.append(f"{server.label}: second ask not a hit counting TTL down "
                          f"({asked} upstream queries, ttl {earlier.ttls} -> {again.ttls})")
    return faults


def after_load(upstream: int, server: ForwardServer) -> list[str]:
    """A fresh name and a cached one, after the load: still the upstream's records."""
    faults = []
    for name in (f"after.{ZONE}", CHECKS[0][0]):
        want = describe(ask(upstream, name)).sections
        got = describe(ask(server.port, name)).sections
        if got["answer"] != want["answer"]:
            faults.append(f"{server.label} after the load, {name}: {got['answer']} "
                          f"(upstream {want['answer']})")
    print(f"{server.label}: answers after the load "
          + ("right" if not faults else "WRONG"))
    return faults


# --- servers and runs ------------------------------------------------------------------------

@dataclass
class ForwardServer(Server):
    """A server under test, ours or stock, with or without a cache."""

    ours: bool
    cached: bool


@dataclass
class Run:
    result: Result
    upstream_per_query: float
    upstream_cpu: float               # % of one core
    exhausted: bool = False           # the miss file ran out before the time was up


def wait_ready(server: ForwardServer, timeout: float) -> None:
    """Until the server answers a name of the upstream's zone with an address."""
    def problem() -> str | None:
        answer = describe(ask(server.port, f"ready.{ZONE}", timeout=0.5))
        return None if answer.sections["answer"] else f"ready.{ZONE}: {answer.text()}"
    wait_until(server.process, server.log, server.label, problem, timeout)


def corefile(port: int, upstream: int, cached: bool) -> str:
    lines = [f".:{port} {{", "    bind 127.0.0.1", "    errors",
             f"    forward . 127.0.0.1:{upstream}"]
    if cached:
        lines.append("    cache 30")
    return "\n".join(lines + ["}", ""])


def name_file(path: Path, prefix: str, count: int, denial: int) -> Path:
    """``count`` distinct names; every (100/denial)-th under nx. (NXDOMAIN)."""
    step = 100 / denial if denial else 0
    with path.open("w") as out:
        nxt = step / 2 if step else -1.0
        for i in range(count):
            if step and i >= nxt:
                nxt += step
                out.write(f"{prefix}{i}.{NX_ZONE} A\n")
            else:
                out.write(f"{prefix}{i}.{ZONE} A\n")
    return path


def measure(dnsperf_args: list[str], server: ForwardServer, upstream_port: int,
            upstream_pid: int, seconds: float, lines: int | None = None) -> Run:
    count_before = upstream_count(upstream_port)
    up_cpu_before, started = cpu_seconds(upstream_pid), time.monotonic()
    result = run_dnsperf(dnsperf_args, server.port, server.process.pid, seconds)
    elapsed = time.monotonic() - started
    up_cpu = (cpu_seconds(upstream_pid) - up_cpu_before) / elapsed * 100
    asked = upstream_count(upstream_port) - count_before
    return Run(result, asked / max(result.completed, 1), up_cpu,
               exhausted=lines is not None and result.sent >= lines)


def per_cpu(result: Result) -> float:
    return result.qps / max(result.server_cpu / 100, 1e-9)


def print_run(phase: str, number: int, label: str, run: Run) -> None:
    r = run.result
    print(f"  {phase} run {number} {label:28s} {r.qps:8.0f} q/s {r.latency_ms:8.3f} ms  "
          f"lost {r.lost}/{r.sent}  server CPU {r.server_cpu:3.0f} % ({per_cpu(r):6.0f} "
          f"q/CPU-s)  upstream {run.upstream_per_query:.3f} q/q, CPU {run.upstream_cpu:3.0f} %"
          f"  dnsperf CPU {r.dnsperf_cpu:3.0f} %  machine {r.machine_cpu:3.0f} %"
          + ("  (file ran out)" if run.exhausted else ""),
          flush=True)


def summary(phase: str, runs: dict[str, list[Run]], servers: list[ForwardServer]) -> None:
    print()
    print(f"{phase}: medians of {max(len(v) for v in runs.values())} run(s)")
    print(f"  {'server':28s} {'QPS':>8s} {'q/CPU-s':>8s} {'avg lat':>9s} {'max lat':>9s} "
          f"{'lost':>13s} {'srv CPU':>7s} {'up q/q':>7s} {'up CPU':>6s} {'RSS':>7s} "
          f"{'peak':>7s}")
    medians = {}
    for server in servers:
        if not runs.get(server.label):
            continue
        rs = runs[server.label]
        m = medians[server.label] = (
            statistics.median(r.result.qps for r in rs),
            statistics.median(per_cpu(r.result) for r in rs),
            statistics.median(r.result.latency_ms for r in rs),
            statistics.median(r.result.latency_max_ms for r in rs),
            statistics.median(r.result.lost for r in rs),
            statistics.median(r.result.sent for r in rs),
            statistics.median(r.result.server_cpu for r in rs),
            statistics.median(r.upstream_per_query for r in rs),
            statistics.median(r.upstream_cpu for r in rs))
        mem = proc_status(server.process.pid)
        print(f"  {server.label:28s} {m[0]:8.0f} {m[1]:8.0f} {m[2]:6.2f} ms {m[3]:6.1f} ms "
              f"{m[4]:6.0f}/{m[5]:<6.0f} {m[6]:5.0f} % {m[7]:7.3f} {m[8]:4.0f} % "
              f"{mem.get('VmRSS', 0):5.1f} M {mem.get('VmHWM', 0):5.1f} M")
    pairs = [("kubernetai", "stock twisted.names"),
             ("kubernetai forward only", "stock client.Resolver only")]
    for ours, stock in pairs:
        if ours in medians and stock in medians:
            o, s = medians[ours], medians[stock]
            print(f"  ratio {ours} / {stock}: QPS {o[0] / s[0]:.2f}x, per server CPU-second "
                  f"{o[1] / s[1]:.2f}x, latency {o[2] / s[2]:.2f}x")
    for server in servers:
        if runs.get(server.label):
            codes = sorted({r.result.codes for r in runs[server.label]})
            print(f"  response codes, {server.label}: {' | '.join(codes)}")


def print_profiles(servers: list[ForwardServer], work: Path) -> None:
    """Stop our servers (twistd writes its profile on a clean stop) and print the top."""
    import pstats
    for server in servers:
        if not server.ours:
            continue
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{server.label}: no clean stop, no profile")
            continue
        path = work / f"Corefile.{'cache' if server.cached else 'plain'}.prof"
        if not path.exists():
            print(f"{server.label}: no profile written at {path}")
            continue
        print(f"\nprofile of {server.label} (whole life: start-up, checks, both phases), "
              f"top 30 by own time:")
        pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(30)


def bench(args: argparse.Namespace) -> int:
    if not have_dnsperf():
        return 2
    env = repo_env()
    deadline = time.monotonic() + args.budget
    this = str(Path(__file__).resolve())

    def session(work: Path, children: Processes) -> int:
        up_log = work / "upstream.log"
        upstream = children.start([sys.executable, this, "--upstream-server"],
                                  stdout=subprocess.PIPE, stderr=up_log.open("w"), env=env,
                                  cwd=work)
        up_port = int(read_first_line(upstream, timeout=30))
        print(f"upstream (pid {upstream.pid}) on 127.0.0.1:{up_port}: *.{ZONE}. A 192.0.2.N "
              f"TTL 300, *.{NX_ZONE}. NXDOMAIN + SOA")

        # Every port picked before any server starts.
        ports: set[int] = set()
        wanted = 4 if args.no_cache_too else 2
        while len(ports) < wanted:
            ports.add(free_port())
        plan = [("kubernetai", True, True), ("stock twisted.names", False, True)]
        if args.no_cache_too:
            plan += [("kubernetai forward only", True, False),
                     ("stock client.Resolver only", False, False)]
        if args.stock_only:
            plan = [entry for entry in plan if not entry[1]]
        servers: list[ForwardServer] = []
        for (label, ours, cached), port in zip(plan, sorted(ports)):
            log = work / f"{label.replace(' ', '_')}.log"
            if ours:
                path = work / f"Corefile.{'cache' if cached else 'plain'}"
                path.write_text(corefile(port, up_port, cached))
                profile = ([f"--profile={work / (path.name + '.prof')}",
                            "--profiler=cprofile", "--savestats"] if args.profile else [])
                argv = twistd(*profile, "kubernetai", "--corefile", str(path))
            else:
                argv = [sys.executable, this, "--stock-server", str(port), "--upstream",
                        str(up_port)] + ([] if cached else ["--bare"])
            process = children.start(argv, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT, env=env, cwd=work)
            servers.append(ForwardServer(label, port, process, log, ours, cached))
        for server in servers:
            wait_ready(server, timeout=120)
        print("servers: " + ", ".join(f"{s.label} (pid {s.process.pid}, 127.0.0.1:{s.port})"
                                      for s in servers))
        if any(s.ours for s in servers):
            print("our Corefile:\n  " + corefile(servers[0].port, up_port, True).strip()
                  .replace("\n", "\n  "))

        pinned = args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
        if pinned:
            last = (os.cpu_count() or 2) - 1
            for server in servers:
                os.sched_setaffinity(server.process.pid, {last})
            os.sched_setaffinity(upstream.pid, set(range(last)))
            os.sched_setaffinity(0, set(range(last)))

        print("\nanswers before any load (upstream asked directly as the reference):")
        faults = check_answers(up_port, servers)

        dnsperf_base = ["-s", "127.0.0.1", "-c", str(args.clients), "-q",
                        str(args.outstanding), "-T", "1", "-t", f"{args.timeout:g}",
                        "-m", args.mode]
        # The upstream alone, with names it has never seen (it keeps no state anyway).
        probe = name_file(work / "probe.txt", "p", 400_000, args.denial)
        up_cpu0, t0 = cpu_seconds(upstream.pid), time.monotonic()
        alone = run_dnsperf(dnsperf_base + ["-d", str(probe), "-n", "1"], up_port,
                            upstream.pid, min(args.seconds, 3))
        print(f"\nthe upstream alone under dnsperf: {alone.qps:.0f} q/s, {alone.latency_ms:.3f}"
              f" ms, lost {alone.lost}/{alone.sent}, upstream CPU {alone.server_cpu:.0f} %"
              f" (the ceiling for any forwarder here; {time.monotonic() - t0:.1f} s, "
              f"{cpu_seconds(upstream.pid) - up_cpu0:.1f} CPU-s)")
        print(f"dnsperf {' '.join(dnsperf_base)} -p PORT -d FILE -l {args.seconds:g}  "
              f"x {args.runs} run(s) per server and phase, alternating, after a "
              f"{args.warmup:g} s warm-up each; {os.cpu_count()} CPUs"
              + ("; servers pinned to the last CPU, dnsperf and upstream to the others"
                 if pinned else ""))

        # Phase 1: cache hits.
        hit_file = name_file(work / "hit.txt", "h", args.hit_names, args.denial)
        hit_args = dnsperf_base + ["-d", str(hit_file)]
        cached = [s for s in servers if s.cached]
        print(f"\ncache hit: {args.hit_names} names repeated ({args.denial} % NXDOMAIN)")
        for server in cached:
            run_dnsperf(hit_args, server.port, server.process.pid, args.warmup)
        hits: dict[str, list[Run]] = {s.label: [] for s in cached}
        for number in range(1, args.runs + 1):
            order = cached if number % 2 else cached[::-1]
            for server in order:
                if time.monotonic() + args.seconds + 5 > deadline:
                    break
                run = measure(hit_args, server, up_port, upstream.pid, args.seconds)
                hits[server.label].append(run)
                print_run("hit ", number, server.label, run)

        # Phase 2: cache misses, a fresh file per run and server.
        print(f"\ncache miss: every name new ({args.denial} % NXDOMAIN), dnsperf -n 1")
        rates: dict[str, float] = {}
        for index, server in enumerate(servers):
            lines = max(20_000, int(args.warmup * 40_000))
            path = name_file(work / "miss.txt", f"w{index}-", lines, args.denial)
            warm = run_dnsperf(dnsperf_base + ["-d", str(path), "-n", "1"], server.port,
                               server.process.pid, args.warmup)
            rates[server.label] = warm.qps
        misses: dict[str, list[Run]] = {s.label: [] for s in servers}
        for number in range(1, args.runs + 1):
            order = servers if number % 2 else servers[::-1]
            for server in order:
                if time.monotonic() + args.seconds + 5 > deadline:
                    print(f"  stopping: the {args.budget:g} s budget is spent")
                    break
                lines = max(20_000, int(rates[server.label] * args.seconds * 3))
                path = name_file(work / "miss.txt", f"r{number}s{servers.index(server)}-",
                                 lines, args.denial)
                run = measure(dnsperf_base + ["-d", str(path), "-n", "1"], server, up_port,
                              upstream.pid, args.seconds, lines)
                misses[server.label].append(run)
                print_run("miss", number, server.label, run)

        summary("cache hit", hits, cached)
        summary("cache miss", misses, servers)
        print("(QPS and latency from dnsperf; CPU in % of one core while dnsperf ran; q/CPU-s ="
              " answered queries per second of the server's CPU time; up q/q = queries the "
              "upstream got per answered client query; RSS and peak at the end)")

        for server in servers:
            if server.ours and server.process.poll() is None:
                faults += after_load(up_port, server)
            problems = log_problems(server.log)
            state = "running" if server.process.poll() is None else \
                f"EXITED {server.process.returncode}"
            print(f"{server.label}: {state}, {len(problems)} error line(s) in its log"
                  + "".join(f"\n  {line[:200]}" for line in problems[:5]))
            if server.ours and server.process.poll() is not None:
                faults.append(f"{server.label} exited")
        if args.profile:
            print_profiles(servers, work)
        if faults:
            print("\nOUR SERVER ANSWERED WRONGLY:\n  " + "\n  ".join(faults))
        if args.keep:
            print(f"files kept in {work}")
        return 1 if faults else 0

    return in_workspace(session, "kubernetai-forward-qps-", keep=lambda: args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="dnsperf -l per run (5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server and phase (3)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of unreported load per server and phase first (2)")
    parser.add_argument("--hit-names", type=int, default=100,
                        help="distinct names of the cache-hit phase (100)")
    parser.add_argument("--denial", type=int, default=0,
                        help="percent of names that are NXDOMAIN, both phases (0)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--timeout", type=float, default=5, help="dnsperf -t (5 s)")
    parser.add_argument("--mode", choices=("udp", "tcp"), default="udp", help="dnsperf -m")
    parser.add_argument("--no-cache-too", action="store_true",
                        help="also our forward alone and stock client.Resolver alone (miss)")
    parser.add_argument("--stock-only", action="store_true",
                        help="measure only stock Twisted (and the upstream): no twistd kubernetai")
    parser.add_argument("--pin", action="store_true",
                        help="servers on the last CPU, dnsperf and the upstream on the others")
    parser.add_argument("--profile", action="store_true",
                        help="run our servers under cProfile (slower: figures not comparable)"
                        " and print where their time went")
    parser.add_argument("--budget", type=float, default=600,
                        help="stop starting runs after this many seconds (600)")
    parser.add_argument("--keep", action="store_true", help="keep Corefiles, logs, files")
    parser.add_argument("--upstream-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stock-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream_server:
        return run_upstream()
    if args.stock_server is not None:
        return run_stock_server(args.stock_server, args.upstream, not args.bare)
    if args.seconds <= 0 or args.runs < 1 or not 0 <= args.denial <= 100:
        parser.error("--seconds must be positive, --runs at least 1, --denial 0..100")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
