"""The process log in CoreDNS's shape, for `twistd kubernetai`.

CoreDNS writes its own messages to standard output as `[LEVEL] message` lines, without a
timestamp (journald or the container runtime adds one), and operators have parsers and
alerts built on that. twistd's default observer writes
`2026-01-02T03:04:05+0000 [namespace#info] message` instead, plus Twisted's own chatter
about every port and protocol it starts and stops. Under `twistd kubernetai` this module
replaces that observer:

* events logged through `twisted.logger.Logger` become `[INFO] text`, `[WARNING] text`,
  `[ERROR] text` (critical too), `[DEBUG] text` only while `STDOUT.debug` is on; a
  failure's traceback follows its `[ERROR]` line;
* lines already in that shape (the `log` and `errors` plugins write straight to standard
  output) pass through once, untouched; any other line printed to stdout or stderr gets
  `[INFO]` or `[ERROR]`;
* Twisted's chatter ("Starting protocol", "... starting on 53", "Starting factory",
  "(UDP Port 53 Closed)", "Main loop terminated.") is dropped; twistd's start-up lines
  become a banner like CoreDNS's (`example.org.:53`, `kubernetai-VERSION`,
  `linux/amd64, python3.11.7, twisted-26.10.0`); "Received SIGTERM" reads as CoreDNS's
  `[INFO] SIGTERM: Shutting down servers then terminating`.

Nothing is installed by importing this module: `twistd kubernetai`'s options call
`take_over`, which goes through twistd's own `--logger` hook (so twistd still owns the
observer's life, and `--logger` or `--syslog` given by the operator win). An application
that embeds kubernetai keeps whatever observers it has.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
from typing import Any, Iterable, Mapping, MutableMapping, Sequence, TextIO

from twisted.logger import ILogObserver, Logger, LoggingFile, LogLevel, formatEvent
from zope.interface import implementer

from kubernetai import __version__
from kubernetai.pkg.logwriter import STDOUT, LineWriter

__all__ = ["CoreDNSObserver", "TwistdLogging", "banner", "lines_for", "server_lines",
           "take_over", "twistd_observer"]

LEVELS = {LogLevel.debug: "DEBUG", LogLevel.info: "INFO", LogLevel.warn: "WARNING",
          LogLevel.error: "ERROR", LogLevel.critical: "ERROR"}
"""Twisted's levels as CoreDNS's tags. CoreDNS's [FATAL] ends the process; Twisted's
critical events (an unhandled error in a Deferred) do not, so they are [ERROR]."""

TAGGED = re.compile(r"\[(INFO|WARNING|ERROR|FATAL|DEBUG)\] ")
"""A line already in CoreDNS's shape."""

#: Twisted's own per-port and per-protocol messages (twisted.python.log.msg text).
_CHATTER = re.compile(r"(Starting|Stopping) protocol .*"
                      r"|\S+ starting on .*"
                      r"|\((TCP |UDP |UNIX )?Port .* Closed\)")
#: Twisted's messages (by format) an operator of CoreDNS does not expect.
_QUIET = frozenset({
    "Starting factory {factory!r}", "Stopping factory {factory!r}",
    "reactor class: {reactor}.", "Main loop terminated.", "Server Shut Down.",
})
#: twistd's first line, which the banner replaces.
_STARTING = "twistd {version} ({exe} {pyVersion}) starting up."
#: The reactor's signal messages, in CoreDNS's words.
_SIGNALS = {
    "Received SIGTERM, shutting down.": "SIGTERM: Shutting down servers then terminating",
    "Received SIGINT, shutting down.": "SIGINT: Shutting down",
    "Received SIGBREAK, shutting down.": "SIGBREAK: Shutting down",
}
_REDIRECTED = {"stdout": "INFO", "stderr": "ERROR"}  # print() and friends under twistd
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}


def lines_for(event: Mapping[str, Any], banner: Sequence[str] = ()) -> list[str]:
    """The lines one Twisted log event is written as ([] for none)."""
    fmt = event.get("log_format")
    if fmt in _QUIET:
        return []
    if fmt == _STARTING:
        return list(banner)
    if fmt in _SIGNALS:
        return [f"[INFO] {_SIGNALS[fmt]}"]
    namespace = event.get("log_namespace")
    if namespace in _REDIRECTED and fmt == "{log_io}":
        text = str(event.get("log_io", ""))
        if not text.strip():
            return []
        return [text if TAGGED.match(text) else f"[{_REDIRECTED[namespace]}] {text}"]
    text = formatEvent(dict(event)).rstrip("\n")
    failure = event.get("log_failure")
    if (namespace == "log_legacy" and failure is None and not event.get("isError")
            and _CHATTER.fullmatch(text)):
        return []
    lines = [f"[{LEVELS.get(event.get('log_level'), 'INFO')}] {text}"]
    # A legacy log.err's text already holds the traceback.
    if failure is not None and "log_text" not in event:
        try:
            lines.append(failure.getTraceback().rstrip("\n"))
        except Exception as error:  # a failure whose frames cannot be formatted
            lines.append(f"(unable to obtain traceback: {error})")
    return lines


