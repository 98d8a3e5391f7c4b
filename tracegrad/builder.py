"""The graph builder: where nodes go while a graph is being recorded, and ``bind``, the one function that
records a node. The tracer (forward) and the VJP rules (backward) both go through it, so the backward pass
is an ordinary graph in the same IR."""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from .errors import ShapeError, SourceInfo, TracingError, UnsupportedError, frame_source, user_frame, user_source
from .ir import Aval, Literal, Node, Var
from .registry import PRIMITIVES, Primitive


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
        self.helper_frames: dict = {}  # id -> frame of the user's other functions (helpers) that recorded nodes

    def __enter__(self):
        self.parent = _state.builder
        _state.builder = self
        ENTERED.add(self)
        return self

    def __exit__(self, *exc):
        _state.builder = self.parent
        ENTERED.discard(self)
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
        if self.source is not None or self.backward:
            source = self.source
        else:
            frame = user_frame()
            source = frame_source(frame) if frame is not None else None
            if frame is not None and frame.f_code is not self.watch and self.watch is not None:
                self.helper_frames.setdefault(id(frame), frame)  # its locals name values when it returns
        if not prim.multiple_results:
            out = Var(aval)
            self.nodes.append(Node(prim, inputs, params, out, source, self.group, self.backward))
            return out
        outs = tuple(Var(a) for a in aval)
        self.nodes.append(Node(prim, inputs, params, outs[0], source, self.group, self.backward, also=outs[1:]))
        return outs


class _State(threading.local):
    builder: Builder | None = None


_state = _State()
# The builders entered, in any thread: while it is empty nobody is tracing, which a guard can test for
# much faster than it can read the thread-local ``_state.builder`` (its calls then take the full path)
ENTERED: set = set()


def current_builder() -> Builder | None:
    return _state.builder


# ----------------------------------------------------------------------------------------------
# bind: the one way a node is recorded


def _is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def bind(prim: Primitive, *args, **params):
    """Apply ``prim`` to ``args``: record a node when any argument is traced, else compute eagerly."""
    builder = _state.builder
    for a in args:
        if isinstance(a, TracedArray):
            break
    else:
        return prim.ref(*(np.asarray(a) if isinstance(a, (list, tuple)) else a for a in args), **params)
    if builder is None:
        raise TracingError(
            f"a traced value was used after its trace ended (in {prim.name})",
            user_source(),
            "do not store traced values in globals or return them through side channels",
        )
    # (this builder's own values, the usual case, are read without a call)
    # (a view of an array, ``base`` set, is checked for being stale: _to_atom)
    atoms = [a.var if type(a) is TracedArray and a.builder is builder and a.base is None else _to_atom(a, builder)
             for a in args]
    weak = [a.value for a in atoms if type(a) is _WeakLiteral]
    if weak:  # Python scalars take the dtype of the computation they join (NumPy's weak scalars, NEP 50)
        strong = [a.aval.dtype for a in atoms if type(a) is not _WeakLiteral]
        dtype = strong[0]
        if not _WEAK_PROMOTION or dtype.kind != "f" or not dtype.isnative or any(d is not dtype for d in strong):
            dtype = np.result_type(*strong, *weak)  # (with floats of one dtype, a Python scalar takes it)
        atoms = [Literal(a.value, dtype) if type(a) is _WeakLiteral else a for a in atoms]
    try:
        aval = prim.shape(*[a.aval for a in atoms], **params)
    except ShapeError as e:  # name the operation the user wrote
        raise ShapeError(f"{prim.name} ({prim.doc.splitlines()[0]}): {e.message}" if prim.doc else e.message,
                         e.source, e.hint) from None
    if prim.cast_inputs and any(a.aval.dtype is not aval.dtype for a in atoms):  # (else nothing to convert)
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


_PYTHON_DTYPES = {float: np.dtype(np.float64), bool: np.dtype(np.bool_)}  # np.result_type of each
# NEP 50 (NumPy 2): a Python scalar meeting floats of one dtype takes that dtype, whatever its value (NumPy 1's
# value-based promotion makes float32 and 1e300 float64: there bind always asks np.result_type)
_WEAK_PROMOTION = np.result_type(np.float32, 1e300) == np.float32


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
        dtype = _PYTHON_DTYPES.get(type(value))
        return _WeakLiteral(value, dtype if dtype is not None else np.result_type(value))
    if isinstance(value, (list, tuple)):  # a shape passed where an array belongs is a bug in a rule
        raise TypeError("primitive inputs must be arrays; pass params such as shape= by keyword")
    if isinstance(value, (complex, np.complexfloating)) or isinstance(value, np.ndarray) and value.dtype.kind == "c":
        raise UnsupportedError(f"complex numbers ({_describe(value)}) are not supported in a traced computation yet",
                               user_source(), COMPLEX_HINT)
    if isinstance(value, np.generic):  # immutable: a constant
        if value.dtype.kind not in "biuf":
            raise UnsupportedError(f"a NumPy scalar of dtype {value.dtype} cannot take part in a traced computation",
                                   user_source())
        return Literal(value.item(), value.dtype)
    if isinstance(value, np.ndarray):
        if value.ndim == 0 and builder.backward:  # a VJP rule's scalar, which NumPy made a 0-d array (0.0 == g)
            return Literal(value.item(), value.dtype)
        # The user's arrays, even 0-d ones: an array held by reference may change in place (Z[()] = 7)
        if value.dtype.kind not in "biuf":
            raise UnsupportedError(f"arrays of dtype {value.dtype} cannot take part in a traced computation", user_source())
        return builder.capture(value)
    raise UnsupportedError(f"cannot use a value of type {type(value).__name__} in a traced computation", user_source())


COMPLEX_HINT = "tracegrad differentiates real functions: split complex values into real and imaginary parts"


def _describe(value) -> str:
    return f"an array of dtype {value.dtype}" if isinstance(value, np.ndarray) else repr(value)


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



# At the end: traced.py reads ``bind`` from this module (the package imports registry, builder, traced in order)
from .traced import TracedArray, _check_fresh  # noqa: E402
