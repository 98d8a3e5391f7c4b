"""Primitives that move data without arithmetic: reshape, transpose, broadcast, indexing, concatenation."""
import dataclasses

import numpy as np

from ..core import (NUMPY_FUNCTIONS, PRIMITIVES, TracedArray, broadcast_subscripts, current_builder, numpy_function,
                    primitive)
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval, Var, literal_source
from ..notation import index_text, number_text


def _zeros(shape, dtype) -> str:
    dtype = np.dtype(dtype)
    return f"np.zeros({shape!r})" if dtype == np.float64 else f"np.zeros({shape!r}, np.{dtype.name})"


# ---------------------------------------------------------------- reshape, transpose, broadcast_to


def _reshape_shape(x, shape):
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"cannot reshape an array of shape {x.shape} into shape {shape}", user_source())
    return Aval(shape, x.dtype)


def _reshape_emit(args, out, shape):
    x = args[0]
    if not out.shape:
        return f"{x}.ravel()[0]"
    if not x.aval.shape:
        return f"np.full({shape!r}, {x})"
    return f"reshape({x}, {shape!r})"


def _reshape_kernel(x, shape):
    """x reshaped to shape in C order, whatever its layout (np.ascontiguousarray(x).reshape(shape))."""
    return np.ascontiguousarray(x).reshape(shape)


@primitive
class reshape:
    """the same elements in a new shape (C order)"""
    usage = "`x.reshape`, `np.reshape`, `np.ravel`, `np.expand_dims`, `np.squeeze`"
    backward = "`g` reshaped back"
    shape = _reshape_shape
    emit = _reshape_emit
    kernel = _reshape_kernel
    view = True

    def ref(x, shape):
        return np.reshape(x, shape)

    def vjp(g, out, x, shape):
        return [reshape(g, shape=tuple(x.shape))]

    def jvp(tangents, out, x, shape):
        return reshape(tangents[0], shape=shape)

    def batch(batched, x, shape):
        return reshape(x, shape=(x.shape[0],) + tuple(shape))

    def simplify(x, shape):
        return x if x.aval.shape == tuple(shape) else None

    def rewrite(node, producer):
        """reshape(reshape(x)) is one reshape of x, or x itself when back to its shape."""
        inner = producer(node.inputs[0])
        if inner is None or inner.primitive is not reshape or not isinstance(inner.inputs[0], Var):
            return None
        if inner.inputs[0].aval == node.out.aval:
            return inner.inputs[0]
        return dataclasses.replace(node, inputs=(inner.inputs[0],))

    def label(node):
        return f"reshape {node.params.get('shape')}"


def _transpose_emit(args, out, perm):
    return f"{args[0]}.T" if perm == (1, 0) else f"np.transpose({args[0]}, {perm!r})"


@primitive
class transpose:
    """axes permuted by ``perm``"""
    usage = "`x.T`, `np.transpose`"
    backward = "`g` transposed back"
    shape = staticmethod(lambda x, perm: Aval(tuple(x.shape[p] for p in perm), x.dtype))
    emit = _transpose_emit
    view = True

    def ref(x, perm):
        return np.transpose(x, perm)

    def vjp(g, out, x, perm):
        return [transpose(g, perm=tuple(int(i) for i in np.argsort(perm)))]

    def jvp(tangents, out, x, perm):
        return transpose(tangents[0], perm=perm)

    def batch(batched, x, perm):
        return transpose(x, perm=(0,) + tuple(p + 1 for p in perm))

    def simplify(x, perm):
        return x if perm == tuple(range(len(perm))) else None

    def label(node):
        perm = tuple(node.params.get("perm", ()))
        return ".T" if perm == tuple(reversed(range(len(perm)))) else f"transpose {perm}"


def _broadcast_shape(x, shape):
    try:
        np.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ShapeError(f"cannot broadcast shape {x.shape} to {shape}", user_source()) from None
    if np.broadcast_shapes(x.shape, shape) != tuple(shape):
        raise ShapeError(f"cannot broadcast shape {x.shape} to {shape}", user_source())
    return Aval(shape, x.dtype)


