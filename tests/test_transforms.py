"""jacrev / jacobian / hessian: one compiled loop of reverse passes, checked against central differences."""
import re

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.forward import linearize_graph
from tracegrad.testing import numeric_grad


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def numeric_jacobian(f, x, out_shape):
    """Central differences of each output entry, laid out as out_shape + x.shape."""
    size = int(np.prod(out_shape))
    rows = [numeric_grad(lambda x: np.reshape(f(x), (size,))[k], x) for k in range(size)]
    return np.reshape(np.stack(rows), tuple(out_shape) + np.shape(x))


def test_hessian_of_rosenbrock_matches_differences_and_is_symmetric():
    x = np.random.default_rng(0).normal(size=6)
    H = tg.hessian(rosenbrock)(x)
    assert H.shape == (6, 6)
    np.testing.assert_allclose(H, numeric_jacobian(tg.grad(rosenbrock), x, (6,)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(H, H.T)  # symmetric to the last bit is not promised in general, but holds here


def test_jacrev_layout_and_several_arguments():
    def f(x, y):
        return np.tanh(x[:, None] * y[None, :]) + np.sin(x)[:, None]

    x, y = np.array([0.1, -0.7]), np.array([0.3, 0.4, 1.5])
    jx, jy = tg.jacrev(f, argnums=(0, 1))(x, y)
    assert jx.shape == (2, 3, 2) and jy.shape == (2, 3, 3)
    np.testing.assert_allclose(jx, numeric_jacobian(lambda x: f(x, y), x, (2, 3)), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(jy, numeric_jacobian(lambda y: f(x, y), y, (2, 3)), rtol=1e-7, atol=1e-9)
    assert tg.jacobian is tg.jacrev


def test_jacobian_of_a_scalar_function_is_its_gradient_and_aux_passes_through():
    x = np.array([0.5, 2.0])
    j, aux = tg.jacrev(lambda x: (np.sum(x ** 3), x * 2), has_aux=True)(x)
    np.testing.assert_allclose(j, 3 * x ** 2, rtol=1e-14)
    np.testing.assert_array_equal(aux, x * 2)
    assert tg.jacrev(lambda t: np.ones(3) * (t + t * t))(2.0).tolist() == [5.0] * 3  # R -> R^3


def test_hessian_traces_into_an_enclosing_function():
    def curvature_along(x, v):  # v' H v, differentiated again
        return v @ tg.hessian(rosenbrock)(x) @ v

    x, v = np.array([0.5, 1.2, -0.3]), np.array([1.0, -2.0, 0.5])
    g = tg.grad(curvature_along)(x, v)
    np.testing.assert_allclose(g, numeric_grad(lambda x: curvature_along(x, v), x), rtol=1e-6)


def test_bad_input():
    with pytest.raises(tg.GradTypeError, match="pair"):
        tg.jacrev(lambda x: x * 2, has_aux=True)(np.ones(2))


def two_args(x, y):
    return np.tanh(x[:, None] * y[None, :]) + np.sin(x)[:, None]


X, Y = np.array([0.1, -0.7]), np.array([0.3, 0.4, 1.5])


def test_jvp_matches_a_directional_difference():
    tx, ty = np.array([1.0, 2.0]), np.array([0.5, -1.0, 0.2])
    out, tangent = tg.jvp(two_args, (X, Y), (tx, ty))
    np.testing.assert_allclose(out, two_args(X, Y), rtol=1e-15)
    eps = 1e-6
    expected = (two_args(X + eps * tx, Y + eps * ty) - two_args(X - eps * tx, Y - eps * ty)) / (2 * eps)
    np.testing.assert_allclose(tangent, expected, rtol=1e-7, atol=1e-9)


def test_vjp_and_jvp_agree_the_dot_product_test():
    """<u, J v> == <J^T u, v> for random u, v: forward and reverse mode describe one Jacobian."""
    rng = np.random.default_rng(3)
    u, vx, vy = rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=3)
    _, jv = tg.jvp(two_args, (X, Y), (vx, vy))
    out, pullback = tg.vjp(two_args, X, Y)
    jtu = pullback(u)
    assert np.sum(u * jv) == pytest.approx(np.sum(jtu[0] * vx) + np.sum(jtu[1] * vy), rel=1e-12)


def test_jacfwd_equals_jacrev():
    np.testing.assert_allclose(tg.jacfwd(two_args, argnums=1)(X, Y), tg.jacrev(two_args, argnums=1)(X, Y),
                               rtol=1e-14, atol=1e-15)


def test_hvp_without_forming_the_hessian():
    x, v = np.random.default_rng(4).normal(size=5), np.arange(5.0)
    (hv,) = tg.hvp(rosenbrock, (x,), (v,))
    np.testing.assert_allclose(hv, tg.hessian(rosenbrock)(x) @ v, rtol=1e-12)


def test_jvp_source_names_tangents_beside_their_values():
    def f(x, y):
        z = np.sin(x) * y
        return np.sum(z)

    text = tg.source(lambda x, y, tx, ty: tg.jvp(f, (x, y), (tx, ty)), X[0], Y, X[0], Y)
    assert "tan_z = " in text and "np.cos(" in text
    assert text == tg.source(lambda x, y, tx, ty: tg.jvp(f, (x, y), (tx, ty)), X[0], Y, X[0], Y)  # deterministic


def test_jvp_through_a_while_loop():
    """Forward mode needs no trip count: the loop carries each value with its tangent."""
    def halve_until_small(x):
        return tg.while_loop(lambda c: np.sum(c * c) > 1e-3, lambda c: c * 0.5 + 0.01 * np.sin(c), x)

    x, v = np.array([3.0, -2.0]), np.array([1.0, 0.5])
    value, tangent = tg.jvp(halve_until_small, (x,), (v,))
    np.testing.assert_allclose(value, halve_until_small(x))
    eps = 1e-6  # the trip count is the same at x +- eps v
    expected = (halve_until_small(x + eps * v) - halve_until_small(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(tangent, expected, rtol=1e-6)
    graph = tg.make_graph(lambda x, v: tg.jvp(halve_until_small, (x,), (v,)), x, v)
    assert [n.primitive.name for n in graph.nodes].count("while_loop") == 1  # values and tangents in one loop
    np.testing.assert_allclose(tg.jacfwd(halve_until_small)(x) @ v, tangent, rtol=1e-12)  # its Jacobian too


def test_jvp_of_a_scan_runs_the_forward_steps_once():
    def f(x):
        return tg.scan(lambda c, r: (np.tanh(c * r), c), 1.0, x)[0]

    x, v = np.linspace(0.1, 1.0, 5), np.ones(5)
    graph = tg.make_graph(lambda x, v: tg.jvp(f, (x,), (v,)), x, v)
    assert [n.primitive.name for n in graph.nodes].count("loop") == 1
    _, tangent = tg.jvp(f, (x,), (v,))
    assert tangent == pytest.approx(np.sum(tg.grad(f)(x) * v), rel=1e-12)


def test_jvp_treats_a_closed_over_value_as_a_constant():
    """The tangent is along the arguments only, even when the function also reads the same value."""
    def outer(x):
        return tg.jvp(lambda y: y * x, (x,), (1.0,))[1]

    assert tg.jit(outer)(3.0) == 3.0


def test_hessian_forward_over_reverse_equals_reverse_over_reverse():
    x = np.random.default_rng(5).normal(size=6)
    np.testing.assert_allclose(tg.hessian(rosenbrock)(x), tg.jacrev(tg.grad(rosenbrock))(x), rtol=1e-12, atol=1e-9)
    h, aux = tg.hessian(lambda x: (rosenbrock(x), x[0] * 2), has_aux=True)(x)
    np.testing.assert_allclose(h, tg.hessian(rosenbrock)(x), rtol=1e-14)
    assert aux == x[0] * 2
    assert tg.hessian(lambda t: t ** 3)(2.0) == pytest.approx(12.0)


def test_linearize_computes_the_value_once_and_only_tangents_after():
    def f(x, y):
        z = np.sin(x) * y
        return np.sum(z / (1 + x * x)), z

    x, y = np.linspace(0.1, 1.0, 3), np.array([0.5, -1.0, 2.0])
    out, f_jvp = tg.linearize(f, x, y)
    np.testing.assert_allclose(out[1], np.sin(x) * y)
    for tx, ty in [(np.ones(3), np.zeros(3)), (y, x * 2)]:
        expected = tg.jvp(f, (x, y), (tx, ty))[1]
        np.testing.assert_allclose(f_jvp(tx, ty)[0], expected[0], rtol=1e-14)
        np.testing.assert_allclose(f_jvp(tx, ty)[1], expected[1], rtol=1e-14)
    primal, tangent = linearize_graph(tg.make_graph(np.sin, x), [0])
    assert [n.primitive.name for n in primal.nodes] == ["cos"]  # (dce dropped sin: its tangent does not read it)
    assert [n.primitive.name for n in tangent.nodes] == ["mul"]  # tan_x * cos(x), the factor a residual
    with pytest.raises(tg.ShapeError, match="linearize: tangents"):
        f_jvp(np.ones(3))


def test_tangents_and_cotangents_must_fit():
    with pytest.raises(tg.ShapeError, match="tangents of structure"):
        tg.jvp(two_args, (X, Y), (X,))
    with pytest.raises(tg.ShapeError, match="dtype float32"):
        tg.jvp(two_args, (X, Y), (X.astype(np.float32), Y))
    _, pullback = tg.vjp(two_args, X, Y)
    with pytest.raises(tg.ShapeError, match=r"cotangent of shape \(3,\)"):
        pullback(np.ones(3))


def example_loss(params, x, y):
    h = np.tanh(params["W"] @ x + params["b"])
    return (np.sum(h) - y) ** 2


def test_vmap_of_grad_gives_per_example_gradients():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=6)
    per = tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0))(params, X, Y)
    assert per["W"].shape == (6, 4, 3) and per["b"].shape == (6, 4)
    for i in range(6):
        g = tg.grad(example_loss)(params, X[i], Y[i])
        np.testing.assert_allclose(per["W"][i], g["W"], rtol=1e-14)
        np.testing.assert_allclose(per["b"][i], g["b"], rtol=1e-14)
    # the mean of the per-example gradients is the batch gradient
    batch = tg.grad(lambda p: np.mean(tg.vmap(example_loss, in_axes=(None, 0, 0))(p, X, Y)))(params)
    np.testing.assert_allclose(np.mean(per["W"], axis=0), batch["W"], rtol=1e-12)


def test_vmap_axes():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(tg.vmap(lambda r: r * 2, in_axes=1, out_axes=1)(x), x * 2)
    np.testing.assert_array_equal(tg.vmap(lambda r: np.sum(r))(x), [3.0, 12.0])
    np.testing.assert_array_equal(tg.vmap(lambda r, c: r * c, in_axes=(0, None))(x, 2.0), x * 2)
    with pytest.raises(tg.ShapeError, match="different sizes"):
        tg.vmap(lambda a, b: a + b)(np.ones(2), np.ones(3))
    with pytest.raises(tg.ShapeError, match="out of range"):
        tg.vmap(lambda a: a, in_axes=2)(np.ones((2, 2)))


def test_an_inner_grad_closing_over_a_traced_value_is_traced_into_the_outer_one():
    # d/dx [x * d/dy (x * y)] = d/dx [x * x] = 2x; the inner gradient is never compiled on its own
    assert tg.grad(lambda x: x * tg.grad(lambda y: x * y)(2.0))(1.5) == 3.0
    inner = tg.grad(np.sin)
    assert inner(0.5) == np.cos(0.5)  # compiled, and its fast path installed
    assert tg.grad(lambda x: x * inner(0.5))(2.0) == np.cos(0.5)  # inside a trace it is traced all the same
    W = np.array([2.0])
    reads_a_global = tg.jit(lambda t: t * W[0])
    outer = tg.jit(lambda x: x + reads_a_global(1.0))
    assert outer(0.0) == 2.0
    W[0] = 5.0  # read when the outer function runs, not fixed when it was traced
    assert outer(0.0) == 5.0


_wrong_structure = tg.custom_vjp(lambda x, y: x * y)
_wrong_structure.defvjp(lambda x, y: (x * y, (x, y)), lambda res, g: g * res[1])  # one gradient, not a pair
_wrong_shape = tg.custom_vjp(lambda x: x * 2.0)
_wrong_shape.defvjp(lambda x: (x * 2.0, None), lambda res, g: (np.sum(g),))
_wrong_tangent = tg.custom_jvp(lambda x: x * 2.0)
_wrong_tangent.defjvp(lambda primals, tangents: (primals[0] * 2.0, np.sum(tangents[0])))


def _uses_wrong_structure(x):
    return np.sum(_wrong_structure(x, x))  # the custom_vjp call: the line named


def _uses_wrong_shape(x):
    return np.sum(_wrong_shape(x))  # the custom_vjp call: the line named


def _uses_wrong_tangent(x):
    return np.sum(_wrong_tangent(x))  # the custom_jvp call: the line named


BAD = [  # (the call, the error class, words of its message, the text of the line it names)
    (lambda: tg.jvp(two_args, (X, Y), (X, Y[:2])), tg.ShapeError, r"tangents of structure .* shapes \[\(2,\), \(2,\)\]",
     "tg.jvp(two_args, (X, Y), (X, Y[:2]))"),
    (lambda: tg.jvp(two_args, (X, Y), (X, Y.astype(np.float32))), tg.ShapeError, "a tangent of dtype float32",
     "Y.astype(np.float32)"),
    (lambda: tg.vmap(two_args)(np.ones((2, 3)), np.ones((4, 3))), tg.ShapeError, r"different sizes \[2, 4\]",
     "tg.vmap(two_args)(np.ones((2, 3)), np.ones((4, 3)))"),
    (lambda: tg.vmap(two_args, in_axes=(0, 1))(X, Y), tg.ShapeError, r"in_axes=1 is out of range for argument 1",
     "in_axes=(0, 1)"),
    (lambda: tg.grad(_uses_wrong_structure)(X), tg.TracegradError, "must return a tuple of 2 gradient",
     "_wrong_structure(x, x)"),
    (lambda: tg.grad(_uses_wrong_shape)(X), tg.ShapeError, r"gradient of shape \(\) for an argument of shape \(2,\)",
     "_wrong_shape(x)"),
    (lambda: tg.grad(_uses_wrong_tangent)(X), tg.ShapeError, r"a tangent of shape \(\) for an output of shape \(2,\)",
     "_wrong_tangent(x)"),
    (lambda: tg.jvp(_uses_wrong_tangent, (X,), (X,)), tg.ShapeError, r"a tangent of shape \(\)", "_wrong_tangent(x)"),
    (lambda: tg.hessian(two_args)(X, Y), tg.GradTypeError, r"hessian needs a function with a scalar output, but "
     r"two_args returns shape \(2, 3\)", "tg.hessian(two_args)(X, Y)"),
    (lambda: tg.grad(two_args)(X, Y), tg.GradTypeError, r"grad needs a scalar output, but two_args returns "
     r"shape \(2, 3\)", "tg.grad(two_args)(X, Y)"),
    (lambda: tg.vmap(np.sin, out_axes=2)(Y), tg.ShapeError, r"out_axes=2 is out of range for an output of "
     r"shape \(\)", "tg.vmap(np.sin, out_axes=2)(Y)"),
    (lambda: tg.vmap(two_args, in_axes=({"a": 0}, 0))(X, Y), tg.ShapeError, r"in_axes \{'a': 0\} does not fit",
     "in_axes=({\"a\": 0}, 0)"),
]


@pytest.mark.parametrize("call,error,message,line", BAD, ids=[b[3] for b in BAD])
def test_bad_input_names_the_problem_and_the_users_line(call, error, message, line):
    with pytest.raises(error, match=message) as info:
        call()
    assert isinstance(info.value, tg.TracegradError)
    assert info.value.source is not None and info.value.source.filename == __file__
    assert line in info.value.source.line


@pytest.fixture(scope="module")
def jax64():
    """JAX in float64, when installed (an optional comparison: the tests above use central differences)."""
    jax = pytest.importorskip("jax", reason="JAX is an optional comparison (pip install jax)")
    jax.config.update("jax_enable_x64", True)
    return jax


def test_the_transformations_agree_with_jax_in_float64(jax64):
    jax, jnp = jax64, jax64.numpy
    x = np.array([0.3, -1.2, 0.8, 1.5, -0.4])
    j_rosen = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    np.testing.assert_allclose(tg.hessian(rosenbrock)(x), jax.hessian(j_rosen)(x), rtol=1e-10)
    j_two = lambda x, y: jnp.tanh(x[:, None] * y[None, :]) + jnp.sin(x)[:, None]
    np.testing.assert_allclose(tg.jacfwd(two_args)(X, Y), jax.jacfwd(j_two)(X, Y), rtol=1e-10)
    np.testing.assert_allclose(tg.jacrev(two_args, argnums=1)(X, Y), jax.jacrev(j_two, argnums=1)(X, Y),
                               rtol=1e-10)
    u, v = np.array([0.5, -2.0]), np.array([1.0, 0.25, -0.5])
    for got, expected in zip(tg.jvp(two_args, (X, Y), (u, v)), jax.jvp(j_two, (X, Y), (u, v))):
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    Xs, Ys = rng.normal(size=(5, 3)), rng.normal(size=5)
    j_loss = lambda p, x, y: (jnp.sum(jnp.tanh(p["W"] @ x + p["b"])) - y) ** 2
    got = tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0))(params, Xs, Ys)
    expected = jax.vmap(jax.grad(j_loss), in_axes=(None, 0, 0))(params, Xs, Ys)
    for k in params:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-10)
    # pytrees and several arguments: JAX's layout, entry by entry
    j_g = lambda a, b: jnp.sum(jnp.sin(a) * b[0] ** 2) + b[1] * a[0]
    g = lambda a, b: np.sum(np.sin(a) * b[0] ** 2) + b[1] * a[0]
    H, JH = tg.hessian(g, argnums=(0, 1))(x, u), jax.hessian(j_g, argnums=(0, 1))(x, u)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(H[i][j], JH[i][j], rtol=1e-10, atol=1e-14)
    f = lambda p: {"s": np.sin(p["a"]) * p["b"][0], "t": np.sum(p["a"] * p["b"][1])}
    j_f = lambda p: {"s": jnp.sin(p["a"]) * p["b"][0], "t": jnp.sum(p["a"] * p["b"][1])}
    p = {"a": x, "b": u}
    for tg_jac, jax_jac in ((tg.jacfwd, jax.jacfwd), (tg.jacrev, jax.jacrev)):
        got, expected = tg_jac(f)(p), jax_jac(j_f)(p)
        for out in ("s", "t"):
            for arg in ("a", "b"):
                np.testing.assert_allclose(got[out][arg], expected[out][arg], rtol=1e-10, atol=1e-14)


