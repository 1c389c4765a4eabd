"""`log [NAMES...] [FORMAT] { class CLASSES... }`: the directive; the step is `handler.py`.

Arguments are read as CoreDNS reads them: none means every name in the default format;
exactly one is a name, whatever it holds; with more, the last is the format if it holds a
``{`` (``{common}`` and ``{combined}`` inside it are expanded), and the others are names.
The classes of a line's block apply to all of its names. Every `log` line of a block adds
its rules to the block's one log step, in Corefile order.
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.plugins.log.handler import CLASSES, COMBINED, COMMON, DEFAULT, LogHandler


class LogDirective:
    name = "log"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        names, fmt = self.names_and_format(directive, builder)
        classes = self.classes(directive)
        for stage in builder.stages:
            if isinstance(stage.handler, LogHandler):  # an earlier `log` line of this block
                stage.handler.add(names, fmt, classes)
                return
        builder.add_handler(LogHandler(names, fmt, classes, STDOUT))

    @staticmethod
    def names_and_format(directive: Directive,
                         builder: BlockBuilder) -> tuple[tuple[str, ...], str]:
        args = directive.args
        if not args:
            return (".",), DEFAULT
        if len(args) == 1:
            if "{" in args[0]:
                builder.warnings.append(
                    f"{directive.filename}:{directive.arg_lines[0]}: log: '{args[0]}' is "
                    "taken as a name, as CoreDNS takes a lone argument; write "
                    f"'log . {args[0]}' for a format")
            return (args[0],), DEFAULT
        if "{" in args[-1]:
            fmt = args[-1].replace("{common}", COMMON).replace("{combined}", COMBINED)
            return args[:-1], fmt
        return args, DEFAULT

    @staticmethod
    def classes(directive: Directive) -> frozenset[str]:
        classes: set[str] = set()
        for option in directive.block:
            if option.name != "class":
                raise CorefileError(option.filename, option.line,
                                    f"log: unknown property '{option.name}'", option.name)
            if not option.args:
                raise arg_error(option.filename, option.line, "class", option.name)
            for value, line in zip(option.args, option.arg_lines):
                if value not in CLASSES:
                    raise CorefileError(option.filename, line,
                                        f"log: invalid Class: {value}", value)
                classes.add(value)
        return frozenset(classes or {"all"})
