"""`kubernetai demo` and `kubernetai check`: the quick start, and a Corefile linter.

`check --connect` also tries each stanza's API server once (see `Cluster.probe`), so a wrong
CA, a refused token or an unreachable server shows before the server is started.

The demo runs the three demo clusters (examples/) in simulated API servers on the ports
Corefile.example names, and the DNS server from Corefile.example on 127.0.0.1:1053, in one
process, so `dig` gets real answers with no Kubernetes at hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEMO_CLUSTERS = (("cluster.local", 16441), ("assemblage.local", 16442),
                 ("conglomeration.local", 16443))

DIG_LINES = """\
Try:
  dig @127.0.0.1 -p {port} web.shared.svc.cluster.local            # cluster.local's web: 10.96.100.10
  dig @127.0.0.1 -p {port} reports.shared.svc.cluster.local        # not in cluster.local: falls through to assemblage: 10.97.100.20
  dig @127.0.0.1 -p {port} web.shared.svc.assemblage.local         # the other web: 10.97.100.10
  dig @127.0.0.1 -p {port} web-0.nginx.default.svc.cluster.local   # a StatefulSet pod of a headless service
  dig @127.0.0.1 -p {port} SRV _grpc._tcp.cart.shop.svc.cluster.local
  dig @127.0.0.1 -p {port} AAAA gateway.edge.svc.conglomeration.local
  dig @127.0.0.1 -p {port} storefront.shared.svc.assemblage.local  # ExternalName into cluster.local
  dig @127.0.0.1 -p {port} -x 10.97.100.20                         # PTR, answered by the second cluster
  dig @127.0.0.1 -p {port} nope.shared.svc.conglomeration.local    # NXDOMAIN with the zone SOA
"""


def _find(relative: str) -> Path:
    """A file of the repository, from the working tree or as installed under share/."""
    here = Path.cwd() / relative
    if here.exists():
        return here
    installed = Path(sys.prefix) / "share" / "kubernetai" / relative
    if installed.exists():
        return installed
    source = Path(__file__).resolve().parent.parent / relative
    return source


def add_commands(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the demo clusters and the DNS server from Corefile.example",
        description="Start the three demo clusters in simulated API servers and the DNS "
                    "server from Corefile.example on 127.0.0.1:1053; print dig lines to try.")
    demo.add_argument("--corefile", default=None, help="default: Corefile.example")
    demo.add_argument("--examples", default=None, help="default: examples/")
    demo.add_argument("--dns-port", type=int, default=None,
                      help="override the Corefile's port (default 1053)")
    demo.set_defaults(run=run_demo)

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
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 300 seconds: {text}")
    return value


def run_check(args: argparse.Namespace) -> int:
    from kubernetai.corefile.parser import CorefileError, parse_file
    from kubernetai.app.server import clusters_of, compile_corefile, connect_all, warnings_for
    try:
        blocks = parse_file(args.corefile)
        if not blocks:
            raise CorefileError(args.corefile, 1, "no server blocks in the Corefile")
        plans = compile_corefile(blocks)
        connect_all(plans)  # kubeconfig, certificates, in-cluster credentials
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


def run_demo(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from kubernetai.corefile.parser import CorefileError
    from kubernetai.sandbox.server import Sandbox
    from kubernetai.app.server import load_service

    corefile = Path(args.corefile) if args.corefile else _find("Corefile.example")
    examples = Path(args.examples) if args.examples else _find("examples")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    sandboxes = []
    for name, port in DEMO_CLUSTERS:
        sandbox = Sandbox(port=port)
        sandbox.apply(examples / name)
        try:
            url = sandbox.start()
        except Exception as error:  # noqa: BLE001 - a busy port is the user's to read
            print(f"kubernetai demo: cannot start the {name} API server on port {port}: "
                  f"{error}", file=sys.stderr)
            return 1
        print(f"cluster {name}: API server {url}", flush=True)
        sandboxes.append(sandbox)
    try:
        server = load_service(str(corefile), port_override=args.dns_port)
    except CorefileError as error:
        print(error, file=sys.stderr)
        return 1

    def listening(ports: list[Any]) -> None:
        port = ports[0].getHost().port if ports else args.dns_port
        print(f"DNS server on 127.0.0.1 port {port} (Corefile: {corefile})", flush=True)
        print(DIG_LINES.format(port=port), flush=True)

    def failed(failure: Any) -> None:
        print(f"kubernetai demo: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()
    server.listening.addCallbacks(listening, failed)
    reactor.callWhenRunning(server.startService)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return 0
