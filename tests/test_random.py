"""tg.random: draws from explicit keys happen at every call, the same in the compiled code, the NumPy
evaluator and eagerly; gradients flow through loc/scale and not into keys; np.random inside a traced
function is refused at the user's line instead of being frozen at trace time."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad

TIERS = ["wait", "never"]  # compiled, evaluator


def draws(key):
    return (tg.random.uniform(key, (2, 3)), tg.random.uniform(key, (5,), dtype=np.float32),
            tg.random.bernoulli(key, 0.3, (7,)), tg.random.permutation(key, 9), tg.random.split(key, 3),
            tg.random.fold_in(key, 12345), tg.random.uniform(key, (), -2.0, 3.0), tg.random.normal(key, (4,), dtype=np.float32))


def test_same_numbers_compiled_evaluated_and_eager():
    key = tg.random.key(42)
    eager = draws(key)
    for tier in TIERS:
        got = tg.jit(draws, compile=tier)(key)
        for a, b in zip(got, eager):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(a, b)


def test_normal_float64_agrees_between_tiers_to_the_last_bit_of_log_and_cos():
    key = tg.random.key(3)
    eager = tg.random.normal(key, (20000,))
    compiled = tg.jit(lambda k: tg.random.normal(k, (20000,)))(key)
    evaluated = tg.jit(lambda k: tg.random.normal(k, (20000,)), compile="never")(key)
    np.testing.assert_array_equal(evaluated, eager)
    np.testing.assert_allclose(compiled, eager, rtol=4e-16, atol=4e-16)


@pytest.mark.parametrize("tier", TIERS)
def test_a_new_key_gives_new_numbers_at_every_call(tier):
    f = tg.jit(lambda x, key: x * tg.random.uniform(key, x.shape), compile=tier)
    x = np.ones(16)
    key = tg.random.key(0)
    a, b, a2 = f(x, tg.random.fold_in(key, 0)), f(x, tg.random.fold_in(key, 1)), f(x, tg.random.fold_in(key, 0))
    assert not np.any(a == b)
    np.testing.assert_array_equal(a, a2)
    assert len(f._cache) == 1  # one specialisation: the key is an argument like any other


def test_a_key_read_from_the_globals_is_read_at_every_call():
    global GLOBAL_KEY
    GLOBAL_KEY = tg.random.key(1)
    f = tg.jit(lambda x: x + tg.random.normal(GLOBAL_KEY, x.shape))
    a = f(np.zeros(4))
    GLOBAL_KEY = tg.random.key(2)
    b = f(np.zeros(4))
    np.testing.assert_array_equal(a, tg.random.normal(tg.random.key(1), (4,)))
    np.testing.assert_array_equal(b, tg.random.normal(tg.random.key(2), (4,)))


def test_a_key_made_inside_the_function_is_a_constant():
    # documented: a key that is not traced gives the same numbers at every call (as in JAX)
    f = tg.jit(lambda x: x * tg.random.uniform(tg.random.key(5), x.shape))
    np.testing.assert_array_equal(f(np.ones(3)), f(np.ones(3)))
    np.testing.assert_array_equal(f(np.ones(3)), tg.random.uniform(tg.random.key(5), (3,)))


def test_distributions():
    key = tg.random.key(11)
    n = 200_000
    u = tg.jit(lambda k: tg.random.uniform(k, (n,)))(key)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 4 / np.sqrt(12 * n) and abs(u.var() - 1 / 12) < 1e-3
    z = tg.jit(lambda k: tg.random.normal(k, (n,)))(key)
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z ** 4) - 3) < 0.1  # kurtosis of a normal
    b = tg.jit(lambda k: tg.random.bernoulli(k, 0.2, (n,)))(key)
    assert b.dtype == np.bool_ and abs(b.mean() - 0.2) < 4 * np.sqrt(0.16 / n)
    p = tg.random.permutation(key, 1000)
    np.testing.assert_array_equal(np.sort(p), np.arange(1000))
    assert np.sum(p == np.arange(1000)) < 10
    keys = tg.random.split(key, 10_000)
    assert len(set(keys.tolist())) == 10_000 and key not in set(keys.tolist())
    # successive keys' streams are not correlated
    a, b = (tg.random.normal(k, (n,)) for k in tg.random.split(key))
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(n)


@pytest.mark.parametrize("tier", TIERS)
def test_reparameterised_gradients_match_central_differences(tier):
    key = tg.random.key(9)

    def objective(mu, sigma, key):  # a Monte Carlo estimate of E[(mu + sigma eps)^2] with fixed noise
        z = tg.random.normal(key, (64,), mu, sigma)
        return np.mean(z * z) + np.mean(tg.random.uniform(tg.random.fold_in(key, 1), (8,), -sigma, mu))

    mu, sigma = np.array(0.3), np.array(1.7)
    g_mu, g_sigma = tg.grad(objective, argnums=(0, 1), compile=tier)(mu, sigma, key)
    assert g_mu == pytest.approx(numeric_grad(objective, mu, sigma, key, argnums=0), rel=1e-6)
    assert g_sigma == pytest.approx(numeric_grad(objective, mu, sigma, key, argnums=1), rel=1e-6)
    eps = tg.random.normal(key, (64,))
    assert g_mu == pytest.approx(np.mean(2 * (mu + sigma * eps)) + np.mean(tg.random.uniform(
        tg.random.fold_in(key, 1), (8,))), rel=1e-12)


def test_no_gradient_through_bernoulli_probability():
    key = tg.random.key(0)
    g = tg.grad(lambda p: np.sum(np.where(tg.random.bernoulli(key, p, (10,)), 1.0, 0.0) * p))(0.5)
    assert g == np.sum(tg.random.bernoulli(key, 0.5, (10,)))  # only the explicit * p


def test_float32_draws_stay_float32_under_grad():
    key = tg.random.key(4)
    x = np.ones(5, np.float32)
    g = tg.grad(lambda x, k: np.sum(x * tg.random.normal(k, x.shape, dtype=x.dtype)))(x, key)
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, tg.random.normal(key, (5,), dtype=np.float32))
    loc = tg.random.normal(key, None, np.zeros(3, np.float32), np.float32(2))
    assert loc.dtype == np.float32


@pytest.mark.parametrize("tier", TIERS)
def test_dropout(tier):
    x = np.arange(1.0, 1001.0)
    f = tg.jit(lambda x, key: tg.nn.dropout(x, 0.25, key), compile=tier)
    a = f(x, tg.random.key(0))
    b = f(x, tg.random.key(1))
    assert not np.array_equal(a == 0, b == 0)
    for out in (a, b):
        kept = out != 0
        assert 0.2 < 1 - kept.mean() < 0.3
        np.testing.assert_allclose(out[kept], x[kept] / 0.75, rtol=1e-15)
    np.testing.assert_array_equal(a, tg.nn.dropout(x, 0.25, tg.random.key(0)))  # eager: the same mask
    g = tg.grad(lambda x, key: np.sum(tg.nn.dropout(x, 0.25, key)), compile=tier)(x, tg.random.key(0))
    np.testing.assert_array_equal(g, np.where(a != 0, 1 / 0.75, 0.0))
    assert tg.nn.dropout(x, 0.25, None) is x
    with pytest.raises(tg.DataError, match="rate"):
        tg.nn.dropout(x, 1.0, tg.random.key(0))


# ---------------------------------------------------------------- np.random refused, not frozen


RNG = np.random.default_rng(0)


def uses_legacy(x):
    return x * np.random.rand(3)  # refused here


def uses_generator(x):
    return x * RNG.normal(size=3)  # refused here


def uses_default_rng(x):
    return x * np.random.default_rng(0).normal(size=3)  # refused here


def _helper():
    return np.random.normal(size=3)  # refused here


def uses_helper(x):
    return x * _helper()


@pytest.mark.parametrize("fn", [uses_legacy, uses_generator, uses_default_rng, uses_helper], ids=lambda f: f.__name__)
def test_np_random_inside_a_traced_function_is_refused_at_the_users_line(fn):
    with pytest.raises(tg.UnsupportedError, match="drawn once, while tracing") as info:
        tg.jit(fn)(np.ones(3))
    assert "refused here" in str(info.value) and "tg.random" in str(info.value)


class Model:
    def __init__(self):
        self.rng = np.random.default_rng(1)

    def __call__(self, x):
        return x * self.rng.normal(size=3)


def test_a_generator_reached_through_an_object_is_caught_by_its_state():
    with pytest.raises(tg.UnsupportedError, match="a Generator it reads drew numbers"):
        tg.jit(Model())(np.ones(3))


def test_np_random_outside_the_trace_is_untouched():
    np.random.seed(1)
    expected = np.random.rand(3)
    np.random.seed(1)
    f = tg.jit(lambda x, k: x * tg.random.uniform(k, (3,)))
    f(np.ones(3), tg.random.key(0))
    np.testing.assert_array_equal(np.random.rand(3), expected)  # the trace drew nothing from it


def test_bad_keys():
    with pytest.raises(tg.GradTypeError, match="takes a key, not the int 3"):
        tg.random.uniform(3, (2,))
    with pytest.raises(tg.ShapeError, match="uint64 scalar"):
        tg.jit(lambda k: tg.random.uniform(k, (2,)))(1.5)
    with pytest.raises(tg.ShapeError, match="uint64 scalar"):
        tg.jit(lambda k: tg.random.normal(k, (2,)))(tg.random.split(tg.random.key(0)))
    with pytest.raises(tg.GradTypeError, match="float32 or float64"):
        tg.random.uniform(tg.random.key(0), (2,), dtype=np.int64)
    with pytest.raises(tg.GradTypeError, match="int seed"):
        tg.random.key(1.5)


# ---------------------------------------------------------------- tg.fit with a key: dropout


def _dropout_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    params = {"W": rng.normal(size=(4, 8)) * 0.5, "v": rng.normal(size=8) * 0.5}
    return X, y, params


def dropout_loss(p, X, y, key):
    h = tg.nn.dropout(np.tanh(X @ p["W"]), 0.5, key)
    return tg.nn.mse(h @ p["v"], y)


FIT = dict(optimizer=tg.optim.SGD(lr=0.05), batch_size=16, progress=False, shuffle=False)


def _by_hand(params, X, y, steps_key, epochs):
    """fit's documented sequence: update t (from 1) uses steps_key(t)."""
    p = {k: v.copy() for k, v in params.items()}
    grad, t = tg.grad(dropout_loss), 0
    for _ in range(epochs):
        for s in range(0, len(X), 16):
            t += 1
            g = grad(p, X[s:s + 16], y[s:s + 16], steps_key(t))
            for k in p:
                p[k] = p[k] - 0.05 * g[k]
    return p


