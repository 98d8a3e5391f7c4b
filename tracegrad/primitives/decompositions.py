"""``np.linalg``: ``inv``, ``det``, ``slogdet``, ``solve``, ``cholesky`` (LAPACK through Numba in the compiled
code), and ``norm``, ``multi_dot``, ``matrix_power`` built from other primitives.

The rules are the standard ones, written with traced operations (so they differentiate again):
``d inv(A) = -inv(A) dA inv(A)``, ``d log|det A| = tr(inv(A) dA)``, ``d solve(A, b) = solve(A, db - dA x)``,
and for ``cholesky`` (which reads the lower triangle of A, as LAPACK does)
``dL = L Phi(inv(L) dS inv(L)^T)``, ``dS`` the symmetric matrix the lower triangle of dA stands for and
``Phi`` the lower triangle with the diagonal halved. Only square 2-d matrices (no stacks).
"""
import numpy as np

from ..core import numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .linalg import dot
from .shapes import float_dtype
from .structural import reshape, transpose


def _square(name):
    def shape(a, **params):
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise (ShapeError if a.ndim == 2 else UnsupportedError)(
                f"np.linalg.{name} of an array of shape {a.shape}: only square matrices (2-d, no stacks)",
                user_source())
        return a
    return shape


def _float_square(name, scalar=False):
    square = _square(name)

    def shape(a):
        a = square(a)
        dtype = float_dtype(a.dtype)
        return Aval(() if scalar else a.shape, dtype)
    return shape


def _t(x):
    return transpose(x, perm=(1, 0))


def _inv_kernel(a):
    return np.linalg.inv(np.ascontiguousarray(a))


def _det_kernel(a):
    return np.linalg.det(np.ascontiguousarray(a))


def _logabsdet_kernel(a):
    return np.linalg.slogdet(np.ascontiguousarray(a))[1]


def _sign_of_det_kernel(a):
    return np.linalg.slogdet(np.ascontiguousarray(a))[0]


def _solve_kernel(a, b):
    return np.linalg.solve(np.ascontiguousarray(a), np.ascontiguousarray(b))


def _cholesky_kernel(a):
    return np.linalg.cholesky(np.ascontiguousarray(a))


