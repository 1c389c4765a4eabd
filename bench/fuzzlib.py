"""What bench/fuzz_udp.py and bench/fuzz_corefile.py share: fast input generators and checks.

The test suite fuzzes with Hypothesis (tests/test_fuzz_*.py), which shrinks a failure to
its smallest form but generates a few thousand inputs a second at best. The benches need a
million, so they draw from `random.Random` instead: valid queries, queries with something
hostile in them, mutations of valid queries and raw bytes; mutated Corefiles the same way.
Every generator takes its `Random`, so a run is reproduced by its `--seed`.
"""

from __future__ import annotations

import random
import re
import struct
import unicodedata
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------
# DNS queries

#: Labels that lead somewhere in the demo clusters (examples/), so real answers are fuzzed.
WORDS = [b"web", b"shared", b"svc", b"reports", b"storefront", b"big", b"shop", b"_http",
         b"_tcp", b"_udp", b"_grpc", b"cart", b"web-0", b"nginx", b"default", b"pod",
         b"10-96-100-10", b"gateway", b"edge", b"kube-dns", b"kube-system", b"dns-version",
         b"m-1", b"nope", b"*", b"any", b"10", b"96", b"100"]
ZONES = [b"cluster.local", b"assemblage.local", b"conglomeration.local", b"in-addr.arpa",
         b"10.in-addr.arpa", b"ip6.arpa", b"fall.test", b"example.com", b""]
#: Names with real answers, some large (the 500-endpoint headless service `big`).
GOOD_NAMES = [b"web.shared.svc.cluster.local", b"reports.shared.svc.cluster.local",
              b"big.shop.svc.cluster.local", b"_http._tcp.big.shop.svc.cluster.local",
              b"web.shared.svc.assemblage.local", b"storefront.shared.svc.assemblage.local",
              b"gateway.edge.svc.conglomeration.local", b"10.100.96.10.in-addr.arpa",
              b"nope.shared.svc.cluster.local", b"dns-version.cluster.local",
              b"missing.fall.test"]
NASTY = b"\x00\x07\x08\t\n\r\x1b\x7f\x80\x9b\xff.\\ \"'@;()[]{}$%aZ-_09"
QTYPES = [1, 28, 33, 12, 16, 255, 6, 2, 5, 43, 41, 250, 251, 252, 0, 65, 99, 65535]
QCLASSES = [1, 1, 1, 1, 1, 1, 3, 4, 254, 255, 0]
UDP_SIZES = [0, 1, 511, 512, 513, 1232, 1400, 4096, 8192, 65535]
OPT_CODES = [3, 5, 8, 9, 10, 11, 12, 15, 65001]
COOKIE_LENGTHS = [0, 1, 3, 7, 8, 9, 15, 16, 24, 32, 40, 41, 48]
PADDING_LENGTHS = [0, 1, 16, 468, 1200, 4000, 7000]


def encode_name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def query(name: bytes, qtype: int = 1, *, ident: int = 0, opt: bytes = b"",
          flags: int = 0x0100) -> bytes:
    """A plain query for a dotted name, with an OPT record's bytes if given."""
    return (struct.pack("!HH4H", ident, flags, 1, 0, 0, 1 if opt else 0)
            + encode_name(name.split(b".") if name else []) + struct.pack("!HH", qtype, 1)
            + opt)


def opt_record(size: int, options: list[tuple[int, bytes]] = (), *, ttl: int = 0) -> bytes:
    rdata = b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)
    return b"\x00" + struct.pack("!HHIH", 41, size, ttl, len(rdata)) + rdata


