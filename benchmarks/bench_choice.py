"""Benchmark: ReLU's backward written as Python's conditional expression (what tracegrad generates) against
the where() kernel calls it replaced, on the MLP step's hidden layer (1024 x 128, float32): the same loop
nest, each spelling of the choice once per element. Process CPU time, interleaved rounds, medians.

    python benchmarks/bench_choice.py

``kernel`` is the previous generated code, ``gt_first`` the current one, ``tie_first`` and ``named`` two
other spellings of the same choice (checked equal bit for bit before timing).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (sets the thread environment before NumPy is imported)

import numba  # noqa: E402
import numpy as np  # noqa: E402

N, H = 1024, 128
f32 = np.float32

@numba.njit
def where(c, x, y):
    return x if c else y

@numba.njit
def kernel(s2, g):
    out = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            out[i0, i1] = where(s2[i0, i1] == f32(0.0), g[i0, i1] * f32(0.5),
                                where(s2[i0, i1] > f32(0.0), g[i0, i1], f32(0.0)))
    return out

@numba.njit
def cond_gt_first(s2, g):
    out = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            out[i0, i1] = g[i0, i1] if s2[i0, i1] > f32(0.0) else \
                g[i0, i1] * f32(0.5) if s2[i0, i1] == f32(0.0) else f32(0.0)
    return out

@numba.njit
def cond_tie_first(s2, g):
    out = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            out[i0, i1] = g[i0, i1] * f32(0.5) if s2[i0, i1] == f32(0.0) else \
                g[i0, i1] if s2[i0, i1] > f32(0.0) else f32(0.0)
    return out

@numba.njit
def cond_named(s2, g):
    out = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            s = s2[i0, i1]
            gg = g[i0, i1]
            out[i0, i1] = gg if s > f32(0.0) else gg * f32(0.5) if s == f32(0.0) else f32(0.0)
    return out

def main():
    rng = np.random.default_rng(0)
    s2 = rng.normal(size=(N, H)).astype(f32)
    g = rng.normal(size=(N, H)).astype(f32)
    fns = dict(kernel=kernel, gt_first=cond_gt_first, tie_first=cond_tie_first, named=cond_named)
    timed = {}
    for k, f in fns.items():
        assert np.array_equal(f(s2, g), kernel(s2, g))
        timed[k] = (lambda f=f: harness.time_batch(f, (s2, g), 200))
    res = harness.interleaved(timed, 21)
    print(f"{'spelling':10s} {'time':>10s} {'ratio to kernel':>16s}")
    for k in fns:
        print(f"{k:10s} {harness.fmt_time(res[k]):>10s} {res[k] / res['kernel']:>15.2f}x")
    print(f"(medians of 21 interleaved rounds, {harness.CLOCK_NAME})")


if __name__ == "__main__":
    main()