def test_fit_draws_a_new_dropout_mask_at_every_step_and_reproduces():
    X, y, params = _dropout_problem()
    key = tg.random.key(0)
    trained, history = tg.fit(dropout_loss, params, (X, y), key=key, epochs=2, **FIT)
    expected = _by_hand(params, X, y, lambda t: tg.random.fold_in(key, t), epochs=2)
    for k in params:
        np.testing.assert_allclose(trained[k], expected[k], rtol=1e-12, atol=1e-14)
    # one mask for every step would be another training run
    frozen = _by_hand(params, X, y, lambda t: tg.random.fold_in(key, 1), epochs=2)
    assert np.abs(trained["W"] - frozen["W"]).max() > 1e-3
    again, history_again = tg.fit(dropout_loss, params, (X, y), key=key, epochs=2, **FIT)
    for k in params:
        np.testing.assert_array_equal(again[k], trained[k])
    assert history_again.loss == history.loss
    other, _ = tg.fit(dropout_loss, params, (X, y), key=tg.random.key(1), epochs=2, **FIT)
    assert np.abs(other["W"] - trained["W"]).max() > 1e-3
    # the NumPy epochs draw the same masks
    evaluated, _ = tg.fit(dropout_loss, params, (X, y), key=key, epochs=2, compile="never", **FIT)
    for k in params:
        np.testing.assert_allclose(evaluated[k], trained[k], rtol=1e-12, atol=1e-14)


