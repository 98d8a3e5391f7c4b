"""``TracedArray``: the NumPy-like value user code and VJP rules compute with; every operation on it
records a node through ``bind``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .builder import bind
from .errors import TracingError, UnsupportedError, user_source
from .registry import NUMPY_FUNCTIONS, PRIMITIVES

if TYPE_CHECKING:
    from .builder import Builder
    from .ir import Var


_BRANCH_HINT = "branch with np.where(cond, a, b), np.maximum/np.minimum or np.clip instead of Python if/while"
_NUMBER_HINT = ("keep it a traced value: use NumPy functions (np.sin rather than math.sin, x.astype(np.float64) "
                "rather than float(x)); math.sin and the like work in the traced function and in the functions it "
                "calls by name, but not in methods or functions reached through an attribute")
_ARRAY_HINT = ("build arrays of traced values with np.stack([...]) or np.concatenate; an argument passed as a "
               "Python list is traced as separate values, one per entry: pass np.array(...) instead")


def _concrete_error(what: str, hint: str = _BRANCH_HINT):
    def method(self, *args):
        raise TracingError(f"{what} on a traced value: its value is not known while tracing", user_source(), hint)

    return method


class TracedArray:
    """A value inside a traced function: behaves like a NumPy array of known shape and dtype.

    Every operation on it records a node in the graph being built. Its value is unknown while
    tracing, so Python control flow on it raises ``TracingError``.
    """

    __slots__ = ("var", "builder")
    __array_priority__ = 1000
    __hash__ = None  # == builds a node, so traced values cannot be dict keys

    def __init__(self, var: Var, builder: Builder):
        self.var = var
        self.builder = builder

    shape = property(lambda self: self.var.aval.shape)
    dtype = property(lambda self: self.var.aval.dtype)
    ndim = property(lambda self: self.var.aval.ndim)
    size = property(lambda self: self.var.aval.size)
    aval = property(lambda self: self.var.aval)

    def __repr__(self):
        return f"TracedArray({self.var.aval})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a traced scalar")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a traced scalar")
        return (self[i] for i in range(self.shape[0]))

    __bool__ = _concrete_error("bool() (an if, while, and/or, or assert)")
    __float__ = _concrete_error("float() (or a math function)", _NUMBER_HINT)
    __int__ = _concrete_error("int()", _NUMBER_HINT)
    __index__ = _concrete_error("use as an index or size", "index with Python ints, slices or integer arrays "
                                "known while tracing; select values with np.where")
    __complex__ = _concrete_error("complex()", _NUMBER_HINT)

    def __array__(self, dtype=None, copy=None):
        _concrete_error("conversion to a NumPy array (np.asarray, np.array or a NumPy function tracegrad does not "
                        "know)", _ARRAY_HINT)(self)

    # Operators: each looks up its primitive by name, so this class depends on no declaration.
    def _op(name):
        return lambda self, other: bind(PRIMITIVES[name], self, other)

    def _rop(name):
        return lambda self, other: bind(PRIMITIVES[name], other, self)

    __add__, __radd__ = _op("add"), _rop("add")
    __sub__, __rsub__ = _op("sub"), _rop("sub")
    __mul__, __rmul__ = _op("mul"), _rop("mul")
    __truediv__, __rtruediv__ = _op("div"), _rop("div")
    __pow__, __rpow__ = _op("pow"), _rop("pow")
    __matmul__, __rmatmul__ = _op("dot"), _rop("dot")
    __lt__, __le__, __gt__, __ge__ = _op("lt"), _op("le"), _op("gt"), _op("ge")
    __eq__, __ne__ = _op("eq"), _op("ne")
    __and__, __rand__ = _op("logical_and"), _rop("logical_and")
    __or__, __ror__ = _op("logical_or"), _rop("logical_or")
    __xor__, __rxor__ = _op("logical_xor"), _rop("logical_xor")
    del _op, _rop

    def __invert__(self):
        return bind(PRIMITIVES["logical_not"], self)

    def __neg__(self):
        return bind(PRIMITIVES["neg"], self)

    def __pos__(self):
        return self

    def __abs__(self):
        return bind(PRIMITIVES["abs"], self)

    def __floordiv__(self, other):
        raise UnsupportedError("// on traced values (it has no useful gradient)", user_source(),
                               "use np.floor(x / y), or / and np.where")

    __rfloordiv__ = __floordiv__

    def __mod__(self, other):
        return bind(PRIMITIVES["mod"], self, other)

    def __rmod__(self, other):
        return bind(PRIMITIVES["mod"], other, self)

    def __getitem__(self, index):
        return NUMPY_FUNCTIONS["getitem"](self, index)

    def __setitem__(self, index, value):
        raise UnsupportedError(
            "assignment into a traced array (x[i] = v)", user_source(), "build the result with np.where or np.concatenate"
        )

    # Array methods mirror the NumPy functions of the same name.
    def _method(np_fn):
        def method(self, *args, **kwargs):
            return NUMPY_FUNCTIONS[np_fn](self, *args, **kwargs)

        method.__name__ = np_fn.__name__
        return method

    sum, mean, max, min = _method(np.sum), _method(np.mean), _method(np.max), _method(np.min)
    std, ravel = _method(np.std), _method(np.ravel)  # (.var would clash with the slot holding the Var)
    clip, dot, transpose = _method(np.clip), _method(np.dot), _method(np.transpose)
    del _method

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return NUMPY_FUNCTIONS[np.reshape](self, shape, order=order)

    def flatten(self):
        return NUMPY_FUNCTIONS[np.ravel](self)

    def copy(self):
        return self  # traced values are never modified in place: a copy is the value itself

    def astype(self, dtype):
        return bind(PRIMITIVES["convert"], self, dtype=np.dtype(dtype))

    @property
    def T(self):
        return NUMPY_FUNCTIONS[np.transpose](self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        impl = NUMPY_FUNCTIONS.get(ufunc) or NUMPY_FUNCTIONS.get(ufunc.__name__)
        if method != "__call__" or impl is None:
            name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise UnsupportedError(f"{name} is not supported on traced values", user_source())
        unknown = set(kwargs) - {"out"} if kwargs.get("out") is None else set(kwargs)
        if unknown:
            raise UnsupportedError(f"np.{ufunc.__name__}: unsupported keyword(s) {sorted(unknown)}", user_source())
        return impl(*(np.asarray(a) if isinstance(a, (list, tuple)) else a for a in inputs))

    def __array_function__(self, func, types, args, kwargs):
        impl = NUMPY_FUNCTIONS.get(func)
        if impl is None:
            module = "np" if func.__module__.startswith("numpy") and "linalg" not in func.__module__ else func.__module__
            raise UnsupportedError(
                f"{module}.{func.__name__} is not supported on traced values",
                user_source(),
                "see the list of supported functions in docs/DESIGN.md",
            )
        return impl(*args, **kwargs)
