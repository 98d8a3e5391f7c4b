"""Cumulative sums and products, sorting, arg-extrema, and the NumPy functions built on them (``prod``,
``sort``, ``diff``, ``any``, ``all``).

The primitives work along the last axis of a 1-d or 2-d array; the NumPy functions move the axis last and
fold the others into rows (``_rows``), so each kernel is one plain loop.
"""
import numpy as np

from ..core import numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .manipulation import array, moveaxis_
from .shapes import normalize_axes
from .structural import concatenate, gather, getitem, reshape


def _last_axis_shape(name, out_dtype=None):
    def shape(x):
        if x.ndim not in (1, 2):
            raise ShapeError(f"{name} works along the last axis of a 1-d or 2-d array, got {x.shape}", user_source())
        if x.shape[-1] == 0 and out_dtype is not None:
            raise UnsupportedError(f"{name} of an empty array", user_source())
        dtype = out_dtype or (x.dtype if x.dtype.kind in "fc" else np.dtype(np.int64))
        return Aval(x.shape, dtype) if out_dtype is None or name == "argsort" else Aval(x.shape[:-1], dtype)
    return shape


def _rows_emit(fn):
    """``cumsum(x)`` on a 1-d array, ``cumsum_each_row(x)`` on a 2-d one (the kernels' names)."""
    return lambda args, out: f"{fn}{'' if args[0].aval.ndim == 1 else '_each_row'}({args[0]})"


def _cumsum1(x):
    """running sums of a 1-d array (np.cumsum)."""
    out = np.empty(x.shape, x.dtype)
    for i in range(x.shape[0]):
        out[i] = x[i] if i == 0 else out[i - 1] + x[i]
    return out


def _cumsum2(x):
    """running sums along each row of a 2-d array (np.cumsum(x, axis=1))."""
    out = np.empty(x.shape, x.dtype)
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[r, i] = x[r, i] if i == 0 else out[r, i - 1] + x[r, i]
    return out


def _cumprod1(x):
    """running products of a 1-d array (np.cumprod)."""
    out = np.empty(x.shape, x.dtype)
    for i in range(x.shape[0]):
        out[i] = x[i] if i == 0 else out[i - 1] * x[i]
    return out


def _cumprod2(x):
    """running products along each row of a 2-d array (np.cumprod(x, axis=1))."""
    out = np.empty(x.shape, x.dtype)
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[r, i] = x[r, i] if i == 0 else out[r, i - 1] * x[r, i]
    return out


def _flip_last(x):
    return getitem(x, index=(slice(None),) * (x.ndim - 1) + (slice(None, None, -1),))


@primitive
class cumsum:
    """running sums along the last axis of a 1-d or 2-d array"""
    shape = _last_axis_shape("cumsum")
    emit = _rows_emit("cumsum")
    kernel = {"cumsum": _cumsum1, "cumsum_each_row": _cumsum2}
    cast_inputs = (0,)

    def ref(x):
        x = np.asarray(x)
        return np.cumsum(x, axis=-1, dtype=_last_axis_shape("cumsum")(Aval(x.shape, x.dtype)).dtype)

    def vjp(g, out, x):
        return [_flip_last(cumsum(_flip_last(g)))]  # each x[i] reaches every out[k], k >= i

    def jvp(tangents, out, x):
        return cumsum(tangents[0])


def _eye(n):
    """The identity (float64) as graph nodes: a rule may not capture arrays."""
    from .manipulation import filled, np_diag
    return np_diag(filled((n,), 1.0, np.float64))


def _upper(n):
    """The mask k >= i of an n x n array [i, k], as graph nodes."""
    return cumsum(_eye(n)) > 0.5


def _cumprod_pairs(x):
    """M[..., i, k] = prod over j <= k, j != i of x[..., j]: the running products with x[i] left out, by
    cumprod of x with its i-th entry replaced by 1, one row per i. No division, so zeros are exact."""
    from .elementwise import where
    n = x.shape[-1]
    rows = where(_eye(n) > 0.5, 1.0, reshape(x, shape=x.shape[:-1] + (1, n)))
    return _cumprod_last(rows)


