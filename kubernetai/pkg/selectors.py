"""Label and field selectors, parsed and applied the way kube-apiserver does on list/watch.

Clients (CoreDNS, client-go informers, kubectl) send ``?labelSelector=`` and
``?fieldSelector=`` query parameters.  A simulated API server must accept exactly
what the real one accepts, reject the rest with the same 400 message, and select
the same objects, or clients that work against the sandbox break against a real
cluster (and the other way round).  The behaviour mirrors
``k8s.io/apimachinery/pkg/labels`` and ``pkg/fields``; the code is our own.

This is the only label-selector parser in the project: the sandbox API
server uses it for queries, and :mod:`kubernetai.plugins.kubernetai.config` uses it for the
``labels`` / ``namespace_labels`` options (through :func:`parse_to_label_selector`, which
adds CoreDNS's ParseToLabelSelector rules on top), so both read a selector the same way.
It lives outside :mod:`kubernetai.sandbox` because product code must not
depend on the sandbox.

Parsing happens once per request and may be slow-ish; matching runs once per
object per list/watch, so everything matching needs is precomputed at parse time.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

__all__ = [
    "EVERYTHING",
    "EVERYTHING_FIELDS",
    "FieldSelector",
    "FieldTerm",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
    "parse_to_label_selector",
]


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest.

    str() is the message the server returns.
    """


# --------------------------------------------------------------------------
# Messages worded like apimachinery's, so clients see the server's text.

_GO_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """Render like Go's %q, because the server quotes bad values that way."""
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _byte_len(text: str) -> int:
    """Go limits lengths in UTF-8 bytes, not characters."""
    return len(text.encode("utf-8", "surrogatepass"))


def _regex_error(message: str, pattern: str, *examples: str) -> str:
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{pattern}')"


def _invalid(path: str, rendered_value: str, detail: str) -> str:
    """The text of a field.Invalid error: the server names the bad value this way."""
    return f"{path}: Invalid value: {rendered_value}: {detail}"


def _aggregate(messages: list[str]) -> str:
    """Join several errors the way utilerrors.Aggregate prints them (deduplicated, bracketed)."""
    unique = list(dict.fromkeys(messages))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


# --------------------------------------------------------------------------
# Validation of label keys and values (qualified names).

_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_NAME_MAX = 63
_VALUE_FMT = "(" + _NAME_FMT + ")?"
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _DNS_LABEL_FMT + "(\\." + _DNS_LABEL_FMT + ")*"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_SUBDOMAIN_MAX = 253

_NAME_RE = re.compile(_NAME_FMT)
_VALUE_RE = re.compile(_VALUE_FMT)
_SUBDOMAIN_RE = re.compile(_SUBDOMAIN_FMT)


def _max_len_error(limit: int) -> str:
    return f"must be no more than {limit} bytes"


