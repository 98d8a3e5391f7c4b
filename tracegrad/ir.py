"""The SSA graph IR: abstract values, variables, nodes, graphs; a verifier and a text printer.

This module is plain data. It knows nothing of tracing, NumPy dispatch or code generation:
``core`` builds graphs, ``autodiff`` and ``passes`` transform them, ``codegen`` spells them.
"""
from __future__ import annotations

import keyword
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SourceInfo, TracegradError

_DTYPE_NAMES = {
    np.dtype(np.float64): "f64",
    np.dtype(np.float32): "f32",
    np.dtype(np.int64): "i64",
    np.dtype(np.int32): "i32",
    np.dtype(np.bool_): "bool",
}


def dtype_name(dtype: np.dtype) -> str:
    return _DTYPE_NAMES.get(np.dtype(dtype), np.dtype(dtype).name)


@dataclass(frozen=True, slots=True)  # (slots: made for every node, so kept small)
class Aval:
    """What the compiler knows about a value: its shape and dtype. Scalars have shape ``()``."""

    shape: tuple
    dtype: np.dtype

    def __post_init__(self):  # (made for every node: the usual tuple of ints and dtype are kept as they are)
        shape = self.shape
        if type(shape) is not tuple or not all(type(d) is int for d in shape):
            object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        if not isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    def __str__(self) -> str:
        return f"{dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"


class Var:
    """One SSA value: assigned exactly once, by a node or as a graph input.

    ``hint`` is the preferred display name (a parameter name or the user's own variable name);
    ``grad_of`` marks the complete cotangent of another value, displayed as ``grad_<its name>``;
    ``tangent_of`` its tangent in forward mode, displayed as ``tan_<its name>``; ``element_of``, in a loop
    nest's body, the array-level value it is one element of, whose name it takes.
    The printer and code generator make names unique.
    """

    __slots__ = ("aval", "hint", "grad_of", "tangent_of", "element_of")

    def __init__(self, aval: Aval, hint: str | None = None, grad_of: "Var | None" = None):
        self.aval = aval
        self.hint = hint
        self.grad_of = grad_of
        self.tangent_of = None
        self.element_of = None

    def __repr__(self):
        return f"Var({self.hint or '?'}: {self.aval})"


_SCALAR_AVALS: dict = {}  # dtype -> Aval((), dtype): every literal of a dtype shares one (avals are immutable)


class Literal:
    """A scalar constant written into the graph, with the dtype it takes part in the computation as."""

    __slots__ = ("value", "aval")

    def __init__(self, value, dtype):
        if not isinstance(dtype, np.dtype):
            dtype = np.dtype(dtype)
        self.value = dtype.type(value).item()  # a plain Python bool, int or float, exact
        aval = _SCALAR_AVALS.get(dtype)
        self.aval = aval if aval is not None else _SCALAR_AVALS.setdefault(dtype, Aval((), dtype))

    def __repr__(self):
        return f"Literal({self.value!r}: {self.aval})"


Atom = Var | Literal


@dataclass(eq=False, slots=True)
class Node:
    """One equation ``out = primitive[params](*inputs)``.

    ``source`` points at the user's line; ``group`` numbers the nodes one VJP rule made together
    (codegen may inline single-use temporaries inside a group); ``backward`` marks the nodes of a
    backward pass. ``also`` holds further outputs: only a fused loop has them (one loop computing
    several arrays or sums).
    """

    primitive: Any  # core.Primitive
    inputs: tuple
    params: dict
    out: Var
    source: SourceInfo | None = None
    group: int | None = None
    backward: bool = False
    also: tuple = ()

    @property
    def outs(self) -> tuple:
        return (self.out,) + self.also


