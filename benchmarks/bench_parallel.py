"""Benchmark: tracegrad's generated code with ``parallel=True`` against the same function with
``parallel=False`` (issue 16, item 1), in the same run, interleaved.

- the MLP 64-128-10 step (``cases.mlp_loss``: value and four gradients, float32) at batch 32 and 1024;
- Rosenbrock's value and gradient at n = 10^3 and 10^6 (float64): its gradient's loop adds at ``i0 + 1``
  (a slice's gradient), so it stays serial under ``parallel=True`` and the two rows should be equal;
- Rosenbrock's value alone (``tg.jit``) at n = 10^3 and 10^6: a plain sum, in parallel at 10^6;
- the MLP step with ``parallel=tg.over_rows(4, 5)`` (X and y split into a block of rows a thread, each
  running the whole step, products included) at batch 32 (too few rows: the serial code), 256 and 1024.

Each parallel function is timed with all of Numba's threads and with one (``numba.set_num_threads(1)``:
what the blocked loops cost when no second core is free). Times are **wall-clock** medians of
interleaved rounds (the threads' CPU time adds up; wall time is what a user waits). The load average
before and after is printed: on a shared machine it decides more than the code does. With
``threadpoolctl`` installed, the parallel function is also timed with as many BLAS threads as Numba has
(the matrix products are BLAS's: tracegrad leaves its threads to the user).

A second table times one loop of cheap elementwise work and a sum (``np.sum(np.tanh(x) * x)``, float64)
at sizes from 32,768 elements (``PARALLEL_MIN``) to 4 million, serial and parallel: where a second thread
starts to pay, which is what ``PARALLEL_MIN`` and ``AUTO_MIN`` are chosen from.

    python benchmarks/bench_parallel.py [--rounds 21] [--markdown FILE] [--part all|cases|sizes] [--no-blas-threads]
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

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # (optional: only the BLAS column needs it)
    threadpool_limits = None


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--markdown")
    parser.add_argument("--part", choices=("all", "cases", "sizes"), default="all")
    parser.add_argument("--no-blas-threads", action="store_true",
                        help="leave out the columns with BLAS threads (their threads, spinning on two cores, "
                             "slow the rounds after them)")
    args = parser.parse_args()
    if args.no_blas_threads:
        global threadpool_limits
        threadpool_limits = None
    harness.use_wall_clock()
    print(harness.machine())
    print(f"load average before: {load()}")
    report = harness.Report()
    if args.part in ("all", "cases"):
        cases_table(report, args.rounds)
    if args.part in ("all", "sizes"):
        sizes_table(report, args.rounds)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


def one_thread(fn, a, ns):
    """A batch of calls with one Numba thread."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return harness.time_batch(fn, a, ns)
    finally:
        numba.set_num_threads(threads)


def cpu_time(batch):
    """``batch()`` timed in process CPU time (which other processes' load affects less than wall time)."""
    wall = harness.clock
    harness.use_cpu_clock()
    try:
        return batch()
    finally:
        harness.clock = wall


def with_blas_threads(fn, a, ns):
    """A batch of calls with as many BLAS threads as Numba threads."""
    with threadpool_limits(limits=numba.get_num_threads(), user_api="blas"):
        return harness.time_batch(fn, a, ns)


