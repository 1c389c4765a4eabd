"""One rewrite rule from its words: CoreDNS's ``newRule`` and the constructors it calls,
with their checks in the same order and their messages.

:func:`new_rule` raises :class:`RuleError` carrying CoreDNS's message and the index of
the word to blame (the directive's setup turns it into a located Corefile error).
"""

from __future__ import annotations

import re
from typing import Any

from kubernetai.pkg.dnscodes import STRING_TO_CLASS, STRING_TO_RCODE, STRING_TO_TYPE
from kubernetai.plugins.rewrite import edns0
from kubernetai.plugins.rewrite.matching import (
    MAX_REGEXP_LEN,
    RegexError,
    RegexRewriter,
    SuffixRewriter,
    check_pattern,
    compile_pattern,
)
from kubernetai.plugins.rewrite.names import normalize
from kubernetai.plugins.rewrite.response import NameResponse, ValueResponse
from kubernetai.plugins.rewrite.rules import (
    EXACT,
    KINDS,
    PREFIX,
    REGEX,
    SUBSTRING,
    SUFFIX,
    ClassRule,
    CnameRule,
    NameRule,
    RcodeRule,
    TTLRule,
    TypeRule,
    matcher,
)
from kubernetai.plugins.rewrite.state import CONTINUE, STOP
from kubernetai.plugins.rewrite.tables import ParseUintError, go_quote, parse_uint

__all__ = ["RuleError", "new_rule"]

Rule = Any


class RuleError(ValueError):
    """A rule CoreDNS refuses: its message, and which word (an index into the rule's
    words; None: the rule as a whole)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index


def new_rule(args: list[str]) -> Rule:
    """CoreDNS's ``newRule``: ``[continue|stop] FIELD ...``."""
    if not args:
        raise RuleError("no rule type specified for rewrite")
    first = args[0].lower()
    mode = STOP
    if first in (CONTINUE, STOP):
        mode = first
        if len(args) < 2:
            raise RuleError(f"{first} rule must begin with a rule type", 0)
        field = args[1].lower()
        count = len(args) - 1
        start = 2
    else:
        field = first
        count = len(args)
        start = 1
    if field == "answer":
        raise RuleError("response rewrites must begin with a name rule", start - 1)
    if field in ("class", "type") and count != 3:
        raise RuleError(f"{field} rules must have exactly two arguments", start - 1)
    build = _BUILDERS.get(field)
    if build is None:
        raise RuleError(f"invalid rule type {go_quote(args[0])}", start - 1)
    try:
        return build(mode, args[start:])
    except RuleError as error:
        if error.index is not None:
            error.index += start           # an index into the rule's own words
        raise


def _error(message: str, index: int | None = None) -> RuleError:
    return RuleError(message, index)


# -- name -------------------------------------------------------------------------------

def _regex(source: str, template: str, index: int) -> re.Pattern[str]:
    try:
        return check_pattern(source, template)
    except RegexError as error:
        raise _error(str(error), index) from None


def _name_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise _error("too few arguments for a name rule", len(args) - 1)
    if len(args) == 2:
        kind, source, target = EXACT, normalize(args[0]), normalize(args[1])
        at = 0
    else:
        kind = args[0].lower()
        at = 1
        if kind == REGEX:
            source, target = args[1], args[2]
        else:
            source, target = normalize(args[1]), normalize(args[2])
    auto = False
    answers: list[Any] = []
    if len(args) > 3:
        auto, answers = _answer_rules(kind, args, 3)
    if kind == EXACT:
        _regex(target, source, at + 1)
        return NameRule(mode, EXACT, source, target, True, answers)
    if kind in (PREFIX, SUBSTRING):
        return NameRule(mode, kind, source, target, auto, answers)
    if kind == SUFFIX:
        static: list[Any] = []
        if auto:
            back = SuffixRewriter(target, source)
            static = [NameResponse(back), ValueResponse(back)]
        return NameRule(mode, SUFFIX, source, target, False, static + answers)
    if kind == REGEX:
        pattern = _regex(source, target, at)
        return NameRule(mode, REGEX, pattern, normalize(args[2]), auto, answers)
    raise _error("name rule supports only exact, prefix, suffix, substring, and regex name "
                 f"matching, received: {kind}", 0)


