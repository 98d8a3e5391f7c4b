"""The NumPy and SciPy functions built from primitives (array manipulation, arrays built from traced values,
assignment, cumulative operations, einsum, linear algebra, SciPy's special functions), table-driven: each
case is checked against NumPy's own result, its gradient against central differences (first and second
order), in float32, and a sample compiled."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

import tracegrad as tg
from tracegrad.interpret import evaluate
from tracegrad.testing import numeric_grad

V, M, T3 = (4,), (3, 4), (2, 3, 4)
SQ = (3, 3)


def _spd(a):
    """A symmetric positive definite matrix from any square one (well conditioned)."""
    return a @ a.T + a.shape[0] * np.eye(a.shape[0])


# name -> (function, argument shapes, domain); the function returns an array (or a number)
CASES = {
    # ---- array manipulation
    "repeat": (lambda x: np.repeat(x, 2), (M,), "real"),
    "repeat axis": (lambda x: np.repeat(x, 3, axis=1), (M,), "real"),
    "repeat counts": (lambda x: np.repeat(x, [1, 0, 2], axis=0), (M,), "real"),
    "tile": (lambda x: np.tile(x, (2, 1, 2)), (M,), "real"),
    "tile int": (lambda x: np.tile(x, 3), (V,), "real"),
    "hstack": (lambda x, y: np.hstack([x, y, x]), (V, (2,)), "real"),
    "hstack 2-d": (lambda x, y: np.hstack((x, y)), (M, (3, 2)), "real"),
    "vstack": (lambda x, y: np.vstack([x, y]), (V, M), "real"),
    "column_stack": (lambda x, y: np.column_stack([x, y]), ((3,), M), "real"),
    "dstack": (lambda x, y: np.dstack([x, y]), (M, M), "real"),
    "split": (lambda x: np.split(x, 2, axis=1)[1] * np.split(x, [1], axis=0)[0][:, :2], (M,), "real"),
    "array_split": (lambda x: np.concatenate([p * (i + 1) for i, p in enumerate(np.array_split(x, 3))]), ((7,),), "real"),
    "hsplit vsplit": (lambda x: np.hsplit(x, 2)[0][1:] + np.vsplit(x, [1])[1][:, 2:], (M,), "real"),
    "pad constant": (lambda x: np.pad(x, ((1, 0), (2, 1)), constant_values=0.5), (M,), "real"),
    "pad int": (lambda x: np.pad(x, 2), (V,), "real"),
    "pad edge": (lambda x: np.pad(x, 2, mode="edge"), (M,), "real"),
    "pad reflect": (lambda x: np.pad(x, (1, 2), mode="reflect"), (V,), "real"),
    "pad wrap": (lambda x: np.pad(x, ((0, 1), (2, 0)), mode="wrap"), (M,), "real"),
    "roll": (lambda x: np.roll(x, 1), (M,), "real"),
    "roll axis": (lambda x: np.roll(x, -1, axis=1), (M,), "real"),
    "roll axes": (lambda x: np.roll(x, (1, 2), axis=(0, 1)), (M,), "real"),
    "flip": (lambda x: np.flip(x) * x, (M,), "real"),
    "flip axis": (lambda x: np.flip(x, axis=1), (T3,), "real"),
    "fliplr flipud": (lambda x: np.fliplr(x) + np.flipud(x) * 2, (SQ,), "real"),
    "swapaxes": (lambda x: np.swapaxes(x, 0, 2), (T3,), "real"),
    "moveaxis": (lambda x: np.moveaxis(x, 0, -1), (T3,), "real"),
    "moveaxis several": (lambda x: np.moveaxis(x, [0, 1], [2, 0]), (T3,), "real"),
    "rollaxis": (lambda x: np.rollaxis(x, 2), (T3,), "real"),
    "atleast_1d": (lambda x: np.atleast_1d(x) * 2, ((),), "real"),
    "atleast_2d": (lambda x: np.atleast_2d(x).T, (V,), "real"),
    "atleast_3d": (lambda x: np.atleast_3d(x), (M,), "real"),
    "diag of vector": (lambda x: np.diag(x), (V,), "real"),
    "diag offset": (lambda x: np.diag(x, 1) + np.diag(x, -1) * 2, (V,), "real"),
    "diag of matrix": (lambda x: np.diag(x), (M,), "real"),
    "diagonal offset": (lambda x: np.diagonal(x, -1) + np.diagonal(x, 1)[:2], (M,), "real"),
    "diagonal 3-d": (lambda x: np.diagonal(x, 0, 1, 2), (T3,), "real"),
    "trace": (lambda x: np.trace(x) * x, (SQ,), "real"),
    "trace offset": (lambda x: np.trace(x, 1), (M,), "real"),
    "diagflat": (lambda x: np.diagflat(x), ((2, 2),), "real"),
    "tril": (lambda x: np.tril(x), (M,), "real"),
    "triu": (lambda x: np.triu(x, 1), (SQ,), "real"),
    "tril 3-d": (lambda x: np.tril(x, -1), (T3,), "real"),
    "append": (lambda x, y: np.append(x, y), (M, V), "real"),
    "append axis": (lambda x, y: np.append(x, y, axis=0), (M, (1, 4)), "real"),
}

NAMES = list(CASES)


def draw(shape, domain, rng, dtype=np.float64):
    x = rng.normal(size=shape)
    if domain == "positive":
        x = np.abs(x) + 0.5
    elif domain == "unit":
        x = 0.8 * np.tanh(x)
    elif domain == "spd":
        x = _spd(x)
    return np.asarray(x, dtype) if shape else dtype(x)


def make_case(name, dtype=np.float64, seed=0):
    fn, shapes, domain = CASES[name]
    rng = np.random.default_rng(seed)
    args = [draw(shape, domain, rng, dtype) for shape in shapes]
    out_shape = np.shape(fn(*[np.asarray(a, np.float64) for a in args]))
    weights = np.asarray(rng.normal(size=out_shape), dtype)

    def loss(*xs):
        return np.sum(fn(*xs) * weights)
    return fn, loss, args


def interpret(fn, args):
    """``fn``'s traced graph evaluated by the reference interpreter."""
    fun = fn if isinstance(fn, tg.Function) else tg.jit(fn)
    graph = tg.make_graph(fun, *args)
    graph.verify()
    return evaluate(graph, *args, *fun.specialize(*args).captured())


