"""Regressions from the hardening issue: wrong results, raw errors and lost training progress."""
import math
import traceback

import numpy as np
import pytest

import tracegrad as tg


# ------------------------------------------------------------------------------ raw errors


def test_a_parameter_named_self_can_be_passed_by_keyword():
    f = tg.value_and_grad(lambda self, x: self * x, argnums=1)
    assert f(self=3.0, x=2.0) == (6.0, 3.0)
    assert f(self=3.0, x=2.0) == (6.0, 3.0)  # again, through the specialisation's guard


def test_the_first_error_of_a_call_has_no_internal_context():
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(tg.TracingError) as info:
        tg.grad(f)(1.0)
    assert info.value.__context__ is None and info.value.__cause__ is None
    text = "".join(traceback.format_exception(info.value))
    assert "KeyError" not in text and "During handling" not in text


def test_grad_of_none_names_the_argument():
    with pytest.raises(tg.GradTypeError, match=r"argument 'x': it is None"):
        tg.grad(lambda x: x * 2)(None)


def test_jit_of_none_is_a_tracegrad_error_naming_the_argument():
    with pytest.raises(tg.GradTypeError, match=r"argument 'x' is None") as info:
        tg.jit(lambda x: x * 2)(None)
    assert "test_robustness.py" in str(info.value)  # the user's line


def test_a_list_argument_is_a_pytree_and_the_error_says_so():
    assert tg.grad(lambda x: x[0] * x[1])([0.5, 1.0]) == [1.0, 0.5]
    with pytest.raises(tg.GradTypeError, match=r"argument 'x' is a list: .* pytree") as info:
        tg.grad(lambda x: np.sum(x ** 2))([0.5, 1.0])
    assert "np.array" in info.value.hint
    with pytest.raises(tg.GradTypeError, match=r"argument 'x' is a list"):
        tg.grad(lambda x: x * 2)([0.5, 1.0])  # list repetition: four values, not a scalar
    # np.asarray of the list stacks its traced entries, as NumPy would make an array of the numbers
    assert tg.grad(lambda x: np.sum(np.asarray(x) ** 2))([0.5, 1.0]) == [1.0, 2.0]
    with pytest.raises(tg.TracingError) as info:  # an if on a traced value is not about the list
        tg.grad(lambda x: x[0] if x[1] > 0 else x[1])([0.5, 1.0])
    assert "is a list" not in str(info.value) and "if/while" in info.value.hint


@pytest.mark.parametrize("kind", [list, tuple, dict])
def test_a_pytree_nested_500_deep_is_a_clear_error(kind):
    tree = 1.0
    for _ in range(500):
        tree = kind([tree]) if kind is not dict else {"a": tree}
    with pytest.raises(tg.GradTypeError, match="nested more than 100 levels"):
        tg.grad(lambda p: 0.0)(tree)


def test_a_list_that_contains_itself_is_a_clear_error():
    loop = [1.0]
    loop.append(loop)
    with pytest.raises(tg.GradTypeError, match="contains itself"):
        tg.jit(lambda p: p[0])(loop)


def test_a_pytree_100_deep_still_works():
    tree = 2.0
    for _ in range(99):
        tree = [tree]
    g = tg.grad(lambda p: _innermost(p) ** 2)(tree)
    assert _innermost(g) == 4.0


def _innermost(tree):
    while isinstance(tree, list):
        tree = tree[0]
    return tree


def test_fit_with_a_vector_loss_is_a_data_error():
    with pytest.raises(tg.DataError, match=r"one number .* shape \(2,\)"):  # (fit checks one batch: 2 rows)
        tg.fit(lambda p, X: X @ p, np.zeros(2), (np.ones((4, 2)),), optimizer=tg.optim.SGD(lr=0.1),
               batch_size=2, progress=False)


# ------------------------------------------------------------------------------ wrong results: what is read at each call

ZERO_D = np.array(2.0)
HELPER_ARRAY = np.array([1.0, 2.0])


def times_zero_d(x):
    return x * ZERO_D


def compare_zero_d(x):
    return np.where(ZERO_D < x, x, 0.0) + ZERO_D * x  # the array on the left: NumPy's ufunc path


