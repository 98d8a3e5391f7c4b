"""The primitive registry: ``Primitive`` records, the ``@primitive`` decorator that reads a declaration
class into one, and the tables NumPy and ``math`` functions are looked up in (``NUMPY_FUNCTIONS``,
``MATH_FUNCTIONS``). A primitive is declared once (see ``primitives/``): its shape rule, NumPy reference, VJP
and JVP written with ``TracedArray`` operations, the way codegen spells it, and its NumPy/``math`` aliases.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .notation import Infix, Prefix


@dataclass(frozen=True)
class KinkAt:
    """Where a primitive is not differentiable, for ``check_grad``'s kink probe.

    ``watch(node)`` gives the values to watch (atoms of the graph: inputs, the output), ``signature(*values,
    **params)`` an array that changes exactly when a step crosses a kink (the sign of ``x`` for abs, of
    ``x - y`` for maximum, ``floor(x)`` for floor, the positions of the extrema for ``np.max``), and ``text``
    what the report says, or a function (node, users: the nodes reading its output) -> that text.
    """

    watch: Callable
    signature: Callable
    text: Any


def sign_of(*values, **params):
    """A kink signature: the sign of one value, or of the difference of two (a tie)."""
    return np.sign(values[0] if len(values) == 1 else values[0] - values[1])


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
    # A structural op a loop nest can read element by element: (index values, out shape, input shape, /,
    # **params) -> (the input's subscripts, conditions under which it is read, else 0), or None if it cannot.
    # Index values are ``primitives.nest.Index``: ``i - 1``, ``i >= 1`` add nodes to the loop's body (IR, not
    # text); a subscript may also be an int
    loop_index: Callable | None = None
    # An op a loop nest over its input can compute by accumulation (``reduce_sum``, a slice's gradient
    # ``place``): (index values over the input, input shape, out shape, /, **params) -> the output's
    # subscripts (``Index`` values or ints, as for ``loop_index``) each input element is added to, or None
    accumulate_index: Callable | None = None
    # Cheap enough to compute again in every fused loop that reads it rather than store as an array
    # (None: the operators, ``+ - * / ** -x`` and comparisons, and aliases)
    cheap: bool | None = None
    cast_inputs: Any = ()  # input positions (or True: all) converted to the output dtype before binding
    # the result may share memory with an input; for several outputs, a function (node, out) -> bool
    view: bool | Callable = False
    # How to write the result into an existing array ``{out}`` (a workspace buffer) instead of a new one:
    # a template like ``emit``'s, input fields first (``"np.dot({a}, {b}, {out})"``), or None
    into: str | None = None
    nondiff: bool = False  # no gradient flows through (comparisons, sign)
    elementwise: bool = False  # applied element by element; inputs broadcast implicitly to the output
    # Test data: how to draw valid inputs, a name from ``testing.DOMAINS`` ("real", "positive", ...), a function
    # (rng, shape) -> float64 array, or a tuple of those, one per input. A differentiable elementwise primitive
    # must declare it: the registry-driven suite (tests/test_primitives.py) builds its cases from it
    domain: Any = None
    # The graph-level simplification ``passes.simplify`` applies, beside ``simplify`` (which sees only the
    # inputs, while building): (node, producer) -> None (keep the node), an atom equal to its value, or a
    # simpler node computing it; ``producer(atom)`` is the node defining an input (aliases looked through) or None
    rewrite: Callable | None = None
    alias: bool = False  # the output is the input under another name (``copy``): passes look through it
    broadcasts: bool = False  # only broadcasts its input, as an elementwise node does anyway (``broadcast_to``)
    # How ``tg.draw`` labels the node: a short text ("σ"; an operator's symbol by default, else the name), with
    # literal inputs filled in, or a function (node) -> the whole label
    label: Any = None
    # Where it is not differentiable (abs at 0, a tie of maximum): ``check_grad`` watches it (``KinkAt``)
    kink: "KinkAt | None" = None
    # For the generated primitives page (tools/make_primitive_docs.py): what you write to get it (markdown;
    # default: its operator and its NumPy/``math`` aliases) and its backward rule (default: the expressions
    # its VJP returns, when it is one ``return [...]``)
    usage: str | None = None
    backward: str | None = None
    # Several outputs: ``shape`` returns a tuple of avals, ``bind`` a list of values, ``vjp`` receives a list
    # of cotangents (None where an output has none) and a list of outputs
    multiple_results: bool = False
    # A node holding a nested graph that defines values of its own (a loop's index and carries):
    # (node) -> those Vars, named like any other value; the rest of the nested graph's inputs are the
    # node's inputs under other names
    scoped: Callable | None = None
    # A loop nest, whose body holds scalars: (node) -> the array-level nodes it was lowered from, in the
    # program's order, which name its values (``ir.assign_names``) and are drawn for it
    array_level: Callable | None = None
    # (node, live outputs) -> the node without the outputs nothing reads, or None when all are needed
    prune: Callable | None = None
    # For ``vmap`` (batching.py): (batched, *inputs, **params) -> the result for a batch of examples, each
    # input with ``batched[k]`` True holding the batch on a new leading axis (the result too), or None when
    # it has no rule for that case (the node then runs in a loop over the batch). Elementwise: not needed
    batch: Callable | None = None
    doc: str = ""

    def __post_init__(self):
        if self.cheap is None:
            object.__setattr__(self, "cheap", self.elementwise and (
                isinstance(self.emit, (Infix, Prefix)) or self.emit == "{x}"))

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *args, **params):
        return _builder.bind(self, *args, **params)



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


# At the end, as a module: builder imports this one (a primitive is callable: it calls builder.bind)
from . import builder as _builder  # noqa: E402
