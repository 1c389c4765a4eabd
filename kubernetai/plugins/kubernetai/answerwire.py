"""Answer records made of pre-encoded parts, for the uncached answer path.

A stanza's answers are mostly a few shapes: the A/AAAA records of a ClusterIP service, a
headless service or a pod, and the zone's SOA of a negative answer. Built as Twisted
``RRHeader`` + ``Name`` + ``Record_*`` objects, each record costs four objects, an address
parse and, at encoding, a ``Name`` walk and a ``struct`` call per part: most of a miss.
:class:`AddressRR` and :class:`SoaRR` stand in for those ``RRHeader`` s: they hold the
owner name as bytes and the rdata already packed (4 or 16 address bytes; the SOA's fixed
20 bytes once per zone spelling and serial), and encode the very bytes Twisted would
(:func:`encode_name` is ``dns.Name.encode``, with the same case-sensitive compression
table and the same entries added to it, so the records after them compress alike).

They read as ``RRHeader`` s to everything else (``name``, ``type``, ``cls``, ``ttl``,
``payload``, ``auth``, ``isAuthoritative()``, ``==``, ``str``): ``name`` and ``payload``
are made on first use (``explain``, ``loadbalance``, ``rewrite`` read them) and kept.
Records are shared between queries (the answer memo) and are never changed in place; a
step that edits one copies it first and assigns ``name`` or ``payload`` on the copy
(``rewrite``): that copy is then encoded the Twisted way, from those objects. ``ttl`` is
read when encoding, so a copy's new TTL is encoded either way.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.names import dns

__all__ = ["AddressRR", "SoaRR", "address_rr", "encode_name", "name_into", "owner_of",
           "soa_names", "soa_rr"]

_FIXED = struct.Struct("!HHIH")
_pack_fixed = _FIXED.pack
_pack_u16 = struct.Struct("!H").pack
_SOA_FIXED = struct.Struct("!LlllL")
_HEADER_SIZE = 12
_A = dns.A
_AAAA = dns.AAAA
_SOA = dns.SOA
_IN = dns.IN
_QUERY_TYPES = dns.QUERY_TYPES
_QUERY_CLASSES = dns.QUERY_CLASSES
_LABEL_LENGTHS = [bytes((n,)) for n in range(256)]


#: No limit on the offsets entered in a compression table (Twisted's own encoding).
_UNBOUNDED = 1 << 62


def name_into(buf: bytearray, comp: dict[bytes, int] | None, name: bytes, base: int,
              limit: int = _UNBOUNDED) -> None:
    """Append ``name`` to ``buf`` as ``dns.Name(name).encode`` writes it, ``buf[0]`` being
    at offset ``base`` of the message: a pointer to the longest suffix already in ``comp``
    (case-sensitive), each suffix written before it entered in ``comp`` (through its
    ``__setitem__``) when its offset is below ``limit`` (a pointer holds 14 bits)."""
    while name:
        if comp is not None:
            offset = comp.get(name)
            if offset is not None:
                buf += _pack_u16(0xC000 | offset)
                return
            offset = base + len(buf)
            if offset < limit:
                comp[name] = offset
        ind = name.find(b".")
        if ind > 0:
            label, name = name[:ind], name[ind + 1:]
        else:
            label = name
            name = b""
            ind = len(label)
        buf += _LABEL_LENGTHS[ind] if ind < 256 else bytes((ind,))
        buf += label
    buf += b"\x00"


def encode_name(strio: Any, comp: dict[bytes, int] | None, name: bytes) -> None:
    """``dns.Name(name).encode(strio, comp)`` without the ``Name``: the same bytes, and
    the same suffixes entered in ``comp``."""
    buf = bytearray()
    name_into(buf, comp, name, strio.tell() + _HEADER_SIZE)
    strio.write(buf)


class _WireRR:
    """What :class:`AddressRR` and :class:`SoaRR` share: the ``RRHeader`` face."""

    __slots__ = ("owner", "type", "cls", "ttl", "auth", "_name", "_payload", "_edited")

    # As RRHeader's class attributes (read by Twisted's caching resolver and message code).
    fmt = "!HHIH"
    rdlength = None
    cachedResponse = None
    compareAttributes = ("name", "type", "cls", "ttl", "payload", "auth")

    owner: bytes
    type: int
    cls: int
    ttl: int
    auth: bool
    _name: dns.Name | None
    _payload: Any
    _edited: bool

    def _init(self, owner: bytes, type_: int, ttl: int) -> None:
        self.owner = owner
        self.type = type_
        self.cls = _IN
        self.ttl = ttl
        self.auth = True
        self._name = None
        self._payload = None
        self._edited = False

    # -- the RRHeader face ------------------------------------------------------------

    @property
    def name(self) -> dns.Name:
        found = self._name
        if found is None:
            found = self._name = dns.Name(self.owner)
        return found

    @name.setter
    def name(self, value: Any) -> None:
        self._name = value if isinstance(value, dns.Name) else dns.Name(value)
        self._edited = True

    @property
    def payload(self) -> Any:
        found = self._payload
        if found is None:
            found = self._payload = self._make_payload()
        return found

    @payload.setter
    def payload(self, value: Any) -> None:
        self._payload = value
        self._edited = True

    def _make_payload(self) -> Any:
        raise NotImplementedError

    def isAuthoritative(self) -> bool:
        return self.auth

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        try:
            return all(getattr(self, a) == getattr(other, a) for a in self.compareAttributes)
        except AttributeError:
            return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # as RRHeader: equal by value, unhashable

    def __str__(self) -> str:
        name = self._name.name if self._name is not None else self.owner
        t = _QUERY_TYPES.get(self.type, dns.EXT_QUERIES.get(self.type, f"UNKNOWN ({self.type})"))
        c = _QUERY_CLASSES.get(self.cls, f"UNKNOWN ({self.cls})")
        return "<RR name=%s type=%s class=%s ttl=%ds auth=%s>" % (
            name.decode("ascii", "backslashreplace"), t, c, self.ttl,
            self.auth and "True" or "False")

    __repr__ = __str__

    def encode(self, strio: Any, compDict: dict[bytes, int] | None = None) -> None:
        if self._edited:
            # An edited copy: Twisted's own encoding of what it now holds.
            self.name.encode(strio, compDict)
            strio.write(_pack_fixed(self.type, self.cls, self.ttl, 0))
            payload = self.payload
            if payload:
                prefix = strio.tell()
                payload.encode(strio, compDict)
                after = strio.tell()
                strio.seek(prefix - 2, 0)
                strio.write(_pack_u16(after - prefix))
                strio.seek(after, 0)
            return
        buf = bytearray()
        self._into(buf, compDict, strio.tell() + _HEADER_SIZE, _UNBOUNDED)
        strio.write(buf)

    def wire_into(self, buf: bytearray, comp: dict[bytes, int]) -> bool:
        """Append the record to ``buf``, which follows the 12-byte header, compressing
        against ``comp`` (offsets of 0x4000 and above are not entered: a pointer cannot
        hold them); False, with nothing appended, for an edited copy (see the module
        docstring), which only ``encode`` writes. The codec's fast path."""
        if self._edited:
            return False
        self._into(buf, comp, _HEADER_SIZE, 0x4000)
        return True

    def _into(self, buf: bytearray, comp: dict[bytes, int] | None, base: int,
              limit: int) -> None:
        raise NotImplementedError


