"""The Corefile grammar: text in, plain frozen data out.

Users bring the Corefile they run CoreDNS with, so this module follows what
CoreDNS actually does when it reads one (its Caddyfile lexer and parser, from
``coredns/caddy``'s ``caddyfile`` package, and the key normalisation in
CoreDNS's ``core/dnsserver/register.go`` and ``plugin/normalize.go``) rather
than what a tidier grammar might prefer.  Where CoreDNS silently accepts
something that can only be a mistake (an unterminated quote, a missing ``}``,
an import cycle) we raise a :class:`CorefileError` instead, naming the file,
the line and the offending token.

The module knows nothing about what any directive means: it produces
:class:`ServerBlock` objects holding :class:`ZoneAddress` keys and a tree of
:class:`Directive` lines, and leaves the rest to the layers above.  The only
directive names it looks at are ``import`` (which is grammar: it splices
other files and snippets in) and ``bind``/``view`` (only to know when the
duplicate-zone check must be left to the layer that understands them).

Lexical rules (from ``caddyfile/lexer.go``):

* tokens are separated by white space (Go's ``unicode.IsSpace``); a ``\\r``
  is dropped without ending a word, so CRLF files read like LF files;
* a token that *starts* with ``"`` runs to the next unescaped ``"`` and may
  span lines; inside it only ``\\"`` is an escape, any other backslash is
  kept literally; a ``"`` in the middle of a word is an ordinary character;
* ``#`` outside quotes starts a comment up to the end of the line, even in
  the middle of a word (``foo#bar`` is the token ``foo``);
* there are no backtick strings and no line continuations;
* a leading byte-order mark is discarded;
* ``{`` and ``}`` are braces only when they are a whole token (a quoted
  ``"{"`` counts too, since CoreDNS compares token text only).

Environment references ``{$NAME}`` and ``{%NAME%}`` are replaced token by
token after lexing, as CoreDNS does (so a value containing spaces stays one
token); a variable that is not set becomes the empty string.

Unlike CoreDNS, reading is bounded (see the ``MAX_*`` limits below): only
regular files are read, each and all together of bounded size, with a
bounded number of imports, nesting depth and tokens, so that any input ends
quickly in a result or a :class:`CorefileError`, and a message quotes only a
short, escaped excerpt of what a file holds.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import json
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import pyparsing as pp

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_IMPORTED_FILES",
    "MAX_IMPORT_DEPTH",
    "MAX_NESTING",
    "MAX_TOKENS",
    "MAX_TOTAL_BYTES",
    "CorefileError",
    "Directive",
    "ServerBlock",
    "ZoneAddress",
    "excerpt",
    "normalize_zone",
    "parse",
    "parse_file",
    "printable",
    "read_regular_file",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Limits.  CoreDNS has none; a Corefile is trusted input, but it may import
# files an operator did not write (a ConfigMap, a conf.d directory) and it is
# re-read on every reload, so reading and parsing one must be bounded in
# memory and time whatever it holds.  Each limit is far above any real
# Corefile (the stock ones hold about a hundred tokens).

#: The Corefile, and each file it imports, may be at most this many bytes
#: (1 MiB, also the most a Kubernetes ConfigMap can hold).
MAX_FILE_BYTES = 1 << 20
#: Bytes read for one Corefile in all: the Corefile and every import.
MAX_TOTAL_BYTES = 8 << 20
#: Files one Corefile may import in all (each file a glob matches counts).
MAX_IMPORTED_FILES = 256
#: Tokens once every import and snippet is spliced in.
MAX_TOKENS = 100_000
#: Braces open at once, the server block's own included.
MAX_NESTING = 32
#: Imports (of files or snippets) inside imported text, one inside another.
MAX_IMPORT_DEPTH = 16
#: One token after environment substitution.
MAX_TOKEN_CHARS = 65_536
#: Entries looked at in one directory while matching an import glob.
MAX_GLOB_ENTRIES = 100_000

# What an error message quotes of a token, at most; and of anything at all.
_EXCERPT_CHARS = 40
_MAX_MESSAGE_CHARS = 1000


# --------------------------------------------------------------------------
# Text safe to print.  A message may quote what a file or an environment
# variable holds; it goes to a terminal or a log, so it must not carry
# control characters (a forged log line, an escape sequence), invisible
# ones (bidi overrides, zero-width spaces) or a file's whole contents.

def _escape_char(char: str) -> str:
    code = ord(char)
    if char in "\t\n\r":
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character Python calls unprintable escaped
    (``\\x1b``, ``\\u202e``): controls, format characters such as bidi
    overrides and zero-width spaces, separators other than the ASCII space.
    Other characters are kept as written."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text``, escaped by :func:`printable`,
    and how much was left out: what a message may quote of a token."""
    if len(text) <= limit:
        return printable(text)
    return f"{printable(text[:limit])}...({len(text) - limit:,} more characters)"


