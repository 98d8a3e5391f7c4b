"""Benchmark: what Numba's ``parallel=True`` / ``prange`` gives hand-written fused loops on this machine,
the measurement behind the design of ``parallel=`` (docs/DESIGN.md, "Scale-out").

Each case is written twice by hand, as tracegrad's generated code is (fused loops over rows, BLAS for
the matrix products, one BLAS thread): serially with ``range``, and with the row loops as ``prange``
over fixed blocks of rows whose partial sums are added in block order afterwards (the deterministic
reduction the design proposes: the same result for a given number of blocks, whatever thread runs what).

- the MLP 64-128-10 step (value and four gradients, float32) at batch 32 and 1024;
- Rosenbrock's value and gradient at n = 10^3 and 10^6 (float64; the gradient gathered per element, so
  that no two threads write the same element).

Times are **wall-clock** medians of interleaved rounds (threads' CPU time adds up; wall time is what a
user waits). The machine has 2 cores, shared with other engineers' jobs while this was measured:
compare the ratios, and expect a quiet machine to do better.

    python benchmarks/bench_prange.py [--rounds 21] [--threads 2]
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
from numba import prange  # noqa: E402

import cases  # noqa: E402

BLOCKS = 8  # blocks of rows per parallel loop: fixed, so the sums' order does not depend on the threads


@numba.njit(cache=True, parallel=True)
def mlp_parallel_vg(W1, b1, W2, b2, X, y):
    """cases.mlp_hand_vg with its three row loops as prange over BLOCKS blocks of rows."""
    n = X.shape[0]
    hidden = W1.shape[1]
    classes = W2.shape[1]
    h = X @ W1
    per = (n + BLOCKS - 1) // BLOCKS
    for blk in prange(BLOCKS):
        for i in range(blk * per, min(n, (blk + 1) * per)):
            for j in range(hidden):
                v = h[i, j] + b1[j]
                h[i, j] = v if v > 0 else 0
    logits = h @ W2
    d = np.empty_like(logits)
    inv_n = 1.0 / n
    partial = np.zeros(BLOCKS)
    for blk in prange(BLOCKS):
        acc = 0.0
        for i in range(blk * per, min(n, (blk + 1) * per)):
            m = logits[i, 0] + b2[0]
            for c in range(1, classes):
                m = max(m, logits[i, c] + b2[c])
            s = 0.0
            for c in range(classes):
                e = np.exp(logits[i, c] + b2[c] - m)
                d[i, c] = e
                s += e
            acc += m + np.log(s) - (logits[i, y[i]] + b2[y[i]])
            scale = inv_n / s
            for c in range(classes):
                d[i, c] *= scale
            d[i, y[i]] -= inv_n
        partial[blk] = acc
    loss = 0.0
    for blk in range(BLOCKS):  # in block order: deterministic
        loss += partial[blk]
    grad_W2 = h.T @ d
    grad_b2 = d.sum(axis=0)
    dh = d @ W2.T
    for blk in prange(BLOCKS):
        for i in range(blk * per, min(n, (blk + 1) * per)):
            for j in range(hidden):
                if h[i, j] <= 0:
                    dh[i, j] = 0
    grad_W1 = X.T @ dh
    grad_b1 = dh.sum(axis=0)
    return loss / n, grad_W1, grad_b1, grad_W2, grad_b2


@numba.njit(cache=True)
def rosenbrock_gather_vg(x):
    """Rosenbrock's value and gradient, each gradient element computed where it is written (serial)."""
    n = x.shape[0]
    g = np.empty_like(x)
    f = 0.0
    for i in range(n):
        gi = 0.0
        if i < n - 1:
            a = x[i + 1] - x[i] * x[i]
            b = 1.0 - x[i]
            f += 100.0 * a * a + b * b
            gi += -400.0 * a * x[i] - 2.0 * b
        if i > 0:
            gi += 200.0 * (x[i] - x[i - 1] * x[i - 1])
        g[i] = gi
    return f, g


@numba.njit(cache=True, parallel=True)
def rosenbrock_parallel_vg(x):
    """The same with prange over BLOCKS blocks and the partial sums added in block order."""
    n = x.shape[0]
    g = np.empty_like(x)
    per = (n + BLOCKS - 1) // BLOCKS
    partial = np.zeros(BLOCKS)
    for blk in prange(BLOCKS):
        acc = 0.0
        for i in range(blk * per, min(n, (blk + 1) * per)):
            gi = 0.0
            if i < n - 1:
                a = x[i + 1] - x[i] * x[i]
                b = 1.0 - x[i]
                acc += 100.0 * a * a + b * b
                gi += -400.0 * a * x[i] - 2.0 * b
            if i > 0:
                gi += 200.0 * (x[i] - x[i - 1] * x[i - 1])
            g[i] = gi
        partial[blk] = acc
    f = 0.0
    for blk in range(BLOCKS):
        f += partial[blk]
    return f, g


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    harness.use_wall_clock()
    numba.set_num_threads(args.threads)
    print(harness.machine())
    report = harness.Report()
    rng = np.random.default_rng(0)
    rows = []
    for batch in (32, 1024):
        W1 = (rng.normal(size=(64, 128)) * 0.1).astype(np.float32)
        b1 = np.zeros(128, np.float32)
        W2 = (rng.normal(size=(128, 10)) * 0.1).astype(np.float32)
        b2 = np.zeros(10, np.float32)
        X = rng.normal(size=(batch, 64)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        a = (W1, b1, W2, b2, X, y)
        serial, parallel = cases.mlp_hand_vg(*a), mlp_parallel_vg(*a)
        assert all(np.allclose(s, p, rtol=1e-4, atol=1e-6) for s, p in zip(serial, parallel))
        rows.append((f"MLP 64-128-10 step, batch {batch} f32", a, cases.mlp_hand_vg, mlp_parallel_vg))
    for n in (10**3, 10**6):
        x = rng.normal(size=n)
        serial, parallel = rosenbrock_gather_vg(x), rosenbrock_parallel_vg(x)
        assert np.isclose(serial[0], parallel[0], rtol=1e-12) and np.allclose(serial[1], parallel[1])
        assert np.allclose(serial[1], cases.rosenbrock_hand_vg(x)[1])
        rows.append((f"Rosenbrock n={n:,} f64", (x,), rosenbrock_gather_vg, rosenbrock_parallel_vg))
    table = []
    for label, a, serial, parallel in rows:
        target = 2e7  # ~20 ms per batch of calls
        ns = harness.calibrate(serial, a, target)
        medians = harness.interleaved({"serial": lambda: harness.time_batch(serial, a, ns),
                                       "parallel": lambda: harness.time_batch(parallel, a, ns)}, args.rounds)
        table.append((label, harness.fmt_time(medians["serial"]), harness.fmt_time(medians["parallel"]),
                      f"{medians['serial'] / medians['parallel']:.2f}x"))
    report.table(f"hand-written fused loops, serial vs prange ({numba.get_num_threads()} threads, "
                 f"{numba.threading_layer()} threading layer, {BLOCKS} blocks)",
                 ["case", "serial", "prange", "speed-up"], table,
                 notes=[f"wall-clock medians of {args.rounds} interleaved rounds; one BLAS thread; "
                        "2 cores shared with other jobs"])
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


if __name__ == "__main__":
    main()
