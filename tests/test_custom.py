"""tg.custom_vjp: the notes' module with a forward and a backward function, JAX's decorator API."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad


@tg.custom_vjp
def log1pexp(x):
    return np.log1p(np.exp(x))


def log1pexp_fwd(x):
    return log1pexp(x), x  # inside its own forward function the call is the plain function


def log1pexp_bwd(x, g):
    return (g * tg.sigmoid(x),)  # exp(x) / (1 + exp(x)) without the inf / inf


log1pexp.defvjp(log1pexp_fwd, log1pexp_bwd)


@tg.custom_vjp
def gate(x, y):
    """The notes' multiply gate, written as a module."""
    return x * y


gate.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: (g * res[1], g * res[0]))


def test_the_stable_rule_is_used_where_the_plain_derivative_is_nan():
    x = np.array([-1000.0, 0.0, 3.0, 1000.0])
    with np.errstate(all="ignore"):
        plain = tg.grad(lambda x: np.sum(np.log1p(np.exp(x))))(x)
    assert np.isnan(plain[-1])
    g = tg.grad(lambda x: np.sum(log1pexp(x)))(x)
    np.testing.assert_allclose(g, [0.0, 0.5, 1 / (1 + np.exp(-3.0)), 1.0], rtol=1e-15)
    assert "sigmoid(" in tg.source(tg.grad(lambda x: np.sum(log1pexp(x))), x)  # the rule is in the source


def test_a_gate_with_its_own_backward_matches_differences_to_second_order():
    f = lambda x, y: np.sum(np.sin(gate(x, y)) * gate(y, y))
    x, y = np.array([0.3, -1.2]), np.array([0.7, 2.0])
    gx, gy = tg.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, numeric_grad(f, x, y, argnums=0), rtol=1e-8)
    np.testing.assert_allclose(gy, numeric_grad(f, x, y, argnums=1), rtol=1e-8)
    second = tg.grad(lambda t: tg.grad(lambda s: log1pexp(s) * s)(t))(0.5)
    assert second == pytest.approx(numeric_grad(tg.grad(lambda s: log1pexp(s) * s), 0.5), rel=1e-6)


def test_outside_a_trace_it_is_the_plain_function():
    assert log1pexp(0.0) == np.log(2.0) and gate(2.0, 3.0) == 6.0


def test_bad_rules_are_errors_naming_the_problem():
    wrong_count = tg.custom_vjp(lambda x: x * 2)
    wrong_count.defvjp(lambda x: (x * 2, None), lambda res, g: g * 2)
    with pytest.raises(tg.TracegradError, match="tuple of 1 gradient"):
        tg.grad(lambda x: np.sum(wrong_count(x)))(np.ones(2))
    wrong_shape = tg.custom_vjp(lambda x: x * 2)
    wrong_shape.defvjp(lambda x: (x * 2, None), lambda res, g: (np.sum(g),))
    with pytest.raises(tg.ShapeError, match=r"shape \(\) for an argument of shape \(2,\)"):
        tg.grad(lambda x: np.sum(wrong_shape(x)))(np.ones(2))
    no_rule = tg.custom_vjp(lambda x: x * 2)
    with pytest.raises(tg.TracegradError, match="defvjp"):
        tg.grad(lambda x: no_rule(x))(1.0)

    def closes_over(x):
        f = tg.custom_vjp(lambda y: y * x)
        f.defvjp(lambda y: (y * x, None), lambda res, g: (g * 2,))
        return f(x)

    with pytest.raises(tg.UnsupportedError, match="without receiving it as an argument"):
        tg.grad(closes_over)(1.0)


# ---------------------------------------------------------------- tg.custom_jvp


@tg.custom_jvp
def softplus(x):
    return np.log1p(np.exp(x))


@softplus.defjvp
def softplus_jvp(primals, tangents):
    x, = primals
    x_dot, = tangents
    return softplus(x), x_dot * tg.sigmoid(x)  # inside its own rule the call is the plain function


@tg.custom_jvp
def scaled_pair(x, scale):
    """Two outputs, a pytree argument, a Python float argument."""
    return {"a": x["u"] * scale, "b": np.sin(x["v"])}


@scaled_pair.defjvp
def scaled_pair_jvp(primals, tangents):
    (x, scale), (t, _) = primals, tangents
    return scaled_pair(x, scale), {"a": t["u"] * scale, "b": np.cos(x["v"]) * t["v"]}


def pair_loss(u, v):
    out = scaled_pair({"u": u, "v": v}, 3.0)
    return np.sum(out["a"] * out["b"])


def test_custom_jvp_forward_and_reverse_use_the_stable_rule():
    x = np.array([-1000.0, 0.0, 3.0, 1000.0])
    expected = np.array([0.0, 0.5, 1 / (1 + np.exp(-3.0)), 1.0])
    with np.errstate(all="ignore"):
        assert np.isnan(tg.grad(lambda x: np.sum(np.log1p(np.exp(x))))(x)[-1])  # the plain derivative: inf / inf
    value, tangent = tg.jvp(softplus, (x,), (np.ones(4),))
    np.testing.assert_allclose(tangent, expected, rtol=1e-15)
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(softplus(x)))(x), expected, rtol=1e-15)
    source = tg.source(tg.grad(lambda x: np.sum(softplus(x))), x)
    assert "sigmoid(" in source and "exp(x" not in source.split("# backward pass")[1]  # the rule, transposed
    assert softplus(0.0) == np.log(2.0)  # outside a trace it is the plain function


@tg.custom_jvp
def tanh_gate(x, y):
    return x * np.tanh(y)