def _cumprod_last(x):
    if x.ndim <= 2:
        return cumprod(x)
    return reshape(cumprod(reshape(x, shape=(int(np.prod(x.shape[:-1])), x.shape[-1]))), shape=x.shape)


@primitive
class cumprod:
    """running products along the last axis of a 1-d or 2-d array; the gradient is exact at zeros"""
    shape = _last_axis_shape("cumprod")
    emit = _rows_emit("cumprod")
    kernel = {"cumprod": _cumprod1, "cumprod_each_row": _cumprod2}
    cast_inputs = (0,)

    def ref(x):
        x = np.asarray(x)
        return np.cumprod(x, axis=-1, dtype=_last_axis_shape("cumprod")(Aval(x.shape, x.dtype)).dtype)

    def vjp(g, out, x):
        # d out[k] / d x[i] = M[i, k] for k >= i: grad x[i] = sum over k >= i of g[k] M[i, k]
        from .elementwise import where
        from .reduce import reduce_sum
        n = x.shape[-1]
        terms = where(_upper(n), _cumprod_pairs(x) * reshape(g, shape=g.shape[:-1] + (1, n)), 0.0)
        return [reduce_sum(terms, axes=(terms.ndim - 1,))]

    def jvp(tangents, out, x):
        from .elementwise import where
        from .reduce import reduce_sum
        n = x.shape[-1]
        t = tangents[0]
        terms = where(_upper(n), _cumprod_pairs(x) * reshape(t, shape=t.shape + (1,)), 0.0)
        return reduce_sum(terms, axes=(terms.ndim - 2,))


def _argsort1(x):
    """the indices that sort a 1-d array, stable (np.argsort(x, kind='stable'))."""
    return np.argsort(x, kind="mergesort")


def _argsort2(x):
    """the indices that sort each row of a 2-d array, stable."""
    out = np.empty(x.shape, np.int64)
    for r in range(x.shape[0]):
        out[r] = np.argsort(x[r], kind="mergesort")
    return out


@primitive
class argsort:
    """the indices that sort the last axis of a 1-d or 2-d array (stable: ties keep their order)"""
    shape = _last_axis_shape("argsort", np.dtype(np.int64))
    emit = _rows_emit("argsort")
    kernel = {"argsort": _argsort1, "argsort_each_row": _argsort2}
    nondiff = True

    def ref(x):
        return np.argsort(x, axis=-1, kind="stable").astype(np.int64)


def _argmax1(x):
    """the index of the first maximum of a 1-d array (a NaN counts as largest)."""
    best, at = x[0], 0
    for i in range(1, x.shape[0]):
        v = x[i]
        if (v > best or v != v) and best == best:
            best, at = v, i
    return at


def _argmax2(x):
    """the index of the first maximum of each row of a 2-d array (a NaN counts as largest)."""
    out = np.empty(x.shape[0], np.int64)
    for r in range(x.shape[0]):
        best, at = x[r, 0], 0
        for i in range(1, x.shape[1]):
            v = x[r, i]
            if (v > best or v != v) and best == best:
                best, at = v, i
        out[r] = at
    return out


def _argmin1(x):
    """the index of the first minimum of a 1-d array (a NaN counts as smallest)."""
    best, at = x[0], 0
    for i in range(1, x.shape[0]):
        v = x[i]
        if (v < best or v != v) and best == best:
            best, at = v, i
    return at


def _argmin2(x):
    """the index of the first minimum of each row of a 2-d array (a NaN counts as smallest)."""
    out = np.empty(x.shape[0], np.int64)
    for r in range(x.shape[0]):
        best, at = x[r, 0], 0
        for i in range(1, x.shape[1]):
            v = x[r, i]
            if (v < best or v != v) and best == best:
                best, at = v, i
        out[r] = at
    return out