def interpret_grads(loss, args):
    fun = tg.value_and_grad(loss, argnums=tuple(range(len(args))))
    outs = interpret(fun, args)
    return outs[0], outs[1:]


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_numpy(name):
    fn, _, args = make_case(name)
    expected = fn(*args)
    (got,) = interpret(fn, args)
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(name):
    _, loss, args = make_case(name)
    value, grads = interpret_grads(loss, args)
    assert value == pytest.approx(loss(*args), rel=1e-10)
    for k, g in enumerate(grads):
        assert np.shape(g) == np.shape(args[k])
        np.testing.assert_allclose(g, numeric_grad(loss, *args, argnums=k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_second_order_matches_central_differences(name):
    _, loss, args = make_case(name)
    rng = np.random.default_rng(1)
    direction = [rng.normal(size=np.shape(a)) for a in args]

    def directional(*xs):
        grads = tg.grad(loss, argnums=tuple(range(len(xs))))(*xs)
        return sum(np.sum(g * v) for g, v in zip(grads, direction))

    _, second = interpret_grads(directional, args)
    first = lambda *xs: sum(np.sum(g * v) for g, v in zip(interpret_grads(loss, xs)[1], direction))
    for k, g in enumerate(second):
        np.testing.assert_allclose(g, numeric_grad(first, *args, argnums=k), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(name):
    fn, loss, args = make_case(name, np.float32)
    (value,) = interpret(fn, args)
    assert np.asarray(value).dtype == np.asarray(fn(*args)).dtype
    _, grads = interpret_grads(loss, args)
    _, grads64 = interpret_grads(*make_case(name, np.float64)[1:])
    for g, g64 in zip(grads, grads64):
        assert np.asarray(g).dtype == np.float32
        np.testing.assert_allclose(g, g64, rtol=2e-3, atol=2e-4)


# Compiling takes seconds a case: a sample, one function per group, all compiled as one
COMPILED = ["repeat axis", "tile", "hstack", "vstack", "split", "pad constant", "pad edge", "roll axis", "flip",
            "moveaxis", "diag of vector", "diagonal offset", "trace", "tril", "append"]


def test_compiled_matches_numpy():
    cases = [make_case(name) for name in COMPILED]

    def everything(*args):
        total, k = 0.0, 0
        for _, loss, case_args in cases:
            total = total + loss(*args[k:k + len(case_args)])
            k += len(case_args)
        return total

    args = [a for _, _, case_args in cases for a in case_args]
    value, grads = tg.value_and_grad(everything, argnums=tuple(range(len(args))))(*args)
    ref_value, ref_grads = interpret_grads(everything, args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
