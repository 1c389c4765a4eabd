"""The `kubernetai` console script: one entry point, one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubernetai",
        description="Kubernetes DNS for several clusters from one server.")
    parser.add_argument("--version", action="version", version=f"kubernetai {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The entry point is the one place that joins the product (app) and the sandbox; the
    # product itself never imports kubernetai.sandbox.
    from .app import check, explain, rbac
    from .sandbox import command as sandbox_command
    from .sandbox import demo
    demo.add_commands(subparsers)
    check.add_command(subparsers)
    explain.add_command(subparsers)
    rbac.add_command(subparsers)
    sandbox_command.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
