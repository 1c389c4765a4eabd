"""`hosts [FILE [ZONES...]] { INLINE...; ttl; no_reverse; reload; fallthrough; ... }`.

Read as CoreDNS's ``hostsParse`` reads it, with its messages:

* FILE defaults to ``/etc/hosts``; a relative path is taken from the working directory
  (CoreDNS prepends the ``root`` plugin's directory, which is empty unless ``root`` is
  used, and kubernetai has no ``root``). A missing file is a warning (it is read once it
  appears); one that cannot be looked at (permissions) is an error.
* ZONES default to the server block's zones; a CIDR stands for its reverse zones.
* Lines of the block that are not options are hosts-file lines (*inline*), until a
  ``fallthrough`` line; after it, an unknown line is an error (``unknown property``).

The file is read here, once (set-up runs before the reactor, or off its thread for a
reload); the directive's :class:`HostsWatcher` re-reads it while the configuration runs.
"""

from __future__ import annotations

import errno
import os
import stat

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive, arg_error, parse_key
from kubernetai.pkg.fall import Fall
from kubernetai.pkg.gosyntax import atoi, parse_duration_ns
from kubernetai.plugins.hosts.resolver import HostsResolver
from kubernetai.plugins.hosts.source import HostsSource
from kubernetai.plugins.hosts.watcher import HostsWatcher

__all__ = ["HostsDirective", "HostsOptions", "parse_hosts_directive"]

DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD_NS = 5_000_000_000


class HostsOptions:
    """What a `hosts` directive says (plain values, before anything is read)."""

    def __init__(self, path: str, zones: tuple[str, ...]) -> None:
        self.path = path
        self.zones = zones
        self.inline: list[str] = []
        self.ttl = DEFAULT_TTL
        self.auto_reverse = True
        self.reload_ns = DEFAULT_RELOAD_NS
        self.fall = Fall()
        self.fallthrough_unsupported = False
        self.warnings: list[str] = []


class HostsDirective:
    name = "hosts"
    once = True  # CoreDNS: plugin.ErrOnce

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        options = parse_hosts_directive(directive, builder.zones)
        source = HostsSource(options.path, options.zones,
                             "\n".join(options.inline).encode("utf-8", "surrogateescape"),
                             options.auto_reverse)
        loaded = source.read()  # CoreDNS's first readHosts, at start-up
        if loaded is not None:
            source.install(loaded)
        builder.add_resolver(HostsResolver(source, ttl=options.ttl, fall=options.fall,
                                           fallthrough_unsupported=options.fallthrough_unsupported))
        builder.add_process_service(HostsWatcher(source, options.reload_ns / 1e9))
        builder.warnings.extend(options.warnings)


def _error(where: Directive, line: int, message: str, token: str | None) -> CorefileError:
    return CorefileError(where.filename, line, f"hosts: {message}", token)


def _zones(where: Directive, args: tuple[str, ...], lines: tuple[int, ...]) -> tuple[str, ...]:
    """Zone arguments normalised as ``plugin.Host.NormalizeExact`` does (CIDRs to reverse
    zones). CoreDNS drops one it cannot read without a word; here it is an error."""
    zones: list[str] = []
    for arg, line in zip(args, lines):
        try:
            found = [za.zone for za in parse_key(arg)] if arg else []
        except ValueError as error:
            raise _error(where, line, f"invalid zone {arg!r}: {error}", arg) from None
        if not found:
            raise _error(where, line, "empty zone argument (an environment variable that "
                         "is not set?)", arg)
        zones += [zone for zone in found if zone not in zones]
    return tuple(zones)


def _check_path(where: Directive, path: str, options: HostsOptions) -> None:
    """CoreDNS's look at the file: missing is a warning, inaccessible an error."""
    line = where.arg_lines[0]
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ENOENT:
            options.warnings.append(f"{where.filename}:{line}: hosts: File does not exist: "
                                    f"{path}")
            return
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise _error(where, line, f"unable to access hosts file '{path}': stat {path}: "
                     f"{reason[:1].lower()}{reason[1:]}", where.args[0]) from None
    if stat.S_ISDIR(info.st_mode):
        options.warnings.append(f"{where.filename}:{line}: hosts: Hosts file \"{path}\" is a "
                                "directory")


def parse_hosts_directive(directive: Directive, server_zones: tuple[str, ...]) -> HostsOptions:
    """The options of one `hosts` line and block; CorefileError (file, line, token) for a
    mistake, with CoreDNS's message where it has one."""
    args = directive.args
    path = DEFAULT_PATH
    if args:
        if args[0] == "":
            raise _error(directive, directive.arg_lines[0], "empty file name (an environment "
                         "variable that is not set?)", args[0])
        path = os.path.abspath(args[0])
    zones = (_zones(directive, args[1:], directive.arg_lines[1:]) if len(args) > 1
             else tuple(server_zones))
    options = HostsOptions(path, zones)
    if args:
        _check_path(directive, path, options)
    unsupported_line = 0
    for option in directive.block:
        if option.block:
            raise _error(option, option.line, f"unknown property '{option.name}'", option.name)
        name, values = option.name, option.args
        if name == "fallthrough":
            options.fall = (Fall(_zones(option, values, option.arg_lines)) if values
                            else Fall((".",)))
        elif name == "fallthrough_unsupported":
            if values:
                raise arg_error(option.filename, option.arg_lines[0], values[-1], values[0],
                                prefix="hosts: ")
            options.fallthrough_unsupported = True
            unsupported_line = option.line
        elif name == "no_reverse":
            if values:  # CoreDNS would read them as a line of their own
                raise arg_error(option.filename, option.arg_lines[0], name, values[0],
                                prefix="hosts: ")
            options.auto_reverse = False
        elif name == "ttl":
            options.ttl = _ttl(option)
            if len(values) > 1:
                options.warnings.append(f"{option.filename}:{option.arg_lines[1]}: hosts: "
                                        f"ttl takes one value; '{values[1]}' and what follows "
                                        "are ignored (as CoreDNS ignores them)")
        elif name == "reload":
            options.reload_ns = _reload(option)
        elif not options.fall.zones:
            options.inline.append(" ".join((name, *values)))
        else:
            raise _error(option, option.line, f"unknown property '{name}'", name)
    if options.fallthrough_unsupported and not options.fall.zones:
        raise _error(directive, unsupported_line, "fallthrough_unsupported requires fallthrough",
                     "fallthrough_unsupported")
    return options


def _ttl(option: Directive) -> int:
    if not option.args:
        raise _error(option, option.line, "ttl needs a time in second", option.name)
    try:
        ttl = atoi(option.args[0])
    except ValueError:
        raise _error(option, option.arg_lines[0], "ttl needs a number of second",
                     option.args[0]) from None
    if ttl <= 0 or ttl > 65535:
        raise _error(option, option.arg_lines[0], "ttl provided is invalid", option.args[0])
    return ttl


def _reload(option: Directive) -> int:
    if len(option.args) != 1:
        token = option.args[1] if option.args else option.name
        line = option.arg_lines[1] if option.args else option.line
        raise _error(option, line, "reload needs a duration (zero seconds to disable)", token)
    text = option.args[0]
    try:
        period = parse_duration_ns(text)
    except ValueError:
        raise _error(option, option.arg_lines[0], f"invalid duration for reload '{text}'",
                     text) from None
    if period < 0:
        raise _error(option, option.arg_lines[0],
                     f"invalid negative duration for reload '{text}'", text)
    return period
