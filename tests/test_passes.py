"""Each optimisation pass on its own, and all of them against the reference interpreter."""
import re

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.autodiff import value_and_grad_graph
from tracegrad.interpret import evaluate
from tracegrad.passes import cse, dce, optimize, simplify
from tracegrad.tracer import trace

from test_primitives import PARAMS, make_case


def raw_value_and_grad_graph(fn, *args):
    traced = trace(fn, args)
    return value_and_grad_graph(traced.graph, list(range(len(args)))), [c.current() for c in traced.captures]


def names_of(graph):
    return [node.primitive.name for node in graph.nodes]


def test_dce_drops_unused_nodes():
    def f(x):
        unused = np.exp(x) * 2
        return np.sum(np.sin(x))

    graph = trace(f, (np.ones(3),)).graph
    assert "exp" in names_of(graph)
    assert "exp" not in names_of(dce(graph)) and "sin" in names_of(dce(graph))


def test_cse_merges_repeated_computations():
    def f(z):
        a = z - np.max(z, axis=1, keepdims=True)
        b = np.exp(z - np.max(z, axis=1, keepdims=True))
        return np.sum(a * b)

    graph = trace(f, (np.ones((2, 3)),)).graph
    assert names_of(graph).count("reduce_max") == 2
    merged = cse(graph)
    assert names_of(merged).count("reduce_max") == 1 and names_of(merged).count("sub") == 1
    x = np.random.default_rng(0).normal(size=(2, 3))
    assert evaluate(merged, x) == evaluate(graph, x)


def test_cse_keeps_distinct_zero_gradients_apart():
    f = tg.grad(lambda x, y, z: np.sum(z * 2.0), argnums=(0, 1))
    gx, gy = f(np.ones(2), np.ones(2), np.ones(2))
    assert (gx == 0).all() and (gy == 0).all() and not np.shares_memory(gx, gy)


def test_simplify_skips_broadcasts_that_elementwise_ops_do_anyway():
    G = np.arange(8.0).reshape(2, 4)
    graph, captured = raw_value_and_grad_graph(lambda Y: np.sum(Y * G), np.ones((2, 4)))
    assert "broadcast_to" in names_of(graph)
    simpler = dce(simplify(graph))
    assert "broadcast_to" not in names_of(simpler)
    y = np.random.default_rng(0).normal(size=(2, 4))
    for a, b in zip(evaluate(graph, y, *captured), evaluate(simpler, y, *captured)):
        np.testing.assert_array_equal(a, b)
    assert "grad_Y = grad_out * G" in tg.source(tg.grad(lambda Y: np.sum(Y * G)), y)


def test_simplify_removes_double_negation_and_sums_of_broadcast_scalars():
    graph = trace(lambda x: -(-x) + np.sum(np.broadcast_to(x, (5,))), (2.0,)).graph
    simpler = dce(simplify(graph))
    assert names_of(simpler) == ["mul", "add"]
    assert evaluate(simpler, 2.0) == evaluate(graph, 2.0) == [12.0]


def test_simplify_joins_reshapes_of_reshapes():
    def f(x):  # (2, 3) -> (6,) -> (3, 2) is one reshape; (2, 3) -> (6,) -> (2, 3) is none
        return np.sum(x.reshape(6).reshape(3, 2) * 2.0) + np.sum(x.reshape(6).reshape(2, 3) * 3.0)

    graph = cse(trace(f, (np.ones((2, 3)),)).graph)
    simpler = dce(simplify(graph))
    assert names_of(graph).count("reshape") == 3 and names_of(simpler).count("reshape") == 1
    x = np.arange(6.0).reshape(2, 3)
    assert evaluate(simpler, x) == evaluate(graph, x)


def assert_each_value_has_one_name(graph):
    """A value stored as an array is never also a loop's scalar (they would share one name)."""
    stored = {v for node in graph.nodes for v in node.outs}
    for node in graph.nodes:
        if node.primitive.name == "loop_nest":
            again = {m.out for m in node.params["origin"].nodes} & stored - set(node.outs)
            assert not again, f"a loop computes stored values again: {again}"


