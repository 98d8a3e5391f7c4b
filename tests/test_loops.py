"""Loops that stay loops: tg.scan and tg.fori_loop against Python loops, central differences and JAX's
conventions; their generated code; and the errors for bodies that cannot be one loop."""
import re

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.interpret import evaluate
from tracegrad.testing import numeric_grad


def spring(x0, v0, k, n=200):
    """A damped spring, explicit Euler, as a fori_loop."""
    dt, c = 0.01, 0.1

    def step(i, state):
        x, v = state
        a = -k * x - c * v
        v = v + dt * a
        x = x + dt * v
        return (x, v)

    x, v = tg.fori_loop(0, n, step, (x0, v0))
    return x * x + v


def spring_unrolled(x0, v0, k, n=200):
    dt, c = 0.01, 0.1
    x, v = x0, v0
    for _ in range(n):
        a = -k * x - c * v
        v = v + dt * a
        x = x + dt * v
    return x * x + v


def test_fori_loop_value_and_gradient_match_the_python_loop_and_differences():
    args = (1.0, 0.5, 2.0)
    value, grads = tg.value_and_grad(spring, argnums=(0, 1, 2))(*args)
    assert value == pytest.approx(spring_unrolled(*args), rel=1e-13)
    for k, g in enumerate(grads):
        assert g == pytest.approx(numeric_grad(spring_unrolled, *args, argnums=k), rel=1e-7)


def test_generated_source_does_not_grow_with_the_trip_count():
    def source(n):
        return tg.source(tg.grad(lambda x0, v0, k: spring(x0, v0, k, n), argnums=(0, 1, 2)), 1.0, 0.5, 2.0)

    short, long = source(10), source(100_000)
    assert len(short.splitlines()) == len(long.splitlines())
    assert "for i in range(100000):" in long  # the body's index keeps the user's name
    assert "in range(99999, -1, -1):" in long  # the gradient: one loop running backwards
    assert "a = " in long  # the body's locals keep their names


def test_long_fori_loop_is_correct():
    args = (1.0, 0.5, 2.0)
    value, gx = tg.value_and_grad(lambda x0: spring(x0, 0.5, 2.0, 5_000))(1.0)
    assert value == pytest.approx(spring_unrolled(*args, n=5_000), rel=1e-12)
    assert gx == pytest.approx(numeric_grad(lambda x0: spring_unrolled(x0, 0.5, 2.0, 5_000), 1.0), rel=1e-6)


def rnn(params, xs):
    """An Elman RNN over the rows of xs with a dict of parameters, as a scan; the loss reads every state."""
    def cell(h, x):
        h = np.tanh(params["W"] @ h + params["U"] @ x + params["b"])
        return h, np.sum(h ** 2)

    h, per_step = tg.scan(cell, np.zeros(params["b"].shape), xs)
    return np.sum(per_step) + np.sum(h * params["b"])


def rnn_loop(params, xs):
    h, total = np.zeros(params["b"].shape), 0.0
    for x in xs:
        h = np.tanh(params["W"] @ h + params["U"] @ x + params["b"])
        total = total + np.sum(h ** 2)
    return total + np.sum(h * params["b"])


def make_rnn(seed=0, hidden=4, inputs=3, steps=7):
    rng = np.random.default_rng(seed)
    params = {"W": rng.normal(size=(hidden, hidden)) * 0.5, "U": rng.normal(size=(hidden, inputs)),
              "b": rng.normal(size=hidden)}
    return params, rng.normal(size=(steps, inputs))


def test_scan_rnn_gradient_matches_differences_for_a_dict_of_parameters():
    params, xs = make_rnn()
    value, grads = tg.value_and_grad(rnn)(params, xs)
    assert value == pytest.approx(rnn_loop(params, xs), rel=1e-12)
    for key in params:
        def along(p):
            return rnn_loop(dict(params, **{key: p}), xs)
        np.testing.assert_allclose(grads[key], numeric_grad(along, params[key]), rtol=1e-6, atol=1e-8)
    gx = tg.grad(rnn, argnums=1)(params, xs)  # the sequence's gradient comes out of the backward loop stacked
    np.testing.assert_allclose(gx, numeric_grad(lambda x: rnn_loop(params, x), xs), rtol=1e-6, atol=1e-8)


def test_scan_outside_a_trace_runs_the_python_loop():
    xs = np.arange(4.0)
    carry, ys = tg.scan(lambda c, x: (c + x, c * x), 1.0, xs)
    assert carry == 7.0 and ys.tolist() == [0.0, 1.0, 4.0, 12.0]
    carry, ys = tg.scan(lambda c, x: (c + x, c), 0.0, xs, reverse=True)
    assert ys.tolist() == [6.0, 5.0, 3.0, 0.0]  # ys keep the order of xs
    assert tg.fori_loop(2, 5, lambda i, c: c * i, 1.0) == 24.0


