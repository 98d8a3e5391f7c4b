"""Benchmark: per-example gradients of the MLP (64-128-10, ReLU, softmax cross-entropy, float32) over a
batch of 32, ``tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0))``, against the batch gradient.

The goal of issue #14: per-example gradients cost at most 1.5x the batch gradient's time x (what JAX's
``vmap(grad)`` costs relative to its own batch gradient), i.e. tracegrad's ratio (per-example / batch)
within 1.5x of JAX's ratio, both measured in the same rounds.

Rows, each one call from Python, medians over interleaved rounds (``harness.interleaved``):

- hand-written Numba: the batch gradient (``cases.mlp_hand_vg``) and per-example gradients written out
  (one loop over the examples, each example's gradient as outer products), the baseline;
- tracegrad: ``tg.grad(batch_loss)`` and ``tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0))``;
- JAX (optional, when installed): ``jax.jit(jax.grad(batch_loss))`` and ``jax.jit(jax.vmap(jax.grad(
  example_loss), in_axes=(None, 0, 0)))``.

Every result is checked against the hand-written one first. The machine is shared (2 cores, others
compiling and testing): only ratios within one run mean anything. Run from the repository root:

    PYTHONPATH=. python benchmarks/bench_vmap.py [--batch 32] [--rounds 15] [--wall]
"""
from __future__ import annotations

import argparse

import harness  # noqa: F401  (one thread for BLAS, set before NumPy is imported)
import numba
import numpy as np

import cases
import tracegrad as tg
from harness import calibrate, fmt_time, interleaved, machine, time_batch, use_wall_clock


def example_loss(p, x, label):
    """The MLP's loss on one example (x of shape (64,), an integer label)."""
    h = np.maximum(x @ p["W1"] + p["b1"], 0.0)
    logits = h @ p["W2"] + p["b2"]
    z = logits - np.max(logits)
    logp = z - np.log(np.sum(np.exp(z)))
    return -logp[label]


def batch_loss(p, X, y):
    return cases.mlp_loss(p["W1"], p["b1"], p["W2"], p["b2"], X, y)


@numba.njit(cache=True)
def hand_per_example(W1, b1, W2, b2, X, y):
    """Each example's gradient, by hand: d loss / d logits = softmax - onehot, then outer products."""
    n, d_in = X.shape
    hidden, classes = W2.shape
    gW1 = np.empty((n, d_in, hidden), W1.dtype)
    gb1 = np.empty((n, hidden), W1.dtype)
    gW2 = np.empty((n, hidden, classes), W1.dtype)
    gb2 = np.empty((n, classes), W1.dtype)
    for i in range(n):
        h = X[i] @ W1 + b1
        for j in range(hidden):
            h[j] = max(h[j], 0)
        logits = h @ W2 + b2
        e = np.exp(logits - logits.max())
        d = e / e.sum()
        d[y[i]] -= 1
        dh = W2 @ d
        for j in range(hidden):
            if h[j] <= 0:
                dh[j] = 0
        gb2[i] = d
        gb1[i] = dh
        for j in range(hidden):
            gW2[i, j] = h[j] * d
        for k in range(d_in):
            gW1[i, k] = X[i, k] * dh
    return gW1, gb1, gW2, gb2


def jax_functions(params, X, y):
    """(batch gradient, per-example gradients) as functions of the same arguments returning NumPy arrays,
    or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def jloss(p, x, label):
        h = jnp.maximum(x @ p["W1"] + p["b1"], 0.0)
        logits = h @ p["W2"] + p["b2"]
        z = logits - jnp.max(logits)
        return -(z - jnp.log(jnp.sum(jnp.exp(z))))[label]

    def jbatch(p, X, y):
        h = jnp.maximum(X @ p["W1"] + p["b1"], 0.0)
        logits = h @ p["W2"] + p["b2"]
        z = logits - jnp.max(logits, axis=1, keepdims=True)
        logp = z - jnp.log(jnp.sum(jnp.exp(z), axis=1, keepdims=True))
        return -jnp.mean(logp[jnp.arange(X.shape[0]), y])

    batch = jax.jit(jax.grad(jbatch))
    per = jax.jit(jax.vmap(jax.grad(jloss), in_axes=(None, 0, 0)))
    dev = ({k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(X), jnp.asarray(y))

    def run(fn):
        return lambda *_: {k: np.asarray(v) for k, v in fn(*dev).items()}  # np.asarray waits for the result
    return run(batch), run(per)


def check(got: dict, expected: dict, what: str):
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=2e-4, atol=2e-6, err_msg=f"{what}: {k}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--wall", action="store_true")
    args = parser.parse_args()
    if args.wall:
        use_wall_clock()
    W1, b1, W2, b2, X, y = cases.mlp_args(args.batch, np.float32)
    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    names = ("W1", "b1", "W2", "b2")

    hand_batch = lambda p, X, y: dict(zip(names, cases.mlp_hand_vg(W1, b1, W2, b2, X, y)[1:]))
    hand_per = lambda p, X, y: dict(zip(names, hand_per_example(W1, b1, W2, b2, X, y)))
    tg_batch = tg.grad(batch_loss)
    tg_per = tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0))
    expected_batch, expected_per = hand_batch(params, X, y), hand_per(params, X, y)
    check(tg_batch(params, X, y), expected_batch, "tg.grad")
    check(tg_per(params, X, y), expected_per, "tg.vmap(tg.grad)")
    check({k: v.mean(axis=0) for k, v in expected_per.items()}, expected_batch, "hand-written per-example")
    pairs = {"hand-written Numba": (hand_batch, hand_per), "tracegrad": (tg_batch, tg_per)}
    found = jax_functions(params, X, y)
    if found is not None:
        check(found[0](), expected_batch, "JAX grad")
        check(found[1](), expected_per, "JAX vmap(grad)")
        pairs["JAX (jit)"] = found

    print(machine())
    a = (params, X, y)
    timers = {}
    for who, (batch, per) in pairs.items():
        for kind, fn in (("batch", batch), ("per-example", per)):
            n = calibrate(fn, a, 20e6)
            timers[(who, kind)] = lambda fn=fn, n=n: time_batch(fn, a, n)
    medians = interleaved(timers, args.rounds)
    base = medians[("hand-written Numba", "batch")]
    print(f"\nMLP 64-128-10 float32, batch {args.batch}: gradients of the mean loss (batch) and of each example's "
          f"loss (per-example), median of {args.rounds} rounds, ratios to the hand-written batch gradient")
    print(f"  {'':20s} {'batch':>10s} {'':>7s} {'per-example':>12s} {'':>7s} {'per-example / batch':>20s}")
    ratios = {}
    for who in pairs:
        b, p = medians[(who, "batch")], medians[(who, "per-example")]
        ratios[who] = p / b
        print(f"  {who:20s} {fmt_time(b):>10s} {b / base:6.2f}x {fmt_time(p):>12s} {p / base:6.2f}x {p / b:20.2f}")
    if "JAX (jit)" in ratios:
        goal = ratios["tracegrad"] / ratios["JAX (jit)"]
        print(f"\n  tracegrad's per-example / batch ratio over JAX's: {goal:.2f} (goal <= 1.5)")
    else:
        print("\nJAX is not installed: no JAX row (pip install jax for the comparison)")


if __name__ == "__main__":
    main()
