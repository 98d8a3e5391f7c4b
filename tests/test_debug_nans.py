"""Debug-NaN mode: the first NaN or inf raises, naming the value, the pass and the user's line."""
import inspect

import numpy as np
import pytest

import tracegrad as tg


def f(x):
    y = np.log(x)
    return np.sum(np.sqrt(y))


def line_of(text):
    lines, start = inspect.getsourcelines(f)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_forward_nan_names_value_pass_and_line():
    with pytest.raises(tg.NonFiniteError) as info:
        tg.grad(f, debug_nans=True)(np.array([2.0, 0.5, 3.0]))  # log(0.5) < 0: sqrt gives NaN
    message = str(info.value)
    assert "forward pass" in message and f"test_debug_nans.py:{line_of('np.sqrt')}" in message
    assert "np.sum(np.sqrt(y))" in message


def test_backward_inf_is_reported_as_backward():
    with pytest.raises(tg.NonFiniteError, match="grad_y is not finite \\(backward pass\\)"):
        tg.grad(f, debug_nans=True)(np.array([1.0, 2.0]))  # sqrt(0) is finite, its derivative is not


def test_off_by_default_and_absent_from_the_code():
    g = tg.grad(f)
    assert np.isnan(g(np.array([2.0, 0.5]))[1])
    assert "isfinite" not in tg.source(g, np.ones(2))
    assert "isfinite" in tg.source(tg.grad(f, debug_nans=True), np.ones(2))


def test_environment_variable_turns_it_on(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_DEBUG_NANS", "1")
    with pytest.raises(tg.NonFiniteError):
        tg.jit(lambda x: np.log(x))(np.array([-1.0]))


def test_finite_values_pass_through():
    assert tg.grad(f, debug_nans=True)(np.array([3.0]))[0] == pytest.approx(1 / (2 * np.sqrt(np.log(3.0)) * 3.0))