class QueryFuzzer:
    """Packets for a DNS server: mostly valid, hostile, mutated, or random bytes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds: list[tuple[float, Callable[[], bytes]]] = [
            (0.30, self.structured), (0.35, self.mutated), (0.15, self.raw),
            (0.20, self.hostile)]

    def next(self) -> bytes:
        """One packet, of a kind drawn by the weights above."""
        pick = self.rng.random()
        for weight, make in self.kinds:
            if pick < weight:
                return make()
            pick -= weight
        return self.structured()

    # -- parts --

    def label(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.6:
            word = r.choice(WORDS)
        elif roll < 0.85:
            word = bytes(r.choice(NASTY) for _ in range(r.randint(1, 20)))
        else:
            word = r.randbytes(r.randint(1, 63))
        return word.upper() if r.random() < 0.2 else word

    def name(self) -> bytes:
        r = self.rng
        if r.random() < 0.3:
            return encode_name(r.choice(GOOD_NAMES).split(b"."))
        zone = r.choice(ZONES)
        labels = [self.label() for _ in range(r.randint(0, 5))] + [z for z in zone.split(b".") if z]
        return encode_name(labels)

    def option(self) -> tuple[int, bytes]:
        r = self.rng
        code = r.choice(OPT_CODES)
        if code == 10:
            return code, r.randbytes(r.choice(COOKIE_LENGTHS))
        if code == 12:
            return code, bytes(r.choice(PADDING_LENGTHS))
        return code, r.randbytes(r.randint(0, 16))

    def opt(self) -> bytes:
        r = self.rng
        size = r.choice(UDP_SIZES) if r.random() < 0.8 else r.randint(0, 0xFFFF)
        ttl = r.choice([0, 0, 0, 0x8000]) if r.random() < 0.9 else r.getrandbits(32)
        return opt_record(size, [self.option() for _ in range(r.randint(0, 3))], ttl=ttl)

    def structured(self) -> bytes:
        """A well-formed query for a random name, type, class and EDNS."""
        r = self.rng
        qtype = r.choice(QTYPES) if r.random() < 0.9 else r.randint(0, 0xFFFF)
        qclass = r.choice(QCLASSES) if r.random() < 0.95 else r.randint(0, 0xFFFF)
        opt = self.opt() if r.random() < 0.5 else b""
        flags = (r.choice([0x0100, 0x0000, 0x0110, 0x0120]) if r.random() < 0.9
                 else r.getrandbits(16))
        return (struct.pack("!HH4H", r.getrandbits(16), flags, 1, 0, 0, 1 if opt else 0)
                + self.name() + struct.pack("!HH", qtype, qclass) + opt)

    def mutated(self) -> bytes:
        """A structured query with 1-4 bytes flipped, replaced, inserted, cut or deleted."""
        r = self.rng
        buf = bytearray(self.structured())
        for _ in range(r.randint(1, 4)):
            pos = r.randint(0, len(buf))
            kind = r.randint(0, 4)
            if kind == 0 and buf:
                buf[min(pos, len(buf) - 1)] ^= 1 << r.randint(0, 7)
            elif kind == 1 and buf:
                buf[min(pos, len(buf) - 1)] = r.getrandbits(8)
            elif kind == 2:
                buf[pos:pos] = r.randbytes(r.randint(1, 8))
            elif kind == 3:
                del buf[pos:pos + r.randint(1, 16)]
            else:
                del buf[pos:]
        return bytes(buf)

    def raw(self) -> bytes:
        r = self.rng
        if r.random() < 0.3:
            return r.randbytes(12) + r.randbytes(r.randint(0, 40))
        return r.randbytes(r.randint(0, 600))

    def hostile(self) -> bytes:
        """Inputs aimed at the known weak spots: pointers, counts, COOKIE, PADDING, OPT."""
        r = self.rng
        ident = r.getrandbits(16)
        name = r.choice(GOOD_NAMES)
        case = r.randint(0, 9)
        if case == 0:   # a compression pointer into the header, or looping, or forward
            target = r.choice([0, 2, 4, 5, 6, 11, 12, 13, 14, 200, 0x3FFF])
            return (struct.pack("!HH4H", ident, 0x0100, 1, 0, 0, 0)
                    + bytes([0xC0 | target >> 8, target & 0xFF]) + b"\x00\x01\x00\x01")
        if case == 1:   # a COOKIE of any length
            return query(name, ident=ident, opt=opt_record(
                r.choice([512, 1232, 4096]), [(10, r.randbytes(r.choice(COOKIE_LENGTHS)))]))
        if case == 2:   # large PADDING with a small advertised size
            return query(name, r.choice([1, 33, 255]), ident=ident, opt=opt_record(
                r.choice([512, 1232]), [(12, bytes(r.choice([1200, 4000, 7000])))]))
        if case == 3:   # EDNS version > 0, or DO, or odd flags
            return query(name, ident=ident,
                         opt=opt_record(1232, ttl=r.choice([0x00010000, 0x00FF8000, 0xFFFFFFFF])))
        if case == 4:   # two OPT records
            return (struct.pack("!HH4H", ident, 0x0100, 1, 0, 0, 2)
                    + encode_name(name.split(b".")) + b"\x00\x01\x00\x01"
                    + opt_record(4096) + opt_record(r.choice([0, 512, 65535])))
        if case == 5:   # wrong counts
            counts = [r.randint(0, 3) for _ in range(4)]
            return (struct.pack("!HH4H", ident, 0x0100, *counts)
                    + encode_name(name.split(b".")) + b"\x00\x01\x00\x01")
        if case == 6:   # another opcode, or a response
            return query(name, ident=ident, flags=r.choice([0x8100, 0x2100, 0x2900, 0x7800]))
        if case == 7:   # a name of 255+ octets, or a label with a dot inside
            if r.random() < 0.5:
                labels = [b"a" * 63] * 5
            else:
                labels = [b"web.shared", b"svc", b"cluster", b"local"]
            return (struct.pack("!HH4H", ident, 0x0100, 1, 0, 0, 0) + encode_name(labels)
                    + b"\x00\x01\x00\x01")
        if case == 8:   # the header alone, or a header and a truncated name
            return struct.pack("!HH4H", ident, 0x0100, 1, 0, 0, 0) + (b"" if r.random() < 0.5
                                                                     else b"\x05we")
        # a control byte in the name (log forgery)
        forged = b"x\n[ERROR] plugin/errors: 2 forged. A: fake\x1b[2J"
        return query(forged[:63] + b"." + name, ident=ident)


# ---------------------------------------------------------------------------------------
# Reading a request leniently (what size does its client allow?)


def skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            if pos + 2 > len(data):
                raise ValueError("truncated pointer")
            return pos + 2
        if length > 63:
            raise ValueError("bad label type")
        pos += 1 + length
        if pos > len(data):
            raise ValueError("label overflows")


def advertised_size(data: bytes) -> int | None:
    """The UDP size of the request's last OPT record (the one servers honour), if any."""
    last = None
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
        pos = 12
        for _ in range(qd):
            pos = skip_name(data, pos) + 4
        for index in range(an + ns + ar):
            start = skip_name(data, pos)
            rtype, rclass, _, rdlen = struct.unpack_from("!HHIH", data, start)
            pos = start + 10 + rdlen
            if pos > len(data):
                return None
            if rtype == 41 and index >= an + ns:
                last = rclass
    except (IndexError, ValueError, struct.error):
        return None
    return last


