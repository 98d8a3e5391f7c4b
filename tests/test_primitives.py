"""One suite over the primitive registry: every primitive is checked for its shape rule against its
NumPy reference, its VJP and its JVP against central differences (first and second order: reverse over
reverse, forward over reverse, reverse over forward) and against each other, float32 against float64;
tests/test_primitives_compiled.py checks the compiled Numba code against the reference interpreter.

A differentiable elementwise primitive needs no entry here: its cases are built from its declaration (its
NumPy function, or ``math`` function on scalars, at every shape combination, on inputs drawn from its
``domain``). ``CASES`` holds the others and further uses. A primitive without cases fails
``test_every_primitive_has_cases``; a declaration lacking a fact fails ``test_every_declaration_is_complete``."""
import inspect
import math

import numpy as np
import pytest
import scipy.special

import tracegrad as tg
from tracegrad.autodiff import value_and_grad_graph
from tracegrad.core import MATH_FUNCTIONS, NUMPY_FUNCTIONS, PRIMITIVES
from tracegrad.forward import jvp_graph
from tracegrad.interpret import evaluate
from tracegrad.testing import DOMAINS, input_domains, numeric_grad, sample
from tracegrad.tracer import trace

P = PRIMITIVES
SCALAR, VECTOR, MATRIX, ROW = (), (3,), (2, 3), (1, 3)
UNARY_SHAPES = [(SCALAR,), (VECTOR,), (MATRIX,)]
BINARY_SHAPES = [(SCALAR, SCALAR), (VECTOR, VECTOR), (MATRIX, ROW), (MATRIX, SCALAR), (ROW, MATRIX)]


def unary(fn, domain="real"):
    """Cases of a one-input function at every shape (for ``CASES``; elementwise primitives need none)."""
    return [(fn, shapes, domain) for shapes in UNARY_SHAPES]


def binary(fn, domain="real"):
    return [(fn, shapes, domain) for shapes in BINARY_SHAPES]


def arity(prim):
    """How many inputs an elementwise primitive takes: its NumPy ufunc's, else its VJP rule's."""
    ufuncs = [f for f, p in NUMPY_FUNCTIONS.items() if p is prim and isinstance(f, np.ufunc)]
    if ufuncs:
        return ufuncs[0].nin
    if isinstance(prim.domain, tuple):
        return len(prim.domain)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in inspect.signature(prim.vjp).parameters.values()) - 2


def generated_cases(prim):
    """The cases a differentiable elementwise primitive's declaration gives: its NumPy function (the first
    declared; else the primitive itself) at every shape combination, and its ``math`` function on scalars;
    inputs from its ``domain``. None for the primitives tested by hand (params, a boolean input)."""
    if not prim.elementwise or prim.nondiff or prim.domain is None:
        return None
    n = arity(prim)
    domains = input_domains(prim, n)
    if any(d == "mask" for d in domains):
        return None
    numpy_fns = [f for f, p in NUMPY_FUNCTIONS.items() if p is prim and callable(f)]
    fn = numpy_fns[0] if numpy_fns else prim
    try:  # a primitive that needs params (convert's dtype) is tested by hand
        fn(*(sample(d, (), np.random.default_rng(0)) for d in domains))
    except TypeError:
        return None
    # (arrays first: the compiled tests run each primitive's first case)
    shapes = {1: UNARY_SHAPES[::-1], 2: [(MATRIX, ROW)] + [s for s in BINARY_SHAPES if s != (MATRIX, ROW)]}.get(
        n, [(VECTOR,) * n, (SCALAR,) * n])
    cases = [(fn, s, domains) for s in shapes]
    cases += [(math_call(f), (SCALAR,) * n, domains) for f, p in MATH_FUNCTIONS.items() if p is prim]
    return cases


def math_call(f):
    """``lambda *xs: math.f(*xs)``: the tracer swaps a function's ``math`` for its traced stand-in."""
    return eval(f"lambda *xs: math.{f.__name__}(*xs)", {"math": math})


def fused(fn):
    """``fn`` compiled: its graph (``tg.make_graph``) is the optimised one, where fusion makes loop nests."""
    return tg.jit(fn)


I3 = np.array([0, 2, 0])  # a repeated index: scatter_add must accumulate
J3 = np.array([1, 0, 2])

_gate = tg.custom_vjp(lambda x, y: x * np.tanh(y))
_gate.defvjp(lambda x, y: (x * np.tanh(y), (x, np.tanh(y))),
             lambda res, g: (g * res[1], g * res[0] * (1 - res[1] * res[1])))

_tanh_gate = tg.custom_jvp(lambda x, y: x * np.tanh(y))


