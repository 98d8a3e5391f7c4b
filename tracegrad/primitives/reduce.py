"""Reductions over axes, and the NumPy functions built on them (sum, mean, max, min)."""
import dataclasses

import numpy as np

from ..core import numpy_function, primitive
from ..errors import UnsupportedError, user_source
from ..ir import Aval, Literal
from ..registry import KinkAt
from .elementwise import mul
from .shapes import normalize_axes
from .structural import broadcast_to, reshape, transpose


def _reduced_shape(x: Aval, axes) -> tuple:
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _keepdims_shape(shape, axes) -> tuple:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _sum_dtype(dtype: np.dtype) -> np.dtype:
    # as NumPy: bools and signed ints add up in int64, unsigned ints in uint64
    return dtype if dtype.kind in "fc" else np.dtype(np.uint64) if dtype.kind == "u" else \
        np.dtype(np.int64) if dtype.kind in "bi" else dtype


def _sum_shape(x, axes):
    return Aval(_reduced_shape(x, axes), _sum_dtype(x.dtype))


def _sum_emit(args, out, axes):
    if not out.shape:
        return f"np.sum({args[0]})"
    if args[0].aval.ndim == 2 and out.dtype.kind == "f":  # Numba's np.sum(x, axis=k) is 5x slower than a loop
        return f"sum_axis({args[0]}, {axes[0]})"
    expr = args[0]
    for axis in sorted(axes, reverse=True):  # Numba reduces one axis per call
        expr = f"np.sum({expr}, axis={axis})"
    return expr


def _sum_axis_kernel(x, axis):
    """np.sum(x, axis=axis) of a 2-d array, as plain loops (Numba's axis sum is slower)."""
    if axis == 0:
        out = x[0].copy()
        for i in range(1, x.shape[0]):
            out += x[i]
        return out
    out = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        out[i] = np.sum(x[i])
    return out


def _label(short):
    """A reduction's label: ``sum``, or ``sum axis 1`` when it keeps some axes."""
    def label(node):
        axes = node.params.get("axes", ())
        return short if len(axes) == node.inputs[0].aval.ndim else f"{short} axis {', '.join(map(str, axes))}"
    return label


def _sum_rewrite(node, producer):
    """The sum of a scalar broadcast to n elements is the scalar times n."""
    inner = producer(node.inputs[0])
    if inner is not None and inner.primitive is broadcast_to and inner.inputs[0].aval.shape == () \
            and node.out.aval.shape == ():
        count = Literal(inner.out.aval.size, node.out.aval.dtype)
        return dataclasses.replace(node, primitive=mul, inputs=(inner.inputs[0], count), params={})
    return None


@primitive
class reduce_sum:
    """sum over ``axes`` (a sorted tuple), dropping them"""
    usage = "`np.sum`, `x.sum()`, `np.mean` (a sum then a division)"
    backward = "`g` broadcast back over the summed axes"
    shape = _sum_shape
    emit = _sum_emit
    kernel = {"sum_axis": _sum_axis_kernel}
    accumulate_index = staticmethod(lambda loop, in_shape, out_shape, /, axes: [
        i for d, i in enumerate(loop) if d not in axes])
    rewrite = _sum_rewrite
    label = _label("sum")

    def ref(x, axes):
        x = np.asarray(x)
        return np.add.reduce(x, axis=axes, dtype=_sum_dtype(x.dtype))  # (np.sum, without its wrapper)

    def vjp(g, out, x, axes):
        if g.ndim:  # put the reduced axes back as size 1, then broadcast along them
            g = reshape(g, shape=_keepdims_shape(x.shape, axes))
        return [broadcast_to(g, shape=tuple(x.shape))]

    def jvp(tangents, out, x, axes):
        return reduce_sum(tangents[0], axes=axes)

    def batch(batched, x, axes):
        return reduce_sum(x, axes=tuple(a + 1 for a in axes))

    def simplify(x, axes):
        return x if not axes else None