SPECIAL = [np.nan, np.inf, -np.inf, 0.0]


@pytest.mark.parametrize("name,i", PARAMS)
def test_optimized_graphs_equal_the_reference_interpreter(name, i):
    loss, args, _ = make_case(name, i)
    graph, captured = raw_value_and_grad_graph(loss, *args)
    optimized = optimize(graph)
    optimized.verify()
    assert_each_value_has_one_name(optimized)
    assert len(optimized.nodes) <= len(graph.nodes)
    inputs = [args]
    # the same with special values written into the first argument
    first = np.array(args[0], dtype=np.float64)
    if first.ndim:
        first.flat[: len(SPECIAL)] = SPECIAL[: first.size]
        inputs.append([first] + list(args[1:]))
    for xs in inputs:
        with np.errstate(all="ignore"):
            expected = evaluate(graph, *xs, *captured)
            got = evaluate(optimized, *xs, *captured)
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def test_fusion_turns_elementwise_chains_into_loops_with_the_same_names(rng):
    x = rng.normal(size=50)
    fun = tg.value_and_grad(rosenbrock)
    graph = tg.make_graph(fun, x)
    assert "loop_nest" in names_of(graph)
    src = tg.source(fun, x)
    # one loop computes the sum and stores the gradient, as a hand-written Rosenbrock does: what row i0 adds
    # to x[i0 + 1] is carried to the next row, which stores grad_x[i0 + 1] with its own terms
    assert src.count("for i0 in range(49):") == 1 and "        grad_s3 = " in src
    assert "out += s8" in src and "grad_x_at1 += grad_s0" in src
    assert "grad_x[i0] = grad_x_at0" in src and "grad_x[49] = grad_x_at1" in src
    assert src.count("np.empty(") + src.count("np.zeros(") == 1  # grad_x: no array is stored for the backward
    assert [n.primitive.name for n in graph.nodes].count("loop_nest") == 1
    value, g = fun(x)
    raw, captured = raw_value_and_grad_graph(rosenbrock, x)
    expected = evaluate(raw, x)
    assert value == pytest.approx(expected[0], rel=1e-13)
    np.testing.assert_allclose(g, expected[1], rtol=1e-13)


def test_fused_loops_read_broadcast_inputs_and_keep_float32(rng):
    a = rng.normal(size=(3, 4)).astype(np.float32)
    row = rng.normal(size=(1, 4)).astype(np.float32)
    col = rng.normal(size=3).astype(np.float32)[:, None]

    def f(a, row, col):
        return np.tanh(a * row + col) * 2.0 - np.exp(a) * row

    out = tg.jit(f)(a, row, col)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, f(a, row, col), rtol=1e-6)
    src = tg.source(f, a, row, col)
    assert "row[0, i1]" in src and "col[i0, 0]" in src and "np.empty((3, 4), np.float32)" in src


def test_values_used_after_the_loop_are_not_fused_away(rng):
    def f(x):
        y = np.exp(x) * 2.0  # needed by the backward pass: must stay an array
        return np.sum(np.sin(y) + y)

    x = rng.normal(size=5)
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad_of(f, x), rtol=1e-7)