def label_loss(params, x, label):
    """One example's softmax cross-entropy: the label picks an entry (a traced integer index)."""
    logits = params["W"] @ x + params["b"]
    z = logits - np.max(logits)
    return -(z - np.log(np.sum(np.exp(z))))[label]


def test_vmap_batches_the_example_and_loops_only_where_a_primitive_has_no_batching_rule():
    rng = np.random.default_rng(1)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=4)}
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=6)
    code = tg.source(tg.vmap(tg.grad(example_loss), in_axes=(None, 0, 0)), params, X, Y)
    assert "for t in range" not in code  # every primitive has a rule: no loop over the examples
    statements = "\n".join(line.split("#")[0] for line in code.splitlines())  # (comments quote the user's lines)
    assert statements.count(" @ ") == 1 and "params_W.T" in code  # W @ x for each example: one matrix product
    labels = np.array([0, 3, 1, 1, 2, 3])
    per = tg.vmap(tg.grad(label_loss), in_axes=(None, 0, 0))(params, X, labels)
    for i in range(6):
        g = tg.grad(label_loss)(params, X[i], labels[i])
        np.testing.assert_allclose(per["W"][i], g["W"], rtol=1e-14)
        np.testing.assert_allclose(per["b"][i], g["b"], rtol=1e-14)
    code = tg.source(tg.vmap(tg.grad(label_loss), in_axes=(None, 0, 0)), params, X, labels)
    assert code.count("for t in range(6):") == 1  # the label's one-hot gradient, one example at a time
    loop = code[code.index("for t in range(6):"):].splitlines()
    assert "place_row(" in loop[2] and not loop[4].startswith("        ")  # that loop holds that node only
    with pytest.raises(IndexError):  # the loop keeps the per-example bounds check
        tg.vmap(tg.grad(label_loss), in_axes=(None, 0, 0))(params, X, labels + 4)