@dataclass(eq=False)
class Graph:
    """Inputs, nodes in a valid order, outputs. Printable with ``str(graph)``."""

    name: str
    inputs: list
    nodes: list
    outputs: list
    n_args: int = -1  # inputs after the first n_args are captured arrays, not user arguments
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.n_args < 0:
            self.n_args = len(self.inputs)

    def __str__(self) -> str:
        return format_graph(self)

    def names(self) -> dict:
        """{Var: name}: the names ``print(graph)`` and the generated code give the inputs and the values
        computed at the top level (``x``, ``s3``, ``grad_x``)."""
        return assign_names(self)

    def verify(self) -> "Graph":
        verify(self)
        return self


# ----------------------------------------------------------------------------------------------
# Naming: one place decides the display name of every value, for the printer and for codegen.

RESERVED = frozenset(
    set(keyword.kwlist)
    | {"np", "numpy", "math", "None", "True", "False", "range", "len", "float", "int", "abs", "min", "max"}
)


def ascii_name(text: str) -> str:
    """``text`` spelled with ASCII letters, digits and underscores only: ``"σ²"`` is ``"sigma2"``,
    ``"ｙ"`` is ``"y"``, ``"a-b"`` is ``"a_b"``. Python itself normalises non-ASCII identifiers (NFKC), so
    two names a user keeps apart may be one name in generated code: generated names are ASCII, and made
    unique after this."""
    out = []
    for char in str(text):
        if char.isascii():
            out.append(char if char.isalnum() or char == "_" else "_")
            continue
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()  # é → e, ﬁ → fi, ² → 2
        if plain:
            out.append("".join(c if c.isalnum() or c == "_" else "_" for c in plain))
            continue
        description = unicodedata.name(char, "")
        if " LETTER " in description:  # GREEK SMALL LETTER SIGMA → sigma
            letter = description.split(" LETTER ", 1)[1].lower().replace(" ", "_").replace("-", "_")
            out.append(letter.capitalize() if " CAPITAL " in description else letter)
        else:
            out.append(f"u{ord(char):x}")
    return "".join(out)


def identifier(text: str, fallback: str = "v") -> str:
    """A plain-ASCII Python identifier for ``text`` (``ascii_name``), prefixed ``fallback_`` when that
    alone is not one (empty, a leading digit, a keyword): every name the generated code defines."""
    name = ascii_name(text)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = f"{fallback}_{name}".rstrip("_") or fallback
    return name


def is_valid_name(name: str) -> bool:
    """A user's name worth keeping for a value: an identifier not reserved and not private. Only a hint:
    ``assign_names`` spells every name in ASCII and makes it unique."""
    return isinstance(name, str) and name.isidentifier() and name not in RESERVED and not name.startswith("_")


def _hint_name(hint) -> str | None:
    """The ASCII name a hinted value gets, when its hint gives a usable one."""
    if not hint:
        return None
    name = ascii_name(hint)
    return name if is_valid_name(name) else None


def defined_vars(nodes) -> list:
    """The values the nodes define, in order, including those inside nested graphs (a loop's index and
    carries; a loop nest's values as the array-level nodes it was lowered from define them)."""
    out = []
    for node in nodes:
        array_level = getattr(node.primitive, "array_level", None)
        if array_level is not None:
            inner = defined_vars(array_level(node))
            out.extend(inner)
            out.extend(v for v in node.outs if v not in inner)
            continue
        scoped_by = getattr(node.primitive, "scoped", None)
        if scoped_by is None and not (node.params and any(isinstance(v, Graph) for v in node.params.values())):
            out.append(node.out)  # (most nodes: their outputs alone)
            out.extend(node.also)
            continue
        scoped = list(scoped_by(node)) if scoped_by else []
        inner = scoped + [v for value in node.params.values() if isinstance(value, Graph)
                          for v in defined_vars(value.nodes)]
        out.extend(inner)  # a loop's outputs where its body computes them
        out.extend(v for v in node.outs if v not in inner)
    return out


