"""The `cache` step: CoreDNS's cache (``plugin/cache``) in the process's answer store.

For a name in the cache's zones, as CoreDNS 1.14 does it:

* a response from any plugin behind it (a stanza's, ``forward``'s, ``whoami``'s, one
  already encoded) is typified (NOERROR, NODATA, NXDOMAIN, SERVFAIL, delegation, other);
  its duration is the smallest TTL of its records clamped to [MINTTL, TTL] (success: 5 and
  3600 s by default, denial: 5 and 1800 s; no records: 5 s; SERVFAIL: the ``servfail``
  duration, 5 s); every record's TTL in the response sent is set to it, kept or not;
* it is kept (unless truncated, an error other than SERVFAIL, an NXDOMAIN without SOA, a
  NODATA without SOA, a duration of 0, or its type is disabled for the name) as the bytes
  sent without OPT, cut at its TTLs, keyed by the lower-case name, type, class, DO and CD;
* a hit is those bytes with the request's ID, question, RD, CD and OPT (the names in the
  records keep the first asker's case, as CoreDNS's do), AA set, AD only for a client
  that set DO or AD, every TTL the stored one minus the whole seconds elapsed (or the
  stored one: ``keepttl``); ``prefetch`` and ``serve_stale`` as CoreDNS's.

An entry read from a cluster (its reply carried ``cache`` deps, or the request recorded
some) is dropped as soon as one of those sources' generation moves, whatever it is. Where
CoreDNS keeps nothing (a disabled zone, or a name outside the cache's zones), the answer
memo of a block without `cache` still keeps a stanza's answers, unseen by clients: that is
:class:`~kubernetai.core.wirecache.WireCacheHandler`'s behaviour, which this step extends.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any, Iterator

from twisted.internet import defer
from twisted.python.failure import Failure

from kubernetai.core.codec import MAX_TCP_SIZE, patch_cached, render_reply
from kubernetai.core.plugin import Next, Result
from kubernetai.core.request import AD, Reply, Request
from kubernetai.core.router import normalize_zone
from kubernetai.core.sources import GENERATIONS
from kubernetai.core.wirecache import MAX_TTL, Key, WireCache, WireCacheHandler
from kubernetai.plugins.cache import metrics
from kubernetai.plugins.cache.config import DENIAL, SUCCESS, CacheConfig, effective_capacity
from kubernetai.plugins.cache.item import Item
from kubernetai.plugins.cache.wire import (
    DELEGATION,
    META,
    MINIMAL_DEFAULT_TTL,
    NAMEERROR,
    NODATA,
    NOERROR_T,
    OTHERERROR,
    SERVERERROR,
    UPDATE,
    Malformed,
    Scan,
    cacheable,
    minimal_ttl,
    scan,
    strip_opt,
    typify,
)

__all__ = ["CacheHandler"]

_MISS, _HIT, _STALE, _PREFETCH = range(4)
_TTL = (0).to_bytes(4, "big")


class _Zones:
    """Names at or below some zones (``plugin.Zones.Matches`` as a yes/no)."""

    __slots__ = ("every", "suffixes", "names")

    def __init__(self, zones: tuple[str, ...]) -> None:
        normal = [normalize_zone(zone) for zone in zones]
        self.every = b"" in normal
        self.names = frozenset(normal)
        self.suffixes = tuple(b"." + zone for zone in normal if zone)

    def __contains__(self, lname: object) -> bool:
        assert isinstance(lname, bytes)
        return self.every or lname in self.names or lname.endswith(self.suffixes)


def _refresh_request(request: Request) -> Request:
    """A copy of ``request`` to ask again behind the cache (prefetch, a stale entry's
    refresh): its answer is kept, not sent; asked as over TCP, so it is never truncated."""
    copy = request.copy()
    copy.simple = request.simple       # same question bytes: its answer may be kept
    copy.deps = None
    copy.nocache = False
    copy.renewable = True
    copy.observers = None
    copy.udp = False
    copy.limit = MAX_TCP_SIZE
    return copy


class CacheHandler(WireCacheHandler):
    """A block's one cache step when it has a `cache` directive."""

    name = "cache"

    def __init__(self, config: CacheConfig, store: WireCache, reactor: Any = None) -> None:
        super().__init__(store)
        self.config = config
        self.zones = _Zones(config.zones)
        self.pexcept = _Zones(config.pexcept) if config.pexcept else None
        self.nexcept = _Zones(config.nexcept) if config.nexcept else None
        self.capacity = {SUCCESS: effective_capacity(config.pcap),
                         DENIAL: effective_capacity(config.ncap)}
        # This step's entries of each type, oldest first (for its capacities).
        self.buckets: dict[str, OrderedDict[Key, None]] = {SUCCESS: OrderedDict(),
                                                            DENIAL: OrderedDict()}
        self.zlabel = config.zones_label
        self._reactor = reactor
        # A request `early` found needing more than the stored bytes (a prefetch, a stale
        # entry): `serve` takes it from here.
        self._slow: tuple[Request, tuple[Any, ...]] | None = None

    # -- looking up --------------------------------------------------------------------

    def key(self, request: Request) -> Key:
        """The key of this step's CoreDNS entries: the lower-case name (CoreDNS hashes
        ``state.Name()``), type, class, DO and CD. Clients that vary the case of the name
        (DNS 0x20) share one entry; a hit echoes each one's own question."""
        return (request.lname, request.qtype, request.qclass,
                self.scope | (2 if request.do else 0) | (1 if request.cd else 0))

    @staticmethod
    def memo_key(request: Request, key: Key) -> Key:
        """The key of the answer memo's entries under this step: the name as sent (the
        memo's bytes are a fresh answer's, question included)."""
        qname = request.qname
        return key if qname == key[0] else (qname, key[1], key[2], key[3])

    def entry_for(self, request: Request) -> Any:
        if not request.simple or request.lname not in self.zones:
            return super().entry_for(request)
        entries = self.cache.entries
        key = self.key(request)
        value = entries.get(key)
        if value is not None and value.__class__ is not tuple:
            return value
        return entries.get(self.memo_key(request, key))

    def _lookup(self, request: Request, key: Key, server: str) -> tuple[Any, ...]:
        """``getIfNotStale`` and what the hit needs: (_HIT, wire), (_MISS,),
        (_STALE | _PREFETCH, item, ttl, now)."""
        zlabel = self.zlabel
        metrics.requests.inc((server, zlabel, ""))
        store = self.cache
        value = store.entries.get(key)
        if value is not None and value.__class__ is not tuple:
            found = self._item(value, key, request, server)  # type: ignore[arg-type]
            if found is not None:
                return found
        else:
            # The memo's (a disabled zone's stanza answer), under the name as sent: a
            # tuple under ``key`` is another asker's when this one's case differs.
            memo = self.memo_key(request, key)
            if memo is not key:
                value = store.entries.get(memo)
            if value is not None:
                stored = store.get(memo)
                wire = None if stored is None else patch_cached(stored, request)
                if wire is not None:
                    metrics.misses.inc((server, zlabel, ""))  # CoreDNS would have asked
                    return (_HIT, wire)
        metrics.misses.inc((server, zlabel, ""))
        return (_MISS,)

    def _item(self, item: Item, key: Key, request: Request,
              server: str) -> tuple[Any, ...] | None:
        store = self.cache
        generations = GENERATIONS
        for slot, generation in item.deps:
            if generations[slot] != generation:
                store.invalidated += 1
                store.drop(key)
                return None
        now = store.clock()
        ttl = item.ttl(now)
        config = self.config
        if ttl <= 0:
            if -ttl >= int(config.stale_up_to):
                store.expired += 1
                store.drop(key)
                return None
            metrics.hits.inc((server, item.kind, self.zlabel, ""))
            return (_STALE, item, ttl, now)
        metrics.hits.inc((server, item.kind, self.zlabel, ""))
        store.hits += 1
        if config.prefetch > 0 and self._should_prefetch(item, now):
            return (_PREFETCH, item, ttl, now)
        return (_HIT, item.wire(request, item.orig_ttl if config.keepttl else ttl))

    def _should_prefetch(self, item: Item, now: float) -> bool:
        config = self.config
        item.update(config.duration, now)
        threshold = math.ceil(config.percentage / 100 * item.orig_ttl)
        return item.hits >= config.prefetch and item.ttl(now) <= threshold

    # -- the pipeline step -------------------------------------------------------------

    def early(self, request: Request) -> bytes | None:
        if not request.simple:
            return None
        if request.lname not in self.zones:
            return super().early(request)
        found = self._lookup(request, self.key(request), metrics.server_of(request))
        if found[0] == _HIT:
            return found[1]  # type: ignore[no-any-return]
        if found[0] == _MISS:
            self._missed = request
        else:
            self._slow = (request, found)
        return None

    def serve(self, request: Request, next: Next) -> Result:
        if not request.simple:
            if request.lname not in self.zones:
                return next(request)
            return self._fill_cache(request, next, None)
        if request.lname not in self.zones:
            return super().serve(request, next)
        key = self.key(request)
        slow = self._slow
        if slow is not None and slow[0] is request:
            self._slow = None
            found = slow[1]
        elif request is self._missed:
            self._missed = None
            found = (_MISS,)
        else:
            found = self._lookup(request, key, metrics.server_of(request))
        action = found[0]
        if action == _HIT:
            return Reply.encoded(found[1])
        if action == _MISS:
            return self._fill_cache(request, next, key)
        item, ttl, now = found[1:]
        if action == _PREFETCH:
            wire = item.wire(request, item.orig_ttl if self.config.keepttl else ttl)
            self._refresh(request, next, key, item, now, stale=False)
            return Reply.encoded(wire)
        return self._stale(request, next, key, item)

    def serve_after_early(self, request: Request, next: Next) -> Result:
        return self.serve(request, next)

    # -- a miss: the answer from behind, its TTLs set, kept if it may be ----------------

    def _fill_cache(self, request: Request, next: Next, key: Key | None) -> Result:
        reply = next(request)
        if isinstance(reply, Reply):
            return self._finish(reply, request, key)
        return reply.addCallback(self._finish, request, key)

    def _finish(self, reply: Reply, request: Request, key: Key | None) -> Reply:
        self._absorb(reply, request, key, verify=False)
        return reply

    def _absorb(self, reply: Reply, request: Request, key: Key | None, *,
                verify: bool) -> bool:
        """``ResponseWriter.WriteMsg``: set ``reply.wire`` to the response with its TTLs
        set to the cache duration, and keep it if it may be. With ``verify`` (a stale
        entry's refresh) only a complete NOERROR or NXDOMAIN is taken (RFC 8767): False,
        and nothing changed, for anything else."""
        if not isinstance(reply, Reply) or reply.wire == b"":
            return False
        fresh = reply.wire is None
        wire = render_reply(request, reply)
        try:
            found = scan(wire)
        except Malformed:
            reply.wire = wire
            return False
        now = time.time()
        kind = typify(found, request.lname, request.do, now)
        matches = self._matches(wire, found, request)
        if verify and (found.truncated or not matches or kind in (OTHERERROR, META, UPDATE)
                       or found.rcode not in (0, 3)):
            return False
        ttl = self._duration(found, kind)
        sent = self._retimed(wire, found, ttl, request)
        reply.wire = sent
        if reply.more is not None:  # a zone transfer's later messages: the same TTL
            reply.more = self._all_retimed(reply.more, ttl, request)
        if key is None:
            return True
        kept = False
        if ttl > 0 and cacheable(found, kind, request.lname):
            if matches:
                kept = self._set(reply, request, key, found, kind, sent, ttl)
            else:
                metrics.drops.inc((metrics.server_of(request), self.zlabel, ""))
        if (not kept and fresh and reply.cache is not None and found.rcode in (0, 3)
                and not found.truncated):
            # Where CoreDNS keeps nothing, a stanza's answer is still memoized as in a
            # block without `cache`: the same bytes, renewed while its sources hold.
            memo_ttl = min(min(found.ttls), MAX_TTL) if found.ttls else MINIMAL_DEFAULT_TTL
            self.cache.put(self.memo_key(request, key), strip_opt(sent, found)[0], memo_ttl,
                           reply.cache, reply.renewable)
        return True

    def _duration(self, found: Scan, kind: int) -> int:
        config = self.config
        if kind in (NAMEERROR, NODATA):
            least = minimal_ttl(found, kind, config.nttl)
            return min(max(least, config.minnttl), config.nttl)
        if kind == SERVERERROR:
            return int(config.failttl)
        least = minimal_ttl(found, kind, config.pttl)
        return min(max(least, config.minpttl), config.pttl)

    @staticmethod
    def _retimed(wire: bytes, found: Scan, ttl: int, request: Request) -> bytes:
        """``wire`` with every record's TTL (OPT's aside) ``ttl``, and AD cleared for a
        client that set neither DO nor AD."""
        buf = bytearray(wire)
        value = ttl.to_bytes(4, "big")
        for at in found.ttl_at:
            buf[at:at + 4] = value
        if not request.do and not getattr(request, "ad", False):
            buf[3] &= ~AD & 0xFF
        return bytes(buf)

    @classmethod
    def _all_retimed(cls, messages: Iterator[bytes], ttl: int,
                     request: Request) -> Iterator[bytes]:
        """Each message of ``messages`` retimed as it is made (CoreDNS's cache writer
        sets the TTLs of every message of a transfer)."""
        for message in messages:
            try:
                found = scan(message)
            except Malformed:
                yield message
                continue
            yield cls._retimed(message, found, ttl, request)

    @staticmethod
    def _matches(wire: bytes, found: Scan, request: Request) -> bool:
        """``request.Match``: a response to this question."""
        question = request.question
        asked = wire[12:found.qend]
        return (bool(wire[2] & 0x80) and len(asked) == len(question)
                and asked[:-4].lower() == question[:-4].lower() and asked[-4:] == question[-4:])

    def _set(self, reply: Reply, request: Request, key: Key, found: Scan, kind: int,
             sent: bytes, ttl: int) -> bool:
        """``ResponseWriter.set``: keep the response as a success or denial entry, unless
        that type is disabled for the name. True if it is (or a better one is) kept."""
        if kind in (NOERROR_T, DELEGATION):
            category, disabled = SUCCESS, self.pexcept
        elif kind in (NAMEERROR, NODATA, SERVERERROR):
            category, disabled = DENIAL, self.nexcept
        else:
            return False
        if disabled is not None and request.lname in disabled:
            return False
        store = self.cache
        now = store.clock()
        if kind == SERVERERROR:
            # A SERVFAIL does not shadow a positive answer still usable (CoreDNS keeps the
            # two apart and prefers the positive one).
            held = store.entries.get(key)
            if isinstance(held, Item) and held.kind == SUCCESS and self._usable(held, now):
                return True
        stored, ttl_at, ends = strip_opt(sent, found)
        deps = tuple(reply.cache or ())
        if request.deps or len(deps) > 1:
            deps = tuple(dict.fromkeys((*deps, *(request.deps or ()))))
        server = metrics.server_of(request)
        item = Item(stored, ttl_at, ends, found.sections, found.qend, ttl, now, deps,
                    category, self, server, request.lname)
        bucket = self.buckets[category]
        if key not in bucket:
            while bucket and len(bucket) >= self.capacity[category]:
                store.drop(next(iter(bucket)), evicted=True)
        if not store.put_item(key, item):
            return False
        bucket[key] = None
        metrics.entries.set((server, SUCCESS, self.zlabel, ""), len(self.buckets[SUCCESS]))
        metrics.entries.set((server, DENIAL, self.zlabel, ""), len(self.buckets[DENIAL]))
        return True

    def _usable(self, item: Item, now: float) -> bool:
        ttl = item.ttl(now)
        return ttl > 0 or -ttl < int(self.config.stale_up_to)

    def gone(self, key: Key, item: Item, evicted: bool) -> None:
        """The store let go of one of this step's entries."""
        self.buckets[item.kind].pop(key, None)
        if evicted:
            metrics.evictions.inc((item.server, item.kind, self.zlabel, ""))
        metrics.entries.set((item.server, item.kind, self.zlabel, ""),
                            len(self.buckets[item.kind]))

    # -- prefetch and serve_stale ------------------------------------------------------

    def _refresh(self, request: Request, next: Next, key: Key, item: Item, now: float, *,
                 stale: bool) -> None:
        """``tryPrefetch``: ask again behind the cache, at most once at a time per entry,
        and keep the answer (for a stale entry, only an answer RFC 8767 accepts)."""
        clock = self.cache.clock
        recheck = self.config.stale_recheck if stale else 0.0
        if not item.begin_refresh(clock(), recheck):
            return
        metrics.prefetches.inc((metrics.server_of(request), self.zlabel, ""))
        copy = _refresh_request(request)

        def done(reply: Reply) -> None:
            refreshed = self._absorb(reply, copy, key, verify=stale) or not stale
            if refreshed:
                fresh = self.cache.entries.get(key)
                if isinstance(fresh, Item) and fresh is not item:
                    fresh.last, fresh.hits = now, item.hits
            item.end_refresh(clock(), recheck, refreshed)

        def failed(_: Failure) -> None:
            item.end_refresh(clock(), recheck, False)

        try:
            result = next(copy)
        except Exception:  # noqa: BLE001 - a refresh that fails leaves the entry as it is
            result = defer.fail()
        if isinstance(result, Reply):
            done(result)
        else:
            result.addCallbacks(done, failed)

    def _stale_reply(self, request: Request, item: Item) -> Reply:
        metrics.served_stale.inc((metrics.server_of(request), self.zlabel, ""))
        config = self.config
        if config.stale_ttl > 0:
            ttl = config.stale_ttl
        else:
            ttl = item.orig_ttl if config.keepttl else 0
        return Reply.encoded(item.wire(request, ttl))

    def _stale(self, request: Request, next: Next, key: Key, item: Item) -> Result:
        """An expired entry within the `serve_stale` window: sent at once while it is
        refreshed behind (``immediate``), or only if a refresh brings no usable answer
        (``verify``, within VERIFY_TIMEOUT if set)."""
        config = self.config
        if not config.verify_stale:
            self._refresh(request, next, key, item, self.cache.clock(), stale=True)
            return self._stale_reply(request, item)
        clock = self.cache.clock
        recheck = config.stale_recheck
        track = recheck > 0
        if track and not item.begin_refresh(clock(), recheck):
            return self._stale_reply(request, item)
        if config.verify_timeout > 0:
            return self._verify_within(request, next, key, item, recheck)

        def verified(reply: Reply) -> Reply:
            refreshed = self._absorb(reply, request, key, verify=True)
            if track:
                item.end_refresh(clock(), recheck, refreshed)
            return reply if refreshed else self._stale_reply(request, item)

        def failed(_: Failure) -> Reply:
            if track:
                item.end_refresh(clock(), recheck, False)
            return self._stale_reply(request, item)

        try:
            result = next(request)
        except Exception:  # noqa: BLE001 - no answer: the stale one
            return failed(Failure())
        if isinstance(result, Reply):
            return verified(result)
        return result.addCallbacks(verified, failed)

    def _verify_within(self, request: Request, next: Next, key: Key, item: Item,
                       recheck: float) -> Result:
        """``verifyWithTimeout``: the refresh races VERIFY_TIMEOUT; past it the stale entry
        is sent and the refresh, when it comes, is kept all the same."""
        clock = self.cache.clock
        copy = _refresh_request(request)
        answer: defer.Deferred[Reply] = defer.Deferred()

        def done(reply: Reply) -> None:
            refreshed = self._absorb(reply, copy, key, verify=True)
            if recheck > 0:
                item.end_refresh(clock(), recheck, refreshed)
            if answer.called:
                return
            timer.cancel()
            fresh = self.cache.entries.get(key)
            if refreshed and isinstance(fresh, Item):
                now = clock()
                ttl = fresh.orig_ttl if self.config.keepttl else fresh.ttl(now)
                answer.callback(Reply.encoded(fresh.wire(request, ttl)))
            elif refreshed:
                reply.wire = None
                answer.callback(reply)    # not kept: rendered for this request
            else:
                answer.callback(self._stale_reply(request, item))

        def failed(_: Failure) -> None:
            # Ended whether or not the timeout has answered already: an entry left
            # "refreshing" would never be refreshed again.
            if recheck > 0:
                item.end_refresh(clock(), recheck, False)
            if not answer.called:
                timer.cancel()
                answer.callback(self._stale_reply(request, item))

        def late() -> None:
            if not answer.called:
                answer.callback(self._stale_reply(request, item))

        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        timer = reactor.callLater(self.config.verify_timeout, late)
        try:
            result = next(copy)
        except Exception:  # noqa: BLE001
            result = defer.fail()
        if isinstance(result, Reply):
            done(result)
        else:
            result.addCallbacks(done, failed)
        return answer
