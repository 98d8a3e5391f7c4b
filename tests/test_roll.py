"""Plain Python loops rolled back up (tracegrad.roll): which traced loops become one ``loop`` node, that the
rolled graph computes exactly what the unrolled one does (value and gradient, through the interpreter and
compiled), and that what cannot be rolled stays unrolled and correct."""

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import roll
from tracegrad.autodiff import value_and_grad_graph
from tracegrad.interpret import evaluate
from tracegrad.roll import roll_loops
from tracegrad.testing import numeric_grad
from tracegrad.tracer import trace


def spring(k, n=1000):
    dt = 0.01
    x, v = 1.0, 0.0
    for _ in range(n):
        a = -k * x
        v = v + dt * a
        x = x + dt * v
    return x


def spring_python(k, n):  # the same arithmetic on Python floats, in the same order
    dt, x, v = 0.01, 1.0, 0.0
    for _ in range(n):
        a = -k * x
        v = v + dt * a
        x = x + dt * v
    return x


def neighbours(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + x[i] * x[i + 1]
    return s


def rnn(W, U, b, xs):
    h = np.zeros(b.shape)
    loss = 0.0
    for x in xs:
        h = np.tanh(W @ h + U @ x + b)
        loss = loss + np.sum(h * h)
    return loss


def rnn_args(steps, rng):
    return (0.5 * rng.normal(size=(4, 4)), rng.normal(size=(4, 3)), 0.1 * rng.normal(size=4),
            rng.normal(size=(steps, 3)))


def primitives(graph):
    return [node.primitive.name for node in graph.nodes]


def both(f, *args, wrt=(0,), min_iterations=roll.MIN_ITERATIONS, min_nodes=roll.MIN_NODES):
    """Value and gradients of the unrolled and of the rolled graph, by the reference interpreter; and the
    rolled graph."""
    traced = trace(f, args)
    inputs = list(args) + [c.current() for c in traced.captures]
    rolled = roll_loops(traced.graph, min_iterations, min_nodes).verify()
    results = [evaluate(value_and_grad_graph(g, list(wrt)), *inputs) for g in (traced.graph, rolled)]
    return results[0], results[1], rolled


def assert_same(a, b):
    """The values are equal (the same operations in the same order); the gradients too, up to the order
    in which a constant's gradient is summed over the iterations (the loop's VJP adds them one by one)."""
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        assert np.asarray(u).dtype == np.asarray(v).dtype
        if k == 0:
            np.testing.assert_array_equal(u, v)
        else:
            scale = np.max(np.abs(u)) if np.size(u) else 0.0
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12 * scale)


@pytest.fixture
def unrolled(monkeypatch):
    """Compile loops as traced (roll.ENABLED off) within the test."""
    monkeypatch.setattr(roll, "ENABLED", False)


# ---------------------------------------------------------------- what is rolled, and equal to unrolled


def test_euler_spring_is_rolled_and_exact():
    unrolled_result, rolled_result, graph = both(spring, 2.0)
    assert primitives(graph).count("loop") == 1 and len(graph.nodes) < 12
    assert_same(unrolled_result, rolled_result)
    value, slope = tg.value_and_grad(spring)(2.0)
    assert value == spring_python(2.0, 1000)  # exactly the Python loop's arithmetic
    assert slope == pytest.approx(rolled_result[1], rel=1e-12)
    assert slope == pytest.approx(numeric_grad(lambda k: spring_python(k, 1000), 2.0), rel=1e-7)


def test_source_length_does_not_depend_on_the_trip_count():
    lines = {}
    for n in (20, 1000, 10_000):
        text = tg.source(tg.grad(lambda k: spring(k, n)), 2.0)
        assert f"for t in range({n - 1}):" in text
        lines[n] = len(text.splitlines())
    assert lines[20] == lines[1000] == lines[10_000] < 60


def test_the_body_keeps_the_users_lines_and_names():
    graph = tg.jit(spring).graph(2.0)
    loop = next(node for node in graph.nodes if node.primitive.name == "loop")
    body = loop.params["body"]
    lines = [node.source.line for node in body.nodes]
    assert lines == ["a = -k * x", "a = -k * x", "v = v + dt * a", "v = v + dt * a", "x = x + dt * v",
                     "x = x + dt * v"]
    text = tg.source(tg.jit(spring), 2.0)
    assert "a = " in text and "test_roll.py:22" in text