def numeric_grad_of(f, x):
    from tracegrad.testing import numeric_grad
    return numeric_grad(f, x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fusion", [True, False])
def test_scalar_kernels_on_arrays_are_called_in_loops(rng, dtype, fusion):
    # sigmoid and where have kernels taking scalars: even a lone array use gets a loop of its own
    x = rng.normal(size=(3, 4)).astype(dtype)
    fun = tg.jit(lambda x: np.where(x > 0, tg.sigmoid(x), x))
    raw = trace(fun.fun, (x,)).graph
    graph = optimize(raw, fusion=fusion)
    assert names_of(graph) == (["loop_nest"] if fusion else ["gt", "loop_nest", "loop_nest"])
    out = tg.jit(fun.fun, debug_nans=not fusion)(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, evaluate(raw, x)[0], rtol=1e-6 if dtype == np.float32 else 1e-15)
    src = tg.source(tg.jit(fun.fun, debug_nans=not fusion), x)
    assert "sigmoid(x[i0, i1])" in src


def test_without_fusion_only_scalar_kernels_get_loops(rng):
    x = rng.normal(size=5)
    graph = optimize(trace(lambda x: np.exp(x) * 2.0 + x, (x,)).graph, fusion=False)
    assert "loop_nest" not in names_of(graph)


SLICED = {
    "shifted 1-d": (lambda x: np.sum(x[1:-1] * x[:-2] + np.sin(x[2:]) ** 2 * x[:-1].mean()), (7,)),
    "2-d rows and columns": (lambda x: np.sum(np.tanh(x[1:, :2]) * x[:-1, 1:]), (4, 3)),
    "integer index and newaxis": (lambda x: np.sum(x[:, 0][:, None] * x[:, 1:] + x[2, 1:] ** 2), (3, 4)),
}


SLICE_ASSIGNMENT = re.compile(r"\w+\[[^\]]*(\d:|:-?\d)[^\]]*\] = ")  # a padded slice gradient: s5[1:] = g


@pytest.mark.parametrize("name", sorted(SLICED))
def test_slice_gradients_are_added_in_loops_not_padded(rng, name):
    # the gradient of x[1:] is place(g, index=(1:,)): zeros of x's shape with g written from 1 on; fused,
    # a loop over g adds it in (grad_x[i0 + 1] += g) or a loop over x reads g[i0 - 1] where i0 >= 1,
    # instead of building the padded array
    f, shape = SLICED[name]
    x = rng.normal(size=shape)
    fun = tg.value_and_grad(f)
    raw, captured = raw_value_and_grad_graph(f, x)
    expected = evaluate(raw, x, *captured)
    value, g = fun(x)
    assert value == pytest.approx(expected[0], rel=1e-13)
    np.testing.assert_allclose(g, expected[1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g, numeric_grad_of(f, x), rtol=1e-6, atol=1e-8)
    graph = tg.make_graph(fun, x)
    fused_places = [m for n in graph.nodes if n.primitive.name == "loop_nest"
                    for m in n.params["origin"].nodes if m.primitive.name == "place"]
    assert fused_places, "no slice gradient was fused"
    src = tg.source(fun, x)
    assert ("] += " in src or " if i" in src) and not SLICE_ASSIGNMENT.search(src)


def test_slice_gradients_with_other_terms_are_read_with_offsets(rng):
    # grad_x = place(a) + place(b) + 2 x: not a sum of slice gradients alone, so one loop over x reads them
    f = lambda x: np.sum(x[1:] * x[:-1]) + np.sum(x ** 2)
    x = rng.normal(size=6)
    src = tg.source(tg.grad(f), x)
    assert "(grad_s0[i0 - 1] if i0 >= 1 else 0.0)" in src and "(grad_s1[i0] if i0 < 5 else 0.0)" in src
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad_of(f, x), rtol=1e-7)


def test_sums_of_slice_gradients_are_added_into_one_array(rng):
    f = lambda x: np.sum(np.tanh(x[1:, :2]) * x[:-1, 1:])
    x = rng.normal(size=(4, 3))
    src = tg.source(tg.grad(f), x)
    assert "grad_x = np.zeros((4, 3))" in src and "grad_x[i0 + 1, i1] += grad_s0" in src
    assert "grad_x[i0, i1 + 1] += grad_s2" in src
    np.testing.assert_allclose(tg.grad(f)(x), numeric_grad_of(f, x), rtol=1e-7)


def test_fused_slice_gradients_keep_float32(rng):
    x = rng.normal(size=9).astype(np.float32)
    g = tg.grad(lambda x: np.sum(x[1:] * x[:-1]))(x)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.r_[x[1:], 0] + np.r_[0, x[:-1]], rtol=1e-6)
    src = tg.source(tg.grad(lambda x: np.sum(x[1:] * x[:-1])), x)
    assert "grad_x = np.empty((9,), np.float32)" in src and "out = np.float32(0.0)" in src
    assert "grad_x_at0, grad_x_at1 = grad_x_at1, np.float32(0.0)" in src  # (registers of float32 too)