def _arg_emit(fn):
    def emit(args, out):
        return f"{fn}{'' if args[0].aval.ndim == 1 else '_each_row'}({args[0]})"
    return emit


@primitive
class argmax:
    """the index of the first maximum along the last axis of a 1-d or 2-d array (a NaN counts as largest)"""
    shape = _last_axis_shape("argmax", np.dtype(np.int64))
    emit = _arg_emit("argmax")
    kernel = {"argmax": _argmax1, "argmax_each_row": _argmax2}
    nondiff = True

    def ref(x):
        return np.argmax(x, axis=-1).astype(np.int64)[()]


@primitive
class argmin:
    """the index of the first minimum along the last axis of a 1-d or 2-d array (a NaN counts as smallest)"""
    shape = _last_axis_shape("argmin", np.dtype(np.int64))
    emit = _arg_emit("argmin")
    kernel = {"argmin": _argmin1, "argmin_each_row": _argmin2}
    nondiff = True

    def ref(x):
        return np.argmin(x, axis=-1).astype(np.int64)[()]


# ---------------------------------------------------------------- the NumPy functions


def _rows(x, axis):
    """x with ``axis`` moved last and the other axes folded into rows: (2-d or 1-d array, how to undo)."""
    x = array(x)
    if axis is None:
        flat = reshape(x, shape=(x.size,))
        return flat, lambda y: y
    axis = normalize_axes(axis, x.ndim, "axis")[0]
    moved = moveaxis_(x, axis, -1) if axis != x.ndim - 1 else x
    lead = moved.shape[:-1]
    folded = moved if moved.ndim <= 2 else reshape(moved, shape=(int(np.prod(lead)), moved.shape[-1]))

    def undo(y, keep_last=True):
        if not keep_last:  # one value per row
            return reshape(y, shape=lead)
        y = reshape(y, shape=lead + (y.shape[-1],)) if folded is not moved else y
        return moveaxis_(y, -1, axis) if axis != x.ndim - 1 else y
    return folded, undo


def _cumulative(prim, a, axis, dtype, out, name):
    if out is not None:
        raise UnsupportedError(f"np.{name} with out=", user_source())
    a = array(a)
    if a.ndim == 0:
        a = reshape(a, shape=(1,))
    if dtype is not None:
        a = a.astype(dtype)
    folded, undo = _rows(a, axis)
    return undo(prim(folded))


@numpy_function(np.cumsum)
def np_cumsum(a, axis=None, dtype=None, out=None):
    return _cumulative(cumsum, a, axis, dtype, out, "cumsum")


@numpy_function(np.cumprod)
def np_cumprod(a, axis=None, dtype=None, out=None):
    return _cumulative(cumprod, a, axis, dtype, out, "cumprod")


@numpy_function(np.prod)
def np_prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    """The last running product: its gradient is exact at zeros (no division)."""
    if out is not None or where is not None:
        raise UnsupportedError("np.prod with out= or where=", user_source())
    a = array(a)
    if dtype is not None:
        a = a.astype(dtype)
    axes = normalize_axes(axis, a.ndim, "np.prod")
    kept = [i for i in range(a.ndim) if i not in axes]
    if not axes:
        result = a
    else:
        moved = moveaxis_(a, axes, tuple(range(a.ndim - len(axes), a.ndim))) if a.ndim else a
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        lead = tuple(a.shape[i] for i in kept)
        if n == 0:
            from .manipulation import filled
            result = filled(lead, 1, a.dtype if a.dtype.kind in "fc" else np.int64)
        else:
            rows = reshape(moved, shape=(int(np.prod(lead, dtype=np.int64)), n) if lead else (n,))
            last = getitem(cumprod(rows), index=(slice(None), -1) if lead else (-1,))
            result = reshape(last, shape=lead)
    if initial is not None:
        result = result * initial
    if keepdims:
        result = reshape(result, shape=tuple(1 if i in axes else d for i, d in enumerate(a.shape)))
    return result