@tanh_gate.defjvp
def tanh_gate_jvp(primals, tangents):
    (x, y), (x_dot, y_dot) = primals, tangents
    slope = 1 - np.tanh(y) ** 2
    out_dot = x_dot * np.tanh(y) + x * slope * y_dot
    return tanh_gate(x, y), out_dot


def test_custom_jvp_names_its_rules_values_in_the_source():
    source = tg.source(tg.jit(lambda x, y, u, v: tg.jvp(tanh_gate, (x, y), (u, v))), *[np.ones(3)] * 4)
    assert "slope = " in source and "out_dot = " in source


def test_custom_jvp_agrees_with_differences_in_both_modes_and_to_second_order():
    u, v = np.array([0.3, -1.2]), np.array([0.7, 2.0])
    gu, gv = tg.grad(pair_loss, argnums=(0, 1))(u, v)
    np.testing.assert_allclose(gu, numeric_grad(pair_loss, u, v, argnums=0), rtol=1e-8)
    np.testing.assert_allclose(gv, numeric_grad(pair_loss, u, v, argnums=1), rtol=1e-8)
    du, dv = np.array([1.0, -0.5]), np.array([0.25, 2.0])
    _, tangent = tg.jvp(pair_loss, (u, v), (du, dv))
    assert tangent == pytest.approx(gu @ du + gv @ dv, rel=1e-12)  # <g, J v> = <J^T g, v>
    f = lambda x: np.sum(softplus(x) * x ** 2)
    x = np.array([0.5, -1.5, 2.0])
    h = tg.hessian(f)(x)  # forward over reverse: the rule's transpose differentiated in forward mode
    expected = np.stack([numeric_grad(lambda y: tg.grad(f)(y)[k], x) for k in range(3)])
    np.testing.assert_allclose(h, expected, rtol=1e-6, atol=1e-8)
    second = tg.grad(tg.grad(lambda s: softplus(s) * s))(0.5)  # reverse over reverse
    assert second == pytest.approx(numeric_grad(tg.grad(lambda s: softplus(s) * s), 0.5), rel=1e-6)
    report = tg.check_grad(f, x, order=2)
    assert report.passed


def test_custom_jvp_with_float32_keeps_float32():
    x = np.array([0.5, -2.0], np.float32)
    g = tg.grad(lambda x: np.sum(scaled_pair({"u": x, "v": x}, 3.0)["a"]))(x)
    assert g.dtype == np.float32 and np.all(g == 3.0)


@tg.custom_vjp
def scale(x, c):
    return x * c


def scale_fwd(x, c):
    return x * c, (x, c)  # a Python number among the residuals reaches the backward function as it is


def scale_bwd(res, g):
    x, c = res
    return g * c, np.sum(g * x)  # (the Python number's gradient is dropped)


scale.defvjp(scale_fwd, scale_bwd)


def test_custom_vjp_with_float32_and_a_python_float_keeps_float32():
    x = np.array([0.5, -2.0, 1.0], np.float32)
    loss = lambda x: np.sum(scale(x, 3.0) ** 2)
    y = tg.jit(lambda x: scale(x, 3.0))(x)
    assert y.dtype == np.float32 and np.all(y == x * 3)
    value, g = tg.value_and_grad(loss)(x)
    assert np.asarray(value).dtype == np.float32 and g.dtype == np.float32
    np.testing.assert_array_equal(g, 18.0 * x)  # d/dx sum((3x)^2) = 18 x, exact in float32 here
    code = tg.source(tg.grad(loss), x)
    assert "float64" not in code and "3.0" in code
    gx, gc = tg.grad(lambda x, c: np.sum(scale(x, c) ** 2), argnums=(0, 1))(x, np.float32(3.0))
    assert gc.dtype == np.float32 and gc == pytest.approx(2 * 3.0 * np.sum(x * x), rel=1e-6)


def test_custom_jvp_agrees_with_jaxs_custom_jvp_in_float64():
    jax = pytest.importorskip("jax", reason="JAX is an optional comparison (pip install jax)")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    @jax.custom_jvp
    def j_softplus(x):
        return jnp.log1p(jnp.exp(x))

    @j_softplus.defjvp
    def j_softplus_jvp(primals, tangents):
        x, = primals
        x_dot, = tangents
        return j_softplus(x), x_dot * jax.nn.sigmoid(x)

    x = np.array([0.5, -1.5, 2.0, 800.0])
    f = lambda x: np.sum(softplus(x) * np.tanh(x))
    j_f = lambda x: jnp.sum(j_softplus(x) * jnp.tanh(x))
    np.testing.assert_allclose(tg.grad(f)(x), jax.grad(j_f)(x), rtol=1e-10)
    np.testing.assert_allclose(tg.hessian(f)(x), jax.hessian(j_f)(x), rtol=1e-10, atol=1e-300)


def test_custom_jvp_inside_a_loop_and_inside_another_custom_jvp():
    x = np.array([0.3, -0.7, 1.1])

    def through_scan(x):
        c, _ = tg.scan(lambda c, xi: (c + softplus(xi * c), None), 0.5, x)
        return c

    np.testing.assert_allclose(tg.grad(through_scan)(x), numeric_grad(through_scan, x), rtol=1e-7)
    _, tangent = tg.jvp(through_scan, (x,), (np.ones(3),))
    assert tangent == pytest.approx(np.sum(numeric_grad(through_scan, x)), rel=1e-7)

    @tg.custom_jvp
    def squared(x):
        return softplus(x) ** 2

    @squared.defjvp
    def squared_jvp(primals, tangents):
        y = softplus(primals[0])
        return y ** 2, 2 * y * tg.sigmoid(primals[0]) * tangents[0]

    f = lambda x: np.sum(squared(x) * x)
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad(f, x), rtol=1e-7)