def test_neighbour_products_are_rolled_with_two_rows(rng):
    x = rng.normal(size=401)
    unrolled_result, rolled_result, graph = both(neighbours, x)
    assert primitives(graph).count("loop") == 1 and len(graph.nodes) < 10
    assert_same(unrolled_result, rolled_result)
    value, grad = tg.value_and_grad(neighbours)(x)
    s = 0.0
    for i in range(400):
        s = s + x[i] * x[i + 1]
    assert value == s
    np.testing.assert_allclose(grad, rolled_result[1], rtol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(neighbours, x), rtol=1e-7, atol=1e-9)
    assert "x[1:400]" in tg.source(tg.jit(neighbours), x)  # the rows x[i] for i in 1..399, as a slice


def test_builtin_sum_over_a_generator_is_rolled(rng):
    def total(x):
        return sum(x[i] * x[i + 1] for i in range(400))

    x = rng.normal(size=401)
    unrolled_result, rolled_result, graph = both(total, x)
    assert "loop" in primitives(graph)
    assert_same(unrolled_result, rolled_result)


def test_rnn_over_time_steps_is_rolled(rng):
    args = rnn_args(30, rng)
    unrolled_result, rolled_result, graph = both(rnn, *args, wrt=(0, 1, 2))
    assert primitives(graph).count("loop") == 1
    assert_same(unrolled_result, rolled_result)
    value, grads = tg.value_and_grad(rnn, argnums=(0, 1, 2))(*args)
    assert value == pytest.approx(unrolled_result[0], rel=1e-13)
    for g, expected, k in zip(grads, rolled_result[1:], range(3)):
        np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g, numeric_grad(rnn, *args, argnums=k), rtol=1e-6, atol=1e-8)
    source = tg.source(tg.grad(rnn, argnums=(0, 1, 2)), *args)
    assert "for t in range(29):" in source and "for t_1 in range(28, -1, -1):" in source


