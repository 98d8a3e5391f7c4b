"""Products of arrays of any rank: ``@``/``np.matmul`` on stacks of matrices (``batched_dot``), ``np.einsum``,
``np.tensordot``, ``np.inner``, ``np.kron``, ``np.cross``, ``np.vdot``.

Every contraction is brought to one matrix product: the operands are transposed to (batch, kept, summed)
and (batch, summed, kept) order, reshaped to 2-d or 3-d, multiplied by ``dot`` or ``batched_dot``
(BLAS in the compiled code) and reshaped back, so gradients come from those primitives' rules.
"""
import string

import numpy as np

from ..core import numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .linalg import dot
from .manipulation import _diagonal, array, moveaxis_
from .structural import broadcast_to, getitem, reshape, transpose


def _batched_shape(a, b):
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ShapeError(f"batched matrix product: cannot multiply stacks of shapes {a.shape} and {b.shape}",
                         user_source())
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype.kind != "f":
        raise UnsupportedError(f"matrix product of {a} and {b}: only float32/float64", user_source(),
                               "convert with .astype(np.float64)")
    return Aval((a.shape[0], a.shape[1], b.shape[2]), dtype)


def _batched_dot_kernel(a, b):
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    for i in range(a.shape[0]):
        out[i] = np.ascontiguousarray(a[i]) @ np.ascontiguousarray(b[i])
    return out


def _swap(x):
    return transpose(x, perm=(0, 2, 1))


@primitive
class batched_dot:
    """a[i] @ b[i] for each i: stacks of matrices of shapes (n, p, q) and (n, q, r)"""
    shape = _batched_shape
    emit = "batched_dot({a}, {b})"
    kernel = _batched_dot_kernel
    cast_inputs = (0, 1)

    def ref(a, b):
        return np.matmul(a, b)

    def vjp(g, out, a, b):
        return [batched_dot(g, _swap(b)), batched_dot(_swap(a), g)]

    def jvp(tangents, out, a, b):
        tan_a, tan_b = tangents
        if tan_b is None:
            return batched_dot(tan_a, b)
        return batched_dot(a, tan_b) if tan_a is None else batched_dot(tan_a, b) + batched_dot(a, tan_b)


# ---------------------------------------------------------------- matmul


def _size(shape):
    return int(np.prod(shape, dtype=np.int64))


@numpy_function(np.matmul)
def np_matmul(a, b, out=None, **kwargs):
    """``a @ b``: vectors and matrices by ``dot``; stacks of matrices (3-d and more, batch axes broadcast)
    by ``batched_dot``, or by one ``dot`` when the right operand is a single matrix."""
    if out is not None or kwargs:
        raise UnsupportedError("np.matmul with out= or other keywords", user_source())
    a, b = array(a), array(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: an operand is a scalar (use * for products with scalars)", user_source())
    if a.ndim <= 2 and b.ndim <= 2:
        return dot(a, b)
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, shape=(1,) + a.shape)
    if squeeze_b:
        b = reshape(b, shape=b.shape + (1,))
    n, k = a.shape[-2:]
    k2, m = b.shape[-2:]
    if k != k2:
        raise ShapeError(f"matmul: cannot multiply shapes {a.shape} and {b.shape} ({k} != {k2})", user_source())
    if b.ndim == 2:  # a stack times one matrix: one product of (batch * n, k) by (k, m)
        out = reshape(dot(reshape(a, shape=(_size(a.shape[:-1]), k)), b), shape=a.shape[:-1] + (m,))
    else:
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ShapeError(f"matmul: the batch axes of shapes {a.shape} and {b.shape} do not broadcast",
                             user_source()) from None
        a3 = reshape(broadcast_to(a, shape=batch + (n, k)), shape=(_size(batch), n, k))
        b3 = reshape(broadcast_to(b, shape=batch + (k, m)), shape=(_size(batch), k, m))
        out = reshape(batched_dot(a3, b3), shape=batch + (n, m))
    if squeeze_a:
        out = reshape(out, shape=out.shape[:-2] + out.shape[-1:])
    if squeeze_b:
        out = reshape(out, shape=out.shape[:-1])
    return out


# ---------------------------------------------------------------- einsum


def _parse(subscripts, operands):
    """([labels per operand], output labels), with ``...`` spelled as upper-case letters."""
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        inputs, output = subscripts.split("->")
    else:
        inputs, output = subscripts, None
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise ShapeError(f"einsum: {len(inputs)} operand subscripts for {len(operands)} operands", user_source())
    free = iter(c for c in string.ascii_uppercase + string.ascii_lowercase if c not in subscripts)
    ellipsis_width = max([np.ndim(op) - (len(s) - 3) for s, op in zip(inputs, operands) if "..." in s], default=0)
    spelled = "".join(next(free) for _ in range(ellipsis_width))
    labels = []
    for s, op in zip(inputs, operands):
        if "..." in s:
            width = np.ndim(op) - (len(s) - 3)
            s = s.replace("...", spelled[ellipsis_width - width:])
        if len(s) != np.ndim(op):
            raise ShapeError(f"einsum: subscripts {s!r} for an operand of shape {np.shape(op)}", user_source())
        labels.append(s)
    if output is None:
        counts = {c: sum(s.count(c) for s in labels) for c in set("".join(labels))}
        output = spelled + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in spelled))
    else:
        output = output.replace("...", spelled)
    if any(c not in "".join(labels) for c in output) or len(set(output)) != len(output):
        raise ShapeError(f"einsum: output subscripts {output!r} do not fit the inputs", user_source())
    return labels, output


