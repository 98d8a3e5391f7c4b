"""Spell a graph as flat Python source: one statement per node, in the style of the lecture notes.

    s2 = s0 + s1
    L = sigmoid(s3)
    grad_s3 = grad_L * (1 - L) * L

Names come from ``ir.assign_names`` (parameters, the user's own variable names, ``s0, s1, ...``,
``grad_<name>``). Inside one VJP rule, single-use temporaries are written inline, so a rule's nodes read
as one expression. The output is deterministic: the same graph always gives byte-identical text.
"""
from __future__ import annotations

import hashlib
import re
import string

import numpy as np
from dataclasses import dataclass, field

from . import __version__
from .core import Block, Conditional, Infix, Prefix
from .ir import RESERVED, Aval, Graph, Literal, Var, ascii_name, assign_names, identifier, literal_source
from .notation import inlinable as _inlinable

ATOM = 16  # precedence of a name, literal or call
CONDITIONAL = 1  # precedence of ``x if c else y``: its condition and first branch need at least ``or``'s (2)
# Numba's compile time grows faster than linearly with a function's length: code longer than
# SPLIT_LINES is written as parts of about PART_LINES lines, each compiled on its own (16,000 lines of
# scalar code: 97 s in one function, 46 s in parts; benchmarks/compile_time.py). Shorter code is not split: passing many values
# between parts costs more to compile than it saves (4,000 lines: 6.8 s whole, 8.9 s in parts).
SPLIT_LINES = 5000
PART_LINES = 400
# Arrays of at least this many bytes that the code computes and does not return (temporaries) are taken
# from a workspace: buffers the caller passes in, which tracegrad allocates once per specialisation and
# passes again at every call, instead of a new array per call (glibc gives large blocks back to the OS
# and faults them in again; benchmarks/RESULTS.md). Smaller ones stay new arrays: each extra argument
# costs Numba's dispatch from Python ~0.1 µs, about what allocating a small array costs.
WORKSPACE_BYTES = 32 * 1024
PARALLEL_NAMES = frozenset({"blk", "half", "sweep", "prange"})  # what parallel loops name (nest._Blocks)


@dataclass(frozen=True)
class Module:
    """A generated Python module: its full source, the function it defines and the kernels it imports."""

    source: str
    function: str
    kernels: tuple
    parts: tuple = ()  # functions it calls, defined before it in the same module (long code is split)
    # with check_finite: (value, message) for each value the code checks, in order (the NumPy tier checks the same)
    checks: tuple = field(default=(), compare=False)
    # With a workspace, ``function`` allocates it and calls ``inner`` (one of the parts), which takes the
    # same arguments followed by the workspace's buffers, one (name, shape, dtype name) each
    inner: str | None = None
    workspace: tuple = ()
    parallel: bool = False  # some loop runs as prange: compiled with Numba's parallel=True

    @property
    def inner_parts(self) -> tuple:
        """The parts ``inner`` calls (those defined before it)."""
        return self.parts[:self.parts.index(self.inner)] if self.inner else self.parts


def _literal(atom: Literal):
    text = literal_source(atom.value, atom.aval.dtype)
    return text, 13 if text.startswith("-") else ATOM


def _wrap(expr, prec, need):
    return f"({expr})" if prec < need else expr


_PARSED: dict = {}  # template -> string.Formatter().parse of it (templates are the primitives' own: few)


def _fill_template(template: str, args: list, params: dict) -> str:
    """Fill ``{x}``-style fields: input fields by order of first appearance, the rest from params."""
    parsed = _PARSED.get(template)
    if parsed is None:
        parsed = _PARSED[template] = list(string.Formatter().parse(template))
    fields = []
    for _, name, _, _ in parsed:
        if name is not None and name not in params and name not in fields:
            fields.append(name)
    out = []
    for literal_text, name, _, _ in parsed:
        out.append(literal_text)
        if name is None:
            continue
        if name in params:
            out.append(repr(params[name]))
            continue
        expr, prec = args[fields.index(name)]
        before = "".join(out).rstrip()
        after = template[template.index("{" + name + "}") + len(name) + 2:].lstrip()
        in_call = (before.endswith("(") or before.endswith(",")) and (after[:1] in (")", ","))
        out.append(expr if in_call or prec == ATOM or template == "{" + name + "}" else f"({expr})")
    return "".join(out)


