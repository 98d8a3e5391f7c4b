"""One suite over the primitive registry: every primitive is checked for its shape rule against its
NumPy reference, its VJP and its JVP against central differences (first and second order) and against each
other, float32 against float64, and the compiled Numba code against the reference interpreter. A primitive
without cases here fails ``test_every_primitive_has_cases``; one without a JVP rule (and not ``nondiff``)
fails ``test_every_primitive_has_a_jvp_rule``."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.autodiff import value_and_grad_graph
from tracegrad.core import PRIMITIVES
from tracegrad.forward import jvp_graph
from tracegrad.interpret import evaluate
from tracegrad.testing import numeric_grad
from tracegrad.tracer import trace

P = PRIMITIVES
SCALAR, VECTOR, MATRIX, ROW = (), (3,), (2, 3), (1, 3)
UNARY_SHAPES = [(SCALAR,), (VECTOR,), (MATRIX,)]
BINARY_SHAPES = [(SCALAR, SCALAR), (VECTOR, VECTOR), (MATRIX, ROW), (MATRIX, SCALAR), (ROW, MATRIX)]


def unary(fn, domain="real"):
    return [(fn, shapes, domain) for shapes in UNARY_SHAPES]


def binary(fn, domain="real"):
    return [(fn, shapes, domain) for shapes in BINARY_SHAPES]


I3 = np.array([0, 2, 0])  # a repeated index: scatter_add must accumulate
J3 = np.array([1, 0, 2])

_gate = tg.custom_vjp(lambda x, y: x * np.tanh(y))
_gate.defvjp(lambda x, y: (x * np.tanh(y), (x, np.tanh(y))),
             lambda res, g: (g * res[1], g * res[0] * (1 - res[1] * res[1])))


def _count_to_five(s):
    return tg.while_loop(lambda c: c < 5.0, lambda c: c + 1.0 + 0.0 * s, 0.0)


def _seed(i):
    """A loop's index as a permutation's seed (a Python int when the loop runs eagerly)."""
    return np.uint64(i) if isinstance(i, int) else i.astype(np.uint64)


def _both(carry, ys):
    return carry * ys[0] + ys[-1]


# primitive name -> list of (function of float arrays, argument shapes, domain)
CASES = {
    "add": binary(lambda x, y: x + y),
    "sub": binary(lambda x, y: x - y) + [(lambda x: 1.5 - x, (VECTOR,), "real")],
    "mul": binary(lambda x, y: x * y) + [(lambda x: x * x, (MATRIX,), "real")],
    "div": binary(lambda x, y: x / y, "away_from_zero") + [(lambda x: 2 / x, (VECTOR,), "away_from_zero")],
    "neg": unary(lambda x: -x),
    "pow": binary(lambda x, y: x ** y, "positive") + [(lambda x: x ** 3, (VECTOR,), "real"),
                                                      (lambda x: 2.0 ** x, (VECTOR,), "real")],
    "exp": unary(np.exp),
    "log": unary(np.log, "positive"),
    "log1p": unary(np.log1p, "positive"),
    "expm1": unary(np.expm1),
    "sqrt": unary(np.sqrt, "positive"),
    "sin": unary(np.sin),
    "cos": unary(np.cos),
    "tan": unary(np.tan, "small"),
    "sinh": unary(np.sinh),
    "cosh": unary(np.cosh),
    "tanh": unary(np.tanh),
    "sigmoid": unary(tg.sigmoid),
    "abs": unary(np.abs, "away_from_zero"),
    "sign": unary(lambda x: np.sign(x) * x, "away_from_zero"),
    "maximum": binary(np.maximum) + [(lambda x: np.maximum(x, 0.0), (MATRIX,), "away_from_zero")],
    "minimum": binary(np.minimum),
    "where": [(lambda x, y: np.where(x > y, x * y, y), (MATRIX, ROW), "real"),
              (lambda x: np.where(x > 0, x, 0.5 * x), (SCALAR,), "away_from_zero")],
    "lt": [(lambda x, y: np.where(x < y, x, y), (MATRIX, ROW), "real")],
    "le": [(lambda x, y: np.where(x <= y, x, y), (MATRIX, MATRIX), "real")],
    "gt": [(lambda x, y: np.where(x > y, x, y), (VECTOR, SCALAR), "real")],
    "ge": [(lambda x, y: np.where(x >= y, x, y), (VECTOR, VECTOR), "real")],
    "eq": [(lambda x, y: np.where(x == y, x, y * x), (VECTOR, VECTOR), "real")],
    "ne": [(lambda x, y: np.where(x != y, x * x, y), (VECTOR, VECTOR), "real")],
    "logical_and": [(lambda x, y: np.where((x > 0) & (y > 0), x, y), (MATRIX, ROW), "real")],
    "logical_or": [(lambda x, y: np.where((x > 0) | (y > 0), x * y, y), (VECTOR, VECTOR), "real")],
    "logical_xor": [(lambda x, y: np.where((x > 0) ^ (y > 0), x, y * 2), (VECTOR, SCALAR), "real")],
    "logical_not": [(lambda x: np.where(~(x > 0), x, 3 * x), (MATRIX,), "real")],
    "convert": [(lambda x: x.astype(np.float32) * 2, (VECTOR,), "real")],
    "reduce_sum": [(lambda x: np.sum(x, axis=0), (MATRIX,), "real"), (lambda x: x.sum(axis=1, keepdims=True), (MATRIX,), "real"),
                   (lambda x: np.sum(x), (VECTOR,), "real"), (lambda x: np.mean(x, axis=(0, 2)), ((2, 3, 2),), "real")],
    "reduce_max": [(lambda x: np.max(x, axis=0), (MATRIX,), "real"), (lambda x: np.max(x, axis=1, keepdims=True), (MATRIX,), "real"),
                   (lambda x: x.max(), (VECTOR,), "real")],
    "reduce_min": [(lambda x: np.min(x, axis=1), (MATRIX,), "real"), (lambda x: np.min(x), (MATRIX,), "real")],
    "reshape": [(lambda x: x.reshape(3, 2), (MATRIX,), "real"), (lambda x: np.reshape(x.T, (-1,)), (MATRIX,), "real"),
                (lambda x: x.reshape(1, 1), (SCALAR,), "real")],
    "transpose": [(lambda x: x.T, (MATRIX,), "real"), (lambda x: np.transpose(x, (2, 0, 1)), ((2, 3, 2),), "real")],
    "broadcast_to": [(lambda x: np.broadcast_to(x, (4, 2, 3)), (ROW,), "real"), (lambda x: np.broadcast_to(x, (3,)), (SCALAR,), "real")],
    "getitem": [(lambda x: x[1:, ::2], ((3, 4),), "real"), (lambda x: x[0], (MATRIX,), "real"),
                (lambda x: x[None, :, 1], (MATRIX,), "real"), (lambda x: x[-1, -2], (MATRIX,), "real")],
    "place": [(lambda x: P["place"](x, shape=(4, 3), index=(slice(1, 3), 0)), ((2,),), "real")],
    "gather": [(lambda x: x[I3], ((3, 2),), "real"), (lambda x: x[I3, J3], ((3, 3),), "real"),
               (lambda x: x[np.arange(2), np.array([2, 1])], (MATRIX,), "real")],
    "scatter_add": [(lambda g: P["scatter_add"](g, I3, shape=(4,)), (VECTOR,), "real"),
                    (lambda g: P["scatter_add"](g, I3, J3, shape=(3, 3)), (VECTOR,), "real")],
    "concatenate": [(lambda x, y: np.concatenate([x, y], axis=1), (MATRIX, (2, 2)), "real"),
                    (lambda x: np.concatenate([x * 2]), (VECTOR,), "real"),
                    (lambda x, y: np.stack([x, y * 2]), (VECTOR, VECTOR), "real")],
    "dot": [(lambda a, b: a @ b, (MATRIX, (3, 4)), "real"), (lambda a, b: a @ b, (MATRIX, VECTOR), "real"),
            (lambda a, b: np.dot(a, b), (VECTOR, (3, 2)), "real"), (lambda a, b: np.matmul(a, b), (VECTOR, VECTOR), "real")],
    "full": [(lambda x: x * 3.0, (VECTOR,), "real")],  # the seed of every backward pass
    "copy": [(lambda x: P["copy"](x) * x, (VECTOR,), "real")],
    # finite differences cannot see a stopped gradient: only a use that does not change the derivative
    # a scan with an array carry and stacked outputs, a fori_loop over a pytree of two carries, a reversed
    # scan reading a closed-over array, and loops of length 0 and 1
    "loop": [(lambda x: tg.scan(lambda c, r: (c * np.sin(r) + r, c * r), 0.5, x)[1], (VECTOR,), "real"),
             (lambda x, y: tg.fori_loop(0, 3, lambda i, c: (c[0] * y + np.tanh(c[1]), c[1] * 0.9 + c[0]), (x, y))[0],
              (VECTOR, VECTOR), "real"),
             (lambda h, xs: _both(*tg.scan(lambda h, x: (np.tanh(h * xs[0] + x), h), h, xs, reverse=True)),
              (VECTOR, (4, 3)), "real"),
             (lambda x: tg.fori_loop(0, 0, lambda i, c: c * 2.0, x) + tg.fori_loop(5, 6, lambda i, c: c * np.cos(c), x),
              (MATRIX,), "real")],
    # forward only: the loop reads x through stop_gradient, and its result (5.0) does not depend on x
    "while_loop": [(lambda x: x * _count_to_five(tg.stop_gradient(np.sum(x))), (VECTOR,), "real")],
    # x[i] at a loop's index (i traced), and its transpose
    "dynamic_index": [(lambda x: tg.fori_loop(0, 3, lambda i, c: c + x[i] * x[i + 1], 0.0), ((4,),), "real"),
                      (lambda x: tg.fori_loop(0, 2, lambda i, c: c * x[-1 - i, 1:], x[0, 1:]), ((3, 3),), "real")],
    "dynamic_place": [(lambda x: tg.fori_loop(0, 2, lambda i, c: c + P["dynamic_place"](x[i], i, shape=(3, 2)) * x[0, 0],
                                              np.zeros((3, 2))), ((3, 2),), "real")],
    # a function with its own backward (the notes' module): here the plain rule, so differences agree
    "custom_vjp_call": [(lambda x, y: _gate(x, y) + _gate(y, x * y), (VECTOR, VECTOR), "real")],
    "stop_gradient": [(lambda x: tg.stop_gradient(x) * 0.0 + x, (VECTOR,), "real")],
    "isfinite": [(lambda x: np.where(np.isfinite(np.where(x > 0, x, np.inf)), x * x, x), (MATRIX,), "away_from_zero")],
    # fit's shuffle, from a traced seed (a loop's index): x in the orders of seeds 0 and 1
    "permutation": [(lambda x: tg.fori_loop(0, 2, lambda i, c: c + x[P["permutation"](_seed(i), n=4)] * x,
                                            np.zeros(4)), ((4,),), "real")],
}

PARAMS = [pytest.param(name, i, id=f"{name}-{i}") for name in CASES for i in range(len(CASES[name]))]


def draw(shape, domain, rng, dtype=np.float64):
    x = rng.normal(size=shape)
    if domain == "positive":
        x = np.abs(x) + 0.5
    elif domain == "away_from_zero":
        x = np.sign(x) * (np.abs(x) + 0.3)
    elif domain == "small":
        x = 0.5 * np.tanh(x)
    return np.asarray(x, dtype) if shape else dtype(x)


def make_case(name, i, dtype=np.float64, seed=0):
    fn, shapes, domain = CASES[name][i]
    rng = np.random.default_rng(seed)
    args = [draw(shape, domain, rng, dtype) for shape in shapes]
    out_shape = np.shape(fn(*[np.asarray(a, np.float64) for a in args]))
    weights = np.asarray(rng.normal(size=out_shape), dtype)  # a random projection to a scalar

    def loss(*xs):
        return np.sum(fn(*xs) * weights)
    return loss, args, fn


def interpret_value_and_grad(loss, args):
    argnums = tuple(range(len(args)))
    fun = tg.value_and_grad(loss, argnums=argnums)
    graph = tg.make_graph(fun, *args)
    entry = fun.specialize(*args)
    outs = evaluate(graph, *args, *entry.captured())
    return outs[0], outs[1:]


def all_nodes(graph):
    """The graph's nodes and those of the graphs nested in them (loop bodies)."""
    for node in graph.nodes:
        yield node
        for value in node.params.values():
            if isinstance(value, tg.Graph):
                yield from all_nodes(value)


