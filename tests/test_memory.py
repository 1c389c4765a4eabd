"""Memory: what a serving process imports, what each object costs, what a re-list leaves.

Each measurement runs in a fresh interpreter (a subprocess), so that what the test
session imported or interned before does not count: the server as ``twistd`` runs it,
against the sandbox; object conversion under ``tracemalloc``; re-lists of pods.  The
bounds are generous (about 1.2x what was measured when they were set, and below the
figures before the objects were trimmed): they catch a regression such as the generated
client's model classes coming back, or objects losing their slots or shared strings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from kubernetai.pkg import memtrim
from kubernetai.sandbox.ports import free_port
from kubernetai.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(code: str, timeout: float = 240) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- what serving imports -----------------------------------------------------------------

_SERVE = """
import atexit, json, sys
def report():
    rss = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmRSS"))
    with open({out!r}, "w") as f:
        json.dump({{"modules": sorted(sys.modules), "rss_kib": rss}}, f)
atexit.register(report)
sys.argv = ["twistd", "-n", "--pidfile=", "kubernetai", "--corefile", {corefile!r}]
from twisted.scripts.twistd import run
run()
"""

# Never needed to serve: the generated client's API and model classes (the informers
# decode JSON themselves), pydantic (the generated client's models and ApiClient), the
# kubeconfig loader when no kubeconfig is used, the HTTP server when no plugin serves
# HTTP, and the simulated API server.
_NOT_SERVING = ("kubernetes.client.models.", "kubernetes.client.api.", "pydantic",
                "kubernetes.config.kube_config", "kubernetes.dynamic", "kubernetes.watch",
                "kubernetes.stream", "yaml", "requests", "twisted.web", "kubernetai.sandbox")


def _ask(port: int, name: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                             timeout=0.5)
    except Exception:  # noqa: BLE001 - not listening or not answering yet
        return None


def test_serving_imports_only_what_it_needs(sandbox: Sandbox, tmp_path: Path) -> None:
    """`twistd kubernetai` with an endpoint stanza, synced and answering, has loaded none
    of the generated client's classes, nor pydantic, the kubeconfig loader, twisted.web
    or the sandbox; and its resident size stays far from the 95 MB it had with them."""
    sandbox.apply([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
         "spec": {"containers": [{"name": "c"}]},
         "status": {"phase": "Running", "podIP": "10.244.0.5"}},
    ])
    name = "web.shop.svc.cluster.local."
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n    bind 127.0.0.1\n    kubernetai cluster.local {{\n"
                        f"        endpoint {sandbox.url}\n        pods verified\n    }}\n}}\n")
    out = tmp_path / "report.json"
    log = (tmp_path / "twistd.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", _SERVE.format(out=str(out),
                                                                  corefile=str(corefile))],
                             env=_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and child.poll() is None:
            answer = _ask(port, name)
            if answer is not None and answer.answer:
                break
            time.sleep(0.1)
        assert answer is not None and answer.answer, (tmp_path / "twistd.log").read_text()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
        log.close()
    report = json.loads(out.read_text())
    loaded = [m for m in report["modules"]
              if any(m == p.rstrip(".") or m.startswith(p.rstrip(".") + ".")
                     for p in _NOT_SERVING)]
    assert loaded == []
    assert "kubernetai.plugins.kubernetai.k8sapi" in report["modules"]
    assert report["rss_kib"] < 85 * 1024, report["rss_kib"]


# -- what an object costs -------------------------------------------------------------------

_SIZES = """
import gc, json, tracemalloc
from kubernetai.sandbox import synthetic
from kubernetai.plugins.kubernetai import objects
spec = synthetic.parse_spec("namespaces=10,services=1000,headless=100,pods=10000")
texts = {}
for obj in synthetic.generate(spec):
    texts.setdefault(obj["kind"], []).append(json.dumps(obj))
convert = {"Service": objects.service_from_json, "EndpointSlice": objects.endpoint_slice_from_json,
           "Pod": objects.pod_from_json}
sizes = {}
for kind, fn in convert.items():
    kept = [None] * len(texts[kind])
    gc.collect()
    tracemalloc.start()
    for i, text in enumerate(texts[kind]):
        kept[i] = fn(json.loads(text))  # the decoded document dies here: only kept counts
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    sizes[kind] = size / len(kept)
    if kind == "EndpointSlice":
        sizes["addresses"] = sum(len(s.addresses) for s in kept) / len(kept)
    assert all(not hasattr(o, "__dict__") for o in kept)
