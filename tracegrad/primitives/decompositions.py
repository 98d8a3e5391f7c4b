"""``np.linalg``: ``inv``, ``det``, ``slogdet``, ``solve``, ``cholesky``, ``eigh``, ``qr``, ``svd`` (LAPACK through
Numba in the compiled code), and ``norm``, ``multi_dot``, ``matrix_power`` built from other primitives.

Every primitive takes a matrix or a stack of them (``ndim > 2``: the leading axes are a batch, as in NumPy);
its kernel runs LAPACK on each matrix of the stack in a loop, and its rules are written with ``@`` on stacks
and with the last two axes swapped for the transpose (``_mT``), so one rule serves both.

The rules are the standard ones, written with traced operations (so they differentiate again):
``d inv(A) = -inv(A) dA inv(A)``, ``d log|det A| = tr(inv(A) dA)``, ``d solve(A, b) = solve(A, db - dA x)``;
for ``cholesky`` and ``eigh`` (which read the lower triangle of A, as LAPACK does) the rule of the symmetric
matrix ``dS`` the lower triangle of dA stands for: ``dL = L Phi(inv(L) dS inv(L)^T)`` (``Phi`` the lower
triangle with the diagonal halved), ``dw = diag(V^T dS V)``, ``dV = V (F * (V^T dS V))`` with
``F[i, j] = 1 / (w[j] - w[i])``; for ``qr`` (reduced) ``dQ = Q (Omega - B) + C``, ``dR = (B - Omega) R``
with ``C = dA inv(R)``, ``B = Q^T C`` and ``Omega`` the antisymmetric matrix of B's strictly lower triangle
(a wide matrix [X | Y]: Q and the left of R from X, ``Q^T Y`` for the rest); for ``svd`` (reduced)
``ds = diag(U^T dA V)`` and the formulas of ``_svd_jvp``, ``F[i, j] = 1 / (s[j]^2 - s[i]^2)``.

Repeated eigenvalues or singular values: the terms of ``F`` that would divide by zero are left out (taken
as 0), so the gradient is finite. It is right there for symmetric functions of the eigenvalues
(``np.sum(f(w))``) and for projectors onto whole eigenspaces; an individual eigenvector is no
differentiable function of the matrix there, and a matrix function ``V @ np.diag(f(w)) @ V.T`` misses its
term inside the eigenspace (``f'(w)`` times the tangent's block). Eigenvectors and singular vectors are
defined up to sign (LAPACK picks one): a loss should not depend on the sign (``v * v``, ``u[:, k] * vt[k]``),
else its gradient describes that choice of sign, which is no derivative.
"""
import numpy as np

from ..core import current_builder, numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .constants import ConstantArray, constant
from .linalg import dot
from .shapes import float_dtype
from .structural import broadcast_to, concatenate, reshape, transpose

# NumPy's result types (named tuples: ``np.linalg.eigh(a).eigenvectors``), found without private imports
_EighResult = type(np.linalg.eigh(np.eye(1)))
_QRResult = type(np.linalg.qr(np.eye(1)))
_SVDResult = type(np.linalg.svd(np.eye(1)))


def _matrices(name, a, square=True):
    """Check that ``a`` is a (square) matrix or a stack of them."""
    if a.ndim < 2:
        raise ShapeError(f"np.linalg.{name} of an array of shape {a.shape}: it takes a matrix or a stack of "
                         f"matrices (two dimensions or more)", user_source())
    if square and a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"np.linalg.{name} of an array of shape {a.shape}: the last two axes must be square",
                         user_source())
    return Aval(a.shape, float_dtype(a.dtype))


def _float_square(name, scalar=False):
    def shape(a):
        aval = _matrices(name, a)
        return Aval(a.shape[:-2], aval.dtype) if scalar else aval
    return shape


