"""Spell a graph as flat Python source: one statement per node, in the style of the lecture notes.

    s2 = s0 + s1
    L = sigmoid(s3)
    grad_s3 = grad_L * (1 - L) * L

Names come from ``ir.assign_names`` (parameters, the user's own variable names, ``s0, s1, ...``,
``grad_<name>``). Inside one VJP rule, single-use temporaries are written inline, so a rule's nodes read
as one expression. The output is deterministic: the same graph always gives byte-identical text.
"""
from __future__ import annotations

import string

import numpy as np
from dataclasses import dataclass

from . import __version__
from .core import Infix, Prefix
from .ir import Aval, Graph, Literal, Var, assign_names, literal_source
from .passes import inlinable as _inlinable

ATOM = 16  # precedence of a name, literal or call


@dataclass(frozen=True)
class Module:
    """A generated Python module: its full source, the function it defines and the kernels it imports."""

    source: str
    function: str
    kernels: tuple


def _literal(atom: Literal):
    text = literal_source(atom.value, atom.aval.dtype)
    return text, 13 if text.startswith("-") else ATOM


def _wrap(expr, prec, need):
    return f"({expr})" if prec < need else expr


def _fill_template(template: str, args: list, params: dict) -> str:
    """Fill ``{x}``-style fields: input fields by order of first appearance, the rest from params."""
    fields = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in params and field not in fields:
            fields.append(field)
    out = []
    for literal_text, field, _, _ in string.Formatter().parse(template):
        out.append(literal_text)
        if field is None:
            continue
        if field in params:
            out.append(repr(params[field]))
            continue
        expr, prec = args[fields.index(field)]
        before = "".join(out).rstrip()
        after = template[template.index("{" + field + "}") + len(field) + 2:].lstrip()
        in_call = (before.endswith("(") or before.endswith(",")) and (after[:1] in (")", ","))
        out.append(expr if in_call or prec == ATOM or template == "{" + field + "}" else f"({expr})")
    return "".join(out)


class Arg(str):
    """An argument's spelling, carrying its aval for emit functions that depend on it."""

    def __new__(cls, text, aval):
        arg = super().__new__(cls, text)
        arg.aval = aval
        return arg


def spell(node, args: list, scalar: bool = False):
    """The expression (text, precedence) or statement lines for one node, given its arguments' spellings.

    ``scalar``: the node is computed one element at a time (inside a fused loop)."""
    emit = node.primitive.emit
    if isinstance(emit, Infix):
        (a, pa), (b, pb) = args
        left_need = emit.prec + (emit.assoc in ("right", "none"))
        right_need = emit.prec + (emit.assoc in ("left", "none"))
        return f"{_wrap(a, pa, left_need)} {emit.op} {_wrap(b, pb, right_need)}", emit.prec
    if isinstance(emit, Prefix):
        (a, pa), = args
        inner = _wrap(a, pa, emit.prec)
        if inner.startswith(emit.op):
            inner = f"({inner})"
        return f"{emit.op}{inner}", emit.prec
    if isinstance(emit, str):
        text = _fill_template(emit, args, node.params)
        prec = args[0][1] if emit == "{x}" else ATOM
        return text, prec
    scalar_aval = lambda aval: Aval((), aval.dtype) if scalar else aval
    atoms = [Arg(_wrap(a, p, ATOM), scalar_aval(atom.aval)) for (a, p), atom in zip(args, node.inputs)]
    result = emit(atoms, scalar_aval(node.out.aval), **node.params)
    if isinstance(result, list):
        return result
    return result, 13 if result.startswith("-") else ATOM


def _finite_check(name: str, node) -> str:
    where = f" at {node.source.short()}: {node.source.line}" if node.source is not None else ""
    message = f"{name} is not finite ({'backward' if node.backward else 'forward'} pass){where}"
    test = f"np.isfinite({name})" if not node.out.aval.shape else f"np.all(np.isfinite({name}))"
    return f"if not {test}: raise NonFiniteError({message!r})"


def _kernels_of(node) -> list:
    kernel = node.primitive.kernel
    if kernel is None:
        return []
    return list(kernel) if isinstance(kernel, dict) else [node.primitive.name]


def _kernel_names(nodes) -> tuple:
    names = set()
    for node in nodes:
        names.update(_kernels_of(node))
        for value in node.params.values():
            if isinstance(value, Graph):
                names.update(_kernel_names(value.nodes))
    return tuple(sorted(names))


def _empty(shape, dtype) -> str:
    dtype = np.dtype(dtype)
    return f"np.empty({shape!r})" if dtype == np.float64 else f"np.empty({shape!r}, np.{dtype.name})"