def test_every_primitive_has_cases():
    missing = sorted(set(PRIMITIVES) - set(CASES))
    assert not missing, f"primitives without test cases: {missing}"


@pytest.mark.parametrize("name,i", PARAMS)
def test_shape_rule_matches_reference(name, i):
    loss, args, fn = make_case(name, i)
    graph = tg.make_graph(fn, *args)
    graph.verify()
    assert any(node.primitive.name == name for node in all_nodes(graph)) or name == "full"
    expected = fn(*args)  # eager NumPy
    got = evaluate(graph, *args, *tg.jit(fn).specialize(*args).captured())[0]
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("name,i", PARAMS)
def test_vjp_matches_central_differences(name, i):
    loss, args, _ = make_case(name, i)
    value, grads = interpret_value_and_grad(loss, args)
    assert value == pytest.approx(loss(*args), rel=1e-12)
    # convert rounds through float32: a larger step and tolerance keep its rounding out of the check
    rtol, eps = (1e-3, 1e-2) if name == "convert" else (1e-5, None)
    for k, g in enumerate(grads):
        expected = numeric_grad(loss, *args, argnums=k, eps=eps)
        assert np.shape(g) == np.shape(args[k])
        np.testing.assert_allclose(g, expected, rtol=rtol, atol=rtol / 10)


