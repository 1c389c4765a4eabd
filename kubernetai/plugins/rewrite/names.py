"""Names as the rewrite rules see them: miekg/dns presentation text, fully qualified.

CoreDNS's rules match and build names as strings (``state.Name()``: the question name
in presentation form, lower case, trailing dot) and check the result with
``dns.IsDomainName``. The server keeps names as wire labels; this module converts
between the two, so that a rule here sees exactly the text CoreDNS's would.
"""

from __future__ import annotations

from kubernetai.pkg.dnsname import presentation

__all__ = ["is_fqdn", "fqdn", "normalize", "text_of", "labels_of", "dotted"]

_MAX_WIRE = 256       # miekg's IsDomainName bound (lenmsg)


def is_fqdn(name: str) -> bool:
    """miekg's ``IsFqdn``: ends in a dot that is not escaped."""
    if not name.endswith("."):
        return False
    body = name[:-1]
    stripped = body.rstrip("\\")
    return (len(body) - len(stripped)) % 2 == 0


def fqdn(name: str) -> str:
    """miekg's ``Fqdn``."""
    return name if is_fqdn(name) else name + "."


def normalize(name: str) -> str:
    """CoreDNS's ``plugin.Name(s).Normalize()``: lower case, fully qualified."""
    return fqdn(name).lower()


def text_of(name: bytes) -> str:
    """A dotted wire name (Twisted's form, no trailing dot) as presentation text."""
    return presentation(name.split(b".")) if name else "."


def labels_of(name: str) -> list[bytes] | None:
    """The labels of a presentation name, or None where miekg's ``IsDomainName`` says it
    is not a name (an empty label, a label over 63 bytes, a name over 255 bytes, a
    dangling backslash)."""
    if not name:
        return None
    name = fqdn(name)
    if name == ".":
        return []
    raw = name.encode("utf-8", "surrogateescape")
    labels: list[bytes] = []
    label = bytearray()
    wire = 0
    i = 0
    n = len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x5C:                          # backslash
            if i + 1 >= n:
                return None
            ddd = raw[i + 1:i + 4]
            if len(ddd) == 3 and ddd.isdigit():
                value = int(ddd)
                if value > 255:
                    return None
                label.append(value)
                i += 4
            else:
                label.append(raw[i + 1])
                i += 2
            continue
        if byte == 0x2E:                          # dot
            if not label or len(label) > 63:
                return None
            wire += 1 + len(label)
            if wire > _MAX_WIRE:
                return None
            labels.append(bytes(label))
            label = bytearray()
            i += 1
            continue
        label.append(byte)
        i += 1
    if label:
        return None                           # ends inside a label ("a\\."): not a name
    return labels


def dotted(labels: list[bytes]) -> bytes:
    """The server's dotted form of ``labels`` (a dot inside a label becomes NUL, as the
    server's parser writes it, so the name stays one label that matches nothing)."""
    return b".".join([label.replace(b".", b"\0") for label in labels])
