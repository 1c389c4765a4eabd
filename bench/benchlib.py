"""What the bench scripts share: their child processes, /proc figures, dnsperf, and a stock
Twisted Names server to compare with.

One copy, so that every script measures CPU, memory and QPS the same way and stops what it
started the same way. Scripts import it from beside themselves (``sys.path`` holds
``bench/`` when one is run as ``python bench/X.py``; the others insert it).
"""

from __future__ import annotations

import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

REPO = Path(__file__).resolve().parent.parent


# --- environment ---------------------------------------------------------------------------

def repo_env() -> dict[str, str]:
    """This environment, with the repository first on PYTHONPATH: twistd finds the
    ``kubernetai`` plugin in <repo>/twisted/plugins through sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def twistd(*args: str) -> list[str]:
    """argv of ``twistd -n --pidfile= ARGS`` run by this interpreter (no twistd script
    needed on PATH)."""
    return [sys.executable, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "-n", "--pidfile=", *args]


def interrupt_on_sigterm() -> None:
    """SIGTERM ends the run as Ctrl-C does, so the ``finally`` that stops children runs."""
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)


def have_dnsperf() -> bool:
    """Whether dnsperf is on PATH; says how to install it when not."""
    if shutil.which("dnsperf") is not None:
        return True
    print("dnsperf is not installed. On Debian/Ubuntu: apt-get install -y dnsperf",
          file=sys.stderr)
    return False


# --- child processes -----------------------------------------------------------------------

class Processes:
    """Children started by a script; stop_all() stops them, newest first, each to its end
    (so DNS servers go before the API server they read)."""

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        self.children.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(self.grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process in self.children:
            self.children.remove(process)

    def stop_all(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C must not cut it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while self.children:
            self.stop(self.children[-1])


def in_workspace(run: Callable[[Path, Processes], int], prefix: str,
                 keep: Callable[[], bool], grace: float = 10.0) -> int:
    """``run(work, children)`` with a fresh work folder and process list; SIGTERM ends it as
    Ctrl-C does (exit status 130). However it ends, every child is stopped, newest first,
    and the folder removed unless ``keep()`` (asked then: a run may decide to keep it)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    children = Processes(grace)
    interrupt_on_sigterm()
    try:
        return run(work, children)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if not keep():
            shutil.rmtree(work, ignore_errors=True)


def print_machine_footer() -> None:
    """The line that ends a bench's figures: they move with what else runs on the machine."""
    print(f"\n(figures from a shared {os.cpu_count()}-CPU machine; load average now "
          f"{os.getloadavg()[0]:.1f})")


# --- servers under test --------------------------------------------------------------------

@dataclass
class Server:
    """A DNS server under test: what the tables call it, its loopback port, its process
    and its log."""
    label: str
    port: int
    process: subprocess.Popen
    log: Path


def log_problems(path: Path) -> list[str]:
    """The lines of a server's log that say something went wrong."""
    lines = path.read_text(errors="replace").splitlines()
    bad = re.compile(r"Traceback|Unhandled|\[ERROR\]|#error|#critical|Error:|Exception",
                     re.IGNORECASE)
    return [line for line in lines if bad.search(line)]


def wait_until(process: subprocess.Popen, log: Path, label: str,
               problem: Callable[[], str | None], timeout: float) -> None:
    """Until ``problem()`` finds nothing wrong (None): the server answers as it should.
    Asked every 0.2 s; a DNS timeout or socket error counts as not yet. RuntimeError with
    the tail of the server's log if it exits or ``timeout`` runs out first."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with {process.returncode}; log {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            found = problem()
            if found is None:
                return
            last = found
        except (TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{label} not ready after {timeout:.0f} s ({last}); log {log}:\n"
                       + log.read_text(errors="replace")[-3000:])


def read_first_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line a child prints on its stdout (a PIPE): the sandbox prints its URL, a
    helper server its port."""
    deadline, buffer = time.monotonic() + timeout, b""
    fd = process.stdout.fileno()
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError(f"no URL from the sandbox (exit code {process.poll()})")
        if select.select([fd], [], [], remaining)[0]:
            buffer += os.read(fd, 4096)
    return buffer.split(b"\n", 1)[0].decode().strip()


# --- /proc ---------------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) in MiB; empty once the process is gone."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants alive now (NSD serves from a child)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0.0
    for member in tree:
        try:
            total += cpu_seconds(member)
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (all CPUs), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- the query file ------------------------------------------------------------------------

class Named(Protocol):
    name: str


Q = TypeVar("Q", bound=Named)


