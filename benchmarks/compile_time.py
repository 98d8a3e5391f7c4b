"""Benchmark: where the time of a first call goes, stage by stage, and how it grows with code length.

    python benchmarks/compile_time.py            # about 3 minutes
    python benchmarks/compile_time.py --quick    # about 40 s: fewer and shorter programs
    python benchmarks/compile_time.py --pipeline # table 3 alone: tracegrad's own stages on long programs

Every measurement runs in a fresh process with empty caches (``TRACEGRAD_CACHE_DIR`` and
``NUMBA_CACHE_DIR`` in a temporary directory), or, for the warm rows, in a second process reusing them.
The stages are ``Compiled.timings``: trace, autodiff, passes, codegen, load (writing and importing the
generated module) and numba (Numba's compile or cache load of the generated function and the kernels it
calls, and the first run).

Table 2 differentiates an unrolled loop, ``x = tanh(x * w) + 0.5 * x`` repeated n times on scalars (the
straight-line code an unrolled recurrence gives), with the generated function split as by default (into
parts of ``codegen.PART_LINES`` lines when longer than ``codegen.SPLIT_LINES``) and in one piece, against a hand-written Numba function of the
same forward and backward code, to show how Numba's compile time grows with length.

Table 3 times tracegrad's own stages (trace, with plain loops rolled; autodiff; passes; codegen) in process
CPU time on long programs: 10,000 scalar operations of straight-line code (a generated module of 2,500
distinct lines ``x = np.tanh(x * w) + 0.5 * x``: nothing to roll) and 40,000 (time linear in the length?),
the damped spring written as a plain
Python ``for`` loop for n = 1,000 and 10,000 steps (80,000 nodes traced before rolling), and the MLP
step. Then Numba's compile of the result (and the first call), against the hand-written Numba function's
cold compile where there is one (``--numba`` adds the straight-line code's: minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Report, machine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CASE_SNIPPET = """
import json, sys
sys.path.insert(0, {here!r})
import harness, cases
c = cases.case({key!r})
c.tg_vg(*c.args)
print(json.dumps(c.tg_vg.specialize(*c.args).timings))
"""

UNROLLED_SNIPPET = """
import json, time, numpy as np, numba, tracegrad as tg, tracegrad.codegen as codegen
if {whole}:
    codegen.SPLIT_LINES = codegen.PART_LINES = 10 ** 9
n = {n}

def f(x, w):
    for i in range(n):
        x = np.tanh(x * w) + 0.5 * x
    return x

if {hand}:  # the same straight-line code written out, forward then backward, one function
    lines = ["def hand(x, w):"] + [f"    t{{i}} = np.tanh(x{{i}} * w); x{{i + 1}} = t{{i}} + 0.5 * x{{i}}" for i in range(n)]
    lines += ["    gx = 1.0", "    gw = 0.0"]
    lines += [f"    gt = gx * (1 - t{{i}} * t{{i}}); gw += gt * x{{i}}; gx = gt * w + 0.5 * gx" for i in reversed(range(n))]
    lines += [f"    return x{{n}}, gx, gw"]
    namespace = {{"np": np}}
    exec("\\n".join(lines).replace("(x, w)", "(x0, w)", 1), namespace)
    hand = numba.njit(namespace["hand"])
    t = time.perf_counter(); hand(0.3, 0.9)
    print(json.dumps(dict(numba=time.perf_counter() - t, lines=len(lines), parts=0)))
else:
    vg = tg.value_and_grad(f, argnums=(0, 1))
    vg(0.3, 0.9)
    entry = vg.specialize(0.3, 0.9)
    print(json.dumps(dict(entry.timings, lines=entry.source.count("\\n"), parts=len(entry.module.parts))))
