#!/usr/bin/env python3
"""Our server against a cluster at full scale: sync, memory, relist, stalls, churn, QPS.

Starts, each in its own process, on loopback and free ports only:

* the simulated API server, ``kubernetai sandbox --synthetic scale`` (10,000 Services,
  10,000 EndpointSlices / 50,000 endpoints, 100,000 Pods; ``--spec`` for another size);
* our server, ``twistd -n kubernetai``, on a Corefile with one ``kubernetai cluster.local``
  stanza pointing at it (default options: ``apiserver_qps 5``, ``apiserver_burst 10``),
  ``prometheus`` on a free port for the stall meter; once with ``pods insecure`` and once
  with ``pods verified`` (``--modes``), each a fresh process;
* for the uncached comparison, a stock Twisted Names server (this file,
  ``--stock-server PORT --names FILE``: ``twisted.names.server.DNSServerFactory`` over a
  ``ResolverBase`` answering from a dict of the same names, nothing tuned).

and prints, for each mode (``--only`` picks phases: sync, qps, change, churn, relist,
uncached):

* **sync**: seconds from starting the server until every checked name answers (the first,
  a middle and the last Service, a headless one, and with ``pods verified`` the last
  Pod listed); RSS once settled and the peak (VmHWM) from ``/proc``;
* **qps**: dnsperf over the 10,000 service names at rest;
* **change**: API change -> DNS answer at ``--rate`` changes a second (each change creates
  a Service with a known ClusterIP; a poller asks for its name every 2 ms until the
  address answers; timed from just before the API request), idle and while dnsperf sends
  half the QPS measured at rest;
* **churn**: dnsperf over the 10,000 names while Services are created and deleted at 1
  and at ``--rate`` changes a second;
* **relist**: the sandbox's ``expire-history`` fault (every watch ends with 410, so every
  informer re-lists), with a Service (and a Pod) created at once: seconds until both
  answer, the list requests it took, RSS peak during it (VmHWM reset through
  ``/proc/PID/clear_refs``) and RSS a few seconds after;
* **uncached** (``pods insecure`` only): dnsperf over distinct pod names
  (``10-x-y-z.NS.pod.cluster.local``, never asked twice), then the same against stock
  Twisted Names, and the ratio;
* for every phase, the longest reactor stall and GC pause in it, from the server's
  ``kubernetai_reactor_stall_seconds`` / ``kubernetai_gc_pause_seconds`` (exact when the
  phase holds the longest so far, else the histogram's bucket).

Prints figures, asserts nothing. Bounded: every phase has a time limit, load runs last
``--seconds``. Needs dnsperf for qps/churn/uncached and ``change`` under load
(Debian/Ubuntu: ``apt-get install -y dnsperf``); those phases are skipped without it.

    python bench/scale.py [--spec scale] [--modes insecure,verified] [--seconds 5]
                          [--rate 100] [--only sync,relist]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    cpu_seconds,
    in_workspace,
    parse_dnsperf,
    print_machine_footer,
    proc_status,
    read_first_line,
    repo_env,
    serve_stock,
    twistd,
)

from kubernetai.sandbox.ports import free_port  # noqa: E402

ZONE = "cluster.local"
PHASES = ("sync", "qps", "change", "churn", "relist", "uncached")
CHURN_NAMESPACE = "kubernetai-bench"


# --- the stock Twisted Names server (run as a subprocess: --stock-server PORT --names FILE) --

def run_stock_server(port: int, names_file: str) -> int:
    """Serve an A record for each name of a dnsperf file, stock twisted.names, nothing tuned."""
    from twisted.names import dns

    table: dict[tuple[bytes, int], Any] = {}
    for line in Path(names_file).read_text().splitlines():
        name = line.split()[0]
        address = ".".join(name.split(".")[0].split("-"))
        record = dns.RRHeader(name.encode(), dns.A, dns.IN, 5, dns.Record_A(address, 5),
                              auth=True)
        table[(name.lower().encode(), dns.A)] = ([record], [], [])
    return serve_stock(port, table,
                       f"stock twisted.names: {len(table)} names on 127.0.0.1:{port}")


# --- /proc --------------------------------------------------------------------------------

def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RSSSampler(threading.Thread):
    """The largest VmRSS seen, sampled every 50 ms (where VmHWM cannot be reset)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0.0))


# --- DNS ----------------------------------------------------------------------------------

