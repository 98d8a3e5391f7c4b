"""The public API: argnums, has_aux, pytrees, dtypes, retracing, closures, higher order."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad


def test_python_floats_in_python_floats_out():
    value, g = tg.value_and_grad(lambda x: x * x + 1.0)(3.0)
    assert type(value) is float and type(g) is float
    assert (value, g) == (10.0, 6.0)


def test_argnums_int_tuple_and_negative():
    f = lambda x, y, z: x * y * z
    assert tg.grad(f)(2.0, 3.0, 4.0) == 12.0
    assert tg.grad(f, argnums=1)(2.0, 3.0, 4.0) == 8.0
    assert tg.grad(f, argnums=(2, 0))(2.0, 3.0, 4.0) == (6.0, 12.0)
    assert tg.grad(f, argnums=-1)(2.0, 3.0, 4.0) == 6.0


def test_pytrees_of_dicts_tuples_and_lists(rng):
    params = {"W": rng.normal(size=(3, 2)), "b": [rng.normal(size=2), (0.5,)]}
    X = rng.normal(size=(4, 3))

    def loss(params, X):
        h = np.tanh(X @ params["W"] + params["b"][0]) * params["b"][1][0]
        return np.mean(h ** 2)

    g = tg.grad(loss)(params, X)
    assert set(g) == {"W", "b"} and isinstance(g["b"], list) and isinstance(g["b"][1], tuple)
    assert type(g["b"][1][0]) is float
    expected = numeric_grad(loss, params, X)
    np.testing.assert_allclose(g["W"], expected["W"], rtol=1e-6)
    np.testing.assert_allclose(g["b"][0], expected["b"][0], rtol=1e-6)
    assert g["b"][1][0] == pytest.approx(expected["b"][1][0], rel=1e-6)


def test_has_aux_returns_aux_unchanged(rng):
    def f(x):
        y = np.sin(x)
        return np.sum(y), {"y": y, "n": 3.0}

    x = rng.normal(size=4)
    g, aux = tg.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, np.cos(x))
    np.testing.assert_allclose(aux["y"], np.sin(x))
    assert aux["n"] == 3.0
    (value, aux2), g2 = tg.value_and_grad(f, has_aux=True)(x)
    assert value == pytest.approx(np.sum(np.sin(x)))
    np.testing.assert_allclose(g2, g)


def test_float32_in_float32_out(rng):
    W = rng.normal(size=(3, 2)).astype(np.float32)
    X = rng.normal(size=(5, 3)).astype(np.float32)
    value, g = tg.value_and_grad(lambda W, X: np.sum(tg.sigmoid(X @ W) * 0.5))(W, X)
    assert g.dtype == np.float32 and isinstance(value, np.float32)
    g64 = tg.grad(lambda W, X: np.sum(tg.sigmoid(X @ W) * 0.5))(W.astype(np.float64), X.astype(np.float64))
    np.testing.assert_allclose(g, g64, rtol=1e-5)
    source = tg.source(tg.grad(lambda W, X: np.sum(tg.sigmoid(X @ W) * 0.5)), W, X)
    assert "np.float32(0.5)" in source


def test_mixed_precision_gradient_takes_the_input_dtype(rng):
    x32 = rng.normal(size=3).astype(np.float32)
    y64 = rng.normal(size=3)
    gx, gy = tg.grad(lambda x, y: np.sum(x * y), argnums=(0, 1))(x32, y64)
    assert gx.dtype == np.float32 and gy.dtype == np.float64
    np.testing.assert_allclose(gx, y64.astype(np.float32))


def test_retraces_on_new_shape_and_dtype(rng):
    calls = []

    def f(x):
        calls.append(x.shape)
        return np.sum(x ** 2)

    g = tg.grad(f)
    np.testing.assert_allclose(g(np.ones(3)), 2 * np.ones(3))
    g(np.ones(3) * 2)
    assert len(calls) == 1  # same signature: no retrace
    np.testing.assert_allclose(g(np.ones((2, 2))), 2 * np.ones((2, 2)))
    assert g(np.ones(3, np.float32)).dtype == np.float32
    assert calls == [(3,), (2, 2), (3,)]


def test_captured_arrays_are_read_at_call_time():
    W = np.array([1.0, 2.0, 3.0])
    g = tg.grad(lambda x: np.sum(W * x))
    np.testing.assert_allclose(g(np.zeros(3)), [1, 2, 3])
    W[0] = 10.0  # in place: seen by the next call
    np.testing.assert_allclose(g(np.zeros(3)), [10, 2, 3])
    assert "W" in tg.source(g, np.zeros(3))  # passed in, not baked into the code


def test_captured_global_rebinding_is_seen():
    global SCALE
    SCALE = np.array([2.0, 2.0])
    g = tg.grad(lambda x: np.sum(SCALE * x * x))
    np.testing.assert_allclose(g(np.ones(2)), [4, 4])
    SCALE = np.array([3.0, 3.0])
    np.testing.assert_allclose(g(np.ones(2)), [6, 6])
    SCALE = np.array([1.0, 1.0, 1.0])  # a new shape: traced again
    np.testing.assert_allclose(g(np.ones(3)), [2, 2, 2])


SCALE = None


def test_inputs_are_never_mutated_and_outputs_never_alias_inputs(rng):
    x = rng.normal(size=(3, 2))
    y = rng.normal(size=(3, 2))
    x0, y0 = x.copy(), y.copy()
    gx, gy = tg.grad(lambda x, y: np.sum(x * y), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_allclose(gx, y)
    assert not np.shares_memory(gx, y) and not np.shares_memory(gy, x)
    out = tg.jit(lambda x: x.T)(x)
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, x.T)


def test_jit_returns_pytrees(rng):
    x = rng.normal(size=3)
    out = tg.jit(lambda x: {"a": np.exp(x), "b": (np.sum(x), 2.0)})(x)
    np.testing.assert_allclose(out["a"], np.exp(x))
    assert out["b"][0] == pytest.approx(np.sum(x)) and out["b"][1] == 2.0


def test_grad_of_grad_scalar():
    f = lambda x: x ** 3 + np.sin(x)
    d2 = tg.grad(tg.grad(f))
    assert d2(0.7) == pytest.approx(6 * 0.7 - np.sin(0.7), rel=1e-12)
    d3 = tg.grad(tg.grad(tg.grad(f)))
    assert d3(0.7) == pytest.approx(6 - np.cos(0.7), rel=1e-12)


def test_grad_of_grad_through_arrays(rng):
    x = rng.normal(size=3)
    hvp = lambda x, v: np.sum(tg.grad(lambda x: np.sum(np.tanh(x) ** 2))(x) * v)
    v = rng.normal(size=3)
    got = tg.grad(hvp)(x, v)
    np.testing.assert_allclose(got, numeric_grad(hvp, x, v), rtol=1e-6)


def test_nan_input_gives_nan_not_a_crash():
    value, g = tg.value_and_grad(lambda x: np.sum(np.log(x)))(np.array([1.0, np.nan, -1.0]))
    assert np.isnan(value)
    assert g[0] == 1.0 and np.isnan(g[1])
    assert tg.grad(lambda x: 1.0 / x)(0.0) == -np.inf


def test_integer_array_labels_for_cross_entropy(rng):
    logits = rng.normal(size=(4, 3))
    labels = np.array([0, 2, 1, 2])

    def cross_entropy(z, labels):
        z = z - np.max(z, axis=1, keepdims=True)
        logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        return -np.mean(logp[np.arange(z.shape[0]), labels])

    g = tg.grad(cross_entropy)(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, (p - np.eye(3)[labels]) / 4, rtol=1e-10)


def test_decorator_forms():
    @tg.grad
    def f(x):
        return x * x

    @tg.value_and_grad(argnums=1)
    def h(x, y):
        return x * y

    assert f(3.0) == 6.0 and h(2.0, 5.0) == (10.0, 2.0)
    assert "tracegrad.grad" in repr(f)


def test_compiled_kernel_is_callable_from_user_njit_code(rng):
    import numba

    loss = tg.value_and_grad(lambda w, x: np.sum((x @ w) ** 2))
    w, x = rng.normal(size=2), rng.normal(size=(5, 2))
    kernel = loss.specialize(w, x).dispatcher

    @numba.njit
    def descend(w, x, steps):
        for _ in range(steps):
            value, g = kernel(w, x)
            w = w - 0.01 * g
        return w

    w2 = descend(w, x, 3)
    expected = w
    for _ in range(3):
        expected = expected - 0.01 * loss(expected, x)[1]
    np.testing.assert_allclose(w2, expected, rtol=1e-12)


def test_tracing_works_under_a_profiler():
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        def f(x):
            hidden = np.tanh(x)
            return np.sum(hidden)
        src = tg.source(tg.grad(f), np.ones(2))
    finally:
        profiler.disable()
    assert "hidden = np.tanh(x)" in src


def test_scipy_expit_traces_to_the_sigmoid_primitive(rng):
    from scipy.special import expit

    x = rng.normal(size=3)
    graph = tg.make_graph(lambda x: np.sum(expit(x)), x)
    assert [node.primitive.name for node in graph.nodes] == ["sigmoid", "reduce_sum"]
    src = tg.source(tg.grad(lambda x: np.sum(expit(x))), x)
    assert "sigmoid(x[i0])" in src and "* (1.0 - s0) * s0" in src
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(expit(x)))(x), expit(x) * (1 - expit(x)), rtol=1e-12)


def test_only_the_requested_gradients_are_computed(rng):
    W, x = rng.normal(size=(3, 3)), rng.normal(size=3)
    graph = tg.make_graph(tg.grad(lambda W, x: np.sum(np.tanh(W @ x)), argnums=1), W, x)
    names = str(graph)
    assert "grad_x" in names and "grad_W" not in names
    # W's gradient would need an outer product (a reshape); x's needs only W.T @ g
    assert not any(node.primitive.name == "reshape" for node in graph.nodes)


def test_numba_cache_is_reused_by_a_new_process(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, tracegrad as tg, tracegrad.kernels
        f = tg.grad(lambda x: np.sum(tg.sigmoid(np.maximum(x, 0.0)) * np.sin(x)))
        print(f(np.ones(3))[0])
        entry = f.specialize(np.ones(3))
        stats = entry.dispatcher.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        # the kernels it calls (sigmoid; maximum's gradient is written inline) are loaded from the cache too
        print(",".join(entry.module.kernels),
              sum(sum(getattr(tracegrad.kernels, k).stats.cache_misses.values()) for k in entry.module.kernels))
    """))
    env = dict(__import__("os").environ, TRACEGRAD_CACHE_DIR=str(tmp_path / "cache"))
    first, second = (subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                                    check=True).stdout.split() for _ in range(2))
    assert first[0] == second[0]
    assert (first[1], first[2]) == ("0", "1")  # compiled ...
    assert (second[1], second[2]) == ("1", "0")  # ... then loaded from Numba's cache, not compiled again
    assert second[3] == "sigmoid" and second[4] == "0"


