"""Assignment into arrays, and arrays built from traced values.

``y[i] = v`` inside a traced function is functional: ``setitem`` computes a new value (``y`` with ``v`` at
``i``) and the name ``y`` is rebound to it (``TracedArray.__setitem__``); what was computed from the old ``y``
keeps the old value, as the arrays a NumPy program copied would. At a traced integer ``i`` (a loop's index, an
``argmax``), ``dynamic_setitem`` writes row ``i``; ``y[i, 1:] = v`` writes the row ``y[i]`` with ``v`` at ``1:``. ``np.zeros``, ``np.ones``, ``np.full`` and
``np.empty`` (zeros) inside a traced function make traced constants, so they can be assigned into;
``np.array``/``np.asarray`` of lists holding traced values stack them; ``np.r_`` and ``np.c_`` join them.
NumPy does not dispatch these to traced values: the tracer swaps them in (``core.MODULE_FUNCTIONS``).
"""
import numpy as np

from ..core import TracedArray, current_builder, module_function, numpy_function, primitive
from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval
from .manipulation import filled, np_column_stack
from .structural import (_format_index, _index_shape, _is_traced_int, dynamic_index, expand_ellipsis, getitem,
                         np_broadcast_to, np_concatenate, np_stack, reshape, transpose, zeros)


def _setitem_shape(x, v, index):
    if not x.shape:
        raise UnsupportedError("assignment into a traced scalar (x[()] = v)", user_source(), "use v itself")
    target = _index_shape(x, index).shape
    try:
        if np.broadcast_shapes(v.shape, target) != target:
            raise ValueError
    except ValueError:
        raise ShapeError(f"cannot assign a value of shape {v.shape} to x[{_format_index(index)}] of shape {target}",
                         user_source()) from None
    return x


@primitive
class setitem:
    """x with v written at ``index`` (basic indexing): ``y[1:] = v`` in a traced function"""
    shape = _setitem_shape
    emit = staticmethod(lambda args, out, index: [
        f"{{out}} = {args[0]}.copy()", f"{{out}}[{_format_index(index)}] = {args[1]}"])
    cast_inputs = (1,)  # the value takes the array's dtype, as NumPy's assignment casts it

    def ref(x, v, index):
        out = np.array(x, copy=True)
        out[index] = v
        return out

    def vjp(g, out, x, v, index):
        return [setitem(g, 0.0, index=index), getitem(g, index=index)]

    def jvp(tangents, out, x, v, index):
        tan_x, tan_v = tangents
        return setitem(zeros(x.aval) if tan_x is None else tan_x, 0.0 if tan_v is None else tan_v, index=index)


def _dynamic_setitem_shape(x, v, i):
    if i.shape or i.dtype.kind not in "iu":
        raise UnsupportedError(f"an index must be an integer scalar, not {i}", user_source())
    if not x.shape:
        raise UnsupportedError("assignment into a traced scalar (x[()] = v)", user_source(), "use v itself")
    if v.shape not in ((), x.shape[1:]):
        raise ShapeError(f"cannot assign a value of shape {v.shape} to a row of shape {x.shape[1:]}", user_source())
    return x


def _set_at_kernel(x, v, i):
    n = x.shape[0]
    if i < -n or i >= n:
        raise IndexError("tracegrad: index out of bounds in y[i] = v")
    out = x.copy()
    out[i] = v
    return out


@primitive
class dynamic_setitem:
    """x with row i (along the first axis) set to v, for a traced integer i (a loop's index, an ``argmax``):
    ``y[i] = v``; bounds-checked, negative i from the end"""
    usage = "`y[i] = v`, `y[i] += v`, `y[i, 1:] = v`, `y[:, i] = v` with `i` traced (bounds-checked: `set_at(y, v, i)`)"
    backward = "`set_at(g, 0.0, i)` for `y`, `g[i]` for `v`"
    shape = _dynamic_setitem_shape
    emit = "set_at({x}, {v}, {i})"
    kernel = {"set_at": _set_at_kernel}
    cast_inputs = (1,)  # the value takes the array's dtype, as NumPy's assignment casts it

    def ref(x, v, i):
        n = np.shape(x)[0]
        if not -n <= int(i) < n:  # (the kernel's message: the same error in every tier)
            raise IndexError("tracegrad: index out of bounds in y[i] = v")
        out = np.array(x, copy=True)
        out[int(i)] = v
        return out

    def vjp(g, out, x, v, i):
        return [dynamic_setitem(g, 0.0, i), dynamic_index(g, i), None]

    def jvp(tangents, out, x, v, i):
        tan_x, tan_v = tangents[:2]
        return dynamic_setitem(zeros(x.aval) if tan_x is None else tan_x, 0.0 if tan_v is None else tan_v, i)