def mix_queries(a_queries: list[Q], srv_queries: list[Q], namespaces: list[str], zone: str,
                mix: tuple[int, int, int], nxdomain: Callable[[str], Q]) -> list[Q]:
    """Every A query, plus SRV queries and ``nxdomain(name)`` ones for names that do not
    exist, in the proportions of ``mix`` (percent A, SRV, NXDOMAIN; A > 0, so every A name
    is in), shuffled deterministically: the same file every run, about the same mix in
    every stretch. One copy, so dnsperf_compare.py and compare_revisions.py send the same
    file."""
    a_pct, srv_pct, nx_pct = mix
    total = round(len(a_queries) * 100 / a_pct)
    n_srv, n_nx = total * srv_pct // 100, total * nx_pct // 100
    nx = [nxdomain(f"nope-{i:04d}.{namespaces[i % len(namespaces)]}.svc.{zone}")
          for i in range(n_nx)]
    step = max(1, len(srv_queries) // max(n_srv, 1))
    srv = (srv_queries[::step] + srv_queries)[:n_srv]
    chosen = a_queries + srv + nx
    chosen.sort(key=lambda q: zlib.crc32(q.name.encode()))
    return chosen


# --- dnsperf -------------------------------------------------------------------------------

def parse_dnsperf(text: str) -> dict[str, Any]:
    """dnsperf's statistics block: counts, QPS, average and maximum latency (seconds),
    response codes."""
    def grab(pattern: str, cast: Any = float) -> Any:
        match = re.search(pattern, text)
        if not match:
            raise RuntimeError(f"dnsperf output has no {pattern!r}:\n{text[-3000:]}")
        return cast(match.group(1))
    codes = re.search(r"Response codes:\s+(.*)", text)
    return {
        "sent": grab(r"Queries sent:\s+(\d+)", int),
        "completed": grab(r"Queries completed:\s+(\d+)", int),
        "lost": grab(r"Queries lost:\s+(\d+)", int),
        "qps": grab(r"Queries per second:\s+([\d.]+)"),
        "latency": grab(r"Average Latency \(s\):\s+([\d.]+)"),
        "latency_max": grab(r"Average Latency \(s\):.*max ([\d.]+)"),
        "codes": codes.group(1).strip() if codes else "",
    }


@dataclass
class Result:
    qps: float
    latency_ms: float
    latency_max_ms: float
    p99_ms: float
    sent: int
    completed: int
    lost: int
    codes: str
    server_cpu: float                 # % of one core while dnsperf ran
    server_cpu_s: float               # CPU-seconds the server (and its children) used
    dnsperf_cpu: float
    machine_cpu: float                # % of one core, all processes on the machine

    @property
    def per_cpu_s(self) -> float:
        """Queries answered per server CPU-second."""
        return self.completed / self.server_cpu_s if self.server_cpu_s > 0 else 0.0


def split_verbose(path: Path) -> tuple[str, float]:
    """dnsperf -v output: (the report without the per-query lines, p99 latency in ms)."""
    latencies = array("d")
    report = []
    with path.open(errors="replace") as lines:
        for line in lines:
            if line.startswith("> "):
                try:
                    latencies.append(float(line.rsplit(None, 1)[1]))
                except (IndexError, ValueError):
                    pass
            else:
                report.append(line)
    if not latencies:
        return "".join(report), 0.0
    ordered = sorted(latencies)
    return "".join(report), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def run_dnsperf(dnsperf_args: list[str], port: int, pid: int, seconds: float) -> Result:
    """One ``dnsperf -v`` run against 127.0.0.1:port, with the CPU of the server ``pid``
    (and its children), of dnsperf and of the machine while it ran."""
    argv = ["dnsperf", "-p", str(port), *dnsperf_args, "-l", f"{seconds:g}", "-v"]
    with tempfile.TemporaryFile("w+") as errors, tempfile.NamedTemporaryFile(
            "w+", prefix="dnsperf-", suffix=".out") as out:
        cpu_before, machine_before = tree_cpu_seconds(pid), machine_cpu_seconds()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(argv, stdout=out, stderr=errors, timeout=seconds + 60)
        elapsed = time.monotonic() - started
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu_s = tree_cpu_seconds(pid) - cpu_before
        machine_cpu = (machine_cpu_seconds() - machine_before) / elapsed * 100
        out.flush()
        text, p99 = split_verbose(Path(out.name))
        errors.seek(0)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{text[-3000:]}"
                               f"{errors.read()[-3000:]}")
    dnsperf_cpu = ((children_after.ru_utime + children_after.ru_stime)
                   - (children_before.ru_utime + children_before.ru_stime)) / elapsed * 100
    figures = parse_dnsperf(text)
    return Result(figures["qps"], figures["latency"] * 1000, figures["latency_max"] * 1000,
                  p99, figures["sent"], figures["completed"], figures["lost"], figures["codes"],
                  server_cpu_s / elapsed * 100, server_cpu_s, dnsperf_cpu, machine_cpu)


def median_result(results: list[Result]) -> Result:
    """Medians of each figure (the run with the median QPS for the text fields)."""
    by_qps = sorted(results, key=lambda r: r.qps)
    middle = by_qps[(len(by_qps) - 1) // 2]

    def med(attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results)
    return Result(med("qps"), med("latency_ms"), med("latency_max_ms"), med("p99_ms"),
                  middle.sent, middle.completed, int(med("lost")), middle.codes,
                  med("server_cpu"), middle.server_cpu_s, med("dnsperf_cpu"),
                  med("machine_cpu"))


# --- a stock Twisted Names server, to compare with -----------------------------------------

def serve_stock(port: int, table: dict[tuple[bytes, int], Any], banner: str,
                tcp: bool = False, log: bool = False) -> int:
    """Answer from ``table`` ((lower-case name, type) -> (answers, authority, additional))
    with stock twisted.names, nothing tuned: ``DNSServerFactory`` over a
    ``common.ResolverBase``, on UDP (and TCP) 127.0.0.1:port, until stopped. A name not in
    the table raises ``AuthoritativeDomainError``, as a stock authority does. Prints
    ``banner`` once listening; ``log`` sends Twisted's log to stderr."""
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.names import common, dns, server

    class MemoryAuthority(common.ResolverBase):
        def __init__(self, table: dict) -> None:
            common.ResolverBase.__init__(self)
            self.table = table

        def _lookup(self, name, cls, type, timeout=None):
            entry = self.table.get((name.lower(), type))
            if entry is None:
                return defer.fail(dns.AuthoritativeDomainError(name))
            return defer.succeed(entry)

    if log:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    factory = server.DNSServerFactory(authorities=[MemoryAuthority(table)])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    if tcp:
        reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(banner, flush=True)
    reactor.run()
    return 0