def test_rnn_indexed_by_time_and_compiled_like_unrolled(rng, unrolled):
    def rnn_indexed(W, U, b, xs):
        h = np.zeros(b.shape)
        loss = 0.0
        for t in range(xs.shape[0]):
            h = np.tanh(W @ h + U @ xs[t] + b)
            loss = loss + np.sum(h * h)
        return loss

    args = rnn_args(8, rng)
    f = tg.value_and_grad(rnn_indexed, argnums=(0, 1, 2, 3))
    expected = f(*args)
    assert "loop" not in primitives(f.graph(*args))
    roll.ENABLED = True
    g = tg.value_and_grad(rnn_indexed, argnums=(0, 1, 2, 3))
    got = g(*args)
    assert "loop" in primitives(g.graph(*args))
    assert got[0] == pytest.approx(expected[0], rel=1e-13)
    for a, b in zip(got[1], expected[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("index, rows", [
    (lambda x, i: x[2 * i + 1], "strided"),
    (lambda x, i: x[-1 - i], "backwards"),
    (lambda x, i: x[:, i], "columns"),
    (lambda x, i: x[1, i, None], "with None"),
])
def test_affine_reads_along_any_axis(index, rows, rng):
    def f(x):
        s = 0.0
        for i in range(16):
            s = s * 0.5 + np.sum(np.sin(index(x, i)))
        return s

    x = rng.normal(size=(5, 16)) if rows in ("columns", "with None") else rng.normal(size=33)
    unrolled_result, rolled_result, graph = both(f, x)
    assert "loop" in primitives(graph)
    assert_same(unrolled_result, rolled_result)
    value, grad = tg.value_and_grad(f)(x)
    assert value == pytest.approx(unrolled_result[0], rel=1e-14)
    np.testing.assert_allclose(grad, unrolled_result[1], rtol=1e-12, atol=1e-15)


def test_float32_stays_float32(rng):
    def f(k, x):
        v = np.float32(0.0) * x
        for _ in range(50):
            v = v + np.float32(0.01) * (-k * x)
            x = x + np.float32(0.01) * v
        return np.sum(x)

    args = (np.float32(2.0), rng.normal(size=3).astype(np.float32))
    unrolled_result, rolled_result, graph = both(f, *args, wrt=(0, 1))
    assert "loop" in primitives(graph)
    loop = next(node for node in graph.nodes if node.primitive.name == "loop")
    assert {v.aval.dtype for v in loop.outs} == {np.dtype(np.float32)}
    assert_same(unrolled_result, rolled_result)
    value, (gk, gx) = tg.value_and_grad(f, argnums=(0, 1))(*args)
    assert value.dtype == np.float32 and gx.dtype == np.float32
    assert value == unrolled_result[0]
    np.testing.assert_allclose(gx, unrolled_result[2], rtol=1e-6)


def test_a_literal_initial_value_is_a_carry():
    def f(y):
        s = 2.0
        for _ in range(30):
            s = s * y + 1.0
        return s

    unrolled_result, rolled_result, graph = both(f, 0.7)
    loop = next(node for node in graph.nodes if node.primitive.name == "loop")
    assert loop.params["length"] == 30 and graph.nodes == [loop]  # no iteration left over
    assert_same(unrolled_result, rolled_result)


def test_values_of_the_last_iteration_used_after_the_loop():
    def f(k):
        x, v = 1.0, 0.5
        for _ in range(20):
            a = -k * x
            v = v + 0.1 * a
            x = x + 0.1 * v
        return x * a  # a is no carry: the last iteration stays unrolled after the loop

    unrolled_result, rolled_result, graph = both(f, 1.5)
    assert "loop" in primitives(graph)
    assert_same(unrolled_result, rolled_result)
    assert tg.grad(f)(1.5) == pytest.approx(numeric_grad(f, 1.5), rel=1e-7)


def test_nested_grad_of_a_plain_loop():
    def f(k):
        return spring(k, 40)

    second = tg.grad(tg.grad(f))(2.0)
    first = lambda k: tg.grad(f)(k)
    assert second == pytest.approx(numeric_grad(first, 2.0), rel=1e-6)
    assert "loop" in primitives(tg.grad(tg.grad(f)).graph(2.0))


def test_a_rolled_loop_is_drawn_as_one_node_with_its_values():
    d = tg.draw(lambda k: spring(k, 200), 2.0, backward=True, values=True)
    assert "loop" in d.dot and d.dot.count("label=") < 60


def test_disabled_rolling_compiles_as_traced(unrolled):
    assert "loop" not in primitives(tg.jit(lambda k: spring(k, 10)).graph(2.0))


def test_generated_code_is_deterministic(rng):
    x = rng.normal(size=30)
    texts = {tg.source(tg.grad(neighbours), x) for _ in range(2)}
    graphs = {str(roll_loops(trace(rnn, rnn_args(9, rng)).graph)) for _ in range(2)}
    assert len(texts) == len(graphs) == 1


# ---------------------------------------------------------------- what is not rolled, and stays correct


def test_iterations_that_differ_are_not_rolled():
    weights = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]

    def f(x):
        for w in weights:  # a different constant in every iteration
            x = np.sin(x * w)
        return x

    unrolled_result, rolled_result, graph = both(f, 0.3)
    assert "loop" not in primitives(graph)
    assert_same(unrolled_result, rolled_result)


@pytest.mark.parametrize("n", [7, 12])
def test_a_value_used_two_iterations_later(n):
    def fib(x):
        a, b = x, x
        for _ in range(n):
            a, b = b, a * 0.5 + b  # b of step t reads b of step t - 2 (as a)
        return b

    unrolled_result, rolled_result, graph = both(fib, 0.9, min_nodes=0)
    loops = [node for node in graph.nodes if node.primitive.name == "loop"]
    if n == 7:
        assert not loops  # one step is no loop body; two steps repeat only three times
    else:  # two steps at a time are a loop body: the value of step t - 2 is a carry
        assert len(loops) == 1 and len(loops[0].params["body"].nodes) == 4
    assert_same(unrolled_result, rolled_result)
    assert tg.grad(fib)(0.9) == pytest.approx(numeric_grad(fib, 0.9), rel=1e-7)


def test_per_step_values_stacked_after_the_loop(rng):
    def f(x):
        ys = []
        h = x
        for _ in range(30):
            h = np.tanh(h * 1.1)
            ys.append(h)
        return np.sum(np.stack(ys) ** 2)

    x = rng.normal(size=3)
    unrolled_result, rolled_result, graph = both(f, x)
    assert primitives(graph).count("loop") == 1
    assert "concatenate" not in primitives(graph)  # np.stack of every step: the loop's stacked output itself
    assert_same(unrolled_result, rolled_result)
    text = tg.source(tg.grad(f), x)
    assert "for t in range(30):" in text and len(text.splitlines()) < 60
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad(f, x), rtol=1e-7)


