"""Soak: three simulated clusters under constant change and faults, one DNS server, then a check.

    python bench/soak.py --minutes 2 [--seed N] [--changes-per-second 100] [--qps 200]
                         [--settle 30] [--recovery-budget 110] [--report-json PATH] [--keep]

What runs, all on 127.0.0.1 and all as real processes:

* three `kubernetai sandbox` API servers, one per demo cluster of `examples/` plus a small
  synthetic cluster each (`--synthetic`), with a bearer token;
* the DNS server, `twistd -n kubernetai --corefile FILE`, with one kubernetai stanza per
  cluster (zones cluster.local, assemblage.local, conglomeration.local) and a fallthrough
  pair: `fallthrough.local` is served by cluster.local's cluster first, then assemblage's;
* this process, which writes ~`--changes-per-second` REST changes in total to the API
  servers (Services and EndpointSlices created, replaced, patched and deleted) and keeps the
  truth of what each holds (`soakmodel.Truth`), queries the DNS server continuously over UDP
  and TCP at a bounded rate, and injects faults on a schedule scaled to the run length, so
  that even a 2-minute run sees each once: a watch stall, an API server restart (process
  killed, restarted on the same port from its manifests: resourceVersions go back and the
  truth resets to the manifests), cut watches, expired history (410), 503/429 bursts, a
  reload (ttl change), a reload of a Corefile with a syntax error, and a reload that points
  one stanza at a kubeconfig with a wrong token.

After the changes stop, the server gets `--settle` seconds to converge; every name the API
state implies (A/AAAA/SRV/CNAME, headless and endpoint names, in each zone and the
fallthrough zone) and every name that existed once and is gone (NXDOMAIN) is then compared
with DNS. Printed: queries, failures, late answers during the run, stale or missing records
after settling, reload outcomes, the DNS server's RSS at start, end and peak, and any
traceback in its log. Exit status 1 on any stale or missing record after settling, any
failed query, a crash, a traceback or a wrong reload outcome; 2 if it could not start.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soakmodel  # noqa: E402
from soakmodel import CNAME, NOERROR, NXDOMAIN, SRV, A, Expect, Mutator, Profile, Truth, Write  # noqa: E402

from kubernetai.sandbox.ports import free_port as free_dns_port

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TOKEN = "soak-token"
FALLTHROUGH_ZONE = "fallthrough.local"
SYNTHETIC = "namespaces=3,services=80,headless=10,endpoints=2,headless_endpoints=3,pods=0"
POOL_SIZE = 120               # service names per cluster the soak creates and deletes
STALL_SECONDS = 5.0           # how long watches are told to stall
STALE_AFTER = 10.0            # a wrong answer this long after the truth changed is "late"
FAULT_KINDS = ("stall", "restart", "cut", "expire", "errors", "reload", "bad-syntax",
               "bad-token")


@dataclass(frozen=True)
class ClusterSpec:
    zone: str
    profile: Profile
    pod_names: bool = False   # the stanza has endpoint_pod_names


CLUSTERS = (
    ClusterSpec("cluster.local", Profile(ip_prefix=0)),
    ClusterSpec("assemblage.local", Profile(pod_refs=True, ip_prefix=1), pod_names=True),
    ClusterSpec("conglomeration.local", Profile(dual_stack=True, ip_prefix=2)),
)


# -- small tools -------------------------------------------------------------------------


def now() -> float:
    return time.monotonic()


class Pacer:
    """Spaces events at `rate` per second; never bursts to catch up after falling behind."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = now()

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next slot; False once `stop` is set."""
        current = now()
        if self.next < current - 1.0:
            self.next = current
        delay = self.next - current
        self.next += self.interval
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


class Stats:
    """Counters and a few examples of each problem, shared by all threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.max_late = 0.0

    def add(self, name: str, count: int = 1, example: str | None = None) -> None:
        with self.lock:
            self.counts[name] += count
            if example is not None:
                kept = self.examples.setdefault(name, [])
                if len(kept) < 10:
                    kept.append(example)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB (empty if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in
            (line.split(":", 1) for line in text.splitlines()) if k in ("VmRSS", "VmHWM")}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tracebacks(text: str) -> list[str]:
    """Each traceback in a log, with a few lines of context after it."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            found.append("\n".join(lines[max(0, index - 2):index + 25]))
    return found


# -- the API servers -------------------------------------------------------------------------


class TransportError(Exception):
    """The request got no HTTP answer: its outcome is unknown."""


class SandboxProcess:
    """One `kubernetai sandbox` process; restartable on the same port."""

    def __init__(self, spec: ClusterSpec, workdir: Path, seed: int) -> None:
        self.spec = spec
        self.name = spec.zone.split(".")[0]
        self.kubeconfig = workdir / f"{self.name}.kubeconfig"
        self.logfile = workdir / f"sandbox-{self.name}.log"
        self.synthetic = f"{SYNTHETIC},seed={seed}"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait for its URL line; on a restart, listen on the same port again."""
        for attempt in range(10):
            offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            with self.logfile.open("ab") as out:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "kubernetai", "sandbox",
                     "--manifests", str(ROOT / "examples" / self.spec.zone),
                     "--synthetic", self.synthetic, "--port", str(self.port),
                     "--token", TOKEN, "--write-kubeconfig", str(self.kubeconfig),
                     "--bookmark-interval", "10", "--history", "5000"],
                    stdout=out, stderr=subprocess.STDOUT, env=SOURCE_ENV, cwd=ROOT)
            url = self._wait_url(offset, timeout)
            if url:
                self.port = int(url.rsplit(":", 1)[1])
                return
            if self.process.poll() is None:
                raise RuntimeError(f"sandbox {self.name} printed no URL in {timeout}s")
            time.sleep(1.0 + attempt)  # the port may still be held: try again
        raise RuntimeError(f"sandbox {self.name} could not listen on port {self.port}")

    def _wait_url(self, offset: int, timeout: float) -> str | None:
        deadline = now() + timeout
        assert self.process is not None
        while now() < deadline:
            with self.logfile.open("rb") as log_in:
                log_in.seek(offset)
                text = log_in.read().decode(errors="replace")
            match = re.search(r"^(http://127\.0\.0\.1:\d+)$", text, re.M)
            if match and "kubeconfig:" in text:
                return match.group(1)
            if self.process.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Api:
    """A keep-alive HTTP client for one sandbox, owned by one thread."""

    def __init__(self, cluster: "Cluster") -> None:
        self.cluster = cluster
        self.conn: http.client.HTTPConnection | None = None
        self.epoch = -1

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json") -> tuple[int, Any]:
        if self.conn is None or self.epoch != self.cluster.epoch:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.cluster.sandbox.port,
                                                   timeout=15)
            self.epoch = self.cluster.epoch
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise TransportError(f"{method} {path}: {type(error).__name__}: {error}") from None
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Cluster:
    """One simulated cluster: its API server process, the truth, and the writer's state."""

    def __init__(self, spec: ClusterSpec, workdir: Path, seed: int, stats: Stats) -> None:
        self.spec = spec
        self.zone = spec.zone
        self.sandbox = SandboxProcess(spec, workdir, seed)
        self.truth = Truth()
        self.lock = threading.RLock()   # held by the writer per change and by a restart
        self.epoch = 0                   # bumped by a restart: clients reconnect
        self.stats = stats
        self.rng = random.Random(f"{seed}-{spec.zone}")
        self.mutator: Mutator | None = None
        self.ttl = 5
        self.ttl_changed = 0.0
        self.windows: list[tuple[float, float, str]] = []
        self.dirty = False
        self.restarting = False
        self.writable = threading.Event()   # cleared while a restarted server awaits a list
        self.writable.set()
        self.own_lists: Counter[str] = Counter()   # lists the soak sent this server process

    # -- truth --------------------------------------------------------------------------

    def load_truth(self, api: Api, *, initial: bool) -> None:
        """Set the truth from full lists of the API server (retrying injected errors)."""
        services = self._list(api, f"{soakmodel.SERVICES_PATH}/services")
        slices = self._list(api, f"{soakmodel.SLICES_PATH}/endpointslices")
        if initial:
            self.truth.reset(services, slices)
        else:
            drift = self.truth.replace(services, slices)
            if drift:
                self.stats.add("truth drift", len(drift), f"{self.zone}: {drift[:5]}")
        self.dirty = False

    def _list(self, api: Api, path: str) -> list[dict[str, Any]]:
        for _attempt in range(30):
            try:
                status, body = api.request("GET", path)
                self.own_lists[path.rsplit("/", 1)[1]] += 1   # the server counted it too
            except TransportError:
                status, body = 0, None
            if status == 200:
                return body["items"]
            time.sleep(0.5)
        raise RuntimeError(f"{self.zone}: cannot list {path}: status {status}")

    def make_mutator(self) -> None:
        namespaces = sorted({key.split("/")[0] for key in self.truth.initial}
                            - {"default", "kube-system", "kube-public", "kube-node-lease"})
        pool = [f"{namespaces[i % len(namespaces)]}/soak-{i:03d}" for i in range(POOL_SIZE)]
        self.mutator = Mutator(self.truth, self.rng, pool, self.spec.profile)

    # -- writes -------------------------------------------------------------------------

    def apply(self, api: Api, write: Write, what: str) -> bool:
        """Send one write and record its outcome in the truth; False stops the change."""
        try:
            status, body = api.request(write.method, write.path, write.body,
                                       content_type="application/merge-patch+json"
                                       if write.method == "PATCH" else "application/json")
        except TransportError as error:
            self.stats.add("write transport errors", example=f"{self.zone}: {error}")
            self._learn(api, write)
            return False
        if 200 <= status < 300:
            if write.method == "DELETE":
                self.truth.remove(write.kind, write.key)
            else:
                self.truth.put(write.kind, body)
            self.stats.add("changes")
            self.stats.add(f"changes {what}")
            return True
        self.stats.add(f"writes answered {status}",
                       example=f"{self.zone} {write.method} {write.path}: "
                               f"{(body or {}).get('message', '')}"[:300])
        if status in (404, 409, 422):
            self._learn(api, write)
        return False

    def _learn(self, api: Api, write: Write) -> None:
        """After an unknown outcome or a surprise, read the object to correct the truth."""
        path = write.path if write.method != "POST" else (
            f"{write.path}/{write.key.split('/')[1]}")
        try:
            status, body = api.request("GET", path)
        except TransportError:
            self.dirty = True
            return
        if status == 200:
            if self.truth.get(write.kind, write.key) != body:
                self.truth.put(write.kind, body)
        elif status == 404:
            self.truth.remove(write.kind, write.key)
        else:
            self.dirty = True

    def in_window(self, at: float) -> str | None:
        for start, end, kind in self.windows:
            if start <= at <= end:
                return kind
        return None


