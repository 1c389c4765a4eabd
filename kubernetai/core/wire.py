"""Walking a DNS message's bytes: names (compressed or not) and resource records.

The request parser (:mod:`kubernetai.core.codec`) reads a query with these, and the
plugins that look into an encoded response without decoding it (``cache``, ``minimal``)
find its records with them. Every function takes the message, an offset and the
message's length (passed in, not recomputed: the request parser is the server's hot
path) and raises :class:`WireError` where the bytes are not a DNS message.

A name is read strictly: a compression pointer must lead backwards (so a chain of them
always ends), at most 64 of them in a row; a label is at most 63 bytes, a name at most 255.
Nothing miekg/dns writes breaks those rules. (``forward`` reads an upstream's reply with
miekg's own, looser rules and error texts instead: see its ``wire`` module.)
"""

from __future__ import annotations

import struct

__all__ = ["WireError", "RR_FIXED", "read_name", "skip_name", "skip_rr", "encode_name"]

#: What follows a record's owner name: type, class, TTL, RDLENGTH (10 bytes).
RR_FIXED = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")


class WireError(ValueError):
    """The bytes are not a DNS message; the text says where they stop being one."""


def read_name(data: bytes, pos: int, n: int) -> tuple[list[bytes], int, bool]:
    """The labels of the name at ``pos`` (pointers followed, case kept), the offset after
    it, and whether a pointer was followed."""
    labels: list[bytes] = []
    total = 1
    end = -1
    jumps = 0
    while True:
        if pos >= n:
            raise WireError("name overflows the message")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length >= 0xC0:
            if pos + 1 >= n:
                raise WireError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if target >= pos or jumps > 64:
                raise WireError("bad compression pointer")
            pos = target
            continue
        if length > 63:
            raise WireError("bad label type")
        stop = pos + 1 + length
        if stop > n:
            raise WireError("label overflows the message")
        total += length + 1
        if total > 255:
            raise WireError("name longer than 255 octets")
        labels.append(data[pos + 1:stop])
        pos = stop
    return labels, (end if end >= 0 else pos), end >= 0


def skip_name(data: bytes, pos: int, n: int) -> int:
    """The offset after the name at ``pos``, its pointer (if any) not followed: where only
    the record's place matters, not its owner."""
    while True:
        if pos >= n:
            raise WireError("name overflows the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            if pos + 2 > n:
                raise WireError("truncated compression pointer")
            return pos + 2
        if length > 63:
            raise WireError("bad label type")
        pos += 1 + length


def skip_rr(data: bytes, pos: int, n: int) -> int:
    """The offset after the resource record at ``pos`` (its owner name read strictly)."""
    _, pos, _ = read_name(data, pos, n)
    if pos + 10 > n:
        raise WireError("truncated resource record")
    pos += 10 + _U16.unpack_from(data, pos + 8)[0]
    if pos > n:
        raise WireError("rdata overflows the message")
    return pos


def encode_name(labels: list[bytes]) -> bytes:
    """A name in uncompressed wire form."""
    return b"".join([bytes((len(label),)) + label for label in labels]) + b"\0"
