"""Benchmark: plain Python loops rolled back up (tracegrad.roll) against hand-written Numba loops.

    python benchmarks/bench_roll.py              # about 3 minutes
    python benchmarks/bench_roll.py --quick      # fewer rounds
    python benchmarks/bench_roll.py --unrolled   # also the cold first call with rolling off (spring
                                                 # n = 1,000 and the RNN: minutes)

Three programs written with plain ``for`` loops over traced values, each value and gradient:
- the damped spring, explicit Euler, n = 1,000 and 10,000 steps; the baseline is bench_loops'
  hand-written forward-mode Numba loop;
- the sum of neighbour products ``sum(x[i] * x[i + 1] for i in range(400))``; the baseline a Numba loop
  computing the sum and its gradient;
- an RNN in the style of autograd's example (a batch of sequences, ``np.concatenate((x_t, h)) @ W``,
  log-softmax outputs), 30 time steps; the baseline the same function written with ``tg.scan``.
Then the cold first call (empty caches, a new process) and the generated source's length.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import run_cold, Report, calibrate, fmt_time, interleaved, machine, time_batch  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
from bench_loops import rnn as rnn_scan_simple, rnn_by_hand, spring_by_hand  # noqa: E402

DT, C = 0.01, 0.1


def spring(n):
    def spring_plain(x0, v0, k):
        x, v = x0, v0
        for _ in range(n):
            a = -k * x - C * v
            v = v + DT * a
            x = x + DT * v
        return x * x + v
    return spring_plain


def neighbours(x):
    return sum(x[i] * x[i + 1] for i in range(400))


@numba.njit(cache=True)
def neighbours_by_hand(x):
    s = 0.0
    g = np.zeros_like(x)
    for i in range(400):
        s += x[i] * x[i + 1]
        g[i] += x[i + 1]
        g[i + 1] += x[i]
    return s, g


def rnn_simple(W, U, b, xs):
    """bench_loops' Elman RNN, written with a plain loop."""
    h = np.zeros(b.shape)
    loss = 0.0
    for x in xs:
        h = np.tanh(W @ h + U @ x + b)
        loss = loss + np.sum(h * h)
    return loss


def rnn_simple_args(steps=30):
    r = np.random.default_rng(0)
    return r.normal(size=(32, 32)) * 0.1, r.normal(size=(32, 8)), r.normal(size=32), r.normal(size=(steps, 8))


def _step(Wc, bc, Wo, bo, h, x, target):
    h = np.tanh(np.concatenate((x, h), axis=1) @ Wc + bc)
    logits = h @ Wo + bo
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return h, np.sum(logp * target)


def rnn(Wc, bc, Wo, bo, inputs, targets):
    """autograd's RNN example, in outline: the log-likelihood of the next character, batch by batch."""
    h = np.zeros((inputs.shape[1], bc.shape[0]))
    loglik = 0.0
    for t in range(inputs.shape[0]):
        h, term = _step(Wc, bc, Wo, bo, h, inputs[t], targets[t])
        loglik = loglik + term
    return -loglik


def rnn_scan(Wc, bc, Wo, bo, inputs, targets):
    def cell(h, row):
        x, target = row
        return _step(Wc, bc, Wo, bo, h, x, target)

    _, terms = tg.scan(cell, np.zeros((inputs.shape[1], bc.shape[0])), (inputs, targets))
    return -np.sum(terms)


def rnn_args(steps=30, batch=8, chars=20, hidden=32):
    r = np.random.default_rng(0)
    eye = np.eye(chars)
    text = r.integers(0, chars, size=(steps + 1, batch))
    return (0.1 * r.normal(size=(chars + hidden, hidden)), np.zeros(hidden), 0.1 * r.normal(size=(hidden, chars)),
            np.zeros(chars), eye[text[:-1]], eye[text[1:]])


COLD = """
import json, sys, time
sys.path.insert(0, {here!r})
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np, tracegrad as tg
import bench_roll as b
tg.roll.ENABLED = {rolled}
t1, c1 = time.perf_counter(), time.process_time()
{call}
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({{"import": c1 - c0, "first call": c2 - c1, "wall": t2 - t1}}))
"""

CALLS = {
    "spring, n = 1,000": "tg.value_and_grad(b.spring(1000), argnums=(0, 1, 2))(1.0, 0.5, 2.0)",
    "spring, n = 10,000": "tg.value_and_grad(b.spring(10_000), argnums=(0, 1, 2))(1.0, 0.5, 2.0)",
    "neighbour products, 400 terms": "tg.value_and_grad(b.neighbours)(np.linspace(0.0, 1.0, 401))",
    "RNN (autograd's example), 30 steps": "tg.value_and_grad(b.rnn, argnums=(0, 1, 2, 3))(*b.rnn_args())",
    "Elman RNN, 30 steps": "tg.value_and_grad(b.rnn_simple, argnums=(0, 1, 2))(*b.rnn_simple_args())",
    "Elman RNN, 30 steps, tg.scan": "tg.value_and_grad(b.rnn_scan_simple, argnums=(0, 1, 2))(*b.rnn_simple_args())",
}


