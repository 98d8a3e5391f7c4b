"""Benchmark: tracegrad's generated code with ``parallel=True`` against the same function with
``parallel=False`` (issue 16, item 1), in the same run, interleaved.

- the MLP 64-128-10 step (``cases.mlp_loss``: value and four gradients, float32) at batch 32 and 1024;
- Rosenbrock's value and gradient at n = 10^3 and 10^6 (float64): its gradient's loop adds at ``i0 + 1``
  (a slice's gradient), so it stays serial under ``parallel=True`` and the two rows should be equal;
- Rosenbrock's value alone (``tg.jit``) at n = 10^3 and 10^6: a plain sum, in parallel at 10^6.

Each parallel function is timed with all of Numba's threads and with one (``numba.set_num_threads(1)``:
what the blocked loops cost when no second core is free). Times are **wall-clock** medians of
interleaved rounds (the threads' CPU time adds up; wall time is what a user waits). The load average
before and after is printed: on a shared machine it decides more than the code does.

    python benchmarks/bench_parallel.py [--rounds 21] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import harness  # noqa: E402  (one BLAS thread before NumPy loads)

import numba  # noqa: E402
import numpy as np  # noqa: E402

import cases  # noqa: E402
import tracegrad as tg  # noqa: E402


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    harness.use_wall_clock()
    threads = numba.get_num_threads()
    print(harness.machine())
    print(f"load average before: {load()}")
    rng = np.random.default_rng(0)
    rows = []
    for batch in (32, 1024):
        a = cases.mlp_args(batch, np.float32)
        make = lambda parallel: tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3), parallel=parallel)
        rows.append((f"MLP 64-128-10 step, batch {batch} f32", a, make(False), make(True), 1e-4))
    for n in (10**3, 10**6):
        x = rng.normal(size=n)
        rows.append((f"Rosenbrock n={n:,} value and gradient", (x,), tg.value_and_grad(cases.rosenbrock),
                     tg.value_and_grad(cases.rosenbrock, parallel=True), 1e-12))
        rows.append((f"Rosenbrock n={n:,} value (jit)", (x,), tg.jit(cases.rosenbrock),
                     tg.jit(cases.rosenbrock, parallel=True), 1e-12))
    table = []
    for label, a, serial, parallel, rtol in rows:
        blocked = "prange" in parallel.source(*a)
        expected, got = serial(*a), parallel(*a)  # (compiles both)
        def flat(result):  # a value; (value, gradient); (value, (gradients))
            if not isinstance(result, tuple):
                return [result]
            return [result[0], *result[1]] if isinstance(result[1], tuple) else list(result)
        assert all(np.allclose(s, p, rtol=rtol, atol=1e-6) for s, p in zip(flat(expected), flat(got))), label

        def one_thread(parallel=parallel, a=a, ns=None):  # a batch of calls with one Numba thread
            numba.set_num_threads(1)
            try:
                return harness.time_batch(parallel, a, ns)
            finally:
                numba.set_num_threads(threads)

        ns = harness.calibrate(serial, a, 2e7)  # ~20 ms per batch of calls
        medians = harness.interleaved({"serial": lambda: harness.time_batch(serial, a, ns),
                                       "parallel": lambda: harness.time_batch(parallel, a, ns),
                                       "one": lambda: one_thread(ns=ns)}, args.rounds)
        table.append((label, "yes" if blocked else "no (serial code)", harness.fmt_time(medians["serial"]),
                      harness.fmt_time(medians["parallel"]), f"{medians['serial'] / medians['parallel']:.2f}x",
                      harness.fmt_time(medians["one"]), f"{medians['serial'] / medians['one']:.2f}x"))
    print(f"load average after: {load()}")
    report = harness.Report()
    report.table(f"tracegrad parallel=True against parallel=False ({threads} threads, {numba.threading_layer()} "
                 "threading layer)",
                 ["case", "prange loops", "serial", "parallel", "speed-up", "parallel, 1 thread", "speed-up"],
                 table, notes=[f"wall-clock medians of {args.rounds} interleaved rounds; one BLAS thread; "
                               f"load average {load()} (1, 5, 15 min) at the end"])
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


if __name__ == "__main__":
    main()
