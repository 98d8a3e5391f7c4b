"""``TracedArray``: the NumPy-like value user code and VJP rules compute with; every operation on it
records a node through ``bind``."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

from .builder import _state, bind
from .errors import GradTypeError, ShapeError, TracingError, UnsupportedError, library_function, user_source
from .ir import Var
from .registry import NUMPY_FUNCTIONS, PRIMITIVES

if TYPE_CHECKING:
    from .builder import Builder


_BRANCH_HINT = "branch with np.where(cond, a, b), np.maximum/np.minimum or np.clip instead of Python if/while"
_NUMBER_HINT = ("keep it a traced value: use NumPy functions (np.sin rather than math.sin, x.astype(np.float64) "
                "rather than float(x)); math.sin and the like work in the traced function and in the functions it "
                "calls by name, but not in methods or functions reached through an attribute")
_ARRAY_HINT = ("np.array([...]) of traced values works in the traced function and in the functions it calls by name, "
               "not in functions reached through an attribute or a container: there use np.stack([...]); an "
               "argument passed as a Python list is traced as separate values, one per entry: pass np.array(...) "
               "instead")


def _concrete_error(what: str, hint: str = _BRANCH_HINT):
    def method(self, *args):
        raise TracingError(f"{what} on a traced value: its value is not known while tracing", user_source(), hint)

    return method


class TracedArray:
    """A value inside a traced function: behaves like a NumPy array of known shape and dtype.

    Every operation on it records a node in the graph being built. Its value is unknown while
    tracing, so Python control flow on it raises ``TracingError``.
    """

    __slots__ = ("var", "builder", "base")
    __array_priority__ = 1000
    __hash__ = None  # == builds a node, so traced values cannot be dict keys

    def __init__(self, var: Var, builder: Builder, base=None):
        self.var = var
        self.builder = builder
        # A NumPy view (x[1:], x.T, x.reshape(...)): (the array viewed, its value then, the index or None).
        # Assignment is functional (see __setitem__): a view is written through to its base, and a view
        # whose base was assigned into since is refused (_check_fresh)
        self.base = base

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
        name = library_function()
        if name is not None:  # a NumPy or SciPy function tracegrad does not know converts its arguments
            raise UnsupportedError(f"{name} is not supported on traced values (it converts them to NumPy arrays)",
                                   user_source(), _ARRAY_HINT)
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
    __matmul__ = lambda self, other: NUMPY_FUNCTIONS[np.matmul](self, other)  # noqa: E731  (stacks of matrices too)
    __rmatmul__ = lambda self, other: NUMPY_FUNCTIONS[np.matmul](other, self)  # noqa: E731
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
        return _view(NUMPY_FUNCTIONS["getitem"](self, index), self, index)

    def __setitem__(self, index, value):
        """``x[index] = value`` is functional: ``x`` now names a new value, ``x`` with ``value`` at ``index``
        (the values computed from the old ``x`` keep it). A view (``x[1:]``) is written through to its base."""
        if isinstance(value, TracedArray) and value.base is not None and value.base[0] is self \
                and value.base[1] is self.var and value.base[2] is index:
            return  # x[1:] += v: the view's own in-place update has written it into x already
        _rebind(self, NUMPY_FUNCTIONS["setitem"](self, index, value))

    # In-place operators on arrays rebind the value too (an alias, y = x, sees the change, as in NumPy); a
    # scalar (a Python or NumPy number: immutable) gets a new value, as Python's s += 1 does
    def _iop(name):
        def method(self, other):
            new = bind(PRIMITIVES[name], self, other)
            if not self.ndim:
                return new
            if new.shape != self.shape:
                raise ShapeError(f"in-place operation: the result of shape {new.shape} does not fit an array of "
                                 f"shape {self.shape}", user_source())
            if not np.can_cast(new.dtype, self.dtype, "same_kind"):  # as NumPy refuses it
                raise GradTypeError(f"in-place operation: cannot cast its {new.dtype} result to the array's "
                                    f"{self.dtype}", user_source(), "write y = y + v to get a new array")
            _rebind(self, new if new.dtype == self.dtype else new.astype(self.dtype))
            return self
        return method

    __iadd__, __isub__, __imul__ = _iop("add"), _iop("sub"), _iop("mul")
    __itruediv__, __ipow__, __imatmul__ = _iop("div"), _iop("pow"), _iop("dot")
    del _iop

    # Array methods mirror the NumPy functions of the same name.
    def _method(np_fn):
        def method(self, *args, **kwargs):
            impl = NUMPY_FUNCTIONS.get(np_fn)
            if impl is None:
                raise UnsupportedError(f"the method .{np_fn.__name__}() is not supported on traced values", user_source())
            return impl(self, *args, **kwargs)

        method.__name__ = np_fn.__name__
        return method

    sum, mean, max, min = _method(np.sum), _method(np.mean), _method(np.max), _method(np.min)
    std, ravel = _method(np.std), _method(np.ravel)  # (.var(): see Var.__call__ below)
    clip, dot = _method(np.clip), _method(np.dot)
    prod, cumsum, cumprod = _method(np.prod), _method(np.cumsum), _method(np.cumprod)
    squeeze, repeat, swapaxes = _method(np.squeeze), _method(np.repeat), _method(np.swapaxes)
    diagonal, trace, argmax, argmin = _method(np.diagonal), _method(np.trace), _method(np.argmax), _method(np.argmin)
    argsort, any, all, round = _method(np.argsort), _method(np.any), _method(np.all), _method(np.round)
    del _method

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return _view(NUMPY_FUNCTIONS[np.transpose](self, axes or None), self)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _view(NUMPY_FUNCTIONS[np.reshape](self, shape, order=order), self)

    def flatten(self, order="C"):
        return NUMPY_FUNCTIONS[np.ravel](self, order)  # a copy, not a view

    def copy(self, order="C"):
        return TracedArray(self.var, self.builder)  # the same value, not a view: assignment into it is its own

    def item(self, *args):
        if args:
            index = args if len(args) > 1 else args[0] if isinstance(args[0], tuple) else np.unravel_index(args[0], self.shape)
            return NUMPY_FUNCTIONS["getitem"](self, tuple(int(i) for i in index))
        if self.size != 1:
            raise ShapeError(f".item() of an array of size {self.size}: only arrays of one element convert to a "
                             f"scalar", user_source())
        return NUMPY_FUNCTIONS[np.reshape](self, ())  # a traced scalar: its value is not known while tracing

    def sort(self, axis=-1, kind=None, order=None):
        """In place, as NumPy's: ``x`` names the sorted value."""
        _rebind(self, NUMPY_FUNCTIONS[np.sort](self, axis, kind, order))

    def conj(self):
        return self

    conjugate = conj

    def tolist(self):
        _concrete_error(".tolist()", _NUMBER_HINT)(self)

    def astype(self, dtype):
        return bind(PRIMITIVES["convert"], self, dtype=np.dtype(dtype))

    @property
    def T(self):
        return _view(NUMPY_FUNCTIONS[np.transpose](self), self)

    real = property(lambda self: self)
    flat = property(lambda self: _view(NUMPY_FUNCTIONS[np.ravel](self), self))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        impl = NUMPY_FUNCTIONS.get(ufunc) or NUMPY_FUNCTIONS.get(ufunc.__name__)
        if method != "__call__" or impl is None:
            special = sys.modules.get("scipy.special")
            module = "scipy.special" if getattr(special, ufunc.__name__, None) is ufunc else "np"
            name = f"{module}.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
            raise UnsupportedError(f"{name} is not supported on traced values", user_source())
        unknown = set(kwargs) - {"out"} if kwargs.get("out") is None else set(kwargs)
        if unknown:
            raise UnsupportedError(f"np.{ufunc.__name__}: unsupported keyword(s) {sorted(unknown)}", user_source())
        return impl(*(np.asarray(a) if isinstance(a, (list, tuple)) else a for a in inputs))

    def __array_function__(self, func, types, args, kwargs):
        impl = NUMPY_FUNCTIONS.get(func)
        if impl is None:
            module = func.__module__ or "numpy"
            module = "np" + module[len("numpy"):] if module.split(".")[0] == "numpy" else module
            raise UnsupportedError(
                f"{module}.{func.__name__} is not supported on traced values",
                user_source(),
                "see the list of supported functions in docs/DESIGN.md",
            )
        out = impl(*args, **kwargs)
        if func in _VIEW_FUNCTIONS and args and isinstance(args[0], TracedArray):
            out = _view(out, args[0])
        return out