def test_reverse_scan_and_pytree_outputs_match_the_eager_loop():
    def f(x, xs):
        carry, ys = tg.scan(lambda c, r: ((c[0] * r, c[1] + r), {"a": c[0], "b": np.sin(r)}), (x, 0.0), xs,
                            reverse=True)
        return carry[0] + carry[1] * np.sum(ys["a"]) + np.sum(ys["b"] ** 2)

    xs = np.array([0.5, -1.0, 2.0])
    eager = f(1.5, xs)  # no trace: the Python loop
    value, grads = tg.value_and_grad(f, argnums=(0, 1))(1.5, xs)
    assert value == pytest.approx(eager, rel=1e-13)
    assert grads[0] == pytest.approx(numeric_grad(f, 1.5, xs, argnums=0), rel=1e-7)
    np.testing.assert_allclose(grads[1], numeric_grad(f, 1.5, xs, argnums=1), rtol=1e-7)


def test_loops_of_length_zero_and_one():
    f = lambda x, n: tg.fori_loop(0, n, lambda i, c: c * np.sin(c), x)
    assert tg.grad(lambda x: f(x, 0))(0.7) == 1.0
    assert tg.grad(lambda x: f(x, 1))(0.7) == pytest.approx(np.sin(0.7) + 0.7 * np.cos(0.7), rel=1e-14)
    value, g = tg.value_and_grad(lambda xs: np.sum(tg.scan(lambda c, x: (c + x, x * c), 1.0, xs)[1]))(np.zeros(0))
    assert value == 0.0 and g.shape == (0,)


def test_nested_loops_and_second_order():
    def f(x):
        def outer(i, c):
            return tg.fori_loop(0, 3, lambda j, d: np.sin(d) * x + 0.1 * d, c)
        return tg.fori_loop(0, 4, outer, x)

    g = tg.grad(f)(0.3)
    assert g == pytest.approx(numeric_grad(f, 0.3), rel=1e-7)
    gg = tg.grad(tg.grad(f))(0.3)
    assert gg == pytest.approx(numeric_grad(tg.grad(f), 0.3), rel=1e-6)


def test_checkpointed_loops_store_every_kth_carry_and_give_the_same_gradient():
    def f(x0, k, checkpoint=None):
        step = lambda i, s: s + 0.01 * np.sin(s * k + i * 0.001)
        return np.sum(tg.fori_loop(0, 100, step, x0, checkpoint=checkpoint))

    def g(h, xs, checkpoint=None):  # 23 rows in blocks of 5: four blocks and 3 rows after them
        c, ys = tg.scan(lambda h, x: (np.tanh(h + x), h * x), h, xs, checkpoint=checkpoint, reverse=True)
        return np.sum(c) + np.sum(ys ** 2)

    x0, xs = np.array([0.3, -0.2]), np.random.default_rng(0).normal(size=(23, 2))
    for fun, args, k in [(f, (x0, 1.5), 10), (g, (x0, xs), 5)]:
        plain = tg.value_and_grad(fun, argnums=(0, 1))(*args)
        blocked = tg.value_and_grad(lambda a, b: fun(a, b, k), argnums=(0, 1))(*args)
        assert blocked[0] == pytest.approx(plain[0], rel=1e-13)
        for p, b in zip(plain[1], blocked[1]):
            np.testing.assert_allclose(b, p, rtol=1e-12)
    src = tg.source(tg.grad(lambda a, b: f(a, b, 10)), x0, 1.5)
    assert "np.empty((100," not in src and "np.empty((10, 2))" in src  # ten carries stored, ten at a time
    with pytest.raises(tg.TracingError, match="checkpoint must be a positive int"):
        tg.grad(lambda a, b: f(a, b, 0))(x0, 1.5)


def test_the_loop_index_indexes_traced_arrays():
    def products(x):
        return tg.fori_loop(0, x.shape[0] - 1, lambda i, s: s + x[i] * x[i + 1], 0.0)

    x = np.random.default_rng(2).normal(size=30)
    value, g = tg.value_and_grad(products)(x)
    assert value == pytest.approx(np.sum(x[:-1] * x[1:]), rel=1e-13)
    np.testing.assert_allclose(g, np.r_[x[1:], 0.0] + np.r_[0.0, x[:-1]], rtol=1e-13)
    past_the_end = tg.jit(lambda x: tg.fori_loop(0, 3, lambda i, s: s + x[i + 1], 0.0))
    with pytest.raises(IndexError, match="out of bounds"):
        past_the_end(np.ones(3))