@pytest.mark.parametrize("name,i", PARAMS)
def test_second_order_matches_central_differences(name, i):
    loss, args, _ = make_case(name, i)
    rng = np.random.default_rng(1)
    direction = [np.asarray(rng.normal(size=np.shape(a))) for a in args]

    def directional(*xs):  # <grad loss(xs), v>, differentiated again
        grads = tg.grad(loss, argnums=tuple(range(len(xs))))(*xs)
        return sum(np.sum(g * v) for g, v in zip(grads, direction))

    _, second = interpret_value_and_grad(directional, args)
    first = lambda *xs: sum(np.sum(g * v) for g, v in zip(interpret_value_and_grad(loss, xs)[1], direction))
    for k, g in enumerate(second):
        np.testing.assert_allclose(g, numeric_grad(first, *args, argnums=k), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,i", PARAMS)
def test_float32_in_float32_out(name, i):
    loss32, args32, _ = make_case(name, i, np.float32)
    loss64, args64, _ = make_case(name, i, np.float64)
    _, grads32 = interpret_value_and_grad(loss32, args32)
    _, grads64 = interpret_value_and_grad(loss64, args64)
    for g32, g64, a in zip(grads32, grads64, args32):
        assert np.asarray(g32).dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=2e-4)


FIRST_CASES = [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}")
               for name in CASES for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("name,dtype", FIRST_CASES)
