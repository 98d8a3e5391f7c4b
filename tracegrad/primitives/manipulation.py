"""Array manipulation built from the structural primitives (``repeat``, ``tile``, the ``*stack`` family,
``split``, ``pad``, ``roll``, ``flip``, ``moveaxis``, ``diag``/``diagonal``/``trace``, ``tril``/``triu``,
``append``): plain functions over ``reshape``, ``transpose``, ``broadcast_to``, ``getitem``, ``gather`` and
``concatenate``, so their gradients need no rules of their own."""
import numpy as np

from ..core import TracedArray, current_builder, numpy_function
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .shapes import normalize_axes
from .structural import (broadcast_to, concatenate, full, gather, getitem, np_concatenate, np_ravel, reshape,
                         transpose)


def array(x):
    """A traced value as it is; anything else as a NumPy array."""
    return x if isinstance(x, TracedArray) else np.asarray(x)


def filled(shape, value, dtype):
    """An array of ``shape`` filled with ``value``, recorded in the current graph (``np.full``)."""
    builder = current_builder()
    aval = Aval(tuple(shape), np.dtype(dtype))
    value = aval.dtype.type(value).item()  # 0 in a float array is 0.0
    return builder.wrap(builder.add_node(full, (), dict(shape=aval.shape, value=value, dtype=aval.dtype), aval))


def _axis(axis, ndim, name):
    return normalize_axes(axis, ndim, name)[0]


def moveaxis_(x, source, destination):
    x = array(x)
    src = normalize_axes(source, x.ndim, "moveaxis") if np.ndim(source) == 0 else \
        tuple(int(a) % x.ndim for a in source)
    dst = (int(destination) % x.ndim,) if np.ndim(destination) == 0 else tuple(int(a) % x.ndim for a in destination)
    if len(src) != len(dst):
        raise ShapeError("moveaxis: source and destination need the same number of axes", user_source())
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, perm=tuple(order))


@numpy_function(np.moveaxis)
def np_moveaxis(a, source, destination):
    return moveaxis_(a, source, destination)


@numpy_function(np.swapaxes)
def np_swapaxes(a, axis1, axis2):
    a = array(a)
    perm = list(range(a.ndim))
    i, j = int(axis1) % a.ndim, int(axis2) % a.ndim
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm=tuple(perm))


@numpy_function(np.rollaxis)
def np_rollaxis(a, axis, start=0):
    a = array(a)
    axis, start = int(axis) % a.ndim, int(start) % (a.ndim + 1)
    return moveaxis_(a, axis, start - 1 if start > axis else start)


def take(x, indices, axis):
    """``np.take(x, indices, axis)`` for a constant 1-d integer array ``indices``."""
    x = moveaxis_(x, axis, 0) if axis else x
    out = gather(x, np.asarray(indices, np.int64))
    return moveaxis_(out, 0, axis) if axis else out


# ---------------------------------------------------------------- adding dimensions


def _atleast(x, ndim):
    x = array(x)
    if x.ndim >= ndim:
        return x
    shape = {(0, 1): (1,), (0, 2): (1, 1), (1, 2): (1,) + x.shape, (0, 3): (1, 1, 1),
             (1, 3): (1,) + x.shape + (1,), (2, 3): x.shape + (1,)}[(x.ndim, ndim)]
    return reshape(x, shape=shape)


def _atleast_fn(ndim):
    def atleast(*arys):
        out = [_atleast(a, ndim) for a in arys]
        return out[0] if len(out) == 1 else out
    atleast.__name__ = f"atleast_{ndim}d"
    return atleast


for _n, _fn in ((1, np.atleast_1d), (2, np.atleast_2d), (3, np.atleast_3d)):
    numpy_function(_fn)(_atleast_fn(_n))


# ---------------------------------------------------------------- joining


def _join(arrays, axis, name):
    arrays = list(arrays)
    if not arrays:
        raise ShapeError(f"{name} needs at least one array", user_source())
    return np_concatenate(arrays, axis=axis)


