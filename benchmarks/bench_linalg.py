"""Benchmark: np.linalg in compiled code (LAPACK through Numba, a loop over a stack of matrices) against the same
maths written by hand with NumPy's batched np.linalg.

    python benchmarks/bench_linalg.py           # about two minutes, most of it compiling
    python benchmarks/bench_linalg.py --quick   # fewer rounds

- value and gradient of ``sum(tanh(w)) + sum(v * v * C)``, ``w, v = np.linalg.eigh(A)``, A symmetric 50 x 50;
- value and gradient of ``sum(np.linalg.slogdet(a)[1])`` over a stack of 1000 matrices 3 x 3 (NumPy's
  gufuncs loop in C; tracegrad's kernel loops over the stack in Numba);
- value and gradient of ``sum(np.linalg.inv(A) * C)``, A 20 x 20 (the cost of the stack loop for one matrix).
Medians of interleaved rounds, process CPU time; the machine is shared, compare ratios only.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Report, calibrate, fmt_time, interleaved, machine, time_batch  # noqa: E402

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402

RNG = np.random.default_rng(0)
C50 = RNG.normal(size=(50, 50))
C20 = RNG.normal(size=(20, 20))


def eigh_loss(a):
    w, v = np.linalg.eigh(a)
    return np.sum(np.tanh(w)) + np.sum(v * v * C50)


def eigh_by_hand(a):
    w, v = np.linalg.eigh(a)
    t = np.tanh(w)
    value = np.sum(t) + np.sum(v * v * C50)
    g_w, g_v = 1.0 - t * t, 2.0 * v * C50
    gaps = w[None, :] - w[:, None]
    f = np.divide(1.0, gaps, out=np.zeros_like(gaps), where=gaps != 0.0)
    x = v @ (np.diag(g_w) + f * (v.T @ g_v)) @ v.T
    s = 0.5 * (x + x.T)
    return value, np.tril(2.0 * s, -1) + np.diag(np.diag(s))


def slogdet_loss(a):
    return np.sum(np.linalg.slogdet(a)[1])


def slogdet_by_hand(a):
    return np.sum(np.linalg.slogdet(a)[1]), np.linalg.inv(a).transpose(0, 2, 1)


def inv_loss(a):
    return np.sum(np.linalg.inv(a) * C20)


def inv_by_hand(a):
    inv = np.linalg.inv(a)
    return np.sum(inv * C20), -(inv.T @ C20 @ inv.T)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 15
    print(machine())
    report = Report()
    a50 = RNG.normal(size=(50, 50))
    a50 = a50 + a50.T + np.diag(np.arange(50.0))
    stack = RNG.normal(size=(1000, 3, 3)) + 3 * np.eye(3)
    a20 = RNG.normal(size=(20, 20)) + 5 * np.eye(20)
    groups = []
    for title, loss, by_hand, arg in (
            ("eigh 50 x 50: value and gradient (median per call)", eigh_loss, eigh_by_hand, a50),
            ("slogdet of 1000 stacked 3 x 3: value and gradient (median per call)", slogdet_loss, slogdet_by_hand,
             stack),
            ("inv 20 x 20: value and gradient (median per call)", inv_loss, inv_by_hand, a20)):
        f = tg.value_and_grad(loss)
        value, grad = f(arg)
        hand_value, hand_grad = by_hand(arg)
        assert np.isclose(value, hand_value, rtol=1e-10) and np.allclose(grad, hand_grad, rtol=1e-8, atol=1e-10)
        groups.append((title, {"tracegrad (compiled)": (f, (arg,)), "NumPy by hand": (by_hand, (arg,))}))
    for title, group in groups:
        batches = {name: calibrate(fn, args, 2e7) for name, (fn, args) in group.items()}
        times = interleaved({name: (lambda fn=fn, args=args, b=batches[name]: time_batch(fn, args, b))
                             for name, (fn, args) in group.items()}, rounds)
        rows = [(name, fmt_time(t), f"{t / times['NumPy by hand']:.2f}x") for name, t in times.items()]
        report.table(title, ("implementation", "time", "ratio to NumPy by hand"), rows,
                     ["process CPU time; 2 shared cores, other work running: compare ratios within this run only"])


if __name__ == "__main__":
    main()