def _assign_at_traced(x, index, value):
    """``x[index] = value`` with a traced integer in ``index``: first (``x[i, 1:]``), the row ``x[i]`` with
    ``value`` at the rest, put back by ``dynamic_setitem``; after full slices (``x[:, i]``), the same on ``x`` with
    that axis first, turned back; after an integer (``x[0, i]``), the same on the row ``x[0]``, put back."""
    i, rest = index[0], index[1:]
    if not _is_traced_int(i):
        p = next(k for k, e in enumerate(index) if _is_traced_int(e))
        if all(isinstance(e, slice) and e == slice(None) for e in index[:p]):
            order = (p,) + tuple(range(p)) + tuple(range(p + 1, x.ndim))
            moved = _assign_at_traced(transpose(x, perm=order), (index[p],) + index[:p] + index[p + 1:], value)
            return transpose(moved, perm=tuple(np.argsort(order)))
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            row = _assign_at_traced(getitem(x, index=(int(i),)), rest, value)
            return setitem(x, row, index=(int(i),))
        raise UnsupportedError("assignment at a traced integer index after a partial slice or a new axis "
                               "(y[1:, i] = v)", user_source(), "assign at y[:, i], or into a slice's copy")
    if i.dtype.kind not in "iu":
        raise UnsupportedError(f"an index must be an integer scalar, not {i.dtype}", user_source())
    if rest:  # the row x[i] with value at the rest (a traced integer there too: y[i, j] = v)
        value = np_setitem(dynamic_index(x, i), rest, value)
    if isinstance(value, TracedArray) and value.shape not in ((), x.shape[1:]):
        value = np_broadcast_to(value, x.shape[1:])
    elif not isinstance(value, (TracedArray, bool, int, float)):
        value = as_array(value)
        if value.shape not in ((), x.shape[1:]):
            value = np.ascontiguousarray(np.broadcast_to(value, x.shape[1:]))
    return dynamic_setitem(x, value, i)


def _normalized(x, index):
    """A basic index with its Ellipsis expanded and its integers made Python ints, or raise."""
    index = expand_ellipsis(x, index)
    norm = []
    for entry in index:
        if isinstance(entry, TracedArray) and entry.ndim == 0:
            raise UnsupportedError("assignment at a traced integer index only as the first index (y[i] = v, "
                                   "y[i, 1:] = v)", user_source(), "transpose so the axis indexed by the loop comes first")
        if isinstance(entry, TracedArray):
            raise UnsupportedError("assignment at a traced index array (y[idx] = v)", user_source(),
                                   "assign each index, or use np.where")
        if isinstance(entry, (bool, np.bool_)) or isinstance(entry, (list, np.ndarray)):
            raise UnsupportedError("assignment at an integer-array index (y[[0, 2]] = v)", user_source(),
                                   "assign each index, or use np.where")
        if isinstance(entry, (int, np.integer)):
            norm.append(int(entry))
        elif isinstance(entry, slice):
            norm.append(slice(*(None if b is None else int(b) for b in (entry.start, entry.stop, entry.step))))
        elif entry is None:
            norm.append(None)
        else:
            raise UnsupportedError(f"assignment at an index of type {type(entry).__name__}", user_source())
    if len([e for e in norm if e is not None]) > x.ndim:
        raise ShapeError(f"too many indices for an array of shape {x.shape}", user_source())
    try:
        _index_shape(x.aval, tuple(norm))
    except IndexError as e:
        raise ShapeError(f"index {tuple(norm)} is out of bounds for shape {x.shape}: {e}", user_source()) from None
    return tuple(e for e in norm if e is not None)  # None adds an axis of size 1: assigning there is the same


@numpy_function("setitem")
def np_setitem(x, index, value):
    """``x[index] = value`` as a new value. A boolean mask index (``x[x < 0] = 0``) with a scalar value is
    ``np.where``."""
    from .elementwise import where
    mask = index.dtype if isinstance(index, TracedArray) else getattr(index, "dtype", None)
    if mask == np.bool_:
        if np.ndim(value) != 0:
            raise UnsupportedError("assignment at a boolean mask of an array value (its size depends on the data)",
                                   user_source(), "assign a scalar, or use np.where(mask, values, x)")
        return where(index, value, x).astype(x.dtype)
    full = expand_ellipsis(x, index)
    if any(_is_traced_int(e) for e in full):
        return _assign_at_traced(x, full, value)
    value = value if isinstance(value, (TracedArray, bool, int, float)) else as_array(value)
    return setitem(x, value, index=_normalized(x, index))


# ---------------------------------------------------------------- arrays from traced values


def contains_traced(obj) -> bool:
    """True when ``obj`` is a traced value or a list/tuple holding one (at any depth)."""
    if isinstance(obj, TracedArray):
        return True
    return isinstance(obj, (list, tuple)) and any(contains_traced(o) for o in obj)


def _build(obj):
    if isinstance(obj, TracedArray):
        return obj
    if isinstance(obj, (list, tuple)) and contains_traced(obj):
        parts = [_build(o) for o in obj]
        shapes = {np.shape(p) for p in parts}
        if len(shapes) > 1:
            raise ShapeError(f"np.array of a list of entries of different shapes {sorted(shapes)}", user_source())
        return np_stack(parts)
    if isinstance(obj, (bool, int, float)):
        return filled((), obj, np.result_type(type(obj)))
    return np.asarray(obj)