def ask(port: int, name: str, timeout: float = 1.0, rdtype: str = "A") -> Any:
    import dns.message
    import dns.query
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port,
                         timeout=timeout)


def addresses(response: Any) -> set[str]:
    return {item.to_text() for rrset in response.answer for item in rrset
            if rrset.rdtype == 1}


def answers(port: int, name: str, address: str | None) -> bool:
    """Whether ``name`` answers with ``address`` (with any A record when None)."""
    try:
        got = addresses(ask(port, name, timeout=0.5))
    except Exception:
        return False
    return address in got if address else bool(got)


# --- the API server -----------------------------------------------------------------------

class Api:
    """The sandbox's REST API and control endpoint, over one keep-alive connection a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        import urllib3
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = urllib3.PoolManager(maxsize=2)
        reply = pool.request(method, self.url + path,
                             body=None if body is None else json.dumps(body),
                             headers={"content-type": "application/json"}, timeout=30)
        if reply.status >= 300 and reply.status != 404:
            raise RuntimeError(f"{method} {path}: {reply.status} {reply.data[:300]!r}")
        return json.loads(reply.data) if reply.data else None

    def namespace(self, name: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except RuntimeError as error:
            if "409" not in str(error):
                raise

    def create_service(self, namespace: str, name: str, ip: str) -> None:
        self.request("POST", f"/api/v1/namespaces/{namespace}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})

    def delete_service(self, namespace: str, name: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/services/{name}")

    def create_pod(self, namespace: str, name: str, ip: str) -> None:
        self.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "bench"}], "nodeName": "node-00000"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "hostIP": "10.0.0.10"}})

    def fault(self, action: str, **arguments: Any) -> Any:
        return self.request("POST", "/_sandbox/faults", {"action": action, **arguments})

    def list_requests(self) -> dict[str, int]:
        """Requests served so far, lists and watches, by verb and resource."""
        counts = self.request("GET", "/_sandbox/requests")["requests"]
        return {f"{c['verb']} {c['resource']}": c["count"] for c in counts
                if c["verb"] in ("list", "watch")}


class ServiceIPs:
    """Fresh ClusterIPs for the Services the bench creates (10.110.0.0/16, unused by the
    synthetic cluster, which counts up from 10.96.1.0)."""

    def __init__(self) -> None:
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> tuple[int, str]:
        with self.lock:
            self.next += 1
            n = self.next
        return n, f"10.110.{n // 250 % 250}.{n % 250 + 1}"


# --- the synthetic cluster, seen from the bench -------------------------------------------

@dataclass
class Cluster:
    services: list[tuple[str, str, str]] = field(default_factory=list)  # name, ns, clusterIP
    headless: list[tuple[str, str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    last_pod: tuple[str, str] | None = None  # namespace, IP

    def fqdn(self, name: str, namespace: str) -> str:
        return f"{name}.{namespace}.svc.{ZONE}"


def cluster_of(spec_text: str) -> Cluster:
    """The names and addresses the synthetic generator makes (streamed, not kept)."""
    from kubernetai.sandbox.synthetic import generate, parse_spec
    cluster = Cluster()
    for obj in generate(parse_spec(spec_text)):
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            cluster.namespaces.append(meta["name"])
        elif kind == "Service":
            if obj["spec"].get("clusterIP") == "None":
                cluster.headless.append((meta["name"], meta["namespace"]))
            else:
                cluster.services.append((meta["name"], meta["namespace"],
                                         obj["spec"]["clusterIP"]))
        elif kind == "Pod" and obj.get("status", {}).get("podIP"):
            cluster.last_pod = (meta["namespace"], obj["status"]["podIP"])
    return cluster


# --- our server ---------------------------------------------------------------------------

COREFILE = """\
{zone}:{dns} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    kubernetai {zone} {{
        endpoint {url}
        pods {pods}
    }}
}}
"""


@dataclass
class Server:
    process: subprocess.Popen
    dns: int
    metrics: int
    log: Path


def start_server(children: Processes, work: Path, url: str, pods: str, env: dict[str, str],
                 pin: str | None) -> Server:
    dns_port, metrics_port = free_port(), free_port()
    corefile = work / f"Corefile.{pods}"
    corefile.write_text(COREFILE.format(zone=ZONE, dns=dns_port, metrics=metrics_port, url=url,
                                        pods=pods))
    log = work / f"kubernetai.{pods}.log"
    argv = twistd("kubernetai", "--corefile", str(corefile))
    if pin:
        argv = ["taskset", "-c", pin, *argv]
    process = children.start(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                             cwd=work)
    return Server(process, dns_port, metrics_port, log)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith(("kubernetai_reactor_stall", "kubernetai_gc_"))}


def _bucket_max(before: dict, after: dict, name: str, labels: tuple) -> str:
    """The bound of the highest bucket that counted something between two scrapes."""
    bounds = sorted(((float(dict(key[1])["le"]), key) for key in after
                     if key[0] == name + "_bucket" and all(item in key[1] for item in labels)),
                    reverse=True)
    for index, (bound, key) in enumerate(bounds):
        below = bounds[index + 1] if index + 1 < len(bounds) else None
        new = after[key] - before.get(key, 0)
        new_below = (after[below[1]] - before.get(below[1], 0)) if below else 0
        if new > new_below:
            low = below[0] if below else 0.0
            return (f"{low * 1000:g}-{bound * 1000:g} ms" if bound != float("inf")
                    else f"> {low * 1000:g} ms")
    return "none"


def stall_report(before: dict, after: dict) -> str:
    """The longest stall and GC pauses between two scrapes of the server's metrics."""
    parts = []
    largest = ("kubernetai_reactor_stall_max_seconds", ())
    count = ("kubernetai_reactor_stall_seconds_count", ())
    stalls = int(after.get(count, 0) - before.get(count, 0))
    if after.get(largest, 0) > before.get(largest, 0):
        busy = after.get(("kubernetai_reactor_stall_max_busy_seconds", ()), 0)
        worst = f"{after[largest] * 1000:.1f} ms (reactor on CPU {busy * 1000:.1f} ms of it)"
    else:
        worst = _bucket_max(before, after, "kubernetai_reactor_stall_seconds", ())
        worst = "none over 5 ms" if worst == "none" else worst
    parts.append(f"max reactor stall {worst} ({stalls} stalls over 5 ms)")
    frozen = after.get(("kubernetai_gc_frozen_objects", ()))
    if frozen is not None:
        parts.append(f"{frozen:.0f} objects frozen")
    for generation in "012":
        labels = (("generation", generation),)
        key = ("kubernetai_gc_pause_max_seconds", labels)
        n = int(after.get(("kubernetai_gc_pause_seconds_count", labels), 0)
                - before.get(("kubernetai_gc_pause_seconds_count", labels), 0))
        if not n:
            continue
        if after.get(key, 0) > before.get(key, 0):
            pause = f"{after[key] * 1000:.1f} ms"
        else:
            pause = _bucket_max(before, after, "kubernetai_gc_pause_seconds", labels)
        cpu_key = ("kubernetai_gc_cpu_seconds_total", labels)
        cpu = after.get(cpu_key, 0) - before.get(cpu_key, 0)
        parts.append(f"gen{generation} x{n} max {pause} (CPU {cpu / n * 1000:.2f} ms each)")
    return "; ".join(parts)