@primitive
class broadcast_to:
    """x repeated along new or size-1 axes to ``shape``"""
    usage = "`np.broadcast_to`, and broadcasting in any operation"
    backward = "`g` summed over the broadcast axes"
    shape = _broadcast_shape
    emit = "np.broadcast_to({x}, {shape})"
    view = True
    cheap = True  # in a loop it is a read: each loop reads its input rather than a stored broadcast
    broadcasts = True  # an elementwise node reading it can read its input: it broadcasts anyway
    label = staticmethod(lambda node: f"broadcast {node.params.get('shape')}")
    loop_index = staticmethod(lambda loop, out_shape, in_shape, /, shape: (
        broadcast_subscripts(loop, out_shape, in_shape), []))

    def ref(x, shape):
        return np.broadcast_to(x, shape)

    def vjp(g, out, x, shape):
        return [sum_to(g, np.shape(x))]

    def jvp(tangents, out, x, shape):
        return broadcast_to(tangents[0], shape=shape)

    def batch(batched, x, shape):  # (the example's dimensions aligned with the end of shape, as NumPy does)
        n = x.shape[0]
        x = reshape(x, shape=(n,) + (1,) * (len(shape) - x.ndim + 1) + tuple(x.shape[1:]))
        return broadcast_to(x, shape=(n,) + tuple(shape))

    def simplify(x, shape):
        return x if x.aval.shape == tuple(shape) else None


def sum_to(x, shape):
    """Undo broadcasting: sum ``x`` over the axes that broadcasting to its shape added or stretched."""
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1)
    return reshape(PRIMITIVES["reduce_sum"](x, axes=axes), shape=shape)


# ---------------------------------------------------------------- basic indexing and its transpose


def _format_index(index) -> str:
    parts = []
    for entry in index:
        if isinstance(entry, slice):
            start, stop, step = ("" if v is None else str(v) for v in (entry.start, entry.stop, entry.step))
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
        else:
            parts.append(repr(entry))
    return ", ".join(parts) if len(parts) != 1 or not parts else parts[0]


def _index_shape(x, index):
    return Aval(np.broadcast_to(np.empty((), x.dtype), x.shape)[index].shape, x.dtype)


@primitive
class getitem:
    """x[index] with ints, slices and None (basic indexing)"""
    usage = "`x[1:3]`, `x[0]`, `x[:, None]`, `x[..., 1]`"
    backward = "`place`: zeros with `g` written at the index"
    label = staticmethod(lambda node: index_text(node.params["index"]))
    shape = _index_shape
    emit = staticmethod(lambda args, out, index: f"{args[0]}[{_format_index(index)}]")
    view = True

    def ref(x, index):
        return np.asarray(x)[index]

    def vjp(g, out, x, index):
        return [place(g, shape=tuple(x.shape), index=index)]

    def jvp(tangents, out, x, index):
        return getitem(tangents[0], index=index)

    def batch(batched, x, index):
        return getitem(x, index=(slice(None),) + tuple(index))


def _place_loop_index(loop, out_shape, in_shape, /, shape, index):
    """Read inside a loop nest as ``(x[i0 - 1] if i0 >= 1 else 0.0)``: unit-step slices, ints and None only."""
    at, conditions, dims = [], [], iter(zip(loop, out_shape))
    for entry in index:
        if entry is None:  # an axis of size 1 that x has and the result does not
            at.append(0)
            continue
        i, n = next(dims)
        if isinstance(entry, slice):
            start, stop, step = entry.indices(n)
            if step != 1 or start >= stop:
                return None
            conditions += ([i >= start] if start > 0 else []) + ([i < stop] if stop < n else [])
            at.append(i - start)
        else:
            conditions.append(i == entry % n)
    return at + [i for i, _ in dims], conditions