class Arg(str):
    """An argument's spelling, carrying its aval for emit functions that depend on it."""

    def __new__(cls, text, aval):
        arg = super().__new__(cls, text)
        arg.aval = aval
        return arg


def spell(node, args: list, scalar: bool = False):
    """The expression (text, precedence) or statement lines for one node, given its arguments' spellings.

    ``scalar``: the node is computed one element at a time (inside a loop nest)."""
    emit = node.primitive.emit
    if isinstance(emit, Infix):
        (a, pa), (b, pb) = args
        left_need = emit.prec + (emit.assoc in ("right", "none"))
        right_need = emit.prec + (emit.assoc in ("left", "none"))
        return f"{_wrap(a, pa, left_need)} {emit.op} {_wrap(b, pb, right_need)}", emit.prec
    if isinstance(emit, Conditional):  # (on scalars: passes.fuse puts array uses in loops)
        (c, pc), (a, pa), (b, pb) = args
        return f"{_wrap(a, pa, CONDITIONAL + 1)} if {_wrap(c, pc, CONDITIONAL + 1)} else {b}", CONDITIONAL
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


def comment_text(text) -> str:
    """``text`` as it may stand in a ``#`` comment of generated code: on one line, every character that is
    not printable (a newline in a file name, a line separator) escaped, so no user string can end the
    comment and become code."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def _finite_message(name: str, node) -> str:
    where = f" at {node.source.short()}: {node.source.line}" if node.source is not None else ""
    return f"{name} is not finite ({'backward' if node.backward else 'forward'} pass){where}"


def _finite_check(name: str, node) -> str:
    test = f"np.isfinite({name})" if not node.out.aval.shape else f"np.all(np.isfinite({name}))"
    return f"if not {test}: raise NonFiniteError({ascii(_finite_message(name, node))})"  # an escaped literal


def _is_loop_nest(node) -> bool:
    """A loop nest: the values of its body are elements of this graph's (``array_level``)."""
    return node.primitive.array_level is not None


def _passes_of(node) -> set:
    """Which passes a node's outputs belong to: {False} forward, {True} backward, both for a loop nest
    that computes a forward value and gradients."""
    if _is_loop_nest(node):
        return {m.backward for m in node.primitive.array_level(node) if m.out in node.outs}
    return {node.backward}


def _computes_forward(node) -> bool:
    """Some output of the node is a forward value (``_passes_of(node) != {True}``)."""
    return _passes_of(node) != {True} if _is_loop_nest(node) else not node.backward


def _kernels_of(node) -> list:
    kernel = node.primitive.kernel
    if kernel is None:
        return []
    return list(kernel) if isinstance(kernel, dict) else [node.primitive.name]


def _may_alias(node, out) -> bool:
    """Whether ``out``, computed by ``node``, may share memory with one of the node's inputs."""
    view = node.primitive.view
    return bool(view(node, out) if callable(view) else view)


def _kernel_names(nodes) -> tuple:
    names = set()
    for node in nodes:
        names.update(_kernels_of(node))
        for value in node.params.values():
            if isinstance(value, Graph):
                names.update(_kernel_names(value.nodes))
    return tuple(sorted(names))


def _zeros(shape, dtype) -> str:
    dtype = np.dtype(dtype)
    return f"np.zeros({shape!r})" if dtype == np.float64 else f"np.zeros({shape!r}, np.{dtype.name})"


def _empty(shape, dtype) -> str:
    dtype = np.dtype(dtype)
    return f"np.empty({shape!r})" if dtype == np.float64 else f"np.empty({shape!r}, np.{dtype.name})"


