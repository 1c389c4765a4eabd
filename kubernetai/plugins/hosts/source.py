"""The hosts data one `hosts` directive answers from: the file's entries and the inline ones.

It is the answer memo's *source* (``changes``): it moves whenever what the file says changes,
so an answer recorded with the old generation (``request.depend``) is dropped from the
cache, whether ``hosts`` answered it or passed the name on to a stanza that did.

Reading is split in two, so the reactor never waits for a disk: :meth:`HostsSource.read`
(blocking: stat, read, parse) runs at set-up or on a worker thread and returns what it
found, or None when the file's modification time and size are what they were (CoreDNS's
test); :meth:`HostsSource.install` (on the reactor thread) swaps the new entries in.

As CoreDNS does, a file that cannot be read (deleted, not yet written) changes nothing:
the entries last read keep being served with the inline ones, and once the file is back
with another time or size it is read again. Only regular files are read: a FIFO or a
device is treated as unreadable rather than opened for good.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Sequence

from kubernetai.core.metrics import PROCESS
from kubernetai.core.sources import Source
from kubernetai.plugins.hosts.hostsfile import HostsMap, parse_hosts, wildcard_of

__all__ = ["HostsSource", "Loaded", "Table", "combine", "ENTRIES", "RELOAD_TIMESTAMP"]

ENTRIES = PROCESS.gauge("coredns_hosts_entries",
                        "The combined number of entries in hosts and Corefile.", ("hostsfile",))
RELOAD_TIMESTAMP = PROCESS.gauge("coredns_hosts_reload_timestamp_seconds",
                                 "The timestamp of the last reload of hosts file.")


Families = tuple[list[str], list[str]]  # (IPv4 addresses, IPv6 addresses)


@dataclass(frozen=True, slots=True)
class Table:
    """File and inline entries joined for the query path: one lookup per name.

    ``names``: every name with an entry, -> its addresses (file's first, then inline's;
    per source and family a wildcard stands in where the name has no entry, as CoreDNS
    looks each up); ``wild``: ``*.`` owner -> addresses, for names not in ``names``;
    ``addr``: address -> names, for PTR.
    """

    names: dict[str, Families]
    wild: dict[str, Families]
    addr: dict[str, list[str]]


def _one(exact: dict[str, list[str]], wild: dict[str, list[str]], name: str) -> list[str]:
    found = exact.get(name)
    if found is not None:
        return found
    pattern = wildcard_of(name) if wild else None
    return wild.get(pattern, []) if pattern is not None else []


def combine(file: HostsMap, inline: HostsMap) -> Table:
    """The :class:`Table` of a file's entries and the inline ones."""
    names: dict[str, Families] = {}
    for name in {*file.name4, *file.name6, *inline.name4, *inline.name6}:
        names[name] = (_one(file.name4, file.wild4, name) + _one(inline.name4, inline.wild4,
                                                                 name),
                       _one(file.name6, file.wild6, name) + _one(inline.name6, inline.wild6,
                                                                 name))
    wild: dict[str, Families] = {}
    for pattern in {*file.wild4, *file.wild6, *inline.wild4, *inline.wild6}:
        wild[pattern] = (file.wild4.get(pattern, []) + inline.wild4.get(pattern, []),
                         file.wild6.get(pattern, []) + inline.wild6.get(pattern, []))
    addr = {address: file.addr.get(address, []) + inline.addr.get(address, [])
            for address in {*file.addr, *inline.addr}}
    return Table(names, wild, addr)


@dataclass(frozen=True, slots=True)
class Loaded:
    """One reading of the file: its entries, the modification time and size that tell
    the next check whether to read it again, and the new :class:`Table` (None when the
    entries are what is served already)."""

    hosts: HostsMap
    mtime_ns: int
    size: int
    table: Table | None


class HostsSource:
    """The entries of a hosts file and of the Corefile's inline lines.

    :param path: the file (absolute).
    :param zones: the zones names must be in (lower-case FQDNs).
    :param inline: the inline lines, as hosts-file text.
    :param auto_reverse: map addresses back to names (no ``no_reverse``).
    """

    def __init__(self, path: str, zones: Sequence[str], inline: bytes = b"",
                 auto_reverse: bool = True) -> None:
        self.path = path
        self.zones = tuple(zones)
        self.auto_reverse = auto_reverse
        self.inline = parse_hosts(inline, self.zones, auto_reverse)
        self.file = HostsMap()
        #: What the resolver reads: replaced whole, never changed in place.
        self.table = combine(self.file, self.inline)
        #: Moves each time the file's entries change (what cached answers depend on).
        self.changes = Source()
        #: Whether the file has been read at all (CoreDNS sets its metrics only then).
        self.loaded = False
        self.mtime_ns = -1
        self.size = -1

    def read(self) -> Loaded | None:
        """The file's entries if its time or size changed since the last install, else
        None (also when it cannot be read). Blocking: never on the reactor thread."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            if info.st_mtime_ns == self.mtime_ns and info.st_size == self.size:
                return None
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read()
        except OSError:
            return None
        finally:
            os.close(fd)
        hosts = parse_hosts(data, self.zones, self.auto_reverse)
        # Compared and joined here, off the reactor thread (``self.file`` is only replaced
        # by `install`, which waits for this reading to end).
        table = None if hosts == self.file else combine(hosts, self.inline)
        return Loaded(hosts, info.st_mtime_ns, info.st_size, table)

    def install(self, loaded: Loaded) -> bool:
        """Serve ``loaded`` from now on; True if the entries changed (the generation
        moved). On the reactor thread (the thread that answers)."""
        self.mtime_ns, self.size = loaded.mtime_ns, loaded.size
        self.loaded = True
        if loaded.table is None:
            return False
        self.file, self.table = loaded.hosts, loaded.table
        self.changes.bump()
        return True

    @property
    def generation(self) -> int:
        return self.changes.generation

    def publish(self) -> None:
        """Set the metrics to what is served (CoreDNS sets them on each reading of the
        file: the entries of file and inline lines, and the file's modification time)."""
        if not self.loaded:
            return
        ENTRIES.set((self.path,), len(self.inline) + len(self.file))
        RELOAD_TIMESTAMP.set((), self.mtime_ns / 1e9)