# -- the DNS server --------------------------------------------------------------------------


class DnsServer:
    """`twistd -n kubernetai` with a NOTIFY_SOCKET whose messages are collected."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.corefile = workdir / "Corefile"
        self.logfile = workdir / "twistd.log"
        self.port = free_dns_port()
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._reader.start()
        with self.logfile.open("wb") as out:
            self.process = subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "kubernetai", "--corefile",
                 str(self.corefile), "--dns-port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**SOURCE_ENV, "NOTIFY_SOCKET": str(self.notify_path)})

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.notify.recv(65536).decode(errors="replace")
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            message = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append((now(), message))

    def wait_message(self, key: str, after: int, timeout: float) -> dict[str, str] | None:
        deadline = now() + timeout
        while now() < deadline:
            for _, message in self.messages[after:]:
                if key in message:
                    return message
            if not self.alive:
                return None
            time.sleep(0.05)
        return None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and the exit status (None if it had to be killed)."""
        self._stop.set()
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            return None

    def close(self) -> None:
        self._stop.set()
        self.notify.close()


def corefile_text(clusters: list[Cluster], *, kubeconfigs: dict[str, Path] | None = None,
                  broken: bool = False) -> str:
    """The soak's Corefile; `kubeconfigs` overrides a stanza's, `broken` unbalances a brace."""
    kc = {c.zone: str((kubeconfigs or {}).get(c.zone, c.sandbox.kubeconfig)) for c in clusters}
    first, second, third = clusters
    text = (f"{first.zone} {second.zone} {third.zone} {FALLTHROUGH_ZONE} {{\n"
            f"    bind 127.0.0.1\n"
            f"    errors\n"
            f"    kubernetai {first.zone} {FALLTHROUGH_ZONE} {{\n"
            f"        kubeconfig {kc[first.zone]}\n"
            f"        fallthrough {FALLTHROUGH_ZONE}\n"
            f"        ttl {first.ttl}\n"
            f"    }}\n"
            f"    kubernetai {second.zone} {FALLTHROUGH_ZONE} {{\n"
            f"        kubeconfig {kc[second.zone]}\n"
            f"        endpoint_pod_names\n"
            f"        ttl {second.ttl}\n"
            f"    }}\n"
            f"    kubernetai {third.zone} {{\n"
            f"        kubeconfig {kc[third.zone]}\n"
            f"        ttl {third.ttl}\n"
            f"    }}\n"
            f"}}\n")
    if broken:
        text = text[:text.rindex("}")] + "    kubernetai {\n"
    return text