def assign_names(graph: Graph, reserved=frozenset()) -> dict:
    """Map each Var of ``graph`` to a unique, deterministic display name.

    Hinted values keep their hint (spelled in ASCII, ``ascii_name``) when it is free, cotangents are
    ``grad_<name>``, tangents ``tan_<name>``, the rest are numbered ``s0, s1, ...`` in the order they are defined. ``reserved``
    holds names the caller needs for itself (kernel names, the function's own name). Every name is an
    ASCII identifier and no two are equal, whatever the user's names (``"ｙ"`` and ``"y"`` are ``y`` and
    ``y_1``).
    """
    order = list(graph.inputs) + defined_vars(graph.nodes)
    hinted = {v: _hint_name(v.hint) for v in order if v.hint}
    taken = set(reserved) | {name for name in hinted.values() if name}
    names: dict = {}
    used: set = set(reserved)
    counter = 0

    def unique(base):
        if base not in used:
            return base
        k = 1
        while f"{base}_{k}" in used or f"{base}_{k}" in taken:
            k += 1
        return f"{base}_{k}"

    present = set(order)
    waiting: dict = {}  # value -> its (co)tangents defined before it (a loop computing both moved it later)

    def name(var, text):
        names[var] = text
        used.add(text)
        for derived, prefix in waiting.pop(var, ()):
            name(derived, unique(prefix + text))

    for var in order:
        if var in names:  # a value several fused loops compute again
            continue
        of, prefix = (var.grad_of, "grad_") if var.grad_of is not None else (var.tangent_of, "tan_")
        if hinted.get(var):
            name(var, unique(hinted[var]))
        elif of is not None and of in names:
            name(var, unique(prefix + names[of]))
        elif of is not None and of in present:
            waiting.setdefault(of, []).append((var, prefix))
        else:
            while f"s{counter}" in taken or f"s{counter}" in used:
                counter += 1
            name(var, f"s{counter}")
    # a loop nest's scalars: an element of a value has its name; index values and reads are written
    # where they are used, and named last (for print(graph) only; each loop's index values are its own:
    # i0 in every loop, unless a value has that name)
    values = set(used)
    for var in _nested_values(graph.nodes):
        if var in names:
            continue
        if var.element_of is not None and var.element_of in names:
            names[var] = names[var.element_of]
            continue
        index = _hint_name(var.hint)
        if index:  # (an index value)
            names[var] = index if index not in values else unique(index)
            continue
        while f"s{counter}" in taken or f"s{counter}" in used:
            counter += 1
        name(var, f"s{counter}")
    return names


def nested_graphs(nodes):
    """Every graph nested in ``nodes``' parameters (loop bodies), bodies of bodies included (a walk with
    a stack: bodies nest)."""
    todo = [list(nodes)]
    while todo:
        for node in todo.pop():
            for value in node.params.values():
                if isinstance(value, Graph):
                    yield value
                    todo.append(value.nodes)


def _nested_values(nodes) -> list:
    """Every value of every nested graph, inputs included."""
    out = []
    for graph in nested_graphs(nodes):
        out.extend(graph.inputs)
        out.extend(v for n in graph.nodes for v in n.outs)
    return out


def literal_source(value, dtype) -> str:
    """How a scalar constant is written in generated code, exactly and with its dtype.

    float64 and int64 constants are plain Python literals; others are wrapped (``np.float32(0.5)``)
    because Numba would otherwise compute in float64.
    """
    dtype = np.dtype(dtype)
    value = dtype.type(value).item()
    if isinstance(value, float) and not np.isfinite(value):
        text = "np.nan" if np.isnan(value) else ("np.inf" if value > 0 else "-np.inf")
    else:
        text = repr(value)
    if dtype in (np.dtype(np.float64), np.dtype(np.int64), np.dtype(np.bool_)):
        return text
    return f"np.{dtype.name}({text})"


def format_atom(atom, names: dict) -> str:
    if isinstance(atom, Literal):
        return repr(atom.value)
    return names[atom]


def format_params(params: dict) -> str:
    if not params:
        return ""
    return "[" + ", ".join(f"{k}={_format_param(v)}" for k, v in params.items()) + "]"