def _place_accumulate_index(loop, in_shape, out_shape, /, shape, index):
    """Computed in a loop nest over x as ``out[i0 + 1] += x[i0]``: slices, ints and None."""
    at, loop, dims = [], iter(loop), iter(shape)
    for entry in index:
        if entry is None:  # an axis of size 1 that x has and the result does not
            next(loop)
            continue
        n = next(dims)
        if isinstance(entry, slice):
            start, _, step = entry.indices(n)
            i = next(loop)
            at.append(start - i if step == -1 else step * i + start)
        else:
            at.append(entry % n)
    return at + list(loop)


@primitive
class place:
    """zeros of ``shape`` with ``x`` written at ``index``: the transpose of getitem"""
    usage = "(the backward of `getitem`)"
    backward = "`getitem` of `g`"
    label = staticmethod(lambda node: f"place {index_text(node.params['index'])}")
    shape = staticmethod(lambda x, shape, index: Aval(shape, x.dtype))
    emit = staticmethod(lambda args, out, shape, index: [
        f"{{out}} = {_zeros(shape, out.dtype)}", f"{{out}}[{_format_index(index)}] = {args[0]}"])
    loop_index = _place_loop_index
    accumulate_index = _place_accumulate_index

    def ref(x, shape, index):
        out = np.zeros(shape, np.asarray(x).dtype)
        out[index] = x
        return out

    def vjp(g, out, x, shape, index):
        return [getitem(g, index=index)]

    def jvp(tangents, out, x, shape, index):
        return place(tangents[0], shape=shape, index=index)

    def batch(batched, x, shape, index):
        return place(x, shape=(x.shape[0],) + tuple(shape), index=(slice(None),) + tuple(index))


# ---------------------------------------------------------------- integer-array indexing


def _gather_shape(x, *indices):
    k = len(indices)
    for i in indices:
        if i.dtype.kind not in "iu" or i.ndim != 1 or i.shape != indices[0].shape:
            raise UnsupportedError(
                "integer-array indexing needs 1-d integer index arrays of equal length", user_source())
    if k > x.ndim:
        raise ShapeError(f"too many indices ({k}) for an array of dimension {x.ndim}", user_source())
    return Aval(indices[0].shape + x.shape[k:], x.dtype)


def _gather_rows_kernel(x, i):
    """x[i] for a 1-d integer array i: out[k] = x[i[k]] (bounds-checked; negative from the end)."""
    n = x.shape[0]
    out = np.empty((i.shape[0],) + x.shape[1:], x.dtype)
    for k in range(i.shape[0]):
        r = i[k]
        if r < -n or r >= n:
            raise IndexError("tracegrad: index out of bounds in x[i]")
        out[k] = x[r]
    return out


def _gather_pairs_kernel(x, i, j):
    """x[i, j] for 1-d integer arrays i, j: out[k] = x[i[k], j[k]] (bounds-checked; negative from the end)."""
    n, m = x.shape[0], x.shape[1]
    out = np.empty((i.shape[0],) + x.shape[2:], x.dtype)
    for k in range(i.shape[0]):
        r, c = i[k], j[k]
        if r < -n or r >= n or c < -m or c >= m:
            raise IndexError("tracegrad: index out of bounds in x[i, j]")
        out[k] = x[r, c]
    return out


@primitive
class gather:
    """x[i] or x[i, j] with 1-d integer arrays (``logp[np.arange(n), labels]``)"""
    usage = "`x[idx]`, `logp[np.arange(n), labels]` (1-d integer arrays)"
    backward = "`scatter_add`: zeros with `g` added at the indices (repeats accumulate)"
    label = "[i]"
    shape = _gather_shape
    emit = staticmethod(lambda args, out: f"gather_{'rows' if len(args) == 2 else 'pairs'}({', '.join(args)})")
    kernel = {"gather_rows": _gather_rows_kernel, "gather_pairs": _gather_pairs_kernel}

    def ref(x, *indices):
        return np.asarray(x)[tuple(indices)]

    def vjp(g, out, x, *indices):
        return [scatter_add(g, *indices, shape=tuple(x.shape))] + [None] * len(indices)

    def jvp(tangents, out, x, *indices):
        return gather(tangents[0], *indices)


