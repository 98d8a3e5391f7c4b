"""Benchmark: where the neuron's call from Python goes, step by step from a bare Numba call to the guard.

The lectures' neuron (``bench_neuron.py``) called from Python costs about twice a bare call of the
hand-written ``@numba.njit`` function; the goal is 1.5x. Each row adds one thing a tracegrad call must
do to a bare call of tracegrad's own compiled function (``Compiled.dispatcher``), each written as
Python source the way the guard is (``tg.value_and_grad(f).specialize(...).guard.source``):

1. a Python function calling the dispatcher;
2. the same as the ``__call__`` of a class (a transformed function is an instance: its class's
   ``__call__`` is the guard of the specialisation called last);
3. with the guard's parameters (``_a0=MISS, ..., *rest, **kwargs``: a call with keywords or too many
   arguments must reach the general path);
4. with its checks (no keywords or extra arguments, no thread tracing, each argument's class);
5. and writing the result tree ``(value, (g0, ..., g4))`` from Numba's flat outputs: the guard itself,
   but for its ``try`` blocks; then the guard, as ``neuron_vg(...)`` calls it.

    python benchmarks/call_floor.py            # ~20 s
    python benchmarks/call_floor.py --quick
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import harness  # noqa: E402  (sets one BLAS thread before NumPy loads)

import tracegrad as tg  # noqa: E402
from bench_neuron import ARGS, neuron_hand, neuron_vg  # noqa: E402

HEAD = "def __call__(self, /, a=MISS, b=MISS, c=MISS, d=MISS, e=MISS, *rest, **kwargs):\n"
CHECK = ("    if not (not rest and not kwargs and not TRACING and a.__class__ is float and b.__class__ is float"
         " and c.__class__ is float and d.__class__ is float and e.__class__ is float):\n        raise Mismatch\n")
STEPS = {
    "1. a Python function calling it": ("def call(a, b, c, d, e):\n    return k(a, b, c, d, e)\n", False),
    "2. ... as a class's __call__": ("def __call__(self, a, b, c, d, e):\n    return k(a, b, c, d, e)\n", True),
    "3. ... with the guard's parameters": (HEAD + "    return k(a, b, c, d, e)\n", True),
    "4. ... and its checks": (HEAD + CHECK + "    return k(a, b, c, d, e)\n", True),
    "5. ... and the result tree": (HEAD + CHECK + "    o0, o1, o2, o3, o4, o5 = k(a, b, c, d, e)\n"
                                   "    return (o0, (o1, o2, o3, o4, o5))\n", True),
}


class Mismatch(Exception):
    pass


def build(source: str, method: bool, kernel):
    env = {"k": kernel, "MISS": object(), "TRACING": tg.core.ENTERED, "Mismatch": Mismatch}
    exec(compile(source, "<step>", "exec"), env)
    if not method:
        return env["call"]
    return type("Step", (), {"__call__": env["__call__"]})()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args(argv)
    rounds, target_ns = (7, 2e6) if opts.quick else (31, 1e7)
    print(harness.machine())
    value = neuron_vg(*ARGS)
    kernel = neuron_vg.specialize(*ARGS).dispatcher
    want = neuron_hand(*ARGS)
    assert abs(value[0] - want[0]) < 1e-12 and kernel(*ARGS) == tuple(
        [value[0], *value[1]]), "the dispatcher and the guard disagree"
    functions = {"hand-written Numba, bare": neuron_hand, "tracegrad's dispatcher, bare": kernel}
    functions.update((name, build(source, method, kernel)) for name, (source, method) in STEPS.items())
    functions["tracegrad (the guard)"] = neuron_vg
    for name, fn in functions.items():
        if name.startswith("5") or name.startswith("tracegrad (the"):
            assert fn(*ARGS) == value, name
    timers = {}
    for name, fn in functions.items():
        n = harness.calibrate(fn, ARGS, target_ns)
        timers[name] = (lambda fn=fn, n=n: harness.time_batch(fn, ARGS, n))
    times = harness.interleaved(timers, rounds)
    hand = times["hand-written Numba, bare"]
    rows = [(name, harness.fmt_time(t), f"{t / hand:.2f}×") for name, t in times.items()]
    harness.Report().table("the neuron from Python, one step at a time", ("call", "per call", "vs hand-written"),
                           rows, [f"Medians of {rounds} interleaved rounds, {harness.CLOCK_NAME}; the Python "
                                  "loop driving each batch is included in every row."])


if __name__ == "__main__":
    main()
