"""Random expression graphs over the elementwise and reduction primitives, on arguments whose shapes
broadcast, checked with check_grad (float64 and float32, both modes, first and second order). Each example compiles a new function (about a
second), so the number of examples is bounded: the "ci" profile (chosen when CI is set) is derandomized,
so its compiled kernels are reused from the disk cache on the next run."""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import tracegrad as tg
from tracegrad.testing import KinkWarning

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("ci" if os.environ.get("CI") else "dev")

OUT_SHAPE = (2, 3)
SHAPES = [(), (3,), (1, 3), (2, 1), (2, 3)]  # each broadcasts to OUT_SHAPE

UNARY = {
    "neg": lambda x: -x,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sigmoid": tg.sigmoid,
    "exp": np.exp,
    "expm1": np.expm1,
    "cosh": np.cosh,
    "square": np.square,
    "log(1 + x^2)": lambda x: np.log1p(x * x),
    "sqrt(1 + x^2)": lambda x: np.sqrt(1.0 + x * x),
    "1 / (1 + x^2)": lambda x: 1.0 / (1.0 + x * x),
    "abs": np.abs,
    "relu": lambda x: np.maximum(x, 0.0),
    "clip": lambda x: np.clip(x, -0.5, 0.5),
    "x ** 3": lambda x: x ** 3,
}
BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "x / (1 + y^2)": lambda x, y: x / (1.0 + y * y),
    "(1 + x^2) ** tanh(y)": lambda x, y: (1.0 + x * x) ** np.tanh(y),
    "maximum": np.maximum,
    "minimum": np.minimum,
    "where": lambda x, y: np.where(x > y, x * y, x - y),
}
REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}

leaves = st.one_of(st.sampled_from([("arg", 0), ("arg", 1)]),
                   st.tuples(st.just("const"), st.sampled_from([-1.5, 0.5, 2.0])))


def extend(children):
    return st.one_of(
        st.tuples(st.just("unary"), st.sampled_from(sorted(UNARY)), children),
        st.tuples(st.just("binary"), st.sampled_from(sorted(BINARY)), children, children),
        st.tuples(st.just("reduce"), st.sampled_from(sorted(REDUCE)), st.sampled_from([None, 0, -1]), children),
    )


expressions = st.recursive(leaves, extend, max_leaves=6)


def run(tree, args, sizes):
    """Evaluate ``tree`` on ``args`` (NumPy or traced); ``sizes`` collects each intermediate's largest |value|."""
    kind = tree[0]
    if kind == "arg":
        return args[tree[1]]
    if kind == "const":
        return tree[1]
    if kind == "unary":
        out = UNARY[tree[1]](run(tree[2], args, sizes))
    elif kind == "binary":
        out = BINARY[tree[1]](run(tree[2], args, sizes), run(tree[3], args, sizes))
    else:
        x = run(tree[3], args, sizes)
        axis = tree[2] if np.ndim(x) else None
        out = REDUCE[tree[1]](x, axis=axis, keepdims=axis is not None)
    if sizes is not None:
        sizes.append(float(np.max(np.abs(out))))
    return out


def describe(tree) -> str:
    kind = tree[0]
    if kind == "arg":
        return "ab"[tree[1]]
    if kind == "const":
        return repr(tree[1])
    if kind == "unary":
        return f"{tree[1]}({describe(tree[2])})"
    if kind == "binary":
        return f"{tree[1]}({describe(tree[2])}, {describe(tree[3])})"
    return f"{tree[1]}({describe(tree[3])}, axis={tree[2]})"


def make_loss(tree, weights):
    def loss(a, b):
        return np.sum(run(tree, (a, b), None) * weights)
    loss.__qualname__ = describe(tree)
    return loss


@settings(PROFILE)
@given(tree=expressions, shapes=st.tuples(st.sampled_from(SHAPES), st.sampled_from(SHAPES)),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2 ** 16),
       mode=st.sampled_from(["directional", "full"]), order=st.sampled_from([1, 1, 1, 2]))
def test_random_compositions_pass_check_grad(tree, shapes, dtype, seed, mode, order):
    assume(any(kind == "arg" for kind in _kinds(tree)))  # something to differentiate
    rng = np.random.default_rng(seed)
    a, b = (np.asarray(rng.normal(size=shape), dtype) if shape else dtype(rng.normal()) for shape in shapes)
    weights = np.asarray(rng.normal(size=OUT_SHAPE), dtype)
    sizes = []
    with np.errstate(all="ignore"):
        value = np.sum(run(tree, (np.float64(a), np.float64(b)), sizes) * weights)
    assume(np.isfinite(value) and max(sizes, default=0.0) < 1e3)  # no overflow on the way
    loss = make_loss(tree, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KinkWarning)  # a random point may sit next to a kink: excused, not failed
        report = tg.check_grad(loss, a, b, argnums=(0, 1), mode=mode, order=order)
    assert report.passed


def _kinds(tree):
    yield tree[0]
    for child in tree[2:]:
        if isinstance(child, tuple):
            yield from _kinds(child)


def test_shapes_really_broadcast():
    assert all(np.broadcast_shapes(s, OUT_SHAPE) == OUT_SHAPE for s in SHAPES)
    tree = ("binary", "mul", ("arg", 0), ("reduce", "max", 0, ("unary", "sin", ("arg", 1))))
    assert describe(tree) == "mul(a, max(sin(b), axis=0))"
    a, b = np.ones((2, 1)), np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(run(tree, (a, b), None), np.ones((2, 1)) * np.max(np.sin(b), axis=0, keepdims=True))
