"""The `kubernetai` console script: one entry point, one subcommand per task."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubernetai",
        description="Kubernetes DNS for several clusters from one server.")
    parser.add_argument("--version", action="version", version=f"kubernetai {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from kubernetai.sandbox import demo
    from .sandbox import command as sandbox_command
    demo.add_commands(subparsers)
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
