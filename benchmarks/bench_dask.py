"""Benchmark: the gradient of a logistic loss over Dask arrays on a 2-worker LocalCluster, against the same
gradient in one process, and what a Dask task costs on this machine.

Two tables:

1. **gradient**: one value and gradient of the mean logistic loss of N rows x 20 features (float64; the
   data generated chunk by chunk on the workers by ``dask.array``'s random generator and kept there,
   then fetched whole into this process for the single-process rows), by
   - hand-written NumPy in this process (the baseline),
   - tracegrad's compiled ``tg.value_and_grad`` in this process,
   - ``tracegrad.distributed.value_and_grad`` on the cluster (2 worker processes, 1 thread each),
   - hand-written ``dask.array`` expressions on the cluster (what dask-glm does for this loss).
   Goal (issue 16): the distributed gradient within 1.3x of the single-process compiled one at 10^7 rows.
2. **Dask's overhead**: a round trip of one tiny task, the time per task of 1,000 tiny tasks, and
   scattering a parameter vector to both workers.

Times are **wall-clock** medians over interleaved rounds (the workers' CPU time is not this process's),
one BLAS thread per process (harness.py, inherited by the workers). The machine has 2 cores shared with
other engineers' jobs: compare ratios within one run.

    python benchmarks/bench_dask.py             # 10^7 rows x 20 (1.6 GB of data, twice: workers and here)
    python benchmarks/bench_dask.py --quick     # 10^6 rows
    python benchmarks/bench_dask.py --rows 4000000 --chunks 8 --rounds 9
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import harness  # noqa: E402  (sets one BLAS thread before NumPy loads)

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad import distributed  # noqa: E402

FEATURES = 20


def logistic(w, X, y):
    z = X @ w
    return np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - y * z)


def numpy_logistic(w, X, y):
    """The same value and gradient written by hand in NumPy."""
    z = X @ w
    value = np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - y * z)
    return value, X.T @ (1 / (1 + np.exp(-z)) - y) / len(y)


def dask_logistic(w, X, y):
    """The same by hand with dask.array expressions (as dask-glm writes its gradients), computed together."""
    import dask

    z = X @ w
    value = (np.log1p(np.exp(-abs(z))) + np.maximum(z, 0) - y * z).mean()
    grad = X.T @ (1 / (1 + np.exp(-z)) - y) / X.shape[0]
    return dask.compute(value, grad)


def _noop(x):
    return x


def wall(fn, *args) -> float:
    t0 = time.perf_counter_ns()
    fn(*args)
    return time.perf_counter_ns() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^6 rows, fewer rounds")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--chunks", type=int, default=8, help="row chunks (default 8: 4 per worker)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    rows = args.rows or (10**6 if args.quick else 10**7)
    rounds = args.rounds or (5 if args.quick else 9)
    harness.use_wall_clock()

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    report = harness.Report()
    print(harness.machine())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        chunk = -(-rows // args.chunks)
        rng = da.random.default_rng(0)
        X = rng.standard_normal((rows, FEATURES), chunks=(chunk, FEATURES))
        w_true = np.linspace(-1, 1, FEATURES)
        y = (rng.random(rows, chunks=chunk) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
        X, y = client.persist([X, y])
        wait([X, y])
        t0 = time.perf_counter()
        Xn, yn = dask.compute(X, y)  # the same data, whole, in this process
        fetch = time.perf_counter() - t0
        print(f"{rows} rows x {FEATURES} in {args.chunks} chunks of {chunk} rows ({Xn.nbytes / 2**30:.2f} GiB); "
              f"fetched into this process in {fetch:.1f} s")

        w = np.linspace(0.5, -0.5, FEATURES)
        local = tg.value_and_grad(logistic)
        spread = distributed.value_and_grad(logistic, reduction="mean")
        results = {"hand-written NumPy, one process": numpy_logistic(w, Xn, yn),
                   "tracegrad, one process": local(w, Xn, yn),
                   "tracegrad.distributed, 2 workers": spread(w, X, y),  # the first call compiles on the workers
                   "hand-written dask.array, 2 workers": dask_logistic(w, X, y)}
        base_value, base_grad = results["hand-written NumPy, one process"]
        errors = {}
        for name, (value, grad) in results.items():
            errors[name] = max(abs(value - base_value) / abs(base_value),
                               float(np.max(np.abs(grad - base_grad)) / np.max(np.abs(base_grad))))
        assert errors["tracegrad.distributed, 2 workers"] < 1e-12 or np.allclose(
            results["tracegrad.distributed, 2 workers"][1], results["tracegrad, one process"][1], rtol=1e-12, atol=0)

        cases = {"hand-written NumPy, one process": lambda: wall(numpy_logistic, w, Xn, yn),
                 "tracegrad, one process": lambda: wall(local, w, Xn, yn),
                 "tracegrad.distributed, 2 workers": lambda: wall(spread, w, X, y),
                 "hand-written dask.array, 2 workers": lambda: wall(dask_logistic, w, X, y)}
        medians = harness.interleaved(cases, rounds)
        base = medians["hand-written NumPy, one process"]
        mine = medians["tracegrad, one process"]
        report.table(f"value and gradient of a mean logistic loss, {rows:,} rows x {FEATURES} float64, "
                     f"{args.chunks} chunks", ["implementation", "per gradient", "vs NumPy", "vs tracegrad one process",
                                               "max rel. difference from NumPy"],
                     [(name, harness.fmt_time(t), f"{t / base:.2f}x", f"{t / mine:.2f}x", f"{errors[name]:.1e}")
                      for name, t in medians.items()],
                     notes=[f"wall-clock medians of {rounds} interleaved rounds; 2 worker processes x 1 thread, "
                            "one BLAS thread everywhere; a 2-core machine shared with other jobs"])

        # Dask's own costs
        client.submit(_noop, 0, pure=False).result()
        one = harness.interleaved({"one": lambda: wall(lambda: client.submit(_noop, 0, pure=False).result())},
                                  max(rounds, 15))["one"]
        n_tasks = 1000
        many = harness.interleaved({"many": lambda: wall(lambda: client.gather(
            client.map(_noop, range(n_tasks), pure=False)))}, max(3, rounds // 2))["many"] / n_tasks
        scatter = harness.interleaved({"scatter": lambda: wall(
            lambda: client.scatter(np.zeros(FEATURES), broadcast=True, hash=False))}, max(rounds, 15))["scatter"]
        report.table("Dask's overhead on this machine (LocalCluster, 2 processes x 1 thread)",
                     ["what", "time"],
                     [("round trip of one tiny task (submit + result)", harness.fmt_time(one)),
                      (f"per task, {n_tasks} tiny tasks at once (map + gather)", harness.fmt_time(many)),
                      (f"scatter {FEATURES} float64 to both workers (broadcast)", harness.fmt_time(scatter))],
                     notes=["wall-clock medians"])
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


if __name__ == "__main__":
    main()