def test_compiled_matches_interpreter(name, dtype):
    loss, args, _ = make_case(name, 0, dtype)
    fun = tg.value_and_grad(loss, argnums=tuple(range(len(args))))
    value, grads = fun(*args)
    ref_value, ref_grads = interpret_value_and_grad(loss, args)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, **tol)
    for g, r, a in zip(grads, ref_grads, args):
        assert type(g) is type(a) or np.asarray(g).dtype == np.asarray(a).dtype
        np.testing.assert_allclose(g, r, **tol)


# ---------------------------------------------------------------- forward mode: every primitive's JVP rule


def test_every_primitive_has_a_jvp_rule():
    """A primitive differentiates in forward mode too, or declares that nothing flows through it."""
    missing = sorted(name for name, prim in PRIMITIVES.items() if prim.jvp is None and not prim.nondiff)
    assert not missing, f"primitives without a JVP rule (declare nondiff=True if none is meant): {missing}"


def traced(fn, args):
    """The forward graph of ``fn`` and the arrays it captures."""
    t = trace(fn, tuple(args))
    return t.graph, [c.current() for c in t.captures]


def interpret_jvp(graph, captured, args, tangents):
    """``graph``'s outputs and their tangents along ``tangents`` (one per float argument), by ``jvp_graph`` and
    the reference interpreter."""
    wrt = [k for k in range(graph.n_args) if graph.inputs[k].aval.dtype.kind == "f"]
    jvp = jvp_graph(graph, wrt).verify()
    outs = evaluate(jvp, *args, *(tangents[k] for k in wrt), *captured)
    n = len(graph.outputs)
    return outs[:n], outs[n:]