# --- load ---------------------------------------------------------------------------------

@dataclass
class Perf:
    qps: float
    latency_ms: float
    latency_max_ms: float
    lost: int
    codes: str
    server_cpu: float

    def __str__(self) -> str:
        return (f"{self.qps:8.0f} QPS, latency avg {self.latency_ms:.2f} ms max "
                f"{self.latency_max_ms:.1f} ms, lost {self.lost}, server CPU "
                f"{self.server_cpu:.0f}%, {self.codes}")


def dnsperf(port: int, pid: int, data: Path, seconds: float, args: argparse.Namespace,
            rate: float | None = None) -> Perf:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(data), "-l",
            f"{seconds:g}", "-c", str(args.clients), "-q", str(args.outstanding), "-T", "1"]
    if rate:
        argv += ["-Q", str(int(rate))]
    if args.pin_dnsperf:
        argv = ["taskset", "-c", args.pin_dnsperf, *argv]
    before, started = cpu_seconds(pid), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = (cpu_seconds(pid) - before) / (time.monotonic() - started) * 100
    try:
        figures = parse_dnsperf(done.stdout)
    except RuntimeError as error:
        raise RuntimeError(f"{error}{done.stderr}") from None
    return Perf(figures["qps"], figures["latency"] * 1000, figures["latency_max"] * 1000,
                figures["lost"], figures["codes"], cpu)


