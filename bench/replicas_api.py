#!/usr/bin/env python3
"""What each DNS server replica costs the API server: requests, watch streams and bytes.

Operators scale cluster DNS by replicas, and every replica opens its own list+watch of
each resource its stanza needs; this measures how much that is, for the README's sizing
table. Starts, each in its own process, on loopback and free ports only:

* the simulated API server, ``kubernetai sandbox --synthetic scale`` (10,000 Services,
  10,000 EndpointSlices / 50,000 endpoints, 100,000 Pods; ``--spec`` for another size),
  as bench/scale.py starts it;
* ``--replicas`` R (default 2) servers, ``twistd -n --pidfile= kubernetai``, each on its
  own free port with a one-stanza Corefile (``kubernetai cluster.local`` with ``pods
  verified``, ``--pods insecure`` for the other mode) reaching the sandbox through a
  kubeconfig with a bearer token of its own (``replica-N``): the sandbox requires no auth
  but records the token presented, so it meters each replica's requests, bytes and open
  watch streams apart;

and measures, from the sandbox's meters (``GET /_sandbox/requests``):

* **start-up**, one replica after the other (each synced before the next starts, so the
  deltas are that replica's): seconds until every checked name answers (bench/scale.py's
  checks: first, middle, last and a headless Service, and the last Pod with ``pods
  verified``), the requests it made by verb and resource, the watch streams it holds,
  the response body bytes it was sent;
* **steady state** for ``--seconds`` (60) while the bench makes ``--rate`` (100) changes a
  second (Services created, and deleted once 200 exist, as bench/scale.py's churn does):
  per replica and per minute, the requests, the watch reconnects (watch requests), and the
  bytes (events and bookmarks); also the totals over all replicas divided by R.

Bytes are JSON response bodies (HTTP headers and chunk framing not counted). Prints
figures, asserts nothing. Bounded: a sync gets ``--timeout`` (300 s), the churn lasts
``--seconds``.

    python bench/replicas_api.py [--replicas 2] [--pods verified|insecure] [--seconds 60]
                                 [--rate 100] [--spec scale]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402 - beside this script
    Processes,
    in_workspace,
    log_problems,
    print_machine_footer,
    proc_status,
    repo_env,
    twistd,
)
from scale import (  # noqa: E402
    CHURN_NAMESPACE,
    ZONE,
    Api,
    Changer,
    ServiceIPs,
    answers,
    checks,
    start_sandbox,
)

from kubernetai.sandbox.ports import free_port  # noqa: E402
from kubernetai.sandbox.tls import write_kubeconfig  # noqa: E402

COREFILE = """\
{zone}:{dns} {{
    bind 127.0.0.1
    kubernetai {zone} {{
        kubeconfig {kubeconfig}
        pods {pods}
    }}
}}
"""

# Verbs a replica makes (the bench's own creates and deletes are left out of the totals).
READ_VERBS = ("list", "watch", "get")


# --- the sandbox's meters ------------------------------------------------------------------

@dataclass
class Meters:
    """One reading of ``GET /_sandbox/requests``."""

    requests: dict[tuple[str, str], int]
    bytes: dict[tuple[str, str], int]
    watches_open: int
    watches_opened: int
    tokens: dict[str, dict[str, int]]
    at: float

    @classmethod
    def read(cls, api: Api) -> Meters:
        raw = api.request("GET", "/_sandbox/requests")
        return cls({(r["verb"], r["resource"]): r["count"] for r in raw["requests"]},
                   {(r["verb"], r["resource"]): r["bytes"] for r in raw["bytes"]},
                   raw["watches_open"], raw["watches_opened"],
                   {t["token"]: t for t in raw["tokens"]}, time.monotonic())

    def since(self, before: Meters) -> Delta:
        def minus(now: dict, then: dict) -> dict:
            return {k: v - then.get(k, 0) for k, v in now.items() if v - then.get(k, 0)}
        # Requests and bytes since `before`; watches_open as it is now.
        tokens = {token: {key: value if key == "watches_open"
                          else value - before.tokens.get(token, {}).get(key, 0)
                          for key, value in row.items() if key != "token"}
                  for token, row in self.tokens.items()}
        return Delta(minus(self.requests, before.requests), minus(self.bytes, before.bytes),
                     self.watches_open, self.watches_opened - before.watches_opened,
                     tokens, self.at - before.at)


@dataclass
class Delta:
    requests: dict[tuple[str, str], int]
    bytes: dict[tuple[str, str], int]
    watches_open: int           # at the end
    watches_opened: int
    tokens: dict[str, dict[str, int]]
    seconds: float

    def reads(self) -> dict[tuple[str, str], int]:
        return {k: v for k, v in self.requests.items() if k[0] in READ_VERBS}

    def read_bytes(self) -> int:
        return sum(v for k, v in self.bytes.items() if k[0] in READ_VERBS)


# --- the replicas --------------------------------------------------------------------------

@dataclass
class Replica:
    token: str
    dns: int
    process: subprocess.Popen
    log: Path


def start_replica(index: int, children: Processes, work: Path, url: str, pods: str,
                  env: dict[str, str]) -> Replica:
    token = f"replica-{index}"
    kubeconfig = write_kubeconfig(work / f"kubeconfig.{index}", url, token=token)
    dns = free_port()
    corefile = work / f"Corefile.{index}"
    corefile.write_text(COREFILE.format(zone=ZONE, dns=dns, kubeconfig=kubeconfig, pods=pods))
    log = work / f"kubernetai.{index}.log"
    process = children.start(twistd("kubernetai", "--corefile", str(corefile)),
                             stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=work)
    return Replica(token, dns, process, log)


def wait_synced(replica: Replica, names: list[tuple[str, str | None]], timeout: float) -> float:
    started = time.monotonic()
    while not all(answers(replica.dns, name, ip) for name, ip in names):
        if replica.process.poll() is not None:
            raise RuntimeError(f"{replica.token} exited: {replica.log.read_text()[-3000:]}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{replica.token}: not synced after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


# --- printing ------------------------------------------------------------------------------

def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def short(counts: dict[tuple[str, str], int]) -> str:
    return ", ".join(f"{verb} {resource} {n}" for (verb, resource), n in sorted(counts.items()))


def print_startup(rows: list[tuple[Replica, float, Delta]]) -> None:
    print("\nstart-up, per replica (each synced before the next started):")
    print(f"  {'replica':<10} {'sync s':>7} {'requests':>8} {'watches':>7} {'bytes':>12}  "
          "requests by verb and resource")
    for replica, seconds, delta in rows:
        own = delta.tokens.get(replica.token, {})
        print(f"  {replica.token:<10} {seconds:7.1f} {own.get('requests', 0):8d} "
              f"{own.get('watches_open', 0):7d} {mib(own.get('bytes', 0)):>12}  "
              f"{short(delta.reads())}")
    print("  bytes by verb and resource, first replica: " + ", ".join(
        f"{v} {r} {mib(n)}" for (v, r), n in sorted(rows[0][2].bytes.items())
        if v in READ_VERBS))


def print_steady(replicas: list[Replica], delta: Delta, made: int, rate: float) -> None:
    per_minute = 60.0 / delta.seconds
    count = len(replicas)
    print(f"\nsteady state, {delta.seconds:.0f} s at {rate:.0f} changes/s asked "
          f"({made / delta.seconds:.0f}/s made, {made} changes), per replica per minute:")
    print(f"  {'replica':<10} {'requests':>8} {'watches':>7} {'bytes':>12}")
    for replica in replicas:
        own = delta.tokens.get(replica.token, {})
        print(f"  {replica.token:<10} {own.get('requests', 0) * per_minute:8.1f} "
              f"{own.get('watches_open', 0):7d} {mib(own.get('bytes', 0) * per_minute):>12}")
    reads = delta.reads()
    watches = sum(n for (verb, _), n in reads.items() if verb == "watch")
    lists = sum(n for (verb, _), n in reads.items() if verb == "list")
    print(f"  {'all / ' + str(count):<10} {sum(reads.values()) / count * per_minute:8.1f} "
          f"{delta.watches_open / count:7.1f} {mib(delta.read_bytes() / count * per_minute):>12}"
          f"  (lists {lists / count * per_minute:.1f}, watch reconnects "
          f"{watches / count * per_minute:.1f} per replica per minute"
          f"{'; ' + short(reads) if reads else ''})")
    events = delta.bytes
    print("  bytes by verb and resource, all replicas: " + (", ".join(
        f"{v} {r} {mib(n)}" for (v, r), n in sorted(events.items()) if v in READ_VERBS)
        or "none"))


# --- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--pods", choices=("verified", "insecure"), default="verified")
    parser.add_argument("--spec", default="scale", help="synthetic spec (default: scale)")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state length")
    parser.add_argument("--rate", type=float, default=100.0, help="changes a second")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a replica may take to sync")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    env = repo_env()

    def session(work: Path, children: Processes) -> int:
        print(f"bench/replicas_api.py: spec {args.spec!r}, {args.replicas} replicas, pods "
              f"{args.pods}, {args.seconds:g} s at {args.rate:g} changes/s; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
              + (f"; work dir {work}" if args.keep else ""))
        cluster, url = start_sandbox(args.spec, work, children, env)
        api = Api(url)
        api.namespace(CHURN_NAMESPACE)
        names = checks(cluster, args.pods)

        replicas: list[Replica] = []
        startup: list[tuple[Replica, float, Delta]] = []
        for index in range(1, args.replicas + 1):
            before = Meters.read(api)
            replica = start_replica(index, children, work, url, args.pods, env)
            replicas.append(replica)
            seconds = wait_synced(replica, names, args.timeout)
            time.sleep(2)  # the last informers settle (namespaces, endpoints)
            startup.append((replica, seconds, Meters.read(api).since(before)))
            print(f"  {replica.token} synced in {seconds:.1f} s, RSS "
                  f"{proc_status(replica.process.pid).get('VmRSS', 0):.0f} MiB")
        print_startup(startup)

        changer = Changer(api, ServiceIPs(), args.rate, args.seconds)
        before = Meters.read(api)
        changer.start()
        changer.join(args.seconds + 60)
        steady = Meters.read(api).since(before)
        if changer.error:
            print(f"  the changer stopped early: {changer.error}")
        print_steady(replicas, steady, changer.made, args.rate)
        changer.cleanup()
        for replica in replicas:
            problems = log_problems(replica.log)
            if problems:
                print(f"  {replica.token} log {replica.log}: {len(problems)} problem lines, "
                      f"e.g. {problems[0]}")
        return 0

    status = in_workspace(session, "kubernetai-replicas-", keep=lambda: args.keep, grace=15)
    if status == 0:
        print_machine_footer()
    return status


if __name__ == "__main__":
    sys.exit(main())
