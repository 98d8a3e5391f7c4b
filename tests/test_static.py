"""static_argnums / static_argnames: Python values used while tracing, each new value traced again."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad


def euler(x0, v0, k, n):
    x, v = x0, v0
    for _ in range(n):  # a Python loop over a static count
        v = v - 0.01 * k * x
        x = x + 0.01 * v
    return x * x + v


def test_a_static_count_drives_a_python_loop_and_each_value_traces_again():
    g = tg.grad(euler, argnums=(0, 2), static_argnums=3)
    for n in (3, 7):
        gx, gk = g(1.0, 0.5, 2.0, n)
        assert gx == pytest.approx(numeric_grad(lambda x: euler(x, 0.5, 2.0, n), 1.0), rel=1e-7)
        assert gk == pytest.approx(numeric_grad(lambda k: euler(1.0, 0.5, k, n), 2.0), rel=1e-7)
    assert g(1.0, 0.5, 2.0, n=7) == g(1.0, 0.5, 2.0, 7)  # by keyword too
    assert len(g._subs) == 2


def test_static_argnames_and_jit():
    def loopy(x, n, scale=2.0):
        return tg.fori_loop(0, n, lambda i, c: c * np.cos(c), x) * scale

    vg = tg.value_and_grad(loopy, static_argnames=("n", "scale"))
    value, slope = vg(0.5, 4)
    assert value == pytest.approx(loopy(0.5, 4)) and slope == pytest.approx(numeric_grad(lambda x: loopy(x, 4), 0.5))
    assert "range(4)" in tg.source(vg, 0.5, 4)
    assert tg.jit(lambda x, shape: np.sum(np.reshape(x, shape)[0]), static_argnums=1)(np.arange(6.0), (2, 3)) == 3.0


def test_bad_static_arguments():
    with pytest.raises(tg.GradTypeError, match="static: it cannot also be differentiated"):
        tg.grad(euler, argnums=3, static_argnums=3)
    with pytest.raises(tg.GradTypeError, match="out of range"):
        tg.grad(euler, static_argnums=9)
    with pytest.raises(tg.GradTypeError, match="no parameter 'm'"):
        tg.grad(euler, static_argnames="m")
    with pytest.raises(tg.GradTypeError, match="hashable"):
        tg.grad(euler, static_argnums=3)(1.0, 0.5, 2.0, np.ones(2))


def test_static_argnums_zero_is_a_position():
    """``static_argnums=0`` (an int, falsy) marks the first argument static, as ``(0,)`` does."""
    def power_sum(n, x):  # range(n) needs n's value: a traced n would be an error
        return np.sum(sum(x ** k for k in range(1, n + 1)))

    f = tg.grad(power_sum, argnums=1, static_argnums=0)
    np.testing.assert_allclose(f(3, np.array([1.0, 2.0])), [1 + 2 + 3, 1 + 4 + 12])
    np.testing.assert_allclose(f(2, np.array([1.0, 2.0])), [1 + 2, 1 + 4])
    assert tg.jit(lambda n, x: x * len(range(n)), static_argnums=0)(2, np.ones(2)).tolist() == [2.0, 2.0]