print(json.dumps(sizes))
"""


def test_bytes_per_object() -> None:
    """Bytes kept per converted object, its strings included (measured when set, Python
    3.11: pod 272, service 331, slice of 5 addresses 1613; before interning and shared
    ports: 330, 843, 2313)."""
    sizes = _run(_SIZES)
    assert sizes["addresses"] == pytest.approx(5, abs=1)
    assert sizes["Pod"] < 320, sizes
    assert sizes["Service"] < 420, sizes
    assert sizes["EndpointSlice"] < 1900, sizes


# -- what a re-list leaves ----------------------------------------------------------------

_RELIST = """
import gc, json, tracemalloc
from kubernetai.sandbox import synthetic
from kubernetai.plugins.kubernetai import objects
spec = synthetic.parse_spec("namespaces=20,services=200,headless=20,pods=20000")
pages, page = [], []
for obj in synthetic.generate(spec):
    if obj["kind"] == "Pod":
        page.append(obj)
        if len(page) == 500:
            pages.append(json.dumps({"items": page})); page = []
pages.append(json.dumps({"items": page}))
del page
store = {}
convert = objects.reusing(objects.pod_from_json, lambda: store) if REUSE else objects.pod_from_json
def relist():
    items = {}
    for body in pages:
        for item in json.loads(body)["items"]:
            pod = convert(item)
            items[pod.key] = pod
    return items
gc.collect()
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
store = relist()
gc.freeze()
first = tracemalloc.get_traced_memory()[0] - base
held = next(iter(store.values()))
peaks, afters, unreachable = [], [], []
for _ in range(2):
    tracemalloc.reset_peak()
    new = relist()
    peaks.append(tracemalloc.get_traced_memory()[1] - base)
    gc.disable()
    store = new
    del new
    afters.append(tracemalloc.get_traced_memory()[0] - base)
    unreachable.append(gc.collect())  # nothing left for the cycle collector
    gc.enable()
    gc.freeze()
same = next(iter(store.values())) is held
print(json.dumps({"first": first, "peaks": peaks, "afters": afters,
                  "unreachable": unreachable, "same": same}))
"""


@pytest.mark.parametrize("reuse", [False, True], ids=["new-objects", "reusing"])
def test_relist_returns_what_it_replaces(reuse: bool) -> None:
    """Replacing 20,000 pods twice: the objects replaced are freed by reference counting
    alone (acyclic, even after gc.freeze), so memory goes back to one copy; converting
    with `reusing`, the unchanged pods are the ones already held and a re-list's peak
    is the new dict and a page of temporaries, not a second copy of the pods."""
    result = _run(f"REUSE = {reuse}\n" + textwrap.dedent(_RELIST))
    first = result["first"]
    assert result["unreachable"] == [0, 0]
    for after in result["afters"]:
        assert after < first * 1.05 + 65536, result
    assert result["same"] is reuse
    # Measured: 1.38x the first list reusing (the new dict and one page's documents),
    # 2.26x without (every pod converted twice over).
    for peak in result["peaks"]:
        if reuse:
            assert peak < first * 1.6, result
        else:
            assert peak > first * 1.8, result


# -- giving freed heap back --------------------------------------------------------------

_TRIM = """
import json
from kubernetai.pkg import memtrim
def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmRSS"))
start = rss()
blocks = [bytes(1024) for _ in range(150_000)]  # malloc'd, below the mmap threshold
pin = bytes(1024)  # on top of the heap: freeing the rest cannot shrink it from the top
full = rss()
del blocks
freed = rss()
released = memtrim.trim()
print(json.dumps({"start": start, "full": full, "freed": freed, "trimmed": rss(),
                  "released": released}))
"""


@pytest.mark.skipif(not memtrim.available(), reason="no malloc_trim (not glibc)")
def test_trim_returns_freed_heap() -> None:
    """150 MB of freed 1 KiB blocks stay resident until memtrim.trim() returns them."""
    result = _run(_TRIM)
    grown = result["full"] - result["start"]
    assert grown > 100 * 1024, result
    assert result["released"] is True
    assert result["freed"] - result["trimmed"] > grown // 2, result


def test_trim_is_harmless_when_nothing_is_free() -> None:
    assert memtrim.trim() in (True, False)
    assert memtrim.trim() in (True, False)