def _scatter_add_rows_kernel(g, i, shape):
    """Zeros of ``shape`` with g[k] added at row i[k] (repeats add up): the gradient of x[i]."""
    out = np.zeros(shape, g.dtype)
    for k in range(i.shape[0]):
        out[i[k]] += g[k]
    return out


def _scatter_add_pairs_kernel(g, i, j, shape):
    """Zeros of ``shape`` with g[k] added at [i[k], j[k]] (repeats add up): the gradient of x[i, j]."""
    out = np.zeros(shape, g.dtype)
    for k in range(i.shape[0]):
        out[i[k], j[k]] += g[k]
    return out


@primitive
class scatter_add:
    """zeros of ``shape`` with g added at the index arrays (repeats accumulate): the transpose of gather"""
    usage = "(the backward of `gather`)"
    backward = "`gather` of `g`"
    shape = staticmethod(lambda g, *indices, shape: Aval(shape, g.dtype))
    emit = staticmethod(lambda args, out, shape:
                        f"scatter_add_{'rows' if len(args) == 2 else 'pairs'}({', '.join(args)}, {shape!r})")
    kernel = {"scatter_add_rows": _scatter_add_rows_kernel, "scatter_add_pairs": _scatter_add_pairs_kernel}

    def ref(g, *indices, shape):
        out = np.zeros(shape, np.asarray(g).dtype)
        np.add.at(out, tuple(indices), g)
        return out

    def vjp(g, out, x, *indices, shape):
        return [gather(g, *indices)] + [None] * len(indices)

    def jvp(tangents, out, g, *indices, shape):
        return scatter_add(tangents[0], *indices, shape=shape)


def _is_index_array(entry) -> bool:
    if isinstance(entry, TracedArray):
        return entry.ndim > 0
    return isinstance(entry, (list, np.ndarray)) and np.ndim(entry) > 0


def _is_traced_int(entry) -> bool:
    return isinstance(entry, TracedArray) and entry.ndim == 0


# ---------------------------------------------------------------- x[i] with a traced integer i (a loop's index)


def _dynamic_index_shape(x, i):
    if i.shape or i.dtype.kind not in "iu":
        raise UnsupportedError(f"an index must be an integer scalar, not {i}", user_source())
    if not x.shape:
        raise ShapeError("cannot index a scalar", user_source())
    return Aval(x.shape[1:], x.dtype)


def _row_at_kernel(x, i):
    """x[i] for an integer i (bounds-checked; negative from the end)."""
    n = x.shape[0]
    if i < -n or i >= n:
        raise IndexError("tracegrad: index out of bounds in x[i]")
    return x[i]


def _place_row_kernel(g, i, out):
    """``out`` (zeros) with g as its row i: the gradient of x[i]."""
    n = out.shape[0]
    if i < -n or i >= n:
        raise IndexError("tracegrad: index out of bounds in x[i]")
    out[i] = g
    return out


@primitive
class dynamic_index:
    """x[i] along the first axis, with a traced integer i (a loop's index): bounds-checked, negative i from
    the end"""
    usage = ("`x[i]`, `x[i + 1, 2:]`, `x[:, i]` (that axis first) with `i` a loop's index (traced; "
             "bounds-checked: `row_at(x, i)`)")
    backward = "`dynamic_place`"
    shape = _dynamic_index_shape
    emit = "row_at({x}, {i})"
    kernel = {"row_at": _row_at_kernel}

    def ref(x, i):
        return np.asarray(x)[int(i)]

    def vjp(g, out, x, i):
        return [dynamic_place(g, i, shape=tuple(x.shape)), None]

    def jvp(tangents, out, x, i):
        return dynamic_index(tangents[0], i)