@numpy_function(np.vstack, np.row_stack) if hasattr(np, "row_stack") else numpy_function(np.vstack)
def np_vstack(tup, dtype=None, casting="same_kind"):
    return _join([_atleast(a, 2) for a in tup], 0, "vstack")


@numpy_function(np.hstack)
def np_hstack(tup, dtype=None, casting="same_kind"):
    arrays = [_atleast(a, 1) for a in tup]
    return _join(arrays, 0 if arrays and arrays[0].ndim == 1 else 1, "hstack")


@numpy_function(np.dstack)
def np_dstack(tup):
    return _join([_atleast(a, 3) for a in tup], 2, "dstack")


@numpy_function(np.column_stack)
def np_column_stack(tup):
    arrays = [array(a) for a in tup]
    return _join([reshape(a, shape=(a.size, 1)) if a.ndim < 2 else a for a in arrays], 1, "column_stack")


@numpy_function(np.append)
def np_append(arr, values, axis=None):
    if axis is None:
        return concatenate(np_ravel(array(arr)), np_ravel(array(values)), axis=0)
    return np_concatenate([arr, values], axis=axis)


# ---------------------------------------------------------------- splitting


def _slice_along(x, axis, start, stop):
    return getitem(x, index=(slice(None),) * axis + (slice(start, stop),))


def _split(ary, indices_or_sections, axis, name, equal):
    ary = array(ary)
    axis = _axis(axis, ary.ndim, name)
    n = ary.shape[axis]
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ShapeError(f"{name}: the number of sections must be larger than 0", user_source())
        if equal and n % sections:
            raise ShapeError(f"{name}: an axis of length {n} does not split into {sections} equal parts",
                             user_source(), "use np.array_split for unequal parts")
        each, extra = divmod(n, sections)
        sizes = [each + 1] * extra + [each] * (sections - extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    return [_slice_along(ary, axis, start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


@numpy_function(np.split)
def np_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, "np.split", True)


@numpy_function(np.array_split)
def np_array_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, "np.array_split", False)


for _fn, _ax, _min in ((np.hsplit, 1, 2), (np.vsplit, 0, 2), (np.dsplit, 2, 3)):
    def _make(fn=_fn, axis=_ax):
        def split(ary, indices_or_sections):
            ary = array(ary)
            return _split(ary, indices_or_sections, 0 if fn is np.hsplit and ary.ndim == 1 else axis,
                          f"np.{fn.__name__}", True)
        return split
    numpy_function(_fn)(_make())


# ---------------------------------------------------------------- repeating


@numpy_function(np.repeat)
def np_repeat(a, repeats, axis=None):
    a = array(a)
    if axis is None:
        a, axis = np_ravel(a), 0
    axis = _axis(axis, a.ndim, "np.repeat")
    if np.ndim(repeats) == 0 or np.size(repeats) == 1:
        r = int(np.reshape(repeats, -1)[0]) if np.ndim(repeats) else int(repeats)
        shape = a.shape[:axis + 1] + (1,) + a.shape[axis + 1:]
        wide = a.shape[:axis + 1] + (r,) + a.shape[axis + 1:]
        merged = a.shape[:axis] + (a.shape[axis] * r,) + a.shape[axis + 1:]
        return reshape(broadcast_to(reshape(a, shape=shape), shape=wide), shape=merged)
    return take(a, np.repeat(np.arange(a.shape[axis]), repeats), axis)


@numpy_function(np.tile)
def np_tile(A, reps):
    A = array(A)
    reps = (int(reps),) if np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    d = max(A.ndim, len(reps))
    shape = (1,) * (d - A.ndim) + A.shape
    reps = (1,) * (d - len(reps)) + reps
    spread = tuple(v for s in shape for v in (1, s))
    wide = tuple(v for r, s in zip(reps, shape) for v in (r, s))
    out = broadcast_to(reshape(A, shape=spread), shape=wide)
    return reshape(out, shape=tuple(r * s for r, s in zip(reps, shape)))


# ---------------------------------------------------------------- moving elements


def _flip_axes(m, axes):
    index = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(m.ndim))
    return getitem(m, index=index)


