"""EDNS0 options on the wire: an OPT record's rdata to ``[code, data]`` pairs and back."""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["parse_options", "encode_options"]

_OPTION = struct.Struct("!HH")


def parse_options(rdata: bytes) -> list[list[Any]]:
    """An OPT record's options as ``[code, data]`` pairs (the server has checked them)."""
    options = []
    pos = 0
    while pos + 4 <= len(rdata):
        code, length = _OPTION.unpack_from(rdata, pos)
        options.append([code, rdata[pos + 4:pos + 4 + length]])
        pos += 4 + length
    return options


def encode_options(options: list[list[Any]]) -> bytes:
    return b"".join([_OPTION.pack(code, len(data)) + data for code, data in options])
