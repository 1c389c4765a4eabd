"""The 2-minute soak (bench/soak.py) as part of the suite: real processes, faults, a full check.

It starts three API server processes and the DNS server under twistd, changes the clusters
~100 times a second through their REST API while querying, injects every fault kind once
(stalled and cut watches, an API server restart from its manifests, 410s, 503/429 bursts, a
reload and two bad reloads), and then compares every name the API state implies with DNS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "bench" / "soak.py"
FAULT_KINDS = ("stall", "restart", "cut", "expire", "errors", "reload", "bad-syntax",
               "bad-token")


def test_two_minute_soak(tmp_path):
    """No stale or missing record after settling, no failed query, no crash, no traceback."""
    report_path = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(SOAK), "--minutes", "2", "--seed", "7",
                             "--report-json", str(report_path)],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    report = json.loads(report_path.read_text())
    # The soak really ran: every fault kind happened, changes were made and checked.
    done = {entry.split("@", 1)[0] for entry in report["faults"]}
    assert done == set(FAULT_KINDS), output
    assert report["counts"]["changes"] > 5_000, output
    assert report["counts"]["queries"] > 10_000, output
    assert report["final_check"]["names"] > 3_000 and not report["final_check"]["mismatches"]
    assert report["restart_relist_s"], output
    assert [r["kind"] for r in report["reloads"]] == ["reload", "bad-syntax", "bad-token",
                                                      "restore"], output
