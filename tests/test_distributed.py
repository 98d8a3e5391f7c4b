"""tracegrad.distributed: gradients over Dask arrays equal the single-process gradient of the whole data.

The tests that need workers share one LocalCluster (2 worker processes, 1 thread each, loopback only),
started by the first of them and stopped at the end of the module; the tests before them run without a
Client (Dask's default scheduler in this process) or need no computation at all.
"""
import os
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import distributed
from tracegrad.distributed import _client

ROWS, FEATURES, CHUNK = 1000, 5, 300  # chunks of 300, 300, 300 and 100 rows: two shapes


def logistic(w, X, y):
    """Mean logistic loss, plus a penalty: separable with reduction="mean"."""
    z = X @ w
    return np.mean(np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - y * z) + 1e-2 * np.sum(w ** 2)


def squares(params, X, y, scale):
    """Summed squared error of a small model with a dict of parameters and a constant."""
    r = np.tanh(X @ params["W"] + params["b"]) * scale - y
    return np.sum(r ** 2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, FEATURES))
    y = (rng.random(ROWS) > 0.5) * 1.0
    return X, y, da.from_array(X, chunks=(CHUNK, FEATURES)), da.from_array(y, chunks=CHUNK)


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0)


# ---------------------------------------------------------------------------------------------- no workers


def test_importing_tracegrad_does_not_import_dask():
    code = "import sys, tracegrad; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"


def test_numpy_data_runs_in_this_process(data):
    X, y, _, _ = data
    w = np.linspace(-1, 1, FEATURES)
    value, grad = distributed.value_and_grad(logistic)(w, X[:40], y[:40])
    expected = tg.value_and_grad(logistic)(w, X[:40], y[:40])
    assert value == expected[0] and np.array_equal(grad, expected[1])


def test_without_a_client_dask_default_scheduler(data):
    assert _client() is None, "this test must run before the module's cluster starts"
    X, y, dX, dy = data
    w = np.linspace(-1, 1, FEATURES)
    value, grad = distributed.value_and_grad(logistic)(w, dX, dy)
    expected = tg.value_and_grad(logistic)(w, X, y)
    close(value, expected[0])
    close(grad, expected[1])


def test_bad_data_is_a_clear_error(data):
    X, y, dX, dy = data
    w = np.zeros(FEATURES)
    f = distributed.value_and_grad(logistic)
    with pytest.raises(tg.DataError, match=r"argument 1 is a Dask array chunked along axis 1 .*whole rows") as e:
        f(w, da.from_array(X, chunks=(CHUNK, 2)), dy)
    assert "rechunk" in str(e.value) and "test_distributed.py" in str(e.value)  # the hint and the user's line
    with pytest.raises(tg.DataError, match="argument 2 has 999 rows but argument 1 has 1000"):
        f(w, dX, dy[1:])
    with pytest.raises(tg.DataError, match="argument 2 is a NumPy array with as many rows"):
        f(w, dX, y)
    with pytest.raises(tg.DataError, match="argument 0 is differentiated .* Dask array"):
        f(da.from_array(w), dX, dy)
    with pytest.raises(tg.DataError, match="chunks of unknown size"):
        f(w, dX[dX[:, 0] > 0], dy[dX[:, 0] > 0])
    with pytest.raises(tg.DataError, match="reduction='median'"):
        distributed.value_and_grad(logistic, reduction="median")


def test_check_separable_catches_what_chunks_would_get_wrong(data):
    _, _, dX, dy = data
    w = np.linspace(-1, 1, FEATURES)

    def sum_with_penalty(w, X, y):  # the penalty would be counted once per chunk
        return np.sum((X @ w - y) ** 2) + np.sum(w ** 2)

    def standardised(w, X, y):  # a statistic of the whole batch
        z = X @ w
        return np.mean(((z - np.mean(z)) / np.std(z) - y) ** 2)

    def sum_called_mean(w, X, y):  # a sum declared as a mean: chunks weighted by their rows twice
        return np.sum((X @ w - y) ** 2)

    for fun, reduction in [(sum_with_penalty, "sum"), (standardised, "mean"), (sum_called_mean, "mean")]:
        f = distributed.value_and_grad(fun, reduction=reduction, check_separable=True)
        with pytest.raises(tg.SeparabilityError, match=f"{fun.__name__} is not separable over rows with "
                                                       f"reduction='{reduction}': on the first 48 rows"):
            f(w, dX, dy)
    # and the same check passes a separable loss (it then runs: see the tests with workers)
    f = distributed.value_and_grad(lambda w, X, y: np.sum((X @ w - y) ** 2), reduction="sum", check_separable=True)
    f._check((w, dX, dy), [1, 2], [dX, dy])


# ---------------------------------------------------------------------------------------------- fit, no workers

FIT_BATCH = 50  # 10 steps per epoch of a 500-row chunk