class AddressRR(_WireRR):
    """An A or AAAA record: ``rdata`` is the packed address (4 or 16 bytes)."""

    __slots__ = ("rdata",)

    def __init__(self, owner: bytes, type_: int, rdata: bytes, ttl: int) -> None:
        self._init(owner, type_, ttl)
        self.rdata = rdata

    def _make_payload(self) -> Any:
        if self.type == _A:
            return dns.Record_A(socket.inet_ntop(socket.AF_INET, self.rdata), self.ttl)
        return dns.Record_AAAA(socket.inet_ntop(socket.AF_INET6, self.rdata), self.ttl)

    def _into(self, buf: bytearray, comp: dict[bytes, int] | None, base: int,
              limit: int) -> None:
        name_into(buf, comp, self.owner, base, limit)
        rdata = self.rdata
        buf += _pack_fixed(self.type, self.cls, self.ttl, len(rdata))
        buf += rdata


class SoaRR(_WireRR):
    """The zone's SOA: ``mname`` and ``rname`` as bytes, ``tail`` its five numbers packed."""

    __slots__ = ("mname", "rname", "tail", "numbers", "record_ttl")

    def __init__(self, owner: bytes, mname: bytes, rname: bytes, serial: int, refresh: int,
                 retry: int, expire: int, minimum: int, ttl: int) -> None:
        self._init(owner, _SOA, ttl)
        self.mname = mname
        self.rname = rname
        self.numbers = (serial, refresh, retry, expire, minimum)
        self.tail = _SOA_FIXED.pack(serial, refresh, retry, expire, minimum)
        self.record_ttl = ttl

    def _make_payload(self) -> Any:
        serial, refresh, retry, expire, minimum = self.numbers
        return dns.Record_SOA(mname=self.mname, rname=self.rname, serial=serial,
                              refresh=refresh, retry=retry, expire=expire, minimum=minimum,
                              ttl=self.record_ttl)

    def _into(self, buf: bytearray, comp: dict[bytes, int] | None, base: int,
              limit: int) -> None:
        name_into(buf, comp, self.owner, base, limit)
        buf += _pack_fixed(_SOA, self.cls, self.ttl, 0)
        start = len(buf)
        name_into(buf, comp, self.mname, base, limit)
        name_into(buf, comp, self.rname, base, limit)
        buf += self.tail
        buf[start - 2:start] = _pack_u16(len(buf) - start)


def address_rr(owner: bytes, kind: int, addr: str, ttl: int) -> AddressRR:
    """The A (``kind`` A) or AAAA record of ``addr``, an address in text that
    ``socket.inet_pton`` reads for its family."""
    family = socket.AF_INET if kind == _A else socket.AF_INET6
    return AddressRR(owner, kind, socket.inet_pton(family, addr), ttl)


def soa_rr(zone: bytes, ttl: int, serial: int) -> SoaRR:
    """CoreDNS's SOA of ``zone`` (bytes, no trailing dot, as the client spelled it): MNAME
    ``ns.dns.<zone>``, RNAME ``hostmaster.<zone>``, refresh 7200, retry 1800, expire
    86400, minimum the stanza TTL; the record's own TTL ``min(ttl, 300)``."""
    suffix = b"." + zone if zone else b""
    return SoaRR(zone, b"ns.dns" + suffix, b"hostmaster" + suffix, serial & 0xFFFFFFFF,
                 7200, 1800, 86400, ttl, min(ttl, 300))


def owner_of(rr: Any) -> bytes:
    """A record's owner name, as bytes without the trailing dot."""
    if isinstance(rr, _WireRR) and not rr._edited:
        return rr.owner
    return rr.name.name  # type: ignore[no-any-return]


def soa_names(rr: Any) -> tuple[bytes, bytes]:
    """An SOA record's MNAME and RNAME, as bytes without the trailing dot."""
    if isinstance(rr, SoaRR) and not rr._edited:
        return rr.mname, rr.rname
    return rr.payload.mname.name, rr.payload.rname.name
