#!/usr/bin/env python3
"""What `prometheus` costs: UDP queries per second with it on and off, same run.

Starts one simulated API server (a synthetic cluster of 1,000 services) and two DNS
servers, each ``twistd -n kubernetai`` in its own process, on Corefiles that differ only
in the ``prometheus 127.0.0.1:PORT`` line:

* ``--block kubernetai`` (default): ``kubernetai cluster.local`` against the sandbox; the
  query file is the service names (A, SRV, NXDOMAIN as ``dnsperf_compare.py``), answered
  from the answer cache after their first query, which is the path a busy server takes;
* ``--block whoami``: ``whoami`` only (never cached: every query runs the pipeline).

``--errors`` adds ``errors`` to both (then the cache is not the first step, on or off).
Then dnsperf runs against each in turn (``--runs`` times, alternating, after a warm-up),
and the script prints each run's QPS and server CPU, the medians, and two ratios on/off:
of QPS, and of queries per second of the server's CPU time (which shows what counting
costs when the server is not the bottleneck). The servers are pinned to the last CPU and
dnsperf to the others (``--no-pin`` to let the scheduler place them), so a loaded server
takes a whole CPU and QPS measures it. On a shared machine other work moves single runs
by several per cent: compare medians of several runs.
At the end it reads `/metrics` of the server with `prometheus` and checks that
``coredns_dns_requests_total`` counted every query dnsperf got an answer to, and not many
more than it sent. Every process it started is stopped on exit; exit status 1 if a server
died, logged an error, or the count is wrong.

Needs dnsperf (Debian/Ubuntu: ``apt-get install -y dnsperf``); exits 2 without it.

    python bench/metrics_cost.py [--block kubernetai|whoami] [--errors] [--seconds 10]
                                 [--runs 3] [--clients 4] [--outstanding 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    Result,
    have_dnsperf,
    interrupt_on_sigterm,
    log_problems,
    median_result,
    read_first_line,
    repo_env,
    run_dnsperf,
    twistd,
)
from dnsperf_compare import (  # noqa: E402 - beside this script
    SPEC,
    ZONE,
    Query,
    build_queries,
    wait_until_answers,
)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kubernetai.sandbox.ports import free_port  # noqa: E402

WHOAMI_ZONE = "example.org"


def distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def corefile(port: int, block: str, url: str, metrics_port: int | None,
             errors: bool) -> str:
    zone = ZONE if block == "kubernetai" else WHOAMI_ZONE
    lines = [f"{zone}:{port} {{", "    bind 127.0.0.1"]
    if errors:
        lines.append("    errors")
    if metrics_port is not None:
        lines.append(f"    prometheus 127.0.0.1:{metrics_port}")
    if block == "kubernetai":
        lines += [f"    kubernetai {ZONE} {{", f"        endpoint {url}", "    }"]
    else:
        lines.append("    whoami")
    return "\n".join(lines + ["}", ""])


def per_cpu(result: Result) -> float:
    """Queries answered per second of the server's CPU time."""
    return result.qps / max(result.server_cpu / 100, 1e-9)


