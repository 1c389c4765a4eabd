"""Label and field selectors as kube-apiserver parses and applies them."""

from __future__ import annotations

import pickle

import pytest

from kubernetai.pkg.selectors import (
    EVERYTHING,
    EVERYTHING_FIELDS,
    FieldSelector,
    FieldTerm,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

COREDNS_POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
POD_FIELDS = frozenset({"metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"})


# --------------------------------------------------------------------------
# Label selectors: parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=b", (Requirement("a", Operator.EQUALS, ("b",)),)),
        ("a==b", (Requirement("a", Operator.DOUBLE_EQUALS, ("b",)),)),
        ("a!=b", (Requirement("a", Operator.NOT_EQUALS, ("b",)),)),
        ("a in (x,y)", (Requirement("a", Operator.IN, ("x", "y")),)),
        ("a notin (x,y)", (Requirement("a", Operator.NOT_IN, ("x", "y")),)),
        ("a", (Requirement("a", Operator.EXISTS),)),
        ("!a", (Requirement("a", Operator.DOES_NOT_EXIST),)),
        ("a>5", (Requirement("a", Operator.GREATER_THAN, ("5",)),)),
        ("a<5", (Requirement("a", Operator.LESS_THAN, ("5",)),)),
        ("example.com/app-name=web_1.x", (Requirement("example.com/app-name", Operator.EQUALS, ("web_1.x",)),)),
    ],
)
def test_parse_each_operator(text: str, expected: tuple[Requirement, ...]) -> None:
    """Every operator of the grammar parses into the matching requirement."""
    assert parse_label_selector(text).requirements == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("b=1,a=2", "a=2,b=1"),
        ("a in (z,y,x)", "a in (x,y,z)"),
        ("a in (x,x,y)", "a in (x,y)"),
        ("a==b", "a==b"),
        ("!a", "!a"),
        ("a=", "a="),
        ("a!=", "a!="),
        ("a in ()", "a in ()"),
        ("a in (,x)", "a in (,x)"),
        ("a in (x,)", "a in (,x)"),
        ("a in (x,,y)", "a in (,x,y)"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("in in (in,notin)", "in in (in,notin)"),
        ("notin notin (in)", "notin notin (in)"),
    ],
)
def test_canonical_text_form(text: str, canonical: str) -> None:
    """str() sorts requirements by key and values within a set, like the server does."""
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(canonical) == selector


@pytest.mark.parametrize(
    "text",
    [
        "a=b,c in (d,e),!f",
        " a=b , c in (d,e) , !f ",
        "a = b,c in(d , e),! f",
        "\ta\n=\rb,c\tin\t(d,e),!f",
        "a=b,c in (e,d),!f",
    ],
)
def test_whitespace_is_tolerated_around_tokens(text: str) -> None:
    """Spaces, tabs, CR and LF between tokens do not change the selector."""
    assert str(parse_label_selector(text)) == "a=b,c in (d,e),!f"


@pytest.mark.parametrize("text", [None, "", "   ", "\t\n"])
def test_empty_label_selector_is_everything(text: str | None) -> None:
    """No text, or only whitespace, selects every object."""
    selector = parse_label_selector(text)
    assert selector == EVERYTHING
    assert selector.empty
    assert str(selector) == ""
    assert selector.matches({"any": "thing"})
    assert selector.matches(None)


def test_nul_ends_the_input_like_the_go_lexer() -> None:
    """A NUL byte where a token starts ends the selector, and one after a token is skipped, as in apimachinery."""
    assert parse_label_selector("a=b \x00,%%%") == parse_label_selector("a=b")
    assert parse_label_selector("a\x00=b") == parse_label_selector("a=b")
    assert parse_label_selector("\x00a=b") == EVERYTHING


# --------------------------------------------------------------------------
# Label selectors: matching

