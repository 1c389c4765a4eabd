#!/usr/bin/env python3
"""UDP DNS throughput of two revisions of this project, measured side by side in one run.

Why: a refactor must be shown to cost no queries per second, and on a small shared machine
only a same-run, alternating comparison is trustworthy. Each revision is installed into
its own venv (cached in /tmp/kubernetai-bench), so each twistd runs its own code; one
simulated API server feeds both. Of kubernetai it imports only the sandbox's
`free_port`; both servers run as commands (`kubernetai sandbox`, `twistd kubernetai`), each
from its own venv.

    python bench/compare_revisions.py [--before REV] [--after REV|WORKTREE]
                                      [--after-venv DIR] [--runs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    cpu_seconds,
    interrupt_on_sigterm,
    machine_cpu_seconds,
    mix_queries,
    proc_status,
    read_first_line,
    wait_until,
)

from kubernetai.sandbox.ports import free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "kubernetai-bench"
WORKTREE = "WORKTREE"
SPEC = "namespaces=10,services=1000,headless=100,endpoints=3,headless_endpoints=5,pods=2000"
ZONE = "cluster.local"
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33,
          "OPT": 41}
TYPE_NAMES = {v: k for k, v in QTYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
# Not part of the installed package; left out of the work-tree snapshot so that editing
# them does not cost a new venv.
SNAPSHOT_SKIP = ("tests/", "bench/", "docs/", "contrib/")
KEEP_SNAPSHOTS = 2


# --- DNS wire format, by hand (no third-party imports) ----------------------------------------

def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """A query as dnsperf sends it without -e: RD set, no EDNS."""
    labels = [label.encode() for label in name.rstrip(".").split(".") if label]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!2H", qtype, 1)


def read_name(wire: bytes, offset: int) -> tuple[str, int]:
    """(name, offset after it), following compression pointers a bounded number of times."""
    labels, end, jumps = [], None, 0
    while True:
        length = wire[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | wire[offset + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        if length == 0:
            return ".".join(labels).lower() + ".", (end if end is not None else offset + 1)
        labels.append(wire[offset + 1:offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length


def rdata_text(wire: bytes, offset: int, rtype: int, length: int) -> str:
    data = wire[offset:offset + length]
    if rtype == 1 and length == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    if rtype in (2, 5, 12):
        return read_name(wire, offset)[0]
    if rtype == 33:
        priority, weight, port = struct.unpack("!3H", data[:6])
        return f"{priority} {weight} {port} {read_name(wire, offset + 6)[0]}"
    if rtype == 6:
        mname, at = read_name(wire, offset)
        rname, at = read_name(wire, at)
        return f"{mname} {rname} " + " ".join(map(str, struct.unpack("!5I", wire[at:at + 20])))
    return data.hex()


def decode(wire: bytes) -> dict[str, Any]:
    """A response as comparable text: rcode, flags and each section's records in order."""
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", wire[:12])
    offset = 12
    for _ in range(qd):
        offset = read_name(wire, offset)[1] + 4
    out: dict[str, Any] = {"rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
                           "flags": f"{flags & 0x7FF0:#06x}"}
    for section, count in (("answer", an), ("authority", ns), ("additional", ar)):
        records = []
        for _ in range(count):
            name, offset = read_name(wire, offset)
            rtype, _cls, ttl, length = struct.unpack("!2HIH", wire[offset:offset + 10])
            offset += 10
            records.append(f"{name} {ttl} {TYPE_NAMES.get(rtype, rtype)} "
                           f"{rdata_text(wire, offset, rtype, length)}")
            offset += length
        out[section] = records
    return out


def ask(port: int, name: str, qtype: int, timeout: float = 2.0) -> bytes:
    """One UDP query to 127.0.0.1:port; the raw response."""
    qid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.send(encode_query(qid, name, qtype))
        while True:
            data = sock.recv(65535)
            if len(data) >= 12 and int.from_bytes(data[:2], "big") == qid:
                return data


