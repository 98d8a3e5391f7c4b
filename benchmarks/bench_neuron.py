"""Benchmark: the lectures' sigmoid neuron, tracegrad versus hand-written Numba.

The function is

    f(w0, x0, w1, x1, w2) = sigmoid(w0*x0 + w1*x1 + w2)    at  w0=2, x0=-1, w1=-3, x1=-2, w2=-3

and every case computes its value and all five gradients. Two things are measured:

1. Per-call latency from Python: ``tg.value_and_grad(f, argnums=(0, 1, 2, 3, 4))`` (written with
   ``tg.sigmoid``) against a hand-written, hand-differentiated ``@numba.njit`` function returning the
   value and the five gradients. Both are timed in the same run, interleaved: each round times one
   batch of each (alternating which goes first), and the table shows the median over the rounds, in
   microseconds per call. The Python ``for`` loop driving a batch is included in both. An extra row
   calls tracegrad's compiled ``Compiled.dispatcher`` directly from Python: the floor the wrapper
   could reach. Goal: tracegrad / hand-written <= 1.5x.

2. Cost inside compiled code: an ``@numba.njit`` loop calling tracegrad's ``Compiled.dispatcher`` N times
   against the same loop calling the hand-written function, in nanoseconds per call. The first input is
   nudged each iteration and all six outputs are summed and returned, so the call can neither be hoisted
   out of the loop nor optimised away (both loops must return the same sum). Goal: ratio <= 1.1x.

Before timing, the script checks that tracegrad, the dispatcher and the hand-written function give the
same numbers (and that they match the lectures' values). If JAX or PyTorch happen to be importable,
extra latency rows are shown for them; otherwise they are skipped silently.

Run from the repository root:

    python benchmarks/bench_neuron.py            # about 10-20 s
    python benchmarks/bench_neuron.py --quick    # a few seconds, noisier

(with ``tracegrad`` importable, e.g. ``PYTHONPATH=.``; ``TRACEGRAD_CACHE_DIR`` picks where generated code
is cached). The machine is noisy: compare ratios from one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np

import tracegrad as tg

ARGS = (2.0, -1.0, -3.0, -2.0, -3.0)  # w0, x0, w1, x1, w2


# ----------------------------------------------------------------------------- the two implementations

def neuron(w0, x0, w1, x1, w2):
    return tg.sigmoid(w0 * x0 + w1 * x1 + w2)


neuron_vg = tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4))


@numba.njit
def neuron_hand(w0, x0, w1, x1, w2):
    """Value and the five gradients, differentiated by hand: d sigmoid(z)/dz = (1 - s) * s."""
    z = w0 * x0 + w1 * x1 + w2
    s = 1.0 / (1.0 + math.exp(-z))
    dz = (1.0 - s) * s
    return s, dz * x0, dz * w0, dz * x1, dz * w1, dz


def make_loop(fn):
    """An njit loop calling ``fn`` n times; its result depends on every call."""
    @numba.njit
    def loop(n, w0, x0, w1, x1, w2):
        acc = 0.0
        for i in range(n):
            r = fn(w0 + i * 1e-12, x0, w1, x1, w2)  # varying input: the call cannot be hoisted
            acc += r[0] + r[1] + r[2] + r[3] + r[4] + r[5]
        return acc
    return loop


# ----------------------------------------------------------------------------- optional competitors

def optional_competitors() -> dict:
    """Python-level value-and-grad callables for JAX / PyTorch, if they are importable."""
    found = {}
    try:
        import jax
        import jax.numpy as jnp  # noqa: F401
        jax.config.update("jax_enable_x64", True)
        jax_vg = jax.jit(jax.value_and_grad(
            lambda w0, x0, w1, x1, w2: jax.nn.sigmoid(w0 * x0 + w1 * x1 + w2), argnums=(0, 1, 2, 3, 4)))

        def run_jax(*args):
            value, grads = jax_vg(*args)
            value.block_until_ready()
            return float(value), tuple(float(g) for g in grads)
        found["JAX (jit value_and_grad)"] = run_jax
    except ImportError:
        pass
    except Exception:  # installed but broken: not this benchmark's business
        pass
    try:
        import torch

        def run_torch(*args):
            ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
            y = torch.sigmoid(ts[0] * ts[1] + ts[2] * ts[3] + ts[4])
            grads = torch.autograd.grad(y, ts)
            return y.item(), tuple(g.item() for g in grads)
        found["PyTorch (eager autograd)"] = run_torch
    except ImportError:
        pass
    except Exception:
        pass
    return found


# ----------------------------------------------------------------------------- timing helpers

def time_batch(fn, args, n) -> float:
    """Nanoseconds per call of ``fn(*args)`` over one batch of ``n`` calls."""
    r = range(n)
    t0 = time.perf_counter_ns()
    for _ in r:
        fn(*args)
    return (time.perf_counter_ns() - t0) / n


def interleaved(cases: dict, rounds: int) -> dict:
    """Median ns/call of each case. ``cases`` maps name -> (callable timing one batch, returning ns/call).

    Each round runs every case once; the order is reversed every other round so drift hits all alike."""
    samples = {name: [] for name in cases}
    names = list(cases)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k in range(rounds):
            for name in (names if k % 2 == 0 else names[::-1]):
                samples[name].append(cases[name]())
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def calibrate(fn, args, target_ns=5e6, cap=10_000) -> int:
    """A batch size giving roughly ``target_ns`` per batch (for slow optional competitors)."""
    per_call = time_batch(fn, args, 10)
    return max(10, min(cap, int(target_ns / max(per_call, 1.0))))


# ----------------------------------------------------------------------------- main

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{platform.platform()} | {cpu} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
            f"numpy {np.__version__} | numba {numba.__version__} | tracegrad {tg.__version__}")


def flat(result):
    """(value, (g0, ..., g4)) -> [value, g0, ..., g4]."""
    value, grads = result
    return [value, *grads]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a few seconds)")
    opts = parser.parse_args(argv)

    rounds = 7 if opts.quick else 25
    batch = 2_000 if opts.quick else 10_000         # Python calls per batch
    loop_n = 200_000 if opts.quick else 1_000_000   # calls per compiled-loop batch

    print("machine:", machine())
    print(f"settings: {rounds} interleaved rounds; {batch:,} Python calls per batch; "
          f"{loop_n:,} calls per compiled-loop batch" + (" (--quick)" if opts.quick else ""))

    # -- compile everything and check the numbers agree before timing
    t0 = time.perf_counter()
    compiled = neuron_vg.specialize(*ARGS)
    captured = compiled.captured()
    assert captured == [], "the neuron reads no arrays from its closure"
    dispatcher = compiled.dispatcher
    tg_result = flat(neuron_vg(*ARGS))
    disp_result = list(dispatcher(*ARGS, *captured))
    hand_result = list(neuron_hand(*ARGS))
    expected = [0.7310585786300049, -0.19661193324148185, 0.3932238664829637,
                -0.3932238664829637, -0.5898357997244456, 0.19661193324148185]
    assert np.allclose(tg_result, hand_result, rtol=1e-12, atol=0), (tg_result, hand_result)
    assert np.allclose(disp_result, hand_result, rtol=1e-12, atol=0), (disp_result, hand_result)
    assert np.allclose(hand_result, expected, rtol=1e-12, atol=0), hand_result
    assert type(tg_result[0]) is float and all(type(g) is float for g in tg_result[1:])

    loop_tg, loop_hand = make_loop(dispatcher), make_loop(neuron_hand)
    s_tg, s_hand = loop_tg(1000, *ARGS), loop_hand(1000, *ARGS)
    assert np.isclose(s_tg, s_hand, rtol=1e-12, atol=0), (s_tg, s_hand)
    print(f"checked: value {hand_result[0]:.6f}, grads "
          f"[{', '.join(f'{g:.6f}' for g in hand_result[1:])}] agree "
          f"(tracegrad, its dispatcher, hand-written, both compiled loops); "
          f"setup+compile {time.perf_counter() - t0:.1f} s")

    others = optional_competitors()
    for name, fn in list(others.items()):
        try:
            assert np.allclose(flat(fn(*ARGS)), hand_result, rtol=1e-6, atol=1e-9)
        except Exception:
            del others[name]  # skip silently: not what this benchmark is about

    # -- 1. per-call latency from Python
    cases = {
        "tracegrad": lambda: time_batch(neuron_vg, ARGS, batch),
        "hand": lambda: time_batch(neuron_hand, ARGS, batch),
        "dispatcher": lambda: time_batch(dispatcher, ARGS, batch),
    }
    for name, fn in others.items():
        n = calibrate(fn, ARGS)
        cases[name] = (lambda fn=fn, n=n: time_batch(fn, ARGS, n))
    empty = time_batch(lambda *a: None, ARGS, batch)
    for case in cases.values():  # warm up
        case()
    py = interleaved(cases, rounds)

    # -- 2. inside a compiled loop
    loop_cases = {
        "tracegrad": lambda: _time_loop(loop_tg, loop_n),
        "hand": lambda: _time_loop(loop_hand, loop_n),
    }
    for case in loop_cases.values():
        case()
    nb = interleaved(loop_cases, rounds)

    # -- report
    rows = [
        ("Python call, value_and_grad (us/call)", py["tracegrad"] / 1e3, py["hand"] / 1e3, "<= 1.5x"),
        ("  (tracegrad .dispatcher from Python)", py["dispatcher"] / 1e3, py["hand"] / 1e3, "info"),
    ]
    for name in others:
        rows.append((f"  ({name}, us/call)", py[name] / 1e3, py["hand"] / 1e3, "info"))
    rows.append(("njit loop calling it (ns/call)", nb["tracegrad"], nb["hand"], "<= 1.1x"))

    header = ("case", "tracegrad", "hand-written Numba", "ratio", "goal")
    table = [header] + [(case, f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}x", goal) for case, a, b, goal in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    print()
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print(line)
    print()
    print(f"medians of {rounds} rounds. The Python rows include the driving for-loop "
          f"(~{empty:.0f} ns/iteration for a no-op lambda call).")
    for case, a, b, goal in rows:
        if goal.startswith("<="):
            ok = a / b <= float(goal.split()[1].rstrip("x"))
            print(f"  {case.strip()}: {a / b:.2f}x vs goal {goal} -> {'met' if ok else 'NOT met'}")


def _time_loop(loop, n) -> float:
    t0 = time.perf_counter_ns()
    acc = loop(n, *ARGS)
    elapsed = time.perf_counter_ns() - t0
    if not math.isfinite(acc):  # use the result
        raise AssertionError(acc)
    return elapsed / n


if __name__ == "__main__":
    sys.exit(main())
