"""Logistic regression on data generated and kept on Dask workers, trained full-batch with SciPy's L-BFGS-B
on tracegrad's gradient, and compared with scikit-learn's LogisticRegression on the same data.

The data set (N rows x 20 features, float64) is generated chunk by chunk on the workers of a
LocalCluster by dask.array's random generator and stays there: no process holds all of it, so N can be
as large as the workers' memory together. Each L-BFGS-B iteration asks for the loss and its gradient;
``tracegrad.distributed.value_and_grad`` runs the compiled kernel of ``loss`` on every chunk, where it
lies, and adds the results up (weighted by rows) on the workers; only the 21 parameters and 21 numbers
back travel.

    pip install 'tracegrad[dask]' scikit-learn
    python examples/distributed_logistic.py                      # 10^6 rows: compared with scikit-learn
    python examples/distributed_logistic.py --rows 20000000      # 3.2 GB of data, on the workers only
    python examples/distributed_logistic.py --scheduler tcp://host:8786   # a cluster of your own
"""
import argparse
import time

import numpy as np
import scipy.optimize

from tracegrad import distributed

FEATURES = 20
LAM = 1e-4  # L2 penalty on the weights (not the intercept)


def loss(params, X, y):
    """Mean logistic loss of one batch of rows (labels 0/1), plus the penalty: params = weights, intercept."""
    z = X @ params[:-1] + params[-1]
    # log(1 + exp(z)) - y z, written so that exp never overflows
    return np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - y * z) + 0.5 * LAM * np.sum(params[:-1] ** 2)


def make_data(rows, chunk, seed=0):
    """X and y as Dask arrays, generated on the workers chunk by chunk (nothing is computed here)."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    X = rng.standard_normal((rows, FEATURES), chunks=(chunk, FEATURES))
    true = np.linspace(-2, 2, FEATURES)
    p = 1 / (1 + np.exp(-(X @ true + 0.5)))
    y = (rng.random(rows, chunks=chunk) < p).astype(np.float64)
    return X, y


def train(value_and_grad, X, y, label):
    """L-BFGS-B on the full batch, one line per iteration."""
    start = time.perf_counter()
    calls, last = [0], {}

    def fun(params):
        calls[0] += 1
        last["value"], last["grad"] = value_and_grad(params, X, y)
        return last["value"], last["grad"]

    def progress(intermediate_result):  # after each iteration: its point is the last one evaluated
        print(f"  {label} iteration {progress.k:2d}: loss {intermediate_result.fun:.8f}  "
              f"|gradient| {np.linalg.norm(last['grad']):.2e}  {time.perf_counter() - start:6.2f} s")
        progress.k += 1

    progress.k = 1
    result = scipy.optimize.minimize(fun, np.zeros(FEATURES + 1), jac=True, method="L-BFGS-B", callback=progress,
                                     options={"gtol": 1e-6, "maxiter": 100})
    return result, time.perf_counter() - start, calls[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunks", type=int, default=8, help="row chunks (default 8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", help="the address of a running Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--compare-rows", type=int, default=2_000_000,
                        help="compare with scikit-learn up to this many rows (it needs the data in one process)")
    args = parser.parse_args()

    import dask
    from distributed import Client, LocalCluster, wait

    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=":0")
        client = Client(cluster)
    with client:
        chunk = -(-args.rows // args.chunks)
        X, y = make_data(args.rows, chunk)
        t0 = time.perf_counter()
        X, y = client.persist([X, y])  # generated on the workers, kept there
        wait([X, y])
        workers = len(client.scheduler_info()["workers"])
        print(f"data: {args.rows:,} rows x {FEATURES} features ({X.nbytes / 2**30:.2f} GiB) in {X.numblocks[0]} "
              f"chunks on {workers} workers, generated in {time.perf_counter() - t0:.1f} s")

        value_and_grad = distributed.value_and_grad(loss, reduction="mean", check_separable=True)
        t0 = time.perf_counter()
        value_and_grad(np.zeros(FEATURES + 1), X, y)  # the first call compiles the kernel on the workers
        print(f"first gradient (tracing, compiling on the workers, separability check): "
              f"{time.perf_counter() - t0:.1f} s")

        print("tracegrad.distributed + scipy L-BFGS-B:")
        result, seconds, calls = train(value_and_grad, X, y, "dask")
        print(f"done: loss {result.fun:.8f} after {result.nit} iterations, {calls} gradients, {seconds:.1f} s "
              f"({seconds / calls * 1e3:.0f} ms per gradient); {result.message}")

        if args.rows > args.compare_rows:
            print(f"(no comparison with scikit-learn above --compare-rows {args.compare_rows:,})")
            return
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            print("(scikit-learn is not installed: no comparison)")
            return
        Xn, yn = dask.compute(X, y)  # scikit-learn needs the data in this process
        # its objective is C * sum(log loss) + |w|^2 / 2: ours times N with C = 1 / (N * LAM)
        model = LogisticRegression(C=1 / (args.rows * LAM), tol=1e-10, max_iter=1000)
        t0 = time.perf_counter()
        model.fit(Xn, yn)
        sk_seconds = time.perf_counter() - t0
        theirs = np.append(model.coef_.ravel(), model.intercept_)
        sk_loss = float(loss(theirs, Xn, yn))
        print(f"scikit-learn LogisticRegression (lbfgs, one process): loss {sk_loss:.8f} after "
              f"{int(model.n_iter_[0])} iterations, {sk_seconds:.1f} s")
        print(f"largest difference between the two models' parameters: {np.max(np.abs(result.x - theirs)):.1e} "
              f"(losses differ by {result.fun - sk_loss:+.1e})")
        print("parameters:", np.array2string(result.x[[0, 1, -2, -1]], precision=4), "(first two, last weight, "
              "intercept)")
    if not args.scheduler:
        cluster.close()


if __name__ == "__main__":
    main()