def _format_param(value) -> str:
    if isinstance(value, np.dtype):
        return dtype_name(value)
    if isinstance(value, tuple) and value and all(isinstance(v, Aval) for v in value):
        return "(" + ", ".join(map(str, value)) + ")"  # (a loop nest's outputs: f64[], f64[10])
    return repr(value)


def format_graph(graph: Graph) -> str:
    names = assign_names(graph)
    args = ", ".join(f"{names[v]}: {v.aval}" for v in graph.inputs)
    lines = [f"graph {graph.name}({args}):"]
    _format_nodes(graph.nodes, names, lines, "  ")
    lines.append("  return " + ", ".join(format_atom(v, names) for v in graph.outputs))
    return "\n".join(lines)


def _format_nodes(nodes, names, lines, indent):
    for node in nodes:
        ins = " ".join(format_atom(a, names) for a in node.inputs)
        params = {k: v for k, v in node.params.items() if not isinstance(v, Graph)}
        outs = ", ".join(f"{names[v]}: {v.aval}" for v in node.outs)
        lines.append(f"{indent}{outs} = {node.primitive.name}{format_params(params)} {ins}".rstrip())
        for value in node.params.values():
            if not isinstance(value, Graph):
                continue
            if getattr(node.primitive, "scoped", None):  # a block: its own values, and the outer ones it reads
                names = {**names, **outer_names(node, value, names)}
                lines.append(f"{indent}    ({', '.join(names[v] for v in node.primitive.scoped(node))}) ->")
                _format_nodes(value.nodes, names, lines, indent + "      ")
                lines.append(f"{indent}      return " + ", ".join(format_atom(v, names) for v in value.outputs))
            else:
                _format_nodes(value.nodes, names, lines, indent + "    ")


def outer_names(node: Node, body: Graph, names: dict) -> dict:
    """A block's nested-graph inputs that are not its own (``scoped``) values are its node's inputs, in
    order, under the names (or literals) of those."""
    own = set(node.primitive.scoped(node))
    rest = [v for v in body.inputs if v not in own]
    return {v: format_atom(a, names) for v, a in zip(rest, node.inputs)}


# ----------------------------------------------------------------------------------------------
# Verifier


class IRError(TracegradError):
    """An ill-formed graph: always a bug in a transformation, never the user's fault."""


def verify(graph: Graph) -> None:
    """Check SSA form, definition before use, and every node's aval against its primitive's shape rule."""
    defined: set = set()
    for var in graph.inputs:
        if not isinstance(var, Var):
            raise IRError(f"graph {graph.name}: input {var!r} is not a Var")
        if var in defined:
            raise IRError(f"graph {graph.name}: input {var!r} appears twice")
        defined.add(var)
    for i, node in enumerate(graph.nodes):
        for atom in node.inputs:
            if isinstance(atom, Var) and atom not in defined:
                raise IRError(f"graph {graph.name}: node {i} ({node.primitive.name}) uses {atom!r} before it is defined")
            if not isinstance(atom, (Var, Literal)):
                raise IRError(f"graph {graph.name}: node {i} has a non-atom input {atom!r}")
        for out in node.outs:
            if out in defined:
                raise IRError(f"graph {graph.name}: {out!r} is assigned twice (node {i})")
            defined.add(out)
        expected = node.primitive.shape(*(a.aval for a in node.inputs), **node.params)
        if getattr(node.primitive, "multiple_results", False):
            expected, got = tuple(expected), tuple(v.aval for v in node.outs)
            if expected != got:
                raise IRError(f"graph {graph.name}: node {i} ({node.primitive.name}) has avals "
                              f"{', '.join(map(str, got))}, but its shape rule gives {', '.join(map(str, expected))}")
            continue
        if expected != node.out.aval:
            raise IRError(
                f"graph {graph.name}: node {i} ({node.primitive.name}) has aval {node.out.aval}, "
                f"but its shape rule gives {expected}"
            )
    for out in graph.outputs:
        if isinstance(out, Var) and out not in defined:
            raise IRError(f"graph {graph.name}: output {out!r} is never defined")