@numpy_function(np.flip)
def np_flip(m, axis=None):
    m = array(m)
    return _flip_axes(m, normalize_axes(axis, m.ndim, "np.flip"))


@numpy_function(np.fliplr)
def np_fliplr(m):
    m = array(m)
    if m.ndim < 2:
        raise ShapeError("np.fliplr needs an array of at least 2 dimensions", user_source())
    return _flip_axes(m, (1,))


@numpy_function(np.flipud)
def np_flipud(m):
    m = array(m)
    if m.ndim < 1:
        raise ShapeError("np.flipud needs an array of at least 1 dimension", user_source())
    return _flip_axes(m, (0,))


@numpy_function(np.roll)
def np_roll(a, shift, axis=None):
    a = array(a)
    if axis is None:
        return reshape(np_roll(np_ravel(a), shift, 0), shape=a.shape)
    shifts = (shift,) if np.ndim(shift) == 0 else tuple(shift)
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(axes) == 1:
        axes = axes * len(shifts)
    total = {}
    for s, ax in zip(shifts, axes):
        ax = _axis(ax, a.ndim, "np.roll")
        total[ax] = total.get(ax, 0) + int(s)
    for ax, s in total.items():
        s %= a.shape[ax] or 1
        if s:
            n = a.shape[ax]
            a = concatenate(_slice_along(a, ax, n - s, n), _slice_along(a, ax, 0, n - s), axis=ax)
    return a


@numpy_function(np.pad)
def np_pad(array_, pad_width, mode="constant", **kwargs):
    x = array(array_)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2) if np.ndim(pad_width) else
                             np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    if mode == "constant":
        values = np.broadcast_to(np.asarray(kwargs.pop("constant_values", 0)), (x.ndim, 2))
        if kwargs:
            raise UnsupportedError(f"np.pad: unsupported argument(s) {sorted(kwargs)}", user_source())
        for ax, ((before, after), (vb, va)) in enumerate(zip(widths.tolist(), values.tolist())):
            parts = []
            if before:
                parts.append(filled(x.shape[:ax] + (before,) + x.shape[ax + 1:], vb, x.dtype))
            parts.append(x)
            if after:
                parts.append(filled(x.shape[:ax] + (after,) + x.shape[ax + 1:], va, x.dtype))
            if len(parts) > 1:
                x = concatenate(*parts, axis=ax)
        return x
    if mode not in ("edge", "reflect", "symmetric", "wrap") or kwargs:
        raise UnsupportedError(f"np.pad with mode={mode!r}" + (f" and {sorted(kwargs)}" if kwargs else ""),
                               user_source(), "modes 'constant', 'edge', 'reflect', 'symmetric' and 'wrap' trace")
    for ax, (before, after) in enumerate(widths.tolist()):
        if before or after:  # where each padded position reads from: NumPy pads the positions
            x = take(x, np.pad(np.arange(x.shape[ax]), (before, after), mode=mode), ax)
    return x


# ---------------------------------------------------------------- diagonals and triangles


def _diagonal(a, offset, axis1, axis2):
    """The diagonal of the two axes, as a last axis: read from the flattened pair with a step of m + 1."""
    a = moveaxis_(a, (axis1, axis2), (-2, -1))
    n, m = a.shape[-2:]
    lead = a.shape[:-2]
    if offset >= 0:
        start, count = offset, max(0, min(n, m - offset))
    else:
        start, count = -offset * m, max(0, min(n + offset, m))
    flat = reshape(a, shape=lead + (n * m,))
    if count == 0:
        return getitem(flat, index=(slice(None),) * len(lead) + (slice(0, 0),))
    stop = start + (m + 1) * (count - 1) + 1
    return getitem(flat, index=(slice(None),) * len(lead) + (slice(start, stop, m + 1),))


