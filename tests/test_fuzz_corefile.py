"""Property tests of the Corefile reader: a mutated Corefile is accepted or gets a located error.

``kubernetai check``, ``twistd kubernetai`` and every reload read a Corefile with
`corefile.parse_file` and set every directive up with `server.compile_corefile`. Whatever
the file holds, the only exception allowed out is `CorefileError`, and its message must
be something an operator can act on and safely print to a terminal or a log:

* it names the file and a line of that file (``FILE:LINE: message``);
* it holds no raw control characters (C0/C1 controls, DEL, Unicode format characters
  such as U+202E or U+200B, line and paragraph separators): a quoted token is escaped;
* it is bounded in length, however long the offending token or imported file is.

The warnings `check` prints must hold no raw control characters either (their length
follows the configuration: they list its zones). Hypothesis mutates the
repository's Corefiles (byte flips, inserted braces, quotes, ``{$ENV}`` references,
imports, control bytes, Unicode, long tokens, deletions, duplications, deep nesting).
Runs are short and derandomized; ``KUBERNETAI_FUZZ_EXAMPLES=N`` runs N random examples.
``bench/fuzz_corefile.py`` runs 100,000 mutations in worker processes with a time limit.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubernetai.app.server import compile_corefile, warnings_for
from kubernetai.corefile import CorefileError, parse_file

# The mutation vocabulary is the one bench/fuzz_corefile.py uses at scale.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzzlib import (  # noqa: E402
    COREFILE_ENV,
    COREFILE_SEEDS,
    FORBIDDEN_CATEGORIES,
    HOSTILE_CHARS,
    IMPORTABLE,
    MAX_MESSAGE,
    SNIPPETS,
    TOKENS,
)

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "tests" / "corefiles"

#: How long one Corefile may take to read and compile before it counts as a hang.
HANG_SECONDS = 10

SEEDS = [path.read_text() for path in COREFILE_SEEDS] + [SNIPPETS]
#: The environment `{$NAME}` references are read from (never the test's own).
ENV = COREFILE_ENV

_EXAMPLES = int(os.environ.get("KUBERNETAI_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int) -> settings:
    """Short and reproducible in the suite; KUBERNETAI_FUZZ_EXAMPLES for a random hunt."""
    return settings(max_examples=_EXAMPLES or examples, derandomize=not _EXAMPLES,
                    database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# ---------------------------------------------------------------------------------------
# Mutations


def _at(text: str, where: int) -> int:
    """A position in text from a draw in 0..10**6 (so it survives earlier mutations)."""
    return where * len(text) // 10**6


insertion = st.one_of(
    st.sampled_from(TOKENS),
    st.text(max_size=12),
    st.sampled_from([300, 1500, 5000]).map(lambda n: "w" * n),          # a very long token
    st.sampled_from([1, 3, 30, 600]).map(lambda d: "a {\n" * d + "}\n" * d),  # deep nesting
)


@st.composite
def mutations(draw: Any) -> bytes:
    """One of the seed Corefiles, mutated up to 4 times; as the bytes of the file."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 4))
        pos = _at(text, draw(st.integers(0, 10**6)))
        if kind == 0:
            text = text[:pos] + draw(insertion) + text[pos:]
        elif kind == 1 and text:
            text = text[:pos] + draw(st.sampled_from(HOSTILE_CHARS)) + text[pos + 1:]
        elif kind == 2:
            text = text[:pos] + text[pos + draw(st.integers(1, 40)):]
        elif kind == 3:
            text = text[:pos] + text[pos:pos + draw(st.integers(1, 80))] * 2 + text[pos:]
        else:
            block = draw(st.sampled_from([1, 2, 40, 600]))
            text = text[:pos] + "x {\n" * block + text[pos:] + "\n}" * block
    data = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0 and data:  # a byte that is not UTF-8
        pos = _at(data.decode("latin-1"), draw(st.integers(0, 10**6)))
        data = data[:pos] + bytes([draw(st.integers(0x80, 0xFF))]) + data[pos + 1:]
    return data


