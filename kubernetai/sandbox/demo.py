"""`kubernetai demo`: the quick start, with no Kubernetes at hand.

The demo runs the three demo clusters (examples/) in simulated API servers and the DNS
server from Corefile.example on 127.0.0.1:1053, in one process, so `dig` gets real answers.

The API servers listen on the ports Corefile.example names (16441-16443) unless
`--api-ports` says otherwise; then the demo writes a copy of the Corefile whose endpoints
name the ports actually bound, so the DNS server always reaches the clusters just started.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_CLUSTERS = (("cluster.local", 16441), ("assemblage.local", 16442),
                 ("conglomeration.local", 16443))
DEFAULT_API_PORTS = tuple(port for _, port in DEMO_CLUSTERS)
API_PORTS_SYNTAX = ",".join("P" + str(n) for n in range(1, len(DEMO_CLUSTERS) + 1))
# The HTTP endpoints Corefile.example turns on, on CoreDNS's default ports (loopback only).
DEMO_ENDPOINTS = (("health", 8080, "/health"), ("ready", 8181, "/ready"),
                  ("prometheus", 9153, "/metrics"))
DEFAULT_HTTP_PORTS = tuple(port for _, port, _ in DEMO_ENDPOINTS)
HTTP_PORTS_SYNTAX = "H,R,M"

DIG_LINES = (
    "Try:\n"
    "  dig @127.0.0.1 -p {port} web.shared.svc.cluster.local            "
    "# cluster.local's web: 10.96.100.10\n"
    "  dig @127.0.0.1 -p {port} reports.shared.svc.cluster.local        "
    "# not in cluster.local: falls through to assemblage: 10.97.100.20\n"
    "  dig @127.0.0.1 -p {port} web.shared.svc.assemblage.local         "
    "# the other web: 10.97.100.10\n"
    "  dig @127.0.0.1 -p {port} web-0.nginx.default.svc.cluster.local   "
    "# a StatefulSet pod of a headless service\n"
    "  dig @127.0.0.1 -p {port} SRV _grpc._tcp.cart.shop.svc.cluster.local\n"
    "  dig @127.0.0.1 -p {port} AAAA gateway.edge.svc.conglomeration.local\n"
    "  dig @127.0.0.1 -p {port} storefront.shared.svc.assemblage.local  "
    "# ExternalName into cluster.local\n"
    "  dig @127.0.0.1 -p {port} -x 10.97.100.20                         "
    "# PTR, answered by the second cluster\n"
    "  dig @127.0.0.1 -p {port} nope.shared.svc.conglomeration.local    "
    "# NXDOMAIN with the zone SOA\n"
    "  curl http://127.0.0.1:{health}/health                              "
    "# OK while the process runs\n"
    "  curl http://127.0.0.1:{ready}/ready                               "
    "# OK once every cluster has synced\n"
    "  curl http://127.0.0.1:{metrics}/metrics                             "
    "# Prometheus metrics\n"
    "  kubernetai explain --server http://127.0.0.1:{health} reports.shared.svc.cluster.local"
    "\n"
)


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
    """Register `demo` on the console script's subparsers."""
    names = ", ".join(name for name, _ in DEMO_CLUSTERS)
    demo = subparsers.add_parser(
        "demo", help="run the demo clusters and the DNS server from Corefile.example",
        description="Start the three demo clusters in simulated API servers and the DNS "
                    "server from Corefile.example on 127.0.0.1:1053; print dig lines to try.")
    demo.add_argument("--corefile", default=None, help="default: Corefile.example")
    demo.add_argument("--examples", default=None, help="default: examples/")
    demo.add_argument("--dns-port", type=int, default=None,
                      help="override the Corefile's port (default 1053)")
    demo.add_argument("--api-ports", type=api_ports, default=DEFAULT_API_PORTS,
                      metavar=API_PORTS_SYNTAX,
                      help=f"the simulated API servers' ports on 127.0.0.1, one per demo "
                           f"cluster in this order: {names}; 0 picks a free port "
                           f"(default {','.join(map(str, DEFAULT_API_PORTS))}; "
                           f"e.g. --api-ports 0,0,0)")
    demo.add_argument("--http-ports", type=http_ports, default=DEFAULT_HTTP_PORTS,
                      metavar=HTTP_PORTS_SYNTAX,
                      help="the ports of /health, /ready and /metrics on 127.0.0.1 (default "
                           f"{','.join(map(str, DEFAULT_HTTP_PORTS))}; 0 picks a free port)")
    demo.set_defaults(run=run_demo)


def api_ports(text: str) -> tuple[int, ...]:
    """An argparse type for --api-ports: one TCP port per demo cluster, 0 for a free one."""
    return _ports(text, API_PORTS_SYNTAX, "demo cluster", "cluster")


def http_ports(text: str) -> tuple[int, ...]:
    """An argparse type for --http-ports: health, ready, metrics; 0 for a free one."""
    return _ports(text, HTTP_PORTS_SYNTAX, "HTTP endpoint (health, ready, metrics)",
                  "endpoint")


def _ports(text: str, syntax: str, each: str, what: str) -> tuple[int, ...]:
    count = len(syntax.split(","))
    parts = text.split(",")
    if len(parts) != count:
        raise argparse.ArgumentTypeError(
            f"expected {count} comma-separated ports ({syntax}), one per "
            f"{each}, 0 for a free one; got {len(parts)}: {text!r}")
    ports = []
    for part in parts:
        part = part.strip()
        if not part.isdigit() or int(part) > 65535:
            raise argparse.ArgumentTypeError(
                f"not a port (0-65535, 0 for a free one): {part!r} in {text!r}")
        ports.append(int(part))
    fixed = [port for port in ports if port]
    twice = sorted({port for port in fixed if fixed.count(port) > 1})
    if twice:
        raise argparse.ArgumentTypeError(
            f"port {twice[0]} is given to more than one {what}: {text!r}")
    return tuple(ports)


