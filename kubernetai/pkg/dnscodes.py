"""DNS type, class and rcode numbers and their names, as miekg/dns (v1.1.72) spells them.

CoreDNS reads and prints these through miekg's maps: a Corefile's ``A``/``SRV``/``NXDOMAIN``
(``StringToType``, ``StringToClass``, ``StringToRcode``) and a log line's ``{type}``
(``Type.String``: the name, or ``TYPE<n>``). One copy of each map lives here so that every
directive that reads a type or an rcode, and every line that prints one, agrees with the
others and with CoreDNS.

The maps are case-sensitive as miekg's are: a few names are not upper case (``None`` is
type 0, ``Reserved`` 65535), so a caller that upper-cases a word first (``rewrite``,
``forward``) never finds them, and one that looks it up as written (``acl``) does.
"""

from __future__ import annotations

__all__ = ["STRING_TO_TYPE", "TYPE_TO_STRING", "STRING_TO_CLASS", "STRING_TO_RCODE",
           "RCODE_TO_STRING", "type_name"]

#: miekg's ``StringToType`` (``TypeToString`` reversed).
STRING_TO_TYPE: dict[str, int] = {
    "None": 0, "A": 1, "NS": 2, "MD": 3, "MF": 4, "CNAME": 5, "SOA": 6, "MB": 7, "MG": 8,
    "MR": 9, "NULL": 10, "PTR": 12, "HINFO": 13, "MINFO": 14, "MX": 15, "TXT": 16,
    "RP": 17, "AFSDB": 18, "X25": 19, "ISDN": 20, "RT": 21, "NSAP-PTR": 23, "SIG": 24,
    "KEY": 25, "PX": 26, "GPOS": 27, "AAAA": 28, "LOC": 29, "NXT": 30, "EID": 31,
    "NIMLOC": 32, "SRV": 33, "ATMA": 34, "NAPTR": 35, "KX": 36, "CERT": 37, "DNAME": 39,
    "OPT": 41, "APL": 42, "DS": 43, "SSHFP": 44, "IPSECKEY": 45, "RRSIG": 46, "NSEC": 47,
    "DNSKEY": 48, "DHCID": 49, "NSEC3": 50, "NSEC3PARAM": 51, "TLSA": 52, "SMIMEA": 53,
    "HIP": 55, "NINFO": 56, "RKEY": 57, "TALINK": 58, "CDS": 59, "CDNSKEY": 60,
    "OPENPGPKEY": 61, "CSYNC": 62, "ZONEMD": 63, "SVCB": 64, "HTTPS": 65, "SPF": 99,
    "UINFO": 100, "UID": 101, "GID": 102, "UNSPEC": 103, "NID": 104, "L32": 105,
    "L64": 106, "LP": 107, "EUI48": 108, "EUI64": 109, "NXNAME": 128, "TKEY": 249,
    "TSIG": 250, "IXFR": 251, "AXFR": 252, "MAILB": 253, "MAILA": 254, "ANY": 255,
    "URI": 256, "CAA": 257, "AVC": 258, "AMTRELAY": 260, "RESINFO": 261, "TA": 32768,
    "DLV": 32769, "Reserved": 65535,
}

#: miekg's ``TypeToString``.
TYPE_TO_STRING: dict[int, str] = {number: name for name, number in STRING_TO_TYPE.items()}

#: miekg's ``StringToClass``.
STRING_TO_CLASS: dict[str, int] = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254,
                                   "ANY": 255}

#: miekg's ``StringToRcode`` (16 is spelled BADSIG there; NOTIMPL is an alias of NOTIMP).
STRING_TO_RCODE: dict[str, int] = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "NOTIMPL": 4,
    "REFUSED": 5, "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10,
    "DSOTYPENI": 11, "BADSIG": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19,
    "BADNAME": 20, "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23,
}

#: miekg's ``RcodeToString``.
RCODE_TO_STRING: dict[int, str] = {number: name for name, number in STRING_TO_RCODE.items()
                                   if name != "NOTIMPL"}


def type_name(qtype: int) -> str:
    """miekg's ``Type.String``: the type's name (``A``, ``HTTPS``), else ``TYPE<n>``."""
    return TYPE_TO_STRING.get(qtype) or f"TYPE{qtype}"