# ---------------------------------------------------------------------------------------
# Properties


class Hang(Exception):
    """Reading one Corefile took longer than HANG_SECONDS."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (the parser runs synchronously)."""
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"reading the Corefile took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_text(text: str, what: str, *, bounded: bool = True) -> None:
    """Nothing in it that a terminal or a log reader would act on; bounded in length."""
    bad = sorted({c for c in text if unicodedata.category(c) in FORBIDDEN_CATEGORIES})
    assert not bad, f"{what} holds raw control characters {bad!r}: {text[:300]!r}"
    if bounded:
        assert len(text) <= MAX_MESSAGE, f"{what} is {len(text)} characters long: {text[:300]!r}"


def check_error(error: CorefileError) -> None:
    """FILE:LINE: message, with a line that exists in that file, and a clean message."""
    assert str(error) == f"{error.filename}:{error.line}: {error.message}"
    assert error.filename and os.path.exists(error.filename), (
        f"the error names no existing file: {str(error)[:300]!r}")
    with open(error.filename, "rb") as fh:
        lines = fh.read().count(b"\n") + 1
    assert 1 <= error.line <= lines, (
        f"line {error.line} of a {lines}-line file: {str(error)[:300]!r}")
    check_text(error.message, "the error message")


def read_as_check_does(path: Path) -> list[str]:
    """parse + compile as `kubernetai check` does, without connecting: the warnings."""
    blocks = parse_file(path, environ=ENV)
    if not blocks:
        return []
    return [note for plan in compile_corefile(blocks) for note in warnings_for(plan)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: Any) -> Path:
    """A directory holding the Corefile under test and the files it may import."""
    directory = tmp_path_factory.mktemp("corefile-fuzz")
    shutil.copytree(CORE / "extra", directory / "extra")
    (directory / "sub").mkdir()
    for name, text in IMPORTABLE.items():
        (directory / name).write_text(text)
    (directory / "binary.conf").write_bytes(b"log\n\xff\xfe bad\n")
    return directory


@fuzz_settings(150)
@given(data=mutations())
def test_mutated_corefile_is_accepted_or_refused_with_a_located_error(workdir: Path,
                                                                      data: bytes) -> None:
    """Only CorefileError comes out, naming file and line, bounded, with nothing raw."""
    path = workdir / "Corefile"
    path.write_bytes(data)
    try:
        with time_limit(HANG_SECONDS):
            notes = read_as_check_does(path)
    except CorefileError as error:
        check_error(error)
        return
    for note in notes:  # a warning lists the Corefile's zones: its length is the user's
        check_text(note, "a warning", bounded=False)


@pytest.mark.parametrize("name, text", [
    pytest.param("nul", "cluster.local {\n    kubernetai \x00zone\n}\n", id="nul-in-zone"),
    pytest.param("esc", "cluster.local {\n    \x1b[2Jerrors\n}\n", id="esc-in-directive"),
    pytest.param("rlo", "clu\u202ester..local {\n    kubernetai\n}\n", id="rlo-in-key"),
    pytest.param("long", "cluster.local {\n    " + "w" * 5000 + "\n}\n", id="long-token"),
    pytest.param("deep", "cluster.local {\n    kubernetai {\n" + "a {\n" * 600 + "}\n" * 600
                 + "    }\n}\n", id="deep-nesting"),
])
def test_known_hostile_corefiles(workdir: Path, name: str, text: str) -> None:
    """A few of the inputs the property test reaches, kept as plain regression cases."""
    path = workdir / f"{name}.Corefile"
    path.write_text(text)
    try:
        with time_limit(HANG_SECONDS):
            notes = read_as_check_does(path)
    except CorefileError as error:
        check_error(error)
        return
    for note in notes:  # a warning lists the Corefile's zones: its length is the user's
        check_text(note, "a warning", bounded=False)
