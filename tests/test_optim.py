"""Optimisers against updates computed by hand, and their checks on bad input."""
import math

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import optim


def run(opt, p0, grads):
    """Apply ``opt`` to a one-parameter pytree for each gradient in ``grads``; the parameter's values after each."""
    params = {"w": np.array(p0, dtype=float)}
    state = opt.init(params)
    values = []
    for g in grads:
        opt.update(params, {"w": np.array(g, dtype=float)}, state)
        values.append(params["w"].copy())
    return values, state


# ------------------------------------------------------------------------------ hand-computed numbers


def test_sgd_plain():
    (after,), state = run(optim.SGD(lr=0.1), [1.0, 2.0], [[0.5, -1.0]])
    np.testing.assert_allclose(after, [0.95, 2.1], rtol=0, atol=1e-15)
    assert state["step"] == 1


def test_sgd_momentum_three_steps():
    # g = 1 each step, lr 0.1, momentum 0.9: v = 1, 1.9, 2.71 and p = 0.9, 0.71, 0.439 (the lectures' rule)
    values, state = run(optim.SGD(lr=0.1, momentum=0.9), [1.0], [[1.0]] * 3)
    np.testing.assert_allclose(np.ravel(values), [0.9, 0.71, 0.439], rtol=0, atol=1e-15)
    np.testing.assert_allclose(state["velocity"]["w"], [2.71], atol=1e-15)


def test_sgd_nesterov():
    # step 1: v = 1, step = g + 0.9 v = 1.9, p = 1 - 0.19; step 2: v = 1.9, step = 1 + 0.9 * 1.9 = 2.71
    values, _ = run(optim.SGD(lr=0.1, momentum=0.9, nesterov=True), [1.0], [[1.0]] * 2)
    np.testing.assert_allclose(np.ravel(values), [0.81, 0.539], rtol=0, atol=1e-15)


def test_sgd_weight_decay():
    # g = 0 + 0.1 * 2 = 0.2, p = 2 - 0.5 * 0.2
    (after,), _ = run(optim.SGD(lr=0.5, weight_decay=0.1), [2.0], [[0.0]])
    np.testing.assert_allclose(after, [1.9], atol=1e-15)


