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

Two more tables find out what a blocked loop costs and what it can gain:

- **per thread** (one Numba thread, process CPU time, which the machine's load affects less): Rosenbrock's
  value loop and its value-and-gradient loop as tracegrad's serial code writes them (``range(n)``), as
  blocks in a serial function (``range(16)``), and as ``prange`` blocks with signed rows (what tracegrad
  wrote before) and unsigned rows (``range(np.uintp(...), ...)``, what it writes now), and the MLP's
  largest loop (a sum over rows into ``grad_b1``); also the cost of one empty parallel region;
- **the ceiling** (all threads, wall-clock): a plain copy and a STREAM-like triad, serial against
  ``prange`` blocks: the second core's gain on loops that only move memory.

    python benchmarks/bench_prange.py [--rounds 21] [--threads 2] [--markdown FILE]
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
from tracegrad import backend  # noqa: E402

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


# ------------------------------------------------------------------------------ per thread: the variants
# Rosenbrock's value loop over x[:-1] (s1) and x[1:] (s0), written as tracegrad writes it, in 16 blocks of
# 62,500 rows (n = 10^6: 999,999 rows, the last block one row short).

def parallel(function):
    """Compiled as tracegrad compiles a loop function: prange only (backend.parallel_options)."""
    return numba.njit(cache=True, **backend.parallel_options(function))(function)


@numba.njit(cache=True)
def value_serial(s1, s0):
    out = 0.0
    for i0 in range(s1.shape[0]):
        s3 = s0[i0] - s1[i0] ** 2.0
        s6 = 1.0 - s1[i0]
        out += 100.0 * s3 ** 2.0 + s6 ** 2.0
    return out


@numba.njit(cache=True)
def value_blocks_serial(s1, s0):
    """Blocks, in a serial function: blk comes from range(16), so LLVM knows every row is >= 0."""
    n = s1.shape[0]
    per = (n + 15) // 16
    out_blocks = np.zeros((16,))
    for blk in range(16):
        out_blk = 0.0
        for i0 in range(blk * per, min(blk * per + per, n)):
            s3 = s0[i0] - s1[i0] ** 2.0
            s6 = 1.0 - s1[i0]
            out_blk += 100.0 * s3 ** 2.0 + s6 ** 2.0
        out_blocks[blk] = out_blk
    out = 0.0
    for blk in range(16):
        out += out_blocks[blk]
    return out


@parallel
def value_prange_signed(s1, s0):
    """prange blocks, signed rows: blk comes from Numba's schedule (any value, for LLVM), so every s1[i0]
    keeps Numba's check for a negative subscript (x[-1] wraps around): two extra instructions a read."""
    n = s1.shape[0]
    per = (n + 15) // 16
    out_blocks = np.zeros((16,))
    for blk in prange(16):
        out_blk = 0.0
        for i0 in range(blk * per, min(blk * per + per, n)):
            s3 = s0[i0] - s1[i0] ** 2.0
            s6 = 1.0 - s1[i0]
            out_blk += 100.0 * s3 ** 2.0 + s6 ** 2.0
        out_blocks[blk] = out_blk
    out = 0.0
    for blk in range(16):
        out += out_blocks[blk]
    return out


@parallel
def value_prange_unsigned(s1, s0):
    """prange blocks, unsigned rows (np.uintp): Numba writes no negative-subscript check for them."""
    n = s1.shape[0]
    per = (n + 15) // 16
    out_blocks = np.zeros((16,))
    for blk in prange(16):
        out_blk = 0.0
        for i0 in range(np.uintp(blk * per), np.uintp(min(blk * per + per, n))):
            s3 = s0[i0] - s1[i0] ** 2.0
            s6 = 1.0 - s1[i0]
            out_blk += 100.0 * s3 ** 2.0 + s6 ** 2.0
        out_blocks[blk] = out_blk
    out = 0.0
    for blk in range(16):
        out += out_blocks[blk]
    return out


# Its value and gradient in one loop, as tracegrad writes it: each row adds to grad_x[i0] and grad_x[i0 + 1],
# so the prange versions run the even blocks, then the odd ones.

@numba.njit(cache=True)
def vg_serial(s1, s0, grad_x):
    out = 0.0
    for i0 in range(s1.shape[0]):
        s3 = s0[i0] - s1[i0] ** 2.0
        s6 = 1.0 - s1[i0]
        out += 100.0 * s3 ** 2.0 + s6 ** 2.0
        grad_s3 = 200.0 * s3
        grad_x[i0] += -2.0 * s6 - grad_s3 * 2.0 * s1[i0]
        grad_x[i0 + 1] += grad_s3
    return out


@parallel
def vg_prange_signed(s1, s0, grad_x):
    n = s1.shape[0]
    per = (n + 15) // 16
    out_blocks = np.zeros((16,))
    for sweep in range(2):
        for half in prange(8):
            blk = 2 * half + sweep
            out_blk = 0.0
            for i0 in range(blk * per, min(blk * per + per, n)):
                s3 = s0[i0] - s1[i0] ** 2.0
                s6 = 1.0 - s1[i0]
                out_blk += 100.0 * s3 ** 2.0 + s6 ** 2.0
                grad_s3 = 200.0 * s3
                grad_x[i0] += -2.0 * s6 - grad_s3 * 2.0 * s1[i0]
                grad_x[i0 + 1] += grad_s3
            out_blocks[blk] = out_blk
    out = 0.0
    for blk in range(16):
        out += out_blocks[blk]
    return out


@parallel
def vg_prange_unsigned(s1, s0, grad_x):
    n = s1.shape[0]
    per = (n + 15) // 16
    out_blocks = np.zeros((16,))
    for sweep in range(2):
        for half in prange(8):
            blk = 2 * half + sweep
            out_blk = 0.0
            for i0 in range(np.uintp(blk * per), np.uintp(min(blk * per + per, n))):
                s3 = s0[i0] - s1[i0] ** 2.0
                s6 = 1.0 - s1[i0]
                out_blk += 100.0 * s3 ** 2.0 + s6 ** 2.0
                grad_s3 = 200.0 * s3
                grad_x[i0] += -2.0 * s6 - grad_s3 * 2.0 * s1[i0]
                grad_x[i0 + 1] += grad_s3
            out_blocks[blk] = out_blk
    out = 0.0
    for blk in range(16):
        out += out_blocks[blk]
    return out


# The MLP step's largest loop (batch 1024 x 128 hidden, float32): ReLU's gradient, stored, and summed over
# the rows into grad_b1 (a row of partial sums per block).

@numba.njit(cache=True)
def relu_grad_serial(s1, b1, grad_h, grad_b1, grad_s1):
    for i0 in range(s1.shape[0]):
        for i1 in range(s1.shape[1]):
            g = grad_h[i0, i1] if s1[i0, i1] + b1[i1] > np.float32(0.0) else np.float32(0.0)
            grad_b1[i1] += g
            grad_s1[i0, i1] = g


@parallel
def relu_grad_prange_signed(s1, b1, grad_h, grad_b1, grad_s1):
    n, m = s1.shape
    per = (n + 15) // 16
    grad_b1_blocks = np.zeros((16, m), np.float32)
    for blk in prange(16):
        for i0 in range(blk * per, min(blk * per + per, n)):
            for i1 in range(m):
                g = grad_h[i0, i1] if s1[i0, i1] + b1[i1] > np.float32(0.0) else np.float32(0.0)
                grad_b1_blocks[blk, i1] += g
                grad_s1[i0, i1] = g
    for blk in range(16):
        grad_b1 += grad_b1_blocks[blk]


@parallel
def relu_grad_prange_unsigned(s1, b1, grad_h, grad_b1, grad_s1):
    n, m = s1.shape
    per = (n + 15) // 16
    grad_b1_blocks = np.zeros((16, m), np.float32)
    for blk in prange(16):
        for i0 in range(np.uintp(blk * per), np.uintp(min(blk * per + per, n))):
            for i1 in range(m):
                g = grad_h[i0, i1] if s1[i0, i1] + b1[i1] > np.float32(0.0) else np.float32(0.0)
                grad_b1_blocks[blk, i1] += g
                grad_s1[i0, i1] = g
    for blk in range(16):
        grad_b1 += grad_b1_blocks[blk]


@parallel
def empty_region(out):
    """One parallel region doing (almost) nothing: the fork-join a loop pays."""
    for blk in prange(16):
        out[blk] = blk


# ------------------------------------------------------------------------------ the ceiling: memory alone

@numba.njit(cache=True)
def triad_serial(a, b, c):
    for i0 in range(a.shape[0]):
        a[i0] = b[i0] + 3.0 * c[i0]


@parallel
def triad_prange(a, b, c):
    per = (a.shape[0] + 15) // 16
    for blk in prange(16):
        for i0 in range(np.uintp(blk * per), np.uintp(min(blk * per + per, a.shape[0]))):
            a[i0] = b[i0] + 3.0 * c[i0]


@numba.njit(cache=True)
def copy_serial(a, b):
    for i0 in range(a.shape[0]):
        a[i0] = b[i0]


@parallel
def copy_prange(a, b):
    per = (a.shape[0] + 15) // 16
    for blk in prange(16):
        for i0 in range(np.uintp(blk * per), np.uintp(min(blk * per + per, a.shape[0]))):
            a[i0] = b[i0]


def one_thread(fn, args, ns):
    """A batch of calls with one Numba thread (process CPU time: what a block costs a thread)."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return harness.time_batch(fn, args, ns)
    finally:
        numba.set_num_threads(threads)


def per_thread(report, rounds):
    harness.use_cpu_clock()
    rng = np.random.default_rng(1)
    x = rng.normal(size=10**6)
    s1, s0 = x[:-1], x[1:]
    grad_x = np.zeros(10**6)
    relu = (rng.normal(size=(1024, 128)).astype(np.float32), rng.normal(size=128).astype(np.float32),
            rng.normal(size=(1024, 128)).astype(np.float32), np.zeros(128, np.float32),
            np.empty((1024, 128), np.float32))
    groups = [("Rosenbrock 10^6, value (a sum)", (s1, s0),
               {"serial range(n)": value_serial, "blocks, serial function": value_blocks_serial,
                "prange, signed rows": value_prange_signed, "prange, unsigned rows": value_prange_unsigned}),
              ("Rosenbrock 10^6, value and gradient (two sweeps)", (s1, s0, grad_x),
               {"serial range(n)": vg_serial, "prange, signed rows": vg_prange_signed,
                "prange, unsigned rows": vg_prange_unsigned}),
              ("MLP ReLU gradient, 1024 x 128 f32 (sum over rows)", relu,
               {"serial range(n)": relu_grad_serial, "prange, signed rows": relu_grad_prange_signed,
                "prange, unsigned rows": relu_grad_prange_unsigned})]
    table = []
    for label, a, variants in groups:
        values = [fn(*a) for fn in variants.values()]  # (compiles)
        if values[0] is not None:  # the sums agree (the gradients are checked by the tests' versions)
            assert all(np.isclose(v, values[0], rtol=1e-12) for v in values), label
        ns = harness.calibrate(variants["serial range(n)"], a, 2e7)
        medians = harness.interleaved({k: (lambda fn=fn: one_thread(fn, a, ns)) for k, fn in variants.items()},
                                      rounds)
        serial = medians["serial range(n)"]
        for k, t in medians.items():
            table.append((label, k, harness.fmt_time(t), f"{serial / t:.2f}x"))
    out = np.zeros(16, np.intp)
    empty_region(out)
    medians = harness.interleaved({"empty": lambda: one_thread(empty_region, (out,), 2000)}, rounds)
    table.append(("one empty parallel region (fork-join)", "prange(16), 1 thread", harness.fmt_time(medians["empty"]),
                  ""))
    report.table("per thread: the blocked loop against the serial one (1 Numba thread)",
                 ["loop", "written as", "time", "serial / this"], table,
                 notes=[f"process CPU time, medians of {rounds} interleaved rounds; load average "
                        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"])


def ceiling(report, rounds):
    harness.use_wall_clock()
    n = 4 * 10**6  # 32 MB an array: far beyond the caches
    a, b, c = np.zeros(n), np.ones(n), np.ones(n)
    table = []
    for label, serial, blocked, args in (("copy a[i] = b[i]", copy_serial, copy_prange, (a, b)),
                                         ("triad a[i] = b[i] + 3 c[i]", triad_serial, triad_prange, (a, b, c))):
        serial(*args), blocked(*args)
        medians = harness.interleaved({"serial": lambda: harness.time_batch(serial, args, 5),
                                       "prange": lambda: harness.time_batch(blocked, args, 5)}, rounds)
        table.append((f"{label}, n = 4*10^6 f64", harness.fmt_time(medians["serial"]),
                      harness.fmt_time(medians["prange"]), f"{medians['serial'] / medians['prange']:.2f}x"))
    report.table(f"the ceiling: loops that only move memory ({numba.get_num_threads()} threads)",
                 ["loop", "serial", "prange", "speed-up"], table,
                 notes=[f"wall-clock medians of {rounds} interleaved rounds; load average "
                        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--markdown")
    parser.add_argument("--part", choices=("all", "cases", "per-thread", "ceiling"), default="all")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    print(harness.machine())
    report = harness.Report()
    if args.part in ("all", "cases"):
        cases_table(report, args.rounds)
    if args.part in ("all", "per-thread"):
        per_thread(report, args.rounds)
    if args.part in ("all", "ceiling"):
        ceiling(report, args.rounds)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


def cases_table(report, rounds):
    harness.use_wall_clock()
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
                                       "parallel": lambda: harness.time_batch(parallel, a, ns)}, rounds)
        table.append((label, harness.fmt_time(medians["serial"]), harness.fmt_time(medians["parallel"]),
                      f"{medians['serial'] / medians['parallel']:.2f}x"))
    report.table(f"hand-written fused loops, serial vs prange ({numba.get_num_threads()} threads, "
                 f"{numba.threading_layer()} threading layer, {BLOCKS} blocks)",
                 ["case", "serial", "prange", "speed-up"], table,
                 notes=[f"wall-clock medians of {rounds} interleaved rounds; one BLAS thread; load average "
                        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"])


if __name__ == "__main__":
    main()