def requests_counted(metrics_port: int) -> int:
    """The sum of ``coredns_dns_requests_total`` over every label set."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "coredns_dns_requests":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def measure(args: argparse.Namespace) -> int:
    if not have_dnsperf():
        return 2
    work = Path(tempfile.mkdtemp(prefix="kubernetai-metrics-cost-"))
    children = Processes()
    interrupt_on_sigterm()
    env = repo_env()
    deadline = time.monotonic() + args.budget
    try:
        url = ""
        if args.block == "kubernetai":
            queries = build_queries(args.spec, (80, 10, 10))
            sandbox = children.start(
                [sys.executable, "-m", "kubernetai", "sandbox", "--synthetic", args.spec,
                 "--port", "0"],
                stdout=subprocess.PIPE, stderr=(work / "sandbox.log").open("w"), env=env,
                cwd=work)
            url = read_first_line(sandbox, timeout=120)
            checks = [next(q for q in queries if q.expect == "NOERROR" and q.qtype == "A")]
        else:
            queries = [Query(f"q{i}.{WHOAMI_ZONE}", "A", "NOERROR") for i in range(100)]
            checks = queries[:1]
        data = work / "queries.txt"
        data.write_text("".join(f"{q.name} {q.qtype}\n" for q in queries))

        servers: dict[str, tuple[int, subprocess.Popen, Path, int | None]] = {}
        # Every port picked before any server starts: a server binds its DNS port only
        # once its stanza has synced, so a port picked later could be the same one.
        ports = distinct_ports(3)
        for label, on in (("prometheus off", False), ("prometheus on", True)):
            port = ports.pop()
            metrics_port = ports.pop() if on else None
            path = work / f"Corefile.{'on' if on else 'off'}"
            path.write_text(corefile(port, args.block, url, metrics_port, args.errors))
            log = work / f"{'on' if on else 'off'}.log"
            process = children.start(
                twistd("kubernetai", "--corefile", str(path)),
                stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)
            servers[label] = (port, process, log, metrics_port)
        for port, process, log, _ in servers.values():
            wait_until_answers(port, checks, process, log, timeout=120)
        pinned = args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
        if pinned:
            # The servers share the last CPU (one is loaded at a time), dnsperf (a child of
            # this process) gets the others: the scheduler cannot mix them up.
            last = (os.cpu_count() or 2) - 1
            for _, process, _, _ in servers.values():
                os.sched_setaffinity(process.pid, {last})
            os.sched_setaffinity(0, set(range(last)))
        print(f"{args.block} block{' with errors' if args.errors else ''}: "
              + ", ".join(f"{label} pid {p.pid} on 127.0.0.1:{port}"
                          for label, (port, p, _, _) in servers.items()))
        print("Corefile with prometheus:\n  "
              + (work / "Corefile.on").read_text().strip().replace("\n", "\n  "))

        dnsperf_args = ["-s", "127.0.0.1", "-d", str(data), "-c", str(args.clients),
                        "-q", str(args.outstanding), "-T", "1", "-t", "5"]
        print(f"dnsperf {' '.join(dnsperf_args)} -p PORT -l {args.seconds:g}  x {args.runs} "
              f"run(s) per server, alternating; {len(queries)} names, {os.cpu_count()} CPUs"
              + ("; servers pinned to the last CPU, dnsperf to the others" if pinned else ""))
        sent_on = completed_on = 0
        for port, process, _, metrics_port in servers.values():
            result = run_dnsperf(dnsperf_args, port, process.pid, args.warmup)
            if metrics_port is not None:
                sent_on, completed_on = sent_on + result.sent, completed_on + result.completed
        results: dict[str, list[Result]] = {label: [] for label in servers}
        for run in range(args.runs):
            order = list(servers.items())
            if run % 2:
                order.reverse()   # neither always goes first
            for label, (port, process, _, metrics_port) in order:
                if time.monotonic() + args.seconds + 5 > deadline:
                    print(f"  stopping: the {args.budget:g} s budget is spent")
                    break
                result = run_dnsperf(dnsperf_args, port, process.pid, args.seconds)
                results[label].append(result)
                if metrics_port is not None:
                    sent_on += result.sent
                    completed_on += result.completed
                print(f"  run {run + 1} {label:15s} {result.qps:9.0f} q/s  "
                      f"{result.latency_ms:7.3f} ms  lost {result.lost}/{result.sent}  "
                      f"server CPU {result.server_cpu:3.0f} % ({per_cpu(result):6.0f} q per "
                      f"CPU-s)  machine {result.machine_cpu:3.0f} % of "
                      f"{os.cpu_count() * 100} %")
        if not all(results.values()):
            print("no complete run", file=sys.stderr)
            return 1
        medians = {label: median_result(rs) for label, rs in results.items()}
        efficiency = {label: statistics.median(map(per_cpu, rs))
                      for label, rs in results.items()}
        print()
        for label, m in medians.items():
            print(f"{label:15s} median {m.qps:9.0f} q/s  {m.latency_ms:7.3f} ms  server CPU "
                  f"{m.server_cpu:3.0f} %  {efficiency[label]:6.0f} q per server CPU-second")
        on, off = medians["prometheus on"], medians["prometheus off"]
        ratio = on.qps / off.qps
        pairs = [a.qps / b.qps for a, b in zip(results["prometheus on"],
                                               results["prometheus off"])]
        print(f"QPS ratio on/off: {ratio:.3f} (loss {100 * (1 - ratio):+.1f} %); per run "
              + ", ".join(f"{p:.3f}" for p in pairs))
        cpu_ratio = efficiency["prometheus on"] / efficiency["prometheus off"]
        cpu_pairs = [per_cpu(a) / per_cpu(b) for a, b in zip(results["prometheus on"],
                                                             results["prometheus off"])]
        print(f"queries per server CPU-second, on/off: {cpu_ratio:.3f} (cost "
              f"{100 * (1 - cpu_ratio):+.1f} %): the figure to trust when the server is not "
              "the bottleneck (server CPU under 100 %)")
        print(f"medians of the per-run ratios (each run beside its neighbour, which drift on "
              f"a shared machine affects least): QPS {statistics.median(pairs):.3f}, "
              f"per CPU-second {statistics.median(cpu_pairs):.3f}")

        port, process, log, metrics_port = servers["prometheus on"]
        assert metrics_port is not None
        counted = requests_counted(metrics_port)
        # dnsperf's answered queries were all counted; lost ones may have been answered
        # late; the start-up checks asked a few more.
        counted_right = completed_on <= counted <= sent_on + 1000
        print(f"/metrics of the server with prometheus: coredns_dns_requests_total = "
              f"{counted}; dnsperf sent it {sent_on} queries and got {completed_on} answers: "
              + ("consistent" if counted_right else "!! WRONG"))
        bad = 0
        for label, (_, process, log, _) in servers.items():
            problems = log_problems(log)
            if process.poll() is not None or problems:
                bad += 1
                print(f"!! {label}: exit {process.poll()}, {len(problems)} error line(s)"
                      + "".join(f"\n  {line[:200]}" for line in problems[:5]))
        return 1 if bad or not counted_right else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if args.keep:
            print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", choices=("kubernetai", "whoami"), default="kubernetai",
                        help="what the block answers with (kubernetai)")
    parser.add_argument("--errors", action="store_true", help="add `errors` to both")
    parser.add_argument("--seconds", type=float, default=10, help="dnsperf -l per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server; medians (3)")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of unreported load on each server first (2)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c (4)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--spec", default=SPEC, help=f"synthetic cluster ({SPEC})")
    parser.add_argument("--budget", type=float, default=600,
                        help="stop starting runs after this many seconds (600)")
    parser.add_argument("--keep", action="store_true", help="keep the Corefiles and logs")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the servers and dnsperf to separate CPUs")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be positive and --runs at least 1")
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