WEB = {"app": "web", "tier": "frontend", "replicas": "3"}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", WEB, True),
        ("app=api", WEB, False),
        ("app==web", WEB, True),
        ("missing=web", WEB, False),
        ("missing=", WEB, False),
        ("app!=api", WEB, True),
        ("app!=web", WEB, False),
        ("app in (api,web)", WEB, True),
        ("app in (api,db)", WEB, False),
        ("missing in (api,web)", WEB, False),
        ("app notin (api,db)", WEB, True),
        ("app notin (web)", WEB, False),
        ("app", WEB, True),
        ("missing", WEB, False),
        ("!missing", WEB, True),
        ("!app", WEB, False),
        ("replicas>2", WEB, True),
        ("replicas>3", WEB, False),
        ("replicas<4", WEB, True),
        ("replicas<3", WEB, False),
        ("app>0", WEB, False),
        ("missing<100", WEB, False),
        ("app=web,tier=frontend", WEB, True),
        ("app=web,tier=backend", WEB, False),
        ("app=web,app=api", WEB, False),
        ("app in (web),tier notin (db),!canary,replicas>1", WEB, True),
    ],
)
def test_matches_each_operator(text: str, labels: dict[str, str], expected: bool) -> None:
    """Each operator selects exactly the objects apimachinery's Requirement.Matches selects."""
    selector = parse_label_selector(text)
    assert selector.matches(labels) is expected
    assert all(r.matches(labels) for r in selector.requirements) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tier!=db", True),
        ("tier notin (db,cache)", True),
        ("!tier", True),
        ("tier=db", False),
        ("tier==db", False),
        ("tier in (db)", False),
        ("tier", False),
        ("tier>1", False),
        ("tier<1", False),
    ],
)
@pytest.mark.parametrize("labels", [{}, None, {"app": "web"}], ids=["empty", "none", "other-labels"])
def test_absent_key_semantics(text: str, expected: bool, labels: dict[str, str] | None) -> None:
    """A missing label satisfies only '!=', 'notin' and '!key', even with no labels at all."""
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"tier": ""}, True),
        ({"tier": "db"}, False),
        ({}, False),
    ],
)
def test_empty_value_is_a_real_value(labels: dict[str, str], expected: bool) -> None:
    """'key=' and 'key in ()' match a present empty label, not an absent one."""
    assert parse_label_selector("tier=").matches(labels) is expected
    assert parse_label_selector("tier in ()").matches(labels) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", True),
        ("+10", True),
        ("007", True),
        ("5", False),
        ("-10", False),
        ("1e3", False),
        ("1_000", False),
        (" 10", False),
        ("٣٣", False),
        ("9223372036854775807", True),
        ("9223372036854775808", False),
        ("1" * 5000, False),
    ],
)
def test_greater_than_parses_label_values_like_go(value: str, expected: bool) -> None:
    """Gt compares only values Go's strconv.ParseInt accepts as int64; others never match."""
    assert parse_label_selector("n>5").matches({"n": value}) is expected


def test_matches_accepts_any_mapping() -> None:
    """matches() needs only Mapping.get, so read-only views of object metadata work."""
    from types import MappingProxyType

    assert parse_label_selector("app=web,!canary").matches(MappingProxyType(WEB))


def test_selectors_survive_pickle_and_compare_by_value() -> None:
    """Precomputed match state is not part of equality and survives pickling."""
    selector = parse_label_selector("app in (web,api),!canary,replicas>1")
    clone = pickle.loads(pickle.dumps(selector))
    assert clone == selector
    assert hash(clone) == hash(selector)
    assert clone.matches(WEB)
    assert not clone.matches({**WEB, "canary": "yes"})


# --------------------------------------------------------------------------
# Label selectors: errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a!", "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt"),
        ("a>=5", "unable to parse requirement: found '=', expected: identifier"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("a=b,,c", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    ],
)
def test_syntax_errors_have_server_messages(text: str, message: str) -> None:
    """Malformed selectors fail with the text kube-apiserver puts in its 400 response."""
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "bad_key", "reason"),
    [
        ("-app=web", "-app", "name part must consist of alphanumeric characters"),
        ("app-=web", "app-", "must start and end with an alphanumeric character"),
        ("a:b", "a:b", "name part must consist of alphanumeric characters"),
        ("x" * 64, "x" * 64, "name part must be no more than 63 bytes"),
        ("/app", "/app", "prefix part must be non-empty"),
        ("example.com/", "example.com/", "name part must be non-empty"),
        ("Example.com/app", "Example.com/app", "prefix part a lowercase RFC 1123 subdomain"),
        ("a/b/c in (x)", "a/b/c", "with an optional DNS subdomain prefix and '/'"),
        ("!bad_", "bad_", "name part must consist of"),
        ("caf\u00e9=1", "caf\u00e9", "name part must consist of"),
    ],
)
def test_invalid_keys_are_named_in_the_error(text: str, bad_key: str, reason: str) -> None:
    """An invalid label key is rejected, quoting the key and saying what is wrong with it."""
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    message = str(caught.value)
    assert message.startswith(f'unable to parse requirement: <nil>: Invalid value: "{bad_key}": ')
    assert reason in message


