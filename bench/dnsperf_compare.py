#!/usr/bin/env python3
"""dnsperf against our server and against stock Twisted Names, on the same names, in one run.

Starts, each in its own process:

* the simulated API server with a synthetic cluster of 1,000 services
  (``kubernetai sandbox --synthetic SPEC --port 0``);
* our server, ``twistd -n kubernetai --corefile F --dns-port P``, on a Corefile with one
  ``kubernetai cluster.local`` stanza pointing at that sandbox;
* a stock Twisted Names server (this file, ``--stock-server PORT --names FILE``):
  ``twisted.names.server.DNSServerFactory(authorities=[...])`` over
  ``dns.DNSDatagramProtocol``, no tuning, whose authority is a ``common.ResolverBase``
  answering from a dict built from our server's own responses to the very same queries
  (fetched once, before any load), so both servers send the same records.

Then builds one dnsperf query file (by default 80 % A queries for the 1,000 services,
10 % SRV for their named ports, 10 % names that do not exist), checks our answers against
the synthetic generator and the stock server's against ours, runs dnsperf against each
server in turn with the same parameters (``--runs`` times, alternating, after a short
warm-up), and prints queries per second, latency, lost queries, response codes, the
server's CPU use and memory, and the ratio ours / stock (medians over the runs).
Afterwards it asks our server every query once more to check that the answers did not
change under load, and scans its log for errors. Every process it started is stopped on
exit, Ctrl-C included.

Needs dnsperf (Debian/Ubuntu: ``apt-get install -y dnsperf``); exits 2 without it.

    python bench/dnsperf_compare.py [--seconds 10] [--runs 3] [--clients 4]
                                    [--outstanding 100] [--threads 1] [--mix 80,10,10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetai.sandbox.ports import free_port

REPO = Path(__file__).resolve().parent.parent
SPEC = "namespaces=10,services=1000,headless=100,endpoints=3,headless_endpoints=5,pods=2000"
ZONE = "cluster.local"
TYPES = {"A": 1, "SRV": 33}
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


# --- the stock Twisted Names server (run as a subprocess: --stock-server PORT --names FILE) --

def run_stock_server(port: int, names_file: str) -> int:
    """Serve the recorded answers with stock twisted.names, nothing tuned."""
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.names import common, dns, server

    class MemoryAuthority(common.ResolverBase):
        """An in-memory authority: (name, type) -> (answers, authority, additional)."""

        def __init__(self, table: dict) -> None:
            common.ResolverBase.__init__(self)
            self.table = table

        def _lookup(self, name, cls, type, timeout=None):
            entry = self.table.get((name.lower(), type))
            if entry is None:
                return defer.fail(dns.AuthoritativeDomainError(name))
            return defer.succeed(entry)

    table: dict[tuple[bytes, int], Any] = {}
    for item in json.loads(Path(names_file).read_text()):
        if item["rcode"] != 0:        # NXDOMAIN: AuthoritativeDomainError, as stock does it
            continue
        message = dns.Message()
        message.fromStr(bytes.fromhex(item["wire"]))
        sections = (message.answers, message.authority, message.additional)
        for section in sections:
            for record in section:
                record.auth = True    # decoded records lose it; it sets AA on the response
        table[(item["name"].lower().encode(), item["type"])] = sections

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    factory = server.DNSServerFactory(authorities=[MemoryAuthority(table)])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(f"stock twisted.names server: {len(table)} answers on 127.0.0.1:{port}", flush=True)
    reactor.run()
    return 0


# --- DNS on a raw socket, with twisted.names.dns to encode and decode --------------------------

def ask(port: int, name: str, qtype: int, timeout: float = 2.0) -> tuple[int, bytes]:
    """One UDP query (no EDNS, like dnsperf without -e); returns (rcode, response bytes)."""
    from twisted.names import dns
    query = dns.Message(id=int.from_bytes(os.urandom(2), "big"), recDes=1)
    query.queries = [dns.Query(name.encode(), qtype, dns.IN)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.toStr(), ("127.0.0.1", port))
        while True:
            data, _ = sock.recvfrom(65535)
            if data[:2] == query.toStr()[:2]:
                return data[3] & 0x0F, data


def records(wire: bytes) -> dict[str, list[str]]:
    """The sections of a response as sorted text, to compare two servers' answers."""
    from twisted.names import dns
    message = dns.Message()
    message.fromStr(wire)

    def text(rr) -> str:
        return f"{rr.name.name.decode().lower()} {rr.ttl} {dns.QUERY_TYPES.get(rr.type)} " \
               f"{rr.payload}"
    return {"rcode": [RCODES.get(message.rCode, str(message.rCode))],
            "flags": ["aa" if message.auth else "-", "tc" if message.trunc else "-"],
            "answer": sorted(map(text, message.answers)),
            "authority": sorted(map(text, message.authority)),
            "additional": sorted(map(text, message.additional))}