class Changer(threading.Thread):
    """API changes at ``rate`` a second for ``seconds``: Services created in the bench's
    namespace, the oldest deleted once ``keep`` exist (one change each). With ``probe``,
    each creation is timed until its address answers over DNS."""

    def __init__(self, api: Api, ips: ServiceIPs, rate: float, seconds: float,
                 probe: Prober | None = None, keep: int = 200) -> None:
        super().__init__(daemon=True)
        self.api, self.ips, self.rate, self.seconds = api, ips, rate, seconds
        self.probe, self.keep = probe, keep
        self.made = 0
        self.error: str | None = None
        self.elapsed = 0.0
        self.live: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        try:
            while True:
                due = started + self.made / self.rate
                now = time.monotonic()
                if due - started >= self.seconds:
                    break
                if due > now:
                    time.sleep(due - now)
                if len(self.live) >= self.keep and self.made % 2:
                    self.api.delete_service(CHURN_NAMESPACE, self.live.pop(0))
                else:
                    n, ip = self.ips.take()
                    name = f"change-{n}"
                    before = time.monotonic()
                    self.api.create_service(CHURN_NAMESPACE, name, ip)
                    self.live.append(name)
                    if self.probe is not None:
                        self.probe.add(f"{name}.{CHURN_NAMESPACE}.svc.{ZONE}", ip, before)
                self.made += 1
        except Exception as error:  # reported, not raised: the phase prints what it got
            self.error = str(error)
        self.elapsed = time.monotonic() - started

    def cleanup(self) -> None:
        for name in self.live:
            self.api.delete_service(CHURN_NAMESPACE, name)
        self.live.clear()