BATCHED_CASES = [  # (function of one example, the example's shapes, in_axes)
    (lambda v, M: v @ M, [(3,), (3, 4)], (0, None)),
    (lambda v, M: M @ v, [(4,), (3, 4)], (0, None)),
    (lambda v, M: v @ M, [(3,), (3, 4)], (None, 0)),
    (lambda v, M: M @ v, [(4,), (3, 4)], (None, 0)),
    (lambda A, B: A @ B, [(2, 3), (3, 4)], (0, None)),
    (lambda A, B: A @ B, [(2, 3), (3, 4)], (None, 0)),
    (lambda A, B: A @ B, [(2, 3), (3, 4)], (0, 0)),
    (lambda v, M: v @ M, [(3,), (3, 4)], (0, 0)),
    (lambda v, w: v @ w, [(3,), (3,)], (0, 0)),
    (lambda v, M: M @ v, [(4,), (3, 4)], (0, 0)),
    (lambda A: np.sum(A, axis=1) + np.max(A, axis=0)[:2] - np.min(A), [(2, 3)], 0),
    (lambda A: np.reshape(A, (3, 2)).T[1:, ::2], [(2, 3)], 0),
    (lambda v, A: np.broadcast_to(v, (2, 3)) * A + np.exp(v[0]), [(3,), (2, 3)], (0, None)),
    (lambda v, A: np.where(v > 0, A, -A) * v, [(3,), (2, 3)], (0, 0)),
    (lambda v, i: v[i] * v, [(3,), ()], (0, 0)),  # dynamic_index: a loop over the batch
    (lambda v: tg.scan(lambda c, x: (c * x, c), 1.0, v)[1], [(3,)], 0),  # a loop node: run per example
]