# --- the query mix, from the simulated API server ---------------------------------------------

@dataclass
class Query:
    name: str
    qtype: str
    expect: str                       # NOERROR / NXDOMAIN
    addresses: tuple[str, ...] = ()   # expected A answers, where known


def list_items(url: str, path: str) -> list[dict]:
    """Every item of a Kubernetes list, following `continue`."""
    items, token = [], ""
    for _ in range(10_000):
        query = "?limit=500" + (f"&continue={urllib.request.quote(token)}" if token else "")
        with urllib.request.urlopen(url + path + query, timeout=30) as response:
            page = json.load(response)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items
    raise RuntimeError(f"{path}: endless pagination")


def build_queries(url: str, mix: tuple[int, int, int]) -> list[Query]:
    """The A name of every service, plus SRV and NXDOMAIN queries in the proportions of mix
    (the same file as dnsperf_compare.py's), shuffled deterministically."""
    services = list_items(url, "/api/v1/services")
    slices: dict[tuple[str, str], list[dict]] = {}
    for item in list_items(url, "/apis/discovery.k8s.io/v1/endpointslices"):
        meta = item["metadata"]
        owner = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if owner:
            slices.setdefault((meta["namespace"], owner), []).append(item)
    a_queries, srv_queries = [], []
    for svc in services:
        namespace, name, spec = svc["metadata"]["namespace"], svc["metadata"]["name"], svc["spec"]
        if spec.get("type") == "ExternalName":
            continue
        fqdn = f"{name}.{namespace}.svc.{ZONE}"
        if spec.get("clusterIP") == "None":
            ips = [a for s in slices.get((namespace, name), []) for ep in s.get("endpoints") or []
                   for a in ep["addresses"] if (ep.get("conditions") or {}).get("ready", True)]
        else:
            ips = [spec["clusterIP"]]
        a_queries.append(Query(fqdn, "A", "NOERROR", tuple(sorted(ips))))
        named = [p for p in spec.get("ports") or [] if p.get("name")]
        if named:
            port = named[0]
            srv_queries.append(Query(f"_{port['name']}._{port.get('protocol', 'TCP').lower()}."
                                     f"{fqdn}", "SRV", "NOERROR"))
    if not a_queries:
        raise RuntimeError("the sandbox serves no services")
    return mix_queries(a_queries, srv_queries,
                       sorted({s["metadata"]["namespace"] for s in services}), ZONE, mix,
                       lambda name: Query(name, "A", "NXDOMAIN"))


# --- the two installations ----------------------------------------------------------------------

@dataclass
class Install:
    label: str                        # "before" / "after"
    what: str                         # revision or work-tree description
    venv: Path
    env: dict[str, str]               # for its processes
    note: str = ""                    # built / reused


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def export_revision(repo: Path, sha: str, dest: Path) -> None:
    """`git archive SHA | tar -x`: the tree of a commit, without touching the repository."""
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, timeout=120)
    archive.stdout.close()
    if archive.wait(60) != 0 or untar.returncode != 0:
        raise RuntimeError(f"git archive {sha} | tar -x failed")


def worktree_files(repo: Path) -> tuple[list[str], str]:
    """Tracked and untracked, not ignored, existing files of the work tree; and their hash."""
    names = [n for n in git(repo, "ls-files", "-z", "-co", "--exclude-standard").split("\0")
             if n and not n.startswith(SNAPSHOT_SKIP) and (repo / n).is_file()]
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        digest.update(name.encode() + b"\0" + (repo / name).read_bytes() + b"\0")
    return sorted(set(names)), digest.hexdigest()[:12]


