"""Answers kept as the bytes that were sent, at the ``cache`` step of every block's pipeline.

An encoded response can be sent again, with the new query's ID, flags and OPT record
patched in, for as long as it holds:

* only what its producer marked cacheable is kept (:attr:`Reply.cache
  <kubernetai.core.request.Reply>`: a ``kubernetai`` stanza's answers are; a handler's,
  such as ``whoami``'s, are not), and only NOERROR, NODATA and NXDOMAIN, never SERVFAIL;
* for the smallest TTL in the message (CoreDNS's ``cache`` arithmetic: every record of
  every section but OPT; a message without records, 5 s; at most an hour); a TTL of 0
  is not kept. When the TTL has passed, an answer its producer marked ``renewable`` (a
  function of the recorded sources alone: a ``kubernetai`` stanza's) whose sources have
  not changed is renewed for another TTL in place: asking again would produce the same
  bytes, so only the work is saved. Any other answer is asked again;
* until a data source it was read from changes: each entry remembers the generation
  (:mod:`kubernetai.core.sources`) of every cluster name consulted for it (several,
  when an ExternalName was chased into another zone, or a stanza passed the name on),
  and a lookup that finds one of them moved on drops the entry. A change in one
  cluster leaves the others' answers cached.

The key is what the client cannot vary at will (name as sent, type, class, the block);
the request's EDNS options are not part of it and not stored. An answer whose producers
promised it holds for every letter case of the name (``Request.fold``: a ``kubernetai``
stanza's, when every name in it that comes from the question is a compression pointer
into it) is kept under the lower-case name instead (scope bit :data:`FOLDED`), and a hit
writes the asker's question bytes over the stored ones: the same bytes a fresh answer to
that spelling would be, so resolvers that randomise the case (DNS 0x20) share one entry.

The cache is bounded in bytes as well as in entries, since a client chooses how large an
answer is (a headless service with many endpoints, over TCP): when either bound is
passed, the oldest entries go first.

One store, two kinds of entry. The implicit cache step of a block without a ``cache``
directive (:class:`WireCacheHandler`) keeps the answers above, unseen by clients. A block
with a ``cache`` directive has one step instead, the ``cache`` plugin's, which keeps
CoreDNS's cache entries (TTLs counted down, its capacities) in this same store, as items
(objects with ``size`` and ``gone(key, evicted)``, see :class:`StoredItem`) under keys
of the lower-case name whose scope also holds the query's DO and CD bits
(:data:`SCOPE_STEP`), besides these answers (under the name as sent) where its
configuration does not keep CoreDNS entries. The bounds in entries and bytes hold for
both kinds together.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from typing import Any, Callable, Protocol, Union

from kubernetai.core.codec import NOERROR, NXDOMAIN, patch_cached, render_reply, strip_opt
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import Reply, Request
from kubernetai.core.sources import GENERATIONS, Deps

__all__ = ["WireCache", "WireCacheHandler", "StoredItem", "message_ttl", "SCOPE_STEP",
           "FOLDED"]

#: What one entry costs beyond its key name and answer bytes: the dict slot and its
#: order link, the key and entry tuples, two bytes objects' headers (measured, rounded up).
ENTRY_OVERHEAD = 320
#: CoreDNS's ``MinimalDefaultTTL`` and ``MaximumDefaulTTL`` (``plugin/pkg/dnsutil``).
EMPTY_TTL = 5
MAX_TTL = 3600

#: Block scopes are multiples of this: the bits below are free for a step that keys by
#: more than the question (the ``cache`` plugin: DO and CD).
SCOPE_STEP = 4
_scopes = itertools.count(SCOPE_STEP, SCOPE_STEP)
#: The scope bit of :class:`WireCacheHandler`'s entries kept under the lower-case name.
FOLDED = 1

Key = tuple[bytes, int, int, int]
# (response without OPT, expiry, (source, generation) pairs, TTL to renew with or 0)
Memo = tuple[bytes, float, Deps, float]


class StoredItem(Protocol):
    """An entry of another kind than the memo's tuple (the ``cache`` plugin's)."""

    size: int

    def gone(self, key: Key, evicted: bool) -> None:
        """The store let go of it: replaced, dropped, cleared, or ``evicted`` for room."""


Entry = Union[Memo, StoredItem]


def _size(key: Key, value: Entry) -> int:
    if value.__class__ is tuple:
        return len(key[0]) + len(value[0]) + ENTRY_OVERHEAD
    return value.size  # type: ignore[union-attr]


def _let_go(key: Key, value: Entry, evicted: bool) -> None:
    if value.__class__ is not tuple:
        value.gone(key, evicted)  # type: ignore[union-attr]


def message_ttl(reply: Reply) -> int:
    """The smallest TTL of the reply's records; 5 s without records; at most an hour."""
    ttl = MAX_TTL
    seen = False
    for section in (reply.answers, reply.authority, reply.additional):
        for rr in section:
            seen = True
            if rr.ttl < ttl:
                ttl = rr.ttl
    return ttl if seen else EMPTY_TTL