@pytest.mark.parametrize(
    ("text", "path", "bad_value", "reason"),
    [
        ("app=-web", "values[0][app]", "-web", "a valid label must be an empty string or consist of"),
        ("app!=web_", "values[0][app]", "web_", "must start and end with an alphanumeric character"),
        ("app in (ok,b@d)", "values[0][app]", "b@d", "a valid label must be"),
        ("app=" + "v" * 64, "values[0][app]", "v" * 64, "must be no more than 63 bytes"),
        ("n>x", "values[0]", "x", "for 'Gt', 'Lt' operators, the value must be an integer"),
        ("n<1.5", "values[0]", "1.5", "for 'Gt', 'Lt' operators, the value must be an integer"),
        ("n>-1", "values[0][n]", "-1", "a valid label must be"),
    ],
)
def test_invalid_values_are_named_in_the_error(text: str, path: str, bad_value: str, reason: str) -> None:
    """An invalid value is rejected, quoting the value and saying what is wrong with it."""
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    message = str(caught.value)
    assert message.startswith("unable to parse requirement: ")
    assert f'{path}: Invalid value: "{bad_value}": ' in message
    assert reason in message


def test_several_value_errors_are_aggregated() -> None:
    """Several bad values are all reported, bracketed and comma-separated like a Go aggregate."""
    with pytest.raises(SelectorError) as caught:
        parse_label_selector("a in (-x,_y)")
    message = str(caught.value)
    assert message.startswith('unable to parse requirement: [values[0][a]: Invalid value: "-x": ')
    assert ', values[1][a]: Invalid value: "_y": ' in message
    assert message.endswith("]")


def test_control_characters_are_quoted_like_go() -> None:
    """Unprintable characters in a bad key are escaped as Go's %q would, so messages stay one line."""
    with pytest.raises(SelectorError, match=r'Invalid value: "a\\x01\\vb"'):
        parse_label_selector("a\x01\vb=c")


@pytest.mark.parametrize(
    ("key", "operator", "values", "reason"),
    [
        ("a", Operator.IN, (), "values set can't be empty"),
        ("a", Operator.EQUALS, ("x", "y"), "exact-match compatibility requires one single value"),
        ("a", Operator.EXISTS, ("x",), "values set must be empty for exists and does not exist"),
        ("a", Operator.GREATER_THAN, ("1", "2"), "exactly one value is required"),
        ("a b", Operator.EXISTS, (), 'key: Invalid value: "a b"'),
        ("a", "like", (), 'operator: Unsupported value: "like"'),
    ],
)
def test_requirement_refuses_invalid_construction(key: str, operator: Operator | str, values: tuple[str, ...], reason: str) -> None:
    """Requirements built in code are validated like NewRequirement, so none is unmatchable."""
    with pytest.raises(SelectorError, match=reason.replace("(", r"\(")):
        Requirement(key, operator, values)


def test_requirement_accepts_operator_spelling() -> None:
    """Operators may be given by their apimachinery spelling and come out as Operator members."""
    requirement = Requirement("a", "notin", ["x"])
    assert requirement.operator is Operator.NOT_IN
    assert requirement.values == ("x",)
    assert str(LabelSelector([requirement])) == "a notin (x)"


def test_selector_error_is_a_value_error() -> None:
    """Callers that catch ValueError also catch selector errors."""
    assert issubclass(SelectorError, ValueError)


# --------------------------------------------------------------------------
# Field selectors