@pytest.mark.parametrize("fun, shapes, in_axes", BATCHED_CASES)
def test_vmap_agrees_with_a_python_loop_over_the_examples(fun, shapes, in_axes):
    rng = np.random.default_rng(2)
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(shapes)
    args = [rng.integers(0, 3, size=(5,) if a is not None else ()) if not s else
            rng.normal(size=((5,) + s) if a is not None else s) for s, a in zip(shapes, axes)]
    got = tg.vmap(fun, in_axes=in_axes)(*args)
    expected = np.stack([fun(*(a[k] if ax is not None else a for a, ax in zip(args, axes))) for k in range(5)])
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)


def test_constants_folded_out_of_the_hessian_source_values_unchanged():
    x = np.linspace(-1.2, 1.1, 6)
    code = tg.source(tg.hessian(rosenbrock), x)
    # the seed 1.0 multiplied through is the literal 200.0; no array of one value is stored
    assert "np.full(" not in code and "200.0 *" in code
    assert not re.search(r"= 1\.0 *(#.*)?$", code, re.M)  # no seed statement left (x = 1.0 if c else 0.0 is a choice)
    assert code.count("np.arange(6)") == 1  # made twice (the basis and the loop's rows), computed once
    h = tg.hessian(rosenbrock)(x)
    expected = np.stack([numeric_grad(lambda y: tg.grad(rosenbrock)(y)[k], x) for k in range(6)])
    np.testing.assert_allclose(h, expected, rtol=1e-7, atol=1e-6)
    assert np.array_equal(h, h.T)
    plain = tg.source(tg.grad(rosenbrock), x)
    assert "grad_out = 1.0" in plain  # a named seed stays: the chain rule's first line


