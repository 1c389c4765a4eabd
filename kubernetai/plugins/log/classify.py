"""What kind of response was sent: CoreDNS's ``response.Typify`` and ``Classify``, from the wire.

The `class` filter of `log` and the ``{/log/type}`` / ``{/log/class}`` placeholders need
them. CoreDNS reads a decoded message; here the sent bytes are read directly, and only as
far as the answer needs: the header decides everything except a NOERROR without answers,
for which the authority section is scanned for an SOA (NODATA) or NS records (a
delegation). Expired RRSIGs (CoreDNS's OTHERERROR for DNSSEC clients) cannot occur: this
server signs nothing.
"""

from __future__ import annotations

__all__ = ["typify", "classify", "CLASSES"]

#: The class names `class` accepts, as CoreDNS's ``response.ClassFromString``.
CLASSES = ("all", "success", "denial", "error")

_TYPE_SOA, _TYPE_NS, _TYPE_AXFR, _TYPE_IXFR = 6, 2, 252, 251
_OPCODE_NOTIFY, _OPCODE_UPDATE = 4, 5

#: Type (as ``response.Type.String()``) -> class (as ``response.Class.String()``).
_CLASS_OF = {"NOERROR": "success", "DELEGATION": "success", "NXDOMAIN": "denial",
             "NODATA": "denial"}


def typify(wire: bytes, qtype: int) -> str:
    """The response's ``response.Type`` name: NOERROR, NXDOMAIN, SERVERERROR, NODATA,
    DELEGATION, META, UPDATE or OTHERERROR. ``qtype`` is the question's type."""
    opcode = (wire[2] >> 3) & 0xF
    if opcode == _OPCODE_UPDATE:
        return "UPDATE"
    if opcode == _OPCODE_NOTIFY or qtype in (_TYPE_AXFR, _TYPE_IXFR):
        return "META"
    rcode = wire[3] & 0xF
    answers = (wire[6] << 8) | wire[7]
    if answers:
        return "NOERROR" if rcode == 0 else ("OTHERERROR" if rcode == 3 else _by_rcode(rcode))
    if rcode == 0:
        soa, ns = _authority_types(wire)
        if soa:
            return "NODATA"
        return "DELEGATION" if ns else "NOERROR"
    return _by_rcode(rcode)


def _by_rcode(rcode: int) -> str:
    if rcode == 3:
        return "NXDOMAIN"
    if rcode in (2, 4):  # SERVFAIL, NOTIMP
        return "SERVERERROR"
    return "OTHERERROR"


def classify(type_name: str) -> str:
    """``response.Classify``: success, denial or error."""
    return _CLASS_OF.get(type_name, "error")


def _authority_types(wire: bytes) -> tuple[bool, int]:
    """(an SOA is in the authority section, how many NS records are), for a response
    without answers. A short or damaged message reads as neither."""
    n = len(wire)
    questions = (wire[4] << 8) | wire[5]
    authority = (wire[8] << 8) | wire[9]
    if not authority:
        return False, 0
    pos = 12
    soa, ns = False, 0
    try:
        for _ in range(questions):
            pos = _skip_name(wire, pos, n) + 4
        for _ in range(authority):
            pos = _skip_name(wire, pos, n)
            rtype = (wire[pos] << 8) | wire[pos + 1]
            if rtype == _TYPE_SOA:
                soa = True
            elif rtype == _TYPE_NS:
                ns += 1
            pos += 10 + ((wire[pos + 8] << 8) | wire[pos + 9])
    except IndexError:
        pass
    return soa, ns


def _skip_name(wire: bytes, pos: int, n: int) -> int:
    """The offset just past the (possibly compressed) name at ``pos``."""
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += length + 1
        if pos >= n:
            raise IndexError(pos)