@_tanh_gate.defjvp
def _tanh_gate_jvp(primals, tangents):
    (x, y), (dx, dy) = primals, tangents
    t = np.tanh(y)
    return x * t, dx * t + x * (1 - t * t) * dy


def _count_to_five(s):
    return tg.while_loop(lambda c: c < 5.0, lambda c: c + 1.0 + 0.0 * s, 0.0)


def _eigh_squares(a, uplo="L"):
    w, v = np.linalg.eigh(a, UPLO=uplo)
    return v * v * w[..., None, :]


def _svd_products(a):
    """u[:, k] vt[k] s[k] summed, and u[:, k] vt[k] for the first k: both the same for either sign of u_k and v_k."""
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (u * s[..., None, :]) @ vt + u[..., :, :1] * vt[..., :1, :] * 3.0


def _seed(i):
    """A loop's index as a permutation's seed (a Python int when the loop runs eagerly)."""
    return np.uint64(i) if isinstance(i, int) else i.astype(np.uint64)


def _both(carry, ys):
    return carry * ys[0] + ys[-1]


# primitive name -> list of (function of float arrays, argument shapes, domain)
CASES = {
    "sub": [(lambda x: 1.5 - x, (VECTOR,), "real")],
    "div": [(lambda x: 2 / x, (VECTOR,), "away_from_zero")],
    "pow": [(lambda x: x ** 3, (VECTOR,), "real"), (lambda x: 2.0 ** x, (VECTOR,), "real")],
    "log": [(lambda x: math.log(x, 2.0), (SCALAR,), "positive")],
    "sign": [(lambda x: np.sign(x) * x, (VECTOR,), "away_from_zero"), (lambda x: np.sign(x) * x, (MATRIX,), "away_from_zero")],
    "maximum": [(lambda x: np.maximum(x, 0.0), (MATRIX,), "away_from_zero")],
    # no gradient through the steps (None: the declaration's domain); x % y and the composites of one product
    "floor": [(lambda x: np.floor(x) * x, (VECTOR,), None), (lambda x: np.floor(x) * x, (MATRIX,), None),
              (lambda x: math.floor(x) * x, (SCALAR,), None)],
    "ceil": [(lambda x: np.ceil(x) * x, (VECTOR,), None), (lambda x: math.ceil(x) * x, (SCALAR,), None)],
    "mod": [(lambda x, y: x % y, (MATRIX, ROW), ("real", "away_from_zero")), (lambda x: 2.5 % x, (VECTOR,), "away_from_zero"),
            (lambda x: np.mod(x, 0.7), (VECTOR,), "real")],
    "fmax": [(lambda x: np.fmax(x, 0.0), (MATRIX,), "away_from_zero")],
    "mul": [(lambda x: x * x, (MATRIX,), "real"), (np.deg2rad, (VECTOR,), "real"), (np.rad2deg, (MATRIX,), "real"),
            (np.degrees, (SCALAR,), "real"), (np.radians, (VECTOR,), "real"),
            (lambda x: math.degrees(x) + math.radians(x), (SCALAR,), "real")],
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
    # made by fusion (primitives/nest.py), so their cases are compiled functions (``fused``: tg.jit, whose graph
    # is optimised): a loop nest whose gradient adds at shifted index values (grad_x[i0 + 1] += g) and reads
    # guarded ((g[i0 - 1] if i0 >= 1 else 0.0)); stored values read broadcast (y[0, i1]); sums over rows,
    # columns and everything; a 3-d index space. The first case of each is the one compiled: shifted sums,
    # guarded reads, sums over an axis
    "loop_nest": [(fused(lambda x: x[1:] * x[:-1] + np.tanh(x[1:]) + x[:-1] ** 2 * x[1:]), ((6,),), "real"),
                  (fused(lambda x, y: np.tanh(x) * y + x), (MATRIX, ROW), "real"),
                  (fused(lambda x: np.sum(np.exp(x) * x, axis=1) + np.sum(np.sin(x) * x, axis=0)[:2]), (MATRIX,),
                   "real"),
                  (fused(lambda x, y: np.sum(np.cos(x * y) * x, axis=(0, 2))), ((2, 3, 4), (3, 1)), "real")],
    "element": [(fused(lambda x: x[1:] * x[:-1] + np.sum(x ** 2)), ((6,),), "real"),
                (fused(lambda x, y: P["place"](x, shape=(4, 3), index=(slice(1, 3), 0)) * y + y), ((2,), (4, 3)),
                 "real"),
                (fused(lambda x, y: np.tanh(x) * y + x), (MATRIX, ROW), "real")],
    "add_at": [(fused(lambda x: np.sum(np.exp(x) * x, axis=0)), (MATRIX,), "real"),
               (fused(lambda x: np.sum(x[1:] * x[:-1] + x[:-1] ** 2)), ((5,),), "real")],
    "copy": [(lambda x: P["copy"](x) * x, (VECTOR,), "real")],  # (and its generated cases)
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
    "custom_jvp_call": [(lambda x, y: _tanh_gate(x, y) + _tanh_gate(y, x * y), (VECTOR, VECTOR), "real"),
                        (lambda x: _tanh_gate(x, 2.0) * _tanh_gate(0.5, x), (MATRIX,), "real")],
    "stop_gradient": [(lambda x: tg.stop_gradient(x) * 0.0 + x, (VECTOR,), "real")],
    # ranges the function makes itself are computed by the code: np.arange(n), with a start and a step
    "constant": [(lambda x: x[np.arange(2), np.array([2, 0])], (MATRIX,), "real"),
                 (lambda x: x * np.arange(1, 4) + x[::-1] * np.arange(5, -1, -2), (VECTOR,), "real")],
    # draws from a key read from the globals (so traced, read at every call), scaled by the arguments
    "random_uniform": [(lambda x: x * tg.random.uniform(KEY, x.shape, dtype=x.dtype), (MATRIX,), "real"),
                       (lambda x, y: tg.random.uniform(KEY, None, x, y), (VECTOR, VECTOR), "real")],
    "random_normal": [(lambda x, y: x + y * tg.random.normal(KEY, x.shape, dtype=x.dtype), (MATRIX, ROW), "real"),
                      (lambda x: x * tg.random.normal(KEY, dtype=x.dtype), (SCALAR,), "real")],
    "random_fold_in": [(lambda x: x * tg.random.uniform(tg.random.split(KEY, 3)[2], x.shape, dtype=x.dtype),
                        (VECTOR,), "real")],
    "random_permutation": [(lambda x: x[tg.random.permutation(KEY, 3)] * x, ((3, 2),), "real")],
    # y[index] = v in a traced function (primitives/assign.py)
    "setitem": [(lambda x, y: P["setitem"](x, y, index=(slice(1, None),)), (MATRIX, ROW), "real"),
                (lambda x: P["setitem"](x * 2, x[0, 0], index=(0, 1)), (MATRIX,), "real")],
    # y[i] = v at a traced integer i (a loop's index, an argmax)
    "dynamic_setitem": [(lambda x: tg.fori_loop(0, 3, lambda i, y: P["dynamic_setitem"](y, x[i] * y[i + 1], i), x * 1.0),
                         ((4,),), "real"),
                        (lambda x: P["dynamic_setitem"](x * x, np.sin(x[0]), np.argmax(x[:, 0]) - 3), ((3, 2),), "real")],
    # primitives/cumulative.py: the last axis of 1-d and 2-d arrays
    "cumsum": [(np.cumsum, (VECTOR,), "real"), (lambda x: np.cumsum(x, axis=1), (MATRIX,), "real")],
    "cumprod": [(np.cumprod, (VECTOR,), "real"), (lambda x: np.cumprod(x, axis=0), (MATRIX,), "real")],
    "argsort": [(np.sort, (VECTOR,), "real"), (lambda x: np.sort(x, axis=0), (MATRIX,), "real")],
    "argmax": [(lambda x: x[np.argmax(x)] * x, (VECTOR,), "real")],
    "argmin": [(lambda x: x[np.arange(2), np.argmin(x, axis=1)], (MATRIX,), "real")],
    "batched_dot": [(lambda a, b: a @ b, ((2, 3, 4), (2, 4, 2)), "real")],
    # primitives/decompositions.py: the matrices are made well conditioned (and positive definite)
    # (and on stacks of matrices, (2, 3, 3): the leading axes are a batch, as in NumPy)
    "inv": [(lambda a: np.linalg.inv(a @ a.T + 3 * np.eye(3)), ((3, 3),), "real"),
            (lambda a: np.linalg.inv(a + 3 * np.eye(3)), ((2, 3, 3),), "real")],
    "det": [(lambda a: np.linalg.det(a + 3 * np.eye(3)), ((3, 3),), "real"),
            (lambda a: np.linalg.det(a + 3 * np.eye(3)), ((2, 3, 3),), "real")],
    "logabsdet": [(lambda a: np.linalg.slogdet(a @ a.T + 3 * np.eye(3))[1], ((3, 3),), "real"),
                  (lambda a: np.linalg.slogdet(a - 3 * np.eye(3))[1], ((2, 3, 3),), "real")],
    "sign_of_det": [(lambda a: np.linalg.slogdet(3 * np.eye(3) - a @ a.T * 0.1)[0] * a, ((3, 3),), "real"),
                    (lambda a: np.linalg.slogdet(a * 0.1 + np.diag([-3.0, 3.0, 3.0]))[0][:, None, None] * a,
                     ((2, 3, 3),), "real")],
    "solve": [(lambda a, b: np.linalg.solve(a @ a.T + 3 * np.eye(3), b), ((3, 3), (3, 2)), "real"),
              (lambda a, b: np.linalg.solve(a + 4 * np.eye(3), b), ((3, 3), (3,)), "real"),
              (lambda a, b: np.linalg.solve(a + 4 * np.eye(3), b), ((2, 3, 3), (3,)), "real"),
              (lambda a, b: np.linalg.solve(a + 4 * np.eye(3), b), ((2, 3, 3), (2, 3, 2)), "real")],
    "cholesky": [(lambda a: np.linalg.cholesky(a @ a.T + 3 * np.eye(3)), ((3, 3),), "real"),
                 (lambda a: np.linalg.cholesky(a @ np.swapaxes(a, 1, 2) + 3 * np.eye(3)), ((2, 3, 3),), "real")],
    # eigenvectors and singular vectors only through values that do not depend on their signs (v * v, u_k vt_k);
    # spectra kept apart (no repeated eigenvalue or singular value)
    "eigh": [(lambda a: _eigh_squares(a + a.T + np.diag([0.0, 3.0, 6.0])), ((3, 3),), "real"),
             (lambda a: np.linalg.eigh(a + np.diag([0.0, 3.0, 6.0]))[0], ((3, 3),), "real"),  # its lower triangle
             (lambda a: _eigh_squares(a + np.diag([0.0, 3.0, 6.0]), "U"), ((2, 3, 3),), "real")],
    "qr": [(lambda a: np.vstack(np.linalg.qr(a)), ((4, 3),), "real"),
           (lambda a: np.hstack(np.linalg.qr(a)), ((3, 5),), "real"),
           (lambda a: np.linalg.qr(a)[0] + np.linalg.qr(a, mode="r"), ((2, 3, 3),), "real")],
    "svd": [(lambda a: _svd_products(a), ((4, 3),), "real"),
            (lambda a: _svd_products(a), ((3, 5),), "real"),
            (lambda a: _svd_products(a) + np.linalg.svd(a, compute_uv=False)[..., None, :1], ((2, 4, 3),), "real")],
    # primitives/special.py: SciPy's ufuncs, matched by name
    "gammaln": unary(scipy.special.gammaln, "positive"),
    "polygamma": [(scipy.special.digamma, (VECTOR,), "positive"), (lambda x: scipy.special.polygamma(2, x), (MATRIX,), "positive")],
    "ndtr": unary(scipy.special.ndtr),
    "erf": unary(scipy.special.erf),
    "erfc": unary(scipy.special.erfc),
    "isfinite": [(lambda x: np.where(np.isfinite(np.where(x > 0, x, np.inf)), x * x, x), (MATRIX,), "away_from_zero")],
    # fit's shuffle, from a traced seed (a loop's index): x in the orders of seeds 0 and 1
    "permutation": [(lambda x: tg.fori_loop(0, 2, lambda i, c: c + x[P["permutation"](_seed(i), n=4)] * x,
                                            np.zeros(4)), ((4,),), "real")],
}
KEY = tg.random.key(7)

