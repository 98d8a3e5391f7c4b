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
    with pytest.raises(tg.TracingError, match="np.stack") as info:
        tg.grad(lambda x: np.sum(np.asarray(x) ** 2))([0.5, 1.0])
    assert "if/while" not in str(info.value)


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
    with pytest.raises(tg.DataError, match=r"one number .* shape \(4,\)"):
        tg.fit(lambda p, X: X @ p, np.zeros(2), (np.ones((4, 2)),), optimizer=tg.optim.SGD(lr=0.1),
               batch_size=2, progress=False)
