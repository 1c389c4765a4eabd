"""`acl [ZONES...] { ACTION [type QTYPE...] [net SOURCE...] }`: the directive, read as
CoreDNS's ``acl`` setup reads it, with its messages.

Each `acl` line is one rule; every line of a block adds its rule to the block's one step,
in Corefile order, as CoreDNS's setup gathers them into one handler. Without ZONES a rule
guards the server block's zones. In a policy line, ``type`` and ``net`` open a section (in
any case, any number of times); each needs at least one token. ``*`` takes every type or
every address, and what follows it in its section is not read (as CoreDNS, which stops
there). QTYPEs are miekg/dns names, case-sensitive; SOURCEs are an address or a CIDR.

Stricter than CoreDNS: a zone argument it cannot read is refused (CoreDNS drops it
silently, leaving a rule that guards less than was written), and so is a block under a
policy line.
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.core.router import normalize_zone
from kubernetai.corefile import CorefileError, Directive, parse_key
from kubernetai.pkg.dnscodes import STRING_TO_TYPE
from kubernetai.pkg.gosyntax import quote
from kubernetai.plugins.acl.handler import AclHandler
from kubernetai.plugins.acl.rules import (
    ACTIONS,
    ALL_TYPES,
    EVERY_NETWORK,
    Networks,
    Policy,
    Rule,
    normalize,
    parse_network,
)

_SECTIONS = ("type", "net")


def _error(where: Directive, line: int, message: str, token: str) -> CorefileError:
    return CorefileError(where.filename, line, f"acl: {message}", token)


class AclDirective:
    name = "acl"
    once = False  # every line is one more rule of the block's one step

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        rule = Rule(*self.zones(directive, builder),
                    tuple(self.policy(line) for line in directive.block))
        for stage in builder.stages:
            if isinstance(stage.handler, AclHandler):  # an earlier `acl` line of this block
                stage.handler.add(rule)
                return
        handler = AclHandler()
        handler.add(rule)
        builder.add_handler(handler)

    @staticmethod
    def zones(directive: Directive, builder: BlockBuilder
              ) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        """The rule's zones (``OriginsFromArgsOrServerBlock``): routing form and labels."""
        labels: list[str] = []
        if not directive.args:
            labels = list(dict.fromkeys(builder.zones))
        for arg, line in zip(directive.args, directive.arg_lines):
            try:
                keys = parse_key(arg)
            except ValueError as error:
                raise _error(directive, line, f"invalid zone {quote(arg)}: {error}",
                             arg) from None
            labels += [key.zone for key in keys if key.zone not in labels]
        return tuple(normalize_zone(zone) for zone in labels), tuple(labels)

    @staticmethod
    def policy(line: Directive) -> Policy:
        """One ``ACTION [type QTYPE...] [net SOURCE...]`` line."""
        action = ACTIONS.get(line.name.lower())
        if action is None:
            raise _error(line, line.line, f"unexpected token {quote(line.name)}; expect "
                         "'allow', 'block', 'filter' or 'drop'", line.name)
        if line.block:
            raise _error(line, line.line, "unexpected token \"{\"; expect 'type | net'", "{")
        qtypes: set[int] = set()
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        every_network = False
        has_type = has_net = False
        args, lines = line.args, line.arg_lines
        i = 0
        while i < len(args):
            section = args[i].lower()
            if section not in _SECTIONS:
                raise _error(line, lines[i], f"unexpected token {quote(args[i])}; expect "
                             "'type | net'", args[i])
            start = i = i + 1
            while i < len(args) and args[i].lower() not in _SECTIONS:
                i += 1
            tokens = list(zip(args[start:i], lines[start:i]))
            if not tokens:
                raise _error(line, lines[start - 1],
                             f"no token specified in {quote(section)} section", args[start - 1])
            if section == "type":
                has_type = True
                for token, at in tokens:
                    if token == "*":
                        qtypes.add(ALL_TYPES)
                        break
                    qtype = STRING_TO_TYPE.get(token)
                    if qtype is None:
                        raise _error(line, at, f"unexpected token {quote(token)}; expect "
                                     "legal QTYPE", token)
                    qtypes.add(qtype)
            else:
                has_net = True
                for token, at in tokens:
                    if token == "*":
                        every_network = True
                        break
                    cidr = normalize(token)
                    try:
                        version, network, mask = parse_network(cidr)
                    except ValueError:
                        raise _error(line, at, f"illegal CIDR notation {quote(cidr)}",
                                     token) from None
                    (v4 if version == 4 else v6).append((network, mask))
        if not has_type:
            qtypes.add(ALL_TYPES)
        networks = (EVERY_NETWORK if every_network or not has_net
                    else Networks(tuple(v4), tuple(v6)))
        return Policy(action, frozenset(qtypes), networks)