def test_sgd_without_weight_decay_leaves_the_gradient_alone():
    # no wd * p term at all when wd is 0 (as in PyTorch): an infinite parameter stays infinite, not NaN
    (after,), _ = run(optim.SGD(lr=0.5, momentum=0.9), [np.inf, -np.inf, 1.0], [[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(after, [np.inf, -np.inf, 0.5])


def test_adam_first_step_moves_by_lr():
    # m = 0.1 * 0.5, v = 0.001 * 0.25; corrected: m = 0.5, v = 0.25, step = 0.5 / (0.5 + 1e-8)
    (after,), state = run(optim.Adam(lr=0.1), [1.0], [[0.5]])
    np.testing.assert_allclose(after, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(state["m"]["w"], [0.05], atol=1e-15)
    np.testing.assert_allclose(state["v"]["w"], [0.00025], atol=1e-15)


def test_adam_three_steps_against_scalar_recurrence():
    lr, b1, b2, eps, grads = 0.01, 0.8, 0.9, 1e-6, [0.5, -2.0, 0.25]
    values, _ = run(optim.Adam(lr=lr, beta1=b1, beta2=b2, eps=eps), [1.0], [[g] for g in grads])
    p, m, v, expected = 1.0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        expected.append(p)
    np.testing.assert_allclose(np.ravel(values), expected, rtol=1e-14)


def test_adam_weight_decay_is_l2_and_adamw_is_decoupled():
    # gradient 0, p = 1, wd = 0.1. Adam: g = 0.1, first step ~ lr. AdamW: p *= 1 - lr * wd, no Adam step.
    (adam,), _ = run(optim.Adam(lr=0.1, weight_decay=0.1), [1.0], [[0.0]])
    (adamw,), _ = run(optim.AdamW(lr=0.1, weight_decay=0.1), [1.0], [[0.0]])
    np.testing.assert_allclose(adam, [1.0 - 0.1 * 0.1 / (0.1 + 1e-8)], atol=1e-15)
    np.testing.assert_allclose(adamw, [0.99], atol=1e-15)
    assert optim.AdamW().weight_decay == 0.01


def test_rmsprop_first_step():
    # s = 0.01 * 0.25 = 0.0025, step = 0.5 / (0.05 + 1e-8) ~ 10, p = 1 - 0.01 * 10
    (after,), state = run(optim.RMSProp(lr=0.01), [1.0], [[0.5]])
    np.testing.assert_allclose(after, [1.0 - 0.01 * 0.5 / (0.05 + 1e-8)], atol=1e-15)
    np.testing.assert_allclose(state["square_avg"]["w"], [0.0025], atol=1e-15)


def test_rmsprop_momentum():
    # step 1: step = 10 (as above), buffer = 10; step 2 (g = 0.5 again): s = 0.99 * 0.0025 + 0.0025,
    # buffer = 0.9 * 10 + 0.5 / sqrt(s)
    eps = 1e-12
    values, _ = run(optim.RMSProp(lr=0.01, momentum=0.9, eps=eps), [1.0], [[0.5]] * 2)
    step1 = 0.5 / (0.05 + eps)
    s2 = 0.99 * 0.0025 + 0.01 * 0.25
    expected2 = 1.0 - 0.01 * step1 - 0.01 * (0.9 * step1 + 0.5 / (math.sqrt(s2) + eps))
    np.testing.assert_allclose(np.ravel(values), [1.0 - 0.01 * step1, expected2], rtol=1e-14)


# ------------------------------------------------------------------------------ arrays and pytrees


def reference_step(name, p, g, slots, t, lr, h):
    """The update rules, vectorised in NumPy (PyTorch's formulas), independent of tracegrad.optim."""
    if name == "sgd":
        g = g + h["weight_decay"] * p
        slots[0] = h["momentum"] * slots[0] + g
        return p - lr * (g + h["momentum"] * slots[0] if h["nesterov"] else slots[0])
    if name == "adam":
        g = g + h["weight_decay"] * p
        slots[0] = h["beta1"] * slots[0] + (1 - h["beta1"]) * g
        slots[1] = h["beta2"] * slots[1] + (1 - h["beta2"]) * g * g
        return p - lr * slots[0] / (1 - h["beta1"] ** t) / (np.sqrt(slots[1] / (1 - h["beta2"] ** t)) + h["eps"])
    g = g + h["weight_decay"] * p
    slots[0] = h["alpha"] * slots[0] + (1 - h["alpha"]) * g * g
    slots[1] = h["momentum"] * slots[1] + g / (np.sqrt(slots[0]) + h["eps"])
    return p - lr * slots[1]


@pytest.mark.parametrize("name, opt, hyper", [
    ("sgd", optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
     dict(momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("adam", optim.Adam(lr=0.01, weight_decay=0.02), dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.02)),
    ("rmsprop", optim.RMSProp(lr=0.01, momentum=0.5, weight_decay=0.01),
     dict(alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.5)),
])
def test_pytree_of_arrays_matches_reference(name, opt, hyper, rng):
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4), "scale": np.array(0.5)}
    reference = {k: v.copy() for k, v in params.items()}
    slots = {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in params.items()}
    ids = {k: id(v) for k, v in params.items()}
    state = opt.init(params)
    for t in range(1, 5):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        opt.update(params, grads, state)
        for k in params:
            reference[k] = reference_step(name, reference[k], grads[k], slots[k], t, opt.lr, hyper)
    for k in params:
        np.testing.assert_allclose(params[k], reference[k], rtol=1e-13, atol=1e-15)
        assert id(params[k]) == ids[k]  # in place
    assert state["step"] == 4


def test_float32_stays_float32():
    params = [np.ones(3, np.float32)]
    opt = optim.Adam(lr=0.1)
    state = opt.init(params)
    opt.update(params, [np.full(3, 0.5, np.float32)], state)
    assert params[0].dtype == np.float32 and state["m"][0].dtype == np.float32
    np.testing.assert_allclose(params[0], 0.9, rtol=1e-6)


def test_gradient_may_be_a_view():
    params = {"W": np.ones((2, 3))}
    opt = optim.SGD(lr=1.0)
    opt.update(params, {"W": np.arange(6.0).reshape(3, 2).T}, opt.init(params))
    np.testing.assert_array_equal(params["W"], 1 - np.arange(6.0).reshape(3, 2).T)


# ------------------------------------------------------------------------------ schedules


def test_step_lr_and_cosine_lr():
    schedule = optim.step_lr(0.1, every=10, gamma=0.5)
    assert [schedule(s) for s in (0, 9, 10, 25)] == [0.1, 0.1, 0.05, 0.025]
    cosine = optim.cosine_lr(1.0, total_steps=110, final_lr=0.1, warmup_steps=10)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)  # linear warm-up
    assert cosine(10) == pytest.approx(1.0) and cosine(60) == pytest.approx(0.55) and cosine(110) == pytest.approx(0.1)
    assert cosine(10_000) == pytest.approx(0.1)


def test_update_uses_the_schedule_at_the_current_step():
    values, _ = run(optim.SGD(lr=optim.step_lr(1.0, every=1, gamma=0.5)), [0.0], [[1.0]] * 3)
    np.testing.assert_allclose(np.ravel(values), [-1.0, -1.5, -1.75])


# ------------------------------------------------------------------------------ bad input


def test_hyperparameters_follow_the_update_function():
    assert optim.SGD.hyperparameter_names() == ("momentum", "weight_decay", "nesterov")
    assert optim.Adam(lr=0.1).hyperparameters() == (0.9, 0.999, 1e-8, 0.0, 0.0)
    assert optim.AdamW(lr=0.1).hyperparameters()[-1] == 1.0
    assert optim.RMSProp.hyperparameter_names() == ("alpha", "eps", "weight_decay", "momentum")
    assert repr(optim.SGD(lr=0.1, momentum=0.9)) == "SGD(lr=0.1, momentum=0.9)"
    assert repr(optim.AdamW(weight_decay=0.1)) == "AdamW(lr=0.001, weight_decay=0.1)"
    assert repr(optim.RMSProp(lr=optim.step_lr(0.1, every=10))) == "RMSProp(lr=step_lr(0.1, every=10, gamma=0.1))"


@pytest.mark.parametrize("make", [
    lambda: optim.SGD(lr=0.0), lambda: optim.SGD(lr=-1), lambda: optim.SGD(lr="0.1"), lambda: optim.SGD(lr=math.nan),
    lambda: optim.SGD(momentum=1.0), lambda: optim.SGD(nesterov=True), lambda: optim.SGD(weight_decay=-0.1),
    lambda: optim.Adam(beta1=1.0), lambda: optim.Adam(eps=0.0), lambda: optim.RMSProp(alpha=1.5),
    lambda: optim.step_lr(0.1, every=0), lambda: optim.cosine_lr(0.1, total_steps=10, warmup_steps=10),
])
def test_bad_hyperparameters(make):
    with pytest.raises(tg.DataError):
        make()


@pytest.mark.parametrize("leaf, message", [
    (np.array([1, 2]), "dtype int64"),
    (1.5, "is a float, not a NumPy array"),
    ([np.ones(2)], None),  # fine: a list is a pytree
])
def test_parameters_must_be_float_arrays(leaf, message):
    opt = optim.SGD(lr=0.1)
    params = {"w": leaf}
    if message is None:
        opt.init(params)
        return
    with pytest.raises(tg.GradTypeError, match=message) as info:
        opt.init(params)
    assert "params_w" in str(info.value)


def test_bad_update_changes_nothing():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    params = {"a": np.ones(2), "b": np.ones(3)}
    state = opt.init(params)
    for grads in ({"a": np.ones(2), "b": np.ones(4)},      # wrong shape in the second leaf
                  {"a": np.ones(2)},                         # wrong structure
                  {"a": np.ones(2), "b": [1.0, 1.0, 1.0]}):  # fine shape, but as a list: a different pytree
        with pytest.raises(tg.DataError):
            opt.update(params, grads, state)
    np.testing.assert_array_equal(params["a"], np.ones(2))
    assert state["step"] == 0 and not state["velocity"]["a"].any()
    with pytest.raises(tg.DataError, match="no 'velocity'"):
        opt.update(params, {"a": np.ones(2), "b": np.ones(3)}, {"step": 0})


def test_non_contiguous_parameter_is_refused():
    opt = optim.SGD(lr=0.1)
    W = np.ones((3, 2)).T
    with pytest.raises(tg.DataError, match="C-contiguous"):
        opt.update([W], [np.ones((2, 3))], opt.init([W]))


# ------------------------------------------------------------------------------ the fast path of update


def _reference_update(opt, params, grads, state):
    """One update the slow way: ``opt.kernel`` on each flattened array, as ``update`` did before its fast path."""
    leaves, _ = tg.pytree.flatten(params)
    grad_leaves = tg.pytree.flatten(grads)[0]
    slots = [tg.pytree.flatten(state[s])[0] for s in opt.slots]
    step = state["step"]
    for i, p in enumerate(leaves):
        opt.kernel(p.reshape(-1), np.ascontiguousarray(grad_leaves[i], p.dtype).reshape(-1),
                   *(s[i].reshape(-1) for s in slots), opt.learning_rate(step), step + 1, *opt.hyperparameters())
    state["step"] = step + 1


@pytest.mark.parametrize("make", [lambda: optim.SGD(lr=optim.step_lr(0.1, every=2), momentum=0.9, nesterov=True),
                                  lambda: optim.Adam(lr=0.01, weight_decay=0.1), lambda: optim.AdamW(lr=0.01),
                                  lambda: optim.RMSProp(lr=0.01, momentum=0.5)])
def test_the_fast_path_updates_exactly_as_the_slow_path(make, rng):
    params = {"layers": [{"W": rng.normal(size=(3, 4)), "b": np.zeros(4, np.float32)}], "scale": np.array(2.0)}
    copy = {"layers": [{k: v.copy() for k, v in params["layers"][0].items()}], "scale": params["scale"].copy()}
    fast, slow = make(), make()
    fast_state, slow_state = fast.init(params), slow.init(copy)
    for step in range(5):
        grads = {"layers": [{"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4).astype(np.float32)}],
                 "scale": np.array(rng.normal())}
        fast.update(params, grads, fast_state)
        _reference_update(slow, copy, grads, slow_state)
        assert fast.__dict__.get("_fast") is not None  # taken from the second step on
        for a, b in zip(tg.pytree.flatten(params)[0], tg.pytree.flatten(copy)[0]):
            np.testing.assert_array_equal(a, b)
        assert fast_state["step"] == slow_state["step"] == step + 1
    for slot in fast.slots:
        for a, b in zip(tg.pytree.flatten(fast_state[slot])[0], tg.pytree.flatten(slow_state[slot])[0]):
            np.testing.assert_array_equal(a, b)


def test_once_fast_a_bad_update_still_changes_nothing_and_says_why():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    params = {"a": np.ones(2), "b": np.ones((3, 2))}
    state = opt.init(params)
    good = {"a": np.ones(2), "b": np.ones((3, 2))}
    opt.update(params, good, state)
    opt.update(params, good, state)
    assert opt.__dict__.get("_fast") is not None
    before = {k: v.copy() for k, v in params.items()}
    velocity = {k: v.copy() for k, v in state["velocity"].items()}
    for grads, error in (({"a": np.ones(2), "b": np.ones((2, 3))}, tg.DataError),   # wrong shape, last leaf
                         ({"a": np.ones(2), "c": np.ones((3, 2))}, tg.DataError),   # wrong keys
                         ({"a": np.ones(2), "b": np.ones(6)}, tg.DataError),        # same size, wrong shape
                         ({"a": [1.0, 1.0], "b": np.ones((3, 2))}, tg.DataError)):  # a list: another pytree
        with pytest.raises(error):
            opt.update(params, grads, state)
    for params_now, message in (({"a": np.ones(2), "b": np.ones((2, 3)).T}, "C-contiguous"),
                                ({"a": np.ones(2), "b": np.ones((3, 2), np.int64)}, "float")):
        with pytest.raises(tg.TracegradError, match=message):
            opt.update(params_now, good, opt.init({"a": np.ones(2), "b": np.ones((3, 2))}))
    frozen = np.ones((3, 2))
    frozen.flags.writeable = False
    with pytest.raises(tg.DataError, match="writable"):
        opt.update({"a": np.ones(2), "b": frozen}, good, opt.init(params))
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
        np.testing.assert_array_equal(state["velocity"][k], velocity[k])
    assert state["step"] == 2


def test_once_fast_other_gradients_are_converted_as_before(rng):
    opt = optim.SGD(lr=0.5)
    params = {"W": np.ones((2, 3), np.float32)}
    state = opt.init(params)
    opt.update(params, {"W": np.zeros((2, 3), np.float32)}, state)
    opt.update(params, {"W": np.zeros((2, 3), np.float32)}, state)
    g = rng.normal(size=(3, 2))
    for grads in ({"W": g.T}, {"W": g.T.astype(np.float32)}, {"W": g.T.copy()}):  # a view, float64
        expected = params["W"] - np.float32(0.5) * grads["W"].astype(np.float32)
        opt.update(params, grads, state)
        np.testing.assert_allclose(params["W"], expected, rtol=1e-6)
        assert params["W"].dtype == np.float32


def test_an_optimizer_with_a_fast_path_pickles():
    import pickle

    opt = optim.Adam(lr=0.01)
    params = [np.ones(2)]
    state = opt.init(params)
    opt.update(params, [np.ones(2)], state)
    opt.update(params, [np.ones(2)], state)
    copy = pickle.loads(pickle.dumps(opt))
    assert repr(copy) == repr(opt) and "_fast" not in copy.__dict__
    copy.update(params, [np.ones(2)], state)
    assert state["step"] == 3


def test_a_subclass_learning_rate_is_used_on_the_fast_path_too():
    class Halved(optim.SGD):
        def learning_rate(self, step):
            return 0.5 * self.lr

    opt = Halved(lr=0.2)
    params = {"w": np.ones(3)}
    state = opt.init(params)
    for _ in range(3):  # the first call writes the fast path, the next ones take it
        opt.update(params, {"w": np.ones(3)}, state)
    np.testing.assert_allclose(params["w"], 1.0 - 3 * 0.1, rtol=1e-15)
    assert opt.__dict__.get("_fast") is not None