class WireCache:
    """Encoded responses (without OPT) by (qname as sent, qtype, qclass, block scope).

    :param max_entries: at most this many answers.
    :param max_bytes: at most this many bytes of keys, answers and per-entry overhead
        (:data:`ENTRY_OVERHEAD`); an answer larger than a quarter of it is not kept.
    :param clock: seconds, monotonic (a test's clock).
    """

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 32 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        # Ordered for eviction, oldest first: popitem(last=False) is O(1) here, where a
        # plain dict's first key gets slower to find with every entry popped before it.
        self.entries: OrderedDict[Key, Entry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.evictions = 0
        self.expired = 0
        self.invalidated = 0
        self.renewed = 0

    @staticmethod
    def cost(qname: bytes, stored: bytes) -> int:
        """The bytes one entry is charged."""
        return len(qname) + len(stored) + ENTRY_OVERHEAD

    def get(self, key: Key) -> bytes | None:
        """The stored answer, if it is still fresh (or renewed) and its sources have not
        changed."""
        entry = self.entries.get(key)
        if entry is None or entry.__class__ is not tuple:
            return None
        stored, expires, deps, renew = entry
        generations = GENERATIONS
        for slot, generation in deps:
            if generations[slot] != generation:
                self.invalidated += 1
                self.drop(key)
                return None
        now = self.clock()
        if expires <= now:
            if not renew:
                self.expired += 1
                self.drop(key)
                return None
            self.entries[key] = (stored, now + renew, deps, renew)
            self.renewed += 1
        self.hits += 1
        return stored

    def put(self, key: Key, stored: bytes, ttl: float,
            deps: Deps = (), renewable: bool = False) -> None:
        """Keep ``stored`` under ``key`` for ``ttl`` seconds (renewed while ``deps`` hold,
        if ``renewable``), evicting the oldest entries to stay in bounds."""
        if ttl <= 0:
            return
        self._add(key, (stored, self.clock() + ttl, deps, ttl if renewable else 0),
                  self.cost(key[0], stored))

    def put_item(self, key: Key, item: StoredItem) -> bool:
        """Keep ``item`` (its ``size`` charged) under ``key``; False if it is too large."""
        return self._add(key, item, item.size)

    def _add(self, key: Key, value: Entry, cost: int) -> bool:
        if cost > self.max_bytes // 4:
            return False
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= _size(key, old)
            _let_go(key, old, False)
        while entries and (self.bytes + cost > self.max_bytes
                           or len(entries) >= self.max_entries):
            oldest, value_ = entries.popitem(last=False)
            self.bytes -= _size(oldest, value_)
            self.evictions += 1
            _let_go(oldest, value_, True)
        entries[key] = value
        self.bytes += cost
        return True

    def drop(self, key: Key, evicted: bool = False) -> None:
        """Let go of the entry under ``key``, if any."""
        value = self.entries.pop(key, None)
        if value is not None:
            self.bytes -= _size(key, value)
            if evicted:
                self.evictions += 1
            _let_go(key, value, evicted)

    def clear(self) -> None:
        entries = list(self.entries.items())
        self.entries.clear()
        self.bytes = 0
        for key, value in entries:
            _let_go(key, value, False)


def _foldable_wire(stored: bytes, question: bytes) -> bool:
    """The stored question is ``question`` byte for byte (for :func:`_recase` to replace),
    and the first record's owner, if any, is a compression pointer into its name (the
    encoder compressed against the question, which the producer's promise assumes)."""
    end = 12 + len(question)
    if stored[12:end] != question:
        return False
    if len(stored) == end:
        return True
    first = stored[end]
    if first & 0xC0 != 0xC0 or len(stored) < end + 2:
        return False
    pointer = ((first & 0x3F) << 8) | stored[end + 1]
    return 12 <= pointer < end - 4


def _recase(stored: bytes, question: bytes) -> bytes:
    """A folded entry's bytes with ``question`` (the same name in another case, the same
    type and class) as their question."""
    end = 12 + len(question)
    if stored[12:end] == question:
        return stored
    return stored[:12] + question + stored[end:]


class WireCacheHandler:
    """The pipeline step in front of a block's answering plugins (``cache`` in ORDER).

    On a hit the stored response, patched for this request, is the reply; on a miss the
    reply from further down is encoded here (so the server does not encode it again) and
    kept if it may be. Only requests whose question maps back to its bytes
    (``request.simple``) take part.
    """

    name = "cache"

    def __init__(self, cache: WireCache) -> None:
        self.cache = cache
        # Blocks share the process's cache and may answer one name differently.
        self.scope = next(_scopes)
        # The request :meth:`early` last found nothing for: when a step in front of the
        # cache answers early by asking it (`prometheus`), the request then comes to
        # :meth:`serve`, which need not look again.
        self._missed: Request | None = None

    def entry_for(self, request: Request) -> Any:
        """What this step holds for ``request`` (None if nothing), read without changing
        anything (`explain`'s view): a :data:`Memo` tuple, or a step's item, which reads as
        one."""
        if not request.simple:
            return None
        entries = self.cache.entries
        found = entries.get((request.lname, request.qtype, request.qclass,
                             self.scope | FOLDED))
        if found is None:
            found = entries.get((request.qname, request.qtype, request.qclass, self.scope))
        return found

    def early(self, request: Request) -> bytes | None:
        """A hit, patched for ``request``; None on a miss or if it does not fit."""
        if not request.simple:
            return None
        cache = self.cache
        entries = cache.entries
        key = (request.lname, request.qtype, request.qclass, self.scope | FOLDED)
        entry = entries.get(key)
        folded = entry is not None
        if not folded:
            key = (request.qname, key[1], key[2], self.scope)
            entry = entries.get(key)
            if entry is None:
                self._missed = request
                return None
        # WireCache.get, inlined for a fresh entry: this is every cached answer's path.
        # (Under this step's scopes there are only its own tuples.)
        stored, expires, deps, _ = entry  # type: ignore[misc]
        if expires <= cache.clock():
            renewed = cache.get(key)  # renewed (a hit) or dropped, and counted
            if renewed is None:
                return None
            return patch_cached(_recase(renewed, request.question) if folded else renewed,
                                request)
        generations = GENERATIONS
        for slot, generation in deps:
            if generations[slot] != generation:
                cache.get(key)  # drops it, counted
                return None
        wire = patch_cached(_recase(stored, request.question) if folded else stored, request)
        if wire is not None:
            cache.hits += 1
        return wire

    def serve(self, request: Request, next: Next) -> Result:
        if not request.simple:
            return next(request)
        key = (request.qname, request.qtype, request.qclass, self.scope)
        if request is self._missed:  # early has just looked (the same reactor turn)
            self._missed = None
            return self._fill(request, next, key)
        cache = self.cache
        stored = cache.get((request.lname, key[1], key[2], self.scope | FOLDED))
        if stored is not None:
            stored = _recase(stored, request.question)
        else:
            stored = cache.get(key)
        if stored is not None:
            wire = patch_cached(stored, request)
            if wire is not None:
                return Reply.encoded(wire)
        return self._fill(request, next, key)

    def serve_after_early(self, request: Request, next: Next) -> Result:
        """``serve`` when :meth:`early` has just missed: no second lookup."""
        self._missed = None
        if not request.simple:
            return next(request)
        return self._fill(request, next, (request.qname, request.qtype, request.qclass,
                                          self.scope))

    def _fill(self, request: Request, next: Next, key: Key) -> Result:
        reply = next(request)
        if isinstance(reply, Reply):
            return self._store(reply, key, request)
        return reply.addCallback(self._store, key, request)

    def _store(self, reply: Reply, key: Key, request: Request) -> Reply:
        if reply.cache is None or reply.wire is not None or reply.rcode not in (NOERROR,
                                                                                NXDOMAIN):
            return reply
        reply.wire = render_reply(request, reply)
        stored = strip_opt(reply.wire, request)  # None when truncated
        if stored is not None:
            if getattr(request, "fold", False) and key[0] == request.qname and \
                    _foldable_wire(stored, request.question):
                # Its producers promised the case rule (see the module docstring), and the
                # bytes are laid out as it needs.
                key = (request.lname, key[1], key[2], key[3] | FOLDED)
            self.cache.put(key, stored, message_ttl(reply), reply.cache, reply.renewable)
        return reply
