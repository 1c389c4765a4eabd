"""The search list of a resolv.conf file, read as CoreDNS reads one (miekg/dns's client
configuration parser), for `autopath` and the `kubernetai` stanzas' host search path.

Only ``search`` and ``domain`` lines count, the last one winning: ``search`` takes every
word after it (perhaps none), ``domain`` its first word. Keywords are case-sensitive;
comments are not stripped inside a line (``search a.com # x`` gives three names, as
CoreDNS does). Each name is lower-cased and made fully qualified.
"""

from __future__ import annotations

__all__ = ["search_list", "read_search", "valid_domain"]


def search_list(text: str) -> list[str]:
    """The normalized search list of a resolv.conf's text."""
    search: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "search":
            search = words[1:]
        elif words[0] == "domain":
            search = words[1:2]
    return [_fqdn(name.lower()) for name in search]


def read_search(path: str) -> list[str]:
    """:func:`search_list` of the file at ``path`` (``OSError`` if it cannot be read)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return search_list(handle.read())


def valid_domain(name: str) -> bool:
    """A search domain that can end a name: Latin-1 text (a byte per character), labels of
    1-63 bytes, at most 255 bytes written; ``""`` and ``"."`` too."""
    text = name.rstrip(".")
    if not text:
        return True
    try:
        labels = [label.encode("latin-1") for label in text.split(".")]
    except UnicodeEncodeError:
        return False
    return (all(0 < len(label) < 64 for label in labels)
            and sum(len(label) + 1 for label in labels) + 1 <= 255)


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."
