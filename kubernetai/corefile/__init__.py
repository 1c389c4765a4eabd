"""The Corefile: text in, server blocks of directives out; knows nothing of DNS answers."""

from kubernetai.corefile.parser import (
    CorefileError,
    Directive,
    ServerBlock,
    ZoneAddress,
    parse,
    parse_file,
)

__all__ = ["CorefileError", "Directive", "ServerBlock", "ZoneAddress", "parse", "parse_file"]