def _chooser_shape(name):
    def shape(x, axes):
        if x.size == 0:
            raise UnsupportedError(f"{name} of an empty array", user_source())
        if len(axes) != x.ndim and x.ndim > 2:
            raise UnsupportedError(
                f"{name} over some axes of a {x.ndim}-d array (only full reductions or 2-d arrays)",
                user_source(), "reshape to 2-d first")
        return Aval(_reduced_shape(x, axes), x.dtype)
    return shape


def _chooser_emit(fn):
    def emit(args, out, axes):
        if not out.shape:
            return f"np.{fn}({args[0]})"
        return f"{fn}_axis({args[0]}, {axes[0]})"
    return emit


def _chooser_vjp(g, out, x, axes):
    # Ties share the gradient evenly: the midpoint of the subdifferential.
    kept = _keepdims_shape(x.shape, axes)
    hit = (x == reshape(out, shape=kept)).astype(x.dtype)
    count = reduce_sum(hit, axes=axes)
    return [hit * reshape(g / count, shape=kept)]


def _chooser_jvp(tangents, out, x, axes):
    # The mean of the tangents at the tied extrema: the transpose of the VJP's even share.
    hit = (x == reshape(out, shape=_keepdims_shape(x.shape, axes))).astype(x.dtype)
    return reduce_sum(hit * tangents[0], axes=axes) / reduce_sum(hit, axes=axes)


# Plain loops: Numba's np.max(x[i]) per row and np.maximum(out, x[i]) per column take 6x as long on the
# short rows of a softmax. `v != v` keeps a NaN, as np.max does.
def _max_axis_kernel(x, axis):
    """np.max(x, axis=axis) of a 2-d array, as plain loops."""
    n, m = x.shape
    if axis == 0:
        out = x[0].copy()
        for i in range(1, n):
            for j in range(m):
                v = x[i, j]
                if v > out[j] or v != v:
                    out[j] = v
        return out
    out = np.empty(n, x.dtype)
    for i in range(n):
        best = x[i, 0]
        for j in range(1, m):
            v = x[i, j]
            if v > best or v != v:
                best = v
        out[i] = best
    return out


def _min_axis_kernel(x, axis):
    """np.min(x, axis=axis) of a 2-d array, as plain loops."""
    n, m = x.shape
    if axis == 0:
        out = x[0].copy()
        for i in range(1, n):
            for j in range(m):
                v = x[i, j]
                if v < out[j] or v != v:
                    out[j] = v
        return out
    out = np.empty(n, x.dtype)
    for i in range(n):
        best = x[i, 0]
        for j in range(1, m):
            v = x[i, j]
            if v < best or v != v:
                best = v
        out[i] = best
    return out


def _extrema(x, extreme, axes):
    """A kink signature: where the extrema are (a tie breaks when the step moves one of them)."""
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return x == extreme.reshape(kept)