def test_jacfwd_and_hessian_over_pytrees_and_several_arguments_take_jaxs_layout():
    x, y = np.array([0.3, -1.2, 2.0]), np.array([0.5, 1.5])
    f = lambda p: np.sin(p["a"]) * np.sum(p["b"] ** 2)
    fwd, rev = tg.jacfwd(f)({"a": x, "b": y}), tg.jacrev(f)({"a": x, "b": y})
    assert fwd["a"].shape == (3, 3) and fwd["b"].shape == (3, 2)
    for k in ("a", "b"):
        np.testing.assert_allclose(fwd[k], rev[k], rtol=1e-14)
    np.testing.assert_allclose(fwd["b"], numeric_jacobian(lambda b: f({"a": x, "b": b}), y, (3,)), rtol=1e-8)
    two = lambda a, b: (np.sum(a * b[0] ** 3), np.sin(a))  # a tuple output, two arguments
    (da, db), (sa, sb) = tg.jacfwd(two, argnums=(0, 1))(x, y)
    assert da.shape == (3,) and db.shape == (2,) and sa.shape == (3, 3) and sb.shape == (3, 2)
    np.testing.assert_allclose(db, numeric_grad(lambda b: two(x, b)[0], y), rtol=1e-8)
    np.testing.assert_array_equal(sb, 0.0)
    g = lambda a, b: np.sum(np.sin(a) * b[0] ** 2) + b[1] * a[0]
    H = tg.hessian(g, argnums=(0, 1))(x, y)
    assert [[H[i][j].shape for j in range(2)] for i in range(2)] == [[(3, 3), (3, 2)], [(2, 3), (2, 2)]]
    np.testing.assert_allclose(H[0][1], numeric_jacobian(lambda b: tg.grad(g, argnums=0)(x, b), y, (3,)), rtol=1e-7)
    np.testing.assert_allclose(H[1][0], H[0][1].T, rtol=1e-14)


def test_vmap_takes_axes_per_entry_of_a_pytree_and_per_output():
    p = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([1.0, 2.0, 3.0])}
    got = tg.vmap(lambda p: p["a"] * p["b"], in_axes=({"a": 0, "b": None},))(p)
    np.testing.assert_array_equal(got, p["a"] * p["b"])
    u, v = tg.vmap(lambda r: (r, r * 2), out_axes=(0, 1))(p["a"])
    np.testing.assert_array_equal(u, p["a"])
    np.testing.assert_array_equal(v, (p["a"] * 2).T)