@numpy_function(np.diagonal)
def np_diagonal(a, offset=0, axis1=0, axis2=1):
    a = array(a)
    if a.ndim < 2:
        raise ShapeError("np.diagonal needs an array of at least 2 dimensions", user_source())
    return _diagonal(a, int(offset), int(axis1) % a.ndim, int(axis2) % a.ndim)


@numpy_function(np.trace)
def np_trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    if dtype is not None or out is not None:
        raise UnsupportedError("np.trace with dtype= or out=", user_source())
    from .reduce import sum as np_sum
    return np_sum(np_diagonal(a, offset, axis1, axis2), axis=-1)


@numpy_function(np.diag)
def np_diag(v, k=0):
    v = array(v)
    k = int(k)
    if v.ndim == 2:
        return _diagonal(v, k, 0, 1)
    if v.ndim != 1:
        raise ShapeError("np.diag needs a 1-d or 2-d array", user_source())
    n = v.shape[0]
    # [v | zeros] of shape (n, n + 1), read flat: v[i] lands at i * (n + 1), the place of (i, i) in n x n
    wide = concatenate(reshape(v, shape=(n, 1)), filled((n, n), 0, v.dtype), axis=1)
    square = reshape(getitem(reshape(wide, shape=(n * (n + 1),)), index=(slice(0, n * n),)), shape=(n, n))
    if k == 0:
        return square
    return np_pad(square, ((0, k), (k, 0)) if k > 0 else ((-k, 0), (0, -k)))


@numpy_function(np.diagflat)
def np_diagflat(v, k=0):
    return np_diag(np_ravel(array(v)), k)


def _triangle(m, k, lower):
    from .elementwise import where
    m = array(m)
    if m.ndim < 2:
        raise ShapeError(f"np.{'tril' if lower else 'triu'} needs an array of at least 2 dimensions", user_source())
    n, c = m.shape[-2:]
    mask = np.tri(n, c, k, dtype=bool) if lower else ~np.tri(n, c, k - 1, dtype=bool)
    return where(mask, m, 0)


@numpy_function(np.tril)
def np_tril(m, k=0):
    return _triangle(m, int(k), True)


@numpy_function(np.triu)
def np_triu(m, k=0):
    return _triangle(m, int(k), False)


@numpy_function(np.rot90)
def np_rot90(m, k=1, axes=(0, 1)):
    m = array(m)
    a, b = (int(i) % m.ndim for i in axes)
    k = int(k) % 4
    if k == 0:
        return m
    if k == 2:
        return _flip_axes(m, (a, b))
    perm = list(range(m.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    swapped = transpose(m, perm=tuple(perm))
    return _flip_axes(swapped, (a,)) if k == 1 else _flip_axes(swapped, (b,))


@numpy_function(np.gradient)
def np_gradient(f, *varargs, axis=None, edge_order=1):
    """Central differences inside, one-sided at the ends (``edge_order=1``), with uniform spacings."""
    f = array(f)
    axes = normalize_axes(axis, f.ndim, "np.gradient")
    spacings = list(varargs) if varargs else [1.0]
    if len(spacings) == 1:
        spacings = spacings * len(axes)
    if edge_order != 1 or len(spacings) != len(axes) or any(np.ndim(h) for h in spacings):
        raise UnsupportedError("np.gradient with edge_order=2 or with coordinate arrays (uniform spacings only)",
                               user_source())
    out = []
    for ax, h in zip(axes, spacings):
        n = f.shape[ax]
        if n < 2:
            raise ShapeError(f"np.gradient needs at least 2 points along axis {ax}", user_source())
        first = (_slice_along(f, ax, 1, 2) - _slice_along(f, ax, 0, 1)) / h
        last = (_slice_along(f, ax, n - 1, n) - _slice_along(f, ax, n - 2, n - 1)) / h
        parts = [first]
        if n > 2:
            parts.append((_slice_along(f, ax, 2, n) - _slice_along(f, ax, 0, n - 2)) / (2.0 * h))
        parts.append(last)
        out.append(concatenate(*parts, axis=ax))
    return out[0] if len(out) == 1 else out
