"""Benchmark: loops that stay loops (tg.fori_loop, tg.scan) against hand-written Numba loops.

    python benchmarks/bench_loops.py            # about 2 minutes
    python benchmarks/bench_loops.py --quick    # fewer rounds

Two programs, each value and gradient:
- the damped spring, explicit Euler, n = 10^5 steps (``tg.fori_loop``); the hand-written baseline is one
  Numba loop carrying the state and its three tangents as scalars (forward mode: the cheapest exact
  gradient of three parameters by hand, storing nothing), and the hand-written adjoint (reverse mode, the
  algorithm tracegrad runs: a forward loop storing x, a backward loop);
- an Elman RNN over 1,000 steps (``tg.scan``, hidden 32, inputs 8); the baseline is a hand-written Numba
  forward loop storing the states and a backward loop through time.
Then the cold first call (empty caches, a new process: trace, autodiff, passes, codegen and Numba's
compile) and the generated source's length for n = 10 and n = 10^5.
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

DT, C = 0.01, 0.1


def spring(x0, v0, k, n):
    def step(i, state):
        x, v = state
        a = -k * x - C * v
        v = v + DT * a
        x = x + DT * v
        return (x, v)

    x, v = tg.fori_loop(0, n, step, (x0, v0))
    return x * x + v


@numba.njit(cache=True)
def spring_by_hand(x0, v0, k, n):
    """Value and gradient in (x0, v0, k): the state and its three tangents carried forward, as scalars."""
    x, v = x0, v0
    dx0, dx1, dx2 = 1.0, 0.0, 0.0  # d x / d (x0, v0, k)
    dv0, dv1, dv2 = 0.0, 1.0, 0.0
    for _ in range(n):
        a = -k * x - C * v
        da0, da1, da2 = -k * dx0 - C * dv0, -k * dx1 - C * dv1, -k * dx2 - x - C * dv2
        v = v + DT * a
        dv0, dv1, dv2 = dv0 + DT * da0, dv1 + DT * da1, dv2 + DT * da2
        x = x + DT * v
        dx0, dx1, dx2 = dx0 + DT * dv0, dx1 + DT * dv1, dx2 + DT * dv2
    return x * x + v, (2 * x * dx0 + dv0, 2 * x * dx1 + dv1, 2 * x * dx2 + dv2)


@numba.njit(cache=True)
def spring_adjoint_by_hand(x0, v0, k, n):
    """The same gradient in reverse mode, as tracegrad computes it: a forward loop storing x, a backward loop."""
    xs = np.empty(n)
    x, v = x0, v0
    for t in range(n):
        xs[t] = x
        a = -k * x - C * v
        v = v + DT * a
        x = x + DT * v
    gx, gv, gk = 2 * x, 1.0, 0.0
    for t in range(n - 1, -1, -1):
        gv = gv + DT * gx  # x' = x + dt v'
        ga = DT * gv       # v' = v + dt a
        gk -= xs[t] * ga   # a = -k x - c v
        gx = gx - k * ga
        gv = gv - C * ga
    return x * x + v, (gx, gv, gk)


def rnn(W, U, b, xs):
    def cell(h, x):
        h = np.tanh(W @ h + U @ x + b)
        return h, np.sum(h * h)

    h, per_step = tg.scan(cell, np.zeros(b.shape), xs)
    return np.sum(per_step)


@numba.njit(cache=True)
def rnn_by_hand(W, U, b, xs):
    n, hidden = xs.shape[0], b.shape[0]
    hs = np.empty((n + 1, hidden))
    hs[0] = 0.0
    loss = 0.0
    for t in range(n):
        hs[t + 1] = np.tanh(W @ hs[t] + U @ xs[t] + b)
        loss += np.sum(hs[t + 1] * hs[t + 1])
    gW, gU, gb = np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    gh = np.zeros(hidden)
    for t in range(n - 1, -1, -1):
        gh = gh + 2.0 * hs[t + 1]
        gz = gh * (1.0 - hs[t + 1] * hs[t + 1])
        gW += np.outer(gz, hs[t])
        gU += np.outer(gz, xs[t])
        gb += gz
        gh = W.T @ gz
    return loss, (gW, gU, gb)


COLD = """
import json, sys, time
sys.path.insert(0, {here!r})
t0 = time.perf_counter()
import numpy as np, tracegrad as tg
import bench_loops as b
t1 = time.perf_counter()
{call}
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first call": t2 - t1}}))
"""

HAND = {  # the hand-written baselines' own cold first call (Numba's compile of them), for comparison
    "spring, fori_loop, n = 10^5": "b.spring_adjoint_by_hand(1.0, 0.5, 2.0, 100_000)",
    "RNN, scan, 1,000 steps": ("r = np.random.default_rng(0); W, U, bb = r.normal(size=(32, 32)) * 0.1, "
                               "r.normal(size=(32, 8)), r.normal(size=32); xs = r.normal(size=(1000, 8))\n"
                               "b.rnn_by_hand(W, U, bb, xs)"),
}

CALLS = {
    "spring, fori_loop, n = 10^5": ("tg.value_and_grad(lambda x0, v0, k: b.spring(x0, v0, k, 100_000), "
                                    "argnums=(0, 1, 2))(1.0, 0.5, 2.0)"),
    "RNN, scan, 1,000 steps": ("r = np.random.default_rng(0); W, U, bb = r.normal(size=(32, 32)) * 0.1, "
                               "r.normal(size=(32, 8)), r.normal(size=32); xs = r.normal(size=(1000, 8))\n"
                               "tg.value_and_grad(b.rnn, argnums=(0, 1, 2))(W, U, bb, xs)"),
}


def cold(call: str) -> dict:
    return run_cold(COLD.format(here=os.path.dirname(os.path.abspath(__file__)), call=call))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    opts = parser.parse_args()
    rounds = 5 if opts.quick else 15
    report = Report()
    print(machine())

    spring_vg = tg.value_and_grad(lambda x0, v0, k: spring(x0, v0, k, 100_000), argnums=(0, 1, 2))
    args = (1.0, 0.5, 2.0)
    value, grads = spring_vg(*args)
    for hand in (spring_by_hand, spring_adjoint_by_hand):
        hand_value, hand_grads = hand(*args, 100_000)
        assert abs(value - hand_value) < 1e-9 * abs(hand_value) and np.allclose(grads, hand_grads, rtol=1e-8)

    r = np.random.default_rng(0)
    W, U, b, xs = r.normal(size=(32, 32)) * 0.1, r.normal(size=(32, 8)), r.normal(size=32), r.normal(size=(1000, 8))
    rnn_vg = tg.value_and_grad(rnn, argnums=(0, 1, 2))
    value, grads = rnn_vg(W, U, b, xs)
    hand_value, hand_grads = rnn_by_hand(W, U, b, xs)
    assert abs(value - hand_value) < 1e-9 * abs(hand_value)
    assert all(np.allclose(g, h, rtol=1e-8, atol=1e-12) for g, h in zip(grads, hand_grads))

    rows = []
    for name, (ours, theirs, call_args) in {
        "spring, fori_loop, n = 10^5 (vs forward mode by hand)": (spring_vg, lambda *a: spring_by_hand(*a, 100_000),
                                                                  args),
        "spring, fori_loop, n = 10^5 (vs reverse mode by hand)": (spring_vg,
                                                                  lambda *a: spring_adjoint_by_hand(*a, 100_000), args),
        "RNN, scan, 1,000 steps (hidden 32)": (rnn_vg, rnn_by_hand, (W, U, b, xs)),
    }.items():
        n = calibrate(theirs, call_args, 2e7)  # (the spring's baseline pays one Python lambda: ~0.1 µs)
        times = interleaved({"tg": lambda: time_batch(ours, call_args, n),
                             "hand": lambda: time_batch(theirs, call_args, n)}, rounds)
        rows.append((name, fmt_time(times["tg"]), fmt_time(times["hand"]), f"{times['tg'] / times['hand']:.2f}x"))
    report.table("value and gradient, compiled (median)", ("program", "tracegrad", "hand-written Numba", "ratio"),
                 rows)

    rows = []
    for name, call in CALLS.items():
        t, hand = cold(call), cold(HAND[name])
        rows.append((name, f"{t['first call']:.2f} s", f"{hand['first call']:.2f} s", f"{t['import']:.2f} s"))
    report.table("cold first call: empty caches, a new process",
                 ("program", "tracegrad", "hand-written Numba", "import"), rows,
                 ["first call: trace, autodiff, passes, codegen, Numba's compile and the call itself (wall time)"])

    rows = []
    for n in (10, 100_000):
        src = tg.source(tg.grad(lambda x0, v0, k: spring(x0, v0, k, n), argnums=(0, 1, 2)), 1.0, 0.5, 2.0)
        rows.append((f"n = {n:,}", len(src.splitlines())))
    report.table("generated source of the spring's gradient", ("trip count", "lines"), rows)
    if opts.markdown:
        print(report.markdown())


if __name__ == "__main__":
    main()
