"""The Corefile: text in, server blocks of directives out; knows nothing of DNS answers.

:func:`parse` and :func:`parse_file` turn a Corefile into frozen
:class:`ServerBlock` values, or raise a located :class:`CorefileError`.
The rest is what the layers above need to read configuration the same way:
:func:`parse_key` for a zone written as a directive argument,
:func:`read_regular_file` for a file a directive names, the text helpers
for quoting configuration in a message, and the documented limits.

The modules, one concern each: ``errors`` (the error and safe quoting),
``model`` (the frozen data), ``limits`` (the bounds and the budget of one
reading), ``lexer`` (tokens), ``environ`` (``{$NAME}`` substitution),
``files`` (regular files and import globs), ``keys`` (server block keys)
and ``parser`` (blocks, directives and imports).
"""

from kubernetai.corefile.errors import (
    CorefileError,
    arg_error,
    describe_char,
    excerpt,
    no_options,
    printable,
)
from kubernetai.corefile.files import read_regular_file
from kubernetai.corefile.keys import origins, parse_key
from kubernetai.corefile.limits import (
    MAX_FILE_BYTES,
    MAX_IMPORT_DEPTH,
    MAX_IMPORTED_FILES,
    MAX_NESTING,
    MAX_TOKENS,
    MAX_TOTAL_BYTES,
)
from kubernetai.corefile.model import Directive, ServerBlock, ZoneAddress
from kubernetai.corefile.parser import parse, parse_file

__all__ = [
    "arg_error",
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
    "describe_char",
    "excerpt",
    "parse",
    "parse_file",
    "no_options",
    "origins",
    "parse_key",
    "printable",
    "read_regular_file",
]