def test_a_sum_of_per_step_values_rolls_too(rng):
    def f(x):
        ys = []
        h = x
        for _ in range(60):
            h = np.tanh(h * 1.1 + 0.2)
            ys.append(h * 2.0)
        return np.sum(sum(ys))

    x = rng.normal(size=3)
    unrolled_result, rolled_result, graph = both(f, x)
    assert primitives(graph).count("loop") == 2  # the steps, then the sum over their stacked values
    assert_same(unrolled_result, rolled_result)


def test_the_last_row_used_after_a_loop_with_stacked_values(rng):
    def f(xs):
        ys, h = [], 0.5
        for x in xs:
            h = np.tanh(h * x + 0.2)
            ys.append(h)
        return np.sum(np.stack(ys)) + x  # x: the last row, read after the loop

    xs = rng.normal(size=40)
    unrolled_result, rolled_result, graph = both(f, xs)
    assert_same(unrolled_result, rolled_result)


def test_some_steps_values_used_after_the_loop(rng):
    def f(x):
        ys = []
        h = x
        for _ in range(30):
            h = np.tanh(h * 1.1 + 0.2)
            ys.append(h)
        return np.sum(ys[3] * ys[17]) + np.sum(h)

    x = rng.normal(size=3)
    unrolled_result, rolled_result, graph = both(f, x)
    assert_same(unrolled_result, rolled_result)
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad(f, x), rtol=1e-7)


def test_shapes_that_change_are_not_rolled(rng):
    def f(x):
        for _ in range(6):
            x = np.sin(x[1:]) * 2.0  # data-dependent structure: a new shape each iteration
        return np.sum(x)

    x = rng.normal(size=10)
    unrolled_result, rolled_result, graph = both(f, x)
    assert "loop" not in primitives(graph)
    assert_same(unrolled_result, rolled_result)


@pytest.mark.parametrize("n", [1, 2])
def test_one_and_two_iterations(n):
    def f(k):
        return spring(k, n)

    unrolled_result, rolled_result, graph = both(f, 2.0)
    assert "loop" not in primitives(graph)  # fewer than MIN_ITERATIONS
    assert_same(unrolled_result, rolled_result)
    unrolled_result, rolled_result, graph = both(f, 2.0, min_iterations=2, min_nodes=0)
    assert_same(unrolled_result, rolled_result)
    assert tg.value_and_grad(f)(2.0)[0] == spring_python(2.0, n)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 9])
def test_short_loops_around_the_minimum(n, rng):
    x = rng.normal(size=n + 1)
    for min_iterations in (2, 3, 4):
        unrolled_result, rolled_result, _ = both(neighbours, x, min_iterations=min_iterations, min_nodes=0)
        assert_same(unrolled_result, rolled_result)
    unrolled_result, rolled_result, _ = both(rnn, *rnn_args(n, rng), wrt=(0, 1, 2), min_iterations=2, min_nodes=0)
    assert_same(unrolled_result, rolled_result)


DATA = np.linspace(-1.0, 1.0, 40).reshape(20, 2)


def test_rows_of_a_global_array_are_read_again_at_every_call():
    def f(w):
        s = 0.0
        for row in DATA:  # a captured global: its rows come from the array passed at each call
            s = s + np.sum(np.tanh(row * w))
        return s

    w = np.array([0.3, -0.7])
    unrolled_result, rolled_result, graph = both(f, w)
    assert "loop" in primitives(graph)
    assert_same(unrolled_result, rolled_result)
    fun = tg.value_and_grad(f)
    value, grad = fun(w)
    assert value == pytest.approx(unrolled_result[0], rel=1e-14)
    DATA[:] *= 2.0
    try:
        assert fun(w)[0] == pytest.approx(f(w), rel=1e-13)
    finally:
        DATA[:] /= 2.0