def describe_char(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character named unambiguously."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def _is_path(token: str) -> bool:
    return token.startswith(("/", "./", "../", "~/"))


def _safe_message(message: str, token: str | None) -> str:
    """The message with a long token cut to an excerpt, escaped and bounded.

    A token that is a path (it starts with ``/``, ``./``, ``../`` or ``~/``)
    is kept whole: the user needs it to find the file.
    """
    if token and len(token) > _EXCERPT_CHARS and not _is_path(token):
        short = excerpt(token)
        for quoted, replacement in ((repr(token), f"'{short}'"),
                                    (json.dumps(token, ensure_ascii=False), f'"{short}"'),
                                    (token, short)):
            message = message.replace(quoted, replacement)
    message = printable(message)
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "..."
    return message


# --------------------------------------------------------------------------
# Public data


class CorefileError(Exception):
    """A Corefile that CoreDNS would refuse (or that can only be a mistake).

    It carries the file and line so that the message points the user at the
    place to fix, and the offending token so that callers (and tests) need
    not parse the message.  ``str(e)`` is ``"<filename>:<line>: <message>"``,
    the form editors and terminals turn into a link.

    The message is made safe to print whoever wrote it: a token longer than
    a short excerpt is cut (unless it is a path), control and invisible
    characters are escaped (in the file name too), and the whole is bounded,
    so an error never replays a file's contents or a terminal escape into a
    log.  ``token`` keeps the offending token as it was.
    """

    filename: str
    line: int
    token: str | None
    message: str

    def __init__(self, filename: str, line: int, message: str, token: str | None = None) -> None:
        message = _safe_message(message, token)
        super().__init__(filename, line, message, token)
        self.filename = filename
        self.line = line
        self.token = token
        self.message = message

    def __str__(self) -> str:
        return f"{printable(self.filename)}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Directive:
    """One line of a server block, with the block it opens if any.

    CoreDNS hands each plugin a flat token stream and lets it find lines and
    blocks itself; we give the layers above the same information already
    grouped, which is what every plugin's setup code reconstructs anyway.
    Nested lines are Directives too (their ``name`` is the line's first
    token), so options such as ``fallthrough`` or ``pods`` inside a plugin's
    block are read the same way as plugins.  File and line numbers are kept
    for every token so errors found later can still point at the source,
    including lines that came from an imported file or a snippet.
    """

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    filename: str
    line: int
    arg_lines: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ZoneAddress:
    """A normalised server block key: what CoreDNS calls a ``zoneAddr``.

    Two keys are the same server when scheme, zone and port are equal, so
    only those take part in equality and hashing; ``key`` (the text as
    written, for messages) and ``port_given`` (whether the port was written
    or defaulted, which matters to anything emulating CoreDNS's
    ``-dns.port`` flag) do not.
    """

    scheme: str
    zone: str
    port: int
    key: str = field(default="", compare=False)
    port_given: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        # The form CoreDNS prints in its own messages, e.g. "dns://.:53".
        return f"{self.scheme}://{self.zone}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """One server block: the zones it serves and its directives, in order.

    A single written key can expand to several :class:`ZoneAddress` entries
    (a CIDR that is not on an octet/nibble boundary), so ``keys`` is the
    expanded list, in the order CoreDNS would configure them.
    """

    keys: tuple[ZoneAddress, ...]
    directives: tuple[Directive, ...]
    filename: str
    line: int


# --------------------------------------------------------------------------
# Lexical grammar (pyparsing)

# Go's unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space
# property.  Python's \s differs (it includes \x1c-\x1f), hence the list.
_SPACE_CHARS = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def _char_class(chars: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in chars)


_SPACE = _char_class(_SPACE_CHARS)
_SPACE_BUT_CR = _char_class(_SPACE_CHARS.replace("\r", ""))


@dataclass(frozen=True, slots=True)
class _Lexeme:
    """A raw match from the lexer: what kind, where, and the source text."""

    kind: str  # "word", "quoted" or "unterminated"
    loc: int
    raw: str


def _lexeme(kind: str) -> Callable[[str, int, pp.ParseResults], _Lexeme]:
    def action(_s: str, loc: int, toks: pp.ParseResults) -> _Lexeme:
        return _Lexeme(kind, loc, toks[0])

    return action


def _build_lexer() -> pp.ParserElement:
    # White space is matched explicitly (and suppressed) rather than left to
    # pyparsing's skipping: CoreDNS's notion of white space is not
    # pyparsing's default, and \r is special (skipped, but it does not end a
    # word), and exact match locations give exact line numbers.
    # One match for a whole run of white space and comments, however many
    # lines: what costs time is the number of matches, and only tokens are
    # counted against the budget.
    gap = pp.Regex(f"(?:[{_SPACE}]+|#[^\n]*)+").suppress()
    # "..." with \-escapes; the unrolled form stays linear on long strings.
    quoted = pp.Regex(r'"[^"\\]*(?:\\.[^"\\]*)*"', flags=re.DOTALL)
    quoted.set_parse_action(_lexeme("quoted"))
    # A quote that the rule above could not close runs to end of file.
    unterminated = pp.Regex(r'"[^\n]{0,30}')
    unterminated.set_parse_action(_lexeme("unterminated"))
    # A word cannot start with a quote (that is a quoted token) and stops at
    # white space or a comment; a \r inside it is kept here, dropped later.
    word = pp.Regex(f'[^{_SPACE}"#][^{_SPACE_BUT_CR}#]*')
    word.set_parse_action(_lexeme("word"))
    # Every character starts one of these, so scanning for them yields the
    # whole text, one lexeme after the other; scanning (rather than parsing
    # the whole text at once) lets _tokenize stop at its token budget.
    token = gap | quoted | unterminated | word
    token.leave_whitespace()
    # Locations must index the text as given (pyparsing expands tabs by
    # default), since line numbers are counted from them.
    token.parse_with_tabs()
    return token.streamline()


_LEXER = _build_lexer()


@dataclass(frozen=True, slots=True)
class _Token:
    """A token with what the parser needs beyond its text.

    ``origin`` identifies one reading of one file (or one expansion of a
    snippet): two tokens are on the same line only if they share an origin,
    so spliced-in tokens never run on from the line before the ``import``.
    ``chain`` lists the files and snippets that were being imported when
    this token was read, for cycle detection and messages.
    """

    text: str
    file: str
    line: int
    end_line: int
    origin: int
    chain: tuple[str, ...]


_origins = itertools.count(1)


def _unescape(body: str) -> str:
    # Only \" is an escape; any other backslash pair stays as written.  Pairs
    # are consumed left to right, so \\" is a backslash pair then a quote.
    return re.sub(r'\\(.)', lambda m: m.group(1) if m.group(1) == '"' else m.group(0), body, flags=re.DOTALL)


class _Budget:
    """What one Corefile has used of the limits, across all its files."""

    def __init__(self) -> None:
        self.tokens = 0
        self.bytes = 0  # read from files
        self.imports = 0  # files imported

    def add_tokens(self, count: int, filename: str, line: int, token: str | None) -> None:
        self.tokens += count
        if self.tokens > MAX_TOKENS:
            raise CorefileError(
                filename, line,
                f"the Corefile holds too many tokens: more than {MAX_TOKENS:,} once imports and "
                "snippets are spliced in", token)


# C0 and C1 control characters other than the white space Go's lexer skips
# (tab, line feed, vertical tab, form feed, carriage return, NEL), and DEL.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def _refuse_control_characters(text: str, filename: str) -> None:
    """A control character can only mean this is not a Corefile (a binary
    file, ``/proc/self/environ``): refuse it without quoting any of it."""
    found = _CONTROL_RE.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise CorefileError(
            filename, line,
            f"control character {describe_char(found.group())} in the file: a Corefile is text "
            "(is this the right file?)")


def _tokenize(text: str, filename: str, chain: tuple[str, ...], budget: _Budget) -> list[_Token]:
    if text.startswith("\ufeff"):
        text = text[1:]
    _refuse_control_characters(text, filename)
    origin = next(_origins)
    tokens: list[_Token] = []
    line, last = 1, 0
    for found, loc, _end in _LEXER.scan_string(text):
        if not found:
            continue  # white space or a comment
        lx = found[0]
        line += text.count("\n", last, lx.loc)
        last = lx.loc
        if lx.kind == "unterminated":
            raise CorefileError(filename, line, f"unterminated quote: {lx.raw!r} is never closed", lx.raw)
        if lx.kind == "quoted":
            value = _unescape(lx.raw[1:-1])
        else:
            value = lx.raw.replace("\r", "")
        budget.add_tokens(1, filename, line, value)
        tokens.append(_Token(value, filename, line, line + lx.raw.count("\n"), origin, chain))
    return tokens


# --------------------------------------------------------------------------
# Environment substitution (caddyfile/parse.go replaceEnvVars)

_MAX_SUBSTITUTIONS = 1000


def _substitute(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``{%NAME%}`` then ``{$NAME}`` references in one token.

    Like CoreDNS: an unset variable is the empty string, every occurrence
    of the same reference is replaced at once, scanning restarts from the
    beginning (so a value may itself contain references), an unclosed
    reference is left alone, and an empty name (``{$}``) stops the scan.
    Unlike CoreDNS we stop with an error instead of looping forever when a
    value refers to itself, or growing without end when it refers to itself
    twice (the token would double at every round).
    """
    for start, end in (("{%", "%}"), ("{$", "}")):
        if start not in text:
            continue
        rounds = 0
        index = text.find(start)
        while index != -1:
            stop = text.find(end, index)
            if stop == -1 or stop <= index + len(start):
                break
            ref = text[index : stop + len(end)]
            value = environ.get(ref[len(start) : -len(end)], "")
            # Measured before replacing: one round may multiply the length.
            if len(text) + text.count(ref) * (len(value) - len(ref)) > MAX_TOKEN_CHARS:
                raise ValueError(f"environment variable substitution makes a token longer than "
                                 f"{MAX_TOKEN_CHARS:,} characters")
            text = text.replace(ref, value)
            rounds += 1
            if rounds > _MAX_SUBSTITUTIONS:
                raise ValueError("environment variable substitution does not terminate")
            index = text.find(start)
    return text


# --------------------------------------------------------------------------
# Zone normalisation (core/dnsserver/register.go, plugin/normalize.go,
# plugin/pkg/cidr, plugin/pkg/parse/transport.go, miekg/dns)

# Schemes CoreDNS serves, with the port each defaults to.
_DEFAULT_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "https3": 443}
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_GO_INT_MAX = 2**63 - 1


