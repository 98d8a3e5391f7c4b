"""The workspace: large temporaries of the generated code live in buffers allocated once per
specialisation and passed to the compiled function; outputs never alias them, threads never share them."""
import threading

import numba
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import codegen
from tracegrad.testing import numeric_grad


@pytest.fixture
def small_workspace(monkeypatch):
    """Every array temporary goes to the workspace (small shapes compile fast)."""
    monkeypatch.setattr(codegen, "WORKSPACE_BYTES", 1)


def mlp_loss(W1, b1, W2, X, y):
    h = np.maximum(X @ W1 + b1, 0.0)
    return np.mean((np.tanh(h @ W2) - y) ** 2)


def mlp_args(rng, dtype=np.float64):
    args = (rng.normal(size=(6, 8)), rng.normal(size=8) * 0.1, rng.normal(size=(8, 3)), rng.normal(size=(5, 6)),
            rng.normal(size=(5, 3)))
    return tuple(a.astype(dtype) for a in args)


def _buffers(f, *args):
    entry = f.specialize(*args)
    assert entry.workspace is not None, entry.source
    return entry, entry.workspace.buffers


def test_large_temporaries_only_by_default(rng):
    # below WORKSPACE_BYTES nothing changes: one function, no workspace
    small = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    args = mlp_args(rng)
    small(*args)
    entry = small.specialize(*args)
    assert entry.workspace is None and entry.module.inner is None and "_workspace(" not in entry.source
    # a (600, 800) float64 temporary (3.8 MB) is in it; the output (a scalar) and the small ones are not
    f = tg.grad(lambda x, W: np.sum(np.tanh(x @ W)))
    x, W = rng.normal(size=(600, 4)), rng.normal(size=(4, 800))
    g = f(x, W)
    entry = f.specialize(x, W)
    names = [name for name, _, _ in entry.module.workspace]
    assert entry.module.workspace and all(shape == (600, 800) for _, shape, _ in entry.module.workspace)
    assert f"def {entry.module.inner}(x, W, {', '.join(names)}):" in entry.source
    np.testing.assert_allclose(g, (1 - np.tanh(x @ W) ** 2) @ W.T, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients_with_a_workspace_match_finite_differences(small_workspace, rng, dtype):
    args = mlp_args(rng, dtype)
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    value, grads = vg(*args)
    entry, buffers = _buffers(vg, *args)
    assert len(buffers) >= 4 and all(b.dtype == dtype for b in buffers)
    assert "np.dot(X, W1, " in entry.source  # the matrix product written into its buffer
    tol = dict(rtol=2e-3, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-6, atol=1e-8)
    for i, grad in enumerate(grads):
        np.testing.assert_allclose(grad, numeric_grad(mlp_loss, *args, argnums=i), **tol)
    np.testing.assert_allclose(value, mlp_loss(*args), rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_outputs_never_alias_the_workspace(small_workspace, rng):
    def f(W, X):
        s = X @ W  # a temporary in the workspace ...
        return np.sum(np.sin(s)), s.T, s.reshape(-1), np.exp(s)  # ... and returned as views of it

    jf = tg.jit(f)
    args = (rng.normal(size=(4, 3)), rng.normal(size=(5, 4)))
    first = jf(*args)
    entry, buffers = _buffers(jf, *args)
    for out in first[1:]:
        assert not any(np.shares_memory(out, b) for b in buffers)
    kept = [np.copy(o) for o in first[1:]]
    second = jf(args[0] * 2, args[1])  # the buffers are overwritten ...
    for out, want in zip(first[1:], kept):
        np.testing.assert_array_equal(out, want)  # ... the first results are not
    for out, want in zip(second, f(args[0] * 2, args[1])):
        np.testing.assert_allclose(out, want, rtol=1e-12)


def test_a_busy_workspace_is_not_shared(small_workspace, rng):
    """A call that finds the workspace in use (another thread) gets a new one: same result, buffers untouched."""
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    args = mlp_args(rng)
    want = vg(*args)
    entry, buffers = _buffers(vg, *args)
    before = [np.copy(b) for b in buffers]
    other = (args[0] * 0.5,) + args[1:]
    assert entry.workspace.lock.acquire(False)
    try:
        got = vg(*other)  # the guard
        slow = entry.run(list(other))  # the general path
    finally:
        entry.workspace.lock.release()
    for b, was in zip(buffers, before):
        np.testing.assert_array_equal(b, was)
    reference = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="never")(*other)
    for result in (got, slow):
        np.testing.assert_allclose(result[0], reference[0], rtol=1e-12)
        for a, b in zip(result[1], reference[1]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vg(*args)[0], want[0], rtol=0)  # and then the workspace again


def test_threads_calling_at_once_get_their_own_results(small_workspace, rng):
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    inputs = [mlp_args(np.random.default_rng(k)) for k in range(4)]
    want = [tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="never")(*a) for a in inputs]
    vg(*inputs[0])
    errors = []

    def work(k):
        for _ in range(200):
            value, grads = vg(*inputs[k])
            if not np.isclose(value, want[k][0], rtol=1e-12) or not all(
                    np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(grads, want[k][1])):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_dispatcher_from_user_njit_code_allocates_its_own(small_workspace, rng):
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    args = mlp_args(rng)
    want = vg(*args)
    entry = vg.specialize(*args)
    kernel = entry.dispatcher
    assert entry.module.inner and kernel.py_func.__name__ == entry.module.function

    @numba.njit
    def user_step(W1, b1, W2, X, y):
        value, gW1, gb1, gW2 = kernel(W1, b1, W2, X, y)
        return value, gW1, gb1, gW2

    got = user_step(*args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for a, b in zip(got[1:], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_background_compiles_the_function_taking_the_workspace(small_workspace, rng, tmp_path):
    tg.set_cache_dir(tmp_path)
    try:
        vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="background")
        args = mlp_args(rng)
        first = vg(*args)
        entry = vg.specialize(*args)
        assert entry.tier == "evaluating"
        assert entry.wait() == "compiled"
        later = vg(*args)
        assert entry.workspace.inner.signatures  # what runs now
        np.testing.assert_allclose(later[0], first[0], rtol=1e-12)
        for a, b in zip(later[1], first[1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    finally:
        tg.set_cache_dir(None)


def test_long_code_split_in_parts_keeps_the_workspace(small_workspace, monkeypatch, rng):
    monkeypatch.setattr(codegen, "SPLIT_LINES", 10)
    monkeypatch.setattr(codegen, "PART_LINES", 6)
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    args = mlp_args(rng)
    value, grads = vg(*args)
    entry, _ = _buffers(vg, *args)
    assert f"{entry.module.inner}_part1" in entry.module.parts and entry.module.inner in entry.module.parts
    reference = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="never")(*args)
    np.testing.assert_allclose(value, reference[0], rtol=1e-12)
    for a, b in zip(grads, reference[1]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_elementwise_operators_write_into_their_buffers(small_workspace, rng):
    def f(W, b, X):
        z = X @ W + b  # read whole by the reduction: a statement of its own, np.add(s0, b, z)
        return np.sum(np.max(z, axis=1) * np.max(z - 1.0, axis=0).sum())

    args = (rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(5, 3)))
    vg = tg.value_and_grad(f, argnums=(0, 1))
    value, grads = vg(*args)
    source = vg.specialize(*args).source
    assert "np.add(" in source and "np.subtract(" in source, source
    np.testing.assert_allclose(value, f(*args), rtol=1e-12)
    for i, grad in enumerate(grads):
        np.testing.assert_allclose(grad, numeric_grad(f, *args, argnums=i), rtol=1e-6, atol=1e-8)


def test_fit_calls_the_loss_with_a_workspace(small_workspace):
    """fit's epoch calls the loss's dispatcher, which allocates the workspace its function takes."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(24, 5)), rng.normal(size=(24, 2))

    def loss(params, X, y):
        h = np.tanh(X @ params["W1"] + params["b1"])
        return np.mean((h @ params["W2"] - y) ** 2)

    params = {"W1": 0.3 * rng.normal(size=(5, 6)), "b1": np.zeros(6), "W2": 0.3 * rng.normal(size=(6, 2))}
    vg = tg.value_and_grad(loss)
    vg(params, X[:8], y[:8])
    assert vg.specialize(params, X[:8], y[:8]).module.workspace
    trained, history = tg.fit(loss, params, (X, y), optimizer=tg.optim.SGD(lr=0.1), batch_size=8, epochs=2,
                              shuffle=False, progress=False)
    # the same steps from Python: value_and_grad (through its workspace) and the update
    expect, opt = {k: v.copy() for k, v in params.items()}, tg.optim.SGD(lr=0.1)
    state = opt.init(expect)
    for _ in range(2):
        for start in range(0, 24, 8):
            opt.update(expect, vg(expect, X[start:start + 8], y[start:start + 8])[1], state)
    for k in params:
        np.testing.assert_allclose(trained[k], expect[k], rtol=1e-12, atol=1e-14)


def test_user_njit_code_can_pass_a_workspace_of_its_own(small_workspace, rng):
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2))
    args = mlp_args(rng)
    want = vg(*args)
    entry = vg.specialize(*args)
    kernel, buffers = entry.workspace_dispatcher, entry.new_workspace()
    assert kernel is entry.workspace.inner and len(buffers) == len(entry.workspace.buffers) > 0
    assert not any(np.shares_memory(a, b) for a in buffers for b in entry.workspace.buffers)
    for b in buffers:
        b.fill(np.nan)  # the function writes every buffer before it reads it

    @numba.njit
    def user_step(W1, b1, W2, X, y, buffers):
        return kernel(W1, b1, W2, X, y, *buffers)

    got = user_step(*args, buffers)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for a, b in zip(got[1:], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert not any(np.shares_memory(a, w) for w in buffers)  # results never alias the workspace
    assert all(np.isfinite(b).any() for b in buffers)  # the temporaries went there
    # no workspace: the dispatcher, and no buffers
    plain = tg.value_and_grad(lambda x: np.sum(x ** 2)).specialize(np.ones(3))
    assert plain.workspace_dispatcher is plain.dispatcher and plain.new_workspace() == ()
