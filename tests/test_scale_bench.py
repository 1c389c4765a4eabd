"""bench/scale.py runs (a small cluster, the phases that need no dnsperf): the sync is
seen through DNS, a relist through the sandbox's fault, stalls through the server's
/metrics. Figures are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = "namespaces=3,services=30,headless=3,endpoints=2,headless_endpoints=3,pods=100"


def test_the_scale_bench_runs_sync_and_relist() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--spec", SPEC, "--modes",
         "verified", "--only", "sync,relist", "--relists", "1", "--timeout", "60"],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "sync: every checked name answers" in out and "last pod" in out
    assert "the changes made at once answer after" in out
    assert "'watch pods'" in out or "'list pods'" in out   # the pods were listed again
    assert "max reactor stall" in out and "objects frozen" in out
    assert "problem lines" not in out, out