def test_cache_dir_can_be_set(tmp_path):
    try:
        tg.set_cache_dir(tmp_path)
        assert tg.cache_dir() == tmp_path
        tg.grad(lambda x: x * 3.25)(1.0)
        assert any(p.suffix == ".py" for p in tmp_path.iterdir())
    finally:
        tg.set_cache_dir(None)


def test_stop_gradient_blocks_the_gradient_but_not_the_value(rng):
    z = rng.normal(size=(3, 4))

    def log_softmax(z):
        shifted = z - tg.stop_gradient(np.max(z, axis=1, keepdims=True))
        return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))

    w = rng.normal(size=(3, 4))
    g = tg.grad(lambda z: np.sum(log_softmax(z) * w))(z)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(g, w - p * w.sum(axis=1, keepdims=True), rtol=1e-10)
    graph = tg.make_graph(tg.grad(lambda z: np.sum(log_softmax(z) * w)), z)
    assert "reduce_max" in str(graph) and "eq" not in [n.primitive.name for n in graph.nodes]
    assert tg.grad(lambda x: x * tg.stop_gradient(x))(3.0) == 3.0


def test_the_fast_path_never_converts_arguments_numba_would_accept(rng):
    # Numba's dispatch turns an int or a float32 into a float64 silently; the guard must not let it
    f = tg.value_and_grad(lambda x, y: x * y + np.sin(x), argnums=(0, 1))
    assert f(2.0, 3.0) == (pytest.approx(6.0 + np.sin(2.0)), (pytest.approx(3.0 + np.cos(2.0)), 2.0))
    with pytest.raises(tg.GradTypeError, match="'x'"):
        f(2, 3.0)
    value, (gx, gy) = f(np.float32(2.0), np.float32(3.0))
    assert type(value) is np.float32 and type(gx) is np.float32
    x = rng.normal(size=3)
    g = tg.grad(lambda x: np.sum(x ** 3))
    for x in (x, rng.normal(size=4), x.astype(np.float32), x, rng.normal(size=(2, 2))):  # back and forth
        out = g(x)
        assert out.dtype == x.dtype and out.shape == x.shape
        np.testing.assert_allclose(out, 3 * x ** 2, rtol=1e-6)
    with pytest.raises(tg.GradTypeError):
        g(x, x)  # one argument too many reaches the general path and its error


def _twice_sin(x):
    return 2.0 * np.sin(x)


def test_transformed_functions_pickle_and_copy():
    import copy
    import pickle

    f = tg.value_and_grad(_twice_sin)
    assert f(0.5) == f(0.5)  # the fast path is installed on f's own class
    for g in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f)):
        assert g(0.5) == f(0.5) and g(0.25) == (pytest.approx(2 * np.sin(0.25)), pytest.approx(2 * np.cos(0.25)))
        assert type(g) is not type(f)  # each has its own fast path