@primitive
class dynamic_place:
    """zeros of ``shape`` with g at row i: the transpose of ``dynamic_index``"""
    usage = "(the backward of `dynamic_index`)"
    backward = "`dynamic_index` of `g`"
    shape = staticmethod(lambda g, i, shape: Aval(shape, g.dtype))
    emit = staticmethod(lambda args, out, shape: f"place_row({args[0]}, {args[1]}, {_zeros(shape, out.dtype)})")
    kernel = {"place_row": _place_row_kernel}

    def ref(g, i, shape):
        out = np.zeros(shape, np.asarray(g).dtype)
        out[int(i)] = g
        return out

    def vjp(g, out, x, i, shape):
        return [dynamic_index(g, i), None]

    def jvp(tangents, out, g, i, shape):
        return dynamic_place(tangents[0], i, shape=shape)


def expand_ellipsis(x, index) -> tuple:
    """``index`` as a tuple, its ``...`` written out as the slices it stands for."""
    if not isinstance(index, tuple):
        index = (index,)
    if any(e is Ellipsis for e in index):
        i = index.index(Ellipsis)
        used = sum(1 for e in index if e is not None and e is not Ellipsis)
        index = index[:i] + (slice(None),) * (x.ndim - used) + index[i + 1:]
    return index


@numpy_function("getitem")
def index(x, index):
    """x[index]: basic indexing (ints, slices, None, ...) or leading 1-d integer index arrays."""
    index = expand_ellipsis(x, index)
    if index and _is_traced_int(index[0]):  # x[i] at a loop's index, then the rest of the index
        row = dynamic_index(x, index[0])
        return row if len(index) == 1 else NUMPY_FUNCTIONS["getitem"](row, index[1:])
    if any(_is_traced_int(e) for e in index):
        p = next(k for k, e in enumerate(index) if _is_traced_int(e))
        if all(isinstance(e, slice) and e == slice(None) for e in index[:p]):  # x[:, i]: that axis first, then x[i]
            moved = transpose(x, perm=(p,) + tuple(range(p)) + tuple(range(p + 1, x.ndim)))
            return NUMPY_FUNCTIONS["getitem"](moved, (index[p],) + index[:p] + index[p + 1:])
        if isinstance(index[0], (int, np.integer)) and not isinstance(index[0], (bool, np.bool_)):  # x[0, i]
            return NUMPY_FUNCTIONS["getitem"](NUMPY_FUNCTIONS["getitem"](x, index[:1]), index[1:])
        raise UnsupportedError("a traced integer index after a partial slice or a new axis (x[1:, i], "
                               "x[None, i])", user_source(), "index with x[:, i] and slice the result")
    arrays = [e for e in index if _is_index_array(e)]
    if arrays:
        arrays = [np.asarray(a) if isinstance(a, list) else a for a in arrays]
        k = len(arrays)
        if any(a.dtype.kind == "b" for a in arrays):
            raise UnsupportedError("boolean-mask indexing (its result has a data-dependent shape)",
                                   user_source(), "use np.where(mask, x, 0) instead")
        rest = index[k:]
        if not all(_is_index_array(e) for e in index[:k]) or any(e != slice(None) for e in rest):
            raise UnsupportedError("integer-array indexing is supported only as x[i] or x[i, j] (leading axes)",
                                   user_source(), "transpose so the indexed axes come first")
        if k > 2:
            raise UnsupportedError("integer-array indexing with more than two index arrays", user_source())
        return gather(x, *arrays)
    norm = []
    for entry in index:
        if isinstance(entry, (bool, np.bool_)):
            raise UnsupportedError("boolean scalar as an index", user_source())
        if isinstance(entry, (int, np.integer)):
            norm.append(int(entry))
        elif entry is None or isinstance(entry, slice):
            if isinstance(entry, slice) and any(
                    not (v is None or isinstance(v, (int, np.integer))) for v in (entry.start, entry.stop, entry.step)):
                raise UnsupportedError("slice bounds must be Python ints, not traced values", user_source())
            norm.append(entry if entry is None else slice(*(None if v is None else int(v) for v in (entry.start, entry.stop, entry.step))))
        else:
            raise UnsupportedError(f"cannot index a traced array with {type(entry).__name__}", user_source())
    if len([e for e in norm if e is not None]) > x.ndim:
        raise ShapeError(f"too many indices for an array of shape {x.shape}", user_source())
    try:
        _index_shape(x.aval, tuple(norm))
    except IndexError as e:
        raise ShapeError(f"index {tuple(norm)} is out of bounds for shape {x.shape}: {e}", user_source()) from None
    return getitem(x, index=tuple(norm))