def copy_files(repo: Path, names: list[str], dest: Path) -> None:
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def clean_env(pythonpath: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def ensure_venv(key: str, populate: Callable[[Path], None], python: str) -> tuple[Path, str]:
    """CACHE/KEY/venv with CACHE/KEY/src installed (not editable); reused when complete."""
    home = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = home / "venv" / ".bench-ready"
        if ready.exists():
            os.utime(home)
            return home / "venv", "reused"
        shutil.rmtree(home, ignore_errors=True)
        populate(home / "src")
        started = time.monotonic()
        subprocess.run([python, "-m", "venv", str(home / "venv")], check=True, timeout=300,
                       env=clean_env())
        pip = subprocess.run([str(home / "venv" / "bin" / "pip"), "install", "-q",
                              str(home / "src")], capture_output=True, text=True, timeout=900,
                             env=clean_env(), cwd=home)
        if pip.returncode != 0:
            raise RuntimeError(f"pip install {home / 'src'} failed:\n{pip.stderr[-3000:]}")
        for command in ("twistd", "kubernetai"):
            if not (home / "venv" / "bin" / command).exists():
                raise RuntimeError(f"{home / 'venv'} has no bin/{command}")
        ready.write_text(time.ctime() + "\n")
        return home / "venv", f"built in {time.monotonic() - started:.0f} s"


def prune_snapshots(keep: Path) -> None:
    """Old work-tree venvs (250 MB each) go, but for the newest few and ones in use."""
    homes = sorted((p for p in CACHE.glob("wt-*") if p.is_dir()), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    for home in homes[KEEP_SNAPSHOTS:]:
        if home == keep:
            continue
        with open(CACHE / f"{home.name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(home, ignore_errors=True)
        (CACHE / f"{home.name}.lock").unlink(missing_ok=True)


def prepare(label: str, revision: str, venv: str | None, repo: Path, python: str) -> Install:
    if venv:                          # an existing venv, e.g. the repository's editable .venv
        path = Path(venv).resolve()
        if not (path / "bin" / "twistd").exists():
            raise RuntimeError(f"--{label}-venv {path}: no bin/twistd")
        # An editable install's twistd plugin is found through sys.path (twisted/plugins).
        return Install(label, f"venv {path} (PYTHONPATH={repo})", path, clean_env(str(repo)),
                       "given")
    if revision == WORKTREE:
        names, digest = worktree_files(repo)
        what = f"work tree of {repo} as of now (snapshot wt-{digest})"
        path, note = ensure_venv(f"wt-{digest}", lambda d: copy_files(repo, names, d), python)
        prune_snapshots(path.parent)
    else:
        sha = git(repo, "rev-parse", "--verify", f"{revision}^{{commit}}").strip()
        what = f"{revision} = {sha[:12]}"
        path, note = ensure_venv(sha[:12], lambda d: export_revision(repo, sha, d), python)
    return Install(label, what, path, clean_env(), note)


def code_location(install: Install, cwd: Path) -> str:
    """Where that venv's python imports kubernetai from (a subprocess, as twistd would)."""
    done = subprocess.run([str(install.venv / "bin" / "python"), "-c",
                           "import kubernetai; print(kubernetai.__file__)"], env=install.env,
                          cwd=cwd, capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or f"(import failed: {done.stderr.strip()[-300:]})"


# --- the servers --------------------------------------------------------------------------------

def wait_until_answers(port: int, checks: list[Query], process: subprocess.Popen, log: Path,
                       timeout: float) -> None:
    """Until every check query gets its expected rcode and A records."""
    def problem() -> str | None:
        for q in checks:
            got = decode(ask(port, q.name, QTYPES[q.qtype], timeout=0.5))
            ips = tuple(sorted(r.split()[-1] for r in got["answer"] if " A " in r))
            if got["rcode"] != q.expect or (q.addresses and ips != q.addresses):
                return f"{q.name}: {got['rcode']} {ips}"
        return None
    wait_until(process, log, f"server on port {port}", problem, timeout)


# --- load: dnsperf, or a bounded Python generator ---------------------------------------------

@dataclass
class Run:
    qps: float
    sent: int
    completed: int
    lost: int
    avg_ms: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_s: float
    client_cpu_pct: float
    machine_cpu_pct: float
    elapsed: float

    @property
    def other_cpu_pct(self) -> float:
        """CPU used by neither this server nor the load generator (other work, the other
        server's idle ticks, the sandbox): high values mean a disturbed run."""
        server = self.server_cpu_s / self.elapsed * 100
        return max(0.0, self.machine_cpu_pct - server - self.client_cpu_pct)

    @property
    def per_cpu_s(self) -> float:
        """Answered queries per second of server CPU time."""
        return self.completed / self.server_cpu_s if self.server_cpu_s > 0 else float("nan")


def percentile_ms(sorted_seconds: list[float], fraction: float) -> float | None:
    if not sorted_seconds:
        return None
    return sorted_seconds[min(len(sorted_seconds) - 1, int(fraction * len(sorted_seconds)))] * 1000


def dnsperf_figures(output: Path | str) -> dict[str, Any]:
    """dnsperf's statistics; with -v output (a file), p50/p99 from its per-answer lines
    ("> NOERROR name A 0.000123"; "> T ..." is a timeout)."""
    latencies: list[float] = []
    if isinstance(output, Path):
        rest = []
        with output.open(errors="replace") as lines:
            for line in lines:
                if line.startswith("> "):
                    if not line.startswith("> T "):
                        latencies.append(float(line.rsplit(None, 1)[1]))
                else:
                    rest.append(line)
        text = "".join(rest)
        latencies.sort()
    else:
        text = output

    def grab(pattern: str) -> float:
        match = re.search(pattern, text)
        if not match:
            raise RuntimeError(f"dnsperf output has no {pattern!r}:\n{text[-2000:]}")
        return float(match.group(1))
    return {"sent": int(grab(r"Queries sent:\s+(\d+)")),
            "completed": int(grab(r"Queries completed:\s+(\d+)")),
            "lost": int(grab(r"Queries lost:\s+(\d+)")),
            "qps": grab(r"Queries per second:\s+([\d.]+)"),
            "avg_ms": grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
            "p50_ms": percentile_ms(latencies, 0.50),
            "p99_ms": percentile_ms(latencies, 0.99)}


def load_argv(args: argparse.Namespace, port: int, seconds: float, queries: Path,
              verbose_file: Path | None) -> list[str]:
    if args.load == "dnsperf":
        return ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                "-c", str(args.clients), "-q", str(args.outstanding), "-T", "1",
                "-t", f"{args.timeout:g}", "-l", f"{seconds:g}",
                *(["-v"] if verbose_file else []), *(["-Q", str(args.rate)] if args.rate else [])]
    return [sys.executable, str(Path(__file__).resolve()), "--loadgen", str(port),
            "--queries", str(queries), "--seconds", f"{seconds:g}", "--clients", str(args.clients),
            "--outstanding", str(args.outstanding), "--timeout", f"{args.timeout:g}",
            "--rate", str(args.rate)]


def measure(args: argparse.Namespace, port: int, pid: int, seconds: float, queries: Path,
            work: Path) -> Run:
    """One bounded load run against one server, with its CPU time and the machine's."""
    verbose_file = work / "dnsperf-verbose.txt" if args.load == "dnsperf" and \
        args.percentiles else None
    argv = load_argv(args, port, seconds, queries, verbose_file)
    cpu0, machine0 = cpu_seconds(pid), machine_cpu_seconds()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(verbose_file or os.devnull, "w") as verbose:
        done = subprocess.run(argv, stdout=verbose if verbose_file else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=seconds + 60)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu0
    machine = (machine_cpu_seconds() - machine0) / elapsed * 100
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = ((children1.ru_utime + children1.ru_stime)
              - (children0.ru_utime + children0.ru_stime)) / elapsed * 100
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n"
                           f"{(done.stdout or '')[-2000:]}{done.stderr[-2000:]}")
    if args.load == "dnsperf":
        figures = dnsperf_figures(verbose_file or done.stdout)
    else:
        figures = json.loads(done.stdout)
    return Run(figures["qps"], figures["sent"], figures["completed"], figures["lost"],
               figures["avg_ms"], figures["p50_ms"], figures["p99_ms"], cpu, client, machine,
               elapsed)


def run_loadgen(port: int, queries_file: str, seconds: float, clients: int, outstanding: int,
                timeout: float, rate: int = 0) -> int:
    """The fallback load: `clients` UDP sockets, `outstanding` queries in flight in all (and at
    most `rate` a second if set), for `seconds`; prints dnsperf's figures as JSON. One Python
    process, so it may itself be the bottleneck: its CPU use is printed with each run."""
    wires = []
    for line in Path(queries_file).read_text().splitlines():
        name, qtype = line.split()
        wires.append(encode_query(0, name, QTYPES[qtype])[2:])
    socks = []
    selector = selectors.DefaultSelector()
    for index in range(max(1, clients)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks.append(sock)
    window = max(1, outstanding // len(socks))
    pending: list[dict[int, float]] = [{} for _ in socks]
    next_id = [0] * len(socks)
    latencies: list[float] = []
    sent = lost = position = 0
    clock = time.perf_counter
    started = clock()
    deadline, next_expiry = started + seconds, started + 0.1
    while True:
        now = clock()
        if now >= deadline:
            break
        for index, sock in enumerate(socks):
            waiting = pending[index]
            while len(waiting) < window and not (rate and sent >= rate * (now - started)):
                qid = next_id[index]
                next_id[index] = (qid + 1) & 0xFFFF
                try:
                    sock.send(qid.to_bytes(2, "big") + wires[position])
                except (BlockingIOError, ConnectionRefusedError):
                    break
                waiting[qid] = clock()
                sent += 1
                position = (position + 1) % len(wires)
        for key, _ in selector.select(timeout=min(0.05, max(0.0, deadline - now))):
            waiting, sock = pending[key.data], key.fileobj
            while True:
                try:
                    data = sock.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                sent_at = waiting.pop(int.from_bytes(data[:2], "big"), None)
                if sent_at is not None:
                    latencies.append(clock() - sent_at)
        if now >= next_expiry:
            next_expiry = now + 0.1
            for waiting in pending:
                for qid in [q for q, t in waiting.items() if now - t > timeout]:
                    del waiting[qid]
                    lost += 1
    elapsed = clock() - started
    latencies.sort()
    print(json.dumps({
        "sent": sent, "completed": len(latencies), "lost": lost,
        "qps": len(latencies) / elapsed,
        "avg_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "p50_ms": percentile_ms(latencies, 0.50),
        "p99_ms": percentile_ms(latencies, 0.99)}))
    return 0


# --- the comparison ---------------------------------------------------------------------------

def same_answers(ports: dict[str, int], sample: list[Query]) -> list[str]:
    """Ask both servers each sampled query; the differences, bytes after the ID compared."""
    differences = []
    for q in sample:
        wires = {label: ask(port, q.name, QTYPES[q.qtype]) for label, port in ports.items()}
        before, after = wires.values()
        if before[2:] == after[2:]:
            continue
        b, a = decode(before), decode(after)
        parts = [f"{key}: before {b[key]} after {a[key]}" for key in b if b[key] != a[key]]
        differences.append(f"{q.name} {q.qtype}: " + ("; ".join(parts) or
                                                       "same records, different bytes"))
    return differences


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, width: int, digits: int = 3) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"


def ratio(after: float | None, before: float | None) -> str:
    return f"{after / before:.3f}" if after is not None and before else "-"


def print_run(run_no: int, label: str, r: Run) -> None:
    print(f"  {run_no:>3} {label:6s} {r.qps:9.0f} {r.lost:>6d}/{r.sent:<8d} {r.avg_ms:7.3f} "
          f"{fmt(r.p50_ms, 7)} {fmt(r.p99_ms, 7)} {r.server_cpu_s:7.2f} "
          f"{r.per_cpu_s:9.0f} {r.client_cpu_pct:6.0f} {r.other_cpu_pct:6.0f}", flush=True)


def report(results: dict[str, list[Run]]) -> None:
    before, after = results["before"], results["after"]
    print()
    print(f"medians    {'QPS':>9s} {'q/CPU-s':>9s} {'avg ms':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'CPU s':>7s} {'lost':>6s}")
    medians = {}
    for label, runs in results.items():
        m = {"qps": median_of([r.qps for r in runs]),
             "eff": median_of([r.per_cpu_s for r in runs]),
             "avg": median_of([r.avg_ms for r in runs]),
             "p50": median_of([r.p50_ms for r in runs]),
             "p99": median_of([r.p99_ms for r in runs]),
             "cpu": median_of([r.server_cpu_s for r in runs]),
             "lost": median_of([r.lost for r in runs])}
        medians[label] = m
        print(f"  {label:8s} {m['qps']:9.0f} {m['eff']:9.0f} {fmt(m['avg'], 7)} "
              f"{fmt(m['p50'], 7)} {fmt(m['p99'], 7)} {m['cpu']:7.2f} {m['lost']:6.0f}")
    b, a = medians["before"], medians["after"]
    print(f"  {'after/before':12s} QPS {ratio(a['qps'], b['qps'])}   QPS per CPU-s "
          f"{ratio(a['eff'], b['eff'])}   avg latency {ratio(a['avg'], b['avg'])}   "
          f"p50 {ratio(a['p50'], b['p50'])}   p99 {ratio(a['p99'], b['p99'])}   (medians)")
    pairs = [(x.qps / y.qps, x.per_cpu_s / y.per_cpu_s) for x, y in zip(after, before)]
    print("  per round, after/before QPS: " + " ".join(f"{p[0]:.3f}" for p in pairs)
          + f"  (median {statistics.median(p[0] for p in pairs):.3f}, "
            f"min {min(p[0] for p in pairs):.3f}, max {max(p[0] for p in pairs):.3f})")
    print("  per round, after/before QPS per CPU-s: " + " ".join(f"{p[1]:.3f}" for p in pairs)
          + f"  (median {statistics.median(p[1] for p in pairs):.3f})")


def log_problems(path: Path) -> list[str]:
    bad = re.compile(r"Traceback|Unhandled|\[ERROR\]|#error|#critical", re.IGNORECASE)
    return [line for line in path.read_text(errors="replace").splitlines() if bad.search(line)]


def compare(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    why_python = "--load python"
    if args.load == "auto":
        args.load = "dnsperf" if shutil.which("dnsperf") else "python"
        why_python = "dnsperf NOT FOUND (apt-get install -y dnsperf)"
    elif args.load == "dnsperf" and not shutil.which("dnsperf"):
        print("dnsperf is not installed (Debian/Ubuntu: apt-get install -y dnsperf)",
              file=sys.stderr)
        return 2
    mix = tuple(int(x) for x in args.mix.split(","))
    if len(mix) != 3 or sum(mix) != 100 or mix[0] <= 0:
        print("--mix: three percentages A,SRV,NXDOMAIN adding up to 100, A > 0", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kubernetai-compare-"))
    children = Processes()
    interrupt_on_sigterm()
    signal.signal(signal.SIGHUP, signal.getsignal(signal.SIGTERM))
    try:
        repo = Path(args.repo).resolve()
        installs = {}
        for label, revision, venv in (("before", args.before, None),
                                      ("after", args.after, args.after_venv)):
            t0 = time.monotonic()
            installs[label] = prepare(label, revision, venv, repo, args.python)
            print(f"{label:6s} {installs[label].what}: venv {installs[label].venv} "
                  f"({installs[label].note}; {time.monotonic() - t0:.0f} s)", flush=True)
        t_ready = time.monotonic()

        sandbox_log = work / "sandbox.log"
        sandbox = children.start(
            [str(installs["after"].venv / "bin" / "kubernetai"), "sandbox", "--synthetic",
             args.spec, "--port", "0"], stdout=subprocess.PIPE, stderr=sandbox_log.open("w"),
            env=installs["after"].env, cwd=work)
        url = read_first_line(sandbox, timeout=120)
        if not re.match(r"https?://127\.0\.0\.1:\d+$", url):
            raise RuntimeError(f"the sandbox is not on 127.0.0.1: {url}")
        print(f"sandbox (after's code) {url}: {args.spec}", flush=True)
        queries = build_queries(url, mix)
        query_file = work / "queries.txt"
        query_file.write_text("".join(f"{q.name} {q.qtype}\n" for q in queries))

        a_checks = [q for q in queries if q.qtype == "A" and q.expect == "NOERROR"]
        checks = [a_checks[0]] + [q for q in a_checks if len(q.addresses) > 1][:1] \
            + [q for q in queries if q.expect == "NXDOMAIN"][:1]
        servers: dict[str, tuple[int, subprocess.Popen, Path]] = {}
        for label, install in installs.items():
            port, home = free_port(), work / label
            home.mkdir()
            corefile = home / "Corefile"
            corefile.write_text(f"{ZONE}:{port} {{\n    bind 127.0.0.1\n"
                                f"    kubernetai {ZONE} {{\n        endpoint {url}\n    }}\n}}\n")
            log = home / "twistd.log"
            process = children.start(
                [str(install.venv / "bin" / "twistd"), "-n", "--pidfile=", "kubernetai",
                 "--corefile", str(corefile), "--dns-port", str(port)],
                stdout=log.open("w"), stderr=subprocess.STDOUT, env=install.env, cwd=home)
            servers[label] = (port, process, log)
        for label, (port, process, log) in servers.items():
            t0 = time.monotonic()
            wait_until_answers(port, checks, process, log, timeout=120)
            print(f"{label:6s} twistd pid {process.pid} on 127.0.0.1:{port}, answering after "
                  f"{time.monotonic() - t0:.1f} s; runs "
                  f"{code_location(installs[label], work / label)}", flush=True)

        step = max(1, len(queries) // args.sample)
        sample = queries[::step][:args.sample]
        differences = same_answers({k: v[0] for k, v in servers.items()}, sample)
        print(f"answers compared byte for byte (ID aside) on {len(sample)} queries: "
              f"{len(sample) - len(differences)} identical, {len(differences)} differ")
        for line in differences[:20]:
            print(f"  DIFFERS {line}")

        counts = {"A": sum(q.qtype == "A" and q.expect == "NOERROR" for q in queries),
                  "SRV": sum(q.qtype == "SRV" for q in queries),
                  "NXDOMAIN": sum(q.expect == "NXDOMAIN" for q in queries)}
        print()
        print(f"query file: {len(queries)} queries, cycled: {counts['A']} A (every service), "
              f"{counts['SRV']} SRV, {counts['NXDOMAIN']} NXDOMAIN; no EDNS")
        if args.load == "dnsperf":
            print(f"load: dnsperf -c {args.clients} -q {args.outstanding} -T 1 -t {args.timeout:g}"
                  f" -l {args.seconds:g}" + (f" -Q {args.rate}" if args.rate else "")
                  + (" -v (for p50/p99)" if args.percentiles else
                                             " (no -v: no p50/p99)"))
        else:
            print(f"load: {why_python}: this file's Python fallback generator (one process, "
                  f"{args.clients} sockets, {args.outstanding} outstanding, {args.seconds:g} s"
                  + (f", at most {args.rate} q/s" if args.rate else "") + "); "
                  "figures are not comparable with dnsperf's, and if its CPU nears 100 % it, "
                  "not the server, is the limit")
        print(f"{args.runs} round(s), before then after, after a {args.warmup:g} s warm-up each; "
              f"{os.cpu_count()} CPUs, nothing pinned")
        for _label, (port, process, _) in servers.items():
            if args.warmup > 0:
                measure(args, port, process.pid, args.warmup, query_file, work)
        print()
        print(f"  {'run':>3} {'server':6s} {'QPS':>9s} {'lost/sent':>15s} {'avg ms':>7s} "
              f"{'p50 ms':>7s} {'p99 ms':>7s} {'CPU s':>7s} {'q/CPU-s':>9s} {'load%':>6s} "
              f"{'other%':>6s}")
        results: dict[str, list[Run]] = {label: [] for label in servers}
        for run_no in range(1, args.runs + 1):
            for label, (port, process, _) in servers.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{label} server exited with {process.returncode}")
                result = measure(args, port, process.pid, args.seconds, query_file, work)
                results[label].append(result)
                print_run(run_no, label, result)
        report(results)
        print("  (CPU s: the server's user+system seconds during the run; q/CPU-s: answered "
              "queries per server CPU-second; load%: the load generator's CPU; other%: the "
              "rest of the machine's busy CPU (other work disturbing the run); % of one "
              "core)")
        status = 1 if differences else 0
        for label, (_port, process, log) in servers.items():
            problems = log_problems(log)
            alive = "running" if process.poll() is None else f"EXITED {process.returncode}"
            rss = proc_status(process.pid).get("VmRSS", 0.0)
            print(f"{label} server: {alive}, RSS {rss:.0f} MiB, "
                  f"{len(problems)} error line(s) in its log"
                  + "".join(f"\n  {line[:200]}" for line in problems[:5]))
            if problems or process.poll() is not None:
                status = 1
        t_end = time.monotonic()
        print(f"took {t_end - t_start:.0f} s: {t_ready - t_start:.0f} s preparing venvs, "
              f"{t_end - t_ready:.0f} s measuring")
        if args.keep:
            print(f"logs and query file kept in {work}")
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        print(f"compare_revisions: {error}", file=sys.stderr)
        if isinstance(error, subprocess.CalledProcessError) and error.stderr:
            print(error.stderr, file=sys.stderr)
        args.keep = True
        print(f"logs kept in {work}", file=sys.stderr)
        return 2
    finally:
        children.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="767f0e6", help="git revision (767f0e6)")
    parser.add_argument("--after", default=WORKTREE,
                        help=f"git revision, or {WORKTREE} for the work tree as it is now "
                             f"(the default)")
    parser.add_argument("--after-venv", metavar="DIR",
                        help="run 'after' from this existing venv (e.g. .venv, editable) "
                             "instead of building one; --after is then ignored")
    parser.add_argument("--repo", default=str(REPO), help=f"the git repository ({REPO})")
    parser.add_argument("--python", default=sys.executable, help="makes the venvs (this one)")
    parser.add_argument("--runs", type=int, default=5, help="rounds, medians (5)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up each (2)")
    parser.add_argument("--load", choices=("auto", "dnsperf", "python"), default="auto",
                        help="load generator: dnsperf if installed, else Python (auto)")
    parser.add_argument("--percentiles", action="store_true",
                        help="dnsperf -v for p50/p99 (costs the client CPU; off by default)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c / sockets (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--timeout", type=float, default=5, help="dnsperf -t (5 s)")
    parser.add_argument("--rate", type=int, default=0, metavar="QPS",
                        help="offer at most QPS a second (dnsperf -Q): both servers then do "
                             "the same work and q/CPU-s compares their cost per query (off)")
    parser.add_argument("--mix", default="80,10,10", help="percent A,SRV,NXDOMAIN (80,10,10)")
    parser.add_argument("--spec", default=SPEC, help="synthetic cluster for the sandbox")
    parser.add_argument("--sample", type=int, default=200,
                        help="queries whose answers must be identical (200)")
    parser.add_argument("--keep", action="store_true", help="keep logs and the query file")
    parser.add_argument("--loadgen", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--queries", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen is not None:
        return run_loadgen(args.loadgen, args.queries, args.seconds, args.clients,
                           args.outstanding, args.timeout, args.rate)
    if args.seconds <= 0 or args.runs < 1 or args.sample < 1 or args.rate < 0:
        parser.error("--seconds must be positive, --runs and --sample at least 1, --rate >= 0")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
