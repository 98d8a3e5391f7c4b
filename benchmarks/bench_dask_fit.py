"""Benchmark: data-parallel ``tracegrad.distributed.fit`` (local SGD) on a 2-worker LocalCluster, against
``tg.fit`` in one process on the same data, and what a round of Dask costs on this machine.

Two tables:

1. **time per epoch**: an MLP 20-64-2 (softmax cross-entropy, Adam, batch 32, float64) trained on N rows
   (the data made in this process, the same arrays given to ``tg.fit`` and, as a Dask array of 2 or 4 row
   chunks, to ``distributed.fit``). For ``tg.fit``: its ``history.time`` (the compiled epoch function) and
   the whole call per epoch; for ``distributed.fit``: its ``history.time`` per round (one round = one
   epoch of every chunk: the Dask graph, the chunks' ``tg.fit`` on the workers, the transfers and the
   average on the client). Each sample is a call of 3 epochs (rounds), the calls of the implementations
   interleaved, the first epoch of each call dropped; medians over the samples. The baseline is
   ``tg.fit``'s compiled epoch: two workers on two idle cores would take about half its time per epoch.
2. **Dask's cost per round**: ``distributed.fit`` on 2 chunks of 64 rows (batch 32: two ~20 us steps per
   chunk), so a round is almost only Dask and the client's averaging; with a tiny task's round trip
   (``submit`` + ``result``) measured in the same run for scale.

Times are **wall-clock** (the workers' CPU time is not this process's), one BLAS thread per process
(harness.py, inherited by the workers). The machine has 2 cores shared with other engineers' jobs: compare
ratios within one run, and read the load average printed with the tables.

    python benchmarks/bench_dask_fit.py               # 200,000 rows
    python benchmarks/bench_dask_fit.py --rows 1000000 --rounds 7
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import harness  # noqa: E402  (sets one BLAS thread before NumPy loads)

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad import distributed  # noqa: E402

FEATURES, HIDDEN, CLASSES, BATCH, EPOCHS = 20, 64, 2, 32, 3


def mlp(p, X, y):
    h = np.tanh(X @ p["W1"] + p["b1"])
    return tg.nn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y)


def init():
    rng = np.random.default_rng(1)
    return {"W1": rng.normal(size=(FEATURES, HIDDEN)) / np.sqrt(FEATURES), "b1": np.zeros(HIDDEN),
            "W2": rng.normal(size=(HIDDEN, CLASSES)) / np.sqrt(HIDDEN), "b2": np.zeros(CLASSES)}


def _noop(x):
    return x


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved samples (calls of 3 epochs each)")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    harness.use_wall_clock()

    import dask.array as da
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, FEATURES))
    y = (np.sin(X[:, 0] * 2) + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    opt = tg.optim.Adam(lr=1e-3)
    report = harness.Report()
    print(harness.machine())
    print(f"{args.rows} rows x {FEATURES}, MLP {FEATURES}-{HIDDEN}-{CLASSES}, batch {BATCH}, Adam; {load()}")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        chunked = {k: (da.from_array(X, chunks=(-(-args.rows // k), FEATURES)), da.from_array(y, chunks=-(-args.rows // k)))
                   for k in (2, 4)}
        for k in chunked:
            chunked[k] = tuple(client.persist(list(chunked[k])))  # the chunks on the workers, as a real data set

        samples = {"tg.fit, one process: compiled epoch": [], "tg.fit, one process: whole call per epoch": [],
                   "distributed.fit, 2 chunks on 2 workers": [], "distributed.fit, 4 chunks on 2 workers": []}
        final = {}

        def one_process():
            t0 = time.perf_counter()
            p, h = tg.fit(mlp, init(), (X, y), optimizer=opt, batch_size=BATCH, epochs=EPOCHS, progress=False)
            per_call = (time.perf_counter() - t0) / EPOCHS
            samples["tg.fit, one process: compiled epoch"] += h.time[1:]
            samples["tg.fit, one process: whole call per epoch"].append(per_call)
            final["tg.fit, one process"] = h.loss[-1]

        def spread(k):
            p, h = distributed.fit(mlp, init(), *chunked[k], optimizer=opt, batch_size=BATCH, epochs=EPOCHS,
                                   progress=False)
            samples[f"distributed.fit, {k} chunks on 2 workers"] += h.time[1:]
            final[f"distributed.fit, {k} chunks"] = h.loss[-1]

        one_process(), spread(2), spread(4)  # compile (or load) everywhere first
        for v in samples.values():
            v.clear()
        loads = [load()]
        for r in range(args.rounds):
            for run in ([one_process, lambda: spread(2), lambda: spread(4)][::1 if r % 2 == 0 else -1]):
                run()
        loads.append(load())
        medians = {name: statistics.median(v) for name, v in samples.items()}
        base = medians["tg.fit, one process: compiled epoch"]
        report.table(f"time per epoch, MLP {FEATURES}-{HIDDEN}-{CLASSES} on {args.rows:,} rows, batch {BATCH}, Adam",
                     ["implementation", "per epoch", "vs tg.fit's compiled epoch"],
                     [(name, harness.fmt_time(t * 1e9), f"{t / base:.2f}x") for name, t in medians.items()],
                     notes=[f"wall-clock medians of {args.rounds} interleaved calls x {EPOCHS - 1} epochs (the first of "
                            "each call dropped); 2 worker processes x 1 thread; one BLAS thread everywhere",
                            "mean training loss of the last epoch: " + ", ".join(f"{n} {v:.4f}" for n, v in final.items()),
                            f"{loads[0]} before, {loads[1]} after (2 cores)"])

        # Dask's cost per round: tiny chunks, so that the round is nearly all overhead
        tiny = (da.from_array(X[:128], chunks=(64, FEATURES)), da.from_array(y[:128], chunks=64))
        distributed.fit(mlp, init(), *tiny, optimizer=opt, batch_size=BATCH, epochs=1, progress=False)
        rounds = []
        trip = []
        for _ in range(args.rounds):
            rounds += distributed.fit(mlp, init(), *tiny, optimizer=opt, batch_size=BATCH, epochs=10,
                                      progress=False)[1].time[1:]
            for _ in range(5):
                t0 = time.perf_counter()
                client.submit(_noop, 0, pure=False).result()
                trip.append(time.perf_counter() - t0)
        report.table("Dask's cost per round of distributed.fit (LocalCluster, 2 processes x 1 thread)",
                     ["what", "median", "min"],
                     [("a round of 2 chunks x 64 rows (2 steps each)", harness.fmt_time(statistics.median(rounds) * 1e9),
                       harness.fmt_time(min(rounds) * 1e9)),
                      ("round trip of one tiny task (submit + result)", harness.fmt_time(statistics.median(trip) * 1e9),
                       harness.fmt_time(min(trip) * 1e9))],
                     notes=[f"wall-clock, {len(rounds)} rounds and {len(trip)} round trips; {load()}"])
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(harness.machine() + "\n\n" + report.markdown())


if __name__ == "__main__":
    main()