# -- expectations and DNS checks ---------------------------------------------------------


@dataclass
class Expected:
    answer: Expect
    cluster: str           # the zone of the cluster it comes from, or the fallthrough zone
    service: str           # the "namespace/name" of the service the name belongs to


def service_of(qname: str, zone: str) -> str:
    """The service key of a service name: the two labels before `svc.<zone>.`."""
    labels = qname[:-len(zone) - 2].split(".")
    return f"{labels[-2]}/{labels[-3]}"


class Expectations:
    """The answer every checked name should get now, and when each last changed."""

    def __init__(self, clusters: list[Cluster]) -> None:
        self.clusters = clusters
        self.current: dict[tuple[str, int], Expected] = {}
        self.keys: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def build(self) -> dict[tuple[str, int], Expected]:
        result: dict[tuple[str, int], Expected] = {}
        for cluster in self.clusters:
            with cluster.lock:
                pool = cluster.mutator.pool if cluster.mutator else []
                for qname, qtype in soakmodel.queries(cluster.truth, cluster.zone,
                                                      pod_names=cluster.spec.pod_names,
                                                      pool_keys=pool):
                    got = soakmodel.expect(cluster.truth, cluster.zone, qname, qtype,
                                           ttl=cluster.ttl, pod_names=cluster.spec.pod_names)
                    if got is not None:
                        result[(qname, qtype)] = Expected(got, cluster.zone,
                                                          service_of(qname, cluster.zone))
        first, second = self.clusters[0], self.clusters[1]
        with first.lock, second.lock:
            keys = sorted(first.truth.seen | second.truth.seen
                          | set(first.mutator.pool if first.mutator else ())
                          | set(second.mutator.pool if second.mutator else ()))
            for key in keys:
                namespace, name = key.split("/")
                qname = f"{name}.{namespace}.svc.{FALLTHROUGH_ZONE}."
                qtype, got = soakmodel.fallthrough_expect(
                    first.truth, second.truth, FALLTHROUGH_ZONE, qname, first_ttl=first.ttl,
                    second_ttl=second.ttl, first_pods=first.spec.pod_names,
                    second_pods=second.spec.pod_names)
                if got is not None:
                    result[(qname, qtype)] = Expected(got, FALLTHROUGH_ZONE, key)
        return result

    def refresh(self) -> dict[tuple[str, int], Expected]:
        fresh = self.build()
        with self.lock:
            self.current = fresh
            self.keys = list(fresh)
        return fresh

    def pick(self, rng: random.Random) -> tuple[tuple[str, int], Expected] | None:
        with self.lock:
            if not self.keys:
                return None
            key = rng.choice(self.keys)
            return key, self.current[key]

    def last_change(self, expected: Expected) -> float:
        """When the truth behind this name last changed (its service, a reset, the ttl)."""
        return max(max(c.truth.last_change(expected.service), c.ttl_changed)
                   for c in self.windows_of(expected.cluster))

    def windows_of(self, cluster: str) -> list[Cluster]:
        if cluster == FALLTHROUGH_ZONE:
            return self.clusters[:2]
        return [c for c in self.clusters if c.zone == cluster]


def observed(response: dns.message.Message, qname: str, qtype: int) -> Expect:
    """The answer as the model writes it: rcode, normalised record data, TTL."""
    data: set[str] = set()
    ttl = None
    for rrset in response.answer:
        if rrset.rdtype != qtype or rrset.name.to_text().lower() != qname:
            continue
        ttl = rrset.ttl
        for rd in rrset:
            if qtype == SRV:
                data.add(f"{rd.port} {rd.target.to_text().lower()}")
            elif qtype == CNAME:
                data.add(rd.target.to_text().lower())
            else:
                data.add(soakmodel.normal_ip(rd.address))
    return Expect(response.rcode(), frozenset(data), ttl if data else None)


def matches(expected: Expect, got: Expect) -> bool:
    if expected.rcode != got.rcode or expected.records != got.records:
        return False
    return not expected.records or expected.ttl is None or expected.ttl == got.ttl


