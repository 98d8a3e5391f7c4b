"""Benchmark: waiting for Numba, with each ``compile=`` setting, from a cold start.

    python benchmarks/tiers.py                 # about 5 minutes on a quiet 2-core machine
    python benchmarks/tiers.py --repeats 1     # one run of each

Every run is a new process with empty caches (``TRACEGRAD_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` in a fresh
temporary directory), except the "warm" rows, a second process on the first one's caches. Wall time
(what a user waits for), medians over the repeats.

- MLP step: the first ``tg.value_and_grad`` call of the 64-128-10 MLP step, batch 32 float64
  (``cases.mlp_loss``), from just before the call to its result (``first``; the import of tracegrad is
  ``import``), and until the compiled code is in use (``compiled``: ``f.wait()`` returns; with "wait"
  the first call), and the part of that spent in this process by Numba (``numba``: with "wait" its
  compile and the first run, with "background" loading the worker's result from the disk cache, done by
  the worker's thread while calls evaluate). With "background" the warm process loads what the first
  one's worker compiled (the first process waits for it before it exits).
- ``examples/train_digits.py --no-png`` and ``examples/xor.py``: the whole command, end to end, and the
  digits' test accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MLP = """
import time
t0 = time.perf_counter()
import json, sys
sys.path.insert(0, {here!r})
import numpy as np
import tracegrad as tg
from cases import mlp_args, mlp_loss
t1 = time.perf_counter()
args = mlp_args(32, np.float64)
vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3))
t = time.perf_counter()
vg(*args)
first = time.perf_counter() - t
vg.wait()
compiled = time.perf_counter() - t
print(json.dumps(dict(import_s=t1 - t0, first_s=first, compiled_s=compiled,
                      tier=vg.specialize(*args).tier, timings=vg.specialize(*args).timings)))
"""


def fresh_env(mode: str, cache: str) -> dict:
    env = dict(os.environ, TRACEGRAD_COMPILE=mode, TRACEGRAD_CACHE_DIR=os.path.join(cache, "tracegrad"),
               NUMBA_CACHE_DIR=os.path.join(cache, "numba"), PYTHONPATH=ROOT)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def run(command: list, env: dict) -> tuple:
    t = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return wall, out.stdout


def mlp(mode: str, repeats: int) -> dict:
    rows = {"cold": [], "warm": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = fresh_env(mode, cache)
            for which in ("cold", "warm"):
                _, out = run([sys.executable, "-c", MLP.format(here=HERE)], env)
                rows[which].append(json.loads(out.splitlines()[-1]))
    return rows


def script(path: str, mode: str, repeats: int) -> list:
    results = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            command = [sys.executable, path] + (["--no-png"] if "digits" in path else [])
            wall, out = run(command, fresh_env(mode, cache))
            accuracy = re.search(r"test accuracy: ([0-9.]+)", out)
            results.append((wall, float(accuracy.group(1)) if accuracy else None, out))
    return results


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="background,wait")
    opts = parser.parse_args()
    modes = opts.modes.split(",")
    print(f"cold starts, wall seconds, medians of {opts.repeats}; {os.cpu_count()} CPUs; "
          f"Python {sys.version.split()[0]}\n")
    print(f"{'what':58} " + " ".join(f"{m:>12}" for m in modes))
    table = {}
    for mode in modes:
        rows = mlp(mode, opts.repeats)
        table.setdefault("MLP step: import tracegrad", {})[mode] = median([r["import_s"] for r in rows["cold"]])
        table.setdefault("MLP step: first value_and_grad, cold", {})[mode] = median([r["first_s"] for r in rows["cold"]])
        table.setdefault("MLP step: until compiled code runs, cold", {})[mode] = median(
            [r["compiled_s"] for r in rows["cold"]])
        table.setdefault("MLP step: Numba compile or cache load, in this process", {})[mode] = median(
            [r["timings"].get("numba", float("nan")) for r in rows["cold"]])
        table.setdefault("MLP step: first value_and_grad, warm (2nd process)", {})[mode] = median(
            [r["first_s"] for r in rows["warm"]])
    for mode in modes:
        digits = script(os.path.join("examples", "train_digits.py"), mode, opts.repeats)
        table.setdefault("python examples/train_digits.py --no-png, cold", {})[mode] = median([d[0] for d in digits])
        table.setdefault("  its test accuracy", {})[mode] = median([d[1] for d in digits])
        compiled = [re.findall(r"\((?:[0-9.]+ ms), (compiled|evaluating)\)", d[2]).count("compiled") for d in digits]
        table.setdefault("  epochs run compiled (of 20)", {})[mode] = median(compiled)
        xor = script(os.path.join("examples", "xor.py"), mode, opts.repeats)
        table.setdefault("python examples/xor.py, cold", {})[mode] = median([x[0] for x in xor])
    for what, by_mode in table.items():
        print(f"{what:58} " + " ".join(f"{by_mode.get(m, float('nan')):>12.3f}" for m in modes))


if __name__ == "__main__":
    main()