def allowed_udp_reply(data: bytes) -> int:
    """The largest UDP reply the client of `data` accepts: max(512, its EDNS size)."""
    return max(512, advertised_size(data) or 0)


# ---------------------------------------------------------------------------------------
# Corefiles

COREFILE_SEEDS = [ROOT / "Corefile.example", ROOT / "tests" / "corefiles" / "kubeadm.Corefile",
                  ROOT / "tests" / "corefiles" / "multicluster.Corefile"]
SNIPPETS = """\
(base) {
    errors
    log . "{common} {>rflags}"
}
cluster.local:1053 10.0.0.0/17 {
    import base
    bind 127.0.0.1 ::1
    kubernetai cluster.local in-addr.arpa {
        endpoint {$API}
        namespaces default {$NS}
        labels "app in (a, b)"
        pods insecure
        ttl 30
        fallthrough in-addr.arpa
    }
}
"""
#: The environment `{$NAME}` references read in the workers.
COREFILE_ENV = {"API": "http://127.0.0.1:1", "NS": "kube-system", "EMPTY": "",
                "SELF": "{$SELF}x", "SPACE": "a b", "BRACE": "}", "CTRL": "\x1b[2J\x07",
                "NL": "x\ny"}
#: Files next to the Corefile that mutations import (the worker also makes `fifo.conf`).
IMPORTABLE = {
    "nested.conf": "kubernetai other.local {\n    endpoint http://127.0.0.1:1\n}\n",
    "loop.conf": "import loop.conf\n",
    "block.conf": "x.local {\n    errors\n}\n",
    "environ.bin": "SECRET_TOKEN=hunter2\x00PATH=/usr/bin\x00HOME=/root\x00" * 40,
    "long.conf": "kubernetai " + "z" * 5000 + "\n",
}
TOKENS = [
    "{", "}", "{\n", "\n}\n", '"', '"{"', "\\", '\\"', "#", "\n", "\r\n", "\r", "\t", " ", ",",
    "{$API}", "{$NS}", "{$EMPTY}", "{$UNSET}", "{$SELF}", "{$SPACE}", "{$BRACE}", "{$CTRL}",
    "{$NL}", "{%API%}", "{$", "{%X", "{$}",
    "import nested.conf", "import loop.conf", "import missing.conf", "import extra/*.conf",
    "import *", "import sub", "import binary.conf", "import block.conf", "import environ.bin",
    "import long.conf", "import (x)", "import common", "import base", "(base) {\n}\n",
    "(x) {\n    import x\n}\n",
    ":53", ":1053", ":99999", ":-1", ":nan", "dns://", "tls://", "bogus://", "10.0.0.0/17",
    "::1", "[::1]", "/", ".",
    "kubernetai", "kubernetai cluster.local {\n", "fallthrough", "endpoint nan",
    "endpoint http://[::1", "ttl 99999", "ttl -1", "pods maybe", "startup_timeout 2562047h",
    "namespaces", 'labels "a in (b"', "tls a b c", "kubeconfig nope", "log . {common}",
    "errors stdout", "bind 127.0.0.1", "bind eth0", "cache 30",
    "\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\x9b", "\u202e", "\u200b", "\ufeff", "\u2028",
    "é", "日本", "\U0001f600",
]
#: Paths outside the ordinary (a device, a FIFO the worker makes, the process environment,
#: a directory): rare, each worth a look wherever a Corefile names a file.
SPECIAL_PATHS = ["/dev/zero", "/dev/urandom", "/dev/null", "fifo.conf", "/proc/self/environ",
                 "/etc", "extra"]
