"""Mutated Corefiles through the real parser and compiler, each under a time and memory limit.

    python bench/fuzz_corefile.py [--count 100000] [--workers 2] [--timeout 5] [--seed 1]

Each file is read the way `kubernetai check` reads one (`corefile.parse_file`, then
`server.compile_corefile` and `warnings_for`, without connecting to any API server) in a
worker process with a clean environment and an address-space limit, so `import /dev/zero`
fails there instead of exhausting the machine. A worker that does not answer within
`--timeout` seconds is killed and the file counted as a hang (a FIFO import blocks for
ever, for example). Printed at the end: files, accepted, refused with a proper error
(`FILE:LINE: message`, a line of that file, no raw control characters, at most 1,024
characters), refused with an improper one (or accepted with a warning holding raw control
characters), crashes (any other exception, with the first
tracebacks), hangs, and the workers' peak RSS. Inputs behind every finding are written to
a directory for replay (`--replay FILE` reads one file and prints what happens).

Exit status: 1 if any file crashed or hung, 3 if only improper messages were found, else 0.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import (  # noqa: E402
    COREFILE_ENV,
    IMPORTABLE,
    ROOT,
    CorefileMutator,
    message_problems,
    mib,
    printable,
    proc_status,
)

EXAMPLES_SHOWN = 5


# ---------------------------------------------------------------------------------------
# The worker: one process, one Corefile at a time, answers on stdout as JSON lines


def _prepare(directory: Path) -> None:
    """The files a mutated Corefile may import, next to it."""
    shutil.copytree(ROOT / "tests" / "corefiles" / "extra", directory / "extra")
    (directory / "sub").mkdir()
    for name, text in IMPORTABLE.items():
        (directory / name).write_text(text)
    (directory / "binary.conf").write_bytes(b"log\n\xff\xfe bad\n")
    os.mkfifo(directory / "fifo.conf")


def _located(error: Any) -> list[str]:
    """What is wrong with a CorefileError as an operator would read it."""
    problems = []
    text = str(error)
    if not text.startswith(f"{error.filename}:{error.line}: "):
        problems.append("does not start with FILE:LINE:")
    try:
        with open(error.filename, "rb") as fh:
            lines = fh.read(1 << 20).count(b"\n") + 1
        if not 1 <= error.line <= lines:
            problems.append(f"line {error.line} is not a line of the {lines}-line file")
    except OSError:
        problems.append(f"names a file that cannot be read: {error.filename!r}")
    return problems + message_problems(error.message)


def read_corefile(path: Path) -> dict[str, Any]:
    """Parse and compile as `kubernetai check` does, without connecting; classify."""
    from kubernetai.app.server import compile_corefile, warnings_for
    from kubernetai.corefile import CorefileError, parse_file
    try:
        blocks = parse_file(path, environ=COREFILE_ENV)
        notes = ([n for plan in compile_corefile(blocks) for n in warnings_for(plan)]
                 if blocks else [])
    except CorefileError as error:
        problems = _located(error)
        return {"outcome": "improper" if problems else "refused",
                "detail": str(error)[:2000], "problems": problems}
    except BaseException as error:  # noqa: BLE001 - anything else is the finding
        lines = traceback.format_exc(limit=-6).splitlines()
        return {"outcome": "crash", "detail": "\n".join(lines[-16:]),
                "problems": [type(error).__name__]}
    # Warnings list the zones a Corefile names, so their length is the configuration's:
    # only raw control characters count against them.
    problems = sorted({f"warning: {p}" for note in notes for p in message_problems(note)
                       if p == "raw control characters"})
    return {"outcome": "improper" if problems else "accepted",
            "detail": "\n".join(notes)[:2000], "problems": problems}


def worker(directory: Path) -> None:
    """Read jobs (JSON lines with base64 Corefile bytes) from stdin; answer each.

    `directory` is the driver's: it removes it, also after killing a worker that hung.
    """
    _prepare(directory)
    path = directory / "Corefile"
    for line in sys.stdin:
        job = json.loads(line)
        path.write_bytes(base64.b64decode(job["data"]))
        result = read_corefile(path)
        result["detail"] = result["detail"].replace(f"{directory}/", "")
        result["id"] = job["id"]
        result["hwm"] = proc_status(os.getpid(), "VmHWM") or 0
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# The driver


@dataclass
class Findings:
    files: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {
        "accepted": 0, "refused": 0, "improper": 0, "crash": 0, "hang": 0})
    examples: dict[str, list[str]] = field(default_factory=dict)
    peak_kib: int = 0
    saved: Path | None = None

    def record(self, outcome: str, detail: str, data: bytes, problems: list[str]) -> None:
        self.counts[outcome] += 1
        if outcome in ("accepted", "refused"):
            return
        key = f"{outcome}: {', '.join(sorted(set(problems)))}" if problems else outcome
        shown = self.examples.setdefault(key, [])
        if len(shown) < EXAMPLES_SHOWN:
            assert self.saved is not None
            name = f"{outcome}-{self.counts[outcome]}.Corefile"
            (self.saved / name).write_bytes(data)
            # The first of a kind in full; the next ones by their file only.
            shown.append(f"[{self.saved / name}]" + (f"\n{printable(detail, 1500)}"
                                                      if not shown else ""))


class Worker:
    """A worker subprocess with one job in flight at most."""

    def __init__(self, memory_mib: int) -> None:
        limit = memory_mib * 1024 * 1024

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": str(ROOT), "HOME": tempfile.gettempdir()}
        self.directory = Path(tempfile.mkdtemp(prefix="fuzz-corefile-worker-"))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(self.directory)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir(),
            preexec_fn=limits, text=True, bufsize=1)
        self.job: tuple[int, bytes, float] | None = None

    def send(self, ident: int, data: bytes) -> None:
        self.job = (ident, data, time.monotonic())
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(
            {"id": ident, "data": base64.b64encode(data).decode()}) + "\n")
        self.process.stdin.flush()

    def hwm(self) -> int:
        """The worker's peak resident memory, KiB."""
        return proc_status(self.process.pid, "VmHWM") or 0

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    mutator = CorefileMutator(rng, special_rate=args.special_rate)
    findings = Findings()
    findings.saved = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fuzz-corefile-"))
    findings.saved.mkdir(parents=True, exist_ok=True)
    selector = selectors.DefaultSelector()
    workers: list[Worker] = []

    def start_worker() -> Worker:
        w = Worker(args.memory)
        selector.register(w.process.stdout, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    def replace(w: Worker) -> None:
        findings.peak_kib = max(findings.peak_kib, w.hwm())
        selector.unregister(w.process.stdout)
        w.kill()
        workers.remove(w)
        start_worker()

    for _ in range(args.workers):
        start_worker()
    sent = 0
    started = time.monotonic()
    last_report = started
    deadline = started + args.max_minutes * 60
    while findings.files < args.count and time.monotonic() < deadline:
        for w in workers:
            if w.job is None and sent < args.count:
                w.send(sent, mutator.next())
                sent += 1
        for key, _ in selector.select(timeout=0.2):
            w = key.data
            line = w.process.stdout.readline()
            if w.job is None:
                continue
            _, data, _ = w.job
            w.job = None
            findings.files += 1
            if not line:  # the worker died on this file
                code = w.process.poll()
                findings.record("crash", f"worker exited with status {code}", data,
                                [f"worker died ({code})"])
                replace(w)
                continue
            result = json.loads(line)
            findings.peak_kib = max(findings.peak_kib, result.get("hwm", 0))
            findings.record(result["outcome"], result["detail"], data, result["problems"])
        now = time.monotonic()
        for w in list(workers):
            if w.job is not None and now - w.job[2] > args.timeout:
                _, data, _ = w.job
                findings.files += 1
                findings.record("hang", f"no answer within {args.timeout} s", data, [])
                replace(w)
        if now - last_report > 30:
            last_report = now
            print(f"... {findings.files} files, {findings.counts}", flush=True)
    for w in workers:
        findings.peak_kib = max(findings.peak_kib, w.hwm())
        w.kill()
    return report(findings, time.monotonic() - started, args)


def report(findings: Findings, seconds: float, args: argparse.Namespace) -> int:
    c = findings.counts
    print(f"\nfuzz_corefile: {findings.files} files in {seconds:.0f} s (seed {args.seed})")
    print(f"  accepted                    {c['accepted']}")
    print(f"  refused with a proper error {c['refused']}")
    print(f"  refused improperly          {c['improper']}  (no FILE:LINE, control characters, "
          f"or longer than 1,024 characters; or a warning with control characters)")
    print(f"  crashes                     {c['crash']}")
    print(f"  hangs                       {c['hang']}  (no answer within {args.timeout} s)")
    print(f"  peak RSS of a worker        {mib(findings.peak_kib)}")
    for key, shown in sorted(findings.examples.items()):
        print(f"\n== {key} ({len(shown)} shown)")
        for example in shown:
            print(example)
    if findings.examples:
        print(f"\ninputs kept in {findings.saved} (replay: python {sys.argv[0]} --replay FILE)")
    elif not args.out:
        shutil.rmtree(findings.saved, ignore_errors=True)
    if c["crash"] or c["hang"]:
        return 1
    return 3 if c["improper"] else 0


def replay(path: str) -> int:
    """Read one kept input as a worker would (its imports resolved next to a fresh copy)."""
    directory = Path(tempfile.mkdtemp(prefix="fuzz-corefile-replay-"))
    try:
        _prepare(directory)
        target = directory / "Corefile"
        target.write_bytes(Path(path).read_bytes())
        print(json.dumps(read_corefile(target), indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="Corefiles to try")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds one file may take before it counts as a hang")
    parser.add_argument("--memory", type=int, default=512,
                        help="address-space limit of a worker, MiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--special-rate", type=float, default=0.002,
                        help="share of insertions that name /dev/zero, a FIFO, /proc/self/environ")
    parser.add_argument("--max-minutes", type=float, default=180,
                        help="stop early after this long, whatever --count says")
    parser.add_argument("--out", help="where to keep the inputs behind findings")
    parser.add_argument("--replay", help="read one kept Corefile and print the outcome")
    parser.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker))
        return 0
    if args.replay:
        return replay(args.replay)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