def fit_data(X, y, chunk):
    return da.from_array(X, chunks=(chunk, FEATURES)), da.from_array(y, chunks=chunk)


def adam():
    return tg.optim.Adam(lr=0.05)


def local_sgd(X, y, chunk, epochs, seed, compile="wait", lr=None):
    """Local SGD by hand: each round, tg.fit for one epoch of every chunk from the same start (the chunk's seed
    advanced once per round), then the parameters and Adam's moments averaged by rows in chunk order."""
    w, state, losses = np.zeros(FEATURES), None, []
    starts = list(range(0, len(X), chunk))
    seeds = [distributed.chunk_seed(seed, c) for c in range(len(starts))]
    opt = adam() if lr is None else tg.optim.Adam(lr=lr)
    for _ in range(epochs):
        results = []
        for c, start in enumerate(starts):
            rows = slice(start, start + chunk)
            p, h = tg.fit(logistic, w, (X[rows], y[rows]), optimizer=opt, batch_size=FIT_BATCH, epochs=1,
                          seed=seeds[c], state=state, progress=False, compile=compile)
            results.append((len(X[rows]) / len(X), p, h))
            seeds[c] = h.seed
        w = sum(f * p for f, p, _ in results)
        losses.append(sum(f * h.loss[0] for f, _, h in results))
        state = {"step": max(h.state["step"] for _, _, h in results),
                 **{slot: sum(f * h.state[slot] for f, _, h in results) for slot in ("m", "v")}}
    return w, state, losses


def test_fit_one_chunk_is_tg_fit_bit_for_bit(data):
    assert _client() is None, "this test must run before the module's cluster starts"
    X, y, _, _ = data
    expected, h = tg.fit(logistic, np.zeros(FEATURES), (X, y), optimizer=adam(), batch_size=FIT_BATCH, epochs=3,
                         seed=11, progress=False, compile="wait")
    w, history = distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, ROWS), optimizer=adam(),
                                 batch_size=FIT_BATCH, epochs=3, seed=11, progress=False)
    assert np.array_equal(w, expected) and history.loss == h.loss and history.compiled == [True] * 3
    assert history.steps == h.steps == 60
    assert all(np.array_equal(history.state[slot], h.state[slot]) for slot in ("m", "v"))
    # continued from its state and the seed advanced past its 3 rounds: tg.fit's fourth epoch
    from tracegrad.primitives.shuffle import next_seed

    w4, h4 = distributed.fit(logistic, w, *fit_data(X, y, ROWS), optimizer=adam(), batch_size=FIT_BATCH, epochs=1,
                             seed=next_seed(next_seed(next_seed(11, ROWS), ROWS), ROWS), state=history.state,
                             progress=False)
    expected4, _ = tg.fit(logistic, np.zeros(FEATURES), (X, y), optimizer=adam(), batch_size=FIT_BATCH, epochs=4,
                          seed=11, progress=False, compile="wait")
    assert np.array_equal(w4, expected4) and h4.steps == 80


def test_fit_a_failing_metric_keeps_the_last_round(data):
    X, y, _, _ = data
    calls = []

    def fails_second(w, X, y):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("no")
        return float(w[0])

    args = dict(optimizer=adam(), batch_size=FIT_BATCH, seed=2, progress=False, compile="never")
    with pytest.raises(tg.TrainingError, match=r"round 2 of 3: metric 'w0' raised ValueError: no") as e:
        distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, 500), epochs=3, validation=(X[:100], y[:100]),
                        metrics={"w0": fails_second}, **args)
    w1, h1 = distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, 500), epochs=1, **args)
    assert np.array_equal(e.value.params, w1) and e.value.history.loss == h1.loss
    assert e.value.history.metrics["w0"] == [w1[0]] and e.value.state["step"] == 10


