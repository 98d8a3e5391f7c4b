"""Primitives, the graph builder, and ``TracedArray``: the value user code and VJP rules compute with.

A primitive is declared once (see ``primitives/``): its shape rule, NumPy reference, VJP and JVP written
with ``TracedArray`` operations, the way codegen spells it, and its NumPy/``math`` aliases. ``bind`` is the one
function that records a node: the tracer (forward) and the VJP rules (backward) both go through it,
so the backward pass is an ordinary graph in the same IR.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import GradTypeError, ShapeError, SourceInfo, TracingError, UnsupportedError, library_function, user_source
from .ir import Aval, Literal, Node, Var


# ----------------------------------------------------------------------------------------------
# Primitive records and the registry


@dataclass(frozen=True)
class Infix:
    """A binary operator template: ``{x} op {y}`` with Python precedence ``prec``.

    ``assoc`` is "left" (``a - b - c``), "right" (``a ** b ** c``) or "none" (comparisons, never chained).
    """

    op: str
    prec: int
    assoc: str = "left"


@dataclass(frozen=True)
class Prefix:
    """A unary operator template: ``op{x}``."""

    op: str
    prec: int


@dataclass(frozen=True)
class Block:
    """A statement that holds other statements (a loop): ``render(printer, node, args)`` returns the lines
    ``(code, note)`` of the whole block, asking ``printer`` for the lines of its nested graph."""

    render: Callable


@dataclass(frozen=True, eq=False)
class Primitive:
    """Everything tracegrad knows about one operation. Built by ``@primitive`` from a declaration."""

    name: str
    shape: Callable  # (*avals, **params) -> Aval, or raises ShapeError
    ref: Callable  # (*arrays, **params) -> array: the semantics (NumPy)
    emit: Any  # Infix | Prefix | "call({x}, ...)" template | callable(args, out_aval, **params) -> str or [lines]
    vjp: Callable | None = None  # (g, out, *inputs, **params) -> [cotangent or None per input]
    # (tangents, out, *inputs, **params) -> the output's tangent, or None; tangents holds a TracedArray or None
    # per input (at least one is not None). Several results: a list of tangents. See forward.py
    jvp: Callable | None = None
    kernel: Any = None  # a Python function in Numba's subset, or {name: function}, exposed by tracegrad.kernels;
    # an elementwise primitive's kernel takes scalars (codegen calls it inside a loop over arrays)
    simplify: Callable | None = None  # (*atoms, **params) -> an atom equal to the result, or None
    # A structural op a fused loop can read element by element: (loop indices, out shape, input shape, /,
    # **params) -> (the input's subscripts, conditions under which it is read, else 0), or None if it cannot
    loop_index: Callable | None = None
    # An op a fused loop over its input can compute by accumulation (``reduce_sum``, a slice's gradient
    # ``place``): (loop indices over the input, input shape, out shape, /, **params) -> the output's
    # subscripts each input element is added to, or None if it cannot
    accumulate_index: Callable | None = None
    # Cheap enough to compute again in every fused loop that reads it rather than store as an array
    # (None: the operators, ``+ - * / ** -x`` and comparisons, and aliases)
    cheap: bool | None = None
    cast_inputs: Any = ()  # input positions (or True: all) converted to the output dtype before binding
    view: bool = False  # the result may share memory with an input
    nondiff: bool = False  # no gradient flows through (comparisons, sign)
    elementwise: bool = False  # applied element by element; inputs broadcast implicitly to the output
    domain: Any = None  # test data: how to draw valid inputs (see tests/)
    # Several outputs: ``shape`` returns a tuple of avals, ``bind`` a list of values, ``vjp`` receives a list
    # of cotangents (None where an output has none) and a list of outputs
    multiple_results: bool = False
    # A node holding a nested graph that defines values of its own (a loop's index and carries):
    # (node) -> those Vars, named like any other value; the rest of the nested graph's inputs are the
    # node's inputs under other names
    scoped: Callable | None = None
    # (node, live outputs) -> the node without the outputs nothing reads, or None when all are needed
    prune: Callable | None = None
    doc: str = ""

    def __post_init__(self):
        if self.cheap is None:
            object.__setattr__(self, "cheap", self.elementwise and (
                isinstance(self.emit, (Infix, Prefix)) or self.emit == "{x}"))

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *args, **params):
        return bind(self, *args, **params)


def broadcast_subscripts(loop: list, out_shape: tuple, in_shape: tuple) -> list:
    """Subscripts reading an array of ``in_shape``, broadcast to ``out_shape``, at the loop indices
    ``loop``: size-1 axes read element 0, missing leading axes are dropped."""
    lead = len(out_shape) - len(in_shape)
    return ["0" if d == 1 and out_shape[lead + k] != 1 else loop[lead + k] for k, d in enumerate(in_shape)]


PRIMITIVES: dict[str, Primitive] = {}
NUMPY_FUNCTIONS: dict[Any, Callable] = {}  # np.exp -> implementation over TracedArrays
MATH_FUNCTIONS: dict[Any, Callable] = {}  # math.exp -> implementation


def primitive(cls) -> Primitive:
    """Read a declaration class into a registered ``Primitive``.

    The class is only a namespace; its attributes are the fields of ``Primitive`` plus optional
    ``numpy``/``math`` lists of the library functions that should trace to it. Returns the primitive,
    which is callable: on traced values it records a node, on NumPy values it computes ``ref``.
    """
    attrs = {k: v for k, v in vars(cls).items() if not k.startswith("__")}
    numpy_aliases = attrs.pop("numpy", ())
    math_aliases = attrs.pop("math", ())
    name = attrs.pop("name", cls.__name__)
    for key, value in attrs.items():
        if isinstance(value, staticmethod):
            attrs[key] = value.__func__
    prim = Primitive(name=name, doc=(cls.__doc__ or "").strip(), **attrs)
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is declared twice")
    PRIMITIVES[name] = prim
    for fn in numpy_aliases:
        NUMPY_FUNCTIONS[fn] = prim
    for fn in math_aliases:
        MATH_FUNCTIONS[fn] = prim
    return prim


# Functions and objects NumPy does not dispatch to traced values (np.array, np.zeros, np.r_, scipy.special.logsumexp,
# scipy.stats.norm): (module name, attribute) -> what a traced function sees instead. The tracer swaps them in
# for the user's own functions (a stand-in module, or the name a ``from ... import`` bound); each handles
# NumPy values as the original does.
MODULE_FUNCTIONS: dict[tuple[str, str], Any] = {}


def module_function(module: str, *names: str):
    """Register what ``module.name`` is replaced by inside traced functions (for functions that NumPy's
    ``__array_function__`` protocol does not reach, or that are not NumPy's)."""

    def register(fn):
        for name in names:
            MODULE_FUNCTIONS[(module, name)] = fn
        return fn

    return register


def numpy_function(*aliases, math=()):
    """Register a composite (built from primitives) as the traced version of NumPy/``math`` functions."""

    def register(fn):
        for alias in aliases:
            NUMPY_FUNCTIONS[alias] = fn
        for alias in math:
            MATH_FUNCTIONS[alias] = fn
        return fn

    return register


# ----------------------------------------------------------------------------------------------
# The builder: where nodes go while a graph is being recorded


class Builder:
    """Collects nodes for one graph. Entered as a context manager; builders nest (grad of grad)."""

    def __init__(self, name: str = "f"):
        self.name = name
        self.parent: Builder | None = None
        self.nodes: list[Node] = []
        self.inputs: list[Var] = []
        self.captured: list[tuple[Var, Any]] = []  # (input var, ndarray or outer TracedArray)
        self._captured_ids: dict[int, Var] = {}
        self.readers: dict = {}  # id(captured array) -> how to read it again on the next call
        self.source: SourceInfo | None = None  # set while a VJP rule runs: its nodes point at the forward line
        self.group: int | None = None
        self.backward = False  # set while autodiff records a backward pass
        self.watch = None  # the code object of the function being traced ...
        self.watched_frame = None  # ... and its frame, found on the stack when it records its first node

    def __enter__(self):
        self.parent = _state.builder
        _state.builder = self
        return self

    def __exit__(self, *exc):
        _state.builder = self.parent
        return False

    def new_input(self, aval: Aval, hint: str | None = None) -> "TracedArray":
        var = Var(aval, hint)
        self.inputs.append(var)
        return TracedArray(var, self)

    def capture(self, value, hint: str | None = None) -> Var:
        """An array (or a value traced by an enclosing builder) used by the graph but not passed to it.

        It becomes an extra graph input, read afresh on every call, never baked into the code.
        """
        key = id(value)
        if key in self._captured_ids:
            return self._captured_ids[key]
        if isinstance(value, TracedArray):
            aval = value.var.aval
        else:
            aval = Aval(value.shape, value.dtype)
        var = Var(aval, hint)
        self.captured.append((var, value))
        self._captured_ids[key] = var
        return var

    def wrap(self, var: Var) -> "TracedArray":
        return TracedArray(var, self)

    def add_node(self, prim: Primitive, inputs: tuple, params: dict, aval) -> Var:
        """Record ``prim[params](*inputs)``; ``aval`` is a tuple of avals for a primitive of several
        results, which returns the tuple of their Vars."""
        if self.watch is not None and self.watched_frame is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code is not self.watch:
                frame = frame.f_back
            self.watched_frame = frame
        outs = tuple(Var(a) for a in aval) if prim.multiple_results else (Var(aval),)
        source = self.source if self.source is not None or self.backward else user_source()
        self.nodes.append(Node(prim, inputs, params, outs[0], source, self.group, self.backward, also=outs[1:]))
        return outs if prim.multiple_results else outs[0]


class _State(threading.local):
    builder: Builder | None = None


_state = _State()


def current_builder() -> Builder | None:
    return _state.builder


# ----------------------------------------------------------------------------------------------
# bind: the one way a node is recorded


def _is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def bind(prim: Primitive, *args, **params):
    """Apply ``prim`` to ``args``: record a node when any argument is traced, else compute eagerly."""
    builder = _state.builder
    traced = [a for a in args if isinstance(a, TracedArray)]
    if not traced:
        return prim.ref(*(np.asarray(a) if isinstance(a, (list, tuple)) else a for a in args), **params)
    if builder is None:
        raise TracingError(
            f"a traced value was used after its trace ended (in {prim.name})",
            user_source(),
            "do not store traced values in globals or return them through side channels",
        )
    atoms = [_to_atom(a, builder) for a in args]
    weak = [a.value for a in atoms if type(a) is _WeakLiteral]
    if weak:  # Python scalars take the dtype of the computation they join (NumPy's weak scalars, NEP 50)
        dtype = np.result_type(*(a.aval.dtype for a in atoms if type(a) is not _WeakLiteral), *weak)
        atoms = [Literal(a.value, dtype) if type(a) is _WeakLiteral else a for a in atoms]
    try:
        aval = prim.shape(*(a.aval for a in atoms), **params)
    except ShapeError as e:  # name the operation the user wrote
        raise ShapeError(f"{prim.name} ({prim.doc.splitlines()[0]}): {e.message}" if prim.doc else e.message,
                         e.source, e.hint) from None
    if prim.cast_inputs:
        atoms = [
            _cast(a, aval.dtype, builder)
            if (prim.cast_inputs is True or i in prim.cast_inputs) and a.aval.dtype != aval.dtype
            else a
            for i, a in enumerate(atoms)
        ]
    if prim.simplify is not None:
        simpler = prim.simplify(*atoms, **params)
        if simpler is not None and simpler.aval == aval:
            return _wrap(simpler, builder)
    out = builder.add_node(prim, tuple(atoms), params, aval)
    if prim.multiple_results:
        return [TracedArray(v, builder) for v in out]
    return TracedArray(out, builder)


class _WeakLiteral(Literal):
    """A Python scalar whose dtype is decided by the values it meets (NEP 50)."""

    __slots__ = ()


def _to_atom(value, builder: Builder):
    if isinstance(value, TracedArray):
        if value.base is not None:
            _check_fresh(value)
        if value.builder is builder:
            return value.var
        if _is_ancestor(value.builder, builder):
            return builder.capture(value)
        raise TracingError("a traced value from another trace was used here", user_source())
    if _is_python_scalar(value):
        return _WeakLiteral(value, np.result_type(value))
    if isinstance(value, (list, tuple)):  # a shape passed where an array belongs is a bug in a rule
        raise TypeError("primitive inputs must be arrays; pass params such as shape= by keyword")
    if isinstance(value, np.generic):  # immutable: a constant
        return Literal(value.item(), value.dtype)
    if isinstance(value, np.ndarray):
        if value.ndim == 0 and builder.backward:  # a VJP rule's scalar, which NumPy made a 0-d array (0.0 == g)
            return Literal(value.item(), value.dtype)
        # The user's arrays, even 0-d ones: an array held by reference may change in place (Z[()] = 7)
        if value.dtype.kind not in "biuf":
            raise UnsupportedError(f"arrays of dtype {value.dtype} cannot take part in a traced computation", user_source())
        return builder.capture(value)
    raise UnsupportedError(f"cannot use a value of type {type(value).__name__} in a traced computation", user_source())


def _is_ancestor(outer: Builder, inner: Builder) -> bool:
    b = inner.parent
    while b is not None:
        if b is outer:
            return True
        b = b.parent
    return False


def _cast(atom, dtype, builder):
    if isinstance(atom, Literal):
        return Literal(atom.value, dtype)
    return bind(PRIMITIVES["convert"], TracedArray(atom, builder), dtype=np.dtype(dtype)).var


def _wrap(atom, builder):
    if isinstance(atom, Literal):
        return atom.aval.dtype.type(atom.value)
    return TracedArray(atom, builder)


# ----------------------------------------------------------------------------------------------
# TracedArray: NumPy-like values that record nodes


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
        raise UnsupportedError("// and % on traced values (they have no useful gradient)", user_source(),
                               "use / and np.where")

    __rfloordiv__ = __mod__ = __rmod__ = __floordiv__

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