def test_scans_inside_a_python_loop_stay_as_they_are(rng):
    def f(x):
        for _ in range(6):
            x, _ = tg.scan(lambda c, r: (np.sin(c * r), None), x, np.linspace(0.5, 1.0, 5))
        return x

    unrolled_result, rolled_result, graph = both(f, 0.4, min_nodes=0)
    assert primitives(graph).count("loop") == 6  # each has its own body graph: not one iteration's copy
    assert_same(unrolled_result, rolled_result)


def test_short_runs_stay_unrolled(rng):
    def f(x, w):  # 4 iterations of 4 nodes: compiled unrolled, the fusion passes make it one loop of scalars
        for _ in range(4):
            x = np.tanh(x * w) + 0.5 * x
        return np.sum(x * x)

    x, w = rng.normal(size=6), rng.normal(size=6)
    assert "loop" not in primitives(tg.jit(f).graph(x, w))
    unrolled_result, rolled_result, graph = both(f, x, w, wrt=(0, 1), min_nodes=0)
    assert "loop" in primitives(graph)
    assert_same(unrolled_result, rolled_result)


def test_two_loops_one_after_the_other(rng):
    def f(x):
        s = 0.0
        for i in range(20):
            s = s + x[i] * x[i]
        p = 1.0
        for i in range(20):
            p = p * np.cos(x[i] + s)
        return p

    x = rng.normal(size=20)
    unrolled_result, rolled_result, graph = both(f, x)
    assert primitives(graph).count("loop") == 2
    assert_same(unrolled_result, rolled_result)


def _table_loop(kind, n):
    """Loops of several shapes, for the table below: rows and carries mixed, a swap, stacked values, a
    Python ``if`` on the index, a row carried to the next step."""
    def f(x, w):
        s, h, p, a, b, ys = 0.0, w, w, w, 1.0, []
        prev = x[0]
        for i in range(n):
            if kind == 0:
                s = s * 0.9 + x[i] * x[i + 1] * w
            elif kind == 1:
                a, b = b * x[n - i], a + np.sin(b)
            elif kind == 2:
                h = np.tanh(h * x[i] + 0.1)
                ys.append(h * h)
            elif kind == 3:
                h = np.tanh(h * x[2 * i % (n + 1)] + 0.1)
                ys.append(h)
            elif kind == 4:
                p = p * np.cos(x[i])
                if i % 3 == 0:
                    s = s + p
            else:
                h = h + prev * x[i + 1]
                prev = x[i + 1]
        if kind == 3:
            return np.sum(np.stack(ys) * x[:n])
        return s + a + b + h * prev + p + sum(ys)
    return f


@pytest.mark.parametrize("kind", range(6))
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 17])
def test_a_table_of_loops_rolled_at_any_minimum(kind, n, rng):
    f = _table_loop(kind, n)
    args = (rng.normal(size=2 * n + 3), 0.7)
    for min_iterations in (2, 3, 4):
        unrolled_result, rolled_result, _ = both(f, *args, wrt=(0, 1), min_iterations=min_iterations, min_nodes=0)
        assert_same(unrolled_result, rolled_result)


def test_rolling_is_linear_in_the_graph_size(rng, monkeypatch):
    """Counted in work, not time (the machine is shared): the pairs of nodes rolling compares stay within a
    small multiple of the graph's size, where a quadratic search would compare millions."""
    compared = [0]
    same_params = roll._same_params

    def counted(a, b):
        compared[0] += 1
        return same_params(a, b)

    monkeypatch.setattr(roll, "_same_params", counted)
    graph = trace(lambda k: spring(k, 10_000), (2.0,)).graph
    assert len(graph.nodes) > 59_000
    rolled = roll_loops(graph)
    assert compared[0] <= 2 * len(graph.nodes)
    assert len(rolled.nodes) < 12

    kept = (np.random.default_rng(0).random(3_000) < 0.5).tolist()

    def unrollable(x):  # a random half of the steps' values kept: a long periodic run that cannot roll
        ys = []
        for _ in range(3_000):
            x = np.sin(x)
            ys.append(x)
        return sum(y for y, keep in zip(ys, kept) if keep)

    graph = trace(unrollable, (0.5,)).graph
    compared[0] = 0
    assert roll_loops(graph) is graph
    assert compared[0] <= 40 * len(graph.nodes)
