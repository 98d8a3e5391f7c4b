"""Benchmark: the cost of calling compiled code from Python with pytrees, and of ``opt.update``.

Three tables, each from interleaved rounds (medians, process CPU time, see harness.py):

1. **pytree calls**: the MLP 64-128-10 step (batch 32, float32) with its parameters as a dict
   ``{"W1", "b1", "W2", "b2"}``, as a tuple, and as four flat arguments, against the hand-written Numba
   step of ``cases.py`` called with flat arguments. Goal: dict ≤ 1.15× flat.
2. **SGD step from Python**: the README's step, ``value, grads = vg(params, X, y)`` then
   ``opt.update(params, grads, state)`` (momentum 0.9), against one hand-written ``@numba.njit`` function
   doing the same (value and gradient by hand, then the momentum update). Goal: ≤ 1.3× at batch 32.
3. **malloc**: Rosenbrock n = 10⁵ and 10⁶ and the MLP step at batch 32 and 1024 (float32 and float64) in
   fresh processes, with glibc's malloc left alone and with ``TRACEGRAD_TUNE_MALLOC=1`` (what ``import
   tracegrad`` used to do by default), tracegrad and the hand-written code alike; and left alone without
   tracegrad's workspace (as before it had one), to compare in the same run.
4. **memory**: the resident set after compiling many shapes of one function, with and without the bound
   on live specialisations, and after ``del f``.
5. **dispatcher**: a user ``@numba.njit`` loop calling the MLP step at batch 1024 (float32 and float64)
   through ``.dispatcher`` (a new workspace at each call) and through ``workspace_dispatcher`` with
   buffers of its own (``new_workspace()``), against the hand-written step in the same kind of loop.

    python benchmarks/bench_calls.py            # about a minute once compiled
    python benchmarks/bench_calls.py --quick
    python benchmarks/bench_calls.py --only pytree,sgd,malloc,memory,dispatcher
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import harness  # noqa: E402  (sets one BLAS thread before NumPy loads)

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
import cases  # noqa: E402


def dict_loss(params, X, y):
    return cases.mlp_loss(params["W1"], params["b1"], params["W2"], params["b2"], X, y)


def tuple_loss(params, X, y):
    return cases.mlp_loss(*params, X, y)


@numba.njit(cache=True)
def _momentum(p, g, v, lr, momentum):
    for i in range(p.shape[0]):
        v[i] = momentum * v[i] + g[i]
        p[i] -= lr * v[i]


@numba.njit(cache=True)
def hand_sgd_step(W1, b1, W2, b2, X, y, vW1, vb1, vW2, vb2, lr, momentum):
    """The hand-written step: value and gradients derived by hand, then v = momentum v + g; p -= lr v."""
    loss, gW1, gb1, gW2, gb2 = cases.mlp_hand_vg(W1, b1, W2, b2, X, y)
    _momentum(W1.reshape(-1), gW1.reshape(-1), vW1.reshape(-1), lr, momentum)
    _momentum(b1, gb1, vb1, lr, momentum)
    _momentum(W2.reshape(-1), gW2.reshape(-1), vW2.reshape(-1), lr, momentum)
    _momentum(b2, gb2, vb2, lr, momentum)
    return loss


def batch_timer(fn, args, target_ns):
    n = harness.calibrate(fn, args, target_ns)
    return lambda: harness.time_batch(fn, args, n)


def pytree_table(report, rounds, target_ns):
    W1, b1, W2, b2, X, y = cases.mlp_args(32, np.float32)
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    flat = tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3))
    as_dict = tg.value_and_grad(dict_loss)
    as_tuple = tg.value_and_grad(tuple_loss)
    ref = cases.mlp_hand_vg(W1, b1, W2, b2, X, y)
    value, g = as_dict(params, X, y)
    assert np.allclose(value, ref[0], rtol=2e-4) and all(
        np.allclose(g[k], r, rtol=2e-4, atol=1e-6) for k, r in zip(("W1", "b1", "W2", "b2"), ref[1:]))
    value, g = as_tuple((W1, b1, W2, b2), X, y)
    assert all(np.allclose(a, r, rtol=2e-4, atol=1e-6) for a, r in zip(g, ref[1:]))
    flat(W1, b1, W2, b2, X, y)
    timers = {
        "hand-written Numba (flat)": batch_timer(cases.mlp_hand_vg, (W1, b1, W2, b2, X, y), target_ns),
        "tracegrad, flat arguments": batch_timer(flat, (W1, b1, W2, b2, X, y), target_ns),
        "tracegrad, dict of parameters": batch_timer(as_dict, (params, X, y), target_ns),
        "tracegrad, tuple of parameters": batch_timer(as_tuple, ((W1, b1, W2, b2), X, y), target_ns),
    }
    times = harness.interleaved(timers, rounds)
    base, hand = times["tracegrad, flat arguments"], times["hand-written Numba (flat)"]
    rows = [(name, harness.fmt_time(t), f"{t / hand:.2f}×", f"{t / base:.2f}×") for name, t in times.items()]
    report.table("MLP 64-128-10 step, batch 32 f32, from Python: pytree arguments",
                 ("arguments", "per call", "vs hand-written", "vs flat"), rows,
                 [f"Medians of {rounds} interleaved rounds, process CPU time. Goal: dict ≤ 1.15× flat."])
    return times["tracegrad, dict of parameters"] / base


def sgd_table(report, rounds, target_ns, batch=32):
    W1, b1, W2, b2, X, y = cases.mlp_args(batch, np.float32)
    params = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2.copy(), "b2": b2.copy()}
    hand = [a.copy() for a in (W1, b1, W2, b2)]
    velocities = [np.zeros_like(a) for a in hand]
    vg = tg.value_and_grad(dict_loss)
    opt = tg.optim.SGD(lr=1e-4, momentum=0.9)
    state = opt.init(params)

    def tg_step():
        value, grads = vg(params, X, y)
        opt.update(params, grads, state)
        return value

    def hand_step():
        return hand_sgd_step(*hand, X, y, *velocities, 1e-4, 0.9)

    for _ in range(3):  # the same steps from the same start agree
        a, b = tg_step(), hand_step()
    assert np.allclose(a, b, rtol=1e-4), (a, b)
    assert np.allclose(params["W1"], hand[0], rtol=1e-3, atol=1e-6)
    timers = {"hand-written Numba step": batch_timer(hand_step, (), target_ns),
              "tracegrad: vg + opt.update": batch_timer(tg_step, (), target_ns)}
    # on parameters of its own: the same gradient over and over drives them away from the others
    alone = {k: v.copy() for k, v in params.items()}
    grads = vg(alone, X, y)[1]
    timers["of which opt.update"] = batch_timer(opt.update, (alone, grads, opt.init(alone)), target_ns)
    times = harness.interleaved(timers, rounds)
    hand_t = times["hand-written Numba step"]
    rows = [(name, harness.fmt_time(t), f"{t / hand_t:.2f}×") for name, t in times.items()]
    report.table(f"SGD step (momentum) from Python, MLP 64-128-10 batch {batch} f32",
                 ("implementation", "per step", "vs hand-written"), rows,
                 [f"Medians of {rounds} interleaved rounds, process CPU time. Goal: ≤ 1.3× at batch 32."])
    return times["tracegrad: vg + opt.update"] / hand_t


def dispatcher_table(report, rounds, calls=20):
    rows = []
    for dtype in (np.float32, np.float64):
        args = cases.mlp_args(1024, dtype)
        compiled = tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3)).specialize(*args)
        assert not compiled.captured()
        dispatcher, kernel, buffers = compiled.dispatcher, compiled.workspace_dispatcher, compiled.new_workspace()

        @numba.njit
        def through_dispatcher(n, W1, b1, W2, b2, X, y):
            total = 0.0
            for _ in range(n):
                total += dispatcher(W1, b1, W2, b2, X, y)[0]
            return total

        @numba.njit
        def with_buffers(n, W1, b1, W2, b2, X, y, buffers):
            total = 0.0
            for _ in range(n):
                total += kernel(W1, b1, W2, b2, X, y, *buffers)[0]
            return total

        @numba.njit
        def hand(n, W1, b1, W2, b2, X, y):
            total = 0.0
            for _ in range(n):
                total += cases.mlp_hand_vg(W1, b1, W2, b2, X, y)[0]
            return total

        want = hand(2, *args)
        assert np.isclose(through_dispatcher(2, *args), want, rtol=1e-4)
        assert np.isclose(with_buffers(2, *args, buffers), want, rtol=1e-4)
        timers = {"hand-written": lambda: harness.time_batch(hand, (calls, *args), 1) / calls,
                  ".dispatcher": lambda: harness.time_batch(through_dispatcher, (calls, *args), 1) / calls,
                  "workspace_dispatcher + new_workspace()":
                      lambda: harness.time_batch(with_buffers, (calls, *args, buffers), 1) / calls}
        times = harness.interleaved(timers, rounds)
        base = times["hand-written"]
        rows += [(f"{np.dtype(dtype).name}, {len(buffers)} buffers", name, harness.fmt_time(t), f"{t / base:.2f}×")
                 for name, t in times.items()]
    report.table("MLP step batch 1024 from a user @njit loop: .dispatcher or buffers of its own",
                 ("case", "called through", "per call", "vs hand-written"), rows,
                 [f"Medians of {rounds} interleaved rounds of {calls} calls, process CPU time."])


MLP_CASES = [(32, np.float32), (32, np.float64), (1024, np.float32), (1024, np.float64)]
MALLOC_VARIANTS = {  # child mode -> (label, TRACEGRAD_TUNE_MALLOC, workspace)
    "plain": ("left alone (the default)", False, True),
    "tune": ("TRACEGRAD_TUNE_MALLOC=1", True, True),
    "plain-nows": ("left alone, no workspace (as before)", False, False),
}


def _malloc_child(rounds: int, target_ns: float, workspace: bool = True, group: str = "mlp") -> dict:
    """In a fresh process (``TRACEGRAD_TUNE_MALLOC`` set by the caller): tracegrad and hand-written on
    the MLP step at batch 32 and 1024, float32 and float64 (``group="mlp"``), or on Rosenbrock 10⁵ and
    10⁶ (``"rosen"``): not in one process, since Rosenbrock's 8 MB arrays, freed, raise glibc's
    thresholds for the rest of it. Without ``workspace``, codegen puts no temporaries in a workspace (as
    before it had one)."""
    if not workspace:
        tg.codegen.WORKSPACE_BYTES = 1 << 62
    timers, calls = {}, {}
    for batch, dtype in MLP_CASES if group == "mlp" else ():
        mlp = cases.mlp_args(batch, dtype)
        step = tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3))
        value, ref = step(*mlp)[0], cases.mlp_hand_vg(*mlp)[0]
        assert np.allclose(value, ref, rtol=1e-4), (value, ref)
        tag = f"mlp{batch}{np.dtype(dtype).name}"
        timers[f"{tag} tracegrad"] = batch_timer(step, mlp, target_ns)
        timers[f"{tag} hand"] = batch_timer(cases.mlp_hand_vg, mlp, target_ns)
        calls[f"{tag} tracegrad"], calls[f"{tag} hand"] = (step, mlp), (cases.mlp_hand_vg, mlp)
    rosen = tg.value_and_grad(cases.rosenbrock)
    for n in (100_000, 1_000_000) if group == "rosen" else ():
        x = np.random.default_rng(1).uniform(-2.0, 2.0, size=n)
        assert np.allclose(rosen(x)[0], cases.rosenbrock_hand_vg(x)[0])
        timers[f"rosen{n} tracegrad"] = batch_timer(rosen, (x,), target_ns)
        timers[f"rosen{n} hand"] = batch_timer(cases.rosenbrock_hand_vg, (x,), target_ns)
        calls[f"rosen{n} tracegrad"], calls[f"rosen{n} hand"] = (rosen, (x,)), (cases.rosenbrock_hand_vg, (x,))
    times = harness.interleaved(timers, rounds)
    for key, (fn, args) in calls.items():  # page faults per call: memory the OS maps in again at every call
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            fn(*args)
        times[f"{key} faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
    return times


def malloc_table(report, rounds, target_ns, pairs=4):
    """Fresh processes, malloc left alone and tuned (and, to compare, left alone without the workspace)
    in turn (``pairs`` of each, so that the machine's load hits all alike); each process times every case
    over ``rounds`` interleaved rounds."""
    samples = {mode: [] for mode in MALLOC_VARIANTS}
    for _ in range(pairs):
        for mode, (_, tune, _) in MALLOC_VARIANTS.items():
            merged = {}
            for group in ("mlp", "rosen"):
                out = subprocess.run([sys.executable, __file__, "--child", mode, "--group", group,
                                      "--rounds", str(rounds), "--target", str(target_ns)],
                                     capture_output=True, text=True, check=True,
                                     env=dict(os.environ, TRACEGRAD_TUNE_MALLOC="1" if tune else "0"))
                merged.update(json.loads(out.stdout.strip().splitlines()[-1]))
            samples[mode].append(merged)
    results = {mode: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for mode, runs in samples.items()}
    rows = []
    labels = [("rosen100000", "Rosenbrock n=100,000 f64"), ("rosen1000000", "Rosenbrock n=1,000,000 f64")]
    labels += [(f"mlp{b}{np.dtype(d).name}", f"MLP 64-128-10 step, batch {b} {np.dtype(d).name}")
               for b, d in MLP_CASES]
    for case, label in labels:
        for mode, (malloc, _, _) in MALLOC_VARIANTS.items():
            t, h = results[mode][f"{case} tracegrad"], results[mode][f"{case} hand"]
            base = results["tune"][f"{case} tracegrad"]
            faults = f"{results[mode][f'{case} tracegrad faults']:.0f} / {results[mode][f'{case} hand faults']:.0f}"
            rows.append((label, malloc, harness.fmt_time(t), harness.fmt_time(h), f"{t / h:.2f}×", f"{t / base:.2f}×",
                         faults))
    report.table("value and gradient from Python, glibc malloc left alone or tuned (a fresh process each)",
                 ("case", "malloc", "tracegrad", "hand-written", "ratio", "tracegrad vs tuned",
                  "page faults a call (tracegrad / hand)"), rows,
                 [f"Medians over {pairs} processes of each kind, run in turn, of the medians of {rounds} "
                  "interleaved rounds in each (the MLP and Rosenbrock in processes of their own), process CPU time. "
                  "'ratio' is against the hand-written code in "
                  "the same processes (malloc tuned or not alike); 'no workspace' sets "
                  "codegen.WORKSPACE_BYTES out of reach, as tracegrad was before it had one."])


def _memory_child(n_shapes: int, bound: int) -> dict:
    """In a fresh process: the resident set after compiling ``n_shapes`` shapes of one small gradient,
    then after ``del f``."""
    import gc
    import weakref

    def rss() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))

    f = tg.grad(lambda x: np.sum(np.sin(x) * x))
    f.max_specializations = bound
    f(np.ones(3))
    gc.collect()
    start = rss()
    for i in range(n_shapes):
        f(np.ones(10 + i))
    gc.collect()
    grown = rss() - start
    last = weakref.ref(f.specialize(np.ones(9 + n_shapes)).dispatcher)
    tg.backend._recent.clear()  # the backend's few most recent modules, kept on purpose
    del f
    gc.collect()
    return {"grown": grown, "after del": rss() - start, "freed": last() is None}


def memory_table(report, n_shapes):
    import tempfile
    rows = []
    for label, bound in (("unbounded (as before)", 10 ** 9), ("max_specializations = 32", 32)):
        with tempfile.TemporaryDirectory() as cache:  # cold: every shape compiles
            out = subprocess.run([sys.executable, __file__, "--child", "memory", "--shapes", str(n_shapes),
                                  "--bound", str(bound)], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, TRACEGRAD_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache))
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((label, min(bound, n_shapes), harness.fmt_bytes(r["grown"]),
                     harness.fmt_bytes(r["grown"] / n_shapes), harness.fmt_bytes(r["after del"]),
                     "yes" if r["freed"] else "no"))
    report.table(f"Resident memory after {n_shapes} shapes of one small gradient (a fresh process each, cold caches)",
                 ("specialisations", "kept", "grown", "per shape", "after del f", "last one freed"), rows,
                 ["RSS growth from /proc/self/status after gc.collect(); malloc keeps some freed memory, so "
                  "'after del f' overstates what is still in use."])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="pytree,sgd,malloc,memory")
    parser.add_argument("--shapes", type=int)
    parser.add_argument("--bound", type=int, default=64)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--target", type=float)
    parser.add_argument("--child", choices=(*MALLOC_VARIANTS, "memory"))
    parser.add_argument("--group", choices=("mlp", "rosen"), default="mlp")
    opts = parser.parse_args(argv)
    rounds = opts.rounds or (7 if opts.quick else 31)
    target_ns = opts.target or (2e6 if opts.quick else 1e7)
    if opts.child == "memory":
        print(json.dumps(_memory_child(opts.shapes, opts.bound)))
        return
    if opts.child:
        print(json.dumps(_malloc_child(rounds, target_ns, MALLOC_VARIANTS[opts.child][2], opts.group)))
        return
    print(harness.machine())
    report = harness.Report()
    only = opts.only.split(",")
    if "pytree" in only:
        pytree_table(report, rounds, target_ns)
    if "sgd" in only:
        sgd_table(report, rounds, target_ns)
    if "malloc" in only:
        malloc_table(report, max(5, rounds // 4), target_ns, pairs=2 if opts.quick else 4)
    if "memory" in only:
        memory_table(report, opts.shapes or (100 if opts.quick else 300))
    if "dispatcher" in only:
        dispatcher_table(report, rounds)


if __name__ == "__main__":
    main()
