#!/usr/bin/env python3
"""dnsperf against our server, stock Twisted Names and NSD, on the same names, in one run.

Starts, each in its own process:

* the simulated API server with a synthetic cluster of 1,000 services
  (``kubernetai sandbox --synthetic SPEC --port 0``);
* our server, ``twistd -n kubernetai --corefile F --dns-port P``, on a Corefile with one
  ``kubernetai cluster.local`` stanza pointing at that sandbox (and, with ``--baseline
  DIR``, a second one running the ``kubernetai`` package found in DIR: another copy of
  the code, for a before/after comparison in the same run);
* a stock Twisted Names server (this file, ``--stock-server PORT --names FILE``):
  ``twisted.names.server.DNSServerFactory(authorities=[...])`` over
  ``dns.DNSDatagramProtocol``, no tuning, whose authority is a ``common.ResolverBase``
  answering from a dict built from our server's own responses to the very same queries
  (fetched once, before any load), so both servers send the same records;
* NSD (``nsd -d``, one server process, no chroot, no remote control, in a temporary
  directory) serving a ``cluster.local`` zone file written from those same responses.
  Installed with ``apt-get install -y nsd`` when missing and running as root; otherwise
  the run goes on without it (``--no-nsd`` leaves it out).

Then builds one dnsperf query file (by default 80 % A queries for the 1,000 services,
10 % SRV for their named ports, 10 % names that do not exist), checks our answers against
the synthetic generator and the other servers' against ours, and runs dnsperf against
each server in turn with the same parameters, in three modes:

* ``udp``: ``--runs`` runs each, alternating, after a short warm-up, at full load;
* ``tcp``: ``-m tcp``, ``--tcp-connections`` connections with ``--tcp-inflight`` queries
  in flight on each (10 x 10), ``--extra-runs`` runs each;
* ``half``: UDP at half of our server's median UDP QPS (``-Q``), ours and NSD, to compare
  latency and CPU per query when neither is saturated.

For each it prints queries per second, average and p99 latency (``dnsperf -v``), lost
queries, the server's CPU use (its process and children) as % of a core and in
CPU-seconds, queries answered per server CPU-second, memory, and the ratios ours / stock
(QPS) and ours / NSD (per CPU-second). Afterwards it asks our server every query once more
to check that the answers did not change under load, and scans its log for errors. Every
process it started is stopped on exit, Ctrl-C included.

Needs dnsperf (Debian/Ubuntu: ``apt-get install -y dnsperf``); exits 2 without it.

    python bench/dnsperf_compare.py [--seconds 8] [--runs 3] [--modes udp,tcp,half]
                                    [--clients 4] [--outstanding 100] [--mix 80,10,10]
                                    [--no-nsd] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    Result,
    Server,
    have_dnsperf,
    in_workspace,
    log_problems,
    median_result,
    mix_queries,
    proc_status,
    read_first_line,
    repo_env,
    run_dnsperf,
    serve_stock,
    twistd,
    wait_until,
)

from kubernetai.sandbox.ports import free_port  # noqa: E402

SPEC = "namespaces=10,services=1000,headless=100,endpoints=3,headless_endpoints=5,pods=2000"
ZONE = "cluster.local"
TYPES = {"A": 1, "SRV": 33}
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


# --- the stock Twisted Names server (run as a subprocess: --stock-server PORT --names FILE) --

def run_stock_server(port: int, names_file: str) -> int:
    """Serve the recorded answers with stock twisted.names, nothing tuned."""
    from twisted.names import dns

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
    return serve_stock(port, table, f"stock twisted.names server: {len(table)} answers on "
                       f"127.0.0.1:{port}", tcp=True, log=True)


# --- NSD, serving a zone file written from our server's answers -----------------------------

NSD_CONF = """server:
    ip-address: 127.0.0.1
    port: {port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{dir}"
    database: ""
    zonelistfile: "{dir}/zone.list"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    logfile: "{dir}/nsd.log"
    do-ip6: no
    hide-version: yes
    verbosity: 1
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{dir}/{zone}.zone"
"""


# Response rate limiting is off (Debian's NSD has it on: 200 q/s per /24, all of
# dnsperf's queries come from 127.0.0.1); the rest is NSD's defaults.

def find_nsd(install: bool) -> str | None:
    """The nsd binary; installed from Debian's packages when missing (as root)."""
    def which() -> str | None:
        return shutil.which("nsd") or next(
            (p for p in ("/usr/sbin/nsd", "/usr/local/sbin/nsd") if os.access(p, os.X_OK)),
            None)
    found = which()
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("NSD is not installed; to compare with it, as root on Debian/Ubuntu: "
              "apt-get install -y nsd   (going on without NSD)")
        return None
    print("NSD is not installed: apt-get install -y nsd ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (["apt-get", "install", "-y", "nsd"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "nsd"]):
        done = subprocess.run(attempt, env=env, capture_output=True, text=True, timeout=600)
        if attempt[1] == "install" and done.returncode == 0:
            break
    found = which()
    if found is None:
        print(f"could not install NSD (apt-get: {done.stderr.strip()[-300:]}); "
              f"going on without it")
    return found


def rdata_text(rr: Any) -> str | None:
    """A record's rdata in zone-file syntax (None for a type this does not write)."""
    from twisted.names import dns

    def absolute(name: Any) -> str:
        text = name.name.decode()
        return text + "." if text else "."
    payload, rtype = rr.payload, rr.type
    if rtype == dns.A:
        return payload.dottedQuad()
    if rtype == dns.AAAA:
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    if rtype == dns.SRV:
        return f"{payload.priority} {payload.weight} {payload.port} {absolute(payload.target)}"
    if rtype in (dns.CNAME, dns.PTR, dns.NS):
        return absolute(payload.name)
    if rtype == dns.SOA:
        return (f"{absolute(payload.mname)} {absolute(payload.rname)} {payload.serial} "
                f"{payload.refresh} {payload.retry} {payload.expire} {payload.minimum}")
    if rtype == dns.TXT:
        return " ".join('"' + d.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')
                        + '"' for d in payload.data)
    return None


def write_zone(recorded: list[dict], path: Path) -> tuple[int, int]:
    """The zone file of every record in our answers (the SOA of our negative answers at
    the apex); returns (records written, records left out)."""
    from twisted.names import dns
    soa: tuple[int, str] | None = None
    rrs: dict[tuple[str, str, str], int] = {}
    skipped = 0
    for item in recorded:
        message = dns.Message()
        message.fromStr(bytes.fromhex(item["wire"]))
        for rr in message.answers + message.authority + message.additional:
            if rr.type == dns.OPT:
                continue
            text = rdata_text(rr)
            name = rr.name.name.decode().lower()
            if text is None or not (name == ZONE or name.endswith("." + ZONE)):
                skipped += 1
            elif rr.type == dns.SOA:
                soa = soa or (rr.ttl, text)
            else:
                rrs.setdefault((name, dns.QUERY_TYPES.get(rr.type, str(rr.type)), text),
                               rr.ttl)
    if soa is None:
        soa = (5, f"ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 5")
    lines = [f"$ORIGIN {ZONE}.", f"{ZONE}. {soa[0]} IN SOA {soa[1]}"]
    lines += [f"{name}. {ttl} IN {rtype} {text}"
              for (name, rtype, text), ttl in sorted(rrs.items())]
    path.write_text("\n".join(lines) + "\n")
    return len(rrs) + 1, skipped


def start_nsd(children: Processes, nsd: str, directory: Path, recorded: list[dict],
              env: dict[str, str]) -> tuple[int, subprocess.Popen, str]:
    """NSD on a free loopback port, one server process, in ``directory``."""
    directory.mkdir()
    written, skipped = write_zone(recorded, directory / f"{ZONE}.zone")
    port = free_port()
    conf = directory / "nsd.conf"
    conf.write_text(NSD_CONF.format(port=port, dir=directory, zone=ZONE))
    process = children.start([nsd, "-d", "-c", str(conf)],
                             stdout=(directory / "nsd.out").open("w"),
                             stderr=subprocess.STDOUT, env=env, cwd=directory)
    version = subprocess.run([nsd, "-v"], capture_output=True, text=True,
                             timeout=10).stderr.split("\n", 1)[0].strip()
    return port, process, f"{version}; zone of {written} records ({skipped} left out)"


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
    return mix_queries(a_queries, srv_queries, sorted({ns for ns, _ in services}), ZONE, mix,
                       lambda name: Query(name, "A", "NXDOMAIN"))


# --- servers -----------------------------------------------------------------------------------

def wait_until_answers(port: int, checks: list[Query], process: subprocess.Popen,
                       log: Path, timeout: float) -> None:
    """Until every check query gets its expected rcode and A records."""
    def problem() -> str | None:
        for q in checks:
            rcode, wire = ask(port, q.name, TYPES[q.qtype], timeout=0.5)
            if RCODES.get(rcode) != q.expect or (q.addresses and
                                                 addresses(wire) != q.addresses):
                return f"{q.name}: {RCODES.get(rcode, rcode)} {addresses(wire)}"
        return None
    wait_until(process, log, f"server on port {port}", problem, timeout)


# --- the comparison ---------------------------------------------------------------------------

OURS, BASELINE, STOCK, NSD = "kubernetai", "baseline", "stock twisted.names", "nsd"


def start_ours(children: Processes, corefile: Path, port: int, log: Path,
               env: dict[str, str], work: Path) -> subprocess.Popen:
    return children.start(
        twistd("kubernetai", "--corefile", str(corefile), "--dns-port", str(port)),
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)


def compare_answers(label: str, server: Server, queries: list[Query],
                    recorded: list[dict]) -> None:
    """Print where ``server``'s answers differ from ours, section by section."""
    differ: dict[str, list[str]] = {}
    for q, item in zip(queries, recorded):
        _, wire = ask(server.port, q.name, TYPES[q.qtype])
        mine, theirs = records(bytes.fromhex(item["wire"])), records(wire)
        for section in mine:
            if mine[section] != theirs[section]:
                differ.setdefault(f"{q.expect} {q.qtype}: {section}", []).append(
                    f"{q.name}: ours {mine[section][:2]} {label} {theirs[section][:2]}")
    print(f"{label} (pid {server.process.pid}) answering on 127.0.0.1:{server.port}; "
          f"its answers vs ours:")
    if not differ:
        print("  identical for every query")
    for what, items in differ.items():
        print(f"  {len(items)} queries differ in {what}, e.g. {items[0]}")


def run_mode(mode: str, servers: list[Server], dnsperf_args: list[str], seconds: float,
             runs: int) -> dict[str, Result]:
    """``runs`` alternating dnsperf runs against each server; the medians."""
    print(f"\n== {mode}: dnsperf {' '.join(dnsperf_args)} -p PORT -l {seconds:g} -v   "
          f"x {runs} run(s) per server, alternating")
    results: dict[str, list[Result]] = {s.label: [] for s in servers}
    for run in range(runs):
        for server in servers:
            r = run_dnsperf(dnsperf_args, server.port, server.process.pid, seconds)
            results[server.label].append(r)
            print(f"  run {run + 1} {server.label:20s} {r.qps:9.0f} q/s  avg "
                  f"{r.latency_ms:7.3f} ms  p99 {r.p99_ms:7.3f} ms  lost {r.lost}/{r.sent}  "
                  f"server CPU {r.server_cpu:3.0f} % = {r.per_cpu_s:7.0f} q/CPU-s  dnsperf "
                  f"{r.dnsperf_cpu:3.0f} %  machine {r.machine_cpu:3.0f} % of "
                  f"{os.cpu_count() * 100} %", flush=True)
    return {label: median_result(rs) for label, rs in results.items()}


def print_table(mode: str, medians: dict[str, Result], pids: dict[str, int],
                runs: int) -> None:
    print(f"\n{mode} (medians of {runs} run(s))")
    print(f"  {'server':20s} {'QPS':>8s} {'avg ms':>8s} {'p99 ms':>8s} {'lost':>13s} "
          f"{'CPU %':>6s} {'CPU-s':>6s} {'q/CPU-s':>8s} {'us CPU/q':>8s} {'RSS MiB':>8s}")
    for label, m in medians.items():
        mem = proc_status(pids[label])
        us = 1e6 / m.per_cpu_s if m.per_cpu_s else 0.0
        print(f"  {label:20s} {m.qps:8.0f} {m.latency_ms:8.3f} {m.p99_ms:8.3f} "
              f"{m.lost:6d}/{m.sent:<6d} {m.server_cpu:6.0f} {m.server_cpu_s:6.2f} "
              f"{m.per_cpu_s:8.0f} {us:8.1f} {mem.get('VmRSS', 0):8.1f}")
    ours = medians.get(OURS)
    if ours is None:
        return
    for other in (BASELINE, STOCK, NSD):
        them = medians.get(other)
        if them is None or not them.qps or not them.per_cpu_s:
            continue
        print(f"  ours/{other}: {ours.qps / them.qps:.2f}x QPS, "
              f"{ours.per_cpu_s / them.per_cpu_s:.2f}x per server CPU-second, p99 "
              f"{ours.p99_ms / them.p99_ms if them.p99_ms else 0:.2f}x")


def compare(args: argparse.Namespace) -> int:
    if not have_dnsperf():
        return 2
    mix = tuple(int(x) for x in args.mix.split(","))
    if len(mix) != 3 or sum(mix) != 100 or mix[0] <= 0:
        print("--mix: three percentages A,SRV,NXDOMAIN adding up to 100, A > 0",
              file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"udp", "tcp", "half"}:
        print("--modes: a comma-separated list of udp, tcp, half", file=sys.stderr)
        return 2
    if "half" in modes and "udp" not in modes and not args.half_qps:
        print("--modes half needs udp first (its rate is half our UDP QPS) or --half-qps",
              file=sys.stderr)
        return 2
    nsd = None if args.no_nsd else find_nsd(install=True)
    env = repo_env()

    def session(work: Path, children: Processes) -> int:
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
            [sys.executable, "-m", "kubernetai", "sandbox", "--synthetic", args.spec,
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=sandbox_log.open("w"), env=env, cwd=work)
        url = read_first_line(sandbox, timeout=120)
        print(f"sandbox {url} ({args.spec}) up in {time.monotonic() - t0:.1f} s")

        # (b) our server (and the baseline copy of it)
        ours_port = free_port()
        corefile = work / "Corefile"
        corefile.write_text(f"{ZONE} {{\n    bind 127.0.0.1\n"
                            f"    kubernetai {ZONE} {{\n        endpoint {url}\n    }}\n}}\n")
        servers: list[Server] = []
        a_checks = [q for q in queries if q.qtype == "A" and q.expect == "NOERROR"]
        headless = next(q for q in a_checks if len(q.addresses) > 1)
        checks = [a_checks[0], headless] + [q for q in queries if q.expect == "NXDOMAIN"][:1]
        plan = [(OURS, ours_port, env)]
        if args.baseline:
            base_env = dict(env, PYTHONPATH=os.pathsep.join(
                [str(Path(args.baseline).resolve()), env["PYTHONPATH"]]))
            plan.append((BASELINE, free_port(), base_env))
        for label, port, server_env in plan:
            log = work / f"{label}.log"
            t0 = time.monotonic()
            process = start_ours(children, corefile, port, log, server_env, work)
            wait_until_answers(port, checks, process, log, timeout=120)
            servers.append(Server(label, port, process, log))
            code = subprocess.run([sys.executable, "-c", "import kubernetai; "
                                   "print(kubernetai.__file__)"], env=server_env, cwd=work,
                                  capture_output=True, text=True, timeout=60).stdout.strip()
            print(f"{label} (twistd, pid {process.pid}, code {Path(code).parent}) answering "
                  f"on 127.0.0.1:{port} after {time.monotonic() - t0:.1f} s")
        ours = servers[0]

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
        for server in servers[1:]:
            compare_answers(server.label, server, queries, recorded)

        # (c) the stock Twisted Names server, fed those answers
        stock_port = free_port()
        stock_log = work / "stock.log"
        stock = children.start(
            [sys.executable, str(Path(__file__).resolve()), "--stock-server",
             str(stock_port), "--names", str(names)],
            stdout=stock_log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)
        wait_until_answers(stock_port, checks, stock, stock_log, timeout=60)
        servers.append(Server(STOCK, stock_port, stock, stock_log))
        compare_answers(STOCK, servers[-1], queries, recorded)

        # (d) NSD, from a zone file of those answers
        if nsd is not None:
            nsd_port, nsd_process, about = start_nsd(children, nsd, work / "nsd", recorded,
                                                     env)
            nsd_log = work / "nsd" / "nsd.log"
            wait_until_answers(nsd_port, checks, nsd_process, work / "nsd" / "nsd.out",
                               timeout=60)
            servers.append(Server(NSD, nsd_port, nsd_process, nsd_log))
            print(f"{about}")
            compare_answers(NSD, servers[-1], queries, recorded)

        pids = {s.label: s.process.pid for s in servers}
        print()
        print(f"query file: {len(queries)} queries, cycled: {counts['A']} A for every service "
              f"({counts['A'] - len([q for q in a_checks if len(q.addresses) > 1])} ClusterIP,"
              f" {len([q for q in a_checks if len(q.addresses) > 1])} headless), "
              f"{counts['SRV']} SRV, {counts['NXDOMAIN']} NXDOMAIN "
              f"(mix {mix[0]}/{mix[1]}/{mix[2]} %), no EDNS; {os.cpu_count()} CPUs; "
              f"dnsperf -v for p99 (its CPU counts, the server's does not change)")
        common = ["-s", "127.0.0.1", "-d", str(data), "-t", f"{args.timeout:g}"]
        tables: list[tuple[str, dict[str, Result], int]] = []
        udp: dict[str, Result] = {}
        if "udp" in modes:
            udp_args = common + ["-c", str(args.clients), "-q", str(args.outstanding),
                                 "-T", str(args.threads)]
            if args.warmup > 0:
                for server in servers:
                    run_dnsperf(udp_args, server.port, server.process.pid, args.warmup)
            udp = run_mode("udp, full load", servers, udp_args, args.seconds, args.runs)
            tables.append(("UDP, full load", udp, args.runs))
        if "tcp" in modes:
            tcp_args = common + ["-m", "tcp", "-c", str(args.tcp_connections), "-q",
                                 str(args.tcp_connections * args.tcp_inflight)]
            tcp = run_mode(f"tcp, {args.tcp_connections} connections x {args.tcp_inflight} in "
                           f"flight", servers, tcp_args, args.seconds, args.extra_runs)
            tables.append((f"TCP, {args.tcp_connections} connections x {args.tcp_inflight} in "
                           f"flight", tcp, args.extra_runs))
        if "half" in modes:
            rate = args.half_qps or int(udp[OURS].qps / 2)
            half_args = common + ["-c", str(args.clients), "-q", str(args.outstanding),
                                  "-T", str(args.threads), "-Q", str(rate)]
            half_servers = [s for s in servers if s.label != STOCK]
            half = run_mode(f"udp at {rate} q/s (half our full-load QPS)", half_servers,
                            half_args, args.seconds, args.extra_runs)
            tables.append((f"UDP at {rate} q/s, half our full-load QPS", half,
                           args.extra_runs))

        # Did our answers hold up under load?
        changed = []
        for q, item in zip(queries, recorded):
            rcode, wire = ask(ours_port, q.name, TYPES[q.qtype])
            if records(wire) != records(bytes.fromhex(item["wire"])):
                changed.append(q.name)
        for server in servers:
            if server.process.poll() is not None:
                print(f"!! {server.label} exited with {server.process.returncode} during "
                      f"the runs")

        print("\nserver CPU: the server's process and its children (NSD serves from one); "
              "q/CPU-s = queries completed per server CPU-second")
        for title, medians, runs in tables:
            print_table(title, medians, pids, runs)
        if udp and "half" in modes and OURS in udp and OURS in half:
            full_us, half_us = (1e6 / udp[OURS].per_cpu_s if udp[OURS].per_cpu_s else 0,
                                1e6 / half[OURS].per_cpu_s if half[OURS].per_cpu_s else 0)
            print(f"\nour CPU per query: {full_us:.1f} us at full load, {half_us:.1f} us at "
                  f"half load ({half_us / full_us if full_us else 0:.2f}x)")
        print(f"sandbox RSS {proc_status(sandbox.pid).get('VmRSS', 0):.0f} MiB")
        for title, medians, _ in tables:
            for label, m in medians.items():
                print(f"response codes, {title}, {label}: {m.codes}")
        print(f"our answers after the load: {len(queries) - len(changed)} unchanged, "
              f"{len(changed)} changed" + (f" (e.g. {changed[:3]})" if changed else ""))
        for server in servers:
            if not server.log.exists():
                continue
            problems = log_problems(server.log)
            if problems or server is ours:
                print(f"{server.label}'s log: {len(problems)} error line(s)"
                      + "".join(f"\n  {line[:200]}" for line in problems[:5]))
        if args.keep:
            print(f"logs and files kept in {work}")
        dead = any(s.process.poll() is not None for s in servers if s.label in (OURS,
                                                                                  BASELINE))
        return 1 if wrong or changed or dead else 0

    return in_workspace(session, "kubernetai-dnsperf-", keep=lambda: args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6, help="dnsperf -l per run (6)")
    parser.add_argument("--runs", type=int, default=3,
                        help="UDP full-load runs per server; medians (3)")
    parser.add_argument("--extra-runs", type=int, default=1,
                        help="runs per server of the tcp and half modes (1)")
    parser.add_argument("--modes", default="udp,tcp,half",
                        help="udp (full load), tcp (connections x in flight), half (UDP at "
                             "half our full-load QPS) (udp,tcp,half)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of unreported UDP load on each server first (2)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c, UDP (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q, UDP (100)")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T (1)")
    parser.add_argument("--timeout", type=float, default=5, help="dnsperf -t (5 s)")
    parser.add_argument("--tcp-connections", type=int, default=10,
                        help="TCP mode: dnsperf -m tcp -c (10)")
    parser.add_argument("--tcp-inflight", type=int, default=10,
                        help="TCP mode: queries in flight per connection (10)")
    parser.add_argument("--half-qps", type=int, default=0,
                        help="the half mode's rate (default: half our UDP median QPS)")
    parser.add_argument("--no-nsd", action="store_true", help="leave NSD out")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run the kubernetai package found in DIR (a copy of "
                             "another revision's tree) as a second server, same Corefile")
    parser.add_argument("--mix", default="80,10,10",
                        help="percent of A (services), SRV, NXDOMAIN queries (80,10,10)")
    parser.add_argument("--spec", default=SPEC, help=f"synthetic cluster ({SPEC})")
    parser.add_argument("--keep", action="store_true", help="keep the logs and query file")
    parser.add_argument("--stock-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stock_server is not None:
        return run_stock_server(args.stock_server, args.names)
    if args.seconds <= 0 or args.runs < 1 or args.extra_runs < 1:
        parser.error("--seconds must be positive, --runs and --extra-runs at least 1")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
