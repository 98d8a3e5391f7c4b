"""Timing helpers shared by the benchmark scripts: batches, interleaved rounds, medians, tables.

The machine is noisy (2 cores, shared): never compare absolute times across runs, only ratios measured
in the same run. Every comparison here interleaves the implementations round by round and keeps the
median over rounds.
"""
from __future__ import annotations

import gc
import os
import platform
import statistics
import time

# One thread for every library (BLAS under Numba's ``@``, XLA, PyTorch), as in the numbers:
# set before NumPy, SciPy or JAX is imported. A user's explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
# Steady state: the compiled code, not the NumPy tier that answers while Numba compiles in the background
# (benchmarks/tiers.py measures that one on purpose, with compile= set per function).
os.environ.setdefault("TRACEGRAD_COMPILE", "wait")


# The clock every timing uses. The machine is shared: other processes take the CPU for tens of
# milliseconds at a time, and wall-clock batches then take twice as long, at random. The process's CPU time
# (all its threads; page faults and other system time included) does not count that preemption, so it is the
# default; ``use_wall_clock()`` switches to wall time (``--wall`` on the command line).
clock = time.process_time_ns
CLOCK_NAME = "process CPU time"


def use_wall_clock():
    global clock, CLOCK_NAME
    clock = time.perf_counter_ns
    CLOCK_NAME = "wall-clock time"


def use_cpu_clock():
    global clock, CLOCK_NAME
    clock = time.process_time_ns
    CLOCK_NAME = "process CPU time"


def time_batch(fn, args, n) -> float:
    """Nanoseconds per call of ``fn(*args)`` over one batch of ``n`` calls (the Python loop included)."""
    r = range(n)
    now = clock
    t0 = now()
    for _ in r:
        fn(*args)
    return (now() - t0) / n


def calibrate(fn, args, target_ns, cap=100_000) -> int:
    """A batch size giving roughly ``target_ns`` per batch (at least one call)."""
    time_batch(fn, args, 1)
    per_call = min(time_batch(fn, args, 3) for _ in range(3))
    return max(1, min(cap, int(target_ns / max(per_call, 1.0))))


def interleaved(cases: dict, rounds: int) -> dict:
    """Median of each case's samples. ``cases`` maps name -> a callable timing one batch (returns ns/call).

    Each round runs every case once; the order is reversed every other round so drift hits all alike.
    The garbage collector is off while timing (and collected between rounds)."""
    samples = {name: [] for name in cases}
    names = list(cases)
    gc_was_enabled = gc.isenabled()
    try:
        for k in range(rounds):
            gc.collect()
            gc.disable()
            for name in (names if k % 2 == 0 else names[::-1]):
                samples[name].append(cases[name]())
            gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return {name: statistics.median(s) for name, s in samples.items()}


def run_cold(code: str) -> dict:
    """Run ``code`` in a new process with empty caches (``TRACEGRAD_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` in a
    temporary directory); the JSON object its last line prints."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TRACEGRAD_CACHE_DIR=tmp, NUMBA_CACHE_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import numba
    import numpy as np
    import tracegrad as tg
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f" | {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{platform.platform()} | {cpu} | {os.cpu_count()} CPUs{mem} | Python {platform.python_version()} | "
            f"numpy {np.__version__} | numba {numba.__version__} | tracegrad {tg.__version__}{revision()}")


def revision() -> str:
    """The git commit of the tracegrad being measured (and whether tracegrad/ has uncommitted changes)."""
    import subprocess
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "tracegrad"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" at {head}" + (" + uncommitted changes in tracegrad/" if dirty else "") if head else ""


def fmt_time(ns: float | None) -> str:
    """A duration in the unit that suits it."""
    if ns is None:
        return "–"
    if ns < 1e3:
        return f"{ns:.1f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs" if ns < 1e4 else f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "–"
    if b < 2**10:
        return f"{b:.0f} B"
    if b < 2**20:
        return f"{b / 2**10:.0f} KiB"
    return f"{b / 2**20:.1f} MiB"


class Report:
    """Tables printed as they come, and kept to be written as Markdown (``--markdown``)."""

    def __init__(self):
        self.sections: list = []

    def table(self, title: str, header, rows, notes=()):
        rows = [tuple(str(c) for c in r) for r in rows]
        self.sections.append((title, tuple(header), rows, list(notes)))
        table = [tuple(header)] + rows
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        print()
        print(f"== {title}")
        for i, r in enumerate(table):
            print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
            if i == 0:
                print("-+-".join("-" * w for w in widths))
        for note in notes:
            print(f"  {note}")

    def markdown(self) -> str:
        out = []
        for title, header, rows, notes in self.sections:
            out.append(f"### {title}\n")
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---" for _ in header) + "|")
            for r in rows:
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            out.append("")
            for note in notes:
                out.append(f"{note}  ")
            out.append("")
        return "\n".join(out)