"""


PIPELINE_SNIPPET = """
import json, os, sys, tempfile, time, types
sys.path.insert(0, {here!r})
import numpy as np, tracegrad as tg, tracegrad.api as api
api.time = types.SimpleNamespace(perf_counter=time.process_time)  # Compiled.timings in this process's CPU time
if {key!r}.startswith("straight"):
    path = os.path.join(tempfile.mkdtemp(), "straight_line.py")
    with open(path, "w") as file:
        file.write("import numpy as np\\n\\n\\ndef f(x, w):\\n"
                   + "    x = np.tanh(x * w) + 0.5 * x\\n" * (int({key!r}[8:]) // 4) + "    return x\\n")
    namespace = {{}}
    exec(compile(open(path).read(), path, "exec"), namespace)
    fn, args = tg.value_and_grad(namespace["f"], argnums=(0, 1)), (0.3, 0.9)
elif {key!r}.startswith("spring"):
    import bench_roll
    fn, args = tg.value_and_grad(bench_roll.spring(int({key!r}[6:])), argnums=(0, 1, 2)), (1.0, 0.5, 2.0)
else:
    import cases
    c = cases.case({key!r})
    fn, args = c.tg_vg, c.args
entry = fn.specialize(*args)
if {call}:
    fn(*args)
print(json.dumps(dict(entry.timings, lines=entry.source.count("\\n"))))
"""

HAND_SNIPPET = """
import json, sys, time
sys.path.insert(0, {here!r})
c0 = time.process_time()
{call}
print(json.dumps(dict(numba=time.process_time() - c0)))
"""

HAND_CALLS = {
    "spring": "import bench_loops; bench_loops.spring_by_hand(1.0, 0.5, 2.0, 10)",
    "mlp_32_f32": "import cases; c = cases.case('mlp_32_f32'); c.hand_vg(*c.args)",
}

PIPELINE = (("straight10000", "straight-line, 10,000 scalar ops"),
            ("straight40000", "straight-line, 40,000 scalar ops"),
            ("spring1000", "spring, Python loop, n = 1,000"),
            ("spring10000", "spring, Python loop, n = 10,000"),
            ("mlp_32_f32", "MLP step, batch 32 f32"))


def pipeline_table(report, rounds: int, numba_straight: bool):
    stages = ("trace", "autodiff", "passes", "codegen")
    rows = []
    for key, label in PIPELINE:
        call = not key.startswith("straight") or numba_straight and key == "straight10000"
        runs = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache:
                runs.append(run(PIPELINE_SNIPPET.format(here=HERE, key=key, call=call), cache))
        med = {s: statistics.median(r[s] for r in runs) for s in (*stages, "load", *(("numba",) if call else ()))}
        ours = statistics.median(sum(r[s] for s in stages) for r in runs)
        hand = HAND_CALLS.get("spring" if key.startswith("spring") else key)
        if hand is not None:
            with tempfile.TemporaryDirectory() as cache:
                hand = run(HAND_SNIPPET.format(here=HERE, call=hand), cache)["numba"]
        first = statistics.median(sum(r[s] for s in (*stages, "load", "numba")) for r in runs) if call else None
        rows.append((label, f"{runs[0]['lines']:,}", *(ms(med[s]) for s in stages),
                     ms(ours), ms(med["load"]), ms(med["numba"]) if call else "-", ms(first) if call else "-",
                     ms(hand) if hand else "-", f"{first / hand:.2f}x" if hand and call else "-"))
    report.table("tracegrad's stages on long programs (process CPU time, fresh processes, cold caches)",
                 ("program", "lines", *stages, "tracegrad stages", "load", "numba",
                  "first call", "hand-written Numba", "ratio"), rows,
                 [f"Medians of {rounds} fresh process(es) per row; process CPU time (the machine is shared: wall "
                  "time includes waiting for the other processes). lines: of the generated source. 'tracegrad stages' "
                  "= trace (with rolling) + autodiff + passes + codegen, "
                  "the goal's <= 2 s; load: writing and importing the module (Python's compile of it); numba: "
                  "Numba's compile of the generated code and the first call; first call: all of it (the spring's goal, "
                  "<= 3 s). hand-written Numba: the cold compile and first call of the baseline of bench_loops "
                  "(spring, forward mode) or cases (MLP step); ratio: first call / hand-written."])


def run(snippet: str, cache: str) -> dict:
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=os.path.join(cache, "tg"), NUMBA_CACHE_DIR=os.path.join(cache, "nb"))
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pipeline", action="store_true", help="only table 3: tracegrad's stages on long programs")
    parser.add_argument("--numba", action="store_true", help="table 3: also Numba's compile of the straight-line code")
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes per row of table 3 (default 3)")
    parser.add_argument("--markdown", action="store_true")
    opts = parser.parse_args()
    report = Report()
    print(f"machine: {machine()}")
    if opts.pipeline:
        pipeline_table(report, opts.rounds or (1 if opts.quick else 3), opts.numba)
        if opts.markdown:
            print(report.markdown())
        return
    stages = ("trace", "autodiff", "passes", "codegen", "load", "numba")

    keys = ["neuron", "sin_exp", "rosen_1000", "mlp_32_f32"] if not opts.quick else ["neuron", "mlp_32_f32"]
    rounds = 1 if opts.quick else 3
    rows = []
    for key in keys:
        for state in ("cold", "warm"):
            runs = []
            for _ in range(rounds):
                with tempfile.TemporaryDirectory() as cache:
                    cold = run(CASE_SNIPPET.format(here=HERE, key=key), cache)
                    runs.append(cold if state == "cold" else run(CASE_SNIPPET.format(here=HERE, key=key), cache))
            med = {s: statistics.median(r[s] for r in runs) for s in stages}
            rows.append((key, state, *(ms(med[s]) for s in stages), ms(sum(med.values()))))
    report.table("First call, stage by stage (fresh processes)", ("case", "cache", *stages, "total"), rows,
                 [f"Medians of {rounds} fresh process(es) per row, wall time. The imports before the first "
                  "call (about 0.3 s: NumPy, Numba, tracegrad) are not counted."])

    lengths = [25, 100, 400] if opts.quick else [25, 100, 400, 1600]
    rows = []
    for n in lengths:
        results = {}
        for label, whole, hand in (("parts", False, False), ("one function", True, False), ("hand", False, True)):
            with tempfile.TemporaryDirectory() as cache:
                results[label] = run(UNROLLED_SNIPPET.format(n=n, whole=whole, hand=hand), cache)
        split, one, hand = results["parts"], results["one function"], results["hand"]
        rows.append((n, split["lines"], split["parts"] + 1, ms(split["numba"]), ms(one["numba"]),
                     f"{one['numba'] / split['numba']:.2f}x", hand["lines"], ms(hand["numba"])))
    report.table("Numba compile time against code length (cold caches)",
                 ("n steps", "lines", "functions", "Numba, in parts", "Numba, one function", "parts speed-up",
                  "hand-written lines", "hand-written Numba"), rows,
                 ["value_and_grad of n unrolled steps x = tanh(x * w) + 0.5 * x on scalars; 'numba' includes "
                  "the first run. The hand-written function is the same forward and backward in one function."])
    pipeline_table(report, opts.rounds or (1 if opts.quick else 3), opts.numba)
    if opts.markdown:
        print(report.markdown())


if __name__ == "__main__":
    main()
