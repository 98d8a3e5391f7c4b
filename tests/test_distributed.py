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
