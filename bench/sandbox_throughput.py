#!/usr/bin/env python3
"""List and watch throughput of the simulated API server at full scale.

Starts `kubernetai sandbox --synthetic scale` (10,000 services, 10,000 EndpointSlices with
50,000 endpoints, 100,000 pods) in its own process, then measures from this one:

* list: paginated lists (limit=500, as client-go and our informer page) of each resource,
  read raw and parsed with json.loads, in objects per second;
* watch: W concurrent watchers on pods while the server modifies N pods in one burst,
  in events per second delivered (per watcher and in total);
* the server's resident memory after loading and its peak (VmHWM).

Prints the figures; asserts nothing. Usage: python bench/sandbox_throughput.py [--spec S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import urllib3

PATHS = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "pods": "/api/v1/pods",
}


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def list_all(http: urllib3.PoolManager, url: str, path: str) -> tuple[int, str]:
    count, token, rv = 0, "", ""
    while True:
        query = "?limit=500" + (f"&continue={token}" if token else "")
        response = http.request("GET", url + path + query)
        body = json.loads(response.data)
        count += len(body["items"])
        rv = body["metadata"]["resourceVersion"]
        token = body["metadata"].get("continue", "")
        if not token:
            return count, rv


def watcher(url: str, rv: str, expected: int, done: list[float], started: threading.Event) -> None:
    http = urllib3.PoolManager()
    response = http.request("GET", f"{url}/api/v1/pods?watch=1&resourceVersion={rv}",
                            preload_content=False, timeout=urllib3.Timeout(read=120))
    started.set()
    seen, buffer = 0, b""
    for chunk in response.stream(65536):
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        for line in lines:
            if json.loads(line)["type"] == "MODIFIED":
                seen += 1
        if seen >= expected:
            done.append(time.perf_counter())
            break
    response.release_conn()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="scale", help="synthetic spec (default: scale)")
    parser.add_argument("--watchers", type=int, default=4)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()

    started_at = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "kubernetai", "sandbox", "--synthetic",
                               args.spec, "--history", str(args.events + 1000)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        load_seconds = time.perf_counter() - started_at
        after_load = memory_mb(server.pid)
        print(f"sandbox {url}: loaded spec {args.spec!r} in {load_seconds:.1f} s, "
              f"RSS {after_load['VmRSS']:.0f} MB")
        http = urllib3.PoolManager(maxsize=4)
        rv = ""
        for name, path in PATHS.items():
            begin = time.perf_counter()
            count, rv = list_all(http, url, path)
            seconds = time.perf_counter() - begin
            print(f"list {name:15s} {count:7d} objects in {seconds:6.2f} s = "
                  f"{count / seconds:9.0f} objects/s (paginated, limit=500, json.loads)")

        done: list[float] = []
        threads = []
        for _ in range(args.watchers):
            ready = threading.Event()
            thread = threading.Thread(target=watcher, args=(url, rv, args.events, done, ready),
                                      daemon=True)
            thread.start()
            ready.wait(30)
            threads.append(thread)
        begin = time.perf_counter()
        http.request("POST", url + "/_sandbox/touch",
                     body=json.dumps({"kind": "pods", "count": args.events}),
                     headers={"content-type": "application/json"}, timeout=300)
        for thread in threads:
            thread.join(300)
        if len(done) != args.watchers:
            print(f"watch: only {len(done)} of {args.watchers} watchers saw every event")
            return 1
        seconds = max(done) - begin
        total = args.events * args.watchers
        print(f"watch {args.watchers} watchers x {args.events} MODIFIED events in "
              f"{seconds:.2f} s = {args.events / seconds:.0f} events/s per watcher, "
              f"{total / seconds:.0f} events/s delivered in total (writes included)")
        peak = memory_mb(server.pid)
        print(f"server memory: RSS {peak['VmRSS']:.0f} MB, peak {peak['VmHWM']:.0f} MB")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
