"""How much one Corefile may hold, and what one reading of it has used.

CoreDNS has no such limits: a Corefile is trusted input.  But it may import
files an operator did not write (a ConfigMap, a conf.d directory) and it is
re-read on every reload, so reading and parsing one must be bounded in
memory and time whatever it holds: any input ends quickly in a result or a
:class:`~kubernetai.corefile.errors.CorefileError`.  Each limit is far
above any real Corefile (the stock ones hold about a hundred tokens).

The limits live together so that they can be documented (and tested
against the reference page) as one table, and so that the single
:class:`Budget` of one reading is shared by the lexer, the file reader and
the parser, however many files and snippets the Corefile splices in.
"""

from __future__ import annotations

from kubernetai.corefile.errors import CorefileError

# The documented limits (docs/reference.md has a row for each); the two
# below them bound the work behind a single token or glob.
__all__ = [
    "MAX_FILE_BYTES",
    "MAX_IMPORTED_FILES",
    "MAX_IMPORT_DEPTH",
    "MAX_NESTING",
    "MAX_TOKENS",
    "MAX_TOTAL_BYTES",
    "Budget",
]

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


class Budget:
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