def _mT(x):
    """x with its last two axes swapped: the transpose of a matrix, of each matrix of a stack."""
    return transpose(x, perm=tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def _rows(x):
    """x[..., None, :]: a vector (of a stack) as a row, broadcasting down the columns."""
    return x if x.ndim == 1 else reshape(x, shape=x.shape[:-1] + (1, x.shape[-1]))


def _cols(x):
    """x[..., :, None]: a vector (of a stack) as a column."""
    return reshape(x, shape=x.shape + (1,))


def _per_matrix(x):
    """A value per matrix of a stack, x[..., None, None], to multiply the matrices with (a scalar as it is)."""
    return x if x.ndim == 0 else reshape(x, shape=x.shape + (1, 1))


def _matvec(a, x):
    """a @ x for a matrix and a vector, or for a stack of each (matmul would read a stack of vectors as a matrix)."""
    return a @ x if a.ndim == 2 else reshape(a @ _cols(x), shape=x.shape)


def _sum_matrices(x):
    from .reduce import reduce_sum
    return reduce_sum(x, axes=(x.ndim - 2, x.ndim - 1))


def _indices(n):
    """The row and column indices of an n x n matrix, shapes (n, 1) and (n,), as graph nodes (``np.arange(n)``
    in the code; a rule may not capture arrays): masks compare them."""
    builder = current_builder()
    k = builder.wrap(builder.add_node(constant, (), dict(value=ConstantArray(0, n, 1)), Aval((n,), np.dtype(np.int64))))
    return reshape(k, shape=(n, 1)), k


def _eye_mask(n):
    i, k = _indices(n)
    return i == k


def _diagonal_of(m):
    """The diagonal of a square matrix (of each of a stack)."""
    from .elementwise import where
    from .reduce import reduce_sum
    return reduce_sum(where(_eye_mask(m.shape[-1]), m, 0.0), axes=(m.ndim - 1,))


def _diagonal_matrix(x):
    """The diagonal matrix of a vector (of each of a stack)."""
    from .elementwise import where
    return where(_eye_mask(x.shape[-1]), _rows(x), 0.0)


def _safe_inverse(x):
    """1 / x, with 0 where x is 0 (and no inf for a second derivative to meet)."""
    from .elementwise import where
    zero = x == 0.0
    return where(zero, 0.0, 1.0 / where(zero, 1.0, x))


def _gaps_inverse(w):
    """F[..., i, j] = 1 / (w[j] - w[i]), 0 where they are equal (the diagonal, repeated values)."""
    return _safe_inverse(_rows(w) - _cols(w))


def _masks(n):
    """(strictly lower, diagonal) boolean masks of an n x n matrix."""
    i, k = _indices(n)
    return i > k, i == k


def _phi(x, strict, diagonal):
    """The lower triangle of x with its diagonal halved."""
    from .elementwise import where
    return where(strict, x, where(diagonal, 0.5 * x, 0.0))


def _onto_lower(x):
    """The gradient with respect to the lower triangle of A, from ``x``, the gradient with respect to the
    symmetric matrix that triangle stands for (cholesky and eigh read only the lower triangle)."""
    from .elementwise import where
    strict, diagonal = _masks(x.shape[-1])
    s = 0.5 * (x + _mT(x))
    return where(strict, 2.0 * s, where(diagonal, s, 0.0))


def _from_lower(t):
    """The symmetric matrix the lower triangle of ``t`` stands for."""
    from .elementwise import where
    strict, diagonal = _masks(t.shape[-1])
    low = where(strict, t, 0.0)
    return low + _mT(low) + where(diagonal, t, 0.0)


def _float(a):
    from .manipulation import array
    a = array(a)
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def _results(name):
    """The emit of a primitive of several results: ``w, v = eigh(a)``."""
    return staticmethod(lambda args, out: [f"{{out}} = {name}({', '.join(args)})"])


def _each(name):
    """The emit of a primitive with one number per matrix: ``det(a)`` of a matrix, ``det_each(a)`` of a stack."""
    return staticmethod(lambda args, out: f"{name}({args[0]})" if not out.shape else f"{name}_each({args[0]})")


# ---------------------------------------------------------------- the kernels: LAPACK on each matrix of a stack
# A matrix holding a NaN or an inf gives NaNs, as NumPy's inv, det and solve do (Numba's LAPACK calls raise,
# NumPy's eigh and svd may fail to converge): the check is O(n^2) beside the O(n^3) factorization.


def _finite_or_nan(decompose, a):
    """``decompose(a)``'s results (a tuple), NaN for each matrix of the stack that holds a NaN or an inf."""
    bad = ~np.isfinite(a).all(axis=(-2, -1))
    results = tuple(decompose(np.where(bad[..., None, None], 0.0, a).astype(a.dtype)))
    if not bad.any():
        return results
    return tuple(np.where(bad.reshape(bad.shape + (1,) * (r.ndim - bad.ndim)), np.nan, r).astype(r.dtype)
                 for r in results)


def _inv_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    out = np.empty_like(stack)
    for k in range(stack.shape[0]):
        if np.isfinite(stack[k]).all():
            out[k] = np.linalg.inv(stack[k])
        else:
            out[k] = np.nan
    return out.reshape(a.shape)


def _cholesky_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    out = np.empty_like(stack)
    for k in range(stack.shape[0]):
        out[k] = np.linalg.cholesky(stack[k])
    return out.reshape(a.shape)


def _solve_kernel(a, b):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    rhs = np.ascontiguousarray(b).reshape((stack.shape[0], n, -1))
    out = np.empty_like(rhs)
    for k in range(stack.shape[0]):
        if np.isfinite(stack[k]).all() and np.isfinite(rhs[k]).all():
            out[k] = np.linalg.solve(stack[k], rhs[k])
        else:
            out[k] = np.nan
    return out.reshape(b.shape)


def _det_kernel(a):
    m = np.ascontiguousarray(a)
    out = np.empty(1, a.dtype)  # (NaN in the matrix's dtype)
    out[0] = np.linalg.det(m) if np.isfinite(m).all() else np.nan
    return out[0]


def _det_each_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    out = np.empty(stack.shape[0], a.dtype)
    for k in range(stack.shape[0]):
        out[k] = np.linalg.det(stack[k]) if np.isfinite(stack[k]).all() else np.nan
    return out.reshape(a.shape[:-2])


def _logabsdet_kernel(a):
    m = np.ascontiguousarray(a)
    out = np.empty(1, a.dtype)  # (NaN in the matrix's dtype)
    out[0] = np.linalg.slogdet(m)[1] if np.isfinite(m).all() else np.nan
    return out[0]


def _logabsdet_each_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    out = np.empty(stack.shape[0], a.dtype)
    for k in range(stack.shape[0]):
        out[k] = np.linalg.slogdet(stack[k])[1] if np.isfinite(stack[k]).all() else np.nan
    return out.reshape(a.shape[:-2])


def _sign_of_det_kernel(a):
    m = np.ascontiguousarray(a)
    out = np.empty(1, a.dtype)  # (NaN in the matrix's dtype)
    out[0] = np.linalg.slogdet(m)[0] if np.isfinite(m).all() else np.nan
    return out[0]


def _sign_of_det_each_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    out = np.empty(stack.shape[0], a.dtype)
    for k in range(stack.shape[0]):
        out[k] = np.linalg.slogdet(stack[k])[0] if np.isfinite(stack[k]).all() else np.nan
    return out.reshape(a.shape[:-2])


def _eigh_kernel(a):
    n = a.shape[-1]
    stack = np.ascontiguousarray(a).reshape((-1, n, n))
    w = np.empty((stack.shape[0], n), a.dtype)
    v = np.empty_like(stack)
    for k in range(stack.shape[0]):
        if np.isfinite(stack[k]).all():
            values, vectors = np.linalg.eigh(stack[k])
            w[k] = values
            v[k] = vectors
        else:
            w[k] = np.nan
            v[k] = np.nan
    return w.reshape(a.shape[:-1]), v.reshape(a.shape)


def _qr_kernel(a):
    m, n = a.shape[-2], a.shape[-1]
    k = min(m, n)
    stack = np.ascontiguousarray(a).reshape((-1, m, n))
    q = np.empty((stack.shape[0], m, k), a.dtype)
    r = np.empty((stack.shape[0], k, n), a.dtype)
    for i in range(stack.shape[0]):
        if np.isfinite(stack[i]).all():
            qi, ri = np.linalg.qr(stack[i])
            q[i] = qi
            r[i] = ri
        else:
            q[i] = np.nan
            r[i] = np.nan
    return q.reshape(a.shape[:-2] + (m, k)), r.reshape(a.shape[:-2] + (k, n))


def _svd_kernel(a):
    m, n = a.shape[-2], a.shape[-1]
    k = min(m, n)
    stack = np.ascontiguousarray(a).reshape((-1, m, n))
    u = np.empty((stack.shape[0], m, k), a.dtype)
    s = np.empty((stack.shape[0], k), a.dtype)
    vt = np.empty((stack.shape[0], k, n), a.dtype)
    for i in range(stack.shape[0]):
        if np.isfinite(stack[i]).all():
            ui, si, vti = np.linalg.svd(stack[i], full_matrices=False)
            u[i] = ui
            s[i] = si
            vt[i] = vti
        else:
            u[i] = np.nan
            s[i] = np.nan
            vt[i] = np.nan
    return u.reshape(a.shape[:-2] + (m, k)), s.reshape(a.shape[:-2] + (k,)), vt.reshape(a.shape[:-2] + (k, n))


# ---------------------------------------------------------------- inverse, determinant, solve, cholesky


@primitive
class inv:
    """the inverse of a square matrix (of each matrix of a stack)"""
    backward = "`-(out.T @ g @ out.T)`, each matrix of a stack"
    shape = _float_square("inv")
    emit = "inv({a})"
    kernel = {"inv": _inv_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.linalg.inv(a)

    def vjp(g, out, a):
        return [-(_mT(out) @ g @ _mT(out))]

    def jvp(tangents, out, a):
        return -(out @ tangents[0] @ out)


@primitive
class det:
    """the determinant of a square matrix (of each matrix of a stack)"""
    backward = "`g * out * inv(a).T`"
    shape = _float_square("det", scalar=True)
    emit = _each("det")
    kernel = {"det": _det_kernel, "det_each": _det_each_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.asarray(np.linalg.det(a))[()]

    def vjp(g, out, a):
        return [_per_matrix(g * out) * _mT(inv(a))]

    def jvp(tangents, out, a):
        return out * _sum_matrices(_mT(inv(a)) * tangents[0])


@primitive
class logabsdet:
    """log |det a|, the second result of ``np.linalg.slogdet``"""
    backward = "`g * inv(a).T`"
    shape = _float_square("slogdet", scalar=True)
    emit = _each("logabsdet")
    kernel = {"logabsdet": _logabsdet_kernel, "logabsdet_each": _logabsdet_each_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.asarray(np.linalg.slogdet(a)[1])[()]

    def vjp(g, out, a):
        return [_per_matrix(g) * _mT(inv(a))]

    def jvp(tangents, out, a):
        return _sum_matrices(_mT(inv(a)) * tangents[0])


@primitive
class sign_of_det:
    """the sign of det a (-1, 0 or 1), the first result of ``np.linalg.slogdet``"""
    shape = _float_square("slogdet", scalar=True)
    emit = _each("sign_of_det")
    kernel = {"sign_of_det": _sign_of_det_kernel, "sign_of_det_each": _sign_of_det_each_kernel}
    cast_inputs = (0,)
    nondiff = True

    def ref(a):  # (NaN for a matrix holding a NaN or an inf, as the kernel gives; NumPy's sign there is 1)
        sign = np.where(np.isfinite(a).all(axis=(-2, -1)), np.linalg.slogdet(a)[0], np.nan).astype(a.dtype)
        return np.asarray(sign)[()]


def _solve_shape(a, b):
    aval = _matrices("solve", a)
    batch, n = a.shape[:-2], a.shape[-1]
    if b.shape != batch + (n,) and (b.ndim != a.ndim or b.shape[:-1] != batch + (n,)):
        raise ShapeError(f"np.linalg.solve: a right-hand side of shape {b.shape} for matrices of shape {a.shape}",
                         user_source())
    return Aval(b.shape, float_dtype(np.result_type(aval.dtype, b.dtype)))


def _vectors(a, b):
    """Whether solve's right-hand side is a vector per matrix (else a matrix per matrix)."""
    return b.ndim == a.ndim - 1


@primitive
class solve:
    """x with a @ x = b, for a square matrix a and a vector or matrix b (a stack of each)"""
    shape = _solve_shape
    emit = "solve({a}, {b})"
    kernel = {"solve": _solve_kernel}
    cast_inputs = (0, 1)

    def ref(a, b):
        if _vectors(a, b) and a.ndim > 2:  # NumPy 2 reads a stack of vectors as matrices
            return np.linalg.solve(a, b[..., None])[..., 0]
        return np.linalg.solve(a, b)

    def vjp(g, out, a, b):
        gb = solve(_mT(a), g)
        ga = -(_cols(gb) * _rows(out) if _vectors(a, b) else gb @ _mT(out))
        return [ga, gb]

    def jvp(tangents, out, a, b):
        tan_a, tan_b = tangents
        if tan_a is None:
            return solve(a, tan_b)
        moved = _matvec(tan_a, out) if _vectors(a, b) else tan_a @ out
        return solve(a, -moved if tan_b is None else tan_b - moved)


@primitive
class cholesky:
    """the lower-triangular L with L @ L.T = a, from the lower triangle of a (as LAPACK reads it); of each
    matrix of a stack"""
    shape = _float_square("cholesky")
    emit = "cholesky({a})"
    kernel = {"cholesky": _cholesky_kernel}
    cast_inputs = (0,)

    def ref(a):
        return np.linalg.cholesky(a)

    def vjp(g, out, a):
        strict, diagonal = _masks(a.shape[-1])
        li = inv(out)
        return [_onto_lower(_mT(li) @ _phi(_mT(out) @ g, strict, diagonal) @ li)]

    def jvp(tangents, out, a):
        strict, diagonal = _masks(a.shape[-1])
        li = inv(out)
        return out @ _phi(li @ _from_lower(tangents[0]) @ _mT(li), strict, diagonal)


# ---------------------------------------------------------------- eigh, qr, svd


def _eigh_shape(a):
    aval = _matrices("eigh", a)
    return Aval(a.shape[:-1], aval.dtype), aval


@primitive
class eigh:
    """the eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix, from its lower triangle
    (as LAPACK reads it); of each matrix of a stack"""
    usage = "`np.linalg.eigh`, `np.linalg.eigvalsh` (`w, v = eigh(a)`)"
    backward = ("`V (diag(g_w) + F * (V.T g_V)) V.T` onto the lower triangle, `F[i, j] = 1 / (w[j] - w[i])` "
                "(0 where equal)")
    shape = _eigh_shape
    emit = _results("eigh")
    kernel = {"eigh": _eigh_kernel}
    multiple_results = True  # (its NumPy function converts integers: cast_inputs is for one result)

    def ref(a):
        return _finite_or_nan(np.linalg.eigh, a)

    def vjp(gs, outs, a):
        g_w, g_v = gs
        w, v = outs
        middle = None if g_w is None else _diagonal_matrix(g_w)
        if g_v is not None:
            mixing = _gaps_inverse(w) * (_mT(v) @ g_v)
            middle = mixing if middle is None else middle + mixing
        return [_onto_lower(v @ middle @ _mT(v))]

    def jvp(tangents, outs, a):
        w, v = outs
        m = _mT(v) @ _from_lower(tangents[0]) @ v
        return [_diagonal_of(m), v @ (_gaps_inverse(w) * m)]


def _qr_shape(a):
    aval = _matrices("qr", a, square=False)
    m, n = a.shape[-2:]
    k = min(m, n)
    return Aval(a.shape[:-2] + (m, k), aval.dtype), Aval(a.shape[:-2] + (k, n), aval.dtype)


def _left(x, m):
    """x[..., :m], the first m columns."""
    return x[..., :m]


def _right(x, m):
    return x[..., m:]


def _qr_square_vjp(q, r, g_q, g_r):
    """The gradient of A = Q R (m >= n, R square) from those of Q and R: (g_Q + Q N) inv(R)^T, N the
    symmetric matrix of the upper triangle of M = R g_R^T - Q^T g_Q."""
    from .elementwise import where
    parts = ([] if g_r is None else [g_r @ _mT(r)]) + ([] if g_q is None else [-(_mT(q) @ g_q)])
    m = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    i, k = _indices(m.shape[-1])
    x = q @ where(i <= k, m, _mT(m))
    if g_q is not None:
        x = g_q + x
    return _mT(solve(r, _mT(x)))


def _qr_square_jvp(q, r, t):
    """The tangents of Q and R (m >= n, R square) from that of A."""
    from .elementwise import where
    c = _mT(solve(_mT(r), _mT(t)))  # dA inv(R)
    b = _mT(q) @ c
    low = where(_masks(b.shape[-1])[0], b, 0.0)
    omega = low - _mT(low)
    return q @ (omega - b) + c, (b - omega) @ r


@primitive
class qr:
    """the reduced QR decomposition: Q (orthonormal columns) and R (upper triangular) with a = Q @ R; of each
    matrix of a stack"""
    usage = "`np.linalg.qr` (mode `'reduced'`, `'r'`; `q, r = qr(a)`)"
    backward = "`(g_Q + Q N) inv(R).T`, `N` the symmetric matrix of the upper triangle of `R g_R.T - Q.T g_Q`"
    shape = _qr_shape
    emit = _results("qr")
    kernel = {"qr": _qr_kernel}
    multiple_results = True  # (its NumPy function converts integers: cast_inputs is for one result)

    def ref(a):
        return _finite_or_nan(np.linalg.qr, a)

    def vjp(gs, outs, a):
        g_q, g_r = gs
        q, r = outs
        m, n = a.shape[-2:]
        if m >= n:
            return [_qr_square_vjp(q, r, g_q, g_r)]
        # a wide matrix [X | Y]: Q, R[:, :m] = qr(X), and R[:, m:] = Q^T Y
        g_right = None if g_r is None else _right(g_r, m)
        if g_right is not None:
            moved = _right(a, m) @ _mT(g_right)
            g_q = moved if g_q is None else g_q + moved
        g_x = _qr_square_vjp(q, _left(r, m), g_q, None if g_r is None else _left(g_r, m))
        g_y = q @ g_right if g_right is not None else 0.0 * _right(a, m)
        return [concatenate(g_x, g_y, axis=a.ndim - 1)]

    def jvp(tangents, outs, a):
        q, r = outs
        t = tangents[0]
        m, n = a.shape[-2:]
        if m >= n:
            return list(_qr_square_jvp(q, r, t))
        tan_q, tan_x = _qr_square_jvp(q, _left(r, m), _left(t, m))
        tan_y = _mT(tan_q) @ _right(a, m) + _mT(q) @ _right(t, m)
        return [tan_q, concatenate(tan_x, tan_y, axis=a.ndim - 1)]


def _svd_shape(a):
    aval = _matrices("svd", a, square=False)
    m, n = a.shape[-2:]
    k = min(m, n)
    batch = a.shape[:-2]
    return Aval(batch + (m, k), aval.dtype), Aval(batch + (k,), aval.dtype), Aval(batch + (k, n), aval.dtype)


@primitive
class svd:
    """the reduced singular value decomposition: U, s (descending), Vt with a = U @ diag(s) @ Vt; of each
    matrix of a stack"""
    usage = "`np.linalg.svd` (`full_matrices=False`, or a square matrix; `u, s, vt = svd(a)`), `np.linalg.norm(x, 2)`"
    backward = ("`U (diag(g_s) + (J + J.T) S + S (K + K.T)) Vt` (`J = F * (U.T g_U)`, `K = F * (V.T g_V)`, "
                "`F[i, j] = 1 / (s[j]**2 - s[i]**2)`, 0 where equal), and the parts outside U's or V's span")
    shape = _svd_shape
    emit = _results("svd")
    kernel = {"svd": _svd_kernel}
    multiple_results = True  # (its NumPy function converts integers: cast_inputs is for one result)

    def ref(a):
        return _finite_or_nan(lambda a: np.linalg.svd(a, full_matrices=False), a)

    def vjp(gs, outs, a):
        g_u, g_s, g_vt = gs
        u, s, vt = outs
        m, n = a.shape[-2:]
        v = _mT(vt)
        f = _gaps_inverse(s * s)
        parts = [] if g_s is None else [_diagonal_matrix(g_s)]
        if g_u is not None:
            j = f * (_mT(u) @ g_u)
            parts.append((j + _mT(j)) * _rows(s))
        if g_vt is not None:
            g_v = _mT(g_vt)
            k = f * (_mT(v) @ g_v)
            parts.append(_cols(s) * (k + _mT(k)))
        middle = parts[0]
        for part in parts[1:]:
            middle = middle + part
        g_a = u @ middle @ vt
        if m > n and g_u is not None:  # the part of g_U outside U's span
            g_a = g_a + ((g_u - u @ (_mT(u) @ g_u)) * _rows(_safe_inverse(s))) @ vt
        if n > m and g_vt is not None:
            g_a = g_a + u @ _mT((g_v - v @ (_mT(v) @ g_v)) * _rows(_safe_inverse(s)))
        return [g_a]

    def jvp(tangents, outs, a):
        u, s, vt = outs
        t = tangents[0]
        m, n = a.shape[-2:]
        v = _mT(vt)
        d = _mT(u) @ t @ v
        f = _gaps_inverse(s * s)
        ds_s, s_ds = d * _rows(s), _cols(s) * d  # dS diag(s), diag(s) dS
        tan_u = u @ (f * (ds_s + _mT(ds_s)))
        tan_v = v @ (f * (s_ds + _mT(s_ds)))
        if m > n:
            moved = t @ v
            tan_u = tan_u + (moved - u @ (_mT(u) @ moved)) * _rows(_safe_inverse(s))
        if n > m:
            moved = _mT(t) @ u
            tan_v = tan_v + (moved - v @ (_mT(v) @ moved)) * _rows(_safe_inverse(s))
        return [tan_u, _diagonal_of(d), _mT(tan_v)]


# ---------------------------------------------------------------- the NumPy functions


for _prim, _fn in ((inv, np.linalg.inv), (det, np.linalg.det), (cholesky, np.linalg.cholesky)):
    numpy_function(_fn)(lambda a, *args, _prim=_prim, **kwargs: _prim(a, *args, **kwargs))


@numpy_function(np.linalg.slogdet)
def np_slogdet(a):
    return sign_of_det(a), logabsdet(a)


@numpy_function(np.linalg.solve)
def np_solve(a, b):
    """x with a @ x = b. As NumPy 2: a 1-d b is one vector for every matrix of a stack; otherwise b is a
    matrix (a stack of them), and the stacks' leading axes broadcast."""
    from .manipulation import array
    a, b = array(a), array(b)
    _matrices("solve", a)
    if b.ndim == 1:
        if a.ndim > 2:
            b = broadcast_to(b, shape=a.shape[:-2] + b.shape)
    elif b.ndim >= 2 and (a.ndim > 2 or b.ndim > 2):
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ShapeError(f"np.linalg.solve: the stacks of shapes {a.shape} and {b.shape} do not broadcast",
                             user_source()) from None
        if a.shape[:-2] != batch:
            a = broadcast_to(a, shape=batch + a.shape[-2:])
        if b.shape[:-2] != batch:
            b = broadcast_to(b, shape=batch + b.shape[-2:])
    return solve(a, b)


@numpy_function(np.linalg.eigh)
def np_eigh(a, UPLO="L"):
    """Eigenvalues and eigenvectors of a symmetric matrix, from the triangle ``UPLO`` names."""
    from .manipulation import array
    if UPLO not in ("L", "U"):
        raise ShapeError(f"np.linalg.eigh: UPLO={UPLO!r} (it is 'L' or 'U')", user_source())
    a = _float(a)
    _matrices("eigh", a)
    w, v = eigh(_mT(a) if UPLO == "U" else a)  # the upper triangle of a is the lower one of its transpose
    return _EighResult(w, v)


@numpy_function(np.linalg.eigvalsh)
def np_eigvalsh(a, UPLO="L"):
    return np_eigh(a, UPLO)[0]


@numpy_function(np.linalg.qr)
def np_qr(a, mode="reduced"):
    """The QR decomposition, modes ``'reduced'`` and ``'r'`` (``'complete'`` where it is the reduced one)."""
    from .manipulation import array
    a = _float(a)
    _matrices("qr", a, square=False)
    if mode == "complete" and a.shape[-2] <= a.shape[-1]:
        mode = "reduced"  # Q is square anyway
    if mode not in ("reduced", "r"):
        raise UnsupportedError(f"np.linalg.qr with mode={mode!r} (only 'reduced' and 'r', or 'complete' of a "
                               f"matrix no taller than wide)", user_source(), "use mode='reduced'")
    q, r = qr(a)
    return r if mode == "r" else _QRResult(q, r)


@numpy_function(np.linalg.svd)
def np_svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """The singular value decomposition; ``full_matrices=True`` (NumPy's default) only where it is the
    reduced one: a square matrix, or ``compute_uv=False``."""
    from .manipulation import array
    a = _float(a)
    _matrices("svd", a, square=False)
    if hermitian:
        raise UnsupportedError("np.linalg.svd with hermitian=True", user_source(),
                               "use hermitian=False (the default), or np.linalg.eigh")
    if compute_uv and full_matrices and a.shape[-1] != a.shape[-2]:
        raise UnsupportedError(f"np.linalg.svd with full_matrices=True of a non-square matrix (shape {a.shape}): "
                               f"the added columns are any orthonormal completion, with no gradient",
                               user_source(), "pass full_matrices=False")
    u, s, vt = svd(a)
    return _SVDResult(u, s, vt) if compute_uv else s


if hasattr(np.linalg, "svdvals"):
    numpy_function(np.linalg.svdvals)(lambda x: np_svd(x, compute_uv=False))


@numpy_function(np.linalg.pinv)
def np_pinv(a, rcond=None, hermitian=False, **kwargs):
    """The pseudo-inverse ``V diag(1 / s) U^T`` from ``svd``, singular values at most ``rcond`` (or ``rtol``)
    times the largest taken as zero, as NumPy does. Its gradient holds while the rank does not change."""
    from . import reduce as r
    from .elementwise import where
    a = _float(a)
    _matrices("pinv", a, square=False)
    if hermitian:
        raise UnsupportedError("np.linalg.pinv with hermitian=True", user_source(), "use hermitian=False (the default)")
    rtol = kwargs.pop("rtol", None)
    if kwargs:
        raise UnsupportedError(f"np.linalg.pinv with {', '.join(kwargs)}=", user_source())
    cut = rcond if rcond is not None else rtol if rtol is not None else max(a.shape[-2:]) * np.finfo(a.dtype).eps
    u, s, vt = svd(a)
    kept = s > cut * r.max(s, axis=-1, keepdims=True)
    return _mT(vt) @ (_cols(where(kept, 1.0 / where(kept, s, 1.0), 0.0)) * _mT(u))


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
        eye = np_diag(filled((a.shape[-1],), 1.0, a.dtype))
        return eye if a.ndim == 2 else broadcast_to(eye, shape=a.shape)
    result = a
    for _ in range(n - 1):
        result = result @ a
    return result


def _matrix_norm_by_singular_values(x, ord, row, col, keepdims):
    from . import reduce as r
    moved = transpose(x, perm=tuple(d for d in range(x.ndim) if d not in (row, col)) + (row, col))
    s = np_svd(moved, compute_uv=False)
    out = r.max(s, axis=-1) if ord == 2 else r.min(s, axis=-1) if ord == -2 else r.sum(s, axis=-1)
    if keepdims:
        out = reshape(out, shape=tuple(1 if d in (row, col) else x.shape[d] for d in range(x.ndim)))
    return out


@numpy_function(np.linalg.norm)
def np_norm(x, ord=None, axis=None, keepdims=False):
    """Vector norms (ord None/2, 1, inf, -inf, p) and matrix norms ('fro', 'nuc', 1, -1, 2, -2, inf, -inf)."""
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
    if ord in (2, -2, "nuc"):
        return _matrix_norm_by_singular_values(x, ord, row, col, keepdims)
    if ord in (1, -1, np.inf, -np.inf):
        summed, over = (row, col) if ord in (1, -1) else (col, row)
        sums = r.sum(np.abs(x), axis=summed, keepdims=True)
        pick = r.max if ord in (1, np.inf) else r.min
        out = pick(sums, axis=over, keepdims=True)
        return out if keepdims else reshape(out, shape=tuple(d for i, d in enumerate(x.shape) if i not in (row, col)))
    raise ShapeError(f"np.linalg.norm: ord={ord!r} is not a matrix norm", user_source())
