"""QPS with `--workers 1` and `--workers 2` on one simulated cluster, and the API load of each.

    python bench/workers_qps.py [--seconds 10] [--runs 1] [--clients 8] [--outstanding 100]

Starts the simulated API server with dnsperf_compare.py's synthetic cluster (1,000
services), then for each worker count: `twistd kubernetai --workers N` on a free loopback
port, waits until it answers (and every worker listens), runs dnsperf on the cached mix
(dnsperf_compare.py's query file) with ``-c`` clients, so that queries come from several
source ports (SO_REUSEPORT spreads them over the processes by source address and port),
and counts the API requests the server made (the sandbox's ``/_sandbox/requests``): one
set of informers whatever N. QPS depends on the cores free: dnsperf needs one too, so on a
2-core machine two workers share one core with dnsperf and the figures say little beyond
"the feed works and costs nothing at rest".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    Result,
    have_dnsperf,
    in_workspace,
    median_result,
    read_first_line,
    repo_env,
    run_dnsperf,
    twistd,
)
from dnsperf_compare import SPEC, ZONE, build_queries, wait_until_answers  # noqa: E402

from kubernetai.sandbox.ports import free_port  # noqa: E402


def api_requests(url: str) -> Counter[tuple[str, str]]:
    """The sandbox's request counts by (verb, resource)."""
    with urllib.request.urlopen(f"{url}/_sandbox/requests", timeout=10) as answer:
        data = json.load(answer)
    return Counter({(item["verb"], item["resource"]): item["count"]
                    for item in data["requests"]})


def listening(log: Path) -> int:
    return log.read_text(errors="replace").count("listening on UDP")


def measure(args: argparse.Namespace, work: Path, children: Processes, url: str,
            workers: int, data: Path, checks: list) -> tuple[Result, Counter[tuple[str, str]]]:
    corefile = work / "Corefile"
    port = free_port()
    log = work / f"workers-{workers}.log"
    before = api_requests(url)
    process = children.start(
        twistd("kubernetai", "--corefile", str(corefile), "--dns-port", str(port),
               "--workers", str(workers)),
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=repo_env(), cwd=work)
    try:
        wait_until_answers(port, checks, process, log, timeout=120)
        deadline = time.monotonic() + 60
        while listening(log) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every worker listens; log {log}")
            time.sleep(0.2)
        time.sleep(1.0)  # the worker's first answers (its cache) settle
        udp_args = ["-s", "127.0.0.1", "-d", str(data), "-t", "2",
                    "-c", str(args.clients), "-q", str(args.outstanding)]
        run_dnsperf(udp_args, port, process.pid, 2.0)  # warm-up: every name cached
        results = [run_dnsperf(udp_args, port, process.pid, args.seconds)
                   for _ in range(args.runs)]
        requests = api_requests(url) - before
    finally:
        children.stop(process)
    return median_result(results), requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="dnsperf -l per run (10)")
    parser.add_argument("--runs", type=int, default=1, help="runs per worker count (1)")
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c (8)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (100)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (1,2)")
    args = parser.parse_args(argv)
    if not have_dnsperf():
        return 2
    counts = [int(n) for n in args.workers.split(",")]

    def session(work: Path, children: Processes) -> int:
        queries = build_queries(SPEC, (80, 10, 10))
        data = work / "queries.txt"
        data.write_text("".join(f"{q.name} {q.qtype}\n" for q in queries))
        sandbox = children.start(
            [sys.executable, "-m", "kubernetai", "sandbox", "--synthetic", SPEC, "--port", "0"],
            stdout=subprocess.PIPE, stderr=(work / "sandbox.log").open("w"), env=repo_env(),
            cwd=work)
        url = read_first_line(sandbox, timeout=120)
        (work / "Corefile").write_text(f"{ZONE} {{\n    bind 127.0.0.1\n    kubernetai {ZONE} "
                                       f"{{\n        endpoint {url}\n    }}\n}}\n")
        a_checks = [q for q in queries if q.qtype == "A" and q.expect == "NOERROR"]
        checks = [a_checks[0], a_checks[-1]]
        print(f"sandbox {url} ({SPEC}); {len(queries)} queries (80/10/10 A/SRV/NXDOMAIN); "
              f"dnsperf -c {args.clients} -q {args.outstanding} -l {args.seconds:g} "
              f"x{args.runs}; {os.cpu_count()} CPUs, shared with dnsperf and anything else "
              "running")
        rows = []
        for workers in counts:
            result, requests = measure(args, work, children, url, workers, data, checks)
            rows.append((workers, result, requests))
        print()
        print(f"{'workers':>7} {'QPS':>9} {'p99 ms':>7} {'lost':>6} {'server CPU %':>12} "
              f"{'QPS/CPU-s':>9}  API requests (list/watch per resource)")
        for workers, result, requests in rows:
            api = ", ".join(f"{verb} {resource} {n}" for (verb, resource), n
                            in sorted(requests.items()))
            print(f"{workers:>7} {result.qps:>9.0f} {result.p99_ms:>7.2f} {result.lost:>6} "
                  f"{result.server_cpu:>12.0f} {result.per_cpu_s:>9.0f}  {api}")
        return 0
    return in_workspace(session, "workers-qps-", keep=lambda: False)


if __name__ == "__main__":
    sys.exit(main())
