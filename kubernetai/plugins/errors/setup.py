"""`errors [stdout] { stacktrace; consolidate DURATION REGEXP [LEVEL] [show_first] }`.

The directive, read as CoreDNS's ``errorsParse``: at most one argument, ``stdout``;
``stacktrace``; any number of ``consolidate`` lines, each with a Go duration, an RE2
pattern (:mod:`kubernetai.plugins.errors.regexp`), then an optional level (``warning``,
``error``, ``info``, ``debug``; ``error`` by default) that must come before an optional
``show_first``. Messages are CoreDNS's. The step itself is ``handler.py``.
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error
from kubernetai.pkg.gosyntax import parse_duration_ns
from kubernetai.pkg.logwriter import STDOUT
from kubernetai.plugins.errors.consolidate import DEFAULT_LEVEL, LEVELS, Lifetime, Pattern
from kubernetai.plugins.errors.handler import ErrorsHandler
from kubernetai.plugins.errors.regexp import RegexpError, compile_re2


def _arg_count(option: Directive, last: str, token: str, line: int) -> CorefileError:
    """caddy's ``ArgErr``, naming the last token read."""
    return arg_error(option.filename, line, last, token)


class ErrorsDirective:
    name = "errors"
    once = True

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        args = directive.args
        if len(args) > 1:
            raise _arg_count(directive, args[-1], args[1], directive.arg_lines[1])
        if args and args[0] != "stdout":
            raise CorefileError(directive.filename, directive.arg_lines[0],
                                f"errors: invalid log file: {args[0]}", args[0])
        stacktrace = False
        patterns: list[Pattern] = []
        for option in directive.block:
            if option.name == "stacktrace":
                stacktrace = True
                if option.args:  # CoreDNS reads the next token as the next property
                    raise CorefileError(option.filename, option.arg_lines[0],
                                        f"errors: unknown property '{option.args[0]}'",
                                        option.args[0])
            elif option.name == "consolidate":
                patterns.append(consolidate(option))
            else:
                raise CorefileError(option.filename, option.line,
                                    f"errors: unknown property '{option.name}'", option.name)
        debug = any(d.name == "debug" for d in builder.block.directives)
        handler = ErrorsHandler(STDOUT, patterns, stacktrace=stacktrace, debug=debug,
                                bound=bool(builder.bind_addresses))
        builder.add_handler(handler)
        if patterns:
            builder.add_process_service(Lifetime(handler.consolidator))


def consolidate(option: Directive) -> Pattern:
    """One ``consolidate DURATION REGEXP [LEVEL] [show_first]`` line."""
    args, lines = option.args, option.arg_lines
    if not 2 <= len(args) <= 4:
        if len(args) > 4:
            raise _arg_count(option, args[-1], args[4], lines[4])
        raise _arg_count(option, args[-1] if args else option.name,
                         args[-1] if args else option.name, lines[-1] if args else option.line)

    def error(index: int, message: str) -> CorefileError:
        return CorefileError(option.filename, lines[index], f"errors: {message}", args[index])

    try:
        period = parse_duration_ns(args[0])
    except ValueError as exc:
        raise error(0, str(exc)) from None
    try:
        regexp = compile_re2(args[1])
    except RegexpError as exc:
        raise error(1, str(exc)) from None
    level: str | None = None
    show_first = False
    for index in range(2, len(args)):
        value = args[index]
        if value in LEVELS:
            if level is not None:
                raise error(index, "multiple log levels specified in consolidate")
            if show_first:
                raise error(index, "log level must come before show_first in consolidate")
            level = value
        elif value == "show_first":
            show_first = True
        else:
            raise error(index, f"unknown option in consolidate: {value}")
    return Pattern(period, args[1], regexp, level or DEFAULT_LEVEL, show_first)