def _endpoint_pattern(ports: Sequence[int]) -> re.Pattern[str]:
    """Loopback addresses on one of `ports`: endpoint URLs (the demo clusters listen on
    127.0.0.1) and the HTTP endpoints' addresses (`health 127.0.0.1:8080`)."""
    alternatives = "|".join(str(port) for port in ports)
    return re.compile(rf"((?://|\s)(?:127\.0\.0\.1|localhost):)({alternatives})(?![0-9])")


def corefile_with_ports(text: str, moved: dict[int, int]) -> str:
    """`text` with every loopback address on a key port of `moved` put on its value.

    All ports are replaced in one pass, so swapping two clusters' ports works.
    """
    if not moved:
        return text
    return _endpoint_pattern(list(moved)).sub(
        lambda m: m.group(1) + str(moved[int(m.group(2))]), text)


def _start_api_servers(examples: Path, ports: Sequence[int]) -> list[Any] | None:
    """Start one Sandbox per demo cluster; on failure print why (naming the port) and
    return None."""
    from kubernetai.sandbox.server import Sandbox

    sandboxes = []
    for (name, _), port in zip(DEMO_CLUSTERS, ports):
        sandbox = Sandbox(port=port)
        sandbox.apply(examples / name)
        try:
            url = sandbox.start()
        except Exception as error:  # noqa: BLE001 - a busy port is the user's to read
            print(f"kubernetai demo: cannot start the {name} API server on 127.0.0.1 port "
                  f"{port}: {error}", file=sys.stderr)
            print(f"kubernetai demo: if something else holds port {port}, choose other API "
                  f"server ports with --api-ports {API_PORTS_SYNTAX} (0 picks a free port, "
                  f"e.g. --api-ports 0,0,0)", file=sys.stderr)
            return None
        print(f"cluster {name}: API server {url}", flush=True)
        sandboxes.append(sandbox)
    return sandboxes


def _corefile_for(corefile: Path, bound: Sequence[int], directory: Path,
                  http: Sequence[int] = DEFAULT_HTTP_PORTS) -> Path:
    """The Corefile to serve: `corefile` itself when the API servers and HTTP endpoints got
    the default ports, else a copy in `directory` naming the ports they got.

    The copy's relative `import`s resolve from `directory`; Corefile.example has none.
    """
    moved = {default: port for default, port in zip(DEFAULT_API_PORTS, bound) if default != port}
    moved.update({default: port for default, port in zip(DEFAULT_HTTP_PORTS, http)
                  if default != port})
    if not moved:
        return corefile
    from kubernetai.corefile import CorefileError, read_regular_file

    try:
        text = read_regular_file(corefile).decode("utf-8")
    except (OSError, ValueError) as error:
        why = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        raise CorefileError(str(corefile), 0, f"cannot read Corefile: {why}") from error
    for (name, _), default in zip(DEMO_CLUSTERS, DEFAULT_API_PORTS):
        if default in moved and not _endpoint_pattern([default]).search(text):
            print(f"kubernetai demo: warning: {corefile} names no endpoint on 127.0.0.1:"
                  f"{default}, so it does not use the {name} API server (now on port "
                  f"{moved[default]})", file=sys.stderr)
    written = directory / corefile.name
    written.write_text(corefile_with_ports(text, moved))
    print(f"wrote {written}: {corefile} with its endpoints on the ports in use", flush=True)
    return written


def run_demo(args: argparse.Namespace) -> int:
    """Start the demo clusters and the DNS server; run until interrupted."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from kubernetai.app.logs import CoreDNSObserver
    from kubernetai.app.server import load_service
    from kubernetai.corefile import CorefileError
    from kubernetai.pkg.logwriter import LineWriter
    from kubernetai.sandbox.ports import free_port

    corefile = Path(args.corefile) if args.corefile else _find("Corefile.example")
    examples = Path(args.examples) if args.examples else _find("examples")
    # The server's own lines in CoreDNS's shape ([INFO] ...), on stderr: stdout has the
    # demo's lines and the `log` plugin's query lines.
    globalLogBeginner.beginLoggingTo([CoreDNSObserver(LineWriter(sys.stderr))],
                                     redirectStandardIO=False)
    sandboxes = _start_api_servers(examples, args.api_ports)
    if sandboxes is None:
        return 1
    http = tuple(port or free_port() for port in args.http_ports)
    with tempfile.TemporaryDirectory(prefix="kubernetai-demo-") as directory:
        try:
            used = _corefile_for(corefile, [s.port for s in sandboxes], Path(directory), http)
            server = load_service(str(used), port_override=args.dns_port)
        except CorefileError as error:
            print(error, file=sys.stderr)
            return 1
        return _serve(reactor, server, used, args.dns_port, http)


def _serve(reactor: Any, server: Any, corefile: Path, dns_port: int | None,
           http: Sequence[int] = DEFAULT_HTTP_PORTS) -> int:
    """Run the reactor with `server`; 1 if the DNS server could not listen."""
    failures = []

    def listening(ports: list[Any]) -> None:
        port = ports[0].getHost().port if ports else dns_port
        print(f"DNS server on 127.0.0.1 port {port} (Corefile: {corefile})", flush=True)
        health, ready, metrics = http
        print(DIG_LINES.format(port=port, health=health, ready=ready, metrics=metrics),
              flush=True)

    def failed(failure: Any) -> None:
        failures.append(failure)
        print(f"kubernetai demo: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()
    server.listening.addCallbacks(listening, failed)
    reactor.callWhenRunning(server.startService)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return 1 if failures else 0