def affine(W, b, X):
    Y = X @ W + b
    return np.sum(Y ** 2)


def test_loops_over_the_same_values_become_one_loop_with_several_outputs(rng):
    W, b, X = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(4, 3))
    fun = tg.value_and_grad(affine, argnums=(0, 1))
    graph = tg.make_graph(fun, W, b, X).verify()
    loops = [n for n in graph.nodes if n.primitive.name == "loop_nest"]
    assert len(loops) == 1 and len(loops[0].outs) == 3
    assert "out: f64[], grad_b: f64[2], grad_s0: f64[4,2] = loop_nest[shape=(4, 2), " \
        "accumulate=(True, True, False), " in str(graph)
    src = tg.source(fun, W, b, X)
    assert src.count("for i0 in range(4):") == 1 and "grad_b[i1] += grad_Y" in src
    assert "# forward and backward pass in one loop" in src
    value, (gW, gb) = fun(W, b, X)
    raw, captured = raw_value_and_grad_graph(affine, W, b, X)
    expected = evaluate(raw, W, b, X)
    assert value == pytest.approx(expected[0], rel=1e-13)
    np.testing.assert_allclose(gW, expected[1], rtol=1e-13)
    np.testing.assert_allclose(gb, expected[2], rtol=1e-13)
    np.testing.assert_allclose(gb, numeric_grad_of(lambda b: affine(W, b, X), b), rtol=1e-7)


def test_a_loop_needing_another_loops_output_stays_apart(rng):
    def f(W, x):  # the ReLU's backward loop needs grad_h, computed from the forward loop's h
        h = np.maximum(x @ W + 1.0, 0.0)
        return np.sum(np.tanh(h @ W) ** 2)

    W, x = rng.normal(size=(3, 3)), rng.normal(size=(4, 3))
    fun = tg.grad(f)
    graph = tg.make_graph(fun, W, x).verify()
    loops = [n for n in graph.nodes if n.primitive.name == "loop_nest"]
    assert len(loops) >= 2
    for k, loop in enumerate(loops):  # no loop reads what a loop after it computes
        later = {v for other in loops[k + 1:] for v in other.outs}
        assert not later & set(loop.inputs)
    np.testing.assert_allclose(fun(W, x), numeric_grad_of(lambda W: f(W, x), W), rtol=1e-6, atol=1e-9)


def test_long_chains_keep_checkpoints_instead_of_recomputing_from_the_start(rng):
    from tracegrad.passes import RECOMPUTE_NODES, _recomputable

    def f(x):  # the backward pass needs every y: recomputing each from x would cost O(n^2)
        y = x
        for _ in range(3 * RECOMPUTE_NODES):
            y = y * y * 0.5 + 0.1
        return np.sum(y * y)

    x = rng.normal(size=6)
    raw, _ = raw_value_and_grad_graph(f, x)
    graph = dce(simplify(cse(raw)))
    uses = {}
    for node in graph.nodes:
        for a in node.inputs:
            uses.setdefault(a, []).append(node)
    again = _recomputable(graph, uses, set(graph.outputs))
    forward = [n for n in graph.nodes if not n.backward and n.primitive.cheap]
    stored = [n for n in forward if n not in again]  # checkpoints: each value is at most N nodes from one
    assert len(stored) >= len(forward) // (RECOMPUTE_NODES + 1) > 0
    np.testing.assert_allclose(tg.grad(f)(x), evaluate(raw, x)[1], rtol=1e-12)