def directions(args, seed=2):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.normal(size=np.shape(a)), np.asarray(a).dtype)[()] for a in args]


def central_difference(fn, args, v, eps=1e-6):
    """(fn(x + eps v) - fn(x - eps v)) / (2 eps), in float64."""
    plus = fn(*(np.asarray(a, np.float64) + eps * t for a, t in zip(args, v)))
    minus = fn(*(np.asarray(a, np.float64) - eps * t for a, t in zip(args, v)))
    return (np.asarray(plus, np.float64) - np.asarray(minus, np.float64)) / (2 * eps)


@pytest.mark.parametrize("name,i", PARAMS)
def test_jvp_matches_central_differences(name, i):
    loss, args, fn = make_case(name, i)
    v = directions(args)
    (value,), (tangent,) = interpret_jvp(*traced(fn, args), args, v)
    np.testing.assert_allclose(value, fn(*args), rtol=1e-12)
    assert np.shape(tangent) == np.shape(value) and np.asarray(tangent).dtype == np.asarray(value).dtype
    rtol, eps = (1e-3, 1e-2) if name == "convert" else (1e-5, 1e-6)  # convert rounds through float32
    np.testing.assert_allclose(tangent, central_difference(fn, args, v, eps), rtol=rtol, atol=rtol / 10)


@pytest.mark.parametrize("name,i", PARAMS)
def test_jvp_is_the_transpose_of_the_vjp(name, i):
    """<u, J v> == <J^T u, v>: forward and reverse mode agree exactly, u the case's random weights."""
    loss, args, _ = make_case(name, i)
    v = directions(args)
    (value,), (tangent,) = interpret_jvp(*traced(loss, args), args, v)
    _, grads = interpret_value_and_grad(loss, args)
    expected = sum(np.sum(g * t) for g, t in zip(grads, v))
    rtol = 1e-6 if name == "convert" else 1e-10  # each mode rounds its own products through float32
    np.testing.assert_allclose(tangent, expected, rtol=rtol, atol=rtol / 100)


@pytest.mark.parametrize("name,i", PARAMS)
def test_jvp_of_grad_matches_central_differences(name, i):
    """Second order, forward over reverse: the tangent of the gradient is a Hessian-vector product."""
    loss, args, _ = make_case(name, i)
    v = directions(args)
    graph, captured = traced(loss, args)
    with_grads = value_and_grad_graph(graph, list(range(len(args))))
    _, tangents = interpret_jvp(with_grads, captured, args, v)
    for k in range(len(args)):
        expected = central_difference(lambda *xs: interpret_value_and_grad(loss, xs)[1][k], args, v, 1e-5)
        np.testing.assert_allclose(tangents[1 + k], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,i", PARAMS)
def test_jvp_float32_in_float32_out(name, i):
    _, args32, fn = make_case(name, i, np.float32)
    _, args64, _ = make_case(name, i, np.float64)
    (value32,), (t32,) = interpret_jvp(*traced(fn, args32), args32, directions(args32))
    (_,), (t64,) = interpret_jvp(*traced(fn, args64), args64, directions(args64))
    assert np.asarray(t32).dtype == np.asarray(value32).dtype  # a tangent has its value's dtype
    np.testing.assert_allclose(t32, t64, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name,dtype", FIRST_CASES)
def test_compiled_jvp_matches_interpreter(name, dtype):
    _, args, fn = make_case(name, 0, dtype)
    v = directions(args)
    value, tangent = tg.jvp(fn, tuple(args), tuple(v))
    (ref_value,), (ref_tangent,) = interpret_jvp(*traced(fn, args), args, v)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, **tol)
    np.testing.assert_allclose(tangent, ref_tangent, **tol)