@numpy_function(np.sort)
def np_sort(a, axis=-1, kind=None, order=None, stable=None):
    """The elements gathered in sorted order: the gradient goes back to where each came from."""
    if order is not None:
        raise UnsupportedError("np.sort with order=", user_source())
    a = array(a)
    folded, undo = _rows(a, axis)
    idx = argsort(folded)
    if folded.ndim == 1:
        return undo(gather(folded, idx))
    r, n = folded.shape
    flat = idx + (np.arange(r, dtype=np.int64) * n)[:, None]
    return undo(reshape(gather(reshape(folded, shape=(r * n,)), reshape(flat, shape=(r * n,))), shape=(r, n)))


@numpy_function(np.argsort)
def np_argsort(a, axis=-1, kind=None, order=None, stable=None):
    if order is not None:
        raise UnsupportedError("np.argsort with order=", user_source())
    folded, undo = _rows(a, axis)
    return undo(argsort(folded))


def _arg(prim, a, axis, out, keepdims, name):
    if out is not None:
        raise UnsupportedError(f"np.{name} with out=", user_source())
    a = array(a)
    folded, undo = _rows(a, axis)
    result = prim(folded)
    if axis is None:
        return reshape(result, shape=(1,) * a.ndim) if keepdims else result
    result = undo(reshape(result, shape=result.shape + (1,)), keep_last=False) if folded.ndim == 2 else result
    if keepdims:
        axis = normalize_axes(axis, a.ndim, name)[0]
        result = reshape(result, shape=a.shape[:axis] + (1,) + a.shape[axis + 1:])
    return result


@numpy_function(np.argmax)
def np_argmax(a, axis=None, out=None, keepdims=False):
    return _arg(argmax, a, axis, out, keepdims, "argmax")


@numpy_function(np.argmin)
def np_argmin(a, axis=None, out=None, keepdims=False):
    return _arg(argmin, a, axis, out, keepdims, "argmin")


@numpy_function(np.diff)
def np_diff(a, n=1, axis=-1, prepend=None, append=None):
    a = array(a)
    axis = normalize_axes(axis, a.ndim, "np.diff")[0]
    parts = [a]
    if prepend is not None:
        parts.insert(0, _along(prepend, a, axis))
    if append is not None:
        parts.append(_along(append, a, axis))
    if len(parts) > 1:
        a = concatenate(*parts, axis=axis)
    for _ in range(int(n)):
        m = a.shape[axis]
        a = getitem(a, index=(slice(None),) * axis + (slice(1, m),)) - \
            getitem(a, index=(slice(None),) * axis + (slice(0, m - 1),))
    return a


def _along(extra, a, axis):
    """``prepend``/``append`` of np.diff: a scalar broadcast to one slice along ``axis``."""
    from .structural import np_broadcast_to
    extra = array(extra)
    if extra.ndim == 0:
        extra = np_broadcast_to(extra, a.shape[:axis] + (1,) + a.shape[axis + 1:])
    return extra


@numpy_function(np.any)
def np_any(a, axis=None, out=None, keepdims=False, where=None):
    from .reduce import sum as np_sum
    return np_sum((array(a) != 0).astype(np.int64), axis=axis, keepdims=keepdims) > 0


@numpy_function(np.all)
def np_all(a, axis=None, out=None, keepdims=False, where=None):
    from .reduce import sum as np_sum
    return np_sum((array(a) == 0).astype(np.int64), axis=axis, keepdims=keepdims) == 0


@numpy_function(np.ptp)
def np_ptp(a, axis=None, out=None, keepdims=False):
    from .reduce import max as np_max, min as np_min
    return np_max(a, axis=axis, keepdims=keepdims) - np_min(a, axis=axis, keepdims=keepdims)
