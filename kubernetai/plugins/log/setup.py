"""`log [NAMES...] [FORMAT] { class CLASSES... }`: the directive; the step is `handler.py`."""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.plugins.log.handler import CLASSES, COMMON, LogHandler


class LogDirective:
    name = "log"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        args = list(directive.args)
        fmt = COMMON
        if args and "{" in args[-1]:
            fmt = args.pop()
        names = tuple(a.lower().rstrip(".") + "." if a != "." else "." for a in args) or (".",)
        classes: set[str] = set()
        for option in directive.block:
            if option.name != "class":
                raise CorefileError(option.filename, option.line,
                                    f"log: unknown property '{option.name}'", option.name)
            if not option.args:
                raise CorefileError(option.filename, option.line,
                                    "log: class needs at least one argument", option.name)
            for value, line in zip(option.args, option.arg_lines):
                if value not in CLASSES:
                    raise CorefileError(option.filename, line,
                                        f"log: unknown class '{value}'", value)
                classes.add(value)
        builder.add_handler(LogHandler(names, fmt, frozenset(classes or {"all"}), STDOUT))