def test_coredns_pod_field_selector() -> None:
    """CoreDNS's pod selector keeps running and pending pods and drops finished ones."""
    selector = parse_field_selector(COREDNS_POD_SELECTOR, POD_FIELDS)
    assert selector.terms == (
        FieldTerm("status.phase", "!=", "Failed"),
        FieldTerm("status.phase", "!=", "Succeeded"),
        FieldTerm("status.phase", "!=", "Unknown"),
    )
    assert str(selector) == "status.phase!=Failed,status.phase!=Succeeded,status.phase!=Unknown"
    for phase, expected in [("Running", True), ("Pending", True), ("Succeeded", False), ("Failed", False), ("Unknown", False)]:
        assert selector.matches({"status.phase": phase}) is expected


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        ("metadata.name=foo", {"metadata.name": "foo"}, True),
        ("metadata.name=foo", {"metadata.name": "bar"}, False),
        ("metadata.name==foo", {"metadata.name": "foo"}, True),
        ("metadata.name!=foo", {"metadata.name": "bar"}, True),
        ("metadata.name!=foo", {"metadata.name": "foo"}, False),
        ("metadata.name=foo,metadata.namespace=bar", {"metadata.name": "foo", "metadata.namespace": "bar"}, True),
        ("metadata.name=foo,metadata.namespace=bar", {"metadata.name": "foo", "metadata.namespace": "baz"}, False),
        ("spec.nodeName=", {}, True),
        ("spec.nodeName=", {"spec.nodeName": "node-1"}, False),
        ("spec.nodeName!=", {}, False),
        ("spec.nodeName!=node-1", {}, True),
        ("spec.nodeName=node-1", {}, False),
    ],
)
def test_field_selector_matching(text: str, fields: dict[str, str], expected: bool) -> None:
    """'=', '==' and '!=' compare the field's value, an absent field counting as ''."""
    selector = parse_field_selector(text, POD_FIELDS)
    assert selector.matches(fields) is expected
    assert all(term.matches(fields) for term in selector.terms) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metadata.name=foo", FieldTerm("metadata.name", "=", "foo")),
        ("metadata.name==foo", FieldTerm("metadata.name", "=", "foo")),
        ("metadata.name!=foo", FieldTerm("metadata.name", "!=", "foo")),
        ("metadata.name=", FieldTerm("metadata.name", "=", "")),
        ("metadata.name=!foo", FieldTerm("metadata.name", "=", "!foo")),
        ("metadata.name= foo ", FieldTerm("metadata.name", "=", " foo ")),
    ],
)
def test_field_term_parsing(text: str, expected: FieldTerm) -> None:
    """The first operator splits the term; '==' is stored as '=' and the value is kept verbatim."""
    assert parse_field_selector(text, POD_FIELDS).terms == (expected,)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r"metadata.name=a\,b", "a,b"),
        (r"metadata.name=a\=b", "a=b"),
        (r"metadata.name=a\\b", "a\\b"),
        (r"metadata.name=\\\,\=", "\\,="),
        (r"metadata.name==\=x", "=x"),
    ],
)
def test_field_value_escapes(text: str, value: str) -> None:
    """Backslash escapes let values hold ',', '=' and '\\', and str() escapes them again."""
    selector = parse_field_selector(text, POD_FIELDS)
    assert selector.terms == (FieldTerm("metadata.name", "=", value),)
    assert selector.matches({"metadata.name": value})
    assert parse_field_selector(str(selector), POD_FIELDS) == selector


def test_escaped_comma_does_not_split_terms() -> None:
    """Only unescaped commas separate terms."""
    selector = parse_field_selector(r"metadata.name=a\,metadata.namespace\=b", POD_FIELDS)
    assert selector.terms == (FieldTerm("metadata.name", "=", "a,metadata.namespace=b"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (r"metadata.name=a\b", r"invalid field selector: invalid escape sequence: \b"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
        ("metadata.name!==b", "invalid field selector: unescaped character in value: 61"),
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("a=b,nonsense", "invalid selector: 'a=b,nonsense'; can't understand 'nonsense'"),
    ],
)
def test_field_syntax_errors(text: str, message: str) -> None:
    """Bad escapes, bare '=' in values and terms without an operator give the server's message."""
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text, POD_FIELDS)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("status.hostIP=10.0.0.1", "status.hostIP"),
        ("metadata.name=a,spec.schedulerName=x", "spec.schedulerName"),
        ("metadata.name = a", "metadata.name "),
        ("=a", ""),
        ("z.last=1,b.first=2", "b.first"),
    ],
)
def test_unsupported_field(text: str, field: str) -> None:
    """A field the resource does not index is refused with kube-apiserver's message, first in sorted order."""
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text, POD_FIELDS)
    assert str(caught.value) == f"field label not supported: {field}"


def test_syntax_error_wins_over_unsupported_field() -> None:
    """The whole selector is parsed before fields are checked, as on the server."""
    with pytest.raises(SelectorError, match="invalid escape sequence"):
        parse_field_selector(r"unknown=x,zzz=\q", POD_FIELDS)


@pytest.mark.parametrize("text", [None, "", ",", ",,"])
def test_empty_field_selector_is_everything(text: str | None) -> None:
    """No terms select every object, whatever its fields."""
    selector = parse_field_selector(text, POD_FIELDS)
    assert selector == EVERYTHING_FIELDS
    assert selector.empty
    assert selector.matches({"status.phase": "Failed"})


def test_field_selector_skips_empty_terms() -> None:
    """Empty terms between commas are ignored, unlike in label selectors."""
    selector = parse_field_selector("metadata.name=a,,", POD_FIELDS)
    assert selector == FieldSelector((FieldTerm("metadata.name", "=", "a"),))


@pytest.mark.parametrize("op", ["==", "<", ""])
def test_field_term_rejects_other_operators(op: str) -> None:
    """FieldTerm stores only '=' and '!=', so matching never sees another spelling."""
    with pytest.raises(ValueError):
        FieldTerm("metadata.name", op, "x")