def test_a_value_stored_for_the_backward_pass_is_summed_in_the_loop_that_computes_it(rng):
    def f(z):  # e is stored (the backward pass reads it) and summed by rows in the same loop
        e = np.exp(z * 0.5)
        return np.sum(np.log(np.sum(e, axis=1)))

    z = rng.normal(size=(3, 4))
    src = tg.source(tg.grad(f), z)
    assert "e[i0, i1] = np.exp(s0)" in src and "_at0 += e[i0, i1]" in src and "sum_axis" not in src
    raw, _ = raw_value_and_grad_graph(f, z)
    np.testing.assert_allclose(tg.grad(f)(z), evaluate(raw, z)[1], rtol=1e-13)
    np.testing.assert_allclose(tg.grad(f)(z), numeric_grad_of(f, z), rtol=1e-7)


def test_a_loop_reading_a_sum_waits_for_the_loop_that_sums(rng):
    def log_softmax_loss(z, w):  # the second loop reads the row sums: it cannot be the same loop
        s = np.exp(z - np.max(z, axis=1, keepdims=True))
        logp = z - np.log(np.sum(s, axis=1, keepdims=True))
        return np.sum(logp * w)

    z, w = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    fun = tg.value_and_grad(log_softmax_loss)
    graph = tg.make_graph(fun, z, w).verify()
    for node in graph.nodes:
        if node.primitive.name == "loop_nest":
            summed = {v for v, s in zip(node.outs, node.params["accumulate"]) if s}
            assert not summed & set(node.inputs)
    raw, captured = raw_value_and_grad_graph(log_softmax_loss, z, w)
    expected = evaluate(raw, z, w, *captured)
    value, g = fun(z, w)
    assert value == pytest.approx(expected[0], rel=1e-13)
    np.testing.assert_allclose(g, expected[1], rtol=1e-12, atol=1e-15)


def test_an_unrolled_elementwise_network_is_one_loop_of_scalars(rng):
    def f(x, w):
        for _ in range(4):
            x = np.tanh(x * w) + 0.5 * x
        return np.sum(x * x)

    x, w = rng.normal(size=6), rng.normal(size=6)
    fun = tg.value_and_grad(f, argnums=(0, 1))
    src = tg.source(fun, x, w)
    assert src.count("for i0 in range(6):") == 1
    assert src.count("np.empty(") == 2  # grad_x and grad_w: every other value is a scalar of the loop
    raw, _ = raw_value_and_grad_graph(f, x, w)
    expected = evaluate(raw, x, w)
    value, (gx, gw) = fun(x, w)
    assert value == pytest.approx(expected[0], rel=1e-13)
    np.testing.assert_allclose(gx, expected[1], rtol=1e-12)
    np.testing.assert_allclose(gw, expected[2], rtol=1e-12)


def test_a_slice_taken_twice_is_read_from_its_array_not_computed_again(rng):
    # after cse the two slices are one value: its cotangent term is stored (a slice gradient reads it with
    # an offset) and was also recomputed by the merged loop under the same name
    def f(x):
        y = np.sin(x)
        a = y[1:]
        b = y[1:]
        return np.sum(a * b) + np.sum(np.cos(b))

    x = np.linspace(-0.9, 1.1, 7)
    fun = tg.value_and_grad(f)
    assert_each_value_has_one_name(tg.make_graph(fun, x))
    value, g = fun(x)
    assert value == pytest.approx(f(x), rel=1e-13)
    np.testing.assert_allclose(g, numeric_grad_of(f, x), rtol=1e-6, atol=1e-9)


def test_long_unrolled_chains_need_no_recursion():
    """An unrolled sum of 1,500 terms is a chain 1,500 adds deep: every pass walks it without recursion
    (Python's default limit is 1,000 frames), and without walking it again from each of its adds."""
    import sys

    def total(x):
        s = 0.0
        for i in range(1500):
            s = s + x[i] * x[i + 1]
        return s

    x = np.random.default_rng(0).normal(size=1501)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # far below the chain's depth
    try:
        graph, captured = raw_value_and_grad_graph(total, x)
        optimized = optimize(graph)
    finally:
        sys.setrecursionlimit(limit)
    value, grad = evaluate(optimized, x, *captured)
    assert value == pytest.approx(np.sum(x[:-1] * x[1:]), rel=1e-12)
    np.testing.assert_allclose(grad, np.r_[x[1:], 0.0] + np.r_[0.0, x[:-1]], rtol=1e-12)