# NumPy functions whose result is a view of their first argument
_VIEW_FUNCTIONS = frozenset([np.reshape, np.ravel, np.transpose, np.swapaxes, np.moveaxis, np.squeeze, np.expand_dims,
                             np.broadcast_to, np.atleast_2d, np.atleast_3d, np.flip, np.fliplr, np.flipud, np.diagonal])


def _view(out, base, index=None):
    """Mark ``out`` as a NumPy view of ``base`` (``index`` when it is ``base[index]``, a basic index)."""
    if isinstance(out, TracedArray) and out.ndim and out is not base and out.builder is base.builder:
        if index is not None and not _basic(index):
            return out  # integer-array indexing copies
        out.base = (base, base.var, index)
    return out


def _basic(index) -> bool:
    entries = index if isinstance(index, tuple) else (index,)
    return all(e is None or e is Ellipsis or isinstance(e, (slice, int, np.integer))
               or isinstance(e, TracedArray) and e.ndim == 0 for e in entries)


def _check_fresh(value):
    """Refuse a view whose base has been assigned into since the view was taken: NumPy's view would show
    the new values, a traced one cannot."""
    while value.base is not None:
        base, var, _ = value.base
        if base.var is not var:
            raise TracingError("a view of an array (x[1:], x.T, x.reshape(...)) is used after that array was assigned "
                               "into (x[i] = v): NumPy's view would see the new values, tracegrad's cannot",
                               user_source(), "copy the view before assigning (v = x[1:].copy()), or take it after")
        value = base


def _rebind(target, new):
    """``target`` names ``new`` from now on (functional assignment); a view writes ``new`` into its base."""
    if target.builder is not _state.builder:
        raise UnsupportedError("assignment into a value of an enclosing trace (a closure of a nested grad)",
                               user_source(), "assign into a copy: y = x.copy(); y[i] = v")
    if target.base is not None:
        _check_fresh(target)
        base, _, index = target.base
        if index is None:
            raise UnsupportedError("assignment into a reshaped or transposed view of an array", user_source(),
                                   "assign into the array itself, or into a copy of the view (.copy())")
        _rebind(base, NUMPY_FUNCTIONS["setitem"](base, index, new))
        target.base = (base, base.var, index)
    target.var = new.var


def _var_method(var, *args, **kwargs):
    """``x.var()`` on a traced ``x``: its slot ``var`` holds the ``Var``, so the call lands here."""
    builder = _state.builder
    while builder is not None and not _defines(builder, var):
        builder = builder.parent
    if builder is None:
        raise TracingError("a traced value was used after its trace ended (in .var())", user_source())
    return NUMPY_FUNCTIONS[np.var](TracedArray(var, builder), *args, **kwargs)


def _defines(builder, var) -> bool:
    return (any(v is var for v in builder.inputs) or any(v is var for v, _ in builder.captured)
            or any(var in node.outs for node in builder.nodes))


Var.__call__ = _var_method