def batch_query(port: int, keys: list[tuple[str, int]], *, window: int = 48,
                timeout: float = 2.0, tries: int = 3, rate: float = 1500.0
                ) -> dict[tuple[str, int], dns.message.Message | str]:
    """Ask every (name, type) over UDP, several in flight, retrying silence; TC goes to TCP.

    Returns the response, or an error text, per key. Bounded: at most `window` queries in
    flight and `rate` sent per second.
    """
    results: dict[tuple[str, int], dns.message.Message | str] = {}
    pending = list(reversed(keys))
    attempts: Counter[tuple[str, int]] = Counter()
    inflight: dict[int, tuple[tuple[str, int], float]] = {}
    next_id = random.randrange(65536)
    pacer = Pacer(rate)
    never = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            selectors.DefaultSelector() as selector:
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        while pending or inflight:
            while pending and len(inflight) < window:
                key = pending.pop()
                while next_id in inflight:
                    next_id = (next_id + 1) % 65536
                query = dns.message.make_query(key[0], key[1])
                query.id = next_id
                next_id = (next_id + 1) % 65536
                pacer.wait(never)
                attempts[key] += 1
                try:
                    sock.send(query.to_wire())
                except OSError as error:
                    results[key] = f"send failed: {error}"
                    continue
                inflight[query.id] = (key, now() + timeout)
            for _ in selector.select(0.05):
                while True:
                    try:
                        wire = sock.recv(65535)
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # ICMP unreachable: the server is gone; timeouts follow
                    _receive(wire, inflight, results, port)
            current = now()
            for query_id, (key, deadline) in list(inflight.items()):
                if deadline < current:
                    del inflight[query_id]
                    if attempts[key] < tries:
                        pending.append(key)
                    else:
                        results[key] = f"no answer after {tries} tries"
    return results


def _receive(wire: bytes, inflight: dict[int, tuple[tuple[str, int], float]],
             results: dict[tuple[str, int], Any], port: int) -> None:
    try:
        response = dns.message.from_wire(wire)
    except dns.exception.DNSException as error:
        query_id = int.from_bytes(wire[:2], "big") if len(wire) >= 2 else -1
        entry = inflight.pop(query_id, None)
        if entry is not None:
            results[entry[0]] = f"malformed reply: {error}"
        return
    entry = inflight.pop(response.id, None)
    if entry is None:
        return  # a late answer to a query already retried
    key = entry[0]
    if response.flags & dns.flags.TC:
        try:
            response = dns.query.tcp(dns.message.make_query(key[0], key[1]), "127.0.0.1",
                                     port=port, timeout=5)
        except (dns.exception.DNSException, OSError) as error:
            results[key] = f"TCP after TC failed: {error}"
            return
    results[key] = response


# -- the soak -------------------------------------------------------------------------------


@dataclass
class Options:
    minutes: float
    seed: int
    changes_per_second: float
    qps: float
    settle: float
    recovery_budget: float
    report_json: Path | None
    keep: bool
    tcp_share: float = 0.1


@dataclass
class Fault:
    at: float
    kind: str
    cluster: int


def fault_schedule(duration: float, seed: int, settle: float, recovery_budget: float
                   ) -> list[Fault]:
    """Each fault kind once per cycle (5 minutes, or the whole run if shorter), evenly spaced.

    A stall is left out when the run would end before the server can notice it (its
    stalled-watch limit plus back-off: `recovery_budget`).
    """
    rng = random.Random(f"faults-{seed}")
    cycle = min(300.0, duration)
    slot = cycle / len(FAULT_KINDS)
    faults = []
    start = 0.0
    turn = rng.randrange(3)
    while start < duration - 1:
        for index, kind in enumerate(FAULT_KINDS):
            at = start + (index + 0.5) * slot
            if at >= duration:
                break
            if kind == "stall" and duration - at + settle < recovery_budget:
                continue
            faults.append(Fault(at, kind, turn % 3))
            turn += 1 + rng.randrange(2)
        start += cycle
    return faults