# ---------------------------------------------------------------- concatenation


def _concatenate_shape(*xs, axis):
    first = xs[0]
    for x in xs:
        if x.ndim != first.ndim or any(d != e for i, (d, e) in enumerate(zip(x.shape, first.shape)) if i != axis):
            shapes = ", ".join(str(x.shape) for x in xs)
            raise ShapeError(f"concatenate along axis {axis}: shapes {shapes} do not fit", user_source())
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return Aval(tuple(shape), np.result_type(*(x.dtype for x in xs)))


@primitive
class concatenate:
    """arrays joined along an existing ``axis``"""
    usage = "`np.concatenate`, `np.stack`"
    backward = "the matching slices of `g`"
    label = "concat"
    shape = _concatenate_shape
    # (a one-element tuple needs its comma: np.concatenate((x,), axis=0))
    emit = staticmethod(lambda args, out, axis: f"np.concatenate(({', '.join(args)}{',' * (len(args) == 1)}), axis={axis})")
    cast_inputs = True

    def ref(*xs, axis):
        return np.concatenate(xs, axis=axis)

    def vjp(g, out, *xs, axis):
        grads, start = [], 0
        for x in xs:
            stop = start + x.shape[axis]
            grads.append(g[(slice(None),) * axis + (slice(start, stop),)])
            start = stop
        return grads

    def jvp(tangents, out, *xs, axis):
        return concatenate(*(zeros(x.aval) if t is None else t for t, x in zip(tangents, xs)), axis=axis)

    def batch(batched, *xs, axis):  # (an array the examples share, repeated for each)
        n = next(x.shape[0] for x, b in zip(xs, batched) if b)
        return concatenate(*(x if b else broadcast_to(x, shape=(n,) + tuple(x.shape)) for x, b in zip(xs, batched)),
                           axis=axis % (len(xs[0].shape) - batched[0]) + 1)


# ---------------------------------------------------------------- the NumPy functions