def _fused_lines(node, names: dict) -> list:
    """A fused node as a loop nest: the body's statements run once per element, on scalars."""
    body, shape = node.params["body"], node.params["shape"]
    index = [f"i{d}" for d in range(len(shape))]
    inside = {member.out for member in body.nodes}

    uses, consumer_group = {}, {}
    for member in body.nodes:
        for a in member.inputs:
            uses[a] = uses.get(a, 0) + 1
            consumer_group[a] = member.group
    exprs = {}  # single-use temporaries of one VJP rule, written inline as outside loops

    def read(atom):
        if isinstance(atom, Literal):
            return _literal(atom)
        if atom in exprs:
            return exprs.pop(atom)
        if atom in inside:
            return names[atom], ATOM
        ashape = atom.aval.shape
        if not ashape:
            return names[atom], ATOM
        lead = len(shape) - len(ashape)  # broadcasting: size-1 axes read element 0, missing axes are dropped
        at = ["0" if d == 1 and shape[lead + k] != 1 else index[lead + k] for k, d in enumerate(ashape)]
        return f"{names[atom]}[{', '.join(at)}]", ATOM

    root = names[node.out]
    lines = [f"{root} = {_empty(shape, node.out.aval.dtype)}"]
    for d, n in enumerate(shape):
        lines.append("    " * d + f"for {index[d]} in range({n}):")
    indent = "    " * len(shape)
    for member in body.nodes:
        if member.primitive.name == "broadcast_to":  # reading the input with broadcast indexing is enough
            spelled = read(member.inputs[0])
        else:
            spelled = spell(member, [read(a) for a in member.inputs], scalar=True)
        out = member.out
        if out is not node.out and _inlinable(member, uses, consumer_group):
            exprs[out] = spelled
            continue
        target = f"{root}[{', '.join(index)}]" if out is node.out else names[out]
        lines.append(f"{indent}{target} = {spelled[0]}")
    return [line.replace("{", "{{").replace("}", "}}") for line in lines]


def generate(graph: Graph, function: str | None = None, comments: bool = True, check_finite: bool = False) -> Module:
    """Generate the module that defines ``function(*graph.inputs)`` returning ``graph.outputs``.

    With ``check_finite``, every floating-point value is checked as soon as it is computed and the
    first NaN or inf raises ``NonFiniteError`` naming the value, the pass and the user's line.
    """
    function = function or graph.name
    all_kernels = _kernel_names(graph.nodes)
    loop_indices = {f"i{d}" for node in graph.nodes if "body" in node.params for d in range(len(node.params["shape"]))}
    names = assign_names(graph, reserved=frozenset(all_kernels) | {function} | loop_indices)
    uses: dict = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses[a] = uses.get(a, 0) + 1
    for out in graph.outputs:
        if isinstance(out, Var):
            uses[out] = uses.get(out, 0) + 2  # outputs are never inlined
    consumer_group = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                consumer_group[a] = node.group

    body: list[str] = []
    exprs: dict = {}  # inlined temporaries: var -> (text, precedence)
    defined_by: dict = {}
    last_source, in_backward = None, False
    used_kernels = set()
    for node in graph.nodes:
        defined_by[node.out] = node
        args = [_literal(a) if isinstance(a, Literal) else exprs.pop(a, None) or (names[a], ATOM) for a in node.inputs]
        if node.primitive.emit is None:  # a fused loop
            spelled = _fused_lines(node, names)
            kernels = _kernel_names(node.params["body"].nodes)
        else:
            spelled = spell(node, args)
            kernels = _kernels_of(node)
        text = "\n".join(spelled if isinstance(spelled, list) else [spelled[0]])
        used_kernels.update(k for k in kernels if k + "(" in text)
        out = node.out
        if isinstance(spelled, tuple) and _inlinable(node, uses, consumer_group):
            exprs[out] = spelled
            continue
        note = None
        if comments:
            if node.backward and not in_backward:
                body.append(("# backward pass", None))
                in_backward, last_source = True, None
            if node.source is not None and node.source != last_source:
                note = node.source.short()
                last_source = node.source
        lines = [line.format(out=names[out]) for line in spelled] if isinstance(spelled, list) else \
            [f"{names[out]} = {spelled[0]}"]
        body.extend((line, note if i == 0 else None) for i, line in enumerate(lines))
        if check_finite and out.aval.dtype.kind == "f":
            body.append((_finite_check(names[out], node), None))

    returns = []
    for i, out in enumerate(graph.outputs):
        if isinstance(out, Literal):
            returns.append(_literal(out)[0])
            continue
        name = names[out]
        if out.aval.ndim and (out in graph.inputs or defined_by[out].primitive.view or out in graph.outputs[:i]):
            name = f"np.copy({name})"  # never hand back the caller's own array, a view of it, or one array twice
        returns.append(name)
    body.append(("return " + ", ".join(returns) + ("," if len(returns) == 1 else ""), None))
    width = min(max((len(code) for code, note in body if note), default=0), 56) + 2
    text = "".join(f"    {code.ljust(max(width, len(code) + 2))}# {note}\n" if note else f"    {code}\n"
                   for code, note in body)

    header = [f"# Generated by tracegrad {__version__} from graph {graph.name}. Do not edit:",
              "# the file is named by the hash of this text.",
              "import numpy as np"]
    if check_finite:
        header.append("from tracegrad.errors import NonFiniteError")
    if used_kernels:
        header.append(f"from tracegrad.kernels import {', '.join(sorted(used_kernels))}")
    params = ", ".join(names[v] for v in graph.inputs)
    source = "\n".join(header) + "\n\n\n" + f"def {function}({params}):\n" + text
    return Module(source, function, tuple(sorted(used_kernels)))