def _subdomain_errors(prefix: str) -> list[str]:
    errors = []
    if _byte_len(prefix) > _SUBDOMAIN_MAX:
        errors.append(_max_len_error(_SUBDOMAIN_MAX))
    if not _SUBDOMAIN_RE.fullmatch(prefix):
        errors.append(_regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return errors


def label_key_errors(key: str) -> list[str]:
    """Reasons a label key is not a qualified name; empty when it is valid."""
    parts = key.split("/")
    if len(parts) > 2:
        return [
            "a valid label key "
            + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    errors = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend("prefix part " + message for message in _subdomain_errors(prefix))
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif _byte_len(name) > _NAME_MAX:
        errors.append("name part " + _max_len_error(_NAME_MAX))
    if not _NAME_RE.fullmatch(name):
        errors.append(
            "name part " + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def label_value_errors(value: str) -> list[str]:
    """Reasons a label value is invalid; empty when it is valid (the empty string is valid)."""
    errors = []
    if _byte_len(value) > _NAME_MAX:
        errors.append(_max_len_error(_NAME_MAX))
    if not _VALUE_RE.fullmatch(value):
        errors.append(_regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _parse_int64(text: str) -> int | None:
    """Parse like Go's strconv.ParseInt(text, 10, 64), which is stricter than int()."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits.lstrip("0")) > 19:  # out of range anyway; keeps int() off huge strings
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


# --------------------------------------------------------------------------
# Label selector model.


class Operator(str, Enum):
    """Requirement operators, with apimachinery's selection.Operator spellings."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_EXACT_OPERATORS = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS})
_SET_OPERATORS = frozenset({Operator.IN, Operator.NOT_IN})
_UNARY_OPERATORS = frozenset({Operator.EXISTS, Operator.DOES_NOT_EXIST})
_NUMERIC_OPERATORS = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN})
# Operators that pass when the label's value (or _ABSENT) is NOT in the allowed set.
_NEGATED_OPERATORS = frozenset({Operator.NOT_EQUALS, Operator.NOT_IN, Operator.EXISTS})
_INFIX = {
    Operator.EQUALS: "=",
    Operator.DOUBLE_EQUALS: "==",
    Operator.NOT_EQUALS: "!=",
    Operator.IN: " in ",
    Operator.NOT_IN: " notin ",
    Operator.GREATER_THAN: ">",
    Operator.LESS_THAN: "<",
}


class _Missing(Enum):
    """A pickle-safe stand-in for "label not set", so existence becomes a set lookup."""

    LABEL = "absent"


_ABSENT = _Missing.LABEL
_ABSENT_ONLY = frozenset({_ABSENT})
_NO_LABELS: Mapping[str, str] = MappingProxyType({})


_GT_LT = "'Gt', 'Lt' operators"


def _requirement_errors(key: str, operator: Operator, values: tuple[str, ...]) -> list[str]:
    """Everything NewRequirement objects to, in the order the server reports it."""
    errors = []
    key_errors = label_key_errors(key)
    if key_errors:
        errors.append(_invalid("key", _go_quote(key), "; ".join(key_errors)))
    rendered = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
    if operator in _SET_OPERATORS and not values:
        errors.append(_invalid("values", rendered,
                               "for 'in', 'notin' operators, values set can't be empty"))
    elif operator in _EXACT_OPERATORS and len(values) != 1:
        errors.append(_invalid("values", rendered,
                               "exact-match compatibility requires one single value"))
    elif operator in _UNARY_OPERATORS and values:
        errors.append(_invalid("values", rendered,
                               "values set must be empty for exists and does not exist"))
    elif operator in _NUMERIC_OPERATORS:
        if len(values) != 1:
            errors.append(_invalid("values", rendered,
                                   f"for {_GT_LT}, exactly one value is required"))
        errors.extend(
            _invalid(f"values[{index}]", _go_quote(value),
                     f"for {_GT_LT}, the value must be an integer")
            for index, value in enumerate(values)
            if _parse_int64(value) is None
        )
    for index, value in enumerate(values):
        found = label_value_errors(value)
        if found:
            errors.append(_invalid(f"values[{index}][{key}]", _go_quote(value), "; ".join(found)))
    return errors


def _as_operator(operator: Operator | str) -> Operator:
    try:
        return Operator(operator)
    except ValueError:
        supported = ", ".join(_go_quote(op.value) for op in Operator)
        raise SelectorError(
            f"operator: Unsupported value: {_go_quote(str(operator))}: "
            f"supported values: {supported}"
        ) from None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated clause of a label selector; invalid ones cannot be built."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()
    # Precomputed so matching is a dict lookup plus a set lookup.
    _allowed: frozenset[object] = dataclasses.field(init=False, repr=False, compare=False)
    _negate: bool = dataclasses.field(init=False, repr=False, compare=False)
    _bound: int | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        operator = _as_operator(self.operator)
        values = tuple(self.values)
        errors = _requirement_errors(self.key, operator, values)
        if errors:
            raise SelectorError(_aggregate(errors))
        numeric = operator in _NUMERIC_OPERATORS
        allowed = _ABSENT_ONLY if operator in _UNARY_OPERATORS else frozenset(values)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_negate", operator in _NEGATED_OPERATORS)
        object.__setattr__(self, "_bound", _parse_int64(values[0]) if numeric else None)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Absent labels satisfy only '!=', 'notin' and '!key', as in Kubernetes."""
        value = (_NO_LABELS if labels is None else labels).get(self.key, _ABSENT)
        if self._bound is None:
            return (value in self._allowed) is not self._negate
        return _compare(value, self.operator is Operator.GREATER_THAN, self._bound)

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        text = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if self.operator in _SET_OPERATORS:
            text = f"({text})"
        return self.key + _INFIX[self.operator] + text


def _compare(value: object, greater: bool, bound: int) -> bool:
    """Gt/Lt: an absent or non-integer label never matches (apimachinery logs and says no)."""
    if value is _ABSENT:
        return False
    number = _parse_int64(value) if isinstance(value, str) else None
    if number is None:
        return False
    return number > bound if greater else number < bound


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An AND of requirements; with none it selects everything."""

    requirements: tuple[Requirement, ...]
    _membership: tuple[tuple[str, frozenset[object], bool], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _numeric: tuple[tuple[str, bool, int], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        requirements = tuple(self.requirements)
        object.__setattr__(self, "requirements", requirements)
        object.__setattr__(
            self,
            "_membership",
            tuple((r.key, r._allowed, r._negate) for r in requirements if r._bound is None),
        )
        object.__setattr__(
            self,
            "_numeric",
            tuple(
                (r.key, r.operator is Operator.GREATER_THAN, r._bound)
                for r in requirements
                if r._bound is not None
            ),
        )

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Runs per object per list/watch, so it is only lookups over precomputed tuples."""
        if labels is None:
            labels = _NO_LABELS
        get = labels.get
        for key, allowed, negate in self._membership:
            if (get(key, _ABSENT) in allowed) is negate:
                return False
        return not self._numeric or self._numeric_matches(labels)

    def _numeric_matches(self, labels: Mapping[str, str]) -> bool:
        get = labels.get
        return all(_compare(get(key, _ABSENT), greater, bound)
                   for key, greater, bound in self._numeric)

    @property
    def empty(self) -> bool:
        """True when nothing is filtered, so callers can skip matching altogether."""
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


EVERYTHING = LabelSelector(())


# --------------------------------------------------------------------------
# Label selector text: the lexer and recursive-descent parser of apimachinery.


class _Tok(Enum):
    """Token kinds of the label-selector lexer."""

    END = "end"
    IDENT = "identifier"
    COMMA = ","
    OPEN = "("
    CLOSE = ")"
    NOT = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    GREATER = ">"
    LESS = "<"
    IN = "in"
    NOT_IN = "notin"


_SYMBOLS = {
    ",": _Tok.COMMA,
    "(": _Tok.OPEN,
    ")": _Tok.CLOSE,
    "!": _Tok.NOT,
    "=": _Tok.EQUALS,
    "==": _Tok.DOUBLE_EQUALS,
    "!=": _Tok.NOT_EQUALS,
    ">": _Tok.GREATER,
    "<": _Tok.LESS,
}
_KEYWORDS = {"in": _Tok.IN, "notin": _Tok.NOT_IN}
_WHITESPACE = frozenset(" \t\r\n")
_SPECIAL = frozenset("=!(),><")
_NUL = "\0"
_WORD_END = _WHITESPACE | _SPECIAL | {_NUL}
_TOKEN_OPERATORS = {
    _Tok.IN: Operator.IN,
    _Tok.NOT_IN: Operator.NOT_IN,
    _Tok.EQUALS: Operator.EQUALS,
    _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
    _Tok.GREATER: Operator.GREATER_THAN,
    _Tok.LESS: Operator.LESS_THAN,
}
_EXPECTED_OPERATORS = "in, notin, =, ==, !=, gt, lt"

_Token = tuple[_Tok, str]


def _tokenize(text: str) -> list[_Token]:
    """Split like apimachinery's lexer, including its habit of treating NUL as end of input."""
    tokens: list[_Token] = []
    pos, size = 0, len(text)
    while True:
        while pos < size and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= size or text[pos] == _NUL:
            tokens.append((_Tok.END, ""))
            return tokens
        if text[pos] in _SPECIAL:  # longest match: '!=' and '==' beat '!' and '='
            literal = text[pos : pos + 2] if text[pos : pos + 2] in _SYMBOLS else text[pos]
            tokens.append((_SYMBOLS[literal], literal))
            pos += len(literal)
        else:
            start = pos
            while pos < size and text[pos] not in _WORD_END:
                pos += 1
            literal = text[start:pos]
            tokens.append((_KEYWORDS.get(literal, _Tok.IDENT), literal))
        if pos < size and text[pos] == _NUL:  # Go's lexer swallows a NUL that ends a token
            pos += 1


class _LabelParser:
    """One-token-lookahead parser; 'in'/'notin' are keywords only where an operator may stand."""

    __slots__ = ("_tokens", "_pos")

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._pos = 0

    def _peek(self) -> _Token:
        tok, literal = self._tokens[self._pos]
        return (_Tok.IDENT if tok in (_Tok.IN, _Tok.NOT_IN) else tok), literal

    def _take(self) -> _Token:
        token = self._peek()
        self._pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, literal = self._peek()
            if tok is _Tok.END:
                return requirements
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(
                    f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self._requirement())
            except SelectorError as err:
                raise SelectorError(f"unable to parse requirement: {err}") from None
            tok, literal = self._take()
            if tok is _Tok.END:
                return requirements
            if tok is not _Tok.COMMA:
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            tok, literal = self._peek()
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def _requirement(self) -> Requirement:
        key, unary = self._key()
        if unary is not None:
            return Requirement(key, unary)
        operator = self._operator()
        values = self._value_set() if operator in _SET_OPERATORS else self._exact_value()
        return Requirement(key, operator, tuple(sorted(values)))

    def _key(self) -> tuple[str, Operator | None]:
        """Read [!]key; a bare key followed by ',' or the end means 'exists'."""
        unary = None
        tok, literal = self._take()
        if tok is _Tok.NOT:
            unary = Operator.DOES_NOT_EXIST
            tok, literal = self._take()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        errors = label_key_errors(literal)
        if errors:
            # The server validates here with a nil field path, hence "<nil>".
            raise SelectorError(_invalid("<nil>", _go_quote(literal), "; ".join(errors)))
        if unary is None and self._peek()[0] in (_Tok.END, _Tok.COMMA):
            unary = Operator.EXISTS
        return literal, unary

    def _operator(self) -> Operator:
        tok, literal = self._tokens[self._pos]  # raw token: here 'in'/'notin' are operators
        self._pos += 1
        if tok not in _TOKEN_OPERATORS:
            raise SelectorError(f"found '{literal}', expected: {_EXPECTED_OPERATORS}")
        return _TOKEN_OPERATORS[tok]

    def _exact_value(self) -> set[str]:
        """A missing value ('key=' followed by ',' or the end) means the empty value."""
        tok, _ = self._peek()
        if tok in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, literal = self._take()
        if tok is not _Tok.IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        return {literal}

    def _value_set(self) -> set[str]:
        """Read '(a,b)'; '()' and empty slots such as '(a,)' stand for the empty value."""
        tok, literal = self._take()
        if tok is not _Tok.OPEN:
            raise SelectorError(f"found '{literal}' expected: '('")
        tok, literal = self._peek()
        if tok is _Tok.CLOSE:
            self._take()
            return {""}
        if tok not in (_Tok.IDENT, _Tok.COMMA):
            raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values = self._value_list()
        self._take()  # the ')' that _value_list stopped in front of
        return values

    def _value_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, literal = self._take()
            if tok is _Tok.IDENT:
                values.add(literal)
                tok, literal = self._peek()
                if tok is _Tok.CLOSE:
                    return values
                if tok is not _Tok.COMMA:
                    raise SelectorError(f"found '{literal}', expected: ',' or ')'")
            elif tok is _Tok.COMMA:
                following = self._peek()[0]
                if not values or following in (_Tok.CLOSE, _Tok.COMMA):
                    values.add("")
                if following is _Tok.CLOSE:
                    return values
            else:
                raise SelectorError(f"found '{literal}', expected: ',', or identifier")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ?labelSelector=; requirements come out sorted by key, as the server orders them."""
    if not text:
        return EVERYTHING
    requirements = _LabelParser(text).parse()
    requirements.sort(key=lambda requirement: requirement.key)
    return LabelSelector(tuple(requirements))


# --------------------------------------------------------------------------
# Label selectors written in a Corefile.  CoreDNS reads ``labels`` and
# ``namespace_labels`` with metav1.ParseToLabelSelector (labels.Parse, then
# only what a LabelSelector can hold) and sends
# LabelSelectorAsSelector(...).String() to the API server.

# ParseToLabelSelector turns requirements into a LabelSelector, which has
# no way to say '!=', 'gt' or 'lt'.
_UNSUPPORTED_OPERATORS = {
    Operator.NOT_EQUALS: '"!=" is not a valid label selector operator',
    Operator.GREATER_THAN: '"gt" isn\'t supported in label selectors',
    Operator.LESS_THAN: '"lt" isn\'t supported in label selectors',
}
_EQUALITY_OPERATORS = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS})
_NIL_KEY_PATH = "unable to parse requirement: <nil>: "
_KEY_PATH = "unable to parse requirement: key: "


def _option_message(error: SelectorError) -> str:
    """The parser's message, with a bad key attributed to field "key".

    labels.Parse validates the key under a nil field path ("<nil>: Invalid
    value: ..."); the Corefile options have always reported it as "key: ...",
    the path labels.NewRequirement uses, and their messages are kept stable.
    """
    message = str(error)
    if message.startswith(_NIL_KEY_PATH):
        return _KEY_PATH + message[len(_NIL_KEY_PATH) :]
    return message


def parse_to_label_selector(text: str) -> tuple[str, list[str]]:
    """A selector option as CoreDNS reads it.

    That is metav1.ParseToLabelSelector, then LabelSelectorAsSelector(...).String().

    Set-based and equality syntax (``a=b``, ``a==b``, ``a in (x,y)``, ``a notin (x)``,
    ``a``, ``!a``); ``!=``, ``>`` and ``<`` are refused, as a LabelSelector cannot hold
    them.  Returns the canonical selector string sent to the API server (requirements
    sorted by key, set values sorted, ``==`` written ``=``; ``""`` for an empty selector)
    and notes about requirements that CoreDNS silently drops (a repeated ``key=value``
    keeps only the last one, since it goes through a map).  Raises ValueError with
    apimachinery's message.
    """
    try:
        parsed = parse_label_selector(text)
    except SelectorError as e:
        message = _option_message(e)
        raise ValueError(f'couldn\'t parse the selector string "{text}": {message}') from None
    # parse_label_selector sorts by key, keeping text order within a key, so
    # the last k=v of a key is the one the MatchLabels map ends up with.
    match_labels: dict[str, str] = {}
    expressions: list[Requirement] = []
    notes: list[str] = []
    for r in parsed.requirements:
        if r.operator in _UNSUPPORTED_OPERATORS:
            raise ValueError(_UNSUPPORTED_OPERATORS[r.operator])
        if r.operator not in _EQUALITY_OPERATORS:
            expressions.append(r)
            continue
        value = r.values[0]
        if r.key in match_labels and match_labels[r.key] != value:
            notes.append(f"'{r.key}={match_labels[r.key]}' is replaced by '{r.key}={value}' "
                         "(only the last value of a key is kept)")
        match_labels[r.key] = value
    # LabelSelectorAsSelector: map entries first, then expressions, sorted by
    # key; '==' comes back as '='.
    ordered = [Requirement(k, Operator.EQUALS, (v,)) for k, v in match_labels.items()]
    ordered.extend(expressions)
    ordered.sort(key=lambda r: r.key)
    return str(LabelSelector(tuple(ordered))), notes


# --------------------------------------------------------------------------
# Field selectors.

_FIELD_OPERATORS = ("=", "!=")


@dataclass(frozen=True, slots=True)
class FieldTerm:
    """One 'field=value' or 'field!=value' clause ('==' is stored as '=')."""

    field: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in _FIELD_OPERATORS:
            raise ValueError(f"field selector operator must be '=' or '!=', not {self.op!r}")

    def matches(self, fields: Mapping[str, str]) -> bool:
        """An absent field compares as the empty string, as fields.Set.Get does."""
        return (fields.get(self.field, "") == self.value) is (self.op == "=")

    def __str__(self) -> str:
        return self.field + self.op + escape_field_value(self.value)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of field terms; with none it selects everything."""

    terms: tuple[FieldTerm, ...]
    _plan: tuple[tuple[str, str, bool], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        terms = tuple(self.terms)
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "_plan", tuple((t.field, t.value, t.op == "=") for t in terms))

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Runs per object per list/watch, so it is only lookups over a precomputed tuple."""
        get = fields.get
        for name, value, want_equal in self._plan:
            if (get(name, "") == value) is not want_equal:
                return False
        return True

    @property
    def empty(self) -> bool:
        """True when nothing is filtered, so callers can skip matching altogether."""
        return not self.terms

    def __str__(self) -> str:
        return ",".join(str(term) for term in self.terms)


EVERYTHING_FIELDS = FieldSelector(())

_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\="})


def escape_field_value(value: str) -> str:
    """Escape so that a value containing ',', '=' or '\\' survives a round trip
    through the text form."""
    return value.translate(_ESCAPES)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped; the escapes stay in place for _unescape."""
    terms, start, escaped = [], 0, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Cut at the first operator; field names have no escapes, so that is always the split point."""
    for index, char in enumerate(term):
        if char == "!" and term.startswith("=", index + 1):
            return term[:index], "!=", term[index + 2 :]
        if char == "=":
            width = 2 if term.startswith("=", index + 1) else 1
            return term[:index], "=", term[index + width :]
    return None


def _unescape(raw: str) -> str:
    """Undo \\\\, \\, and \\=; anything else after a backslash, or a bare '=', is an error."""
    if "\\" not in raw and "=" not in raw:
        return raw
    out, escaped = [], False
    for char in raw:
        if escaped:
            if char not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=":
            # The server formats the rune with %v, i.e. as its code point number.
            raise SelectorError(
                f"invalid field selector: unescaped character in value: {ord(char)}")
        else:
            out.append(char)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _parse_field_term(text: str, part: str) -> FieldTerm:
    split = _split_term(part)
    if split is None:
        raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
    name, op, raw = split
    return FieldTerm(name, op, _unescape(raw))


def parse_field_selector(text: str | None, supported: Collection[str]) -> FieldSelector:
    """Parse ?fieldSelector=; syntax errors win over unsupported fields, as on the server.

    Terms are handled in sorted text order (the server sorts before parsing), so
    the first error reported is the one kube-apiserver would report.  Whitespace
    is not trimmed: the server treats 'a = b' as field 'a ' and value ' b'.
    """
    if not text:
        return EVERYTHING_FIELDS
    terms = [_parse_field_term(text, part) for part in sorted(_split_terms(text)) if part]
    for term in terms:
        if term.field not in supported:
            raise SelectorError(f"field label not supported: {term.field}")
    return FieldSelector(tuple(terms))
