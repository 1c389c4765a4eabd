"""An explanation (the JSON ``/explain`` answers) as lines for a person to read.

``kubernetai explain`` prints this, and ``/explain?format=text`` answers it; both read the
same JSON, so what a person reads and what a script parses never disagree.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_text"]

_CACHE_STATES = {
    "absent": "not in the answer cache",
    "fresh": "in the answer cache: the next query is answered from it",
    "renewable": "in the answer cache, its TTL passed but its cluster did not change: the "
                 "next query renews it and is answered from it",
    "expired": "in the answer cache, expired: the next query asks again",
    "stale": "in the answer cache, but its cluster changed since: the next query asks again",
    "not-kept": "the answer cache does not keep this name (it holds a dot inside a label)",
    "no-cache": "this block has no answer cache",
    "no-block": "no server block, no answer cache",
}


def render_text(found: dict[str, Any]) -> str:
    """The explanation, one fact a line."""
    lines: list[str] = []
    question = found.get("question", {})
    where = found.get("server", {})
    lines.append(f"{question.get('name', '?')} {question.get('type', '?')} "
                 f"on {where.get('listen') or 'port ' + str(where.get('port', '?'))}")
    if where.get("zone") is None:
        lines.append(found.get("why") or "no server block serves this name")
    else:
        lines.append(f"server block {where.get('keys')} ({where.get('block')}), "
                     f"zone {where.get('zone')}")
    steps = found.get("steps", [])
    if steps:
        lines.append("plugins, in the order the query meets them:")
    width = max((len(step.get("plugin", "")) for step in steps), default=0)
    for step in steps:
        lines.append(f"  {step.get('plugin', '?'):<{width}}  {_outcome(step)}")
        for number, resolver in enumerate(step.get("resolvers", ()), 1):
            lines.append(f"    {number}. {_stanza(resolver)}: {_outcome(resolver)}")
    for chase in found.get("chases", ()):
        lines.append(f"chased {chase.get('name')} {chase.get('type')} through the server: "
                     f"{chase.get('rcode', '?')}"
                     + (f" (zone {chase['zone']})" if chase.get("zone") else ""))
        for number, resolver in enumerate(chase.get("resolvers", ()), 1):
            lines.append(f"    {number}. {_stanza(resolver)}: {_outcome(resolver)}")
    answered = found.get("answered_by")
    if answered:
        lines.append("answered by " + _answered(answered))
    flags = ", authoritative" if found.get("authoritative") else ""
    lines.append(f"rcode {found.get('rcode', '?')}{flags}")
    if found.get("error"):
        lines.append(f"plugin error: {found['error']}")
    for section in ("answer", "authority", "additional"):
        records = found.get(section) or []
        if records:
            lines.append(f"{section}:")
            lines += [f"  {record}" for record in records]
    lines.append(_cache(found.get("cache") or {}))
    return "\n".join(lines) + "\n"


def _stanza(step: dict[str, Any]) -> str:
    if "stanza" not in step:
        return step.get("plugin", "?")
    zones = " ".join(step.get("zones", ()))
    return f"{step.get('plugin', '?')} {step['stanza']} ({zones})"


def _outcome(step: dict[str, Any]) -> str:
    outcome = step.get("outcome", "?")
    text = outcome
    if outcome == "answered" and step.get("rcode"):
        text = f"answered {step['rcode']}"
    elif outcome == "passed on" and step.get("rcode"):
        text = f"passed on (came back {step['rcode']})"
    if step.get("why"):
        text += f": {step['why']}"
    if step.get("error"):
        text += f": {step['error']}"
    return text


def _answered(step: dict[str, Any]) -> str:
    if "stanza" not in step:
        return step.get("plugin", "?") + (f" ({step['why']})" if step.get("why") else "")
    parts = [f"{step.get('plugin', '?')} stanza {step['stanza']}",
             "zones " + " ".join(step.get("zones", ()))]
    if step.get("api_server"):
        parts.append(f"API server {step['api_server']}")
    parts.append("synced" if step.get("synced") else "NOT synced")
    return ", ".join(parts)


def _cache(state: dict[str, Any]) -> str:
    text = _CACHE_STATES.get(state.get("state", ""), state.get("state", "?"))
    if state.get("in_cache"):
        text += f" ({state.get('rcode')}, {state.get('answers')} answer record(s), " \
                f"TTL left {state.get('ttl_left')}s)"
    if "cacheable" in state:
        text += "; this answer " + (f"may be kept for {state['keep_for']}s"
                                    if state["cacheable"] else "is not kept")
    return "answer cache: " + text
