"""`kubernetai check`: a Corefile linter that starts nothing.

It lives with the product (not the sandbox) because it runs against real Corefiles and
real API servers: `check --connect` tries each stanza's API server once (see
`Cluster.probe`), so a wrong CA, a refused token or an unreachable server shows before the
server is started.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_command(subparsers: Any) -> None:
    """Register `check` on the console script's subparsers."""
    check = subparsers.add_parser(
        "check", help="validate a Corefile without starting anything",
        description="Parse and set up every directive of a Corefile; print FILE:LINE: errors "
                    "and exit 1, or print a summary and exit 0. With --connect, also try each "
                    "stanza's API server once and exit 1 if any cannot be used.")
    check.add_argument("corefile")
    check.add_argument("--connect", action="store_true",
                       help="list each resource every stanza watches once (limit=1) from its "
                            "API server, with its credentials; report each stanza")
    check.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="SECONDS",
                       help="with --connect: the most each request may take (default 5)")
    check.set_defaults(run=run_check)


def _positive_seconds(text: str) -> float:
    """An argparse type: a request timeout, bounded so a typo cannot hang `check`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 300 seconds: {text}")
    return value


def run_check(args: argparse.Namespace) -> int:
    """Check `args.corefile`; 0 if it (and with --connect, every API server) is usable."""
    from kubernetai.app.load import clusters_of, load_plans, warnings_for
    from kubernetai.corefile import CorefileError
    try:
        # As twistd loads it: kubeconfigs, certificates, in-cluster credentials included.
        plans = load_plans(args.corefile)
    except CorefileError as error:
        print(error, file=sys.stderr)
        return 1
    clusters = clusters_of(plans)
    for plan in plans:
        for note in warnings_for(plan):
            print(f"warning: {note}")
    for cluster in clusters:
        for note in cluster.warnings:
            print(f"warning: {note}")
    if args.connect and not _connect_all(clusters, args.timeout):
        print(f"{args.corefile}: FAILED: a kubernetai stanza cannot use its API server",
              file=sys.stderr)
        return 1
    ports = ", ".join(str(plan.port) for plan in plans)
    tried = ", API server(s) answered" if args.connect else ""
    blocks = {id(block.builder) for plan in plans for block in plan.blocks}
    print(f"{args.corefile}: OK: {len(blocks)} server block(s), {len(clusters)} kubernetai "
          f"stanza(s), port(s) {ports}{tried}")
    return 0


def _connect_all(clusters: list[Any], timeout: float) -> bool:
    """Probe every stanza's API server (a few at a time); print one line each, in order.

    A stanza that answers is printed on stdout, one that does not on stderr.
    True if all answered.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not clusters:
        return True
    with ThreadPoolExecutor(max_workers=min(8, len(clusters))) as pool:
        results = list(pool.map(lambda cluster: cluster.probe(timeout), clusters))
    for cluster, problem in zip(clusters, results):
        if problem is None:
            print(f"{cluster.label}: OK: {cluster.url}")
        else:
            print(f"{cluster.label}: FAILED: {problem}", file=sys.stderr)
    return all(problem is None for problem in results)