SPECIAL_TOKENS = [f"import {path}" for path in SPECIAL_PATHS]
HOSTILE_CHARS = "{}\"\\#\n\r\t \x00\x07\x1b\x7f\x85\u202e\u200b\ufeff\u2028é$%:/.,()"


class CorefileMutator:
    """Mutated Corefiles (as file bytes) from the repository's Corefiles."""

    def __init__(self, rng: random.Random, *, special_rate: float = 0.002) -> None:
        self.rng = rng
        self.seeds = [path.read_text() for path in COREFILE_SEEDS] + [SNIPPETS]
        self.special_rate = special_rate

    def insertion(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < self.special_rate:
            return "\n" + r.choice(SPECIAL_TOKENS) + "\n"
        if roll < 0.70:
            return r.choice(TOKENS)
        if roll < 0.85:
            return "".join(chr(r.choice([r.randint(0, 0x7F), r.randint(0x80, 0x2FFF),
                                         r.randint(0x1F000, 0x1FFFF)]))
                           for _ in range(r.randint(1, 12)))
        if roll < 0.95:
            return "w" * r.choice([300, 1500, 5000, 70000])
        depth = r.choice([3, 30, 300, 496, 497, 1000, 5000])
        return "a {\n" * depth + "}\n" * depth

    def special(self, text: str) -> str:
        """Point an `import`, a `kubeconfig` or a `tls` file of the Corefile at a special path."""
        r = self.rng
        path = r.choice(SPECIAL_PATHS)
        kind = r.randint(0, 2)
        if kind == 0 and "import " in text:
            return re.sub(r"import \S+", f"import {path}", text, count=1)
        option = f"kubeconfig {path}" if kind < 2 else f"tls {path} {path} {path}"
        if "endpoint " in text:
            return re.sub(r"endpoint \S+", option, text, count=1)
        return text + f"x.local {{\n    kubernetai {{\n        {option}\n    }}\n}}\n"

    def next(self) -> bytes:
        r = self.rng
        text = r.choice(self.seeds)
        if r.random() < self.special_rate * 5:
            text = self.special(text)
        for _ in range(r.randint(0, 6)):
            pos = r.randint(0, len(text))
            kind = r.choices(range(5), weights=(40, 25, 15, 15, 5))[0]
            if kind == 0:
                text = text[:pos] + self.insertion() + text[pos:]
            elif kind == 1 and text:
                text = text[:pos] + r.choice(HOSTILE_CHARS) + text[pos + 1:]
            elif kind == 2:
                text = text[:pos] + text[pos + r.randint(1, 40):]
            elif kind == 3:
                text = text[:pos] + text[pos:pos + r.randint(1, 80)] * 2 + text[pos:]
            else:
                depth = r.choice([1, 2, 40, 600])
                text = text[:pos] + "x {\n" * depth + text[pos:] + "\n}" * depth
        data = text.encode("utf-8", "surrogatepass")
        if data and r.random() < 0.05:
            pos = r.randrange(len(data))
            data = data[:pos] + bytes([r.randint(0x80, 0xFF)]) + data[pos + 1:]
        return data


# ---------------------------------------------------------------------------------------
# Checks and process figures

#: Characters no message may carry raw: controls, format characters (U+202E, U+200B),
#: surrogates, line and paragraph separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_MESSAGE = 1024


def message_problems(text: str) -> list[str]:
    """What is wrong with a message meant for a terminal or a log (empty if nothing)."""
    problems = []
    if any(unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in text):
        problems.append("raw control characters")
    if len(text) > MAX_MESSAGE:
        problems.append(f"longer than {MAX_MESSAGE:,} characters")
    return problems


def printable(text: str, limit: int = 400) -> str:
    """`text` safe to print: controls escaped (as repr does), cut to `limit` characters."""
    out = "".join(c if c == "\n" or unicodedata.category(c) not in FORBIDDEN_CATEGORIES
                  else repr(c)[1:-1] for c in text[:limit])
    return out + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def proc_status(pid: int, field: str) -> int | None:
    """A kB figure from /proc/PID/status (VmHWM: peak resident; VmRSS: resident now)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return None


def mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"