def _is_fqdn(name: str) -> bool:
    # miekg/dns IsFqdn: a final dot that is not itself escaped.
    if not name.endswith("."):
        return False
    name = name[:-1]
    if not name.endswith("\\"):
        return True
    i = len(name) - 1
    while i >= 0 and name[i] == "\\":
        i -= 1
    # Go does this arithmetic on byte offsets, with i at the start of the
    # last non-backslash rune (or -1); reproduce it exactly.
    trailing = len(name) - 1 - i
    width = len(name[i].encode("utf-8", "surrogatepass")) if i >= 0 else 1
    return (trailing + width) % 2 != 0


def _fqdn(name: str) -> str:
    return name if _is_fqdn(name) else name + "."


def _is_domain_name(name: str) -> bool:
    """miekg/dns IsDomainName: lenient syntax, but label and name lengths."""
    if not name:
        return False
    b = _fqdn(name).encode("utf-8", "surrogatepass")
    off = begin = 0
    was_dot = escape = False
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0x5C:  # backslash: \X or \DDD counts as one octet
            escape = not escape
            if off + 1 > 256:
                return False
            if len(b) >= i + 4 and all(0x30 <= d <= 0x39 for d in b[i + 1 : i + 4]):
                i += 3
                begin += 3
            else:
                i += 1
                begin += 1
            was_dot = False
        elif c == 0x2E:  # dot
            escape = False
            if i == 0 and n > 1:
                return False  # leading dot, except the root "."
            if was_dot:
                return False  # empty label
            was_dot = True
            if i - begin >= 64:
                return False
            off += 1 + i - begin
            if off > 256:
                return False
            begin = i + 1
        else:
            escape = was_dot = False
        i += 1
    return not escape