def test_simplify_folds_unnamed_constants_and_keeps_named_ones():
    def f(x):
        return x * (np.ones(3) * 2.0 + 1.0) + np.zeros(3)  # arrays of one value, computed with

    graph = trace(f, (np.ones(3),)).graph
    simpler = dce(simplify(graph))
    assert names_of(simpler) == ["mul", "add"]  # x * 3.0 + 0.0: the constants are literals
    assert [a.value for a in simpler.nodes[0].inputs[1:]] == [3.0]
    x = np.array([1.5, -np.inf, np.nan])
    np.testing.assert_array_equal(evaluate(simpler, x)[0], evaluate(graph, x)[0])

    def g(x):
        w = np.ones(3) * 2.0  # a name of yours stays a statement
        return x * w

    assert names_of(dce(simplify(trace(g, (np.ones(3),)).graph))) == ["full", "mul", "mul"]
    assert "w = " in tg.source(tg.jit(g), np.ones(3))


def test_cse_merges_unnamed_constants_but_not_results():
    def f(x):
        return x[np.arange(3)] * x[np.arange(3)]

    graph = trace(f, (np.ones(4),)).graph
    assert names_of(graph).count("constant") == 2
    merged = dce(cse(graph))
    assert names_of(merged).count("constant") == 1 and names_of(merged).count("gather") == 1
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(evaluate(merged, x)[0], [1.0, 4.0, 9.0])
    zeros = tg.jit(lambda x: (np.zeros(2), np.zeros(2)))(1.0)  # two results stay two arrays
    assert not np.shares_memory(*zeros)


def test_an_outer_product_is_a_loop_nest_not_a_broadcast_expression():
    a, b = np.arange(3.0), np.arange(4.0)
    code = tg.source(tg.jit(lambda a, b: np.reshape(a, (3, 1)) * b), a, b)
    assert "for i1 in range(4):" in code and "[i0, 0] * b[i1]" in code
    np.testing.assert_array_equal(tg.jit(lambda a, b: np.reshape(a, (3, 1)) * b)(a, b), np.outer(a, b))


def test_a_conversion_read_by_several_loops_is_converted_in_each_not_stored(rng):
    def momentum_step(p, v, g):  # float32 state updated in float64: new_v is read by both outputs' loops
        new_v = 0.9 * v.astype(np.float64) + g.astype(np.float64)
        new_p = p.astype(np.float64) - 0.1 * new_v
        return new_p.astype(np.float32), new_v.astype(np.float32)

    p, v, g = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3))
    fun = tg.jit(momentum_step)
    src = tg.source(fun, p, v, g)
    code = [line.split("#")[0] for line in src.splitlines()]
    assert not any(".astype(" in line for line in code), src  # every conversion is a cast inside a loop
    assert src.count("np.float64(v[i0, i1])") >= 1 and src.count("np.float64(g[i0, i1])") >= 1, src
    for got, expected in zip(fun(p, v, g), momentum_step(p, v, g)):
        assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.parametrize("fun, shape", [(lambda x: np.sum(x * x), (5,)), (lambda x: np.sum(-x, axis=1), (3, 4))])
def test_a_sum_of_something_computed_is_a_loop_even_as_one_statement(rng, fun, shape):
    # np.sum(x * x) in Numba stores x * x in an array for the sum to read: the loop adds each product as it
    # computes it; a sum of an argument alone stays the NumPy call
    x = rng.normal(size=shape)
    source = tg.jit(fun).source(x)
    assert "for i0 in range(" in source and "np.sum(" not in source and "sum_axis(" not in source
    np.testing.assert_allclose(tg.jit(fun)(x), fun(x), rtol=1e-13)
    assert "np.sum(x)" in tg.jit(lambda x: np.sum(x)).source(x)