@primitive
class inv:
    """the inverse of a square matrix"""
    shape = _float_square("inv")
    emit = "inv({a})"
    kernel = {"inv": _inv_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.linalg.inv(a)

    def vjp(g, out, a):
        return [-(_t(out) @ g @ _t(out))]

    def jvp(tangents, out, a):
        return -(out @ tangents[0] @ out)


@primitive
class det:
    """the determinant of a square matrix"""
    shape = _float_square("det", scalar=True)
    emit = "det({a})"
    kernel = {"det": _det_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.asarray(np.linalg.det(a))[()]

    def vjp(g, out, a):
        return [(g * out) * _t(inv(a))]

    def jvp(tangents, out, a):
        from .reduce import reduce_sum
        return out * reduce_sum(_t(inv(a)) * tangents[0], axes=(0, 1))


@primitive
class logabsdet:
    """log |det a|, the second result of ``np.linalg.slogdet``"""
    shape = _float_square("slogdet", scalar=True)
    emit = "logabsdet({a})"
    kernel = {"logabsdet": _logabsdet_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.asarray(np.linalg.slogdet(a)[1])[()]

    def vjp(g, out, a):
        return [g * _t(inv(a))]

    def jvp(tangents, out, a):
        from .reduce import reduce_sum
        return reduce_sum(_t(inv(a)) * tangents[0], axes=(0, 1))


@primitive
class sign_of_det:
    """the sign of det a (-1, 0 or 1), the first result of ``np.linalg.slogdet``"""
    shape = _float_square("slogdet", scalar=True)
    emit = "sign_of_det({a})"
    kernel = {"sign_of_det": _sign_of_det_kernel}
    cast_inputs = (0,)
    nondiff = True

    def ref(a):
        return np.asarray(np.linalg.slogdet(a)[0])[()]


def _solve_shape(a, b):
    _square("solve")(a)
    if b.ndim not in (1, 2) or b.shape[0] != a.shape[0]:
        raise ShapeError(f"np.linalg.solve: a right-hand side of shape {b.shape} for a matrix of shape {a.shape}",
                         user_source())
    return Aval(b.shape, float_dtype(np.result_type(a.dtype, b.dtype)))


@primitive
class solve:
    """x with a @ x = b, for a square matrix a and a vector or matrix b"""
    shape = _solve_shape
    emit = "solve({a}, {b})"
    kernel = {"solve": _solve_kernel}
    cast_inputs = (0, 1)

    def ref(a, b):
        return np.linalg.solve(a, b)

    def vjp(g, out, a, b):
        gb = solve(_t(a), g)
        ga = -(reshape(gb, shape=(gb.shape[0], 1)) * out if out.ndim == 1 else gb @ _t(out))
        return [ga, gb]

    def jvp(tangents, out, a, b):
        tan_a, tan_b = tangents
        rhs = tan_b if tan_a is None else -(tan_a @ out) if tan_b is None else tan_b - tan_a @ out
        return solve(a, rhs)


def _masks(n, dtype):
    """(strictly lower, diagonal) boolean masks of an n x n matrix, as graph nodes (a rule may not capture
    arrays)."""
    from .cumulative import _eye, _upper
    eye = _eye(n) > 0.5
    lower = _t(_upper(n))  # i >= k
    return lower & ~eye, eye


def _phi(x, strict, diagonal):
    """The lower triangle of x with its diagonal halved."""
    from .elementwise import where
    return where(strict, x, where(diagonal, 0.5 * x, 0.0))


@primitive
class cholesky:
    """the lower-triangular L with L @ L.T = a, from the lower triangle of a (as LAPACK reads it)"""
    shape = _float_square("cholesky")
    emit = "cholesky({a})"
    kernel = {"cholesky": _cholesky_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.linalg.cholesky(a)

    def vjp(g, out, a):
        from .elementwise import where
        strict, diagonal = _masks(a.shape[0], out.dtype)
        li = inv(out)
        x = _t(li) @ _phi(_t(out) @ g, strict, diagonal) @ li
        s = 0.5 * (x + _t(x))  # the gradient with respect to the symmetric matrix ...
        return [where(strict, 2.0 * s, where(diagonal, s, 0.0))]  # ... that the lower triangle stands for

    def jvp(tangents, out, a):
        from .elementwise import where
        strict, diagonal = _masks(a.shape[0], out.dtype)
        t = tangents[0]
        low = where(strict, t, 0.0)
        sym = low + _t(low) + where(diagonal, t, 0.0)
        li = inv(out)
        return out @ _phi(li @ sym @ _t(li), strict, diagonal)


# ---------------------------------------------------------------- the NumPy functions


for _prim, _fn in ((inv, np.linalg.inv), (det, np.linalg.det), (cholesky, np.linalg.cholesky)):
    numpy_function(_fn)(lambda a, *args, _prim=_prim, **kwargs: _prim(a, *args, **kwargs))


@numpy_function(np.linalg.slogdet)
def np_slogdet(a):
    return sign_of_det(a), logabsdet(a)


@numpy_function(np.linalg.solve)
def np_solve(a, b):
    return solve(a, b)


@numpy_function(np.linalg.multi_dot)
def np_multi_dot(arrays, *, out=None):
    if out is not None:
        raise UnsupportedError("np.linalg.multi_dot with out=", user_source())
    arrays = list(arrays)
    result = arrays[0]
    for a in arrays[1:]:
        result = dot(result, a)
    return result


@numpy_function(np.linalg.matrix_power)
def np_matrix_power(a, n):
    n = int(n)
    if n < 0:
        a, n = inv(a), -n
    if n == 0:
        from .manipulation import filled, np_diag
        return np_diag(filled((a.shape[0],), 1.0, a.dtype))
    result = a
    for _ in range(n - 1):
        result = dot(result, a)
    return result


@numpy_function(np.linalg.norm)
def np_norm(x, ord=None, axis=None, keepdims=False):
    """Vector norms (ord None/2, 1, inf, -inf, p) and matrix norms ('fro', 1, -1, inf, -inf)."""
    from . import reduce as r
    from .manipulation import array
    x = array(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if axis is None and (ord is None or x.ndim == 1):
        out = np.sqrt(r.sum(x * x)) if ord is None or ord == 2 else None
        if out is not None:
            return reshape(out, shape=(1,) * x.ndim) if keepdims else out
        axis = 0
    axes = tuple(range(x.ndim)) if axis is None else (axis,) if np.ndim(axis) == 0 else tuple(axis)
    if len(axes) == 1:
        a = axes[0]
        if ord is None or ord == 2:
            return np.sqrt(r.sum(x * x, axis=a, keepdims=keepdims))
        if ord == np.inf:
            return r.max(np.abs(x), axis=a, keepdims=keepdims)
        if ord == -np.inf:
            return r.min(np.abs(x), axis=a, keepdims=keepdims)
        if ord == 1:
            return r.sum(np.abs(x), axis=a, keepdims=keepdims)
        if ord == 0:
            return r.sum((x != 0).astype(x.dtype), axis=a, keepdims=keepdims)
        if isinstance(ord, str):
            raise ShapeError(f"np.linalg.norm: ord={ord!r} is a matrix norm, for two axes", user_source())
        return r.sum(np.abs(x) ** ord, axis=a, keepdims=keepdims) ** (1.0 / ord)
    if len(axes) != 2:
        raise ShapeError(f"np.linalg.norm: axis={axis} (one or two axes)", user_source())
    row, col = (a % x.ndim for a in axes)
    if ord is None or ord == "fro":
        return np.sqrt(r.sum(x * x, axis=axes, keepdims=keepdims))
    if ord in (1, -1, np.inf, -np.inf):
        summed, over = (row, col) if ord in (1, -1) else (col, row)
        sums = r.sum(np.abs(x), axis=summed, keepdims=True)
        pick = r.max if ord in (1, np.inf) else r.min
        out = pick(sums, axis=over, keepdims=True)
        return out if keepdims else reshape(out, shape=tuple(d for i, d in enumerate(x.shape) if i not in (row, col)))
    raise UnsupportedError(f"np.linalg.norm with ord={ord!r} (it needs singular values)", user_source())