def cases_table(report, rounds):
    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    rows = []
    for batch in (32, 1024):
        a = cases.mlp_args(batch, np.float32)
        make = lambda parallel: tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3), parallel=parallel)
        rows.append((f"MLP 64-128-10 step, batch {batch} f32", a, make(False), make(True), 1e-4))
    for batch, dtype in ((32, np.float32), (256, np.float32), (1024, np.float32), (1024, np.float64)):
        a = cases.mlp_args(batch, dtype)
        make = lambda parallel: tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3), parallel=parallel)
        rows.append((f"MLP step, batch {batch} {np.dtype(dtype).name[0]}{np.dtype(dtype).itemsize * 8}, "
                     "over_rows(4, 5)", a, make(False), make(tg.over_rows(4, 5)), 1e-4 if dtype == np.float32 else 1e-12))
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

        ns = harness.calibrate(serial, a, 2e7)  # ~20 ms per batch of calls
        timings = {"serial": lambda: harness.time_batch(serial, a, ns),
                   "parallel": lambda: harness.time_batch(parallel, a, ns),
                   "one": lambda: one_thread(parallel, a, ns),
                   "serial, CPU": lambda: cpu_time(lambda: harness.time_batch(serial, a, ns)),
                   "one, CPU": lambda: cpu_time(lambda: one_thread(parallel, a, ns))}
        if threadpool_limits is not None:
            timings["blas serial"] = lambda: with_blas_threads(serial, a, ns)
            timings["blas"] = lambda: with_blas_threads(parallel, a, ns)
        medians = harness.interleaved(timings, rounds)
        row = (label, "yes" if blocked else "no (serial code)", harness.fmt_time(medians["serial"]),
               harness.fmt_time(medians["parallel"]), f"{medians['serial'] / medians['parallel']:.2f}x",
               harness.fmt_time(medians["one"]), f"{medians['serial'] / medians['one']:.2f}x",
               f"{medians['serial, CPU'] / medians['one, CPU']:.2f}x")
        if "blas" in medians:
            row += tuple(x for key in ("blas serial", "blas") for x in (
                harness.fmt_time(medians[key]), f"{medians['serial'] / medians[key]:.2f}x"))
        table.append(row)
    print(f"load average after: {load()}")
    header = ["case", "prange loops", "serial", "parallel", "speed-up", "parallel, 1 thread", "speed-up",
              "1 thread, CPU time"]
    if threadpool_limits is not None:
        header += [f"serial, {threads} BLAS threads", "speed-up", f"parallel, {threads} BLAS threads", "speed-up"]
    report.table(f"tracegrad parallel=True against parallel=False ({threads} threads, {numba.threading_layer()} "
                 "threading layer)", header,
                 table, notes=[f"wall-clock medians of {rounds} interleaved rounds (the CPU-time column: the "
                               "serial code's process CPU time over the parallel code's on one thread); one BLAS "
                               f"thread unless said; load average {load()} (1, 5, 15 min) at the end"])


def tanh_sum(x):
    return np.sum(np.tanh(x) * x)


def sizes_table(report, rounds):
    """One loop (tanh, a product, a sum) at growing sizes: where parallel=True starts to pay."""
    rng = np.random.default_rng(0)
    table = []
    for n in (2**15, 2**17, 2**19, 2**22):  # (from PARALLEL_MIN)
        x = rng.normal(size=n)
        serial, parallel = tg.jit(tanh_sum), tg.jit(tanh_sum, parallel=True)
        assert "prange" in parallel.source(x)
        np.testing.assert_allclose(parallel(x), serial(x), rtol=1e-12)
        ns = harness.calibrate(serial, (x,), 2e7)
        medians = harness.interleaved({"serial": lambda: harness.time_batch(serial, (x,), ns),
                                       "parallel": lambda: harness.time_batch(parallel, (x,), ns),
                                       "one": lambda: one_thread(parallel, (x,), ns)}, rounds)
        table.append((f"{n:,}", harness.fmt_time(medians["serial"]), harness.fmt_time(medians["parallel"]),
                      f"{medians['serial'] / medians['parallel']:.2f}x", harness.fmt_time(medians["one"]),
                      f"{medians['serial'] / medians['one']:.2f}x"))
    report.table(f"one loop at growing sizes: np.sum(np.tanh(x) * x), float64 ({numba.get_num_threads()} threads)",
                 ["elements", "serial", "parallel", "speed-up", "parallel, 1 thread", "speed-up"], table,
                 notes=[f"wall-clock medians of {rounds} interleaved rounds; load average {load()} at the end"])


if __name__ == "__main__":
    main()
