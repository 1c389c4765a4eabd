"""docs/reference.md documents every option, command, directive and public name the code has."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import kubernetai
import kubernetai.corefile as corefile
from kubernetai import cli
from kubernetai.app import tap
from kubernetai.core.plugin import position
from kubernetai.core.registry import Registry
from kubernetai.corefile import Directive
from kubernetai.plugins.kubernetai.config import OPTION_NAMES

REFERENCE = (Path(__file__).resolve().parent.parent / "docs" / "reference.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_documented():
    """Each `kubernetai` subcommand has its usage line."""
    for name in _subcommands():
        assert f"kubernetai {name}" in REFERENCE, name


def _section(command: str) -> str:
    """The part of the page that documents one subcommand: from "`cmd`:" to the next one."""
    start = REFERENCE.index(f"\n`{command}")
    following = [REFERENCE.find(marker, start + 1) for marker in ("\n`", "\n## ")]
    return REFERENCE[start:min(f for f in following if f > 0)]


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_option_is_documented(command):
    """Each long option of each subcommand appears, in backticks, in that command's section."""
    parser = _subcommands()[command]
    section = _section(command)
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}`" in section, f"{command} {option}"


def test_twistd_options_are_documented():
    """Each `twistd kubernetai` option appears."""
    for long, _short, *_ in tap.Options.optParameters:
        assert f"`--{long}`" in REFERENCE, long


def test_directives_are_documented_with_their_order():
    """Each registered directive has a row giving its place in the pipeline order (its index
    in CoreDNS's plugin.cfg, `position`), and the rows are listed in that order."""
    registry = Registry()
    rows = REFERENCE.splitlines()
    places = []
    for name in registry.names():
        plugin = registry.get(Directive(name, (), (), "x", 1, ()))
        where = position(name, getattr(plugin, "after", None))
        index = next((i for i, line in enumerate(rows) if line.startswith(f"| `{name}`")), None)
        assert index is not None, f"no row for directive {name}"
        assert f"| {where:g} |" in rows[index], (name, where, rows[index])
        places.append((index, where))
    assert [where for _, where in sorted(places)] == sorted(where for _, where in places)


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_stanza_options_are_documented(option):
    """Each stanza option the parser accepts has a row."""
    assert f"| `{option}`" in REFERENCE


@pytest.mark.parametrize("name", kubernetai.__all__)
def test_public_names_are_documented(name):
    """Each name in kubernetai.__all__ has a row in the embedding table."""
    assert f"| `{name}` |" in REFERENCE


def _shown(name: str, value: int) -> str:
    return f"{value >> 20} MiB" if name.endswith("_BYTES") else f"{value:,}"


@pytest.mark.parametrize("name", [n for n in corefile.__all__ if n.startswith("MAX_")])
def test_corefile_limits_are_documented(name):
    """Each Corefile limit has a row in the limits table, with its value."""
    value = getattr(corefile, name)
    row = next(line for line in REFERENCE.splitlines() if f"(`{name}`)" in line)
    assert f"| {_shown(name, value)} (`{name}`)" in row, row
