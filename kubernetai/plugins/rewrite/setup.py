"""`rewrite`: the directive. Every ``rewrite`` line of a server block is one rule of one
handler, in Corefile order (CoreDNS sets the plugin up once per block with all of them).

A line's words are the rule (``rewrite [continue|stop] FIELD ...``); a line with fewer
than two words takes the words of its block as well, all of them in one rule, as
CoreDNS's setup reads ``rewrite stop { name regex ... \\n answer name ... }``.
"""

from __future__ import annotations

from kubernetai.core.registry import BlockBuilder
from kubernetai.corefile import CorefileError, Directive
from kubernetai.plugins.rewrite.handler import RewriteHandler
from kubernetai.plugins.rewrite.parse import RuleError, new_rule

__all__ = ["RewriteDirective"]

Word = tuple[str, str, int]     # text, file, line


def _words(directive: Directive) -> list[Word]:
    """The rule's words with where each was written."""
    words = [(arg, directive.filename, line)
             for arg, line in zip(directive.args, directive.arg_lines)]
    if len(words) >= 2 or not directive.block:
        if directive.block:
            # CoreDNS does not read the block of a line that is a rule already: it
            # takes the opening brace for the next rule, which has no words.
            raise CorefileError(directive.filename, directive.line,
                                "plugin/rewrite: no rule type specified for rewrite", "{")
        return words
    for line in directive.block:
        if line.block:
            raise CorefileError(line.filename, line.line,
                                "plugin/rewrite: unexpected '{' in a rewrite rule", "{")
        words.append((line.name, line.filename, line.line))
        words.extend((arg, line.filename, at) for arg, at in zip(line.args, line.arg_lines))
    return words


class RewriteDirective:
    name = "rewrite"
    once = False

    def setup(self, directive: Directive, builder: BlockBuilder) -> None:
        words = _words(directive)
        try:
            rule = new_rule([text for text, _, _ in words])
        except RuleError as error:
            if error.index is not None and 0 <= error.index < len(words):
                text, filename, line = words[error.index]
            else:
                text, filename, line = directive.name, directive.filename, directive.line
            raise CorefileError(filename, line, f"plugin/rewrite: {error.message}",
                                text) from None
        handler = _block_handler(builder)
        if handler is None:
            builder.add_handler(RewriteHandler([rule]))
        else:
            handler.rules.append(rule)


def _block_handler(builder: BlockBuilder) -> RewriteHandler | None:
    """The handler an earlier ``rewrite`` line of this block added, if any."""
    for stage in builder.stages:
        if stage.name == "rewrite" and isinstance(stage.handler, RewriteHandler):
            return stage.handler
    return None
