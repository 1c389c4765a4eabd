"""The Corefile grammar: server blocks, directives and imports, to frozen data.

Users bring the Corefile they run CoreDNS with, so this follows what CoreDNS
actually does when it reads one (``coredns/caddy``'s ``caddyfile/parse.go``)
rather than what a tidier grammar might prefer.  Where CoreDNS silently
accepts something that can only be a mistake (a missing ``}``, an import
cycle, a block with no keys) we raise a
:class:`~kubernetai.corefile.errors.CorefileError` instead, naming the file,
the line and the offending token.

The pieces it stands on each own one thing: :mod:`.lexer` splits text into
tokens, :mod:`.environ` substitutes ``{$NAME}`` in them, :mod:`.files`
reads and globs the files imports name, :mod:`.keys` turns block keys into
:class:`~kubernetai.corefile.model.ZoneAddress` values, and :mod:`.limits`
bounds all of it.  What is left here is structure: keys up to a ``{``, one
directive per line, nested blocks, and ``import`` (of files and snippets),
which is grammar because it splices tokens into the stream.

It knows nothing about what any directive means: the only directive names
it looks at are ``import`` and ``bind``/``view`` (only to know when the
duplicate-zone check must be left to the layer that understands them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace

from kubernetai.corefile.environ import substitute
from kubernetai.corefile.errors import CorefileError
from kubernetai.corefile.files import (
    TooManyFiles,
    decode_utf8,
    glob_files,
    read_bounded,
)
from kubernetai.corefile.keys import parse_key
from kubernetai.corefile.lexer import Token, new_origin, tokenize
from kubernetai.corefile.limits import (
    MAX_FILE_BYTES,
    MAX_IMPORT_DEPTH,
    MAX_IMPORTED_FILES,
    MAX_NESTING,
    Budget,
)
from kubernetai.corefile.model import Directive, ServerBlock, ZoneAddress

__all__ = ["parse", "parse_file"]

log = logging.getLogger(__name__)


# Directives that change which listener a server block is on, so two
# blocks with the same zone and port can legitimately coexist; the
# duplicate check for those blocks belongs to the layer that reads them.
_LISTENER_DIRECTIVES = frozenset({"bind", "view"})

# Said wherever a '{' starts a line, in a server block or a nested one.
_BLOCK_OPENS_ALONE = "unexpected '{': a block must open on the line of its directive"


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

    def __init__(self, tokens: list[Token], environ: Mapping[str, str], budget: Budget) -> None:
        self.pending = tokens[::-1]
        self.prev: Token | None = None  # the token taken last
        self.environ = environ
        self.budget = budget
        self.snippets: dict[str, list[Token]] = {}

    # -- token access -----------------------------------------------------

    def peek(self) -> Token | None:
        return self.pending[-1] if self.pending else None

    def take(self) -> Token:
        tok = self.pending.pop()
        self.prev = tok
        return tok

    @staticmethod
    def same_line(a: Token, b: Token) -> bool:
        return a.origin == b.origin and a.end_line == b.line

    def at_new_line(self) -> bool:
        tok = self.peek()
        return self.prev is None or tok is None or not self.same_line(self.prev, tok)

    def next_on_line(self) -> Token | None:
        """The next token if it continues the line of the one just taken."""
        tok = self.peek()
        if tok is None or self.prev is None or not self.same_line(self.prev, tok):
            return None
        return tok

    def env(self, tok: Token) -> str:
        try:
            return substitute(tok.text, self.environ)
        except ValueError as e:
            raise self.error(tok, f"{e} in {tok.text!r}") from None

    @staticmethod
    def error(tok: Token, message: str) -> CorefileError:
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
            raise self.error(extra, f"unexpected {extra.text!r}: import takes only one argument "
                                    "(glob pattern, file or snippet)")
        pattern = self.env(pat)
        if not pattern:
            raise self.error(pat, f"import {pat.text!r} requires a non-empty file path")
        if len(pat.chain) > MAX_IMPORT_DEPTH:
            recent = " -> ".join(pat.chain[-3:])
            raise self.error(pat, f"imports nested too deeply: more than {MAX_IMPORT_DEPTH} "
                                  f"imports one inside another (... -> {recent} -> {pattern})")
        if pattern in self.snippets:
            new = self.expand_snippet(pat, pattern)
        else:
            new = self.import_files(pat, pattern)
        self.pending.extend(reversed(new))
        self.prev = before  # the imported lines never run on from the line before

    def expand_snippet(self, pat: Token, name: str) -> list[Token]:
        marker = f"({name})"
        if marker in pat.chain:
            cycle = " -> ".join(pat.chain + (marker,))
            raise self.error(pat, f"import cycle: snippet {name!r} is already being imported "
                                  f"({cycle})")
        body = self.snippets[name]
        self.budget.add_tokens(len(body), pat.file, pat.line, pat.text)
        origin = new_origin()
        chain = pat.chain + (marker,)
        return [replace(t, origin=origin, chain=chain) for t in body]

    def import_files(self, pat: Token, pattern: str) -> list[Token]:
        # Relative to the file holding the import token (for a snippet, the
        # file that defined it), as Caddy does.
        if os.path.isabs(pattern):
            full = pattern
        else:
            full = os.path.join(os.path.dirname(os.path.abspath(pat.file)), pattern)
        if full.count("*") > 1 or full.count("?") > 1 or ("[" in full and "]" in full):
            raise self.error(pat, "glob pattern may only contain one wildcard (*), but has others: "
                                  f"{pattern!r}")
        if "[" in full:
            raise self.error(pat, f"bad glob pattern {pattern!r}: unclosed '['")
        allowed = MAX_IMPORTED_FILES - self.budget.imports
        try:
            matches = glob_files(full, allowed)
        except TooManyFiles as e:
            raise self.error(pat, f"cannot import {pattern!r}: {e}; a Corefile may import "
                                  f"{MAX_IMPORTED_FILES:,} files in all") from None
        if not matches:
            if any(c in full for c in "*?[]"):
                log.warning("%s:%d: no files match import glob pattern %r",
                            pat.file, pat.line, pattern)
                return []
            if "/" in pattern or os.sep in pattern:
                raise self.error(pat, f"file to import not found: {pattern!r} ({full})")
            raise self.error(
                pat,
                f"unknown snippet {pattern!r} in import (no snippet of that name is defined "
                f"above it, and there is no file {full})",
            )
        if len(matches) > allowed:
            raise self.error(pat, f"cannot import {pattern!r}: a Corefile may import "
                                  f"{MAX_IMPORTED_FILES:,} files in all")
        tokens: list[Token] = []
        for path in matches:
            path = os.path.abspath(path)
            if path in pat.chain:
                cycle = " -> ".join(pat.chain + (path,))
                raise self.error(pat, f"import cycle: {pattern!r} is already being imported "
                                      f"({cycle})")
            try:
                data = read_bounded(path, self.budget)
            except (OSError, ValueError) as e:
                why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
                raise self.error(pat, f"could not import {path!r}: {why}") from None
            self.budget.imports += 1
            tokens.extend(tokenize(decode_utf8(data, path), path, pat.chain + (path,), self.budget))
        return tokens

    # -- top level ----------------------------------------------------------

    def parse_all(self) -> list[tuple[list[tuple[Token, str]], list[Directive]]]:
        blocks = []
        while (tok := self.peek()) is not None:
            if tok.text == "import" and self.at_new_line():
                self.expand_import()
                continue
            block = self.parse_block()
            if block is not None:
                blocks.append(block)
        return blocks

    def parse_keys(self) -> tuple[list[tuple[Token, str]], bool]:
        """Read the keys of a server block, up to ``{`` or the end of line.

        Returns the (token, text) pairs, with env substitution applied and
        empty results dropped, and whether any key token was written at all.
        """
        keys: list[tuple[Token, str]] = []
        written = False
        expecting = False  # a trailing comma promises another key
        last: Token | None = None
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
                    raise self.error(tok, "expected another address but found '{' - "
                                          "check for an extra comma")
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
            raise self.error(last, f"unexpected end of file after {last.text!r}: "
                                   "expected another address")
        return keys, written

    def parse_block(self) -> tuple[list[tuple[Token, str]], list[Directive]] | None:
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

    def define_snippet(self, key_tok: Token, name: str) -> None:
        if name in self.snippets:
            raise self.error(key_tok, f"redeclaration of previously declared snippet {name!r}")
        brace = self.peek()
        if brace is None or brace.text != "{":
            where = brace if brace is not None else key_tok
            found = f"{brace.text!r}" if brace is not None else "end of file"
            raise self.error(where,
                             f"snippet {key_tok.text!r} must be followed by '{{', found {found}")
        self.take()
        body: list[Token] = []
        depth = 1
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error(brace, f"unclosed '{{' of snippet {key_tok.text!r}: "
                                        "no matching '}' before end of file")
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
            if tok.text != "import" or (j > 0 and self.same_line(body[j - 1], tok)):
                continue  # not an import line
            if self.same_line(tok, body[j + 1]) and self.env(body[j + 1]) == name:
                raise self.error(body[j + 1], f"import cycle: snippet {name!r} imports itself")
        self.snippets[name] = body

    # -- directives ---------------------------------------------------------

    def parse_directives(self, brace: Token | None) -> list[Directive]:
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
                raise self.error(tok, _BLOCK_OPENS_ALONE)
            directives.append(self.parse_directive(nested=False, depth=1))

    @classmethod
    def too_deep(cls, brace: Token) -> CorefileError:
        return cls.error(brace, f"blocks nested too deeply: more than {MAX_NESTING} levels of '{{'")

    def parse_nested_block(self, brace: Token, depth: int) -> list[Directive]:
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
                raise self.error(tok, _BLOCK_OPENS_ALONE)
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
                    raise self.error(after,
                                     f"unexpected {after.text!r} after '}}' on the same line")
                break
            if tok.text == "}":
                if nested:
                    break  # closes the enclosing block; the caller takes it
                raise self.error(tok, "unexpected '}' "
                                      "(the '}' closing a server block must start a line)")
            self.take()
            args.append(self.env(tok))
            arg_lines.append(tok.line)
        return Directive(self.env(name), tuple(args), tuple(block), name.file, name.line,
                         tuple(arg_lines))


# --------------------------------------------------------------------------
# Entry points


def _check_duplicates(blocks: list[ServerBlock], key_tokens: list[list[Token]]) -> None:
    """Refuse a zone and port served twice, as CoreDNS does at startup, at
    the second key; blocks with bind or view are left to the layer above."""
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


def parse(text: str, filename: str = "Corefile", *,
          environ: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
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
    return _parse(text, filename, os.environ if environ is None else environ, Budget())


def _parse(text: str, filename: str, env: Mapping[str, str],
           budget: Budget) -> tuple[ServerBlock, ...]:
    tokens = tokenize(text, filename, (os.path.abspath(filename),), budget)
    parser = _Parser(tokens, env, budget)
    blocks: list[ServerBlock] = []
    key_tokens: list[list[Token]] = []
    for keys, directives in parser.parse_all():
        addresses: list[ZoneAddress] = []
        toks: list[Token] = []
        for tok, key in keys:
            try:
                expanded = parse_key(key)
            except ValueError as e:
                raise CorefileError(tok.file, tok.line, f"invalid server block key {key!r}: {e}",
                                    tok.text) from None
            addresses.extend(expanded)
            toks.extend([tok] * len(expanded))
        first = keys[0][0]
        blocks.append(ServerBlock(tuple(addresses), tuple(directives), first.file, first.line))
        key_tokens.append(toks)
    _check_duplicates(blocks, key_tokens)
    return tuple(blocks)


def parse_file(path: str | os.PathLike[str], *,
               environ: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
    """Read and parse a Corefile; imports are relative to its directory.

    Only a regular file is read (a FIFO or a device is refused before it is
    opened, and a FIFO put in its place by then cannot block the read), of
    at most MAX_FILE_BYTES; the other limits are :func:`parse`'s.
    """
    name = os.fspath(path)
    budget = Budget()
    try:
        data = read_bounded(name, budget)
    except (OSError, ValueError) as e:
        why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
        raise CorefileError(name, 0, f"cannot read Corefile: {why}") from e
    return _parse(decode_utf8(data, name), name, os.environ if environ is None else environ, budget)