def _answer_rules(name: str, words: list[str], offset: int) -> tuple[bool, list[Any]]:
    """CoreDNS's ``parseAnswerRules``: ``answer auto``, ``answer name FROM TO``,
    ``answer value FROM TO``, the word ``answer`` optional after the first."""
    args = words[offset:]
    auto = False
    rules: list[Any] = []
    names = 0
    last = ""
    if len(args) < 2:
        raise _error(f"invalid arguments for {name} rule", offset)
    arg = 0
    while arg < len(args):
        if last == "" and args[arg] != "answer":
            raise _error("exceeded the number of arguments for a non-answer rule argument "
                         f"for {name} rule", offset + arg)
        if args[arg] == "answer":
            arg += 1
        if len(args) - arg == 0:
            raise _error(f"type missing for answer rule for {name} rule", offset + arg - 1)
        last = args[arg]
        arg += 1
        if last == "auto":
            auto = True
            continue
        if last in ("name", "value"):
            if len(args) - arg < 2:
                raise _error(f"{last} answer rule for {name} rule: 2 arguments required",
                             offset + arg - 1)
            source, target = args[arg], args[arg + 1]
            try:
                pattern = check_pattern(source, target)
            except RegexError as error:
                raise _error(f"{last} answer rule for {name} rule: {error}",
                             offset + arg) from None
            rewriter = RegexRewriter(pattern, normalize(target))
            if last == "name":
                rules.append(NameResponse(rewriter))
                names += 1
            else:
                rules.append(ValueResponse(rewriter))
            arg += 2
            continue
        raise _error(f"invalid type {go_quote(last)} for answer rule for {name} rule",
                     offset + arg - 1)
    if auto and names:
        raise _error("auto name answer rule cannot be combined with explicit name anwer "
                     "rules", offset)
    return auto, rules


# -- type, class ------------------------------------------------------------------------

def _codes(args: list[str], table: dict[str, int], what: str) -> list[int]:
    """The numbers of the first two words, looked up upper-cased in miekg's ``table``."""
    codes = []
    for index, word in enumerate(args[:2]):
        code = table.get(word.upper())
        if code is None:
            raise _error(f"invalid {what} {go_quote(word.upper())}", index)
        codes.append(code)
    return codes


def _type_rule(mode: str, args: list[str]) -> Rule:
    codes = _codes(args, STRING_TO_TYPE, "type")
    return TypeRule(mode, codes[0], codes[1])


def _class_rule(mode: str, args: list[str]) -> Rule:
    codes = _codes(args, STRING_TO_CLASS, "class")
    return ClassRule(mode, codes[0], codes[1])


# -- ttl, rcode -------------------------------------------------------------------------

def _name_matcher(kind: str, word: str, field: str, index: int) -> Any:
    kind = kind.lower()
    if kind in (EXACT, PREFIX, SUFFIX, SUBSTRING):
        return matcher(kind, normalize(word))
    if kind == REGEX:
        if len(word) > MAX_REGEXP_LEN:
            raise _error(f"regex pattern too long in a {field} rule: {len(word)} > "
                         f"{MAX_REGEXP_LEN}", index + 1)
        pattern = compile_pattern(word)
        if pattern is None:
            raise _error(f"invalid regex pattern in a {field} rule: {word}", index + 1)
        return matcher(REGEX, pattern)
    raise _error(f"{field} rule supports only exact, prefix, suffix, substring, and regex "
                 "name matching", index)


def ttl_range(text: str) -> tuple[int, int] | None:
    """CoreDNS's ``isValidTTL``: ``SECONDS``, ``MIN-MAX``, ``MIN-`` or ``-MAX``."""
    parts = text.split("-")
    try:
        if len(parts) == 1:
            value = parse_uint(parts[0], 10, 32)
            return value, value
        if len(parts) == 2:
            low = parse_uint(parts[0], 10, 32) if parts[0] else 0
            if not parts[1]:
                if not parts[0]:
                    return None
                high = 2147483647
            else:
                high = parse_uint(parts[1], 10, 32)
            return (low, high) if low <= high else None
    except ParseUintError:
        return None
    return None


def _ttl_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise _error(f"too few ({len(args)}) arguments for a ttl rule",
                     len(args) - 1)
    text = args[1] if len(args) == 2 else args[2] if len(args) == 3 else ""
    limits = ttl_range(text)
    if limits is None:
        raise _error(f"invalid TTL '{text}' for a ttl rule", min(len(args) - 1, 2))
    if len(args) == 3:
        return TTLRule(mode, _name_matcher(args[0], args[1], "ttl", 0), *limits)
    return TTLRule(mode, matcher(EXACT, normalize(args[0])), *limits)


def rcode_value(text: str) -> int | None:
    """CoreDNS's ``isValidRCode``: 0 to 23, or a name of miekg's."""
    try:
        value = parse_uint(text, 10, 32)
        if value <= 23:
            return value
    except ParseUintError:
        pass
    return STRING_TO_RCODE.get(text.upper())


def _rcode_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 3:
        raise _error(f"too few ({len(args)}) arguments for a rcode rule",
                     len(args) - 1)
    old_text, new_text, at = "", "", min(len(args) - 1, 3)
    if len(args) == 3:
        old_text, new_text, at = args[1], args[2], 1
    elif len(args) == 4:
        old_text, new_text, at = args[2], args[3], 2
    old = rcode_value(old_text)
    if old is None:
        raise _error(f"invalid matching RCODE '{old_text}' for a rcode rule", at)
    new = rcode_value(new_text)
    if new is None:
        raise _error(f"invalid replacement RCODE '{new_text}' for a rcode rule", at + 1)
    if len(args) == 4:
        return RcodeRule(mode, _name_matcher(args[0], args[1], "rcode", 0), old, new)
    return RcodeRule(mode, matcher(EXACT, normalize(args[0])), old, new)


