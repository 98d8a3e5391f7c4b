"""Matrix products."""
import numpy as np

from ..core import NUMPY_FUNCTIONS, Infix, numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .structural import reshape


def _dot_shape(a, b):
    if a.ndim == 0 or b.ndim == 0 or a.ndim > 2 or b.ndim > 2:
        raise UnsupportedError(
            f"matrix product of shapes {a.shape} and {b.shape}: only vectors and matrices are supported",
            user_source(), "use * for products with scalars")
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(f"matrix product: cannot multiply shapes {a.shape} and {b.shape} "
                         f"({a.shape[-1]} != {b.shape[0]})", user_source())
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype.kind != "f":
        raise UnsupportedError(f"matrix product of {a} and {b}: only float32/float64", user_source(),
                               "convert with .astype(np.float64)")
    return Aval(a.shape[:-1] + b.shape[1:], dtype)


@primitive
class dot:
    """a @ b for vectors and matrices (BLAS in the compiled code)"""
    usage = "`a @ b`, `np.dot`, `np.matmul`"
    backward = "`g @ b.T`, `a.T @ g` (and the vector cases): never a Jacobian"
    shape = _dot_shape
    ref = np.matmul
    emit = Infix("@", 12)
    into = "np.dot({a}, {b}, {out})"
    cast_inputs = (0, 1)

    def vjp(g, out, a, b):
        if a.ndim == 2 and b.ndim == 2:
            return [g @ b.T, a.T @ g]
        if a.ndim == 2:  # matrix @ vector
            return [reshape(g, shape=(g.shape[0], 1)) * b, a.T @ g]
        if b.ndim == 2:  # vector @ matrix
            return [b @ g, reshape(a, shape=(a.shape[0], 1)) * g]
        return [g * b, g * a]  # vector @ vector

    def jvp(tangents, out, a, b):
        tan_a, tan_b = tangents
        if tan_b is None:
            return tan_a @ b
        return a @ tan_b if tan_a is None else tan_a @ b + a @ tan_b

    def batch(batched, a, b):
        """One product for the batch: batched vectors times a matrix (either side) are a matrix product."""
        if not batched[1]:  # a's examples times b
            if a.ndim == 2:
                return a @ b
            n, k, m = a.shape
            return reshape(reshape(a, shape=(n * k, m)) @ b, shape=(n, k) + tuple(b.shape[1:]))
        if not batched[0]:  # a times b's examples
            return b @ a.T if b.ndim == 2 else None  # (a matrix times a batch of matrices: a loop)
        from .contract import batched_dot

        n = a.shape[0]
        a3 = a if a.ndim == 3 else reshape(a, shape=(n, 1, a.shape[1]))
        b3 = b if b.ndim == 3 else reshape(b, shape=(n, b.shape[1], 1))
        return reshape(batched_dot(a3, b3), shape=(n,) + tuple(a.shape[1:-1]) + tuple(b.shape[2:]))


@numpy_function(np.dot)
def np_dot(a, b, out=None):
    if out is not None:
        raise UnsupportedError("np.dot with out=", user_source())
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return a * b
    if np.ndim(a) > 2 or np.ndim(b) > 2:  # a sum over the last axis of a and the second-to-last of b
        return NUMPY_FUNCTIONS[np.tensordot](a, b, axes=([-1], [max(np.ndim(b) - 2, 0)]))
    return dot(a, b)


@numpy_function(np.outer)
def np_outer(a, b, out=None):
    a, b = (x if hasattr(x, "var") else np.asarray(x) for x in (a, b))
    return reshape(a, shape=(a.size, 1)) * reshape(b, shape=(b.size,))