def test_fit_bad_input_is_a_clear_error(data):
    X, y, dX, dy = data
    w, opt = np.zeros(FEATURES), adam()

    def fit(X=dX, y=dy, **kw):
        return distributed.fit(logistic, w, X, y, optimizer=opt, **{"batch_size": 50, "progress": False, **kw})

    with pytest.raises(tg.DataError, match=r"X is a Dask array chunked along axis 1 .*whole rows") as e:
        fit(X=da.from_array(X, chunks=(CHUNK, 2)))
    assert "rechunk" in str(e.value) and "test_distributed.py" in str(e.value)  # the hint and the user's line
    with pytest.raises(tg.DataError, match=r"X and y are chunked differently .*X \(300, 300, 300, 100\), y \(128,"):
        fit(y=dy.rechunk(128))
    with pytest.raises(tg.DataError, match="X has 1000 rows but y has 999"):
        fit(y=dy[1:])
    with pytest.raises(tg.DataError, match="y must be a Dask array chunked by rows, got ndarray"):
        fit(y=y)
    with pytest.raises(tg.DataError, match="chunks of unknown size"):
        fit(X=dX[dX[:, 0] > 0], y=dy[dX[:, 0] > 0])
    with pytest.raises(tg.DataError, match=r"chunk 3 of X has 100 rows, fewer than batch_size = 128"):
        fit(batch_size=128)
    with pytest.raises(tg.DataError, match=r"chunk 0 of X has 300 rows, fewer than sync_every \* batch_size "
                                           r"\(7 steps\) = 350"):
        fit(sync_every=7)
    for bad in ["step", 0, -2, 1.5, True]:
        with pytest.raises(tg.DataError, match=r"sync_every must be 'epoch' or a positive int"):
            fit(sync_every=bad)
    with pytest.raises(tg.DataError, match="compile must be 'wait' or 'never'"):
        fit(compile="background")
    with pytest.raises(tg.DataError, match=r"metrics need validation=\(X_val, y_val\)"):
        fit(metrics={"w0": lambda w, X, y: w[0]})
    with pytest.raises(tg.GradTypeError):
        distributed.fit(logistic, np.zeros(FEATURES, dtype=np.int64), dX, dy, optimizer=opt, progress=False)
    with pytest.raises(tg.DataError, match="takes the plain loss function"):
        distributed.fit(tg.value_and_grad(logistic), w, dX, dy, optimizer=opt, progress=False)


# ---------------------------------------------------------------------------------------------- workers


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    # generous: 8 processes of compilers share this machine's 2 cores, and CI's are busy too
    timeouts = {"distributed.comm.timeouts.connect": "180s", "distributed.comm.timeouts.tcp": "180s",
                "distributed.scheduler.worker-ttl": None}
    with dask.config.set(timeouts):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0", timeout=180) as cluster, Client(cluster, timeout=180) as c:
            yield c


def test_equals_the_single_process_gradient(client, data):
    X, y, dX, dy = data
    f = distributed.value_and_grad(logistic, reduction="mean", check_separable=True)
    local = tg.value_and_grad(logistic)
    for w in [np.linspace(-1, 1, FEATURES), np.linspace(2, -1, FEATURES)]:  # new parameters each call
        value, grad = f(w, dX, dy)
        expected = local(w, X, y)
        close(value, expected[0])
        close(grad, expected[1])
    assert len(client.scheduler_info()["workers"]) == 2


def test_sum_pytree_parameters_and_constants(client, data):
    X, y, dX, dy = data
    params = {"W": np.linspace(-0.5, 0.5, FEATURES), "b": 0.25}
    f = distributed.value_and_grad(squares, reduction="sum", argnums=(0, 3))
    value, (grad, grad_scale) = f(params, dX, dy, 1.5)
    expected_value, (expected, expected_scale) = tg.value_and_grad(squares, argnums=(0, 3))(params, X, y, 1.5)
    close(value, expected_value)
    close(grad["W"], expected["W"])
    close(grad["b"], expected["b"])
    close(grad_scale, expected_scale)
    assert isinstance(grad["b"], float) and isinstance(value, float)
    # y chunked otherwise than X: rechunked to X's rows
    value2, _ = f(params, dX, dy.rechunk(128), 1.5)
    close(value2, expected_value)


