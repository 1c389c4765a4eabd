"""The `weighted` policy's weight file: its format, and reading it again while serving.

The format is CoreDNS's: a line with a domain name starts its list, then one line per
address, ``IP WEIGHT`` (1 to 255); blank lines and lines starting with ``#`` are skipped.
The file is read when the Corefile is loaded, and every ``reload`` period (30 s by
default, 0 for never) by :class:`WeightReloader` in a thread; a file whose MD5 has not
changed is not parsed again, one that no longer parses keeps the weights in force (the
error is logged once), as CoreDNS does.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any, Callable

from twisted.application import service
from twisted.internet import task, threads
from twisted.logger import Logger

from kubernetai.corefile import read_regular_file
from kubernetai.plugins.loadbalance.policy import Weighted

__all__ = ["WeightFileError", "parse_weights", "WeightReloader", "read_weights"]

log = Logger()

Weights = dict[str, dict[bytes, int]]


class WeightFileError(ValueError):
    """The file does not parse; ``str()`` is CoreDNS's message."""


class WeightFileMissing(OSError):
    """CoreDNS's ``errOpen``."""

    def __str__(self) -> str:
        return "weight file open error"


def _ip(text: str) -> bytes | None:
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None


def parse_weights(text: str, filename: str) -> Weights:
    """The weights a file's text gives: {owner name (lower case, trailing dot): {packed
    address: weight}}. Raises WeightFileError with CoreDNS's message."""
    domains: Weights = {}
    current: dict[bytes, int] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1:
            if _ip(fields[0]) is not None:
                raise WeightFileError(f'wrong domain name:"{fields[0]}" in weight file '
                                      f"{filename}. (Maybe a missing weight value?)")
            name = fields[0].lower()
            if not name.endswith("."):
                name += "."
            current = domains.setdefault(name, {})
        elif len(fields) == 2:
            address = _ip(fields[0])
            if address is None:
                raise WeightFileError(f'wrong IP address:"{fields[0]}" in weight file '
                                      f"{filename}")
            digits = fields[1]
            if not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) <= 255:
                raise WeightFileError(f'wrong weight value:"{digits}" in weight file '
                                      f"{filename}")
            if current is None:
                raise WeightFileError(f"missing domain name in weight file {filename}")
            current.setdefault(address, int(digits))  # CoreDNS uses the first one listed
        else:
            raise WeightFileError(f'could not parse weight line:"{line}" in weight file '
                                  f"{filename}")
    return domains


def read_weights(path: str) -> bytes:
    """The file's bytes; WeightFileMissing if it cannot be opened (or is not a file)."""
    try:
        return read_regular_file(path)
    except (OSError, ValueError):
        raise WeightFileMissing() from None


class WeightReloader(service.Service):
    """Reads the weight file again every ``interval`` seconds (a process service of its
    own per `loadbalance weighted`; stopped with the configuration that made it)."""

    def __init__(self, policy: Weighted, path: str, interval: float, digest: bytes,
                 reactor: Any = None,
                 read: Callable[[str], bytes] = read_weights) -> None:
        self.policy, self.path, self.interval = policy, path, interval
        self.digest = digest            # MD5 of what was read last (b"" for nothing yet)
        self.reactor = reactor
        self.read = read
        self.key = ("loadbalance", id(self))
        self._loop: task.LoopingCall | None = None

    def adopt(self, newer: "WeightReloader") -> None:
        """Never called: each reloader has a key of its own."""

    def startService(self) -> None:
        super().startService()
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> Any:
        """Read the file (in a thread) and take its weights if it changed."""
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         self.read, self.path).addCallbacks(
            self.update, self._unreadable)

    def update(self, data: bytes) -> None:
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        if digest == self.digest:
            return
        self.digest = digest
        try:
            weights = parse_weights(data.decode("utf-8", "replace"), self.path)
        except WeightFileError as error:
            log.error("plugin/loadbalance: {error}", error=str(error))
            return
        self.policy.weights = weights
        log.info("plugin/loadbalance: Successfully reloaded weight file {path}", path=self.path)

    def _unreadable(self, failure: Any) -> None:
        log.error("plugin/loadbalance: {error}", error=failure.getErrorMessage())