GENERATED = {name: generated_cases(prim) for name, prim in PRIMITIVES.items() if generated_cases(prim)}
ALL_CASES = {name: GENERATED.get(name, []) + CASES.get(name, []) for name in sorted(set(GENERATED) | set(CASES))}
PARAMS = [pytest.param(name, i, id=f"{name}-{i}") for name in ALL_CASES for i in range(len(ALL_CASES[name]))]


def draw(shape, domain, rng, dtype=np.float64):
    return sample(domain, shape, rng, dtype)


def make_case(name, i, dtype=np.float64, seed=0):
    fn, shapes, domain = ALL_CASES[name][i]
    if domain is None:
        domain = input_domains(PRIMITIVES[name], len(shapes))
    domains = domain if isinstance(domain, tuple) else (domain,) * len(shapes)
    rng = np.random.default_rng(seed)
    args = [sample(d, shape, rng, dtype) for d, shape in zip(domains, shapes)]
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
    missing = sorted(set(PRIMITIVES) - set(ALL_CASES))
    assert not missing, f"primitives without test cases (declare a domain, or add CASES): {missing}"


def test_every_declaration_is_complete():
    """Each fact a primitive needs is in its declaration: a gradient rule both ways or the explicit ``nondiff``,
    and, for a differentiable elementwise primitive, the inputs its tests draw (``domain``)."""
    problems = []
    for name, prim in sorted(PRIMITIVES.items()):
        if prim.vjp is None and not prim.nondiff:
            problems.append(f"{name}: no vjp (declare nondiff=True if no gradient flows through it)")
        if prim.jvp is None and not prim.nondiff:
            problems.append(f"{name}: no jvp (declare nondiff=True if no tangent flows through it)")
        if prim.ref is None or prim.emit is None:
            problems.append(f"{name}: no ref or no emit")
        if prim.elementwise and not prim.nondiff:
            if prim.domain is None:
                problems.append(f"{name}: no test domain (domain = 'real', 'positive', ... or a function)")
            else:
                for d in (prim.domain if isinstance(prim.domain, tuple) else (prim.domain,)):
                    if not (callable(d) or d in DOMAINS):
                        problems.append(f"{name}: unknown test domain {d!r} (known: {sorted(DOMAINS)})")
        if prim.kink is not None and not all(callable(f) for f in (prim.kink.watch, prim.kink.signature)):
            problems.append(f"{name}: a kink needs watch and signature functions")
    assert not problems, "incomplete declarations:\n" + "\n".join(problems)


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
def test_grad_of_jvp_matches_central_differences(name, i):
    """Second order, reverse over forward: the gradient of a tangent, <J v>, differentiates each JVP
    rule's own nodes by their VJPs."""
    loss, args, _ = make_case(name, i)
    v = directions(args)
    graph, captured = traced(loss, args)
    wrt = list(range(len(args)))
    jvp = jvp_graph(graph, wrt)  # inputs: args, tangents, captured; outputs: loss, its tangent
    tangent_only = type(jvp)(jvp.name, jvp.inputs, jvp.nodes, [jvp.outputs[1]], jvp.n_args)
    grads = evaluate(value_and_grad_graph(tangent_only, wrt).verify(), *args, *v, *captured)[1:]

    def along(*xs):
        return interpret_jvp(graph, captured, xs, v)[1][0]
    for k in wrt:
        np.testing.assert_allclose(grads[k], numeric_grad(along, *args, argnums=k, eps=1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,i", PARAMS)
def test_jvp_float32_in_float32_out(name, i):
    _, args32, fn = make_case(name, i, np.float32)
    _, args64, _ = make_case(name, i, np.float64)
    (value32,), (t32,) = interpret_jvp(*traced(fn, args32), args32, directions(args32))
    (_,), (t64,) = interpret_jvp(*traced(fn, args64), args64, directions(args64))
    assert np.asarray(t32).dtype == np.asarray(value32).dtype  # a tangent has its value's dtype
    np.testing.assert_allclose(t32, t64, rtol=2e-3, atol=2e-4)


# ---------------------------------------------------------------- numerically stable forms


def test_logaddexp_and_its_gradient_do_not_overflow():
    """log(exp(x) + exp(y)) written naively overflows at x = 1000; np.logaddexp and its rule do not."""
    x, y = np.array([1000.0, -1000.0, 800.0, 0.0]), np.array([999.0, -1001.0, 800.0, -1e4])
    for fun in (tg.value_and_grad(lambda x, y: np.sum(np.logaddexp(x, y)), argnums=(0, 1)),
                tg.value_and_grad(lambda x, y: np.sum(np.logaddexp2(x, y)), argnums=(0, 1))):
        value, (gx, gy) = fun(x, y)
        assert np.isfinite(value) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
        np.testing.assert_allclose(gx + gy, 1.0)  # the two shares of each element add up to one
    _, (gx, gy) = tg.value_and_grad(lambda x, y: np.sum(np.logaddexp(x, y)), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, 1 / (1 + np.exp(y - x)))  # the softmax weight of x, exactly
    assert gx[2] == pytest.approx(0.5, rel=1e-12) and gy[3] == 0.0


def test_modulo_follows_numpy_signs_and_int_dtypes():
    x = np.array([-3.5, -1.0, 0.0, 2.5, 7.0])
    for y in (2.0, -2.0, 0.75):
        np.testing.assert_array_equal(tg.jit(lambda x: x % y)(x), x % y)
        np.testing.assert_array_equal(tg.jit(lambda x: y % (x + 10.0))(x), y % (x + 10.0))
    n = np.array([-7, -1, 0, 5, 9])
    got = tg.jit(lambda n: n % 4)(n)
    assert got.dtype == (n % 4).dtype
    np.testing.assert_array_equal(got, n % 4)
