"""Benchmark: the Hessian of the n-dimensional Rosenbrock function, and Hessian-vector products, in
forward-over-reverse and reverse-over-reverse mode.

    f(x) = sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2),   x of n = 100 entries

Rows, each one compiled function called from Python, times the median over interleaved rounds:

- ``jacrev(grad(f))``: ``tg.hessian`` until now, one reverse pass over the gradient per row, in one loop;
- ``jacfwd(grad(f))``: one tangent of the gradient per column, in one loop, the work that does not depend
  on the tangent (the value, the gradient's factors) done once before the loop (``forward.linearize_graph``);
- ``hvp`` forward over reverse (``tg.hvp``: the tangent of the gradient) against reverse over reverse
  (the gradient of <grad f, v>, as ``tg.hvp`` was computed before).

The Hessian table's first row is a hand-written NumPy Hessian (Rosenbrock's is tridiagonal: its diagonals
written out), the baseline of the ratios; when JAX is installed (an optional comparison, not a dependency)
``jax.jit(jax.hessian(f))`` in float64 is measured in the same rounds, and the goal of issue #14, tracegrad's
compiled Hessian within 2x of JAX's, is printed as the ratio of the two. Every Hessian is checked against
the hand-written one first. Run from the repository root:

    PYTHONPATH=. python benchmarks/bench_hessian.py [--n 100] [--rounds 15] [--wall]
"""
from __future__ import annotations

import argparse

import harness  # noqa: F401  (one thread for BLAS, set before NumPy is imported)
import numpy as np

import tracegrad as tg
from harness import calibrate, fmt_time, interleaved, machine, time_batch, use_wall_clock


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def hessian_by_hand(x):
    """Rosenbrock's Hessian written out: f = sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2."""
    n = x.shape[0]
    h = np.zeros((n, n))
    d = np.zeros(n)
    d[:-1] += 1200.0 * x[:-1] ** 2 - 400.0 * x[1:] + 2.0
    d[1:] += 200.0
    off = -400.0 * x[:-1]
    h[np.arange(n), np.arange(n)] = d
    h[np.arange(n - 1), np.arange(1, n)] = off
    h[np.arange(1, n), np.arange(n - 1)] = off
    return h


def jax_hessian():
    """``jax.jit(jax.hessian(rosenbrock))`` in float64 (returning a NumPy array), or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    hess = jax.jit(jax.hessian(lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)))
    return lambda x: np.asarray(hess(x))  # (np.asarray waits for the result)


def hvp_reverse_over_reverse(x, v):
    return tg.grad(lambda x: np.sum(tg.grad(rosenbrock)(x) * v))(x)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--wall", action="store_true")
    args = parser.parse_args()
    if args.wall:
        use_wall_clock()
    rng = np.random.default_rng(0)
    x, v = rng.normal(size=args.n), rng.normal(size=args.n)

    hess_rev = tg.jacrev(tg.grad(rosenbrock))
    hess_fwd = tg.jacfwd(tg.grad(rosenbrock))
    hvp_fwd = tg.jit(lambda x, v: tg.hvp(rosenbrock, (x,), (v,))[0])
    hvp_rev = tg.jit(hvp_reverse_over_reverse)
    np.testing.assert_allclose(hess_fwd(x), hessian_by_hand(x), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hess_fwd(x), hess_rev(x), rtol=1e-12, atol=1e-9)
    hessians = {"hand-written NumPy": (hessian_by_hand, (x,)), "jacrev(grad(f))": (hess_rev, (x,)),
                "jacfwd(grad(f)) = tg.hessian": (hess_fwd, (x,))}
    jax_hess = jax_hessian()
    if jax_hess is not None:
        np.testing.assert_allclose(jax_hess(x), hessian_by_hand(x), rtol=1e-12, atol=1e-9)
        hessians["JAX jit(hessian(f))"] = (jax_hess, (x,))
    np.testing.assert_allclose(hvp_fwd(x, v), hvp_rev(x, v), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hvp_fwd(x, v), hess_rev(x) @ v, rtol=1e-10, atol=1e-8)

    print(machine())
    for title, cases in [
        (f"Hessian of Rosenbrock, n = {args.n}", hessians),
        (f"Hessian-vector product, n = {args.n}", {"reverse over reverse": (hvp_rev, (x, v)),
                                                   "forward over reverse (tg.hvp)": (hvp_fwd, (x, v))}),
    ]:
        batches = {name: calibrate(fn, a, 20e6) for name, (fn, a) in cases.items()}
        medians = interleaved({name: (lambda fn=fn, a=a, b=batches[name]: time_batch(fn, a, b))
                               for name, (fn, a) in cases.items()}, args.rounds)
        first = next(iter(medians.values()))
        print(f"\n{title} (median of {args.rounds} rounds)")
        for name, ns in medians.items():
            print(f"  {name:32s} {fmt_time(ns):>10s}   {ns / first:5.2f}x")
        if "JAX jit(hessian(f))" in medians:
            ratio = medians["jacfwd(grad(f)) = tg.hessian"] / medians["JAX jit(hessian(f))"]
            print(f"  tg.hessian / JAX jit(hessian): {ratio:.2f}x (goal <= 2x)")
    if jax_hess is None:
        print("\nJAX is not installed: no JAX row (pip install jax for the comparison)")


if __name__ == "__main__":
    main()