def test_fit_with_a_key_resumes_the_same_sequence_and_evaluates_without_dropout():
    X, y, params = _dropout_problem()
    key = tg.random.key(3)
    whole, _ = tg.fit(dropout_loss, params, (X, y), key=key, epochs=3, **FIT)
    first, history = tg.fit(dropout_loss, params, (X, y), key=key, epochs=2, **FIT)
    resumed, _ = tg.fit(dropout_loss, first, (X, y), key=key, epochs=1, state=history.state, **FIT)
    for k in params:
        np.testing.assert_array_equal(resumed[k], whole[k])
    _, history = tg.fit(dropout_loss, params, (X, y), key=key, epochs=1, validation=(X[:8], y[:8]), **FIT)
    assert history.initial_loss == pytest.approx(dropout_loss(params, X, y, None), rel=1e-12)
    with pytest.raises(tg.DataError, match="tg.random.key"):
        tg.fit(dropout_loss, params, (X, y), key=7, **FIT)


# ---------------------------------------------------------------- inside loops, vmap and forward mode


def test_draws_inside_loops_vmap_and_forward_mode():
    key = tg.random.key(0)

    def walk(mu, key):  # a key per step, folded from the loop's index
        return tg.fori_loop(0, 5, lambda i, c: c + mu * tg.random.normal(tg.random.fold_in(key, i), ()), 0.0)

    steps = [tg.random.normal(tg.random.fold_in(key, i), ()) for i in range(5)]
    value, grad = tg.value_and_grad(walk)(2.0, key)
    assert value == pytest.approx(2.0 * sum(steps), rel=1e-12) and grad == pytest.approx(sum(steps), rel=1e-12)
    keys = tg.random.split(key, 4)
    mapped = tg.vmap(lambda k: tg.random.uniform(k, (3,)))(keys)
    np.testing.assert_array_equal(mapped, np.stack([tg.random.uniform(k, (3,)) for k in keys]))

    def scanned(x, key):
        return tg.scan(lambda c, k: (c + np.sum(x * tg.random.uniform(k, x.shape)), 0.0), 0.0, tg.random.split(key, 3))[0]

    np.testing.assert_allclose(tg.grad(scanned)(np.ones(2), key), sum(tg.random.uniform(k, (2,)) for k in keys[:3]),
                               rtol=1e-12)
    eps = tg.random.normal(key, (3,))
    _, tangent = tg.jvp(lambda mu, s: np.sum(tg.random.normal(key, (3,), mu, s)), (1.0, 2.0), (0.5, 1.0))
    assert tangent == pytest.approx(3 * 0.5 + np.sum(eps), rel=1e-12)


def test_a_key_argument_keeps_the_per_call_fast_path():
    f = tg.grad(lambda x, k: np.sum(tg.nn.dropout(x, 0.5, k) * x))
    x = np.arange(1.0, 9.0)
    first = f(x, tg.random.key(0))
    entry = f.specialize(x, tg.random.key(0))
    assert entry.guard is not None and type(f).__call__ is entry.guard  # checked by class, passed as it is
    second = f(x, tg.random.key(1))  # through the guard: a new key, a new mask
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, np.where(tg.nn.dropout(np.ones(8), 0.5, tg.random.key(1)) != 0, 4 * x, 0.0))
    with pytest.raises(tg.ShapeError, match="uint64 scalar"):
        f(x, np.float64(1.0))  # another class: the general path, which traces and refuses it