def _parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    # Go's net.ParseCIDR: ADDRESS/DECIMAL, no zone, host bits may be set.
    addr, slash, mask = text.partition("/")
    if not slash or "%" in addr or not _DIGITS_RE.fullmatch(mask):
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    ones = int(mask)
    if ones > ip.max_prefixlen:
        return None
    return ipaddress.ip_network((ip, ones), strict=False)


def _reverse_zones(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """plugin/pkg/cidr Split + Reverse.

    A prefix on a label boundary (8 bits for IPv4, 4 for IPv6) is one zone;
    any other prefix is split into the subnets of the next longer boundary
    prefix, one zone each (10.0.0.0/17 becomes 128 /24 zones, not one /16).
    """
    boundary = 8 if net.version == 4 else 4
    ones = net.prefixlen
    if ones % boundary == 0:
        subnets = [net]
    else:
        subnets = list(net.subnets(new_prefix=-(-ones // boundary) * boundary))
    zones = []
    for sub in subnets:
        labels = sub.network_address.reverse_pointer.split(".")
        drop = (sub.max_prefixlen - sub.prefixlen) // boundary
        zones.append(".".join(labels[drop:]) + ".")
    return zones


def _split_host_port(text: str) -> tuple[list[str], int | None]:
    """plugin.SplitHostPort: a trailing ``:NUMBER`` is the port, the rest a
    domain name or a CIDR (which expands to reverse zones)."""
    port = None
    colon = text.rfind(":")
    if colon == len(text) - 1:  # also true for "" (Go: -1 == -1)
        raise ValueError(f'expecting data after last colon: "{text}"')
    if colon != -1:
        digits = text[colon + 1 :]
        if _INT_RE.fullmatch(digits) and -_GO_INT_MAX - 1 <= int(digits) <= _GO_INT_MAX:
            port = int(digits)
            text = text[:colon]
        elif _parse_cidr(text) is None:
            # CoreDNS keeps "zone:nan" whole, as the zone "zone:nan." on the
            # default port: a zone no query can be meant for.
            raise ValueError(_stray_colon(text, digits))
    if ":" in text and _parse_cidr(text) is None:
        raise ValueError(_stray_colon(text, None))
    _check_zone_characters(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > 255:
        raise ValueError(f"specified zone is too long: {size} > 255")
    if not _is_domain_name(text):
        hint = " (no zone before the port; write '.' for the root zone)" if not text else ""
        raise ValueError(f"zone is not a valid domain name: {text}{hint}")
    net = _parse_cidr(text)
    if net is None:
        return [text], port
    if text[0] == ":" or (text[0] == "0" and ":" in text):
        # CoreDNS refuses these (they include IPv4-mapped IPv6 forms).
        raise ValueError(f"invalid CIDR {text}")
    return _reverse_zones(net), port


def _stray_colon(text: str, port: str | None) -> str:
    """Why a ``:`` that does not start a port number is refused."""
    if text.startswith("["):
        return (f"'{printable(text)}' is an address, not a zone: a server block key names the zone "
                "it serves (to listen on an address, use bind)")
    if port is not None:
        return f"port '{printable(port)}' is not a number"
    return f"zone '{printable(text)}' holds a ':' (only a port number may follow the zone, after one ':')"


def _idna_form(text: str) -> str | None:
    """The ASCII (IDNA) form of a name, if the idna package is there and can make it."""
    try:
        import idna
        return idna.encode(text.rstrip("."), uts46=True).decode("ascii")
    except Exception:  # noqa: BLE001 - no package, or a name IDNA refuses: no hint
        return None


def _check_zone_characters(text: str) -> None:
    """Refuse what cannot be a zone name on the wire, naming the character.

    CoreDNS takes any text miekg/dns calls a name; but a query carries bytes,
    and a zone written with an invisible character (U+200B, U+202E) or any
    non-ASCII letter can never match one: the name that looks right in the
    Corefile is another name.  Escapes (``\\DDD``) still write any byte.
    """
    for char in text:
        if " " < char < "\x7f":
            continue
        if char == " " or not char.isprintable():
            raise ValueError(f"zone '{printable(text)}' holds {describe_char(char)}, which cannot be "
                             "part of a zone name")
        ascii_form = _idna_form(text)
        raise ValueError(f"zone '{text}' holds {describe_char(char)}, not ASCII: queries carry "
                         "the IDNA form of a name" + (f"; write {ascii_form}" if ascii_form else ""))


def normalize_zone(key: str) -> list[ZoneAddress]:
    """Normalise one server block key (or a zone given as a directive arg).

    ``[SCHEME://]ZONE[:PORT]``: the scheme defaults to ``dns`` and picks the
    default port (53, or 853/443 for the encrypted transports); the zone is
    lowercased and fully qualified; a CIDR becomes its reverse zone(s).
    This is what CoreDNS's ``InspectServerBlocks`` does, including much of
    its leniency: what miekg/dns calls a domain name is accepted (``a,b`` is
    the zone ``a,b.``) and ``:1053`` (no zone) is an error.  Stricter than
    CoreDNS, where it keeps a zone no query can match or fails later: an
    unknown scheme, a port outside 0..65535, a ``:`` not followed by a port
    number (CoreDNS serves ``cluster.local:nan`` as the zone
    ``cluster.local:nan.`` on port 53, and ``[::1]:53`` as ``[::1].``), and
    a zone holding a control, invisible or non-ASCII character.

    Raises ValueError with CoreDNS's wording for anything it refuses.
    """
    original = key
    scheme = "dns"
    m = _SCHEME_RE.match(key)
    if m:
        scheme = m.group(1).lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"unknown scheme {m.group(1)!r} (expected one of {', '.join(_DEFAULT_PORTS)})")
        key = key[m.end() :]
    hosts, port = _split_host_port(key)
    for host in hosts:
        # CoreDNS re-checks the fully-qualified form (fuzzing found names
        # that pass unqualified but break once qualified).
        _split_host_port(_fqdn(host))
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    given = port is not None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    return [ZoneAddress(scheme, _fqdn(h).lower(), port, original, given) for h in hosts]


# --------------------------------------------------------------------------
# Imports


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


class _TooMany(Exception):
    """A glob that would import more files than the limits allow."""


def _glob(pattern: str, most: int) -> list[str]:
    """Go's filepath.Glob: ``*`` matches dot files too, results sorted per
    directory, a pattern without wildcards matches if the path exists.

    Bounded: a directory with more than MAX_GLOB_ENTRIES entries, or more
    than ``most`` matches, raises _TooMany instead of listing on.
    """
    if not _has_magic(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    head, tail = os.path.split(pattern)
    dirs = _glob(head, most) if _has_magic(head) else [head]
    found: list[str] = []
    for d in dirs:
        names = []
        try:
            with os.scandir(d or ".") as entries:
                for seen, entry in enumerate(entries, 1):
                    if seen > MAX_GLOB_ENTRIES:
                        raise _TooMany(f"directory {d or '.'!r} has more than {MAX_GLOB_ENTRIES:,} entries")
                    if fnmatch.fnmatchcase(entry.name, tail):
                        names.append(entry.name)
                        if len(found) + len(names) > most:
                            raise _TooMany(f"it matches more than {most:,} file(s)")
        except OSError:
            continue
        found.extend(os.path.join(d, name) for name in sorted(names))
    return found


class _Refused(ValueError):
    """A file that must not be read as configuration; the message says why."""


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_regular(path: str) -> int:
    """Open ``path`` for reading only if it is a regular file; return the fd.

    Opened without blocking, so a FIFO swapped in after a stat cannot hang
    the open (nor the read: it is refused once opened, by fstat).
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why is not None:
            raise _Refused(why)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes.

    For every file the configuration names (the Corefile, its imports, a
    kubeconfig, certificates).  The file is looked at before it is opened (a
    device such as /dev/zero or a FIFO is refused without opening it:
    opening some devices does something) and again once open; the size is
    checked while reading too, since files in /proc report a size of 0.
    Raises OSError, or ValueError saying why the file is refused.
    """
    path = os.fspath(path)
    why = _not_regular(os.stat(path).st_mode)
    if why is not None:
        raise _Refused(why)
    fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise _Refused(f"too large: {size:,} bytes (at most {limit:,})")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 16, limit + 1 - total)):
            total += len(chunk)
            if total > limit:
                raise _Refused(f"too large: more than {limit:,} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_bounded(path: str, budget: _Budget) -> bytes:
    """:func:`read_regular_file`, counted against the Corefile's total."""
    data = read_regular_file(path)
    budget.bytes += len(data)
    if budget.bytes > MAX_TOTAL_BYTES:
        raise _Refused(f"the Corefile and its imports hold more than {MAX_TOTAL_BYTES:,} bytes")
    return data


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorefileError(path, line, "file is not valid UTF-8", None) from e


# --------------------------------------------------------------------------
# Block structure


# Directives that change which listener a server block is on, so two
# blocks with the same zone and port can legitimately coexist; the
# duplicate check for those blocks belongs to the layer that reads them.
_LISTENER_DIRECTIVES = frozenset({"bind", "view"})


class _Parser:
    """A reader over the token stream, splicing imports in as it goes.

    The structure follows caddyfile/parse.go: server block keys up to a
    ``{`` (or the end of the first line, for a single brace-less block);
    one directive per line; a ``{`` on a directive's line opens a nested
    block that a ``}`` closes.  Imports are replaced by the imported tokens
    in the stream, so everything downstream sees one token stream.

    The tokens still to read are a stack (the next one last), so splicing
    an import in costs what it brings, not what follows it.  Nested blocks
    are read recursively, at most MAX_NESTING deep; imports and snippets
    nest at most MAX_IMPORT_DEPTH deep and bring MAX_TOKENS at most in all.
    """

    def __init__(self, tokens: list[_Token], environ: Mapping[str, str], budget: _Budget) -> None:
        self.pending = tokens[::-1]
        self.prev: _Token | None = None  # the token taken last
        self.environ = environ
        self.budget = budget
        self.snippets: dict[str, list[_Token]] = {}

    # -- token access -----------------------------------------------------

    def peek(self) -> _Token | None:
        return self.pending[-1] if self.pending else None

    def take(self) -> _Token:
        tok = self.pending.pop()
        self.prev = tok
        return tok

    @staticmethod
    def same_line(a: _Token, b: _Token) -> bool:
        return a.origin == b.origin and a.end_line == b.line

    def at_new_line(self) -> bool:
        tok = self.peek()
        return self.prev is None or tok is None or not self.same_line(self.prev, tok)

    def next_on_line(self) -> _Token | None:
        """The next token if it continues the line of the one just taken."""
        tok = self.peek()
        if tok is None or self.prev is None or not self.same_line(self.prev, tok):
            return None
        return tok

    def env(self, tok: _Token) -> str:
        try:
            return _substitute(tok.text, self.environ)
        except ValueError as e:
            raise self.error(tok, f"{e} in {tok.text!r}") from None

    @staticmethod
    def error(tok: _Token, message: str) -> CorefileError:
        return CorefileError(tok.file, tok.line, message, tok.text)

    # -- imports ------------------------------------------------------------

    def expand_import(self) -> None:
        """Replace ``import PATTERN`` (the current line) by what it names."""
        before = self.prev
        imp = self.take()
        pat = self.next_on_line()
        if pat is None:
            raise self.error(imp, "'import' needs a file, glob pattern or snippet name")
        self.take()
        extra = self.next_on_line()
        if extra is not None:
            raise self.error(extra, f"unexpected {extra.text!r}: import takes only one argument (glob pattern, file or snippet)")
        pattern = self.env(pat)
        if not pattern:
            raise self.error(pat, f"import {pat.text!r} requires a non-empty file path")
        if len(pat.chain) > MAX_IMPORT_DEPTH:
            raise self.error(pat, f"imports nested too deeply: more than {MAX_IMPORT_DEPTH} imports one "
                                  f"inside another (... -> {' -> '.join(pat.chain[-3:])} -> {pattern})")
        if pattern in self.snippets:
            new = self.expand_snippet(pat, pattern)
        else:
            new = self.import_files(pat, pattern)
        self.pending.extend(reversed(new))
        self.prev = before  # the imported lines never run on from the line before

    def expand_snippet(self, pat: _Token, name: str) -> list[_Token]:
        marker = f"({name})"
        if marker in pat.chain:
            raise self.error(pat, f"import cycle: snippet {name!r} is already being imported ({' -> '.join(pat.chain + (marker,))})")
        body = self.snippets[name]
        self.budget.add_tokens(len(body), pat.file, pat.line, pat.text)
        origin = next(_origins)
        chain = pat.chain + (marker,)
        return [replace(t, origin=origin, chain=chain) for t in body]

    def import_files(self, pat: _Token, pattern: str) -> list[_Token]:
        # Relative to the file holding the import token (for a snippet, the
        # file that defined it), as Caddy does.
        if os.path.isabs(pattern):
            full = pattern
        else:
            full = os.path.join(os.path.dirname(os.path.abspath(pat.file)), pattern)
        if full.count("*") > 1 or full.count("?") > 1 or ("[" in full and "]" in full):
            raise self.error(pat, f"glob pattern may only contain one wildcard (*), but has others: {pattern!r}")
        if "[" in full:
            raise self.error(pat, f"bad glob pattern {pattern!r}: unclosed '['")
        allowed = MAX_IMPORTED_FILES - self.budget.imports
        try:
            matches = _glob(full, allowed)
        except _TooMany as e:
            raise self.error(pat, f"cannot import {pattern!r}: {e}; a Corefile may import "
                                  f"{MAX_IMPORTED_FILES:,} files in all") from None
        if not matches:
            if any(c in full for c in "*?[]"):
                log.warning("%s:%d: no files match import glob pattern %r", pat.file, pat.line, pattern)
                return []
            if "/" in pattern or os.sep in pattern:
                raise self.error(pat, f"file to import not found: {pattern!r} ({full})")
            raise self.error(
                pat,
                f"unknown snippet {pattern!r} in import (no snippet of that name is defined above it, "
                f"and there is no file {full})",
            )
        if len(matches) > allowed:
            raise self.error(pat, f"cannot import {pattern!r}: a Corefile may import "
                                  f"{MAX_IMPORTED_FILES:,} files in all")
        tokens: list[_Token] = []
        for path in matches:
            path = os.path.abspath(path)
            if path in pat.chain:
                raise self.error(pat, f"import cycle: {pattern!r} is already being imported ({' -> '.join(pat.chain + (path,))})")
            try:
                data = _read_bounded(path, self.budget)
            except (OSError, ValueError) as e:
                why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
                raise self.error(pat, f"could not import {path!r}: {why}") from None
            self.budget.imports += 1
            tokens.extend(_tokenize(_decode(data, path), path, pat.chain + (path,), self.budget))
        return tokens

    # -- top level ----------------------------------------------------------

    def parse_all(self) -> list[tuple[list[tuple[_Token, str]], list[Directive]]]:
        blocks = []
        while (tok := self.peek()) is not None:
            if tok.text == "import" and self.at_new_line():
                self.expand_import()
                continue
            block = self.parse_block()
            if block is not None:
                blocks.append(block)
        return blocks

    def parse_keys(self) -> tuple[list[tuple[_Token, str]], bool]:
        """Read the keys of a server block, up to ``{`` or the end of line.

        Returns the (token, text) pairs, with env substitution applied and
        empty results dropped, and whether any key token was written at all.
        """
        keys: list[tuple[_Token, str]] = []
        written = False
        expecting = False  # a trailing comma promises another key
        last: _Token | None = None
        while (tok := self.peek()) is not None:
            if written and not expecting and self.at_new_line():
                break
            if tok.text == "import" and self.at_new_line():
                self.expand_import()
                continue
            if tok.text == "}":
                raise self.error(tok, "unexpected '}' (no server block is open here)")
            if tok.text == "{":
                if expecting:
                    raise self.error(tok, "expected another address but found '{' - check for an extra comma")
                break
            last = self.take()
            written = True
            text = self.env(tok)
            if text:
                expecting = text.endswith(",")
                keys.append((tok, text[:-1] if expecting else text))
            else:
                expecting = False
        if expecting and self.peek() is None and last is not None:
            raise self.error(last, f"unexpected end of file after {last.text!r}: expected another address")
        return keys, written

    def parse_block(self) -> tuple[list[tuple[_Token, str]], list[Directive]] | None:
        first = self.peek()
        assert first is not None
        keys, written = self.parse_keys()
        tok = self.peek()
        if not written:
            # Caddy silently drops a block with no keys; that is a mistake.
            raise self.error(first, "server block has no keys: expected a zone address before '{'")
        if len(keys) == 1 and keys[0][1].startswith("(") and keys[0][1].endswith(")"):
            self.define_snippet(keys[0][0], keys[0][1][1:-1])
            return None
        if tok is None:
            directives: list[Directive] = []  # keys alone, nothing else
        elif tok.text == "{":
            directives = self.parse_directives(self.take())
        else:
            # A single server block may omit its braces: the rest of the
            # file is its body.
            directives = self.parse_directives(None)
        if not keys:
            # Every key was an environment reference that came out empty;
            # CoreDNS drops such a block, which makes it a way to switch a
            # block off from the environment.
            return None
        return keys, directives

    def define_snippet(self, key_tok: _Token, name: str) -> None:
        if name in self.snippets:
            raise self.error(key_tok, f"redeclaration of previously declared snippet {name!r}")
        brace = self.peek()
        if brace is None or brace.text != "{":
            where = brace if brace is not None else key_tok
            found = f"{brace.text!r}" if brace is not None else "end of file"
            raise self.error(where, f"snippet {key_tok.text!r} must be followed by '{{', found {found}")
        self.take()
        body: list[_Token] = []
        depth = 1
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error(brace, f"unclosed '{{' of snippet {key_tok.text!r}: no matching '}}' before end of file")
            self.take()
            if tok.text == "}":
                depth -= 1
                if depth == 0:
                    break
            elif tok.text == "{":
                depth += 1
                if depth > MAX_NESTING:
                    raise self.too_deep(tok)
            body.append(tok)
        # Caddy refuses a snippet that imports itself even if never used.
        for j, tok in enumerate(body[:-1]):
            if tok.text == "import" and (j == 0 or not self.same_line(body[j - 1], tok)):
                if self.same_line(tok, body[j + 1]) and self.env(body[j + 1]) == name:
                    raise self.error(body[j + 1], f"import cycle: snippet {name!r} imports itself")
        self.snippets[name] = body

    # -- directives ---------------------------------------------------------

    def parse_directives(self, brace: _Token | None) -> list[Directive]:
        """The body of a server block, up to its ``}`` (or end of file when
        ``brace`` is None, for a brace-less single block)."""
        directives: list[Directive] = []
        while True:
            tok = self.peek()
            if tok is None:
                if brace is not None:
                    raise self.error(brace, "unclosed '{': no matching '}' before end of file")
                return directives
            if tok.text == "}":
                if brace is not None:
                    self.take()
                    return directives
                raise self.error(
                    tok,
                    "unexpected '}' (no '{' opened this server block: "
                    "is the '{' after its keys separated from them by a space?)",
                )
            if tok.text == "import":
                self.expand_import()
                continue
            if tok.text == "{":
                raise self.error(tok, "unexpected '{': a block must open on the line of its directive")
            directives.append(self.parse_directive(nested=False, depth=1))

    @classmethod
    def too_deep(cls, brace: _Token) -> CorefileError:
        return cls.error(brace, f"blocks nested too deeply: more than {MAX_NESTING} levels of '{{'")

    def parse_nested_block(self, brace: _Token, depth: int) -> list[Directive]:
        """The lines of a block opened by ``brace``, ``depth`` braces deep."""
        if depth > MAX_NESTING:
            raise self.too_deep(brace)
        lines: list[Directive] = []
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error(brace, "unclosed '{': no matching '}' before end of file")
            if tok.text == "}":
                self.take()
                return lines
            if tok.text == "import" and self.at_new_line():
                self.expand_import()
                continue
            if tok.text == "{":
                raise self.error(tok, "unexpected '{': a block must open on the line of its directive")
            lines.append(self.parse_directive(nested=True, depth=depth))

    def parse_directive(self, nested: bool, depth: int) -> Directive:
        """One line and the block it opens; ``depth``: the braces open around it."""
        name = self.take()
        args: list[str] = []
        arg_lines: list[int] = []
        block: list[Directive] = []
        while (tok := self.next_on_line()) is not None:
            if tok.text == "{":
                block = self.parse_nested_block(self.take(), depth + 1)
                after = self.next_on_line()
                if after is not None and not (nested and after.text == "}"):
                    raise self.error(after, f"unexpected {after.text!r} after '}}' on the same line")
                break
            if tok.text == "}":
                if nested:
                    break  # closes the enclosing block; the caller takes it
                raise self.error(tok, "unexpected '}' (the '}' closing a server block must start a line)")
            self.take()
            args.append(self.env(tok))
            arg_lines.append(tok.line)
        return Directive(self.env(name), tuple(args), tuple(block), name.file, name.line, tuple(arg_lines))


# --------------------------------------------------------------------------
# Entry points


def _check_duplicates(blocks: list[ServerBlock], key_tokens: list[list[_Token]]) -> None:
    seen: dict[ZoneAddress, tuple[str, int]] = {}
    for block, toks in zip(blocks, key_tokens):
        if any(d.name in _LISTENER_DIRECTIVES for d in block.directives):
            continue
        for za, tok in zip(block.keys, toks):
            if za in seen:
                f, n = seen[za]
                raise CorefileError(
                    tok.file,
                    tok.line,
                    f"key {za.key!r}: cannot serve {za} - it is already defined at {f}:{n}",
                    tok.text,
                )
            seen[za] = (tok.file, tok.line)


def parse(text: str, filename: str = "Corefile", *, environ: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
    """Parse Corefile text into server blocks.

    ``filename`` is used in messages and as the base for relative imports
    (its directory; the current directory for a bare name).  ``environ``
    replaces ``os.environ`` for ``{$VAR}`` substitution.  An empty Corefile
    gives an empty tuple (CoreDNS would then run its built-in default,
    ``.:53 { whoami log }``; that choice belongs to the caller).  The text
    is held to the limits of a file (at most MAX_FILE_BYTES characters).
    """
    if len(text) > MAX_FILE_BYTES:
        raise CorefileError(filename, 0, f"the Corefile is too large: {len(text):,} characters "
                                         f"(at most {MAX_FILE_BYTES:,})")
    return _parse(text, filename, os.environ if environ is None else environ, _Budget())


def _parse(text: str, filename: str, env: Mapping[str, str], budget: _Budget) -> tuple[ServerBlock, ...]:
    tokens = _tokenize(text, filename, (os.path.abspath(filename),), budget)
    parser = _Parser(tokens, env, budget)
    blocks: list[ServerBlock] = []
    key_tokens: list[list[_Token]] = []
    for keys, directives in parser.parse_all():
        addresses: list[ZoneAddress] = []
        toks: list[_Token] = []
        for tok, key in keys:
            try:
                expanded = normalize_zone(key)
            except ValueError as e:
                raise CorefileError(tok.file, tok.line, f"invalid server block key {key!r}: {e}", tok.text) from None
            addresses.extend(expanded)
            toks.extend([tok] * len(expanded))
        first = keys[0][0]
        blocks.append(ServerBlock(tuple(addresses), tuple(directives), first.file, first.line))
        key_tokens.append(toks)
    _check_duplicates(blocks, key_tokens)
    return tuple(blocks)


def parse_file(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
    """Read and parse a Corefile; imports are relative to its directory.

    Only a regular file is read (a FIFO or a device is refused before it is
    opened, and a FIFO put in its place by then cannot block the read), of
    at most MAX_FILE_BYTES; the other limits are :func:`parse`'s.
    """
    name = os.fspath(path)
    budget = _Budget()
    try:
        data = _read_bounded(name, budget)
    except (OSError, ValueError) as e:
        why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
        raise CorefileError(name, 0, f"cannot read Corefile: {why}") from e
    return _parse(_decode(data, name), name, os.environ if environ is None else environ, budget)