def _loop_indices(nodes) -> set:
    """The index names of every loop nest, nested bodies included (``i0, i1, ...``)."""
    names = set()
    for node in nodes:
        if _is_loop_nest(node):
            names.update(f"i{d}" for d in range(len(node.params["shape"])))
        for value in node.params.values():
            if isinstance(value, Graph):
                names |= _loop_indices(value.nodes)
    return names


class Printer:
    """Writes statements for a graph's nodes under the names ``ir.assign_names`` chose. A ``Block``
    primitive (a loop) asks it for its nested graph's lines (``block``), its outer values' spellings
    (``alias``) and how to spell atoms and new arrays."""

    def __init__(self, names: dict, comments: bool, check_finite: bool, workspace=frozenset(), parallel_min=None):
        self.names = names
        self.parallel_min = parallel_min  # loop nests of at least this many elements run in parallel (None: none)
        self.uses_prange = False  # some loop does
        self._fresh: set = set()  # names made by fresh_name
        self.function = "f"  # the name of the function being generated
        self.functions: list = []  # (name, parameters, lines) of functions it calls (parallel loops), in order
        self.comments = comments
        self.check_finite = check_finite
        self.workspace = workspace  # values that may be written into a buffer the caller passes
        self.buffers: list = []  # those that are, in the order they are written
        self.used_kernels: set = set()
        self.defined_by: dict = {}
        self.last_source = None
        self.checks: list = []  # with check_finite: (value, message) per value checked, in order

    def fresh_name(self, name: str) -> str:
        """``name``, or it with ``_`` appended until no value and no other such name has it: a name of the
        generated code's own (a loop's partial sums)."""
        taken = set(self.names.values())
        while name in taken or name in self._fresh or name in RESERVED:
            name += "_"
        self._fresh.add(name)
        return name

    def alias(self, var: Var, text: str) -> None:
        """Spell ``var`` (a nested graph's input) as the outer value ``text``."""
        self.names[var] = text

    def atom(self, atom) -> str:
        return _literal(atom)[0] if isinstance(atom, Literal) else self.names[atom]

    def empty(self, aval) -> str:
        return _empty(aval.shape, aval.dtype)

    def zeros(self, aval) -> str:
        return literal_source(0, aval.dtype) if not aval.shape else _zeros(aval.shape, aval.dtype)

    def new_array(self, var: Var, aval: Aval, zeros: bool = False) -> list:
        """The lines making ``var`` a new array of ``aval`` (zeros, or to be filled): nothing, or zeroing
        it, when it is one of the workspace's buffers (a parameter under its own name)."""
        name = self.names[var]
        if var in self.workspace and aval == var.aval:
            self.buffers.append(var)
            return [f"{name}.fill({literal_source(0, aval.dtype)})"] if zeros else []
        return [f"{name} = {self.zeros(aval) if zeros else self.empty(aval)}"]

    ATOM = ATOM  # the precedence of a name, literal or call

    @staticmethod
    def literal(atom) -> tuple:
        """A literal's spelling and precedence."""
        return _literal(atom)

    @staticmethod
    def spell(node, args: list, scalar: bool = False):
        """A node's expression (text, precedence) from its arguments' spellings (see ``codegen.spell``)."""
        return spell(node, args, scalar)

    def block(self, graph: Graph) -> list:
        """The lines ``(code, note)`` computing ``graph``'s outputs from its inputs (a loop's body). Values
        inside are not checked by ``check_finite``: the block's results are (so the NumPy tier, which
        evaluates a block whole, checks the same values)."""
        check_finite, self.check_finite = self.check_finite, False
        try:
            return [line for _, lines in self.statements(graph.nodes, graph.outputs) for line in lines]
        finally:
            self.check_finite = check_finite

    def statements(self, nodes: list, outputs: list, top: bool = False) -> list:
        """One entry per statement: (the names it defines, [(code, note), ...])."""
        names, comments, check_finite = self.names, self.comments, self.check_finite
        uses: dict = {}
        consumer_group = {}
        for node in nodes:
            block = isinstance(node.primitive.emit, Block)
            for a in node.inputs:
                if isinstance(a, Var):
                    uses[a] = uses.get(a, 0) + (2 if block else 1)  # a loop reads its inputs as names
                    consumer_group[a] = node.group
        for out in outputs:
            if isinstance(out, Var):
                uses[out] = uses.get(out, 0) + 2  # outputs are never inlined

        body: list = []
        exprs: dict = {}  # inlined temporaries: var -> (text, precedence)
        in_backward = False
        # "# backward pass" goes after the last statement computing a forward value (a loop may compute both)
        forward_ends = next((i for i in range(len(nodes) - 1, -1, -1) if _computes_forward(nodes[i])), -1) \
            if top else len(nodes)
        defined_by, notes = self.defined_by, {}
        for i, node in enumerate(nodes):
            defined_by[node.out] = node
            for out in node.also:
                defined_by[out] = node
            args = [_literal(a) if isinstance(a, Literal) else exprs.pop(a, None) or (names[a], ATOM)
                    for a in node.inputs]
            emit, out = node.primitive.emit, node.out
            if isinstance(emit, Block):
                spelled = None
            else:
                spelled = spell(node, args)
                kernels = _kernels_of(node) if node.primitive.kernel is not None else ()
            if spelled is not None:
                if kernels:
                    text = "\n".join(spelled if isinstance(spelled, list) else [spelled[0]])
                    self.used_kernels.update(k for k in kernels if k + "(" in text)
                if node.group is not None and isinstance(spelled, tuple) and _inlinable(node, uses, consumer_group):
                    exprs[out] = spelled
                    continue
            note, statement = None, []
            if comments:
                if node.backward and not in_backward and i > forward_ends:
                    statement.append(("# backward pass", None))
                    in_backward, self.last_source = True, None
                if _is_loop_nest(node) and len(_passes_of(node)) == 2:  # a forward value and gradients from one loop
                    statement.append(("# forward and backward pass in one loop", None))  # (merge_loops)
                if node.source is not None and node.source is not self.last_source \
                        and node.source != self.last_source:
                    note = notes.get(node.source)
                    if note is None:
                        note = notes[node.source] = comment_text(node.source.short())
                    if note == notes.get(self.last_source):  # another line of tracegrad's (no numbers): said
                        note = None
                    self.last_source = node.source
            if spelled is None:  # a block: the lines of its body keep their own notes
                made = len(self.functions)
                lines = emit.render(self, node, args)
                text = "\n".join([code for code, _ in lines] + [code for _, _, body in self.functions[made:]
                                                                for code in body])  # (its parallel loop's)
                self.used_kernels.update(k for k in _kernel_names([node]) if k + "(" in text)
                statement.extend((code, note if k == 0 else inner) for k, (code, inner) in enumerate(lines))
                checked = [v for v in node.outs if v.aval.dtype.kind == "f"]
            elif out in self.workspace and node.primitive.into and isinstance(spelled, tuple):
                self.buffers.append(out)  # computed into its buffer: np.dot(a, b, s1)
                lines = [_fill_template(node.primitive.into, args + [(names[out], ATOM)], node.params)]
                statement.extend((line, note if k == 0 else None) for k, line in enumerate(lines))
                checked = [out] if out.aval.dtype.kind == "f" else []
            elif isinstance(spelled, list):  # ({out} is every result of a primitive of several: w, v = eigh(a))
                lines = [line.format(out=", ".join(names[v] for v in node.outs)) for line in spelled]
                statement.extend((line, note if k == 0 else None) for k, line in enumerate(lines))
                checked = [v for v in node.outs if v.aval.dtype.kind == "f"]
            else:
                statement.append((f"{names[out]} = {spelled[0]}", note))
                checked = [out] if check_finite and out.aval.dtype.kind == "f" else []
            if check_finite:
                statement.extend((_finite_check(names[v], node), None) for v in checked)
                self.checks.extend((v, _finite_message(names[v], node)) for v in checked)
            body.append(([names[out]] + [names[v] for v in node.also] if node.also else [names[out]], statement))
        return body