class Soak:
    """One soak run: start everything, change, query and break things, check, report.

    Threads: one writer per cluster, four queriers, an expectations refresher, an RSS
    sampler, and this one, which runs the fault schedule and then the final check.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix="soak-"))
        self.stats = Stats()
        self.clusters = [Cluster(spec, self.workdir, options.seed, self.stats)
                         for spec in CLUSTERS]
        self.server = DnsServer(self.workdir)
        self.expectations = Expectations(self.clusters)
        self.stop_changes = threading.Event()
        self.stop_queries = threading.Event()
        self.threads: list[threading.Thread] = []
        self.problems: list[str] = []
        self.reloads: list[dict[str, Any]] = []
        self.faults_done: list[str] = []
        self.report: dict[str, Any] = {"options": {k: str(v) for k, v in
                                                   dataclasses.asdict(options).items()}}
        self.recovery_until = 0.0
        self.rss_samples: list[int] = []
        self.restart_relists: list[float] = []   # seconds from a restart to the re-list

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        log(f"work directory {self.workdir}")
        starters = [threading.Thread(target=c.sandbox.start) for c in self.clusters]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        for cluster in self.clusters:
            if not cluster.sandbox.alive:
                raise RuntimeError(f"sandbox {cluster.zone} did not start")
            cluster.load_truth(Api(cluster), initial=True)
            cluster.make_mutator()
            log(f"{cluster.zone}: API server {cluster.sandbox.port}, "
                f"{len(cluster.truth.services)} services, {len(cluster.truth.slices)} slices")
        self.server.corefile.write_text(corefile_text(self.clusters))
        self.server.start()
        ready = self.server.wait_message("READY", 0, 90)
        if ready is None:
            raise RuntimeError("the DNS server did not become ready:\n"
                               + self.server.logfile.read_text()[-3000:])
        log(f"DNS server pid {self.server.pid} on port {self.server.port}: "
            f"{ready.get('STATUS', '')}")

    # -- run ----------------------------------------------------------------------------

    def run(self) -> int:
        self.start()
        initial = self.converge(now() + 60, "initial")
        self.report["initial_check"] = initial
        if initial["mismatches"]:
            self.problems.append(f"{len(initial['mismatches'])} names wrong before any change")
        self.report["rss_start_kib"] = memory(self.server.pid).get("VmRSS")
        self.report["cpu_start_s"] = cpu_seconds(self.server.pid)
        duration = self.options.minutes * 60
        self.began = now()
        self.changes_end = self.began + duration
        self._spawn(self._refresher, "expectations")
        for index in range(4):
            self._spawn(lambda i=index: self._querier(i), f"querier-{index}")
        for cluster in self.clusters:
            self._spawn(lambda c=cluster: self._writer(c), f"writer-{cluster.zone}")
        self._spawn(self._sampler, "rss")
        faults = fault_schedule(duration, self.options.seed, self.options.settle,
                                self.options.recovery_budget)
        log(f"running {duration:.0f}s: {self.options.changes_per_second:g} changes/s, "
            f"{self.options.qps:g} queries/s, faults: "
            + ", ".join(f"{f.kind}@{f.at:.0f}s" for f in faults))
        self._run_faults(faults)
        self.stop_changes.wait(max(0.0, self.changes_end - now()))
        self.stop_changes.set()
        for thread in self.threads:
            if thread.name.startswith("writer"):
                thread.join(60)
        self.report["changes_seconds"] = round(now() - self.began, 1)
        log("changes stopped; settling")
        for cluster in self.clusters:
            with cluster.lock:
                cluster.load_truth(Api(cluster), initial=False)
        deadline = max(now() + self.options.settle, self.recovery_until)
        final = self.converge(deadline, "final")
        self.report["final_check"] = final
        self.stop_queries.set()
        for thread in self.threads:
            thread.join(30)
        return self.finish(final)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._guard(target, name), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _guard(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:  # noqa: BLE001 - a soak bug must show, not hide
                import traceback
                self.problems.append(f"soak thread {name} failed: {error!r}")
                traceback.print_exc()
        return run

    # -- background work -------------------------------------------------------------

    def _refresher(self) -> None:
        while not self.stop_queries.is_set():
            self.expectations.refresh()
            self.stop_queries.wait(2.0)

    def _writer(self, cluster: Cluster) -> None:
        pacer = Pacer(self.options.changes_per_second / len(self.clusters))
        api = Api(cluster)
        assert cluster.mutator is not None
        while not self.stop_changes.is_set():
            if not cluster.writable.wait(1.0):
                continue
            # The lock is held per write, never while pacing: the expectations refresher
            # needs it too, and Python's locks are not fair to a waiting thread.
            with cluster.lock:
                if cluster.dirty:
                    try:
                        cluster.load_truth(api, initial=False)
                    except RuntimeError as error:
                        self.stats.add("writer re-list failures", example=str(error))
                        continue
                what, writes = cluster.mutator.next_change()
            for write in writes:
                if not pacer.wait(self.stop_changes):
                    break
                with cluster.lock:
                    if not cluster.apply(api, write, what):
                        break
        api.close()

    def _querier(self, index: int) -> None:
        rng = random.Random(f"{self.options.seed}-q{index}")
        pacer = Pacer(self.options.qps / 4)
        port = self.server.port
        while pacer.wait(self.stop_queries):
            picked = self.expectations.pick(rng)
            if picked is None:
                continue
            (qname, qtype), expected = picked
            tcp = rng.random() < self.options.tcp_share
            sent = now()
            response = self._ask(qname, qtype, port, tcp)
            self.stats.add("queries")
            self.stats.add("queries over TCP" if tcp else "queries over UDP")
            if isinstance(response, str):
                self.stats.add("failures", example=f"{qname} {dns.rdatatype.to_text(qtype)}"
                                                   f"{' (TCP)' if tcp else ''}: {response}")
                continue
            got = observed(response, qname, qtype)
            if got.rcode not in (NOERROR, NXDOMAIN):
                self.stats.add("failures", example=f"{qname} {dns.rdatatype.to_text(qtype)}: "
                                                   f"{dns.rcode.to_text(got.rcode)}")
                continue
            if matches(expected.answer, got):
                continue
            age = sent - self.expectations.last_change(expected)
            if age <= STALE_AFTER:
                self.stats.add("answers behind a change younger than "
                               f"{STALE_AFTER:g}s (propagating)")
                continue
            windows = [c.in_window(sent) for c in self.expectations.windows_of(
                expected.cluster)]
            label = "late answers during fault recovery" if any(windows) else "late answers"
            faults = ", " + str([w for w in windows if w]) if any(windows) else ""
            self.stats.add(label, example=f"t={sent - self.began:.0f}s {qname} "
                                          f"{dns.rdatatype.to_text(qtype)}: expected "
                                          f"{expected.answer.describe()}, got "
                                          f"{got.describe()} ({age:.0f}s after the change"
                                          f"{faults})")
            with self.stats.lock:
                if not any(windows):
                    self.stats.max_late = max(self.stats.max_late, age)

    def _ask(self, qname: str, qtype: int, port: int, tcp: bool) -> dns.message.Message | str:
        """One query; a silent UDP query is asked once more before it counts as failed."""
        query = dns.message.make_query(qname, qtype)
        for attempt in range(1 if tcp else 2):
            try:
                if tcp:
                    return dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
                response = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
                if response.flags & dns.flags.TC:
                    return dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
                return response
            except dns.exception.Timeout:
                self.stats.add("query timeouts (retried)" if attempt == 0 and not tcp
                               else "query timeouts")
            except (dns.exception.DNSException, OSError) as error:
                return f"{type(error).__name__}: {error}"
        return "timeout"

    def _sampler(self) -> None:
        """RSS every 2 s; notes a DNS server or API server that died on its own."""
        dead: set[str] = set()
        while not self.stop_queries.wait(2.0):
            rss = memory(self.server.pid).get("VmRSS")
            if rss:
                self.rss_samples.append(rss)
            if not self.server.alive and "crash" not in self.report:
                self.report["crash"] = f"DNS server exited with {self.server.process.returncode}"
                log(self.report["crash"])
            for cluster in self.clusters:
                if (not cluster.sandbox.alive and not cluster.restarting
                        and cluster.zone not in dead):
                    dead.add(cluster.zone)
                    self.problems.append(f"sandbox {cluster.zone} died")

    # -- faults -----------------------------------------------------------------------

    def _run_faults(self, faults: list[Fault]) -> None:
        for fault in faults:
            if self.stop_changes.wait(max(0.0, self.began + fault.at - now())):
                return
            if now() >= self.changes_end:
                return
            cluster = self.clusters[fault.cluster]
            started = now()
            log(f"fault {fault.kind} on {cluster.zone}")
            try:
                getattr(self, "_fault_" + fault.kind.replace("-", "_"))(cluster)
            except Exception as error:  # noqa: BLE001 - reported, the soak goes on
                self.problems.append(f"fault {fault.kind} on {cluster.zone} failed: {error}")
                log(f"fault {fault.kind} failed: {error}")
            self.faults_done.append(f"{fault.kind}@{fault.at:.0f}s:{cluster.zone}"
                                    f" ({now() - started:.1f}s)")

    def _control(self, cluster: Cluster, action: str, **arguments: Any) -> Any:
        api = Api(cluster)
        try:
            status, body = api.request("POST", "/_sandbox/faults",
                                       {"action": action, **arguments})
        finally:
            api.close()
        if status != 200:
            raise RuntimeError(f"fault {action}: HTTP {status}: {body}")
        return body

    def _window(self, cluster: Cluster, seconds: float, kind: str) -> None:
        cluster.windows.append((now(), now() + seconds, kind))

    def _fault_stall(self, cluster: Cluster) -> None:
        self._window(cluster, self.options.recovery_budget, "stall")
        self.recovery_until = max(self.recovery_until,
                                        now() + self.options.recovery_budget)
        self._control(cluster, "stall-watches")
        self.stop_changes.wait(STALL_SECONDS)
        self._control(cluster, "unstall-watches")

    def _fault_restart(self, cluster: Cluster) -> None:
        """Kill the API server and start it again from its manifests on the same port."""
        with cluster.lock:
            self._window(cluster, self.options.recovery_budget, "restart")
            cluster.restarting = True
            try:
                cluster.sandbox.kill()
                cluster.epoch += 1
                cluster.own_lists.clear()
                cluster.sandbox.start()
            finally:
                cluster.restarting = False
            cluster.sandbox.restarts += 1
            cluster.load_truth(Api(cluster), initial=True)
            cluster.windows[-1] = (cluster.windows[-1][0], now() + self.options.recovery_budget,
                                   "restart")
            cluster.writable.clear()
        self.recovery_until = max(self.recovery_until, now() + self.options.recovery_budget)

        def wait() -> None:
            try:
                self._wait_relisted(cluster, self.options.recovery_budget)
            finally:
                cluster.writable.set()
        self._spawn(wait, f"relist-{cluster.zone}")   # the fault schedule goes on meanwhile

    def _wait_relisted(self, cluster: Cluster, timeout: float) -> None:
        """Hold this cluster's writes until the DNS server listed the restarted API server.

        Its resourceVersions restarted from the manifests, below what the informers saw. A
        client can tell only while they stay below: once new writes carry the counter past
        the informer's last resourceVersion, a watch resumed from it is valid again and the
        lost history cannot be noticed by any client (kube-apiserver behaves the same, which
        is why an etcd restore must bump revisions). The soak keeps the restart detectable
        so that it tests the detection; if no list comes within `timeout`, that is reported
        and writes resume.
        """
        deadline = now() + timeout
        api = Api(cluster)
        try:
            while now() < deadline and not self.stop_changes.is_set():
                try:
                    status, body = api.request("GET", "/_sandbox/requests")
                except TransportError:
                    status, body = 0, None
                if status == 200:
                    lists = {r["resource"]: r["count"] for r in body["requests"]
                             if r["verb"] == "list"}
                    with cluster.lock:
                        own = dict(cluster.own_lists)
                    if all(lists.get(r, 0) > own.get(r, 0)
                           for r in ("services", "endpointslices")):
                        took = timeout - (deadline - now())
                        log(f"{cluster.zone}: re-listed by the DNS server {took:.1f}s after "
                            "the restart")
                        self.restart_relists.append(round(took, 1))
                        cluster.windows[-1] = (cluster.windows[-1][0], now() + 15, "restart")
                        return
                time.sleep(0.2)
            if not self.stop_changes.is_set():
                self.problems.append(f"{cluster.zone}: the DNS server did not re-list the "
                                     f"restarted API server within {timeout:.0f}s")
            else:  # the run ended first; the final check shows what is left stale
                self.stats.add("restarts not re-listed before the changes stopped",
                               example=cluster.zone)
        finally:
            api.close()

    def _fault_cut(self, cluster: Cluster) -> None:
        self._window(cluster, 15, "cut")
        self._control(cluster, "cut-watches")

    def _fault_expire(self, cluster: Cluster) -> None:
        self._window(cluster, 15, "410")
        self._control(cluster, "expire-history")

    def _fault_errors(self, cluster: Cluster) -> None:
        """503s then 429s (Retry-After) on the informer's lists and watches."""
        self._window(cluster, 40, "errors")
        self._control(cluster, "error", code=503, count=3, verbs=["list", "watch"])
        self._control(cluster, "error", code=429, count=3, verbs=["list", "watch"],
                      retry_after=2)
        self._control(cluster, "cut-watches")
        self.stop_changes.wait(20)
        self._control(cluster, "clear")

    def _fault_reload(self, cluster: Cluster) -> None:
        """A good reload: one stanza's ttl changes; answers must follow."""
        cluster.ttl = 7 if cluster.ttl == 5 else 5
        cluster.ttl_changed = now()
        self._reload("reload", corefile_text(self.clusters), expect_failure=False)

    def _fault_bad_syntax(self, cluster: Cluster) -> None:
        """A Corefile with a syntax error: reported, the old configuration keeps serving."""
        self._reload("bad-syntax", corefile_text(self.clusters, broken=True),
                     expect_failure=True)
        self.server.corefile.write_text(corefile_text(self.clusters))

    def _fault_bad_token(self, cluster: Cluster) -> None:
        """One stanza switched to a kubeconfig with a wrong token: the old one must stay.

        While the bad configuration is loaded, a new service in that cluster must still
        reach DNS (the old stanza keeps watching). Then the good Corefile is restored.
        """
        bad = self.workdir / f"{cluster.sandbox.name}-bad.kubeconfig"
        config = yaml.safe_load(cluster.sandbox.kubeconfig.read_text())
        for user in config.get("users") or ():
            user.setdefault("user", {})["token"] = "wrong-token"
        bad.write_text(yaml.safe_dump(config))
        self._window(cluster, 0, "bad-token")
        self._reload("bad-token", corefile_text(self.clusters, kubeconfigs={cluster.zone: bad}),
                     expect_failure=True, cluster=cluster)
        self._probe(cluster)
        self._reload("restore", corefile_text(self.clusters), expect_failure=False)

    def _reload(self, kind: str, text: str, *, expect_failure: bool,
                cluster: Cluster | None = None) -> None:
        self.server.corefile.write_text(text)
        before = len(self.server.messages)
        started = now()
        self.server.process.send_signal(signal.SIGUSR1)
        reloading = self.server.wait_message("RELOADING", before, 30)
        ready = self.server.wait_message("READY", before, 120)
        status = (ready or {}).get("STATUS", "")
        failed = "reload failed" in status
        outcome = {"kind": kind, "cluster": cluster.zone if cluster else None,
                   "seconds": round(now() - started, 2), "status": status,
                   "reloading_seen": reloading is not None, "ready_seen": ready is not None}
        self.reloads.append(outcome)
        log(f"reload {kind}: {outcome['seconds']}s, {status!r}")
        if ready is None:
            self.problems.append(f"reload {kind}: no READY=1 within 120s")
        elif failed != expect_failure:
            if expect_failure and kind == "bad-token" and "NOT synced" not in status:
                return
            self.problems.append(f"reload {kind}: expected "
                                 f"{'a failure' if expect_failure else 'success'}, "
                                 f"status {status!r}")

    def _probe(self, cluster: Cluster) -> None:
        """A service created now must be answered within 20 s, then deleted."""
        assert cluster.mutator is not None
        if not cluster.writable.is_set():
            log(f"probe in {cluster.zone} skipped: its restart is not yet re-listed")
            return
        namespace = cluster.mutator.pool[0].split("/")[0]
        key = f"{namespace}/soak-probe"
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "soak-probe", "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
        api = Api(cluster)
        with cluster.lock:
            created = cluster.apply(api, Write("POST", soakmodel.collection_path(
                "services", namespace), "services", key, body), "probe")
        if not created:
            self.problems.append(f"probe in {cluster.zone}: could not create the service")
            return
        with cluster.lock:
            ip = cluster.truth.services[key]["spec"]["clusterIP"]
        qname = f"soak-probe.{namespace}.svc.{cluster.zone}."
        deadline = now() + 20
        answer = "nothing"
        while now() < deadline:
            response = self._ask(qname, A, self.server.port, False)
            if not isinstance(response, str):
                got = observed(response, qname, A)
                answer = got.describe()
                if got.records == {ip}:
                    break
            time.sleep(0.5)
        else:
            self.problems.append(f"probe in {cluster.zone} under a bad-token reload: "
                                 f"{qname} answered {answer}, not {ip}")
        with cluster.lock:
            cluster.apply(api, Write("DELETE", soakmodel.item_path("services", key), "services",
                                     key), "probe")
        api.close()

    # -- checks -------------------------------------------------------------------------

    def converge(self, deadline: float, what: str) -> dict[str, Any]:
        """Compare every expected name with DNS until all match or the deadline passes."""
        started = now()
        passes = 0
        while True:
            expected = self.expectations.refresh()
            keys = list(expected)
            responses = batch_query(self.server.port, keys)
            passes += 1
            wrong = []
            for key in keys:
                response = responses.get(key, "no answer")
                want = expected[key]
                if isinstance(response, str):
                    wrong.append((key, want, response))
                    continue
                got = observed(response, key[0], key[1])
                if not matches(want.answer, got):
                    wrong.append((key, want, got.describe()))
            if not wrong or now() >= deadline or not self.server.alive:
                break
            time.sleep(2.0)
        elapsed = now() - started
        log(f"{what} check: {len(keys)} names, {len(wrong)} wrong after {passes} pass(es) "
            f"in {elapsed:.1f}s")
        stamp = now()
        lines = [f"{want.cluster}: {qname} {dns.rdatatype.to_text(qtype)}: expected "
                 f"{want.answer.describe()}, got {got} (truth changed "
                 f"{stamp - self.expectations.last_change(want):.0f}s before)"
                 for (qname, qtype), want, got in wrong]
        return {"names": len(keys), "passes": passes, "seconds": round(elapsed, 1),
                "mismatches": lines,
                "by_cluster": dict(Counter(want.cluster for _, want, _ in wrong))}

    # -- end ----------------------------------------------------------------------------

    def finish(self, final: dict[str, Any]) -> int:
        server_mem = memory(self.server.pid)
        self.report["rss_end_kib"] = server_mem.get("VmRSS")
        self.report["rss_peak_kib"] = server_mem.get("VmHWM")
        self.report["cpu_end_s"] = cpu_seconds(self.server.pid)
        self.report["sandbox_rss_kib"] = {c.zone: memory(c.sandbox.process.pid).get("VmRSS")
                                          for c in self.clusters if c.sandbox.process}
        alive = self.server.alive
        code = self.server.stop()
        if not alive:
            self.problems.append(f"the DNS server crashed (exit status {code})")
        elif code != 0:
            self.problems.append(f"the DNS server exited {code} on SIGTERM")
        self.server.close()
        for cluster in self.clusters:
            cluster.sandbox.stop()
        server_log = self.server.logfile.read_text(errors="replace")
        found = tracebacks(server_log)
        sandbox_tracebacks = []
        for cluster in self.clusters:
            sandbox_tracebacks += tracebacks(cluster.sandbox.logfile.read_text(errors="replace"))
        self.report.update({
            "duration_s": round(self.options.minutes * 60, 1),
            "counts": dict(self.stats.counts),
            "examples": self.stats.examples,
            "max_late_s": round(self.stats.max_late, 1),
            "faults": self.faults_done,
            "reloads": self.reloads,
            "restarts": {c.zone: c.sandbox.restarts for c in self.clusters},
            "restart_relist_s": self.restart_relists,
            "tracebacks": found,
            "sandbox_tracebacks": sandbox_tracebacks,
            "log_lines": server_log.count("\n"),
            "log_relists": len(re.findall(r"re-listed", server_log)),
            "log_errors": len(re.findall(r"\[ERROR\]|\berror\b", server_log, re.I)),
        })
        if final["mismatches"]:
            self.problems.append(f"{len(final['mismatches'])} stale or missing records after "
                                 "settling")
        if self.stats.counts["failures"]:
            self.problems.append(f"{self.stats.counts['failures']} failed queries")
        if found:
            self.problems.append(f"{len(found)} traceback(s) in the DNS server's log")
        if sandbox_tracebacks:
            self.problems.append(f"{len(sandbox_tracebacks)} traceback(s) in sandbox logs")
        self.report["problems"] = self.problems
        self.print_report()
        if self.options.report_json:
            self.options.report_json.write_text(json.dumps(self.report, indent=2))
        return 1 if self.problems else 0

    def print_report(self) -> None:
        r, counts = self.report, self.stats.counts
        mib = lambda kib: f"{kib / 1024:.1f} MiB" if kib else "?"  # noqa: E731
        print("\n==== soak report ====")
        print(f"run: {r['duration_s']:.0f}s of changes, seed {self.options.seed}, "
              f"work directory {self.workdir}")
        print(f"changes: {counts['changes']} in {r['changes_seconds']:.0f}s "
              f"({counts['changes'] / max(1.0, r['changes_seconds']):.1f}/s); "
              + ", ".join(f"{k[8:]} {v}" for k, v in sorted(counts.items())
                          if k.startswith("changes ")))
        print(f"queries: {counts['queries']} ({counts['queries over UDP']} UDP, "
              f"{counts['queries over TCP']} TCP); failures: {counts['failures']}; "
              f"timeouts retried: {counts['query timeouts (retried)']}")
        for name in sorted(counts):
            if name.startswith(("late", "answers behind", "writes answered", "write transport",
                                "truth drift", "writer re-list", "restarts not")):
                print(f"  {name}: {counts[name]}")
        print(f"  longest late answer outside fault windows: {r['max_late_s']}s")
        for name, examples in sorted(self.stats.examples.items()):
            if name.startswith(("failures", "late answers", "truth drift")):
                for example in examples[:5]:
                    print(f"    {name}: {example}")
        print("faults: " + "; ".join(r["faults"]))
        print(f"restarts re-listed by the DNS server after: {r['restart_relist_s']} s")
        for outcome in r["reloads"]:
            print(f"reload {outcome['kind']}"
                  f"{' on ' + outcome['cluster'] if outcome['cluster'] else ''}: "
                  f"{outcome['seconds']}s, STATUS {outcome['status']!r}")
        for what in ("initial_check", "final_check"):
            check = r.get(what)
            if check:
                print(f"{what.replace('_', ' ')}: {check['names']} names, "
                      f"{len(check['mismatches'])} stale or missing after {check['passes']} "
                      f"pass(es), {check['seconds']}s {check['by_cluster'] or ''}")
                for line in check["mismatches"][:40]:
                    print(f"    {line}")
        rss = self.rss_samples
        print(f"DNS server RSS: start {mib(r['rss_start_kib'])}, end {mib(r['rss_end_kib'])}, "
              f"peak (VmHWM) {mib(r['rss_peak_kib'])}, max sampled {mib(max(rss) if rss else 0)}; "
              f"CPU {r['cpu_end_s'] - r['cpu_start_s']:.1f}s during the run")
        print("sandbox RSS at end: " + ", ".join(f"{z} {mib(v)}" for z, v in
                                                  r["sandbox_rss_kib"].items()))
        print(f"DNS server log: {r['log_lines']} lines, {r['log_relists']} re-list lines, "
              f"{len(r['tracebacks'])} tracebacks")
        for text in r["tracebacks"][:3] + r["sandbox_tracebacks"][:3]:
            print("    " + text.replace("\n", "\n    "))
        if self.problems:
            print("FAILED: " + "; ".join(self.problems))
        else:
            print("OK: no stale or missing records, no failed queries, no crash, no traceback")

    def cleanup(self) -> None:
        self.stop_changes.set()
        self.stop_queries.set()
        if self.server.alive:
            self.server.stop()
        for cluster in self.clusters:
            cluster.sandbox.kill()
        if not self.options.keep and not self.problems:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"logs kept in {self.workdir}")


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="how long changes and faults run (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--changes-per-second", type=float, default=100.0,
                        help="REST writes per second across the three API servers")
    parser.add_argument("--qps", type=float, default=200.0,
                        help="DNS queries per second while changes run (10%% over TCP)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds the server gets to converge after the changes stop")
    parser.add_argument("--recovery-budget", type=float, default=110.0,
                        help="seconds the server may take to notice a stalled watch or a "
                             "restarted API server (its stalled-watch limit plus back-off); "
                             "the final check waits for it (default 110)")
    parser.add_argument("--report-json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.changes_per_second <= 0 or args.qps <= 0:
        parser.error("--minutes, --changes-per-second and --qps must be positive")
    return Options(args.minutes, args.seed, args.changes_per_second, args.qps, args.settle,
                   args.recovery_budget, args.report_json, args.keep)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    soak = Soak(options)
    try:
        return soak.run()
    except RuntimeError as error:
        print(f"soak: cannot run: {error}", file=sys.stderr)
        return 2
    finally:
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