def test_jit_of_a_scan_stores_no_carries():
    src = tg.source(tg.jit(lambda xs: tg.scan(lambda c, x: (c * x, None), 1.0, xs)[0]), np.ones(5))
    assert src.count("np.empty") == 0  # the stacked carries only a gradient reads are dropped
    assert tg.jit(lambda xs: tg.scan(lambda c, x: (c * x, None), 1.0, xs)[0])(np.arange(1.0, 5.0)) == 24.0


def test_the_body_reads_global_arrays_at_every_call():
    scale = np.array([2.0])
    f = tg.jit(lambda xs: tg.scan(lambda c, x: (c + x * scale[0], None), 0.0, xs)[0])
    assert f(np.ones(3)) == 6.0
    scale[0] = 3.0
    assert f(np.ones(3)) == 9.0


def test_interpreter_and_compiled_code_agree():
    params, xs = make_rnn(1)
    fun = tg.value_and_grad(rnn)
    compiled = fun(params, xs)
    graph = tg.make_graph(fun, params, xs)
    leaves = [params["U"], params["W"], params["b"], xs]
    ref = evaluate(graph, *leaves, *fun.specialize(params, xs).captured())
    assert compiled[0] == pytest.approx(ref[0], rel=1e-12)
    for key, r in zip(["U", "W", "b"], ref[1:]):
        np.testing.assert_allclose(compiled[1][key], r, rtol=1e-12)


def test_while_loop_runs_until_its_condition_fails():
    def f(x):
        y, n = tg.while_loop(lambda s: s[0] < 10.0, lambda s: (s[0] * 1.5 + 0.1, s[1] + 1), (x, 0))
        return y + n

    assert tg.jit(f)(1.0) == f(1.0) == pytest.approx(13.46875 + 6)
    assert tg.jit(f)(20.0) == 20.0  # no iteration
    assert "while True:" in tg.source(tg.jit(f), 1.0)


# ---------------------------------------------------------------- bad input


def test_the_gradient_of_a_while_loop_is_an_error_naming_the_line():
    with pytest.raises(tg.GradTypeError, match="while_loop has no gradient") as info:
        tg.grad(lambda x: tg.while_loop(lambda c: c < 5.0, lambda c: c * 2.0, x))(1.0)
    assert "test_loops.py" in str(info.value) and "fori_loop" in str(info.value)
    with pytest.raises(tg.TracingError, match="not a boolean scalar"):
        tg.jit(lambda x: tg.while_loop(lambda c: c, lambda c: c * 2.0, x))(1.0)


def test_a_carry_that_changes_shape_or_dtype_is_an_error_naming_the_line():
    with pytest.raises(tg.TracingError, match=r"carry 'c' goes in as f64\[3\] and comes out of the body as f64\[\]"
                       ) as info:
        tg.grad(lambda x: tg.fori_loop(0, 2, lambda i, c: np.sum(c), x))(np.ones(3))
    assert "test_loops.py" in str(info.value)
    with pytest.raises(tg.TracingError, match="structure"):
        tg.grad(lambda x: tg.fori_loop(0, 2, lambda i, c: (c, c), x))(1.0)
    with pytest.raises(tg.TracingError, match="pair"):
        tg.grad(lambda x: tg.scan(lambda c, r: c * r, x, np.ones(2)))(1.0)


def test_bounds_must_be_static_ints():
    with pytest.raises(tg.TracingError, match="upper bound must be a Python int"):
        tg.grad(lambda x: tg.fori_loop(0, x, lambda i, c: c, x))(3.0)


def test_sequences_of_different_lengths_are_an_error():
    with pytest.raises(tg.ShapeError, match=r"different lengths \[2, 3\]"):
        tg.grad(lambda x: tg.scan(lambda c, r: (c, None), x, (np.ones(2), np.ones(3)))[0])(1.0)
    with pytest.raises(tg.ShapeError, match="length=4"):
        tg.grad(lambda x: tg.scan(lambda c, r: (c, None), x, np.ones(2), length=4)[0])(1.0)


def test_readable_generated_code():
    src = tg.source(tg.grad(rnn), *make_rnn())
    loops = re.findall(r"^\s*for (\w+) in range\((.*)\):", src, re.M)
    assert ("t", "7") in loops and ("t_1", "6, -1, -1") in loops
    assert "h = np.tanh(" in src or "h = tanh(" in src or re.search(r"^\s+h = ", src, re.M)
