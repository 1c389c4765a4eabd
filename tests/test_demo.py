"""Tests for `kubernetai check` (kubernetai.sandbox.demo.run_check) through the console entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubernetai import cli
from kubernetai.sandbox import demo

ROOT = Path(__file__).resolve().parent.parent
COREFILES = Path(__file__).resolve().parent / "corefiles"


def check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, text: str, name: str = "Corefile") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_corefile_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped Corefile.example checks clean: one line of summary, exit 0."""
    path = ROOT / "Corefile.example"
    assert check(path, capsys) == (
        0, f"{path}: OK: 1 server block(s), 3 kubernetai stanza(s), port(s) 1053\n", "")


def test_check_counts_blocks_stanzas_and_ports(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The summary counts server blocks, kubernetai stanzas and lists the ports."""
    api = "{\n        endpoint http://127.0.0.1:9\n    }"
    path = write(tmp_path, f"a.local:1053 {{\n    kubernetai {api}\n    kubernetai {{\n"
                           "        endpoint http://127.0.0.1:9\n"
                           "        fallthrough\n    }\n}\n"
                           f"b.local:2053 {{\n    errors\n    kubernetai {api}\n}}\n"
                           f"c.local:1053 {{\n    log\n    kubernetai {api}\n}}\n")
    code, out, err = check(path, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (f"{path}: OK: 3 server block(s), 4 kubernetai stanza(s), "
                                    "port(s) 1053, 2053")


def test_check_prints_warnings_and_still_passes(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Warnings are printed before the summary, prefixed 'warning: '; the exit code stays 0."""
    path = write(tmp_path, ".:53 {\n    kubernetai cluster.local {\n        fallthrough\n"
                           "        ttl 10\n        ttl 20\n"
                           "        endpoint http://127.0.0.1:9\n    }\n}\n")
    code, out, err = check(path, capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1].startswith(f"{path}: OK: 1 server block(s), 1 kubernetai stanza(s)")
    warnings = lines[:-1]
    assert warnings[0] == (f"warning: {path}:5: kubernetai: 'ttl' is given again (first at "
                           "line 4); the last one is used")
    assert any(w.startswith(f"warning: {path}:2: kubernetai: the last stanza has fallthrough")
               for w in warnings)
    assert any(w.startswith(f"warning: {path}:1: names in . outside the kubernetai zones")
               for w in warnings)
    assert all(w.startswith("warning: ") for w in warnings)


@pytest.mark.parametrize("text, line, message", [
    pytest.param(".:53 {\n    errors\n    cache 30\n}\n", 3, "unknown directive 'cache'",
                 id="unknown-directive"),
    pytest.param(".:53 {\n    errors\n    errors\n}\n", 3,
                 "this plugin can only be used once per Server Block: 'errors'",
                 id="errors-twice"),
    pytest.param(".:53 {\n    kubernetai {\n        pods sometimes\n    }\n}\n", 3, None,
                 id="bad-stanza-option"),
    pytest.param(".:53 {\n    log {\n        class failures\n    }\n}\n", 3,
                 "log: unknown class 'failures'", id="bad-log-class"),
    pytest.param(".:53 {\n    bind eth0\n}\n", 2,
                 "bind: not a valid IP address: 'eth0' (interface names are not supported)",
                 id="bad-bind"),
    pytest.param(".:53 {\n    errors\n", None, None, id="unclosed-block"),
])
def test_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                      line: int | None, message: str | None) -> None:
    """A Corefile error is printed on stderr as FILE:LINE: message, with exit code 1."""
    path = write(tmp_path, text)
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err.endswith("\n") and err.count("\n") == 1
    assert err.startswith(f"{path}:")
    if line is not None:
        assert err.startswith(f"{path}:{line}: ")
    if message is not None:
        assert err == f"{path}:{line}: {message}\n"


def test_check_kubeadm_corefile_names_first_unknown_plugin(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A stock kubeadm Corefile fails at its first plugin kubernetai does not have."""
    path = COREFILES / "kubeadm.Corefile"
    assert check(path, capsys) == (1, "", f"{path}:3: unknown directive 'health'\n")


def test_check_error_in_an_imported_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An error in an imported file names that file and its line."""
    (tmp_path / "extra").mkdir()
    write(tmp_path / "extra", "errors\n\nwhoami\n", "10-extra.conf")
    path = write(tmp_path, ".:53 {\n    import extra/*.conf\n}\n")
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'extra' / '10-extra.conf'}:3: unknown directive 'whoami'\n"


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Corefile that cannot be read is an error naming the file, exit code 1."""
    path = tmp_path / "missing"
    code, out, err = check(path, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:")
    assert "No such file or directory" in err


def test_check_needs_a_file_argument(capsys: pytest.CaptureFixture[str]) -> None:
    """`kubernetai check` without a file is an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["check"])
    assert info.value.code == 2
    assert "corefile" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`kubernetai` with no command prints help listing check and demo, exit code 2."""
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "check" in out and "demo" in out


def test_demo_options_parse() -> None:
    """The demo command's options parse without starting anything."""
    args = cli.build_parser().parse_args(["demo", "--dns-port", "2053", "--corefile", "X"])
    assert (args.run, args.dns_port, args.corefile, args.examples) == (demo.run_demo, 2053,
                                                                       "X", None)