def _chooser_batch(prim, x, axes):
    """Over the example's axes: each example's whole array (flattened), or an axis of 1-d/2-d examples."""
    if len(axes) == x.ndim - 1:
        return prim(reshape(x, shape=(x.shape[0], x.size // x.shape[0])), axes=(1,))
    return prim(x, axes=tuple(a + 1 for a in axes)) if x.ndim <= 2 else None


@primitive
class reduce_max:
    """max over ``axes``; tied maxima share the gradient evenly"""
    usage = "`np.max`, `np.amax`, `x.max()`"
    backward = "`g` to the largest entries, shared evenly among ties"
    shape = _chooser_shape("max")
    emit = _chooser_emit("max")
    kernel = {"max_axis": _max_axis_kernel}
    label = _label("max")
    kink = KinkAt(lambda node: (node.inputs[0], node.out), _extrema, "np.max at tied maxima")
    vjp = _chooser_vjp
    jvp = _chooser_jvp

    def ref(x, axes):
        return np.max(x, axis=axes)

    def batch(batched, x, axes):
        return _chooser_batch(reduce_max, x, axes)


@primitive
class reduce_min:
    """min over ``axes``; tied minima share the gradient evenly"""
    usage = "`np.min`, `np.amin`, `x.min()`"
    backward = "`g` to the smallest entries, shared evenly among ties"
    shape = _chooser_shape("min")
    emit = _chooser_emit("min")
    kernel = {"min_axis": _min_axis_kernel}
    label = _label("min")
    kink = KinkAt(lambda node: (node.inputs[0], node.out), _extrema, "np.min at tied minima")
    vjp = _chooser_vjp
    jvp = _chooser_jvp

    def ref(x, axes):
        return np.min(x, axis=axes)

    def batch(batched, x, axes):
        return _chooser_batch(reduce_min, x, axes)


# ---------------------------------------------------------------- the NumPy functions


def _reduction(prim, x, axis, keepdims, name):
    x = _as_traced(x)
    axes = normalize_axes(axis, x.ndim, name)
    out = prim(x, axes=axes)
    return reshape(out, shape=_keepdims_shape(x.shape, axes)) if keepdims else out


def _as_traced(x):
    return x if hasattr(x, "var") else np.asarray(x)


def _no_extra(name, **kwargs):
    extra = {k: v for k, v in kwargs.items() if v is not None and v is not np._NoValue}
    if extra:
        raise UnsupportedError(f"np.{name}: unsupported argument(s) {sorted(extra)}", user_source())


@numpy_function(np.sum)
def sum(x, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    _no_extra("sum", dtype=dtype, out=out, initial=initial, where=where)
    return _reduction(reduce_sum, x, axis, keepdims, "sum")


@numpy_function(np.mean)
def mean(x, axis=None, dtype=None, out=None, keepdims=False, where=None):
    _no_extra("mean", dtype=dtype, out=out, where=where)
    x = _as_traced(x)
    axes = normalize_axes(axis, x.ndim, "mean")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return _reduction(reduce_sum, x, axis, keepdims, "mean") / count


def _choose(prim, x, axis, keepdims, name):
    """max or min over some axes of an array of any rank: the kept axes become rows of a 2-d array."""
    x = _as_traced(x)
    axes = normalize_axes(axis, x.ndim, name)
    if x.ndim <= 2 or len(axes) == x.ndim or not axes:
        return _reduction(prim, x, axis, keepdims, name)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    lead = tuple(x.shape[i] for i in kept)
    rows = reshape(transpose(x, perm=kept + axes), shape=(int(np.prod(lead)), int(np.prod([x.shape[a] for a in axes]))))
    out = reshape(prim(rows, axes=(1,)), shape=lead)
    return reshape(out, shape=_keepdims_shape(x.shape, axes)) if keepdims else out


@numpy_function(np.max, np.amax)
def max(x, axis=None, out=None, keepdims=False, initial=None, where=None):
    _no_extra("max", out=out, initial=initial, where=where)
    return _choose(reduce_max, x, axis, keepdims, "max")


@numpy_function(np.min, np.amin)
def min(x, axis=None, out=None, keepdims=False, initial=None, where=None):
    _no_extra("min", out=out, initial=initial, where=where)
    return _choose(reduce_min, x, axis, keepdims, "min")


@numpy_function(np.var)
def var(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None):
    _no_extra("var", dtype=dtype, out=out, where=where)
    centred = x - mean(x, axis=axis, keepdims=True)
    axes = normalize_axes(axis, np.ndim(x), "var")
    count = int(np.prod([np.shape(x)[a] for a in axes], dtype=np.int64))
    return sum(centred * centred, axis=axis, keepdims=keepdims) / (count - ddof)


@numpy_function(np.std)
def std(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, where=None):
    """The square root of ``var``. Where the variance is 0 (all values equal) std is a kink, the tip of a cone
    (it is a norm of the centred values): its gradient there is 0, the midpoint of its subdifferential (the unit
    ball), where sqrt's derivative would give inf * 0 = nan. (JAX gives nan, jax-ml/jax#11716; PyTorch gives
    0, pytorch/pytorch#4320.)"""
    v = var(x, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, where=where)
    flat = v == 0
    return np.where(flat, 0, np.sqrt(np.where(flat, 1, v)))