class Prober(threading.Thread):
    """Asks for each pending name every ``interval`` until its address answers."""

    def __init__(self, port: int, interval: float = 0.002, give_up: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.give_up = port, interval, give_up
        self.pending: dict[str, tuple[str, float]] = {}
        self.latencies: list[float] = []
        self.missed = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def add(self, name: str, address: str, since: float) -> None:
        with self.lock:
            self.pending[name] = (address, since)

    def run(self) -> None:
        import dns.message
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        queries: dict[int, str] = {}
        try:
            while not (self.stopping.is_set() and not self.pending):
                with self.lock:
                    names = list(self.pending.items())
                now = time.monotonic()
                for name, (_, since) in names:
                    if now - since > self.give_up:
                        with self.lock:
                            self.pending.pop(name, None)
                        self.missed += 1
                        continue
                    query = dns.message.make_query(name, "A")
                    queries[query.id] = name
                    sock.sendto(query.to_wire(), ("127.0.0.1", self.port))
                deadline = time.monotonic() + self.interval
                while (left := deadline - time.monotonic()) > 0:
                    if not select.select([sock], [], [], left)[0]:
                        break
                    self._receive(sock, queries)
                if self.stopping.is_set() and time.monotonic() > self._latest() + self.give_up:
                    break
        finally:
            sock.close()

    def _latest(self) -> float:
        with self.lock:
            return max((since for _, since in self.pending.values()), default=0.0)

    def _receive(self, sock: socket.socket, queries: dict[int, str]) -> None:
        import dns.message
        try:
            wire = sock.recv(65535)
            response = dns.message.from_wire(wire)
        except (OSError, Exception):
            return
        name = queries.pop(response.id, None)
        if name is None:
            return
        with self.lock:
            entry = self.pending.get(name)
            if entry is not None and entry[0] in addresses(response):
                del self.pending[name]
                self.latencies.append(time.monotonic() - entry[1])

    def summary(self) -> str:
        if not self.latencies:
            return f"no answers ({self.missed} never answered)"
        values = sorted(self.latencies)
        def p(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] * 1000
        return (f"{len(values)} changes: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max "
                f"{values[-1] * 1000:.1f} ms" + (f", {self.missed} never answered"
                                                 if self.missed else ""))


# --- the phases ---------------------------------------------------------------------------

@dataclass
class Run:
    args: argparse.Namespace
    api: Api
    cluster: Cluster
    server: Server
    pods: str
    work: Path
    ips: ServiceIPs
    rest_qps: float = 0.0

    def stalls(self, label: str, before: dict) -> dict:
        after = scrape(self.server.metrics)
        print(f"    {label}: {stall_report(before, after)}")
        return after

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while not predicate():
            if self.server.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.server.log.read_text()[-3000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{what}: not after {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started


def checks(cluster: Cluster, pods: str) -> list[tuple[str, str | None]]:
    services = cluster.services
    picked = [services[0], services[len(services) // 2], services[-1]]
    out: list[tuple[str, str | None]] = [(cluster.fqdn(n, ns), ip) for n, ns, ip in picked]
    if cluster.headless:
        name, namespace = cluster.headless[-1]
        out.append((cluster.fqdn(name, namespace), None))
    if pods == "verified" and cluster.last_pod:
        namespace, ip = cluster.last_pod
        out.append((f"{ip.replace('.', '-')}.{namespace}.pod.{ZONE}", ip))
    return out


def phase_sync(run: Run, started: float) -> dict:
    names = checks(run.cluster, run.pods)
    server = run.server

    def synced() -> bool:
        return all(answers(server.dns, name, ip) for name, ip in names)
    run.wait(synced, run.args.timeout, "sync")
    seconds = time.monotonic() - started
    print(f"  sync: every checked name answers {seconds:.1f} s after the server started "
          f"({len(names)} names: first, middle, last, headless service"
          f"{', last pod' if run.pods == 'verified' else ''})")
    scraped = scrape(server.metrics)
    print(f"    sync: {stall_report({}, scraped)}")
    time.sleep(3)  # the freeze after the sync, and a moment
    rss = proc_status(server.process.pid)
    print(f"  RSS: steady {rss.get('VmRSS', 0):.0f} MiB, peak {rss.get('VmHWM', 0):.0f} MiB")
    return scrape(server.metrics)


def names_file(run: Run) -> Path:
    path = run.work / "services.txt"
    if not path.exists():
        lines = [f"{run.cluster.fqdn(n, ns)} A\n" for n, ns, _ in run.cluster.services]
        lines += [f"{run.cluster.fqdn(n, ns)} A\n" for n, ns in run.cluster.headless]
        random.Random(1).shuffle(lines)
        path.write_text("".join(lines))
    return path


def phase_qps(run: Run, before: dict) -> dict:
    data = names_file(run)
    dnsperf(run.server.dns, run.server.process.pid, data, 1, run.args)  # warm the cache
    before = scrape(run.server.metrics)
    result = dnsperf(run.server.dns, run.server.process.pid, data, run.args.seconds, run.args)
    run.rest_qps = result.qps
    print(f"  qps at rest ({sum(1 for _ in data.open())} service names): {result}")
    return run.stalls("qps at rest", before)


def phase_change(run: Run, before: dict) -> dict:
    rate, seconds = run.args.rate, run.args.seconds
    for loaded in (False, True):
        if loaded and not (shutil.which("dnsperf") and run.rest_qps):
            print("  change under load: skipped (needs dnsperf and the qps phase)")
            continue
        before = scrape(run.server.metrics)
        prober = Prober(run.server.dns)
        changer = Changer(run.api, run.ips, rate, seconds, probe=prober)
        prober.start()
        changer.start()
        load = None
        if loaded:
            load = dnsperf(run.server.dns, run.server.process.pid, names_file(run), seconds,
                           run.args, rate=run.rest_qps / 2)
        changer.join(seconds + 60)
        prober.stopping.set()
        prober.join(prober.give_up + 5)
        label = (f"change -> answer at {rate:g}/s, under load ({run.rest_qps / 2:.0f} QPS "
                 "asked)" if loaded else f"change -> answer at {rate:g}/s, idle")
        achieved = changer.made / changer.elapsed if changer.elapsed else 0
        print(f"  {label}: {prober.summary()} (achieved {achieved:.0f} changes/s"
              f"{'; ' + changer.error if changer.error else ''})")
        if load is not None:
            print(f"    the load meanwhile: {load}")
        changer.cleanup()
        run.stalls(label, before)
    return scrape(run.server.metrics)


def phase_churn(run: Run, before: dict) -> dict:
    data = names_file(run)
    for rate in (1, run.args.rate):
        before = scrape(run.server.metrics)
        changer = Changer(run.api, run.ips, rate, run.args.seconds)
        changer.start()
        result = dnsperf(run.server.dns, run.server.process.pid, data, run.args.seconds,
                         run.args)
        changer.join(run.args.seconds + 60)
        achieved = changer.made / changer.elapsed if changer.elapsed else 0
        ratio = f" = {result.qps / run.rest_qps:.2f}x at rest" if run.rest_qps else ""
        print(f"  qps at {rate:g} change/s (achieved {achieved:.0f}): {result}{ratio}"
              f"{'; ' + changer.error if changer.error else ''}")
        changer.cleanup()
        run.stalls(f"qps at {rate:g} change/s", before)
    return scrape(run.server.metrics)


def phase_relist(run: Run, before: dict) -> dict:
    pid = run.server.process.pid
    before = scrape(run.server.metrics)
    steady = proc_status(pid).get("VmRSS", 0)
    exact_peak = reset_peak(pid)
    sampler = RSSSampler(pid)
    sampler.start()
    lists_before = run.api.list_requests()
    n, ip = run.ips.take()
    service = f"relist-{n}.{CHURN_NAMESPACE}.svc.{ZONE}"
    expected = [(service, ip)]
    run.api.fault("expire-history")
    run.api.create_service(CHURN_NAMESPACE, f"relist-{n}", ip)
    if run.pods == "verified":
        pod_ip = f"10.127.{n // 250 % 250}.{n % 250 + 1}"
        run.api.create_pod(run.cluster.namespaces[0], f"relist-{n}", pod_ip)
        expected.append((f"{pod_ip.replace('.', '-')}.{run.cluster.namespaces[0]}.pod.{ZONE}",
                         pod_ip))
    seconds = run.wait(lambda: all(answers(run.server.dns, name, address)
                                   for name, address in expected), run.args.timeout,
                       "relist")
    lists = {k: v - lists_before.get(k, 0) for k, v in run.api.list_requests().items()
             if v - lists_before.get(k, 0)}
    time.sleep(3)
    sampler.done.set()
    sampler.join()
    peak = proc_status(pid).get("VmHWM", 0) if exact_peak else sampler.peak
    after = proc_status(pid).get("VmRSS", 0)
    print(f"  relist (expire-history: every watch ends with 410): the changes made at once "
          f"answer after {seconds:.1f} s; requests meanwhile {lists}")
    print(f"    RSS before {steady:.0f} MiB, peak during {peak:.0f} MiB "
          f"({peak / steady if steady else 0:.2f}x), 3 s after {after:.0f} MiB"
          f"{'' if exact_peak else ' (peak sampled every 50 ms)'}")
    return run.stalls("relist", before)


def phase_uncached(run: Run, children: Processes, env: dict[str, str]) -> None:
    count = int(max(50_000, run.args.seconds * run.args.uncached_qps * 1.5))
    namespaces = run.cluster.namespaces
    path = run.work / "distinct.txt"
    path.write_text("".join(
        f"10-{i >> 16 & 255}-{i >> 8 & 255}-{i & 255}.{namespaces[i % len(namespaces)]}"
        f".pod.{ZONE} A\n" for i in range(count)))
    before = scrape(run.server.metrics)
    ours = dnsperf(run.server.dns, run.server.process.pid, path, run.args.seconds, run.args)
    print(f"  uncached ({count} distinct pod names, none asked twice): ours  {ours}")
    run.stalls("uncached", before)
    port = free_port()
    stock_log = run.work / "stock.log"
    stock = children.start([sys.executable, str(Path(__file__).resolve()), "--stock-server",
                            str(port), "--names", str(path)], stdout=stock_log.open("w"),
                           stderr=subprocess.STDOUT, env=env)
    first = f"10-0-0-0.{namespaces[0]}.pod.{ZONE}"
    try:
        deadline = time.monotonic() + 60
        while not answers(port, first, "10.0.0.0"):
            if stock.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stock server not up: " + stock_log.read_text()[-2000:])
            time.sleep(0.2)
        theirs = dnsperf(port, stock.pid, path, run.args.seconds, run.args)
        print(f"  uncached, stock twisted.names on the same names:  {theirs}")
        print(f"  uncached ratio ours / stock: {ours.qps / theirs.qps:.2f}x")
    finally:
        children.stop(stock)


# --- main ---------------------------------------------------------------------------------

def run_mode(pods: str, args: argparse.Namespace, api: Api, cluster: Cluster, url: str,
             work: Path, children: Processes, env: dict[str, str], ips: ServiceIPs) -> None:
    print(f"\n== pods {pods}")
    started = time.monotonic()
    server = start_server(children, work, url, pods, env, args.pin)
    run = Run(args, api, cluster, server, pods, work, ips)
    has_dnsperf = shutil.which("dnsperf") is not None
    try:
        scraped = phase_sync(run, started)
        if "qps" in args.only or "change" in args.only or "churn" in args.only:
            if has_dnsperf:
                scraped = phase_qps(run, scraped)
            else:
                print("  qps: skipped, dnsperf is not installed (apt-get install -y dnsperf)")
        if "change" in args.only:
            scraped = phase_change(run, scraped)
        if "churn" in args.only and has_dnsperf:
            scraped = phase_churn(run, scraped)
        if "relist" in args.only:
            for _ in range(args.relists):
                scraped = phase_relist(run, scraped)
        if "uncached" in args.only and pods == "insecure" and has_dnsperf:
            phase_uncached(run, children, env)
        scraped = scrape(server.metrics)
        largest = scraped.get(("kubernetai_reactor_stall_max_seconds", ()), 0)
        print(f"  max reactor stall over the whole run: {largest * 1000:.1f} ms; "
              f"RSS now {proc_status(server.process.pid).get('VmRSS', 0):.0f} MiB")
    finally:
        children.stop(server.process)
    problems = [line for line in server.log.read_text(errors="replace").splitlines()
                if "Traceback" in line or "[ERROR]" in line]
    if problems:
        print(f"  server log {server.log}: {len(problems)} problem lines, e.g. {problems[0]}")


def start_sandbox(spec: str, work: Path, children: Processes, env: dict[str, str]
                  ) -> tuple[Any, str]:
    """The synthetic cluster ``spec`` (as this script reads it) and the URL of a sandbox
    serving it, started in ``work`` with a history long enough for the churn; prints its
    size, load time and RSS."""
    started = time.monotonic()
    cluster = cluster_of(spec)
    sandbox = children.start(
        [sys.executable, "-m", "kubernetai", "sandbox", "--synthetic", spec,
         "--port", "0", "--history", "100000"],
        stdout=subprocess.PIPE, stderr=(work / "sandbox.log").open("w"), env=env, cwd=work)
    url = read_first_line(sandbox, timeout=300)
    print(f"sandbox {url}: {len(cluster.services) + len(cluster.headless)} services "
          f"({len(cluster.headless)} headless), loaded in "
          f"{time.monotonic() - started:.1f} s, RSS "
          f"{proc_status(sandbox.pid).get('VmRSS', 0):.0f} MiB")
    return cluster, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="scale", help="synthetic spec (default: scale)")
    parser.add_argument("--modes", default="insecure,verified",
                        help="pods modes to run, in order (default: insecure,verified)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"phases to run, of {','.join(PHASES)} (sync always runs)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each load's length")
    parser.add_argument("--rate", type=float, default=100.0, help="changes a second")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--outstanding", type=int, default=100)
    parser.add_argument("--uncached-qps", type=float, default=20_000,
                        help="expected uncached QPS, to size the distinct names (x1.5)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds a sync or relist may take before the bench gives up")
    parser.add_argument("--pin", help="taskset CPU list for our server (e.g. 0)")
    parser.add_argument("--pin-dnsperf", help="taskset CPU list for dnsperf (e.g. 1)")
    parser.add_argument("--relists", type=int, default=2,
                        help="relists in a row (memory must not grow from one to the next)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stock-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stock_server:
        return run_stock_server(args.stock_server, args.names)
    args.only = {p.strip() for p in args.only.split(",") if p.strip()} | {"sync"}
    unknown = args.only - set(PHASES)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown or not set(modes) <= {"insecure", "verified"}:
        parser.error(f"unknown phases {sorted(unknown)} or modes {modes}")

    env = repo_env()

    def session(work: Path, children: Processes) -> int:
        print(f"bench/scale.py: spec {args.spec!r}, modes {modes}, phases "
              f"{sorted(args.only)}, {args.seconds:g} s loads, {args.rate:g} changes/s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
              + (f"; work dir {work}" if args.keep else ""))
        cluster, url = start_sandbox(args.spec, work, children, env)
        api = Api(url)
        api.namespace(CHURN_NAMESPACE)
        ips = ServiceIPs()
        for pods in modes:
            run_mode(pods, args, api, cluster, url, work, children, env, ips)
        return 0

    status = in_workspace(session, "kubernetai-scale-", keep=lambda: args.keep, grace=15)
    if status == 0:
        print_machine_footer()
    return status


if __name__ == "__main__":
    sys.exit(main())