def _take_diagonals(x, labels):
    """Repeated labels in one operand ('ii'): the diagonal, as a last axis."""
    while True:
        repeated = next((c for c in labels if labels.count(c) > 1), None)
        if repeated is None:
            return x, labels
        p = labels.index(repeated)
        q = labels.index(repeated, p + 1)
        x = _diagonal(x, 0, p, q)
        labels = "".join(c for i, c in enumerate(labels) if i not in (p, q)) + repeated


def _sum_out(x, labels, needed):
    from .reduce import reduce_sum
    axes = tuple(i for i, c in enumerate(labels) if c not in needed)
    if not axes:
        return x, labels
    return reduce_sum(x, axes=axes), "".join(c for c in labels if c in needed)


def _permute(x, labels, order):
    perm = tuple(labels.index(c) for c in order)
    return (transpose(x, perm=perm) if perm != tuple(range(len(perm))) else x), order


def _contract(a, la, b, lb, keep):
    """One product of two operands: labels in both and kept are batch axes, in both and not kept are summed."""
    a, la = _sum_out(a, la, set(lb) | keep)
    b, lb = _sum_out(b, lb, set(la) | keep)
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    a_only = [c for c in la if c not in lb]
    b_only = [c for c in lb if c not in la]
    size = {c: d for c, d in zip(la, a.shape)}
    for c, d in zip(lb, b.shape):
        if size.setdefault(c, d) != d:
            raise ShapeError(f"einsum: label {c!r} has sizes {size[c]} and {d}", user_source())
    a, _ = _permute(a, la, "".join(batch + a_only + summed))
    b, _ = _permute(b, lb, "".join(batch + summed + b_only))
    nb, na, nc, nk = (_size([size[c] for c in group]) for group in (batch, a_only, summed, b_only))
    if batch:
        out = batched_dot(reshape(a, shape=(nb, na, nc)), reshape(b, shape=(nb, nc, nk)))
    else:
        out = dot(reshape(a, shape=(na, nc)), reshape(b, shape=(nc, nk)))
    labels = "".join(batch + a_only + b_only)
    return reshape(out, shape=tuple(size[c] for c in labels)), labels


@numpy_function(np.einsum)
def np_einsum(subscripts, *operands, out=None, optimize=False, **kwargs):
    """``np.einsum`` by transposes, reshapes, sums and matrix products (left to right, two at a time)."""
    if out is not None or kwargs or not isinstance(subscripts, str):
        raise UnsupportedError("np.einsum with out=, dtype= or subscripts given as lists", user_source())
    operands = [array(op) for op in operands]
    labels, output = _parse(subscripts, operands)
    items = [_take_diagonals(op, ls) for op, ls in zip(operands, labels)]
    x, lx = items[0]
    for k, (y, ly) in enumerate(items[1:], start=1):
        later = set(output) | {c for _, ls in items[k + 1:] for c in ls}
        x, lx = _contract(x, lx, y, ly, later)
    x, lx = _sum_out(x, lx, set(output))
    x, _ = _permute(x, lx, output)
    return x


def _letters(n, start=0):
    return string.ascii_lowercase[start:start + n]


@numpy_function(np.tensordot)
def np_tensordot(a, b, axes=2):
    a, b = array(a), array(b)
    if np.ndim(axes) == 0:
        n = int(axes)
        axes_a, axes_b = list(range(a.ndim - n, a.ndim)), list(range(n))
    else:
        axes_a, axes_b = ([int(i)] if np.ndim(i) == 0 else [int(j) for j in i] for i in axes)
    axes_a = [i % a.ndim for i in axes_a]
    axes_b = [i % b.ndim for i in axes_b]
    la = _letters(a.ndim)
    lb = list(_letters(b.ndim, a.ndim))
    for i, j in zip(axes_a, axes_b):
        lb[j] = la[i]
    lb = "".join(lb)
    out = "".join(c for c in la if c not in lb) + "".join(c for c in lb if c not in la)
    return np_einsum(f"{la},{lb}->{out}", a, b)


@numpy_function(np.inner)
def np_inner(a, b):
    a, b = array(a), array(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return np_tensordot(a, b, axes=([-1], [-1]))


@numpy_function(np.vdot)
def np_vdot(a, b):
    from .structural import np_ravel
    return dot(np_ravel(array(a)), np_ravel(array(b)))


@numpy_function(np.kron)
def np_kron(a, b):
    a, b = array(a), array(b)
    nd = max(a.ndim, b.ndim)
    a = reshape(a, shape=(1,) * (nd - a.ndim) + a.shape)
    b = reshape(b, shape=(1,) * (nd - b.ndim) + b.shape)
    spread_a = reshape(a, shape=tuple(v for d in a.shape for v in (d, 1)))
    spread_b = reshape(b, shape=tuple(v for d in b.shape for v in (1, d)))
    return reshape(spread_a * spread_b, shape=tuple(p * q for p, q in zip(a.shape, b.shape)))


@numpy_function(np.cross)
def np_cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    from .structural import np_stack
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = moveaxis_(array(a), axisa, -1), moveaxis_(array(b), axisb, -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise ShapeError("np.cross needs vectors of 2 or 3 components", user_source())

    def part(x, i):
        return getitem(x, index=(slice(None),) * (x.ndim - 1) + (i,)) if i < x.shape[-1] else 0.0
    a0, a1, a2 = (part(a, i) for i in range(3))
    b0, b1, b2 = (part(b, i) for i in range(3))
    z = a0 * b1 - a1 * b0
    if a.shape[-1] == 2 and b.shape[-1] == 2:
        return z
    return moveaxis_(np_stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, z], axis=-1), -1, axisc)