def dot_helper_array(x):
    return np.sum(x * HELPER_ARRAY)


def sin_helper(x):
    return math.sin(x) * math.exp(x)


def calls_sin_helper(x):
    return sin_helper(x) + 1.0


def test_a_0d_array_read_through_a_helper_sees_in_place_changes():
    f = tg.grad(lambda x: times_zero_d(x))
    assert f(1.0) == 2.0 and f(1.0) == 2.0  # the second call may take the fast path
    try:
        ZERO_D[()] = 7.0
        assert f(1.0) == 7.0 and f(1.0) == 7.0
    finally:
        ZERO_D[()] = 2.0


def test_a_0d_array_on_the_left_of_an_operator_sees_in_place_changes():
    f = tg.grad(compare_zero_d)
    assert f(3.0) == 3.0
    try:
        ZERO_D[()] = 5.0
        assert f(3.0) == 5.0
    finally:
        ZERO_D[()] = 2.0


def test_a_global_array_of_a_helper_is_read_at_every_call():
    global HELPER_ARRAY
    f = tg.grad(lambda x: dot_helper_array(x))
    saved = HELPER_ARRAY
    try:
        np.testing.assert_array_equal(f(np.ones(2)), [1.0, 2.0])
        HELPER_ARRAY = np.array([5.0, 6.0])
        np.testing.assert_array_equal(f(np.ones(2)), [5.0, 6.0])
        HELPER_ARRAY = np.array([1.0, 2.0, 3.0])  # a new shape traces again
        np.testing.assert_array_equal(f(np.ones(3)), [1.0, 2.0, 3.0])
    finally:
        HELPER_ARRAY = saved


@pytest.mark.parametrize("x", [0.3, np.float32(0.3)])
def test_math_works_in_helpers_called_by_name(x):
    expected = math.cos(x) * math.exp(x) + math.sin(x) * math.exp(x)
    assert np.isclose(tg.grad(calls_sin_helper)(x), expected, rtol=1e-6)
    assert np.isclose(tg.grad(lambda y: 2.0 * calls_sin_helper(y))(x), 2 * expected, rtol=1e-6)  # two levels down


def test_a_helper_that_calls_itself_is_followed():
    def power(x, n):
        return math.exp(x - x) * x if n == 1 else x * power(x, n - 1)

    assert tg.grad(lambda x: power(x, 3))(2.0) == 12.0


def test_helpers_are_not_modified():
    tg.grad(calls_sin_helper)(0.1)
    assert calls_sin_helper.__globals__["sin_helper"] is sin_helper
    assert sin_helper.__globals__["math"] is math


PARAMS = {"W": np.array([1.0, 2.0])}


def dict_entry_loss(x):
    return np.sum(x * PARAMS["W"])


def test_a_global_dict_entry_is_read_at_every_call():
    f = tg.grad(dict_entry_loss)
    saved = PARAMS["W"]
    try:
        np.testing.assert_array_equal(f(np.ones(2)), [1.0, 2.0])
        PARAMS["W"] = np.array([3.0, 4.0])
        np.testing.assert_array_equal(f(np.ones(2)), [3.0, 4.0])
    finally:
        PARAMS["W"] = saved


class Layer:
    def __init__(self, b):
        self.b = b


class Model:
    def __init__(self):
        self.W = np.array([1.0, 2.0])
        self.layers = [Layer(np.array([0.5, 0.5]))]

    @tg.value_and_grad
    def loss(self, x):
        hidden = x * self.W + self.layers[0].b
        return np.sum(hidden) + math.sin(0.0 * hidden[0])


def test_rebinding_attributes_of_self_is_seen_by_a_decorated_method():
    model = Model()
    assert model.loss(np.ones(2)) == (4.0, pytest.approx(np.array([1.0, 2.0])))
    model.W = model.W - 0.5 * model.loss(np.ones(2))[1]  # a gradient step written the natural way
    model.layers[0].b = np.array([10.0, 10.0])
    value, g = model.loss(np.ones(2))
    assert value == 21.5 and np.array_equal(g, [0.5, 1.0])
    source = tg.source(Model.loss.__get__(model), np.ones(2))
    assert "def loss_value_and_grad(x, W, b):" in source and "hidden" in source  # names from self and the method