def addresses(wire: bytes) -> list[str]:
    from twisted.names import dns
    message = dns.Message()
    message.fromStr(wire)
    return sorted(rr.payload.dottedQuad() for rr in message.answers if rr.type == dns.A)


# --- the query mix, from the synthetic generator ------------------------------------------------

@dataclass
class Query:
    name: str
    qtype: str
    expect: str                       # NOERROR / NXDOMAIN
    addresses: list[str] = field(default_factory=list)   # expected A answers


def build_queries(spec_text: str, mix: tuple[int, int, int]) -> list[Query]:
    """Every service's A name, plus SRV and NXDOMAIN queries in the proportions of ``mix``."""
    from kubernetai.sandbox.synthetic import generate, parse_spec
    services: dict[tuple[str, str], dict] = {}
    slices: dict[tuple[str, str], dict] = {}
    for obj in generate(parse_spec(spec_text)):
        meta = obj["metadata"]
        if obj["kind"] == "Service":
            services[(meta["namespace"], meta["name"])] = obj
        elif obj["kind"] == "EndpointSlice":
            owner = meta["labels"]["kubernetes.io/service-name"]
            slices[(meta["namespace"], owner)] = obj
    a_queries, srv_queries = [], []
    for (namespace, name), svc in services.items():
        fqdn = f"{name}.{namespace}.svc.{ZONE}"
        if svc["spec"]["clusterIP"] == "None":
            ips = [a for ep in slices[(namespace, name)]["endpoints"]
                   for a in ep["addresses"] if ep["conditions"].get("ready", True)]
        else:
            ips = [svc["spec"]["clusterIP"]]
        a_queries.append(Query(fqdn, "A", "NOERROR", sorted(ips)))
        named = [p for p in svc["spec"]["ports"] if p.get("name")]
        if named:
            port = named[0]
            srv_queries.append(Query(f"_{port['name']}._{port['protocol'].lower()}.{fqdn}",
                                     "SRV", "NOERROR"))
    a_pct, srv_pct, nx_pct = mix
    total = round(len(a_queries) * 100 / a_pct)          # a_pct > 0: every A name is in
    n_srv, n_nx = total * srv_pct // 100, total * nx_pct // 100
    namespaces = sorted({ns for ns, _ in services})
    nx = [Query(f"nope-{i:04d}.{namespaces[i % len(namespaces)]}.svc.{ZONE}", "A", "NXDOMAIN")
          for i in range(n_nx)]
    step = max(1, len(srv_queries) // max(n_srv, 1))
    srv = (srv_queries[::step] + srv_queries)[:n_srv]
    chosen = a_queries + srv + nx
    # Shuffle deterministically (same file every run) so every stretch has about the same mix.
    chosen.sort(key=lambda q: zlib.crc32(q.name.encode()))
    return chosen


# --- processes ----------------------------------------------------------------------------------

class Processes:
    """Children started by this script; all stopped by stop_all()."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, label: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        self.children.append((label, process))
        return process

    def stop_all(self) -> None:
        """Newest first, each to its end, so the DNS servers go before the API server."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C must not cut it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while self.children:
            _, process = self.children.pop()
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def read_first_line(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = process.stdout.fileno()
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError(f"no URL from the sandbox (exit code {process.poll()})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode().strip()


def wait_until_answers(port: int, checks: list[Query], process: subprocess.Popen,
                       log: Path, timeout: float) -> None:
    """Until every check query gets its expected rcode and A records."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log {log}:\n"
                               + log.read_text()[-3000:])
        try:
            for q in checks:
                rcode, wire = ask(port, q.name, TYPES[q.qtype], timeout=0.5)
                if RCODES.get(rcode) != q.expect or (q.addresses and
                                                     addresses(wire) != q.addresses):
                    last = f"{q.name}: {RCODES.get(rcode, rcode)} {addresses(wire)}"
                    raise TimeoutError
            return
        except (TimeoutError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f} s ({last}); "
                       f"log {log}:\n" + log.read_text()[-3000:])


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all CPUs), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- dnsperf ----------------------------------------------------------------------------------

@dataclass
class Result:
    qps: float
    latency_ms: float
    latency_max_ms: float
    sent: int
    completed: int
    lost: int
    codes: str
    server_cpu: float                 # % of one core while dnsperf ran
    dnsperf_cpu: float
    machine_cpu: float                # % of one core, all processes on the machine


def parse_dnsperf(text: str) -> dict[str, Any]:
    def grab(pattern: str, cast=float):
        match = re.search(pattern, text)
        if not match:
            raise RuntimeError(f"dnsperf output has no {pattern!r}:\n{text}")
        return cast(match.group(1))
    return {
        "sent": grab(r"Queries sent:\s+(\d+)", int),
        "completed": grab(r"Queries completed:\s+(\d+)", int),
        "lost": grab(r"Queries lost:\s+(\d+)", int),
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "latency": grab(r"Average Latency \(s\):\s+([\d.]+)"),
        "latency_max": grab(r"Average Latency \(s\):.*max ([\d.]+)"),
        "codes": re.search(r"Response codes:\s+(.*)", text).group(1).strip()
        if "Response codes:" in text else "",
    }


def run_dnsperf(dnsperf_args: list[str], port: int, pid: int, seconds: float) -> Result:
    argv = ["dnsperf", "-p", str(port), *dnsperf_args, "-l", f"{seconds:g}"]
    cpu_before, machine_before = cpu_seconds(pid), machine_cpu_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    elapsed = time.monotonic() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = (cpu_seconds(pid) - cpu_before) / elapsed * 100
    machine_cpu = (machine_cpu_seconds() - machine_before) / elapsed * 100
    dnsperf_cpu = ((children_after.ru_utime + children_after.ru_stime)
                   - (children_before.ru_utime + children_before.ru_stime)) / elapsed * 100
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}"
                           f"{done.stderr}")
    figures = parse_dnsperf(done.stdout)
    return Result(figures["qps"], figures["latency"] * 1000, figures["latency_max"] * 1000,
                  figures["sent"], figures["completed"], figures["lost"], figures["codes"],
                  server_cpu, dnsperf_cpu, machine_cpu)


# --- the comparison ---------------------------------------------------------------------------

def median_result(results: list[Result]) -> Result:
    """Medians of each figure (the run with the median QPS for the text fields)."""
    by_qps = sorted(results, key=lambda r: r.qps)
    middle = by_qps[(len(by_qps) - 1) // 2]
    return Result(statistics.median(r.qps for r in results),
                  statistics.median(r.latency_ms for r in results),
                  statistics.median(r.latency_max_ms for r in results),
                  middle.sent, middle.completed, int(statistics.median(r.lost for r in results)),
                  middle.codes, statistics.median(r.server_cpu for r in results),
                  statistics.median(r.dnsperf_cpu for r in results),
                  statistics.median(r.machine_cpu for r in results))


def log_problems(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines()
    bad = re.compile(r"Traceback|Unhandled|\[ERROR\]|#error|#critical|Error:|Exception",
                     re.IGNORECASE)
    return [line for line in lines if bad.search(line)]


def compare(args: argparse.Namespace) -> int:
    if shutil.which("dnsperf") is None:
        print("dnsperf is not installed. On Debian/Ubuntu: apt-get install -y dnsperf",
              file=sys.stderr)
        return 2
    mix = tuple(int(x) for x in args.mix.split(","))
    if len(mix) != 3 or sum(mix) != 100 or mix[0] <= 0:
        print("--mix: three percentages A,SRV,NXDOMAIN adding up to 100, A > 0",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kubernetai-dnsperf-"))
    children = Processes()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    env = dict(os.environ)
    # twistd finds the `kubernetai` plugin in <repo>/twisted/plugins via sys.path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        queries = build_queries(args.spec, mix)
        counts = {k: 0 for k in ("A", "SRV", "NXDOMAIN")}
        for q in queries:
            counts["NXDOMAIN" if q.expect == "NXDOMAIN" else q.qtype] += 1
        data = work / "queries.txt"
        data.write_text("".join(f"{q.name} {q.qtype}\n" for q in queries))

        # (a) the sandbox
        sandbox_log = work / "sandbox.log"
        t0 = time.monotonic()
        sandbox = children.start(
            "sandbox", [sys.executable, "-m", "kubernetai", "sandbox", "--synthetic", args.spec,
                        "--port", "0"],
            stdout=subprocess.PIPE, stderr=sandbox_log.open("w"), env=env, cwd=work)
        url = read_first_line(sandbox, timeout=120)
        print(f"sandbox {url} ({args.spec}) up in {time.monotonic() - t0:.1f} s")

        # (b) our server
        ours_port = free_port()
        corefile = work / "Corefile"
        corefile.write_text(f"{ZONE}:{ours_port} {{\n    bind 127.0.0.1\n"
                            f"    kubernetai {ZONE} {{\n        endpoint {url}\n    }}\n}}\n")
        ours_log = work / "kubernetai.log"
        t0 = time.monotonic()
        ours = children.start(
            "kubernetai", [sys.executable, "-c",
                           "import sys; from twisted.scripts.twistd import run; "
                           "sys.argv[0] = 'twistd'; run()",
                           "-n", "--pidfile=", "kubernetai", "--corefile", str(corefile),
                           "--dns-port", str(ours_port)],
            stdout=ours_log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)
        a_checks = [q for q in queries if q.qtype == "A" and q.expect == "NOERROR"]
        headless = next(q for q in a_checks if len(q.addresses) > 1)
        checks = [a_checks[0], headless] + [q for q in queries if q.expect == "NXDOMAIN"][:1]
        wait_until_answers(ours_port, checks, ours, ours_log, timeout=120)
        print(f"kubernetai (twistd, pid {ours.pid}) answering on 127.0.0.1:{ours_port} "
              f"after {time.monotonic() - t0:.1f} s")

        # Record our answers to every query; check them against the generator.
        recorded, wrong = [], []
        for q in queries:
            rcode, wire = ask(ours_port, q.name, TYPES[q.qtype])
            recorded.append({"name": q.name, "type": TYPES[q.qtype], "rcode": rcode,
                             "wire": wire.hex()})
            got = RCODES.get(rcode, str(rcode))
            if got != q.expect or (q.addresses and addresses(wire) != q.addresses) or (
                    q.qtype == "SRV" and not records(wire)["answer"]):
                wrong.append(f"{q.name} {q.qtype}: {got} {records(wire)['answer'][:3]}")
        names = work / "answers.json"
        names.write_text(json.dumps(recorded))
        print(f"our answers to the {len(queries)} queries checked against the synthetic "
              f"cluster: {len(queries) - len(wrong)} right, {len(wrong)} wrong")
        for line in wrong[:10]:
            print(f"  WRONG: {line}")

        # (c) the stock Twisted Names server, fed those answers
        stock_port = free_port()
        stock_log = work / "stock.log"
        stock = children.start(
            "stock", [sys.executable, str(Path(__file__).resolve()), "--stock-server",
                      str(stock_port), "--names", str(names)],
            stdout=stock_log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)
        wait_until_answers(stock_port, checks, stock, stock_log, timeout=60)
        differ: dict[str, list[str]] = {}
        for q, item in zip(queries, recorded):
            _, wire = ask(stock_port, q.name, TYPES[q.qtype])
            mine, theirs = records(bytes.fromhex(item["wire"])), records(wire)
            for section in mine:
                if mine[section] != theirs[section]:
                    differ.setdefault(f"{q.expect} {q.qtype}: {section}", []).append(
                        f"{q.name}: ours {mine[section][:2]} stock {theirs[section][:2]}")
        print(f"stock twisted.names (pid {stock.pid}) answering on 127.0.0.1:{stock_port}; "
              f"its answers vs ours:")
        if not differ:
            print("  identical for every query")
        for what, items in differ.items():
            print(f"  {len(items)} queries differ in {what}, e.g. {items[0]}")

        dnsperf_args = ["-s", "127.0.0.1", "-d", str(data), "-c", str(args.clients),
                        "-q", str(args.outstanding), "-T", str(args.threads),
                        "-t", f"{args.timeout:g}"]
        print()
        print(f"query file: {len(queries)} queries, cycled: {counts['A']} A for every service "
              f"({counts['A'] - len([q for q in a_checks if len(q.addresses) > 1])} ClusterIP,"
              f" {len([q for q in a_checks if len(q.addresses) > 1])} headless), "
              f"{counts['SRV']} SRV, {counts['NXDOMAIN']} NXDOMAIN "
              f"(mix {mix[0]}/{mix[1]}/{mix[2]} %), no EDNS")
        print(f"dnsperf {' '.join(dnsperf_args)} -p PORT -l {args.seconds:g}   "
              f"x {args.runs} run(s) per server, alternating, after a {args.warmup:g} s warm-up"
              f" each; {os.cpu_count()} CPUs")
        servers = {"kubernetai": (ours_port, ours.pid), "stock twisted.names": (stock_port,
                                                                                 stock.pid)}
        if args.warmup > 0:
            for port, pid in servers.values():
                run_dnsperf(dnsperf_args, port, pid, args.warmup)
        results: dict[str, list[Result]] = {label: [] for label in servers}
        for run in range(args.runs):
            for label, (port, pid) in servers.items():
                result = run_dnsperf(dnsperf_args, port, pid, args.seconds)
                results[label].append(result)
                print(f"  run {run + 1} {label:20s} {result.qps:9.0f} q/s  "
                      f"{result.latency_ms:7.3f} ms  lost {result.lost}/{result.sent}  "
                      f"server CPU {result.server_cpu:3.0f} %  dnsperf CPU "
                      f"{result.dnsperf_cpu:3.0f} %  machine {result.machine_cpu:3.0f} % "
                      f"of {os.cpu_count() * 100} %")

        # Did our answers hold up under load?
        changed = []
        for q, item in zip(queries, recorded):
            rcode, wire = ask(ours_port, q.name, TYPES[q.qtype])
            if records(wire) != records(bytes.fromhex(item["wire"])):
                changed.append(q.name)
        if ours.poll() is not None:
            print(f"!! our server exited with {ours.returncode} during the runs")

        medians = {label: median_result(rs) for label, rs in results.items()}
        print()
        print(f"{'server':22s} {'QPS':>9s} {'avg latency':>12s} {'max latency':>12s} "
              f"{'lost':>12s} {'server CPU':>11s} {'RSS':>9s} {'peak RSS':>9s}")
        for label, (_port, pid) in servers.items():
            m, mem = medians[label], proc_status(pid)
            print(f"{label:22s} {m.qps:9.0f} {m.latency_ms:9.3f} ms {m.latency_max_ms:9.3f} ms "
                  f"{m.lost:5d}/{m.sent:<6d} {m.server_cpu:9.0f} % "
                  f"{mem.get('VmRSS', 0):6.1f} MiB {mem.get('VmHWM', 0):5.1f} MiB")
        ours_m, stock_m = medians["kubernetai"], medians["stock twisted.names"]
        print(f"{'ratio ours/stock':22s} {ours_m.qps / stock_m.qps:8.2f}x "
              f"{ours_m.latency_ms / stock_m.latency_ms:11.2f}x")
        print(f"(medians of {args.runs} run(s) of {args.seconds:g} s; sandbox RSS "
              f"{proc_status(sandbox.pid).get('VmRSS', 0):.0f} MiB)")
        for label in servers:
            print(f"response codes, {label}: {medians[label].codes}")
        print(f"our answers after the load: {len(queries) - len(changed)} unchanged, "
              f"{len(changed)} changed" + (f" (e.g. {changed[:3]})" if changed else ""))
        problems = log_problems(ours_log)
        print(f"our server's log: {len(problems)} error line(s)"
              + "".join(f"\n  {line[:200]}" for line in problems[:10]))
        stock_problems = log_problems(stock_log)
        if stock_problems:
            print(f"stock server's log: {len(stock_problems)} error line(s)"
                  + "".join(f"\n  {line[:200]}" for line in stock_problems[:5]))
        if args.keep:
            print(f"logs and files kept in {work}")
        return 1 if wrong or changed or ours.poll() is not None else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="dnsperf -l per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server; medians (3)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of unreported load on each server first (2)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T (1)")
    parser.add_argument("--timeout", type=float, default=5, help="dnsperf -t (5 s)")
    parser.add_argument("--mix", default="80,10,10",
                        help="percent of A (services), SRV, NXDOMAIN queries (80,10,10)")
    parser.add_argument("--spec", default=SPEC, help=f"synthetic cluster ({SPEC})")
    parser.add_argument("--keep", action="store_true", help="keep the logs and query file")
    parser.add_argument("--stock-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stock_server is not None:
        return run_stock_server(args.stock_server, args.names)
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be positive and --runs at least 1")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