def _die_once(block, marker):
    """The first call ends its worker process, as a crash would."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return block


def test_a_worker_dying_mid_gradient_is_retried(client, data, tmp_path):
    X, y, dX, dy = data
    marker = str(tmp_path / "died")
    w = np.linspace(-1, 1, FEATURES)
    value, grad = distributed.value_and_grad(logistic)(w, dX.map_blocks(_die_once, marker, meta=np.empty((0, 0))), dy)
    assert os.path.exists(marker)  # a worker did die
    expected = tg.value_and_grad(logistic)(w, X, y)
    close(value, expected[0])
    close(grad, expected[1])


def test_the_parameters_are_sent_once_per_call_not_once_per_chunk(data):
    import cloudpickle

    _, _, dX, dy = data
    w = np.full(FEATURES, 1234.5678)  # bytes to look for
    f = distributed.value_and_grad(logistic)
    graph = dict(f._graph((w, dX, dy), [1, 2], [dX, dy]).__dask_graph__())
    holding = [key for key, task in graph.items() if w.tobytes() in cloudpickle.dumps(task)]
    assert len(holding) == 1 and dX.numblocks[0] == 4
    assert sum(1 for key in graph if "_chunk" in str(key)) == 4  # and every chunk's task reads that key


# ---------------------------------------------------------------------------------------------- fit on workers


def test_fit_on_workers_one_chunk_is_tg_fit(client, data):
    X, y, _, _ = data
    expected, h = tg.fit(logistic, np.zeros(FEATURES), (X, y), optimizer=adam(), batch_size=FIT_BATCH, epochs=2,
                         seed=3, progress=False, compile="wait")
    w, history = distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, ROWS), optimizer=adam(),
                                 batch_size=FIT_BATCH, epochs=2, seed=3, progress=False)
    assert np.array_equal(w, expected) and history.loss == h.loss


def test_fit_two_chunks_is_local_sgd_and_deterministic(client, data):
    X, y, _, _ = data
    expected, expected_state, losses = local_sgd(X, y, 500, epochs=3, seed=5)  # compiles here; the workers load it
    runs = [distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, 500), optimizer=adam(),
                            batch_size=FIT_BATCH, epochs=3, seed=5, progress=False, validation=(X[:100], y[:100]),
                            metrics={"w0": lambda w, X, y: w[0]}) for _ in range(2)]
    (w, history), (w2, history2) = runs
    close(w, expected)
    close(history.state["m"], expected_state["m"])
    close(history.state["v"], expected_state["v"])
    assert history.steps == expected_state["step"] == 30 and history.compiled == [True] * 3
    assert np.array_equal(w, w2) and history.loss == history2.loss  # the same, whichever worker ran what
    close(history.loss, losses)
    assert history.val_loss[-1] == logistic(w, X[:100], y[:100]) and len(history.val_loss) == 3
    assert history.metrics["w0"][-1] == w[0] and len(history.metrics["w0"]) == 3


def test_fit_sync_every_k_steps(client, data):
    from tracegrad.primitives.shuffle import next_seed, permutation

    X, y, _, _ = data
    k, seed = 3, 9  # 3 steps of 50 rows per 500-row chunk: ceil(2 * 1000 / (2 * 150)) = 7 rounds for 2 epochs
    w, history = distributed.fit(logistic, np.zeros(FEATURES), *fit_data(X, y, 500), optimizer=adam(),
                                 batch_size=FIT_BATCH, epochs=2, seed=seed, sync_every=k, progress=False,
                                 compile="never")
    expected, state = np.zeros(FEATURES), None
    seeds = [distributed.chunk_seed(seed, c) for c in range(2)]
    for _ in range(7):
        results = []
        for c in range(2):
            rows = 500 * c + permutation.ref(np.uint64(seeds[c]), n=500)[:k * FIT_BATCH]
            p, h = tg.fit(logistic, expected, (X[rows], y[rows]), optimizer=adam(), batch_size=FIT_BATCH, epochs=1,
                          shuffle=False, state=state, progress=False, compile="never")
            results.append((p, h.state))
            seeds[c] = next_seed(seeds[c], 500)
        expected = 0.5 * results[0][0] + 0.5 * results[1][0]
        state = {"step": results[0][1]["step"], **{s: 0.5 * results[0][1][s] + 0.5 * results[1][1][s] for s in "mv"}}
    assert len(history.loss) == 7 and history.steps == 21 and history.compiled == [False] * 7
    close(w, expected)


def test_fit_non_finite_gives_the_parameters_before_the_round(client, data):
    X, y, _, _ = data
    blow_up = tg.optim.Adam(lr=lambda t: 0.05 if t <= 10 else 1e307)  # finite in round 1, overflows in round 2
    dX, dy = fit_data(X, y, 500)
    with pytest.raises(tg.NonFiniteTrainingError, match=r"training stopped in round 2 of 3, on chunk 0 "
                                                        r"\(rows 0..499\), at step 3 of 10 \(update 13\): the loss is inf") as e:
        distributed.fit(logistic, np.zeros(FEATURES), dX, dy, optimizer=blow_up, batch_size=FIT_BATCH, epochs=3,
                        seed=5, progress=False)
    expected, state, _ = local_sgd(X, y, 500, epochs=1, seed=5)
    assert e.value.epoch == 2 and len(e.value.history.loss) == 1 and "after update 12" not in str(e.value)
    assert np.array_equal(e.value.params, distributed.fit(logistic, np.zeros(FEATURES), dX, dy, optimizer=adam(),
                                                          batch_size=FIT_BATCH, epochs=1, seed=5, progress=False)[0])
    close(e.value.params, expected)
    assert e.value.state["step"] == 10


def test_fit_a_worker_dying_mid_round_is_retried(client, data, tmp_path):
    X, y, _, _ = data
    dX, dy = fit_data(X, y, 500)
    marker = str(tmp_path / "died")
    dying = dX.map_blocks(_die_once, marker, meta=np.empty((0, 0)))  # the first chunk read ends its worker
    w, history = distributed.fit(logistic, np.zeros(FEATURES), dying, dy, optimizer=adam(), batch_size=FIT_BATCH,
                                 epochs=2, seed=5, progress=False)
    assert os.path.exists(marker)  # a worker did die
    expected, _, losses = local_sgd(X, y, 500, epochs=2, seed=5)
    close(w, expected)
    close(history.loss, losses)
