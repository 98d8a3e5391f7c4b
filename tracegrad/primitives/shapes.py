"""Shape and dtype rules shared by several primitives."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedError, user_source
from ..ir import Aval


def broadcast(*avals: Aval) -> tuple:
    shape = avals[0].shape
    for aval in avals:  # inputs of one shape (most nodes): the shape itself, without asking NumPy
        if aval.shape != shape:
            break
    else:
        return shape
    try:
        return np.broadcast_shapes(*(a.shape for a in avals))
    except ValueError:
        shapes = " and ".join(str(a.shape) for a in avals)
        raise ShapeError(f"shapes {shapes} do not broadcast together", user_source()) from None


def elementwise(*avals: Aval) -> Aval:
    """NumPy broadcasting and type promotion."""
    first = avals[0]
    for aval in avals:  # inputs of one aval (most nodes): the output has it too, the same object
        if aval is not first and (aval.shape != first.shape or aval.dtype is not first.dtype):
            break
    else:
        if first.dtype.isnative:
            return first
    dtype = first.dtype
    for aval in avals:  # inputs of one native dtype (most nodes): that dtype, without asking NumPy
        if aval.dtype is not dtype or not dtype.isnative:
            dtype = np.result_type(*(a.dtype for a in avals))
            break
    return Aval(broadcast(*avals), dtype)


def float_dtype(dtype) -> np.dtype:
    """The floating dtype a transcendental function returns (ints and bools give float64, as in NumPy)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def unary_float(x: Aval) -> Aval:
    return x if x.dtype.kind == "f" else Aval(x.shape, float_dtype(x.dtype))


def binary_float(x: Aval, y: Aval) -> Aval:
    out = elementwise(x, y)
    return out if out.dtype.kind == "f" else Aval(out.shape, float_dtype(out.dtype))


def same(x: Aval, **params) -> Aval:
    return x


def comparison(x: Aval, y: Aval) -> Aval:
    return Aval(broadcast(x, y), np.bool_)


def normalize_axes(axis, ndim: int, op: str) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of bounds for an array of dimension {ndim}", user_source())
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis}", user_source())
    return tuple(sorted(out))


def require_float(op: str, *avals: Aval):
    for a in avals:
        if a.dtype.kind != "f":
            raise UnsupportedError(f"{op} needs floating-point inputs, got {a}", user_source(), "convert with .astype(np.float64)")
