"""Benchmark: random draws inside compiled code (tg.random) against hand-written NumPy and Numba.

    python benchmarks/bench_random.py           # about a minute
    python benchmarks/bench_random.py --quick   # fewer rounds

- a million uniform (float64) numbers from a key: tracegrad's compiled kernel; NumPy's
  ``Generator.random`` (PCG64); a hand-written Numba loop of the same splitmix64 counter generator;
- value and gradient of a dropout layer on a (256, 512) activation, ``sum(dropout(tanh(x), 0.5, key) ** 2)``:
  tracegrad compiled; the same maths by hand in NumPy (``Generator.random``), and in Numba (one loop,
  splitmix64 as tracegrad draws it, the same mask);
- the same, tracegrad's NumPy evaluator (the tier that answers while Numba compiles);
- the same on a (1, 10) activation, where the cost of a call from Python dominates (the key is an argument).
Medians of interleaved rounds, process CPU time; the machine is shared, compare ratios only.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Report, calibrate, fmt_time, interleaved, machine, time_batch  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402

GOLDEN, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
S30, S27, S31, S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@numba.njit(cache=True)
def uniform_by_hand(key, n):
    out = np.empty(n)
    for i in range(n):
        z = key + np.uint64(i + 1) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        out[i] = np.float64(z >> S11) * 2.0 ** -53
    return out


@numba.njit(cache=True)
def dropout_by_hand(x, key):
    """sum(where(u < 0.5, tanh(x) / 0.5, 0) ** 2) and its gradient, one loop."""
    rows, cols = x.shape
    grad = np.empty_like(x)
    total = 0.0
    for i in range(rows):
        for j in range(cols):
            z = key + np.uint64(i * cols + j + 1) * GOLDEN
            z = (z ^ (z >> S30)) * MIX1
            z = (z ^ (z >> S27)) * MIX2
            z = z ^ (z >> S31)
            t = np.tanh(x[i, j])
            if np.float64(z >> S11) * 2.0 ** -53 < 0.5:
                h = t / 0.5
                total += h * h
                grad[i, j] = 2.0 * h / 0.5 * (1.0 - t * t)
            else:
                grad[i, j] = 0.0
    return total, grad


def dropout_numpy(x, rng):
    t = np.tanh(x)
    keep = rng.random(x.shape) < 0.5
    h = np.where(keep, t / 0.5, 0.0)
    return np.sum(h * h), np.where(keep, 2.0 * h / 0.5, 0.0) * (1.0 - t * t)


def dropout_loss(x, key):
    return np.sum(tg.nn.dropout(np.tanh(x), 0.5, key) ** 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 15
    print(machine())
    report = Report()
    key = tg.random.key(0)
    rng = np.random.default_rng(0)

    n = 1_000_000
    draw = tg.jit(lambda k: tg.random.uniform(k, (n,)))
    assert np.array_equal(draw(key), uniform_by_hand(key, n))
    cases = {"tracegrad (compiled)": (draw, (key,)), "NumPy Generator.random": (rng.random, (n,)),
             "Numba by hand (splitmix64)": (uniform_by_hand, (key, n))}
    x = rng.normal(size=(256, 512))
    f = tg.value_and_grad(dropout_loss)
    evaluated = tg.value_and_grad(dropout_loss, compile="never")
    value, grad = f(x, key)
    hand_value, hand_grad = dropout_by_hand(x, key)
    assert abs(value - hand_value) < 1e-9 * abs(value) and np.allclose(grad, hand_grad, rtol=1e-12)
    assert np.allclose(evaluated(x, key)[1], grad, rtol=1e-12)
    dropout_cases = {"tracegrad (compiled)": (f, (x, key)), "tracegrad (NumPy evaluator)": (evaluated, (x, key)),
                     "NumPy by hand": (dropout_numpy, (x, rng)), "Numba by hand (one loop)": (dropout_by_hand, (x, key))}
    small = rng.normal(size=(1, 10))
    assert np.allclose(f(small, key)[1], dropout_by_hand(small, key)[1], rtol=1e-12)
    call_cases = {"tracegrad (compiled, a key argument)": (f, (small, key)),
                  "Numba by hand (one loop)": (dropout_by_hand, (small, key))}
    for title, group, base in (("a million uniform float64 numbers (median per call)", cases, "NumPy Generator.random"),
                               ("value and gradient of dropout on (256, 512), rate 0.5 (median per call)",
                                dropout_cases, "NumPy by hand"),
                               ("the same on (1, 10), called from Python: the per-call cost (median per call)",
                                call_cases, "Numba by hand (one loop)")):
        batches = {name: calibrate(fn, args, 2e7) for name, (fn, args) in group.items()}
        times = interleaved({name: (lambda fn=fn, args=args, b=batches[name]: time_batch(fn, args, b))
                             for name, (fn, args) in group.items()}, rounds)
        rows = [(name, fmt_time(t), f"{t / times[base]:.2f}x") for name, t in times.items()]
        report.table(title, ("implementation", "time", f"ratio to {base}"), rows,
                     ["process CPU time; 2 shared cores, other work running: compare ratios within this run only"])


if __name__ == "__main__":
    main()
