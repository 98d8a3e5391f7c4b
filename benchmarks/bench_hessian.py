"""Benchmark: the Hessian of the n-dimensional Rosenbrock function, and Hessian-vector products, in
forward-over-reverse and reverse-over-reverse mode.

    f(x) = sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2),   x of n = 100 entries

Rows, each one compiled function called from Python, times the median over interleaved rounds:

- ``jacrev(grad(f))``: ``tg.hessian`` until now, one reverse pass over the gradient per row, in one loop;
- ``jacfwd(grad(f))``: one tangent of the gradient per column, in one loop, the work that does not depend
  on the tangent (the value, the gradient's factors) done once before the loop (``forward.linearize_graph``);
- ``hvp`` forward over reverse (``tg.hvp``: the tangent of the gradient) against reverse over reverse
  (the gradient of <grad f, v>, as ``tg.hvp`` was computed before).

Both Hessians are checked equal first. Run from the repository root:

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
    np.testing.assert_allclose(hess_fwd(x), hess_rev(x), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hvp_fwd(x, v), hvp_rev(x, v), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(hvp_fwd(x, v), hess_rev(x) @ v, rtol=1e-10, atol=1e-8)

    print(machine())
    for title, cases in [
        (f"Hessian of Rosenbrock, n = {args.n}", {"jacrev(grad(f))": (hess_rev, (x,)),
                                                  "jacfwd(grad(f))": (hess_fwd, (x,))}),
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


if __name__ == "__main__":
    main()