@implementer(ILogObserver)
class CoreDNSObserver:
    """A Twisted log observer that writes each event in CoreDNS's shape through `writer`.

    `writer` must write to a real stream (see `LineWriter.use`), not to a `sys.stdout`
    that Twisted redirects into the log, which would feed the observer its own lines.
    """

    def __init__(self, writer: LineWriter = STDOUT, banner: Sequence[str] = ()) -> None:
        self.writer = writer
        self.banner = list(banner)

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("log_level") is LogLevel.debug and not self.writer.debug:
            return
        lines = lines_for(event, self.banner)
        if lines:
            self.writer.write_now("\n".join(lines))


def server_lines(plans: Iterable[Any]) -> list[str]:
    """What CoreDNS prints for each server it starts: `ZONE:PORT`, or `ZONE:PORT on ADDR`
    for a server bound with `bind`; zones sorted, one line each."""
    lines: list[str] = []
    for plan in plans:
        servers: dict[str, set[str]] = {}
        for block in plan.blocks:
            for address in block.builder.bind_addresses or [""]:
                servers.setdefault(address, set()).update(block.zones)
        for address, zones in servers.items():
            where = f" on {address}" if address else ""
            lines += [f"{zone}:{plan.port}{where}" for zone in sorted(zones)]
    return lines


def banner(servers: Sequence[str] = ()) -> list[str]:
    """CoreDNS's start-up lines: its servers, `CoreDNS-VERSION`, `OS/ARCH, go1.x, commit`."""
    import twisted
    machine = platform.machine().lower()
    return [*servers, f"kubernetai-{__version__}",
            f"{sys.platform}/{_ARCH.get(machine, machine)}, "
            f"python{platform.python_version()}, twisted-{twisted.__version__}"]


class TwistdLogging:
    """twistd's log for one `twistd kubernetai` run: where it goes and what it starts with."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
        self.servers: list[str] = []  # filled in once the Corefile is read (makeService)

    def stream(self) -> TextIO:
        """Where twistd itself would log: stdout with --nodaemon, else --logfile
        (twistd.log by default), which Twisted's LogFile rotates at 1 MB as usual."""
        name = self.options.get("logfile") or ""
        if name == "-" or (not name and self.options.get("nodaemon")):
            if not self.options.get("nodaemon"):
                sys.exit("Daemons cannot log to stdout, exiting!")
            return _real_stdout()
        from twisted.python.logfile import LogFile
        return LogFile.fromFullPath(name or "twistd.log")  # type: ignore[return-value]

    def observer(self) -> CoreDNSObserver:
        STDOUT.use(self.stream())
        return CoreDNSObserver(STDOUT, banner(self.servers))


_twistd: TwistdLogging | None = None


def take_over(server_options: MutableMapping[str, Any]) -> TwistdLogging | None:
    """Make this run of twistd log in CoreDNS's shape; None if the operator chose another
    observer (`--logger`) or syslog (`--syslog`).

    Called while twistd parses its command line, before it builds its logger: it names
    `twistd_observer` as the `--logger` factory, and sends the standard library's logging
    (the Corefile parser's warnings, for one) into the same log.
    """
    global _twistd
    if server_options.get("logger") or server_options.get("syslog"):
        return None
    _twistd = TwistdLogging(server_options)
    server_options["logger"] = f"{__name__}.twistd_observer"
    root = logging.getLogger()
    if not any(isinstance(h, _ToTwisted) for h in root.handlers):
        root.addHandler(_ToTwisted())
    return _twistd


def twistd_observer() -> CoreDNSObserver:
    """The `--logger` factory `take_over` names; twistd calls it when logging starts."""
    if _twistd is None:  # named by hand: --logger kubernetai.app.logs.twistd_observer
        STDOUT.use(_real_stdout())
        return CoreDNSObserver(STDOUT, banner())
    return _twistd.observer()


def _real_stdout() -> TextIO:
    """Standard output itself, even once Twisted has replaced `sys.stdout` with a proxy."""
    stdout: TextIO | None = sys.stdout
    if isinstance(stdout, LoggingFile) or stdout is None:
        stdout = sys.__stdout__
    if stdout is None:
        raise RuntimeError("no standard output to log to")
    return stdout


class _ToTwisted(logging.Handler):
    """Standard-library log records as Twisted events, so they get the same shape."""

    def emit(self, record: logging.LogRecord) -> None:
        level = (LogLevel.error if record.levelno >= logging.ERROR else
                 LogLevel.warn if record.levelno >= logging.WARNING else
                 LogLevel.info if record.levelno >= logging.INFO else LogLevel.debug)
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        Logger(namespace=record.name).emit(level, "{message}", message=message)
