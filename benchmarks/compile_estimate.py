"""Benchmark: tracegrad's estimate of Numba's compile time against the real one.

    python benchmarks/compile_estimate.py            # about 2 minutes on a quiet machine
    python benchmarks/compile_estimate.py --quick    # the small programs only

Before a first call compiles for longer than ``backend.LONG_COMPILE`` seconds (compile="wait", nothing in
Numba's cache), tracegrad logs the estimate ``backend.compile_estimate(module)`` on the ``"tracegrad"``
logger. This script runs programs of different kinds (scalar code, fused array loops, matrix products,
loops, long straight-line code), each in a fresh process with empty caches, and prints the generated
code's size as the estimate counts it, the estimate and Numba's compile (with the first run) in process
CPU time, and their ratio. The estimate is meant to be right within a factor of about 2: enough to say
"about 40 s" before a user waits 40 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

SNIPPET = """
import json, os, sys, tempfile, time, types
sys.path.insert(0, {here!r})
import numpy as np, tracegrad as tg, tracegrad.api as api, tracegrad.backend as backend
api.time = types.SimpleNamespace(perf_counter=time.process_time)  # Compiled.timings in CPU time
key = {key!r}
if key.startswith("straight"):  # distinct source lines: nothing rolls
    path = os.path.join(tempfile.mkdtemp(), "straight_line.py")
    with open(path, "w") as file:
        file.write("import numpy as np\\n\\n\\ndef f(x, w):\\n"
                   + "    x = np.tanh(x * w) + 0.5 * x\\n" * int(key[8:]) + "    return x\\n")
    namespace = {{}}
    exec(compile(open(path).read(), path, "exec"), namespace)
    fn, args = tg.value_and_grad(namespace["f"], argnums=(0, 1)), (0.3, 0.9)
elif key == "spring":
    import bench_loops
    fn, args = tg.value_and_grad(lambda x0, v0, k: bench_loops.spring(x0, v0, k, 1000), argnums=(0, 1, 2)), (1.0, 0.5, 2.0)
elif key == "rnn":
    import bench_loops
    r = np.random.default_rng(0)
    W, U, b, xs = r.normal(size=(32, 32)) * 0.1, r.normal(size=(32, 8)) * 0.1, np.zeros(32), r.normal(size=(100, 8))
    fn, args = tg.value_and_grad(bench_loops.rnn, argnums=(0, 1, 2)), (W, U, b, xs)
else:
    import cases
    c = cases.case(key)
    fn, args = c.tg_vg, c.args
entry = fn.specialize(*args)
fn(*args)
size = backend.code_size(entry.graph)
print(json.dumps(dict(numba=entry.timings["numba"], estimate=backend.compile_estimate(entry.graph),
                      scalars=size[0], arrays=size[1], kinds=size[2])))
"""

QUICK = ("neuron", "sin_exp", "rosen_1000", "mlp_32_f32", "spring", "straight25")
FULL = QUICK + ("mlp_1024_f64", "rnn", "straight100", "straight400")


def run(key: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TRACEGRAD_CACHE_DIR=os.path.join(cache, "tg"),
                   NUMBA_CACHE_DIR=os.path.join(cache, "nb"), TRACEGRAD_COMPILE="wait")
        out = subprocess.run([sys.executable, "-c", SNIPPET.format(here=HERE, key=key)],
                             capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per program (medians)")
    options = parser.parse_args()
    print(f"| program | scalar ops | array ops | kinds of array ops | estimate | Numba (CPU, median of {options.rounds}) "
          "| measured / estimate |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for key in (QUICK if options.quick else FULL):
        runs = [run(key) for _ in range(options.rounds)]
        numba = statistics.median(r["numba"] for r in runs)
        r = runs[0]
        ratios.append(numba / r["estimate"])
        print(f"| {key} | {r['scalars']} | {r['arrays']} | {r['kinds']} | {r['estimate']:.2f} s | {numba:.2f} s "
              f"| {numba / r['estimate']:.2f} |", flush=True)
    print(f"\nmeasured / estimate: median {statistics.median(ratios):.2f}, from {min(ratios):.2f} to {max(ratios):.2f}")


if __name__ == "__main__":
    main()