def _resolve_shape(shape, size):
    shape = (shape,) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    if shape.count(-1) == 1:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        shape = tuple(size // known if d == -1 and known else d for d in shape)
    return shape


@numpy_function(np.reshape)
def np_reshape(x, shape=None, order="C", **kwargs):
    shape = kwargs.pop("newshape", shape)
    if order != "C":
        raise UnsupportedError(f"reshape with order={order!r}", user_source())
    return reshape(x, shape=_resolve_shape(shape, x.size))


@numpy_function(np.ravel)
def np_ravel(x, order="C"):
    return np_reshape(x, (-1,), order)


@numpy_function(np.transpose)
def np_transpose(x, axes=None):
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(int(a) % x.ndim for a in axes)
    return transpose(x, perm=perm)


@numpy_function(np.broadcast_to)
def np_broadcast_to(x, shape):
    return broadcast_to(x, shape=_resolve_shape(shape, 0))


@numpy_function(np.expand_dims)
def np_expand_dims(x, axis):
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    ndim = x.ndim + len(axes)
    axes = {int(a) % ndim for a in axes}
    it = iter(x.shape)
    return reshape(x, shape=tuple(1 if i in axes else next(it) for i in range(ndim)))


@numpy_function(np.squeeze)
def np_squeeze(x, axis=None):
    if axis is None:
        axes = set(range(x.ndim))
    else:
        axes = {int(a) % x.ndim for a in ((axis,) if np.ndim(axis) == 0 else axis)}
    return reshape(x, shape=tuple(d for i, d in enumerate(x.shape) if not (i in axes and d == 1)))


@numpy_function(np.concatenate)
def np_concatenate(arrays, axis=0, out=None, dtype=None):
    if out is not None or dtype is not None:
        raise UnsupportedError("np.concatenate with out= or dtype=", user_source())
    arrays = list(arrays)
    ndim = np.ndim(arrays[0]) if not isinstance(arrays[0], TracedArray) else arrays[0].ndim
    if axis is None:
        return concatenate(*(np_ravel(a) for a in arrays), axis=0)
    return concatenate(*arrays, axis=int(axis) % ndim)


@numpy_function(np.stack)
def np_stack(arrays, axis=0, out=None, dtype=None):
    arrays = list(arrays)
    ndim = (arrays[0].ndim if isinstance(arrays[0], TracedArray) else np.ndim(arrays[0])) + 1
    axis = int(axis) % ndim
    expanded = [np_expand_dims(a if isinstance(a, TracedArray) else np.asarray(a), axis) for a in arrays]
    return np_concatenate(expanded, axis=axis, out=out, dtype=dtype)


assert NUMPY_FUNCTIONS["getitem"] is index


# ---------------------------------------------------------------- constants and names


def _full_label(node):
    value, shape = number_text(node.params["value"]), node.params["shape"]
    return value if not shape else f"{value} × {shape}"


def _full_emit(args, out, shape, value, dtype):
    if not shape:
        return literal_source(value, dtype)
    return f"np.full({shape!r}, {value!r})" if np.dtype(dtype) == np.float64 else \
        f"np.full({shape!r}, {value!r}, np.{np.dtype(dtype).name})"


@primitive
class full:
    """an array of ``shape`` filled with ``value`` (the seed ``grad_L = 1.0`` of a backward pass)"""
    usage = "`np.zeros`, `np.ones`, the seed `grad_L = 1.0`"
    label = _full_label
    shape = staticmethod(lambda shape, value, dtype: Aval(shape, dtype))
    emit = _full_emit
    nondiff = True

    def ref(shape, value, dtype):
        return np.full(shape, value, dtype) if shape else np.dtype(dtype).type(value)


def zeros(aval) -> TracedArray:
    """Zeros of ``aval`` recorded in the current graph (a tangent or cotangent a rule needs as an array)."""
    builder = current_builder()
    return builder.wrap(builder.add_node(full, (), dict(shape=aval.shape, value=0.0, dtype=aval.dtype), aval))


@primitive
class copy:
    """the same value under a second name, as in ``grad_s2 = grad_s3`` (free in compiled code)"""
    usage = "(made by differentiation: `grad_s2 = grad_s3`)"
    label = "="
    domain = "real"
    alias = True  # passes look through it to what it names
    shape = staticmethod(lambda x: x)
    elementwise = True
    emit = "{x}"
    view = True

    def ref(x):
        return x

    def vjp(g, out, x):
        return [g]

    def jvp(tangents, out, x):
        return tangents[0]


# ---------------------------------------------------------------- static facts and constants of a traced array


@numpy_function(np.ndim)
def np_ndim(x):
    return x.ndim


@numpy_function(np.shape)
def np_shape(x):
    return x.shape


@numpy_function(np.size)
def np_size(x, axis=None):
    return x.size if axis is None else x.shape[axis]


@primitive
class stop_gradient:
    """x itself, but no gradient flows back through it (``z - stop_gradient(np.max(z))`` in a stable softmax)"""
    usage = "`tg.stop_gradient(x)`"
    backward = "none: the value passes, the gradient stops"
    # only differentiation cares; optimised graphs are compiled, never differentiated again
    rewrite = staticmethod(lambda node, producer: node.inputs[0])
    shape = staticmethod(lambda x: x)
    emit = "{x}"
    elementwise = True
    nondiff = True
    view = True

    def ref(x):
        return x
