"""Reading the files a Corefile names: only regular files, bounded in size.

A Corefile, the files it imports and the files its directives name (a
kubeconfig, certificates) are configuration: anything else at those paths
is a mistake or an attack.  A device such as ``/dev/zero`` would be read
forever, a FIFO would block a reload, ``/proc`` files claim a size of 0.
So every such file is read here, refused unless it is a regular file, and
cut off at a size limit whatever its size claims.

Import globs are matched here too, as Go's ``filepath.Glob`` does (Caddy
uses it), but with a bound on how many directory entries and matches one
pattern may look at.
"""

from __future__ import annotations

import fnmatch
import os
import stat

from kubernetai.corefile.errors import CorefileError
from kubernetai.corefile.limits import (
    MAX_FILE_BYTES,
    MAX_GLOB_ENTRIES,
    MAX_TOTAL_BYTES,
    Budget,
)

__all__ = [
    "Refused",
    "TooManyFiles",
    "decode_utf8",
    "glob_files",
    "open_regular",
    "read_bounded",
    "read_regular_file",
]


class TooManyFiles(Exception):
    """A glob that would import more files than the limits allow."""


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def glob_files(pattern: str, most: int) -> list[str]:
    """Go's filepath.Glob: ``*`` matches dot files too, results sorted per
    directory, a pattern without wildcards matches if the path exists.

    Bounded: a directory with more than MAX_GLOB_ENTRIES entries, or more
    than ``most`` matches, raises TooManyFiles instead of listing on.
    """
    if not _has_magic(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    head, tail = os.path.split(pattern)
    dirs = glob_files(head, most) if _has_magic(head) else [head]
    found: list[str] = []
    for d in dirs:
        names = []
        try:
            with os.scandir(d or ".") as entries:
                for seen, entry in enumerate(entries, 1):
                    if seen > MAX_GLOB_ENTRIES:
                        raise TooManyFiles(f"directory {d or '.'!r} has more than "
                                           f"{MAX_GLOB_ENTRIES:,} entries")
                    if fnmatch.fnmatchcase(entry.name, tail):
                        names.append(entry.name)
                        if len(found) + len(names) > most:
                            raise TooManyFiles(f"it matches more than {most:,} file(s)")
        except OSError:
            continue
        found.extend(os.path.join(d, name) for name in sorted(names))
    return found


class Refused(ValueError):
    """A file that must not be read as configuration; the message says why."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0))


def open_regular(path: str) -> int:
    """Open ``path`` for reading only if it is a regular file; return the fd.

    Opened without blocking, so a FIFO swapped in after a stat cannot hang
    the open (nor the read: it is refused once opened, by fstat).
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why is not None:
            raise Refused(why)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes.

    For every file the configuration names (the Corefile, its imports, a
    kubeconfig, certificates).  The file is looked at before it is opened (a
    device such as /dev/zero or a FIFO is refused without opening it:
    opening some devices does something) and again once open; the size is
    checked while reading too, since files in /proc report a size of 0.
    Raises OSError, or ValueError saying why the file is refused.
    """
    path = os.fspath(path)
    why = _not_regular(os.stat(path).st_mode)
    if why is not None:
        raise Refused(why)
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise Refused(f"too large: {size:,} bytes (at most {limit:,})")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 16, limit + 1 - total)):
            total += len(chunk)
            if total > limit:
                raise Refused(f"too large: more than {limit:,} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_bounded(path: str, budget: Budget) -> bytes:
    """:func:`read_regular_file`, counted against the Corefile's total."""
    data = read_regular_file(path)
    budget.bytes += len(data)
    if budget.bytes > MAX_TOTAL_BYTES:
        raise Refused(f"the Corefile and its imports hold more than {MAX_TOTAL_BYTES:,} bytes")
    return data


def decode_utf8(data: bytes, path: str) -> str:
    """A file's text; a Corefile that is not UTF-8 is refused at the first bad byte's line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorefileError(path, line, "file is not valid UTF-8", None) from e