MAX_FUNCTION_NAME = 60  # the name is in the file's name, and twice in each of Numba's (255 bytes at most)


def function_name(name: str, taken=frozenset()) -> str:
    """The ASCII identifier a generated function is called: ``name`` spelled in ASCII, shortened (with a
    hash of the whole) when long, and never a name the module imports (``sigmoid``, ``where``, ``np``)."""
    function = identifier(ascii_name(name).strip("_"), "f")
    if len(function) > MAX_FUNCTION_NAME:
        digest = hashlib.sha256(function.encode()).hexdigest()[:8]
        function = f"{function[:MAX_FUNCTION_NAME - 9].rstrip('_')}_{digest}"
    if function in taken or function in RESERVED:
        function += "_fn"
    return function


def generate(graph: Graph, function: str | None = None, comments: bool = True, check_finite: bool = False,
             parallel_min: int | None = None) -> Module:
    """Generate the module that defines ``function(*graph.inputs)`` returning ``graph.outputs``.

    With ``parallel_min`` (``parallel=``), each loop nest over at least that many elements whose rows add
    only to elements of their own or to sums runs as ``for blk in prange(BLOCKS):`` over fixed blocks of
    its rows (``primitives.nest._blocks``); the module then imports ``prange`` and is compiled with
    ``parallel=True``.

    With ``check_finite``, every floating-point value is checked as soon as it is computed and the
    first NaN or inf raises ``NonFiniteError`` naming the value, the pass and the user's line. Code longer
    than ``SPLIT_LINES`` lines is written as parts ``function_part1, ...`` of whole statements, each
    taking the values it reads and returning those read after it, which ``function`` calls in order.
    """
    all_kernels = _kernel_names(graph.nodes)
    # the names the module itself defines or imports: no value and not the function may take one
    module_names = set(all_kernels) | ({"NonFiniteError"} if check_finite else set())
    function = function_name(function or graph.name, module_names)
    loop_names = _loop_indices(graph.nodes) | (PARALLEL_NAMES if parallel_min is not None else set())
    names = assign_names(graph, reserved=frozenset(module_names) | {function} | loop_names)
    printer = Printer(names, comments, check_finite, _workspace_candidates(graph), parallel_min)
    printer.function = function
    body = printer.statements(graph.nodes, graph.outputs, top=True)
    defined_by, used_kernels, checks = printer.defined_by, printer.used_kernels, printer.checks

    returns = []
    for i, out in enumerate(graph.outputs):
        if isinstance(out, Literal):
            returns.append(_literal(out)[0])
            continue
        name = names[out]
        if out.aval.ndim and (out in graph.inputs or _may_alias(defined_by[out], out) or out in graph.outputs[:i]):
            name = f"np.copy({name})"  # never hand back the caller's own array, a view of it, or one array twice
        returns.append(name)
    params = [names[v] for v in graph.inputs]
    buffers = [names[v] for v in printer.buffers]
    if not buffers:
        functions = _split(body, params, f"return {_tuple(returns)}", function, PART_LINES, SPLIT_LINES)
    else:  # the code as a function of the arguments and the workspace, and one allocating the workspace
        taken = set(names.values()) | module_names
        inner = f"{function}_workspace"
        while inner in taken or any(name.startswith(inner + "_part") for name in taken):
            inner += "_"
        functions = _split(body, params + buffers, f"return {_tuple(returns)}", inner, PART_LINES, SPLIT_LINES)
        functions[-1][2].insert(0, (f"# workspace: {', '.join(buffers)} (filled here; tracegrad passes the same "
                                    "arrays at every call)", None))
        functions.append((function, params, [("# a new workspace at each call (tracegrad's own calls pass "
                                              "one kept for this specialisation)", None)] +
                          [(f"{names[v]} = {_empty(v.aval.shape, v.aval.dtype)}", None) for v in printer.buffers] +
                          [(f"return {inner}({', '.join(params + buffers)})", None)]))
    functions[:0] = [(name, args, [(code, None) for code in lines]) for name, args, lines in printer.functions]
    width = min(max((len(code) for _, _, lines in functions for code, note in lines if note), default=0), 56) + 2
    text = "\n\n".join(
        f"def {name}({', '.join(args)}):\n" + "".join(
            f"    {code.ljust(max(width, len(code) + 2))}# {note}\n" if note else f"    {code}\n"
            for code, note in lines)
        for name, args, lines in functions)

    header = [f"# Generated by tracegrad {__version__} from graph {comment_text(graph.name)}. Do not edit:",
              "# the file is named by the hash of this text.",
              "import numpy as np"]
    if printer.uses_prange:
        header.append("from numba import prange")
    if check_finite:
        header.append("from tracegrad.errors import NonFiniteError")
    if used_kernels:
        header.append(f"from tracegrad.kernels import {', '.join(sorted(used_kernels))}")
    source = "\n".join(header) + "\n\n\n" + text
    workspace = tuple((names[v], v.aval.shape, v.aval.dtype.name) for v in printer.buffers)
    return Module(source, function, tuple(sorted(used_kernels)), tuple(name for name, _, _ in functions[:-1]),
                  tuple(checks), inner if buffers else None, workspace, printer.uses_prange)


