"""The benchmark suite: tracegrad against hand-written Numba (and JAX / PyTorch / autograd when installed).

One command runs everything and prints the tables:

    python benchmarks/run_all.py              # about 2.5 minutes of CPU time (longer when the machine is shared)
    python benchmarks/run_all.py --quick      # under a minute, noisier
    python benchmarks/run_all.py --markdown benchmarks/last_run.md   # also write the tables as Markdown

(with ``tracegrad`` importable; ``TRACEGRAD_CACHE_DIR`` picks where generated code is cached). The cases
are in ``cases.py``: the lectures' neuron and ``2/sin(exp(-x))``, Rosenbrock at n = 10, 1,000 and 100,000,
and an MLP 64-128-10 training step (ReLU hidden layer, softmax cross-entropy with integer labels; value and
the gradients of the four parameters) at batch 32 and 1024 in float32 and float64. For each case, every
implementation is first checked against the hand-written one (``np.allclose``), then:

1. **Value + gradient from Python**: ``tg.value_and_grad`` against a hand-written, hand-differentiated
   ``@numba.njit`` function, timed in the same run: each round times one batch of calls of every
   implementation (the order reversed every other round) and the tables show medians over rounds. The
   ``.dispatcher`` column calls tracegrad's compiled Numba function directly (no Python wrapper).
   Scalar cases are also timed inside an ``@numba.njit`` loop (ns per call; the input is nudged each
   iteration and all outputs are summed, so nothing is hoisted or dropped).
2. **Cheap-gradient ratio**: value+gradient time over forward-only time (``tg.jit``), for tracegrad and,
   for reference, for the hand-written code.
3. **Peers**: the same value+gradient in JAX (jit), PyTorch (eager) and autograd, interleaved with the
   rest. Rows are skipped for a library that is not installed.
4. **First call in a fresh process** (``first_call.py`` as a subprocess): cold (empty tracegrad and Numba
   cache directories) and warm (a second process with the same directories), for the MLP step.
5. **Peak memory** of one value+gradient call (``peak_memory.py`` as a subprocess: growth of the resident
   set, and the number of arrays Numba allocates per call).

Every library runs on one thread (``harness.py`` sets ``OPENBLAS_NUM_THREADS=1`` and friends, PyTorch gets
``torch.set_num_threads(1)``). The machine is noisy: compare ratios from one run, not times across runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402  (sets the thread environment before NumPy is imported)
from harness import Report, calibrate, fmt_bytes, fmt_time, interleaved, time_batch  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import cases as case_defs  # noqa: E402

LATENCY_CASE = "mlp_32_f32"  # the "MLP step first call"


# ----------------------------------------------------------------------------- helpers

def verdict(ratio, goal) -> str:
    if goal is None:
        return "–"
    return f"≤ {goal:g}× " + ("met" if ratio <= goal else f"MISSED by {ratio / goal:.2f}×")


def make_loop(fn, nargs):
    """An njit loop calling ``fn`` n times; its result depends on every call (scalar cases)."""
    if nargs == 1:
        @numba.njit
        def loop(n, a):
            acc = 0.0
            for i in range(n):
                r = fn(a + i * 1e-12)
                for v in r:
                    acc += v
            return acc
    elif nargs == 5:
        @numba.njit
        def loop(n, a, b, c, d, e):
            acc = 0.0
            for i in range(n):
                r = fn(a + i * 1e-12, b, c, d, e)
                for v in r:
                    acc += v
            return acc
    else:
        raise ValueError(nargs)
    return loop


def time_loop(loop, n, args) -> float:
    t0 = harness.clock()
    acc = loop(n, *args)
    elapsed = harness.clock() - t0
    if not math.isfinite(acc):  # use the result
        raise AssertionError(acc)
    return elapsed / n


def build_peers(c, ref, skip: bool) -> dict:
    """Zero-argument callables of the optional libraries that import and agree with the reference."""
    found = {}
    if skip:
        return found
    for name, builder in c.peers.items():
        try:
            call, to_list = builder(c.args)
            got = to_list(call())
        except ImportError:
            continue
        except Exception as exc:  # installed but broken: report and skip, not this suite's business
            print(f"  ({name} skipped for {c.key}: {type(exc).__name__}: {exc})")
            continue
        rtol, atol = max(c.rtol, 1e-5), max(c.atol, 1e-6)
        if len(got) == len(ref) and all(np.allclose(a, b, rtol=rtol, atol=atol) for a, b in zip(got, ref)):
            found[name] = call
        else:
            print(f"  ({name} skipped for {c.key}: its numbers differ from the hand-written ones)")
    return found


# ----------------------------------------------------------------------------- 1-3: in-process timing

def time_case(c, ref, opts) -> dict:
    compiled = c.tg_vg.specialize(*c.args)
    dispatcher, captured = compiled.dispatcher, compiled.captured()
    disp_args = tuple(c.args) + tuple(captured)
    got = list(dispatcher(*disp_args))
    assert all(np.allclose(a, b, rtol=c.rtol, atol=c.atol) for a, b in zip(got, ref)), c.key

    own = {
        "tg_vg": (c.tg_vg, c.args),
        "hand_vg": (c.hand_vg, c.args),
        "dispatcher": (dispatcher, disp_args),
        "tg_fwd": (c.tg_fwd, c.args),
        "hand_fwd": (c.hand_fwd, c.args),
    }
    n = calibrate(c.tg_vg, c.args, opts.target_ns)
    timed = {name: (lambda fn=fn, a=a: time_batch(fn, a, n)) for name, (fn, a) in own.items()}
    for name, call in build_peers(c, ref, opts.no_peers).items():
        m = calibrate(call, (), opts.target_ns)
        timed[name] = (lambda call=call, m=m: time_batch(call, (), m))
    for t in timed.values():  # warm up
        t()
    result = interleaved(timed, opts.rounds)

    if c.scalar:
        loops = {
            "loop_tg_vg": make_loop(dispatcher, len(c.args)),
            "loop_hand_vg": make_loop(c.hand_vg, len(c.args)),
            "loop_tg_fwd": make_loop(c.tg_fwd.specialize(*c.args).dispatcher, len(c.args)),
            "loop_hand_fwd": make_loop(c.hand_fwd, len(c.args)),
        }
        s_tg, s_hand = loops["loop_tg_vg"](1000, *c.args), loops["loop_hand_vg"](1000, *c.args)
        assert np.isclose(s_tg, s_hand, rtol=1e-12), (c.key, s_tg, s_hand)
        s_tg, s_hand = loops["loop_tg_fwd"](1000, *c.args), loops["loop_hand_fwd"](1000, *c.args)
        assert np.isclose(s_tg, s_hand, rtol=1e-12), (c.key, s_tg, s_hand)
        timed = {name: (lambda lp=lp: time_loop(lp, opts.loop_n, c.args)) for name, lp in loops.items()}
        for t in timed.values():
            t()
        result.update(interleaved(timed, opts.rounds))
    return result


# ----------------------------------------------------------------------------- 4: first call

class SubprocessFailed(RuntimeError):
    pass


def first_call(impl, key, env) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(HERE, "first_call.py"), impl, key],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SubprocessFailed(f"first_call.py {impl} {key} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_call_latency(rounds: int, with_jax: bool, new_function: bool = True) -> dict:
    """(impl, state) -> list of first_call.py results. States: "cold" (empty cache directories), "warm" (a
    second process with the same directories) and, for tracegrad, "new function" (an empty tracegrad
    cache directory but Numba's cache of tracegrad's own kernels kept: a user's first call of a new
    function). The implementations take turns within each round."""
    impls = ["tracegrad", "hand"]
    if with_jax:  # optional: only if JAX really runs in a fresh process
        probe = tempfile.mkdtemp(prefix="tg_jax_probe_")
        try:
            first_call("jax", LATENCY_CASE, dict(os.environ, JAX_CACHE_DIR=probe))
            impls.append("jax")
        except SubprocessFailed as exc:
            print(f"  (JAX first-call rows skipped: {str(exc).splitlines()[-1]})")
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    out: dict = {}
    if rounds == 0:  # --quick: warm only, with the caches this run has just filled (no cold compiles)
        for impl in impls:
            out.setdefault((impl, "warm"), []).append(first_call(impl, LATENCY_CASE, dict(os.environ)))
        return out
    for k in range(rounds):
        for impl in (impls if k % 2 == 0 else impls[::-1]):
            tmp = tempfile.mkdtemp(prefix="tg_first_call_")
            try:
                env = dict(os.environ, TRACEGRAD_CACHE_DIR=os.path.join(tmp, "tracegrad"),
                           NUMBA_CACHE_DIR=os.path.join(tmp, "numba"), JAX_CACHE_DIR=os.path.join(tmp, "jax"))
                out.setdefault((impl, "cold"), []).append(first_call(impl, LATENCY_CASE, env))
                out.setdefault((impl, "warm"), []).append(first_call(impl, LATENCY_CASE, env))
                if impl == "tracegrad" and new_function:
                    env["TRACEGRAD_CACHE_DIR"] = os.path.join(tmp, "tracegrad-new")
                    out.setdefault((impl, "new function"), []).append(first_call(impl, LATENCY_CASE, env))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def jax_installed() -> bool:
    try:
        import importlib.util
        return importlib.util.find_spec("jax") is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- 5: memory

def peak_memory(keys, repeats) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4096", TRACEGRAD_TUNE_MALLOC="0", NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "peak_memory.py"), str(repeats), *keys],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"peak_memory.py failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (under a minute)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE as Markdown")
    parser.add_argument("--cases", nargs="+", metavar="KEY", help="only these cases (keys from cases.py)")
    parser.add_argument("--no-peers", action="store_true", help="skip JAX / PyTorch / autograd")
    parser.add_argument("--no-subprocess", action="store_true", help="skip first-call latency and memory")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    opts = parser.parse_args(argv)
    if opts.wall:
        harness.use_wall_clock()
    opts.rounds = 5 if opts.quick else 21
    opts.target_ns = 4e6 if opts.quick else 10e6       # per batch of Python calls
    opts.loop_n = 200_000 if opts.quick else 500_000    # calls per compiled-loop batch
    latency_rounds = 0 if opts.quick else 3  # 0: warm caches only
    memory_repeats = 3 if opts.quick else 7

    started = time.perf_counter()
    machine = harness.machine()  # once: the tree may change while this runs (the subprocesses import it anew)
    print("machine:", machine)
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:
        pass
    print(f"settings: {harness.CLOCK_NAME}; {opts.rounds} interleaved rounds of ~{opts.target_ns / 1e6:.0f} ms batches; "
          f"{opts.loop_n:,} calls per compiled-loop batch; first call: "
          + (f"{latency_rounds} rounds of fresh processes" if latency_rounds else "warm caches only")
          + f"; memory: median of {memory_repeats}" + (" (--quick)" if opts.quick else ""))
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
          f"tracegrad cache: {os.environ.get('TRACEGRAD_CACHE_DIR') or '(default)'}")

    cases = case_defs.all_cases()
    if opts.cases:
        cases = [c for c in cases if c.key in opts.cases]

    results = {}
    for c in cases:
        t0 = time.perf_counter()
        ref = case_defs.check(c)
        results[c.key] = time_case(c, ref, opts)
        print(f"  {c.key}: checked and timed in {time.perf_counter() - t0:.1f} s")

    report = Report()
    # -- table 1: value + gradient
    rows = []
    for c in cases:
        r = results[c.key]
        ratio = r["tg_vg"] / r["hand_vg"]
        rows.append((c.label + ", from Python", fmt_time(r["tg_vg"]), fmt_time(r["hand_vg"]), f"{ratio:.2f}×",
                     verdict(ratio, c.goal), fmt_time(r["dispatcher"]), f"{r['dispatcher'] / r['hand_vg']:.2f}×"))
        if c.scalar:
            ratio = r["loop_tg_vg"] / r["loop_hand_vg"]
            rows.append((c.label + ", inside an njit loop", fmt_time(r["loop_tg_vg"]), fmt_time(r["loop_hand_vg"]),
                         f"{ratio:.2f}×", verdict(ratio, c.loop_goal), "–", "–"))
    notes = [f"Medians of {opts.rounds} interleaved rounds, per call, in {harness.CLOCK_NAME}. "
             "'from Python' includes the Python "
             "loop driving the calls; '.dispatcher' calls tracegrad's compiled Numba function directly "
             "(no wrapper)."]
    notes += [f"{c.label}: {c.note}" for c in cases if c.note]
    report.table("Value + gradient: tracegrad vs hand-written Numba",
                 ("case", "tracegrad", "hand-written Numba", "ratio", "goal", ".dispatcher", "ratio"), rows, notes)

    # -- table 2: cheap-gradient ratio
    rows = []
    for c in cases:
        r = results[c.key]
        variants = [("", "tg_fwd", "tg_vg", "hand_fwd", "hand_vg")]
        if c.scalar:
            variants.append((" (njit loop)", "loop_tg_fwd", "loop_tg_vg", "loop_hand_fwd", "loop_hand_vg"))
        for suffix, tf, tv, hf, hv in variants:
            ratio = r[tv] / r[tf]
            rows.append((c.label + suffix, fmt_time(r[tf]), fmt_time(r[tv]), f"{ratio:.2f}", verdict(ratio, 3),
                         fmt_time(r[hf]), fmt_time(r[hv]), f"{r[hv] / r[hf]:.2f}"))
    report.table("Cheap-gradient ratio: value+gradient time / forward time",
                 ("case", "tracegrad forward (jit)", "tracegrad v+g", "ratio", "goal",
                  "hand forward", "hand v+g", "hand ratio"), rows,
                 ["Forward-only is tg.jit of the same function; 'from Python' rows include the call overhead."])

    # -- table 3: peers
    peer_names = [p for p in case_defs.PEERS if any(p in results[c.key] for c in cases)]
    if peer_names:
        rows = []
        for c in cases:
            r = results[c.key]
            cells = [c.label, fmt_time(r["hand_vg"]), f"{fmt_time(r['tg_vg'])} ({r['tg_vg'] / r['hand_vg']:.2f}×)"]
            for p in peer_names:
                cells.append(f"{fmt_time(r[p])} ({r[p] / r['hand_vg']:.1f}×)" if p in r else "–")
            rows.append(cells)
        report.table("Value + gradient from Python, against the peers (ratio to hand-written Numba)",
                     ("case", "hand-written Numba", "tracegrad", *peer_names), rows,
                     ["Same interleaved rounds as above. JAX: jax.jit(jax.value_and_grad), arrays placed on "
                      "the device once, block_until_ready; PyTorch: eager autograd.grad, one thread; autograd: "
                      "value_and_grad. Scalar cases pass Python floats to every library."])
    else:
        print("\n(no JAX / PyTorch / autograd installed: peer table skipped)")

    if not opts.no_subprocess:
        # -- table 4: first call
        t0 = time.perf_counter()
        lat = first_call_latency(latency_rounds, with_jax=jax_installed() and not opts.no_peers and not opts.quick,
                                 new_function=not opts.quick)
        rows = []
        goals = {("tracegrad", "cold"): 1.5, ("tracegrad", "warm"): 0.15}
        labels = {"tracegrad": "tracegrad value_and_grad", "hand": "hand-written Numba (cache=True)",
                  "jax": "JAX jit (persistent cache)"}
        med = lambda runs, field: statistics.median(x[field] for x in runs)  # noqa: E731
        for (impl, state), runs in lat.items():
            first, first_cpu = med(runs, "first_s"), med(runs, "first_cpu_s")
            goal = goals.get((impl, state))
            status = "–" if goal is None else (f"≤ {goal} s " + ("met" if first_cpu <= goal else
                                                                  f"MISSED by {first_cpu / goal:.1f}×"))
            prepare = f"{med(runs, 'prepare_cpu_s'):.3f} s" if impl == "tracegrad" else "–"
            rows.append((f"{labels[impl]}, {state}", f"{first_cpu:.3f} s", f"{first:.3f} s", prepare,
                         f"{med(runs, 'import_cpu_s'):.2f} s", fmt_time(med(runs, "second_s") * 1e9), status))
        report.table(f"First call of the MLP step ({LATENCY_CASE}) in a fresh process",
                     ("implementation, cache", "first call (CPU)", "(wall)", "of which specialize() (CPU)",
                      "imports before it (CPU)", "second call (wall)", "goal"), rows,
                     (["--quick: only warm first calls, using the caches this run has just filled (run "
                       "without --quick for the cold ones)."] if not latency_rounds else []) +
                     [f"Medians of {max(latency_rounds, 1)} round(s) of fresh processes "
                      f"({time.perf_counter() - t0:.0f} s). cold: empty TRACEGRAD_CACHE_DIR and NUMBA_CACHE_DIR "
                      "(tracegrad's own Numba kernels compile too); warm: a second process with the same "
                      "directories; new function: an empty TRACEGRAD_CACHE_DIR with tracegrad's kernels "
                      "already in Numba's cache. 'first call' = specialize() (trace, autodiff, passes, codegen, "
                      "writing and importing the generated module), then Numba's compile or cache load (of "
                      "the generated function and the kernels it imports) and the run. "
                      "Goals are checked against CPU time (the wall time includes waiting for other "
                      "processes on this shared machine)."])

        # -- table 5: memory
        keys = [c.key for c in cases if not c.scalar]
        if keys:
            mem = peak_memory(keys, memory_repeats)
            rows = []
            for c in cases:
                if c.key not in mem:
                    continue
                m = mem[c.key]
                small = max(m["tracegrad"], m["hand"]) < 128 * 1024
                ratio = "–" if small or not m["hand"] else f"{m['tracegrad'] / m['hand']:.2f}×"
                rows.append((c.label, "< 128 KiB" if small else fmt_bytes(m["tracegrad"]),
                             "< 128 KiB" if small else fmt_bytes(m["hand"]), ratio, fmt_bytes(m["outputs"]),
                             m["tracegrad_allocs"] if m["tracegrad_allocs"] is not None else "–",
                             m["hand_allocs"] if m["hand_allocs"] is not None else "–"))
            report.table("Peak memory of one value+gradient call",
                         ("case", "tracegrad peak", "hand-written peak", "ratio", "outputs",
                          "tracegrad arrays/call", "hand arrays/call"), rows,
                         [f"Growth of the resident set during one call (outputs included), median of "
                          f"{memory_repeats}, in a subprocess with MALLOC_MMAP_THRESHOLD_=4096 and "
                          "TRACEGRAD_TUNE_MALLOC=0 so that freed arrays leave the resident set (tracemalloc "
                          "cannot see Numba's allocations). "
                          "Resolution ~64 KiB: peaks under 128 KiB are not shown. 'arrays/call' counts "
                          "Numba runtime allocations (NUMBA_NRT_STATS=1), exact at any size. Scalar cases "
                          "allocate nothing."])

    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if opts.markdown:
        with open(opts.markdown, "w", encoding="utf-8") as f:
            f.write(f"machine: {machine}\n\n")
            f.write(report.markdown())
        print(f"tables written to {opts.markdown}")


if __name__ == "__main__":
    sys.exit(main())
