"""`kubernetai explain`: ask a running server how it answers a name.

The server does the work (``GET /explain`` on its health, ready or prometheus listener,
served while a block has ``explain`` or ``debug``); this command asks it and prints the
answer for a person, or, with ``--json``, the JSON as the server sent it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

#: Where `health` listens by default (CoreDNS's `:8080`), on this machine.
DEFAULT_SERVER = "http://127.0.0.1:8080"


def add_command(subparsers: Any) -> None:
    """Register `explain` on the console script's subparsers."""
    explain = subparsers.add_parser(
        "explain", help="ask a running server how it answers a name",
        description="Ask the running server (GET /explain on its health, ready or prometheus "
                    "listener) how it answers NAME: the server block and zone, each plugin "
                    "and kubernetai stanza the query passes and why a stanza fell through, "
                    "which cluster answered, the rcode and records, and whether the answer "
                    "is in the answer cache. The block must have `explain` (or `debug`).")
    explain.add_argument("name")
    explain.add_argument("type", nargs="?", default="A",
                         help="query type (default A): A, AAAA, SRV, PTR, TXT, TYPE65, ...")
    explain.add_argument("--server", default=DEFAULT_SERVER, metavar="ADDR",
                         help="the server's health, ready or prometheus listener, as HOST:PORT "
                              f"or a URL (default {DEFAULT_SERVER}, health's default address)")
    explain.add_argument("--port", type=int, metavar="N",
                         help="the DNS port whose server blocks answer (default: the one "
                              "serving NAME)")
    explain.add_argument("--json", action="store_true",
                         help="print the server's JSON instead of the readable explanation")
    explain.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                         help="give up after this many seconds (default 15)")
    explain.set_defaults(run=run_explain)


def explain_url(server: str, name: str, qtype: str, port: int | None) -> str:
    """The ``/explain`` URL on ``server`` (``HOST:PORT``, ``http://HOST:PORT``, or a URL
    with a path prefix, as behind a proxy)."""
    base = server if "://" in server else "http://" + server
    query = {"name": name, "type": qtype}
    if port is not None:
        query["port"] = str(port)
    return base.rstrip("/") + "/explain?" + urllib.parse.urlencode(query)


def fetch(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """The status and JSON of the server's answer; OSError if it cannot be asked."""
    try:
        # No proxy: the server is asked directly (an http_proxy would not reach 127.0.0.1).
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as reply:
            return reply.status, _json(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def _json(body: bytes) -> dict[str, Any]:
    try:
        found = json.loads(body)
    except ValueError:
        return {"error": body.decode("utf-8", "replace").strip()}
    return found if isinstance(found, dict) else {"error": repr(found)}


def run_explain(args: argparse.Namespace) -> int:
    """0 when the server explained the name (whatever its rcode), 1 otherwise."""
    from kubernetai.plugins.explain.report import render_text
    url = explain_url(args.server, args.name, args.type, args.port)
    try:
        status, found = fetch(url, args.timeout)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        print(f"kubernetai explain: cannot ask {url}: {reason}", file=sys.stderr)
        return 1
    if status == 404 and "error" in found and found["error"].startswith("404 page"):
        print(f"kubernetai explain: {args.server} does not serve /explain: no server block "
              "has `explain` or `debug`, or it is not a health, ready or prometheus listener "
              "of a kubernetai server", file=sys.stderr)
        return 1
    if status != 200:
        print(f"kubernetai explain: {status}: {found.get('error', found)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        sys.stdout.write(render_text(found))
    return 0