def _workspace_candidates(graph: Graph) -> frozenset:
    """The values a workspace buffer may hold: arrays of at least ``WORKSPACE_BYTES`` computed by the
    graph's own nodes (not in a loop's body: a buffer is written once per call) that are not outputs (an
    output that is a view of one, or a copy node of one, is copied by ``generate`` already)."""
    outputs = {v for v in graph.outputs if isinstance(v, Var)}
    return frozenset(v for node in graph.nodes for v in node.outs
                     if v.aval.shape and v not in outputs and
                     int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize >= WORKSPACE_BYTES)


_NAME = re.compile(r"(?<![\w.'\"])[A-Za-z_]\w*")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _tuple(items: list) -> str:
    """``a, b`` / ``a,`` / (nothing): a tuple to return or unpack."""
    return ", ".join(items) + ("," if len(items) == 1 else "")


def _names_read(lines, values: set) -> set:
    # (one search over all the lines: each line is a whole statement, its strings closed on it)
    return values.intersection(_NAME.findall(_STRING.sub("", "\n".join(code for code, _ in lines))))


def _split(body: list, params: list, ret: str, function: str, size: int, above: int = 0) -> list:
    """The functions to write, as (name, parameters, lines): ``function`` alone when the body has at most
    ``above`` lines; otherwise parts of about ``size`` lines, each taking the values it reads that were
    defined before it and returning those read after it, and ``function`` calling them in order."""
    if sum(len(lines) for _, lines in body) <= max(size, above):
        return [(function, params, [line for _, lines in body for line in lines] + [(ret, None)])]
    chunks, length = [[]], 0
    for statement in body:
        if chunks[-1] and length + len(statement[1]) > size:
            chunks.append([])
            length = 0
        chunks[-1].append(statement)
        length += len(statement[1])
    order = {name: i for i, name in enumerate(params + [name for defined, _ in body for name in defined])}
    values = set(order)  # not the scalars local to a loop
    lines = [[line for _, statement in chunk for line in statement] for chunk in chunks]
    # (a parameter is never assigned: a workspace buffer is written into, so its statement reads it)
    defined = [{name for names, _ in chunk for name in names} - set(params) for chunk in chunks]
    needed = [_names_read(chunk_lines, values) - names for chunk_lines, names in zip(lines, defined)]
    outs, read_later = [None] * len(chunks), _names_read([(ret, None)], values)
    for k in reversed(range(len(chunks))):
        outs[k] = sorted(defined[k] & read_later, key=order.get)
        read_later |= needed[k]
    functions, calls = [], []
    for k in range(len(chunks)):
        name = f"{function}_part{k + 1}"
        while name in order:
            name += "_"
        args, results = sorted(needed[k], key=order.get), _tuple(outs[k])
        functions.append((name, args, lines[k] + [(f"return {results}".rstrip(), None)]))
        calls.append((f"{results} = " * bool(results) + f"{name}({', '.join(args)})", None))
    return functions + [(function, params, calls + [(ret, None)])]
