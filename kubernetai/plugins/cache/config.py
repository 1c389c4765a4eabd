"""What a `cache` directive configures (CoreDNS's ``Cache`` fields), with its defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheConfig", "SUCCESS", "DENIAL", "effective_capacity"]

SUCCESS = "success"
DENIAL = "denial"
#: dnsutil.MaximumDefaultTTL, its half for denials, MinimalDefaultTTL.
MAX_TTL, MAX_NTTL, MIN_TTL = 3600, 1800, 5
DEFAULT_CAPACITY = 10000
#: plugin/pkg/cache: 256 shards of at least 4 entries each.
SHARDS, MIN_SHARD = 256, 4


def effective_capacity(capacity: int) -> int:
    """The entries CoreDNS's sharded cache holds for a CAPACITY: rounded down to a
    multiple of 256, at least 1024."""
    return max(capacity // SHARDS, MIN_SHARD) * SHARDS


@dataclass(slots=True)
class CacheConfig:
    zones: tuple[str, ...] = (".",)          # normalized, with the trailing dot
    pcap: int = DEFAULT_CAPACITY
    pttl: int = MAX_TTL
    minpttl: int = MIN_TTL
    ncap: int = DEFAULT_CAPACITY
    nttl: int = MAX_NTTL
    minnttl: int = MIN_TTL
    failttl: float = MIN_TTL                  # seconds (a Go duration, may be fractional)
    prefetch: int = 0
    duration: float = 60.0                   # prefetch: the gap that resets the hit count
    percentage: int = 10
    stale_up_to: float = 0.0                 # serve_stale DURATION (0: off)
    verify_stale: bool = False
    verify_timeout: float = 0.0              # 0: wait for the answer however long it takes
    stale_ttl: int = 0                       # TTL of a stale answer (RESPONSE_TTL)
    stale_recheck: float = 0.0               # FAILURE_RECHECK
    pexcept: tuple[str, ...] = ()            # `disable success` zones
    nexcept: tuple[str, ...] = ()            # `disable denial` zones
    keepttl: bool = False

    @property
    def zones_label(self) -> str:
        """The ``zones`` label of the cache's metrics: its zones joined by commas."""
        return ",".join(self.zones)
