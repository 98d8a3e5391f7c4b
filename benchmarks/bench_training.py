"""Benchmark: training the digits MLP with ``tg.fit`` against a hand-written Numba training loop.

The model is the one of examples/train_digits.py: 64-128-10, ReLU, softmax cross-entropy, SGD with
momentum 0.9, learning rate 0.05, batch 32, on scikit-learn's 8x8 digits (1437 training images, so
45 steps per epoch, the last one of 29 images). Both contenders do the same math on the same data from the
same initial parameters, with the same shuffle (splitmix64-driven Fisher-Yates, seed 0):

- ``tg.fit``: the loss written in plain NumPy with ``tg.nn``; tracegrad differentiates it and runs each
  epoch as one compiled function;
- hand-written: one ``@numba.njit`` function per epoch with the forward and backward pass derived by hand
  (dlogits = softmax - onehot), the same momentum update and the same finiteness checks.

Each round trains one epoch with each (alternating which goes first), continuing from where that
contender's previous epoch stopped; the table shows the median over rounds of the time of the compiled
epoch function, per step (``compile="wait"``: from a cold cache the default would time NumPy epochs). Both then report the test accuracy they reached. If PyTorch or JAX are
importable, extra rows time the same training written the usual way for them: a Python loop over the
shuffled minibatches, eager PyTorch (zero_grad, forward, backward, SGD step) or one jax.jit step per
minibatch; the median epoch, per step.

Goal: tg.fit <= 1.2x the hand-written loop, and >= 10x faster than PyTorch eager per step at batch 32.

Then whole runs of 20 epochs, as a user calls them: ``tg.fit(..., epochs=20)`` (its eager first loss,
set-up, the epochs and the History) against the same 20 epochs hand-written in one ``@numba.njit``
function (``hand_train``), process CPU time of the call, medians. Goal (issue #12): <= 1.1x. A third
contender, ``hand_train`` checking finiteness as ``tg.fit``'s epoch does (counting the gradient elements
that are not finite instead of summing them), tells that check's share of the ratio from the rest.

BLAS runs on one thread (OPENBLAS_NUM_THREADS=1 unless you set it): the matrices are at most 64x128,
too small to share out, and with OpenBLAS's default thread pool spinning after NumPy's larger calls,
the timings of a loop on this 2-core machine swung by 3x from one run to the next.

    python benchmarks/bench_training.py            # about 10 s once compiled
    python benchmarks/bench_training.py --quick

Without scikit-learn, a synthetic data set of the same shape stands in for the digits.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before NumPy loads its BLAS: see the docstring

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402

SIZES = [64, 128, 10]
LR, MOMENTUM, BATCH, SEED = 0.05, 0.9, 32, 0
WHOLE_EPOCHS = 20


def load_data():
    """(X_train, y_train, X_test, y_test, name): digits scaled to [0, 1], 80/20 split, fixed seed."""
    try:
        from sklearn.datasets import load_digits
        digits = load_digits()
        X, y, name = digits.data / 16.0, digits.target.astype(np.int64), "scikit-learn digits"
    except ImportError:
        rng = np.random.default_rng(1)
        centres = rng.random((10, 64))
        y = rng.integers(0, 10, 1797)
        X, name = np.clip(centres[y] + 0.3 * rng.standard_normal((1797, 64)), 0, 1), "synthetic digits-shaped data"
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1437], order[1437:]
    return X[train], y[train], X[test], y[test], name


def loss(params, X, y):
    return nn.softmax_cross_entropy(nn.mlp(params, X), y)


# ------------------------------------------------------------------------------ the hand-written loop

@numba.njit(cache=True)
def hand_epoch(W0, b0, W1, b1, X, y, vW0, vb0, vW1, vb1, perm, rng_state, lr, momentum, batch_size, count=False):
    """One epoch: shuffle, then per minibatch forward, backward by hand, momentum SGD. Returns the summed loss.

    Written as a careful Numba programmer would: matrix products through BLAS, the softmax and its
    gradient (softmax - onehot) / m as scalar loops without temporaries, updates fused in one loop. The
    check that the loss and gradients are finite sums the gradients (``np.isfinite(dW0.sum() + ...)``), or
    with ``count`` counts their elements that are not finite, as ``tg.fit``'s epoch does (a sum of
    integers, which LLVM vectorises, where a sum of floats is a chain of dependent additions).
    """
    n, classes = perm.shape[0], W1.shape[1]
    for i in range(n):
        perm[i] = i
    rng = rng_state[0]
    for i in range(n - 1, 0, -1):  # the same shuffle as tg.fit's
        rng += np.uint64(0x9E3779B97F4A7C15)
        z = (rng ^ (rng >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        j = np.int64(z % np.uint64(i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    rng_state[0] = rng
    total = 0.0
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        xb = np.empty((m, X.shape[1]))
        yb = np.empty(m, np.int64)
        for k in range(m):
            xb[k] = X[perm[start + k]]
            yb[k] = y[perm[start + k]]
        h = xb @ W0 + b0
        a = np.maximum(h, 0.0)
        s = a @ W1 + b1
        ds = np.empty_like(s)
        loss = 0.0
        for i in range(m):
            row_max = s[i, 0]
            for c in range(1, classes):
                row_max = max(row_max, s[i, c])
            z = 0.0
            for c in range(classes):
                e = np.exp(s[i, c] - row_max)
                ds[i, c] = e
                z += e
            loss += np.log(z) + row_max - s[i, yb[i]]
            for c in range(classes):
                ds[i, c] /= z * m
            ds[i, yb[i]] -= 1.0 / m
        loss /= m
        dW1 = a.T @ ds
        db1 = ds.sum(axis=0)
        dh = ds @ W1.T
        for i in range(m):
            for j in range(dh.shape[1]):
                if h[i, j] <= 0.0:
                    dh[i, j] = 0.0
        dW0 = xb.T @ dh
        db0 = dh.sum(axis=0)
        if count:
            bad = 0
            for g in (dW0.reshape(-1), db0, dW1.reshape(-1), db1):
                for i in range(g.shape[0]):
                    bad += not np.isfinite(g[i])
            finite = np.isfinite(loss) and bad == 0
        else:
            finite = np.isfinite(loss) and np.isfinite(dW0.sum() + db0.sum() + dW1.sum() + db1.sum())
        if not finite:
            return np.nan
        for p, g, v in ((W0.reshape(-1), dW0.reshape(-1), vW0.reshape(-1)),
                        (W1.reshape(-1), dW1.reshape(-1), vW1.reshape(-1)), (b0, db0, vb0), (b1, db1, vb1)):
            for i in range(p.shape[0]):
                v[i] = momentum * v[i] + g[i]
                p[i] -= lr * v[i]
        total += loss * m
    return total


@numba.njit(cache=True)
def hand_train(W0, b0, W1, b1, X, y, vW0, vb0, vW1, vb1, perm, rng_state, lr, momentum, batch_size, epochs, losses,
               count=False):
    """The whole training run in one compiled call: ``epochs`` epochs of ``hand_epoch``, each epoch's mean loss
    written to ``losses``."""
    for epoch in range(epochs):
        losses[epoch] = hand_epoch(W0, b0, W1, b1, X, y, vW0, vb0, vW1, vb1, perm, rng_state, lr, momentum,
                                   batch_size, count) / X.shape[0]


def whole_runs(start, X, y, optimizer, epochs, repeats):
    """Medians of ``repeats`` whole training runs of ``epochs`` epochs from ``start``, process CPU time of the
    call (everything runs on one thread; CPU time is what a shared machine's load moves least), alternating:
    ``tg.fit(..., epochs=epochs)`` (all it does: the eager first loss, set-up, the epochs, History) and
    ``hand_train``, the same run hand-written in one ``@numba.njit`` function; and ``hand_train`` checking
    finiteness as ``tg.fit`` does (``count``), to tell that check's share from the rest."""
    times = {"tg.fit": [], "hand-written Numba": [], "hand-written, counting": []}
    for r in range(repeats):
        def fit_run():
            t = time.process_time()
            tg.fit(loss, start, (X, y), optimizer=optimizer, batch_size=BATCH, epochs=epochs, seed=SEED,
                   progress=False, compile="wait")
            return time.process_time() - t

        def hand_run(count=False):
            arrays = [start[k].copy() for k in ("W0", "b0", "W1", "b1")]
            velocity = [np.zeros_like(a) for a in arrays]
            t = time.process_time()
            hand_train(*arrays, X, y, *velocity, np.arange(len(X)), np.array([SEED], np.uint64), LR, MOMENTUM, BATCH,
                       epochs, np.zeros(epochs), count)
            return time.process_time() - t

        order = [("tg.fit", fit_run), ("hand-written Numba", hand_run),
                 ("hand-written, counting", lambda: hand_run(True))]
        for name, run in (order if r % 2 == 0 else order[::-1]):
            times[name].append(run())
    return {name: statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------------------ optional competitors

def torch_step_time(params, X, y, epochs, threads=1):
    """Seconds per step of the same training in eager PyTorch (shuffle, gather, step in a Python loop), or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    ps = [torch.tensor(params[k], requires_grad=True) for k in ("W0", "b0", "W1", "b1")]
    opt = torch.optim.SGD(ps, lr=LR, momentum=MOMENTUM)
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def epoch():
        perm = torch.randperm(len(X))
        for start in range(0, len(X), BATCH):
            rows = perm[start:start + BATCH]
            opt.zero_grad()
            logits = torch.relu(Xt[rows] @ ps[0] + ps[1]) @ ps[2] + ps[3]
            torch.nn.functional.cross_entropy(logits, yt[rows]).backward()
            opt.step()
    return _median_epoch(epoch, epochs) / -(-len(X) // BATCH)


def jax_step_time(params, X, y, epochs):
    """Seconds per step of the same training with a jax.jit step (shuffle and gather outside it), or None."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def jloss(p, xb, yb):
        logits = jnp.maximum(xb @ p["W0"] + p["b0"], 0) @ p["W1"] + p["b1"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(xb.shape[0]), yb])

    @jax.jit
    def step(p, v, xb, yb):
        g = jax.grad(jloss)(p, xb, yb)
        v = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, v, g)
        return jax.tree_util.tree_map(lambda p, v: p - LR * v, p, v), v
    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}
    state["v"] = jax.tree_util.tree_map(jnp.zeros_like, state["p"])
    rng = np.random.default_rng(SEED)

    def epoch():
        perm = rng.permutation(len(X))
        p, v = state["p"], state["v"]
        for start in range(0, len(X), BATCH):
            rows = perm[start:start + BATCH]
            p, v = step(p, v, X[rows], y[rows])
        jax.block_until_ready(p)
        state.update(p=p, v=v)
    return _median_epoch(epoch, epochs) / -(-len(X) // BATCH)


def _median_epoch(epoch, epochs):
    epoch()  # warm up (compiles the jitted step for both batch sizes)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------ main

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{platform.platform()} | {cpu} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
            f"numpy {np.__version__} | numba {numba.__version__} | tracegrad {tg.__version__}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--epochs", type=int, default=None, help="rounds (epochs per contender)")
    opts = parser.parse_args(argv)
    rounds = opts.epochs or (10 if opts.quick else 30)

    X, y, X_test, y_test, data_name = load_data()
    print("machine:", machine())
    print(f"data: {data_name}, {len(X)} training / {len(X_test)} test images; model {'-'.join(map(str, SIZES))}, "
          f"ReLU, softmax cross-entropy, SGD lr {LR} momentum {MOMENTUM}, batch {BATCH}; {rounds} epochs each")

    start = nn.init_mlp(SIZES, rng=SEED)
    steps = -(-len(X) // BATCH)
    optimizer = tg.optim.SGD(lr=LR, momentum=MOMENTUM)

    # tg.fit, one epoch per call, resuming its own parameters, optimiser state and shuffle stream
    t0 = time.perf_counter()
    fit_params, history = tg.fit(loss, start, (X, y), optimizer=optimizer, batch_size=BATCH, epochs=0,
                                 seed=SEED, progress=False, compile="wait")
    fit_state = {"params": fit_params, "state": history.state, "seed": SEED}
    print(f"tg.fit compiled (or loaded from the cache) in {time.perf_counter() - t0:.1f} s")

    def fit_epoch():
        p, h = tg.fit(loss, fit_state["params"], (X, y), optimizer=optimizer, batch_size=BATCH, epochs=1,
                      seed=fit_state["seed"], state=fit_state["state"], progress=False, compile="wait")
        fit_state.update(params=p, state=h.state, seed=h.seed)
        return h.time[0], h.loss[0]

    # the hand-written loop, with its own copies
    hand = {k: v.copy() for k, v in start.items()}
    velocity = {k: np.zeros_like(v) for k, v in start.items()}
    perm, rng_state = np.arange(len(X)), np.array([SEED], dtype=np.uint64)

    def hand_epoch_timed():
        t = time.perf_counter()
        total = hand_epoch(hand["W0"], hand["b0"], hand["W1"], hand["b1"], X, y, velocity["W0"], velocity["b0"],
                           velocity["W1"], velocity["b1"], perm, rng_state, LR, MOMENTUM, BATCH)
        return time.perf_counter() - t, total / len(X)

    t0 = time.perf_counter()
    hand_epoch(*(np.zeros_like(a) for a in (hand["W0"], hand["b0"], hand["W1"], hand["b1"])), X, y,
               *(np.zeros_like(velocity[k]) for k in ("W0", "b0", "W1", "b1")), np.arange(len(X)),
               np.array([0], np.uint64), 0.0, 0.0, BATCH)
    print(f"hand-written loop compiled (or loaded from the cache) in {time.perf_counter() - t0:.1f} s")

    times = {"tg.fit": [], "hand-written Numba": []}
    losses = {"tg.fit": [], "hand-written Numba": []}
    for r in range(rounds):
        order = [("tg.fit", fit_epoch), ("hand-written Numba", hand_epoch_timed)]
        for name, run in (order if r % 2 == 0 else order[::-1]):
            seconds, epoch_loss = run()
            times[name].append(seconds)
            losses[name].append(epoch_loss)

    accuracy = {
        "tg.fit": nn.accuracy(nn.mlp(fit_state["params"], X_test), y_test),
        "hand-written Numba": nn.accuracy(nn.mlp(hand, X_test), y_test),
    }
    per_step = {name: statistics.median(t) / steps * 1e6 for name, t in times.items()}
    base = per_step["hand-written Numba"]
    rows = [(name, per_step[name], per_step[name] / base, f"{losses[name][-1]:.4f}", f"{accuracy[name]:.4f}")
            for name in times]
    others = [("PyTorch eager, 1 thread", torch_step_time),
              (f"PyTorch eager, {os.cpu_count()} threads", lambda *a: torch_step_time(*a, threads=os.cpu_count() or 1)),
              ("JAX, a jitted step per batch", jax_step_time)]
    for name, fn in others:
        try:
            seconds = fn(start, X, y, 3 if opts.quick else 10)
        except Exception as exc:  # installed but broken: report and go on
            print(f"({name} skipped: {type(exc).__name__}: {exc})")
            seconds = None
        if seconds is not None:
            rows.append((name, seconds * 1e6, seconds * 1e6 / base, "", ""))

    header = ("contender", "us/step", "vs hand-written", "last epoch loss", "test accuracy")
    table = [header] + [(n, f"{us:.1f}", f"{ratio:.2f}x", lo, acc) for n, us, ratio, lo, acc in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print()
    ratio = per_step["tg.fit"] / base
    print(f"medians over {rounds} epochs of {steps} steps. tg.fit / hand-written = {ratio:.2f}x "
          f"(goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")
    torch_rows = [us for name, us, *_ in rows if name.startswith("PyTorch")]
    if torch_rows:
        speedup = min(torch_rows) / per_step["tg.fit"]
        print(f"PyTorch eager (its faster setting) / tg.fit = {speedup:.1f}x (goal >= 10x: "
              f"{'met' if speedup >= 10 else 'NOT met'})")
    print()
    hand_train(*(np.zeros_like(start[k]) for k in ("W0", "b0", "W1", "b1")), X, y,
               *(np.zeros_like(start[k]) for k in ("W0", "b0", "W1", "b1")), np.arange(len(X)),
               np.array([0], np.uint64), 0.0, 0.0, BATCH, 1, np.zeros(1), False)  # compiled (or loaded) before timing
    repeats = 7 if opts.quick else 15
    whole = whole_runs(start, X, y, optimizer, WHOLE_EPOCHS, repeats)
    ratio = whole["tg.fit"] / whole["hand-written Numba"]
    print(f"whole runs of {WHOLE_EPOCHS} epochs, process CPU time of the call, medians of {repeats}: "
          f"tg.fit {whole['tg.fit'] * 1e3:.1f} ms, hand-written in one @njit function "
          f"{whole['hand-written Numba'] * 1e3:.1f} ms: {ratio:.2f}x (goal <= 1.1x: {'met' if ratio <= 1.1 else 'NOT met'}); "
          f"hand-written checking finiteness as tg.fit does (counting) {whole['hand-written, counting'] * 1e3:.1f} ms: "
          f"{whole['tg.fit'] / whole['hand-written, counting']:.2f}x")
    gap = abs(losses["tg.fit"][-1] - losses["hand-written Numba"][-1])
    print(f"same math: last-epoch losses differ by {gap:.2e}; test accuracies {accuracy['tg.fit']:.4f} and "
          f"{accuracy['hand-written Numba']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
