"""Numbers and durations written the way Go reads them.

CoreDNS reads its options with Go's ``strconv.Atoi``, ``strconv.ParseFloat`` and
``time.ParseDuration``; a Corefile that CoreDNS accepts must be accepted here with the same
value, and one it refuses refused with Go's own message (``strconv.Atoi: parsing "x":
invalid syntax``), because users search for those messages.  Python's ``int()`` and
``float()`` accept more (underscores, surrounding spaces, ``1e3`` as an int), so the Go
grammars are written out below.  The code is ours; only the behaviour is Go's.
"""

from __future__ import annotations

import json
import math
import re
import struct

__all__ = ["GoSyntaxError", "atoi", "go_duration", "parse_duration", "parse_duration_ns",
           "parse_float32", "quote"]


class GoSyntaxError(ValueError):
    """A number Go's strconv refuses; str() is Go's message."""


def quote(s: str) -> str:
    """Go's %q, near enough: double quotes with backslash escapes.

    (JSON string syntax: control characters come out as ``\\u00XX`` where Go writes
    ``\\xXX``.  Kept as it is because the option errors built with it are stable text.)
    """
    return json.dumps(s, ensure_ascii=False)


_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


def atoi(s: str) -> int:
    """strconv.Atoi (64-bit): optional sign and decimal digits, nothing else."""
    if not _INT_RE.fullmatch(s):
        raise GoSyntaxError(f"strconv.Atoi: parsing {quote(s)}: invalid syntax")
    v = int(s)
    if not -_INT64_MAX - 1 <= v <= _INT64_MAX:
        raise GoSyntaxError(f"strconv.Atoi: parsing {quote(s)}: value out of range")
    return v


_DEC_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT_RE = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")


def parse_float32(s: str) -> float:
    """strconv.ParseFloat(s, 32): Go float literal syntax (decimal, hex with
    a ``p`` exponent, ``inf``/``infinity``/``nan`` in any case); an
    out-of-range value for float32 is an error.  (Go also accepts ``_``
    between digits after a ``0x`` prefix; that is refused here.)"""
    low = s.lower()
    body = low[1:] if low[:1] in "+-" else low
    if body in ("inf", "infinity"):
        return -math.inf if low.startswith("-") else math.inf
    if low == "nan":
        return math.nan
    if _DEC_FLOAT_RE.fullmatch(s):
        v = float(s)
    elif _HEX_FLOAT_RE.fullmatch(s):
        v = float.fromhex(s)
    else:
        raise GoSyntaxError(f"strconv.ParseFloat: parsing {quote(s)}: invalid syntax")
    try:
        struct.pack("<f", v)
    except OverflowError:
        raise GoSyntaxError(f"strconv.ParseFloat: parsing {quote(s)}: value out of range") from None
    if math.isinf(v):
        raise GoSyntaxError(f"strconv.ParseFloat: parsing {quote(s)}: value out of range")
    if v != 0 and struct.unpack("<f", struct.pack("<f", v))[0] == 0:
        return 0.0  # underflows float32 (not an error in Go)
    return v


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}


def parse_duration_ns(orig: str) -> int:
    """time.ParseDuration, to integer nanoseconds, with Go's error texts."""

    def invalid() -> ValueError:
        return ValueError(f"time: invalid duration {quote(orig)}")

    s = orig
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid()
    total = 0
    limit = 1 << 63
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid()
        # leadingInt
        i = 0
        v = 0
        while i < len(s) and "0" <= s[i] <= "9":
            if v > limit // 10:
                raise invalid()
            v = v * 10 + ord(s[i]) - 48
            if v > limit:
                raise invalid()
            i += 1
        pre = i > 0
        s = s[i:]
        post = False
        f = 0
        scale = 1.0
        if s and s[0] == ".":
            s = s[1:]
            # leadingFraction: digits past what fits in 63 bits are dropped
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if f > _INT64_MAX // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > limit:
                            overflow = True
                        else:
                            f = y
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid()
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {quote(orig)}")
        unit_name = s[:i]
        s = s[i:]
        unit = _DURATION_UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {quote(unit_name)} in duration {quote(orig)}")
        if v > limit // unit:
            raise invalid()
        v *= unit
        if f > 0:
            # Go: v += uint64(float64(f) * (float64(unit) / scale))
            v += int(float(f) * (float(unit) / scale))
            if v > limit:
                raise invalid()
        total += v
        if total > limit:
            raise invalid()
    if neg:
        return -total
    if total > _INT64_MAX:
        raise invalid()
    return total


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, in seconds.

    ``"5s"``, ``"1m30s"``, ``"1.5h"``, ``"300ms"``, ``"-2s"``, ``"0"``.
    Units ns, us (µs, μs), ms, s, m, h; a unit is required except for a
    bare ``0``.  Raises ValueError with Go's message, e.g.
    ``time: missing unit in duration "5"``.
    """
    return parse_duration_ns(text) / 1e9


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``30s``, ``5m0s``, ``1h0m0s``, ``1.5s``, ``100ms``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    seconds, rest = divmod(ns, 1_000_000_000)
    text = _fraction(seconds % 60 * 1_000_000_000 + rest, 1_000_000_000) + "s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes >= 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{rest:0{digits}d}".rstrip("0")