UNROLLED = ("spring, n = 1,000", "RNN (autograd's example), 30 steps", "Elman RNN, 30 steps")


def cold(call: str, rolled: bool = True) -> dict:
    return run_cold(COLD.format(here=os.path.dirname(os.path.abspath(__file__)), call=call, rolled=rolled))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--unrolled", action="store_true", help="also time the cold first call unrolled")
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 15
    report = Report()
    print(machine())

    cases = {}
    for n in (1000, 10_000):
        f = tg.value_and_grad(spring(n), argnums=(0, 1, 2))
        value, grads = f(1.0, 0.5, 2.0)
        hand_value, hand_grads = spring_by_hand(1.0, 0.5, 2.0, n)
        assert abs(value - hand_value) < 1e-12 * abs(hand_value) and np.allclose(grads, hand_grads, rtol=1e-9)
        assert any(node.primitive.name == "loop" for node in f.graph(1.0, 0.5, 2.0).nodes)
        cases[f"spring, n = {n:,}"] = (f, spring_by_hand, (1.0, 0.5, 2.0), (1.0, 0.5, 2.0, n))
    x = np.linspace(0.0, 1.0, 401)
    f = tg.value_and_grad(neighbours)
    value, grad = f(x)
    hand_value, hand_grad = neighbours_by_hand(x)
    assert value == hand_value and np.allclose(grad, hand_grad, rtol=1e-14)
    cases["neighbour products, 400 terms"] = (f, neighbours_by_hand, (x,), (x,))
    args = rnn_args()
    f, g = (tg.value_and_grad(fn, argnums=(0, 1, 2, 3)) for fn in (rnn, rnn_scan))
    (value, grads), (scan_value, scan_grads) = f(*args), g(*args)
    assert abs(value - scan_value) < 1e-12 * abs(value)
    assert all(np.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(grads, scan_grads))
    cases["RNN (autograd's example), 30 steps"] = (f, g, args, args)
    args = rnn_simple_args()
    f = tg.value_and_grad(rnn_simple, argnums=(0, 1, 2))
    value, grads = f(*args)
    hand_value, hand_grads = rnn_by_hand(*args)
    assert abs(value - hand_value) < 1e-12 * abs(hand_value)
    assert all(np.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(grads, hand_grads))
    cases["Elman RNN, 30 steps"] = (f, rnn_by_hand, args, args)

    rows = []
    for name, (ours, theirs, our_args, their_args) in cases.items():
        n = calibrate(theirs, their_args, 2e7)
        times = interleaved({"tg": lambda: time_batch(ours, our_args, n),
                             "base": lambda: time_batch(theirs, their_args, n)}, rounds)
        rows.append((name, fmt_time(times["tg"]), fmt_time(times["base"]), f"{times['tg'] / times['base']:.2f}x"))
    report.table("value and gradient, plain Python loops rolled, compiled (median)",
                 ("program", "tracegrad", "baseline", "ratio"), rows,
                 ["baseline: hand-written Numba (spring, neighbours, Elman RNN); autograd's RNN written with tg.scan"])

    rows = []
    for name, call in CALLS.items():
        t = cold(call)
        row = [name, f"{t['first call']:.2f} s", f"{t['wall']:.2f} s"]
        if opts.unrolled:  # the 400 terms unrolled took 484 s, 10,000 steps far longer: not run
            row.append(f"{cold(call, rolled=False)['first call']:.1f} s" if name in UNROLLED else "-")
        rows.append(tuple(row))
    report.table("cold first call: empty caches, a new process",
                 ("program", "first call (CPU)", "(wall)") + (("unrolled (CPU)",) if opts.unrolled else ()), rows,
                 ["first call: trace, roll, autodiff, passes, codegen, Numba's compile and the call itself"])

    rows = []
    for n in (10, 1000, 10_000):
        src = tg.source(tg.grad(spring(n), argnums=(0, 1, 2)), 1.0, 0.5, 2.0)
        rows.append((f"spring, n = {n:,}", len(src.splitlines())))
    for steps in (5, 30, 100):
        src = tg.source(tg.grad(rnn, argnums=(0, 1, 2, 3)), *rnn_args(steps))
        rows.append((f"autograd's RNN, {steps} steps", len(src.splitlines())))
    report.table("generated source of the gradient", ("program", "lines"), rows)
    if opts.markdown:
        print(report.markdown())


if __name__ == "__main__":
    main()
