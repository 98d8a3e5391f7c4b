"""parallel=tg.over_rows(...): a loss's data split into blocks of rows, one a thread, each running the whole
compiled value and gradient, combined in block order. Checked against the serial compiled code (itself
checked against central differences here too) with three blocks of two sizes, whatever the machine's
number of threads (backend.threads is set to 3: prange runs 3 blocks on any number of threads)."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import backend, rows
from tracegrad.errors import DataError, GradTypeError, IndexOutOfBoundsError, TracegradError
from tracegrad.testing import numeric_grad


@pytest.fixture
def three_threads(monkeypatch):
    monkeypatch.setattr(backend, "threads", lambda: 3)


def mlp_args(rng, n, dtype=np.float64):
    params = {"W": rng.normal(size=(12, 40)) / 4, "b": rng.normal(size=40) * 0.1, "v": rng.normal(size=40) / 6}
    params = {k: a.astype(dtype) for k, a in params.items()}
    return params, rng.normal(size=(n, 12)).astype(dtype), rng.normal(size=n).astype(dtype)


def make_loss(rng):
    scale = rng.uniform(0.5, 1.5, size=12)  # a captured array: every block reads all of it

    def loss(params, X, y):
        h = np.tanh((X * scale) @ params["W"] + params["b"])
        penalty = 1e-3 * np.sum(params["W"] ** 2)  # does not depend on the rows: right with reduction="mean"
        return np.mean((h @ params["v"] - y) ** 2) + penalty
    return loss


def test_blocks_of_rows_give_the_serial_value_and_gradient(rng, three_threads):
    loss = make_loss(rng)
    params, X, y = mlp_args(rng, 400, np.float64)  # blocks of 134, 133 and 133 rows
    split = tg.value_and_grad(loss, parallel=tg.over_rows(1, 2), compile="wait")
    serial = tg.value_and_grad(loss, parallel=False, compile="wait")
    source = split.source(params, X, y)
    assert "for blk in prange(3):" in source and "lo = blk * 133 + min(blk, 1)" in source
    assert "def loss_value_and_grad_rows134" in source and "def loss_value_and_grad_rows133" in source
    assert "X[lo:lo + 134], y[lo:lo + 134]" in source and "X[lo:lo + 133], y[lo:lo + 133]" in source
    compiled = split.specialize(params, X, y)
    assert compiled.workspace is not None  # each block's large temporaries: buffers of its own, kept
    value, grads = split(params, X, y)
    want_value, want_grads = serial(params, X, y)
    assert value == pytest.approx(want_value, rel=1e-12)
    for key in params:
        np.testing.assert_allclose(grads[key], want_grads[key], rtol=1e-12, atol=1e-15)
    again = split(params, X, y)  # fixed blocks added in a fixed order: the same bits at every call
    assert again[0] == value and all(np.array_equal(again[1][k], grads[k]) for k in params)
    # the dispatcher (a new workspace at each call, what a user's @njit code calls) agrees
    leaves = [params[k] for k in sorted(params)] + [X, y] + list(compiled.captured())
    outs = compiled.dispatcher(*leaves)
    assert outs[0] == value and np.array_equal(outs[1], grads["W"])
    # and the serial gradient is the loss's: central differences on b
    numeric = numeric_grad(lambda b: loss({**params, "b": b}, X, y), params["b"])
    np.testing.assert_allclose(want_grads["b"], numeric, rtol=1e-6, atol=1e-9)


def test_sum_reduction_float32_grad(rng, three_threads, monkeypatch):
    monkeypatch.setattr(rows, "MIN_BLOCK_ROWS", 8)

    def loss(w, X, y):
        return np.sum(np.log1p(np.exp(-y * (X @ w))))  # logistic loss, summed over the rows

    w, X = rng.normal(size=5).astype(np.float32), rng.normal(size=(29, 5)).astype(np.float32)
    y = np.sign(rng.normal(size=29)).astype(np.float32)
    split = tg.grad(loss, parallel=tg.over_rows(1, 2, reduction="sum"), compile="wait")
    assert "reduction='sum'" in split.source(w, X, y) and "_rows10" in split.source(w, X, y)
    g = split(w, X, y)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, tg.grad(loss, compile="wait")(w, X, y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, numeric_grad(loss, w.astype(np.float64), X.astype(np.float64),
                                               y.astype(np.float64)), rtol=1e-3, atol=1e-4)


def test_the_split_code_takes_no_name_from_the_user(rng, three_threads, monkeypatch):
    # the function's own names (out_blocks, out_blk, failed) are not the parameters' of the same names
    monkeypatch.setattr(rows, "MIN_BLOCK_ROWS", 8)

    def loss(w, out_blocks, failed):  # (the value is named out)
        return np.mean((out_blocks @ w - failed) ** 2)

    w, X, y = rng.normal(size=3), rng.normal(size=(30, 3)), rng.normal(size=30)
    split = tg.value_and_grad(loss, parallel=tg.over_rows(1, 2), compile="wait")
    source = split.source(w, X, y)
    assert "out_blocks[lo:lo + 10]" in source and "out_blocks_ = np.empty((3,), np.float64)" in source
    value, g = split(w, X, y)
    assert value == pytest.approx(loss(w, X, y), rel=1e-12)
    np.testing.assert_allclose(g, 2 * X.T @ (X @ w - y) / 30, rtol=1e-12)


def softmax_loss(W, X, y):
    logits = X @ W
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(X.shape[0]), y])


def test_an_error_in_a_block_is_raised_with_the_users_line(rng, three_threads, monkeypatch):
    """Numba drops what a function called in a parallel loop raises: the blocks' calls catch it, and the
    failed block runs again after the loop to raise it (an index out of bounds in the last block here)."""
    monkeypatch.setattr(rows, "MIN_BLOCK_ROWS", 8)
    W, X = rng.normal(size=(4, 3)), rng.normal(size=(30, 4))
    y = rng.integers(0, 3, size=30)
    f = tg.value_and_grad(softmax_loss, parallel=tg.over_rows(1, 2), compile="wait")
    assert "_caught(" in f.source(W, X, y) and "if failed.any():" in f.source(W, X, y)
    value, grad = f(W, X, y)
    want = tg.value_and_grad(softmax_loss, compile="wait")(W, X, y)
    assert value == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(grad, want[1], rtol=1e-12, atol=1e-15)
    y[27] = 3  # a label one past the classes, in the third block (rows 20-29)
    with pytest.raises(IndexOutOfBoundsError, match="index 3 is out of bounds") as info:
        f(W, X, y)
    assert "logp[np.arange(X.shape[0]), y]" in str(info.value)


def test_too_few_rows_or_one_thread_run_the_batch_whole(rng, monkeypatch):
    loss = make_loss(rng)
    params, X, y = mlp_args(rng, 2 * rows.MIN_BLOCK_ROWS - 1)
    monkeypatch.setattr(backend, "threads", lambda: 4)
    assert "prange" not in tg.value_and_grad(loss, parallel=tg.over_rows(1, 2)).source(params, X, y)
    params, X, y = mlp_args(rng, 4 * rows.MIN_BLOCK_ROWS)
    monkeypatch.setattr(backend, "threads", lambda: 1)
    assert "prange" not in tg.value_and_grad(loss, parallel=tg.over_rows(1, 2)).source(params, X, y)
    monkeypatch.setattr(backend, "threads", lambda: 2)
    assert "for blk in prange(2):" in tg.value_and_grad(loss, parallel=tg.over_rows(1, 2)).source(params, X, y)
    # debug_nans checks each value where it is computed, in the batch's own code
    checked = tg.value_and_grad(loss, parallel=tg.over_rows(1, 2), debug_nans=True).source(params, X, y)
    assert "prange" not in checked and "NonFiniteError" in checked
    # random draws depend on a row's place in the whole batch (each block would draw the first block's)
    def dropped(params, X, y, key):
        return loss({**params, "v": tg.nn.dropout(params["v"] * np.ones((X.shape[0], 1)), 0.5, key)[0]}, X, y)
    source = tg.value_and_grad(dropped, parallel=tg.over_rows(1, 2)).source(params, X, y, tg.random.key(0))
    assert "random" in source and "prange" not in source
    # an array made from the batch's size is the whole batch's: the blocks' would differ
    def weighted(params, X, y):
        return np.mean(np.linspace(0.5, 1.5, X.shape[0]) * (X @ params["W"] @ params["v"] - y) ** 2)
    assert "prange" not in tg.value_and_grad(weighted, parallel=tg.over_rows(1, 2)).source(params, X, y)


def test_static_arguments_count_as_for_argnums(rng, three_threads):
    # over_rows' positions are the function's own, static ones among them, as argnums' are
    loss = make_loss(rng)
    params, X, y = mlp_args(rng, 400)

    def powered(p, params, X, y):
        return loss(params, X, y) ** p

    split = tg.value_and_grad(powered, argnums=1, static_argnums=0, parallel=tg.over_rows(2, 3), compile="wait")
    serial = tg.value_and_grad(powered, argnums=1, static_argnums=0, compile="wait")
    assert "for blk in prange(3):" in split.source(1, params, X, y)
    value, grads = split(1, params, X, y)
    want_value, want_grads = serial(1, params, X, y)
    assert value == pytest.approx(want_value, rel=1e-12)
    for key in params:
        np.testing.assert_allclose(grads[key], want_grads[key], rtol=1e-12, atol=1e-15)


def test_bad_uses_are_clear_errors(rng, three_threads):
    loss = make_loss(rng)
    params, X, y = mlp_args(rng, 400)
    with pytest.raises(GradTypeError, match="splits the rows of arguments that are differentiated"):
        tg.value_and_grad(loss, argnums=(0, 1), parallel=tg.over_rows(1, 2)).source(params, X, y)
    with pytest.raises(DataError, match="have 400 and 399 rows"):  # (a loss these rows do not break)
        tg.value_and_grad(lambda w, X, Z: np.mean(X @ w) + np.mean(Z @ w),
                          parallel=tg.over_rows(1, 2)).source(np.ones(12), X, X[:-1])
    with pytest.raises(DataError, match="there is no argument 3 of 3"):
        tg.value_and_grad(loss, parallel=tg.over_rows(1, 3)).source(params, X, y)
    with pytest.raises(DataError, match="not an array of rows"):
        tg.value_and_grad(lambda w, c: np.sum(w * c), parallel=tg.over_rows(1)).source(np.ones(3), 2.0)
    with pytest.raises(GradTypeError, match="has_aux=True"):
        tg.value_and_grad(lambda w, X: (np.mean(X @ w), X @ w), has_aux=True,
                          parallel=tg.over_rows(1)).source(np.ones(12), X)
    with pytest.raises(TracegradError, match="reduction must be 'mean' or 'sum'"):
        tg.over_rows(1, reduction="max")
    for bad in ("X", -1):
        with pytest.raises(TracegradError, match="positions of the data arguments"):
            tg.over_rows(bad)
    with pytest.raises(GradTypeError, match="argument 'X' is static: it cannot also be split by rows"):
        tg.value_and_grad(lambda p, w, X: np.mean(X @ w) ** p, argnums=1, static_argnums=2,
                          parallel=tg.over_rows(2))
    with pytest.raises(GradTypeError, match=r"over_rows\(1, 5, .*the function has 4 parameter\(s\)"):
        tg.value_and_grad(lambda w, X, k, y: np.mean(X @ w - y) * k, static_argnums=2, parallel=tg.over_rows(1, 5))
    with pytest.raises(GradTypeError, match=r"parallel=over_rows\(1, 3, reduction='mean'\) with has_aux"):
        tg.value_and_grad(lambda w, X, k, y: (np.mean(X @ w - y) * k, 0.0), has_aux=True, static_argnums=2,
                          parallel=tg.over_rows(1, 3))(np.ones(12), X, 2.0, y)
    for make in (lambda: tg.jit(loss, parallel=tg.over_rows(1, 2)), lambda: tg.set_parallel(tg.over_rows(1)),
                 lambda: tg.fit(loss, params, (X, y), optimizer=tg.optim.SGD(), parallel=tg.over_rows(1, 2))):
        with pytest.raises(TracegradError, match="over_rows names the data arguments of one function"):
            make()
    assert repr(tg.over_rows(1, 2)) == "over_rows(1, 2, reduction='mean')"