def as_array(obj, dtype=None):
    """``np.asarray`` that also takes traced values and lists of them."""
    if not contains_traced(obj):
        return np.asarray(obj, dtype)
    out = _build(obj)
    return out if dtype is None or np.dtype(dtype) == out.dtype else out.astype(dtype)


@module_function("numpy", "array")
def np_array(object, dtype=None, *args, copy=True, **kwargs):
    if not contains_traced(object):
        return np.array(object, dtype, *args, copy=copy, **kwargs)
    if args or set(kwargs) - {"order", "ndmin"}:
        raise UnsupportedError("np.array of traced values with arguments other than dtype, copy, order and ndmin",
                               user_source())
    out = as_array(object, dtype)
    if out is object:
        out = out.copy()  # a new value of its own: assignment into it leaves object as it is
    ndmin = kwargs.get("ndmin", 0)
    return reshape(out, shape=(1,) * (ndmin - out.ndim) + out.shape) if out.ndim < ndmin else out


@module_function("numpy", "asarray", "asanyarray", "ascontiguousarray")
def np_asarray(a, dtype=None, *args, **kwargs):
    if not contains_traced(a):
        return np.asarray(a, dtype, *args, **kwargs)
    return as_array(a, dtype)


def _constant(name, value):
    real = getattr(np, name)

    def make(shape, dtype=float, order="C", **kwargs):
        if current_builder() is None or kwargs.get("like") is not None:
            return real(shape, dtype, order, **kwargs)
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
        return filled(shape, value, np.dtype(dtype))
    make.__name__ = name
    make.__doc__ = f"np.{name} in a traced function: a traced constant, so it can be assigned into"
    return make


for _name, _value in (("zeros", 0), ("ones", 1), ("empty", 0)):
    module_function("numpy", _name)(_constant(_name, _value))


@module_function("numpy", "full")
def np_full(shape, fill_value, dtype=None, order="C", **kwargs):
    if current_builder() is None or kwargs.get("like") is not None or np.ndim(fill_value) or \
            isinstance(fill_value, TracedArray):
        if isinstance(fill_value, TracedArray):
            from .structural import np_broadcast_to
            out = np_broadcast_to(fill_value, shape)
            return out if dtype is None else out.astype(dtype)
        return np.full(shape, fill_value, dtype, order, **kwargs)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    return filled(shape, fill_value, np.dtype(dtype) if dtype is not None else np.result_type(fill_value))


def _like(name, value):
    def like(a, dtype=None, order="K", subok=True, shape=None, **kwargs):
        if current_builder() is None:
            return getattr(np, name)(a, dtype, order, subok, shape, **kwargs)
        shape = np.shape(a) if shape is None else shape
        dtype = dtype if dtype is not None else a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
        return filled((int(shape),) if np.ndim(shape) == 0 else tuple(shape), value, dtype)
    like.__name__ = name
    return like


for _name, _value in (("zeros_like", 0), ("ones_like", 1), ("empty_like", 0)):
    _fn = _like(_name, _value)
    numpy_function(getattr(np, _name))(_fn)  # np.zeros_like(traced)
    module_function("numpy", _name)(_fn)  # np.zeros_like(ndarray), in a traced function


@numpy_function(np.full_like)
def np_full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    shape = np.shape(a) if shape is None else shape
    dtype = dtype if dtype is not None else a.dtype
    return np_full(shape, fill_value, dtype)


class _Concatenator:
    """``np.r_[...]`` / ``np.c_[...]`` with traced entries: slices are ranges, scalars one element."""

    def __init__(self, real, columns):
        self.real, self.columns = real, columns

    def __getitem__(self, key):
        items = key if isinstance(key, tuple) else (key,)
        if not any(contains_traced(i) for i in items):
            return self.real[key]
        if any(isinstance(i, str) for i in items):
            raise UnsupportedError("np.r_ with a string directive on traced values", user_source())
        parts = []
        for item in items:
            if isinstance(item, slice):
                parts.append(self.real[item])
            elif isinstance(item, (bool, int, float)):
                parts.append(item)  # filled below, in the arrays' dtype (a scalar is weak, as in NumPy)
            else:
                item = as_array(item)
                parts.append(reshape(item, shape=(1,)) if isinstance(item, TracedArray) and item.ndim == 0 else
                             np.atleast_1d(item) if not isinstance(item, TracedArray) else item)
        dtype = np.result_type(*(p.dtype for p in parts if hasattr(p, "dtype")))
        parts = [filled((1,), p, dtype) if isinstance(p, (bool, int, float)) else p for p in parts]
        return np_column_stack(parts) if self.columns else np_concatenate(parts, axis=0)

    def __len__(self):
        return 0


module_function("numpy", "r_")(_Concatenator(np.r_, False))
module_function("numpy", "c_")(_Concatenator(np.c_, True))
