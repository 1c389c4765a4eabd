"""`kubernetai sandbox` and `kubernetai fault`: the simulator from the command line."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

from .faults import ACTIONS


def add_commands(subparsers: Any) -> None:
    sandbox = subparsers.add_parser(
        "sandbox", help="run the simulated Kubernetes API server",
        description="Serve Kubernetes objects from manifests over the real REST list/watch "
                    "API on loopback. Prints the URL once it listens.")
    sandbox.add_argument("--manifests", action="append", default=[], metavar="PATH",
                         help="YAML/JSON file or directory to load (repeatable)")
    sandbox.add_argument("--synthetic", metavar="SPEC",
                         help="generate a synthetic cluster, e.g. "
                              "'namespaces=10,services=1000,headless=100,pods=5000'")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sandbox.add_argument("--token", help="require this bearer token")
    sandbox.add_argument("--rbac", action="append", default=[], metavar="FILE",
                         help="enforce RBAC: the user may do only what the rules of the "
                              "ClusterRoles in FILE allow (repeatable: their union); "
                              "anything else gets kube-apiserver's 403 Forbidden")
    sandbox.add_argument("--tls", action="store_true",
                         help="serve HTTPS with a generated CA, server and client certificate")
    sandbox.add_argument("--tls-dir", metavar="DIR", help="where to write the certificates")
    sandbox.add_argument("--write-kubeconfig", metavar="FILE",
                         help="write a kubeconfig pointing at this server")
    sandbox.add_argument("--bookmark-interval", type=float, default=60.0, metavar="SECONDS")
    sandbox.add_argument("--history", type=int, default=10_000, metavar="EVENTS",
                         help="watch events kept per resource before a resume gets 410")
    sandbox.add_argument("--service-cidr", default="10.96.0.0/12",
                         help="ClusterIPs for services created without one")
    sandbox.add_argument("--too-large-rv-delay", type=float, default=3.0, metavar="SECONDS",
                         help="how long a list or get at a resourceVersion not reached yet "
                              "waits before the 504 'Too large resource version' (default 3, "
                              "as kube-apiserver's watch cache)")
    sandbox.add_argument("--no-watch-list", action="store_true",
                         help="act as a server without the WatchList feature: a watch with "
                              "sendInitialEvents=true gets 422 Invalid")
    sandbox.add_argument("--no-watch-cache-lists", action="store_true",
                         help="serve resourceVersion=0 lists paginated (honouring limit), as "
                              "etcd would, instead of whole in one response as the watch "
                              "cache does")
    sandbox.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                         help="fault: delay every response")
    sandbox.add_argument("--error", type=int, metavar="CODE",
                         help="fault: answer every request with this status (429/500/503)")
    sandbox.add_argument("--stall-watches", action="store_true",
                         help="fault: watches stay open and send nothing")
    sandbox.add_argument("--cut-watch-after", type=int, metavar="EVENTS",
                         help="fault: drop each watch connection after this many events")
    sandbox.set_defaults(run=run_sandbox)

    fault = subparsers.add_parser(
        "fault", help="inject a fault into a running sandbox",
        description="Post a fault action to a running sandbox's control endpoint. Actions: "
                    + ", ".join(ACTIONS) + ". Arguments are KEY=VALUE, e.g. "
                    "'error code=503 count=3', 'error code=429 retry_after=2', "
                    "'refuse seconds=5', 'delay seconds=2', 'restart seconds=1'.")
    fault.add_argument("--server", required=True, help="the sandbox URL")
    fault.add_argument("--token")
    fault.add_argument("--cacert")
    fault.add_argument("--cert")
    fault.add_argument("--key")
    fault.add_argument("action", choices=ACTIONS)
    fault.add_argument("arguments", nargs="*", metavar="KEY=VALUE")
    fault.set_defaults(run=run_fault)


def run_sandbox(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from . import manifests, rbac
    from .server import Sandbox

    policy = None
    if args.rbac:
        try:
            policy = rbac.load(args.rbac)
        except rbac.RbacError as error:
            print(f"kubernetai sandbox: --rbac: {error}", file=sys.stderr)
            return 2
    sandbox = Sandbox(host=args.host, port=args.port, token=args.token, use_tls=args.tls,
                      tls_dir=args.tls_dir, bookmark_interval=args.bookmark_interval,
                      history_size=args.history, service_cidr=args.service_cidr,
                      too_large_rv_delay=args.too_large_rv_delay,
                      watch_list=not args.no_watch_list,
                      watch_cache_lists=not args.no_watch_cache_lists, rbac=policy)
    try:
        loaded = manifests.load_paths(args.manifests)
    except manifests.ManifestError as error:
        print(f"kubernetai sandbox: {error}", file=sys.stderr)
        return 2
    for resource, obj in loaded.objects:
        sandbox.store.apply(resource, obj)
    for kind, count in sorted(loaded.skipped.items()):
        print(f"skipped {count} object(s) of kind {kind}: not served by the sandbox",
              file=sys.stderr)
    if args.synthetic:
        try:
            sandbox.load_synthetic(args.synthetic)
        except ValueError as error:
            print(f"kubernetai sandbox: --synthetic: {error}", file=sys.stderr)
            return 2
    _initial_faults(sandbox, args)
    try:
        url = sandbox.start()
    except Exception as error:  # noqa: BLE001 - a bind error is the user's to read
        print(f"kubernetai sandbox: cannot listen on {args.host}:{args.port}: {error}",
              file=sys.stderr)
        return 1
    print(url, flush=True)
    counts = ", ".join(f"{sandbox.store.count(r)} {r.plural}" for r in sandbox.store.tables)
    print(f"serving {counts}", file=sys.stderr, flush=True)
    if policy is not None:
        print(f"RBAC: {rbac.USER} may do what ClusterRole(s) {', '.join(policy.roles)} allow "
              f"({len(policy.rules)} rule(s)); anything else gets 403", file=sys.stderr,
              flush=True)
    if args.write_kubeconfig:
        path = sandbox.write_kubeconfig(Path(args.write_kubeconfig))
        print(f"kubeconfig: {path}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def _initial_faults(sandbox: Any, args: argparse.Namespace) -> None:
    if args.delay:
        sandbox.faults.delay = args.delay
    if args.error:
        sandbox.faults.add_error(args.error)
    sandbox.faults.stall_watches = args.stall_watches
    sandbox.faults.cut_watch_after = args.cut_watch_after


def run_fault(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {"action": args.action}
    for item in args.arguments:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"kubernetai fault: expected KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        spec[key] = json.loads(value) if value[:1].isdigit() or value in ("null", "true",
                                                                           "false") else value
    request = urllib.request.Request(args.server.rstrip("/") + "/_sandbox/faults",
                                     data=json.dumps(spec).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    if args.token:
        request.add_header("authorization", f"Bearer {args.token}")
    context = None
    if args.server.startswith("https"):
        context = ssl.create_default_context(cafile=args.cacert)
        if args.cert:
            context.load_cert_chain(args.cert, args.key)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as error:
        print(f"kubernetai fault: {error.code}: {error.read().decode()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"kubernetai fault: {args.server}: {error}", file=sys.stderr)
        return 1
    return 0
