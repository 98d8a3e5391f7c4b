"""Gradients at the points where the textbook rule divides by zero: a power with exponent 0 (or an array of
exponents containing 0) at x = 0, integer powers at 0 and below, and np.std where all values are equal.
Checked against central differences where the derivative exists, and exact values where the function has
a kink (the midpoint of the subdifferential, docs/DESIGN.md). Both tiers: compiled and the NumPy evaluator."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad

TIERS = ["wait", "never"]  # compiled, evaluator


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("exponent", [0.0, 0])
def test_x_to_the_power_zero_has_gradient_zero_everywhere(tier, exponent):
    df = tg.grad(lambda x: x ** exponent, compile=tier)
    for x in (0.0, 2.0, -3.0):
        assert df(x) == 0.0


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("exponents", [np.arange(4.0), np.arange(4)], ids=["float", "int"])
def test_polynomial_with_an_array_of_exponents(tier, exponents):
    c = np.array([1.0, 2.0, 3.0, 4.0])

    def poly(x):
        return np.sum(c * x ** exponents)

    df = tg.grad(poly, compile=tier)
    assert df(0.0) == 2.0  # c[1], exactly: the other terms' derivatives are 0 at 0
    for x in (-1.5, 0.7, 2.0):
        assert df(x) == pytest.approx(numeric_grad(poly, x), rel=1e-7)
        assert df(x) == pytest.approx(sum(k * c[k] * x ** (k - 1) for k in range(1, 4)), rel=1e-12)


@pytest.mark.parametrize("tier", TIERS)
def test_integer_powers_at_zero_and_below(tier):
    for n in (1, 2, 3, 4):
        df = tg.grad(lambda x: x ** n, compile=tier)
        assert df(0.0) == (1.0 if n == 1 else 0.0)
        for x in (-2.0, -0.5, 1.5):
            assert df(x) == pytest.approx(numeric_grad(lambda x: x ** n, x), rel=1e-7)
    # second derivatives at 0: (x**2)'' = 2, (x**1)'' = (x**3)'' = 0, none of them nan
    for n, expected in ((1, 0.0), (2, 2.0), (3, 0.0)):
        assert tg.grad(tg.grad(lambda x: x ** n), compile=tier)(0.0) == expected


def test_a_float32_power_zero():
    g = tg.grad(lambda x: np.sum(x ** np.float32(0.0) + x ** np.arange(3, dtype=np.float32)))(np.zeros(3, np.float32))
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, [0.0, 1.0, 0.0])  # 0**0 + 0**0, 0**0 + 0**1, 0**0 + 0**2


@pytest.mark.parametrize("tier", TIERS)
def test_std_at_zero_variance_has_gradient_zero(tier):
    std = tg.value_and_grad(lambda x: np.std(x), compile=tier)
    value, g = std(np.full(4, 1.5))
    assert value == 0.0
    np.testing.assert_array_equal(g, np.zeros(4))
    value, g = tg.value_and_grad(lambda x: np.std(x, ddof=1), compile=tier)(np.full(3, -2.0))
    assert value == 0.0
    np.testing.assert_array_equal(g, np.zeros(3))


@pytest.mark.parametrize("tier", TIERS)
def test_std_along_an_axis_with_one_flat_row(tier):
    x = np.array([[3.0, 3.0, 3.0], [1.0, 2.0, 4.0]])
    w = np.array([0.5, 2.0])

    def f(x):
        return np.sum(w * np.std(x, axis=1))

    g = tg.grad(f, compile=tier)(x)
    np.testing.assert_array_equal(g[0], np.zeros(3))
    np.testing.assert_allclose(g[1], numeric_grad(f, x)[1], rtol=1e-7)
    np.testing.assert_allclose(tg.jit(lambda x: np.std(x, axis=1), compile=tier)(x), np.std(x, axis=1), rtol=1e-15)


def test_std_away_from_zero_variance_against_central_differences():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4))
    for kwargs in ({}, {"axis": 0}, {"axis": 1, "ddof": 1}):
        def f(x):
            return np.sum(np.std(x, **kwargs) ** 2 + np.std(x, **kwargs))
        np.testing.assert_allclose(tg.grad(f)(x), numeric_grad(f, x), rtol=1e-6, atol=1e-9)
    tg.check_grad(lambda x: np.std(x), x, order=2)


def test_a_constant_exponent_keeps_the_plain_rule_in_the_generated_code():
    source = tg.source(tg.grad(lambda x: np.sum(x ** 3.0)), np.ones(3))
    assert "where" not in source  # no select for y == 0 when y is a known constant
    assert "x[i0] ** 2.0" in source


# maximum(x, y) and minimum(x, y) select: the input chosen gets the cotangent, the other exactly +0.0
# whatever the cotangent is (an inf or NaN included: no 0 * inf), half to each at a tie (DESIGN.md)
X_SEL = np.array([3.0, -1.0, 2.0, -2.0, 0.0, 1.0])
Y_SEL = np.array([1.0, 1.0, 2.0, 0.0, 0.0, 5.0])
C_SEL = np.array([-2.0, -np.inf, np.nan, np.inf, -4.0, np.nan])
NAN = np.nan


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name, to_x, to_y", [
    ("maximum", [-2.0, 0.0, NAN, 0.0, -2.0, 0.0], [0.0, -np.inf, NAN, np.inf, -2.0, NAN]),
    ("minimum", [0.0, -np.inf, NAN, np.inf, -2.0, NAN], [-2.0, 0.0, NAN, 0.0, -2.0, 0.0]),
])
def test_maximum_and_minimum_pass_the_cotangent_or_exactly_zero(tier, name, to_x, to_y):
    op = getattr(np, name)
    gx, gy = tg.grad(lambda x, y, c: np.sum(c * op(x, y)), argnums=(0, 1), compile=tier)(X_SEL, Y_SEL, C_SEL)
    np.testing.assert_array_equal(gx, to_x)
    np.testing.assert_array_equal(gy, to_y)
    zeros = np.concatenate([gx[np.array(to_x) == 0], gy[np.array(to_y) == 0]])
    assert zeros.size == 4 and not np.signbit(zeros).any()  # +0.0, never -0.0 from a negative cotangent


@pytest.mark.parametrize("tier", TIERS)
def test_relu_passes_the_cotangent_where_positive_half_at_zero_and_plus_zero_elsewhere(tier):
    x = np.array([-1.0, 0.0, 2.0, -3.0, -0.5])
    c = np.array([-5.0, -5.0, -5.0, np.inf, np.nan])
    gx = tg.grad(lambda x, c: np.sum(c * np.maximum(x, 0.0)), compile=tier)(x, c)
    np.testing.assert_array_equal(gx, [0.0, -2.5, -5.0, 0.0, 0.0])
    assert not np.signbit(gx[[0, 3, 4]]).any()