# -- cname ------------------------------------------------------------------------------

def _cname_rule(mode: str, args: list[str]) -> Rule:
    if len(args) == 3:
        kind = args[0].lower()
        if kind not in KINDS:
            raise _error(f"unknown cname rewrite type: {kind}", 0)
        source, target = args[1].lower(), args[2].lower()
        at = 1
    elif len(args) == 2:
        kind, source, target, at = EXACT, args[0].lower(), args[1].lower(), 0
    else:
        raise _error(f"too few ({len(args)}) arguments for a cname rule",
                     len(args) - 1)
    if kind == EXACT:
        source, target = normalize(source), normalize(target)
    pattern = None
    if kind == REGEX:
        if len(source) > MAX_REGEXP_LEN:
            raise _error(f"regex pattern too long in a cname rule: {len(source)} > "
                         f"{MAX_REGEXP_LEN}", at)
        try:
            pattern = re.compile(source)
        except (re.error, RecursionError, OverflowError) as error:
            raise _error(f"invalid cname rewrite regex pattern: error parsing regexp: "
                         f"{error}: `{source}`", at) from None
    return CnameRule(mode, kind, source, target, pattern)


# -- edns0 ------------------------------------------------------------------------------

def _code(word: str, index: int) -> int:
    try:
        return parse_uint(word, 0, 16)
    except ParseUintError as error:
        raise _error(str(error), index) from None


def _hex(text: str, index: int) -> bytes:
    """Go's ``hex.DecodeString``, with its messages."""
    for char in text:
        if char not in "0123456789abcdefABCDEF":
            raise _error(f"encoding/hex: invalid byte: U+{ord(char):04X} {_go_rune(char)}",
                         index)
    if len(text) % 2:
        raise _error("encoding/hex: odd length hex string", index)
    return bytes.fromhex(text)


def _go_rune(char: str) -> str:
    return "'" + (char if char.isprintable() and char != "'" else
                  ("\\'" if char == "'" else f"\\x{ord(char):02x}")) + "'"


def _is_variable(word: str) -> bool:
    if word in edns0.VARIABLES:
        return True
    label = word[1:-1]
    slash = label.find("/")
    return 0 < slash < len(label) - 1


def _edns0_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise _error("too few arguments for an EDNS0 rule", len(args) - 1)
    kind = args[0].lower()
    action = args[1].lower()
    if action == edns0.UNSET:
        return _edns0_unset(mode, kind, args)
    if action not in (edns0.APPEND, edns0.REPLACE, edns0.SET):
        raise _error(f"invalid action: {go_quote(action)}", 1)
    if args[-1] == "revert":
        # Undoes the option in the response: the response's OPT record here is the
        # server's own, which never carries what a rule added, so there is nothing to
        # undo (see README).
        args = args[:-1]
    if kind == "local":
        if len(args) != 4:
            raise _error("EDNS0 local rules require three or four args", 0)
        code = _code(args[2], 2)
        data = args[3]
        if data.startswith("{") and data.endswith("}"):
            if not _is_variable(data):
                raise _error(f"unsupported variable name {go_quote(data)}", 3)
            return edns0.VariableRule(mode, action, code, data)
        raw = _hex(data[2:], 3) if data.startswith("0x") else data.encode("utf-8",
                                                                         "surrogateescape")
        return edns0.LocalRule(mode, action, code, raw)
    if kind == "nsid":
        if len(args) != 2:
            raise _error("EDNS0 NSID rules can accept no more than one arg", 2)
        return edns0.NsidRule(mode, action)
    if kind == "subnet":
        if len(args) != 4:
            raise _error("EDNS0 subnet rules require three or four args", 0)
        v4 = _code(args[2], 2)
        if v4 > 32:
            raise _error(f"invalid IPv4 bit mask length {v4}", 2)
        v6 = _code(args[3], 3)
        if v6 > 128:
            raise _error(f"invalid IPv6 bit mask length {v6}", 3)
        return edns0.SubnetRule(mode, action, v4, v6)
    raise _error(f"invalid rule type {go_quote(kind)}", 0)


def _edns0_unset(mode: str, kind: str, args: list[str]) -> Rule:
    if kind == "local":
        if len(args) != 3:
            raise _error("local unset action requires exactly two arguments", 1)
        return edns0.LocalRule(mode, edns0.UNSET, _code(args[2], 2), b"")
    if kind in ("nsid", "subnet"):
        if len(args) != 2:
            raise _error(f"{kind} unset action requires exactly one argument", 2)
        if kind == "nsid":
            return edns0.NsidRule(mode, edns0.UNSET)
        return edns0.SubnetRule(mode, edns0.UNSET, 0, 0)
    raise _error(f"invalid rule type {go_quote(kind)}", 0)


_BUILDERS = {"name": _name_rule, "class": _class_rule, "type": _type_rule,
             "edns0": _edns0_rule, "ttl": _ttl_rule, "cname": _cname_rule,
             "rcode": _rcode_rule}
