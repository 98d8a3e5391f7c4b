"""A small MLP trained by local SGD on data generated and kept on Dask workers (``tracegrad.distributed.fit``),
compared with ``tg.fit`` in one process on the same rows.

The data set (N rows x 20 features, two classes separated by a curved boundary) is generated chunk by
chunk on the workers of a LocalCluster by dask.array's random generator. ``distributed.fit`` trains each
chunk for one epoch on the worker that holds it, with ``tg.fit``'s compiled epoch function, then averages
the chunks' parameters and Adam's moments by rows; one line per round. For the comparison, the same rows
are fetched into this process and trained by ``tg.fit`` for as many epochs. Both are scored on held-out
rows drawn the same way.

    pip install 'tracegrad[dask]'
    python examples/distributed_fit.py                        # 400,000 rows in 4 chunks on 2 workers
    python examples/distributed_fit.py --rows 4000000 --chunks 8 --no-compare
    python examples/distributed_fit.py --scheduler tcp://host:8786   # a cluster of your own
"""
import argparse
import time

import numpy as np

import tracegrad as tg
from tracegrad import distributed

FEATURES, HIDDEN = 20, 32


def loss(params, X, y):
    """Softmax cross-entropy of a one-hidden-layer tanh network on one batch (labels 0/1)."""
    h = np.tanh(X @ params["W1"] + params["b1"])
    return tg.nn.softmax_cross_entropy(h @ params["W2"] + params["b2"], y)


def accuracy(params, X, y):
    h = np.tanh(X @ params["W1"] + params["b1"])
    return float(np.mean(np.argmax(h @ params["W2"] + params["b2"], axis=1) == y))


def labels(X, noise):
    """The class of each row: which side of a curved boundary in the first three features it lies on."""
    return (np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.3 * noise > 0).astype(np.int64)


def make_data(rows, chunk, seed=0):
    """X and y as Dask arrays, generated on the workers chunk by chunk (nothing is computed here)."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    X = rng.standard_normal((rows, FEATURES), chunks=(chunk, FEATURES))
    noise = rng.standard_normal(rows, chunks=chunk)
    y = labels(X, noise)  # (NumPy's functions on Dask arrays: computed chunk by chunk on the workers)
    return X, y


def init(seed=1):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(FEATURES, HIDDEN)) / np.sqrt(FEATURES), "b1": np.zeros(HIDDEN),
            "W2": rng.normal(size=(HIDDEN, 2)) / np.sqrt(HIDDEN), "b2": np.zeros(2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--no-compare", action="store_true", help="skip tg.fit in this process")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster, wait

    if args.scheduler:
        client, cluster = Client(args.scheduler), None
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=":0")
        client = Client(cluster)
    try:
        t0 = time.perf_counter()
        X, y = client.persist(list(make_data(args.rows, -(-args.rows // args.chunks))))
        wait([X, y])
        print(f"data: {args.rows:,} rows x {FEATURES} features in {X.numblocks[0]} chunks on "
              f"{len(client.scheduler_info()['workers'])} workers, generated in {time.perf_counter() - t0:.1f} s")
        rng = np.random.default_rng(99)
        X_test = rng.normal(size=(20_000, FEATURES))
        y_test = labels(X_test, rng.normal(size=20_000))
        opt = tg.optim.Adam(lr=args.lr)

        print("tracegrad.distributed.fit (local SGD, parameters averaged once per epoch of each chunk):")
        t0 = time.perf_counter()
        params, history = distributed.fit(loss, init(), X, y, optimizer=opt, batch_size=args.batch_size,
                                          epochs=args.epochs, seed=0, validation=(X_test, y_test),
                                          metrics={"accuracy": accuracy}, progress="plain")
        spread = time.perf_counter() - t0
        print(f"done: {history.steps} updates per chunk, {spread:.1f} s ({history.compile_time:.1f} s of it "
              f"compiling or loading the epoch function on the workers, then "
              f"{np.median(history.time):.2f} s per round); held-out accuracy {accuracy(params, X_test, y_test):.4f}")

        if not args.no_compare:
            Xn, yn = client.compute([X, y], sync=True)  # the same rows, whole, in this process
            print("tg.fit in this process on the same rows:")
            t0 = time.perf_counter()
            local, h = tg.fit(loss, init(), (Xn, yn), optimizer=opt, batch_size=args.batch_size, epochs=args.epochs,
                              seed=0, validation=(X_test, y_test), metrics={"accuracy": accuracy},
                              progress="plain", compile="wait")
            print(f"done: {h.steps} updates, {time.perf_counter() - t0:.1f} s ({h.compile_time:.1f} s compiling, "
                  f"then {np.median(h.time):.2f} s per epoch); held-out accuracy {accuracy(local, X_test, y_test):.4f}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