def test_an_attribute_that_disappears_is_a_clear_error():
    model = Model()
    model.loss(np.ones(2))
    del model.W
    with pytest.raises(tg.TracegradError, match=r"at self\.W, cannot be read any more \(AttributeError"):
        model.loss(np.ones(2))


def test_arrays_created_while_tracing_are_held_and_keep_the_fast_path():
    f = tg.value_and_grad(lambda x: np.sum(x * np.arange(3.0)))
    compiled = f.specialize(np.ones(3))
    assert [c.held for c in compiled.traced.captures] == [True] and compiled.guard is not None


def test_an_array_in_a_module_of_the_users_own_is_read_at_every_call():
    import types
    settings = types.ModuleType("settings")
    settings.__file__ = __file__  # the user's own module (not a library's)
    settings.W = np.array([1.0, 2.0])

    def loss(x):
        return np.sum(x * settings.W)

    f = tg.grad(loss)
    np.testing.assert_array_equal(f(np.ones(2)), [1.0, 2.0])
    settings.W = np.array([3.0, 4.0])
    np.testing.assert_array_equal(f(np.ones(2)), [3.0, 4.0])


class Constants:
    W = np.array([1.0, 2.0])


def class_attribute_loss(x):
    return np.sum(x * Constants.W)


TARGET = np.array([1.0, 2.0])
LOSSES = {"dot": lambda x: np.sum(x * TARGET)}  # called through a dict: tracegrad does not prepare it


def test_a_class_attribute_is_read_at_every_call():
    f = tg.grad(class_attribute_loss)
    saved = Constants.W
    try:
        np.testing.assert_array_equal(f(np.ones(2)), [1.0, 2.0])
        Constants.W = np.array([5.0, 6.0])
        np.testing.assert_array_equal(f(np.ones(2)), [5.0, 6.0])
    finally:
        Constants.W = saved


def test_a_global_of_a_function_called_through_a_dict_is_read_at_every_call():
    global TARGET
    f = tg.grad(lambda x: LOSSES["dot"](x))
    saved = TARGET
    try:
        np.testing.assert_array_equal(f(np.ones(2)), [1.0, 2.0])
        TARGET = np.array([7.0, 8.0])
        np.testing.assert_array_equal(f(np.ones(2)), [7.0, 8.0])
    finally:
        TARGET = saved


DEEP = {"a": {"b": {"c": {"W": np.array([1.0, 2.0]), "tags": ["a list, so that the collector tracks this dict"]}}}}


def deep_loss(x):
    return np.sum(x * DEEP["a"]["b"]["c"]["W"])


def test_an_array_deeper_than_the_search_warns_that_rebinding_is_not_seen(monkeypatch):
    monkeypatch.setattr("tracegrad.captures._WARNED", set())
    with pytest.warns(tg.HeldArrayWarning, match=r"kept in a dict entry 'W' .* rebinding it is not") as record:
        tg.grad(deep_loss).specialize(np.ones(2))
    assert record[0].filename == __file__ and record[0].lineno == deep_loss.__code__.co_firstlineno + 1


def test_arrays_created_while_tracing_or_read_at_each_call_give_no_warning():
    import warnings

    def loss(x, labels):
        return tg.nn.softmax_cross_entropy(x, labels) + np.sum(x[:, 0] * np.arange(3.0)) + dict_entry_loss(x[0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tg.grad(loss).specialize(np.ones((3, 2)), np.array([0, 1, 1]))
        Model().loss.specialize(np.ones(2))


def test_the_warning_comes_once_per_line(monkeypatch):
    import warnings
    monkeypatch.setattr("tracegrad.captures._WARNED", set())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        tg.grad(deep_loss).specialize(np.ones(2))
        tg.grad(deep_loss).specialize(np.ones(2))
        tg.jit(deep_loss).specialize(np.ones(2))
    assert len([w for w in record if w.category is tg.HeldArrayWarning]) == 1
