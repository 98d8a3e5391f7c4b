"""Pictures of graphs, drawn the way the lecture notes draw them: operations as nodes, values on the edges.

``draw(f, *args)`` returns a ``Drawing``. Its Graphviz DOT text (``drawing.dot``) needs nothing installed;
``drawing.svg()``, ``drawing.png()`` and ``drawing.save("f.png")`` render it with Graphviz
(``pip install 'tracegrad[draw]'`` and the ``dot`` program), and Jupyter shows a drawing as a picture.

With ``values=True`` each edge shows the value it carries at ``args`` (green, on top) and with
``grads=True`` the gradient of the function's output with respect to that value (red, below it), both
computed by the reference interpreter (``interpret.evaluate``). ``backward=True`` draws the graph that
``grad`` compiles: the forward nodes, then the backward nodes in red, named as in ``tg.source``.

Graphs with more than ``max_nodes`` operations are drawn one node per line of the user's source,
with a note saying so; smaller graphs whose lines hold several operations are boxed by line.
"""
from __future__ import annotations

import html
import os

import numpy as np

from .api import Function, name_outputs, value_and_grad
from .autodiff import value_and_grad_graph
from .errors import DataError, GradTypeError, TracegradError
from .interpret import evaluate
from .ir import Graph, Literal, Var, assign_names
from .notation import Infix, Prefix, number_text as _number
from .pytree import flatten
from .tracer import aval_of, trace

__all__ = ["draw", "Drawing", "MissingDependencyError"]

BY_LINE = ("auto", "none", "cluster", "collapse")
DIRECTIONS = ("auto", "LR", "TB")
SMALL_GRAPH = 12  # graphs of up to this many forward operations: left to right, every operation a node
CROWDED_LINE = 4  # in larger graphs, a source line of more operations than this is drawn as one node
MAX_INCHES = "18,30"  # rendered pictures are scaled down to fit (about 2,000 pixels wide at 110 dpi)
MAX_ELEMENTS = 6  # arrays up to this size (and matrices up to 4 x 4) are written out in full on an edge

VALUE_COLOR = "#1b7a2e"
GRAD_COLOR = "#c0281c"
NAME_COLOR = "#666666"
EDGE_COLOR = "#555555"
FORWARD_STYLE = 'style=filled, fillcolor="#eef3fb", color="#3d5f8f"'
BACKWARD_STYLE = 'style=filled, fillcolor="#fcebe8", color="#b03a2e"'

_INSTALL_HINT = ("pip install 'tracegrad[draw]' for the graphviz package, and Graphviz's dot program "
                 "(apt-get install graphviz, brew install graphviz or conda install graphviz); "
                 "drawing.dot is the DOT text and needs neither")


class MissingDependencyError(TracegradError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


# ---------------------------------------------------------------------------------------------- the result


class Drawing:
    """A drawn graph: Graphviz DOT text, rendered to SVG or PNG on request, shown as a picture in Jupyter.

    ``str(drawing)`` and ``drawing.dot`` are the DOT text. ``graph`` is the graph drawn, ``collapsed``
    says whether its operations were merged by source line, ``note`` is the note printed under the picture.
    """

    def __init__(self, dot: str, graph: Graph, collapsed: bool = False, note: str | None = None):
        self.dot = dot
        self.graph = graph
        self.collapsed = collapsed
        self.note = note

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        how = ", collapsed by source line" if self.collapsed else ""
        n = len(_expand(self.graph.nodes))
        return f"<tracegrad.Drawing of {self.graph.name}: {n} operation{'' if n == 1 else 's'}{how}>"

    def pipe(self, format: str, dpi: int | None = None) -> bytes:
        """The picture in any output format Graphviz knows (``"svg"``, ``"png"``, ``"pdf"``, ...).

        Raises ``MissingDependencyError`` when the graphviz package or the dot program is missing.
        """
        dot = self.dot
        if dpi is not None:
            dot = dot.replace("\n", f"\n  graph [dpi={int(dpi)}];\n", 1)
        return _render(dot, format)

    def svg(self) -> str:
        """The picture as SVG text (needs ``tracegrad[draw]`` and Graphviz's dot program)."""
        return self.pipe("svg").decode("utf-8")

    def png(self, dpi: int = 110) -> bytes:
        """The picture as PNG bytes (needs ``tracegrad[draw]`` and Graphviz's dot program)."""
        return self.pipe("png", dpi=dpi)

    def save(self, path, dpi: int = 110) -> str:
        """Write the drawing to ``path``; its suffix picks the format. ``.dot``/``.gv`` write the DOT text
        and need nothing; other suffixes (``.svg``, ``.png``, ``.pdf``) render with Graphviz."""
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower().lstrip(".")
        if suffix in ("dot", "gv"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.dot)
        else:
            data = self.pipe(suffix or "svg", dpi=dpi if suffix == "png" else None)
            with open(path, "wb") as f:
                f.write(data)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter: the picture as SVG when Graphviz is there, else the DOT text and what to install."""
        try:
            return {"image/svg+xml": self.svg(), "text/plain": repr(self)}
        except MissingDependencyError as exc:
            return {"text/plain": f"{repr(self)}\n({exc.message}: {exc.hint})\n{self.dot}"}


def _render(dot: str, format: str) -> bytes:
    try:
        import graphviz
    except ImportError:
        raise MissingDependencyError(f"rendering a drawing as {format} needs the graphviz Python package",
                                     hint=_INSTALL_HINT) from None
    try:
        return graphviz.Source(dot).pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise MissingDependencyError(f"rendering a drawing as {format} needs Graphviz's dot program, "
                                     "which is not on PATH", hint=_INSTALL_HINT) from None
    except graphviz.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise TracegradError(f"Graphviz could not render this drawing as {format}: {stderr.strip()}") from None


# ---------------------------------------------------------------------------------------------- draw


def draw(fun, *args, backward: bool = False, values: bool = False, grads: bool = False,
         by_line: str = "auto", max_nodes: int = 80, precision: int = 3, direction: str = "auto") -> Drawing:
    """Draw the graph of ``fun`` for arguments like ``args``: operations as nodes, values as edges.

    ``fun`` is a plain function, a ``grad``/``value_and_grad``/``jit`` function, or a ``Graph`` (then
    ``args`` are its flat inputs). ``backward=True`` draws the value-and-gradient graph ``grad`` compiles
    (with respect to the ``argnums`` of a ``grad`` function, else every float argument), its backward
    nodes in red and named as in ``tg.source``. ``values=True`` writes on each edge the value it carries at
    ``args``; ``grads=True`` writes under it the gradient of the (first) output with respect to it.
    ``by_line`` is ``"auto"``, ``"none"``, ``"cluster"`` (box the operations of each source line) or
    ``"collapse"`` (one node per source line). ``"auto"`` draws a small graph (up to ``SMALL_GRAPH``
    forward operations) operation by operation, boxing the lines that hold several; in a larger
    one, a line of more than ``CROWDED_LINE`` operations (a library call such as a loss) becomes one node
    that shows the line, and the other lines are drawn operation by operation; past ``max_nodes``
    operations every line is one node.
    ``direction`` is ``"LR"`` (left to right, as the lectures draw a small graph), ``"TB"`` (top to
    bottom, which keeps a network's picture narrow) or ``"auto"``: ``"LR"`` for small graphs whose edges
    carry short texts (no values asked for, or none of more than ``MAX_ELEMENTS`` numbers), else ``"TB"``.
    Rendered pictures are bounded to ``MAX_INCHES`` (scaled down to fit).

    >>> import tracegrad as tg
    >>> def f(x, y):
    ...     q = x + y
    ...     return q * 3.0
    >>> d = tg.draw(f, -2.0, 5.0, values=True, grads=True)
    >>> d
    <tracegrad.Drawing of f: 2 operations>
    >>> print(d.dot.splitlines()[0])
    digraph "f" {

    ``d.save("f.svg")`` renders it; in Jupyter, ``d`` alone shows the picture.

    Raises ``GradTypeError`` when ``grads`` or ``backward`` is asked of a function without a scalar
    float output, and ``MissingDependencyError`` only when a drawing is rendered without Graphviz.
    """
    if by_line not in BY_LINE:
        raise DataError(f"by_line must be one of {', '.join(map(repr, BY_LINE))}, got {by_line!r}")
    if direction not in DIRECTIONS:
        raise DataError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}")
    graph, inputs = _graph_and_inputs(fun, args, backward, need_inputs=values or grads)
    nodes = _expand(graph.nodes)
    # forward nodes first: a loop computing the forward sum and the gradients sits in the backward pass
    nodes = [n for n in nodes if not n.backward] + [n for n in nodes if n.backward]
    names = _names(graph, nodes)
    env = gradients = None
    if values or grads:
        env, gradients = _annotations(graph, nodes, inputs, grads)
    scene = _Scene(graph, nodes, names, env if values else None, gradients if grads else None, precision)
    n_ops = len(nodes)
    per_line: dict = {}
    for node in nodes:
        key = _line_key(node)
        per_line[key] = per_line.get(key, 0) + 1
    small = sum(not node.backward for node in nodes) <= SMALL_GRAPH  # (its backward pass drawn or not)
    mode, crowded = by_line, frozenset()
    if mode == "auto":
        several = any(count > 1 for (_, _, backward), count in per_line.items() if not backward)
        mode = "collapse" if n_ops > max_nodes else ("cluster" if len(per_line) > 1 and several else "none")
        if mode != "collapse" and not small:
            crowded = frozenset(key for key, count in per_line.items() if count > CROWDED_LINE)
    if direction == "auto":  # left to right while the values written on the edges stay short
        short = not (values or grads) or all(var.aval.size <= MAX_ELEMENTS for node in nodes for var in node.outs)
        direction = "LR" if small and short else "TB"
    note = None
    if mode == "collapse":
        note = (f"{n_ops} operations drawn as {len(per_line)} source lines"
                + (f" (more than max_nodes={max_nodes})" if by_line == "auto" else "")
                + ": draw(..., by_line='none') shows every operation")
        body = scene.collapsed()
    else:
        if crowded:
            inside = sum(per_line[key] for key in crowded)
            note = (f"{inside} of {n_ops} operations drawn as the {len(crowded)} source "
                    f"line{'s' if len(crowded) > 1 else ''} holding them: draw(..., by_line='none') shows "
                    "every operation")
        body = scene.detailed(cluster=mode == "cluster", collapse=crowded)
    dot = _digraph(graph.name, body, note, direction)
    return Drawing(dot, graph, collapsed=mode == "collapse" or bool(crowded), note=note)


def _graph_and_inputs(fun, args, backward, need_inputs):
    """The graph to draw and the flat values of its inputs (arguments, then captured arrays)."""
    if isinstance(fun, Graph):
        graph = fun
        if backward and not any(node.backward for node in graph.nodes):
            graph = value_and_grad_graph(graph, [i for i, v in enumerate(graph.inputs) if v.aval.is_float])
        if need_inputs and len(args) != len(graph.inputs):
            raise GradTypeError(f"graph {graph.name} has {len(graph.inputs)} inputs, but {len(args)} values were given")
        return graph, list(args)
    if not callable(fun):
        raise GradTypeError(f"draw expects a function or a Graph, got {type(fun).__name__}")
    leaves = flatten(args)[0]
    if backward:
        compiled = _grad_function(fun, args).specialize(*args)
        return compiled.graph, leaves + compiled.captured()
    base = fun.fun if isinstance(fun, Function) else fun
    traced = trace(base, args)
    return name_outputs(traced.graph), leaves + [c.current() for c in traced.captures]


def _grad_function(fun, args) -> Function:
    """``fun`` itself if it is a grad function, else its value_and_grad w.r.t. every float argument."""
    if isinstance(fun, Function) and fun.mode != "jit":
        return fun
    base = fun.fun if isinstance(fun, Function) else fun
    argnums = tuple(i for i, arg in enumerate(args)
                    if flatten(arg)[0] and all(aval_of(leaf).is_float for leaf in flatten(arg)[0]))
    if not argnums:
        raise GradTypeError("draw(..., backward=True) needs at least one float argument to differentiate")
    return value_and_grad(base, argnums=argnums)


def _expand(nodes, seen=None) -> list:
    """The nodes with every loop nest replaced by the array-level nodes it computes, each once (a value
    several loops compute again is drawn where it is first computed)."""
    out, seen = [], set() if seen is None else seen
    for node in nodes:
        # (a loop's body has values of its own, one per iteration: the loop is drawn as one node)
        if node.primitive.array_level is not None:  # (a loop nest's iterations are the array-level nodes)
            out.extend(_expand(node.primitive.array_level(node), seen))
        elif node not in seen:
            seen.add(node)
            out.append(node)
    return out


def _names(graph: Graph, nodes: list) -> dict:
    """The display names ``tg.source`` and ``print(graph)`` use, for every value drawn; "" for the
    temporaries of one VJP rule that the generated code writes inline (``grad_L * (1.0 - L) * L``)."""
    names = assign_names(graph)
    missing = [out for node in nodes for out in node.outs if out not in names]
    if missing:  # values inside nested bodies the naming does not reach: name them as a flat graph would
        flat = assign_names(Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args))
        names.update({var: flat[var] for var in missing})
    uses, consumer_group = {}, {}
    for node in nodes:
        for atom in node.inputs:
            if isinstance(atom, Var):
                uses[atom] = uses.get(atom, 0) + 1
                consumer_group[atom] = node.group
    outputs = {atom for atom in graph.outputs if isinstance(atom, Var)}
    for node in nodes:
        out = node.out
        if (node.group is not None and uses.get(out) == 1 and out not in outputs and out.hint is None
                and out.grad_of is None and consumer_group.get(out) == node.group):
            names[out] = ""
    return names


def _annotations(graph: Graph, nodes: list, inputs: list, want_grads: bool):
    """Every value at ``inputs``, and the gradient of the first output with respect to each value."""
    if want_grads and not any(node.backward for node in nodes):
        wrt = [i for i, v in enumerate(graph.inputs) if v.aval.is_float]
        flat = Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args)
        full = value_and_grad_graph(flat, wrt)
        all_nodes = full.nodes
    else:
        all_nodes = nodes
    everything = Graph(graph.name, graph.inputs, all_nodes, [out for node in all_nodes for out in node.outs],
                       graph.n_args)
    results = evaluate(everything, *inputs)
    env = dict(zip(graph.inputs, (_as_array(v) for v in inputs)))
    env.update(zip(everything.outputs, results))
    gradients = {}
    if want_grads:
        for node in all_nodes:
            for out in node.outs:
                if out.grad_of is not None:
                    gradients[out.grad_of] = env[out]
    return env, gradients


def _as_array(value):
    value = np.asarray(value)
    return value[()] if value.ndim == 0 else value


def _line_key(node):
    source = node.source
    where = (source.filename, source.lineno) if source is not None else ("", 0)
    return where + (bool(node.backward),)


# ---------------------------------------------------------------------------------------------- DOT text


def _digraph(name: str, body: list, note: str | None, direction: str = "LR") -> str:
    head = [f"digraph {_quote(name)} {{",
            f'  graph [rankdir={direction}, ordering=in, fontname="Helvetica", fontsize=10, nodesep=0.25, '
            f'ranksep=0.45, size="{MAX_INCHES}", labelloc=b, labeljust=l'
            + (f", label={_quote(note)}" if note else "") + "];",
            '  node [fontname="Helvetica", fontsize=12, height=0.4, margin="0.06,0.03"];']
    return "\n".join(head + ["  " + line for line in body] + ["}"]) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _html(text) -> str:
    return html.escape(str(text), quote=True)


def _op_label(node) -> str:
    """What an operation node says: its primitive's ``label`` (by default the operator as the code writes
    it, else the name), with constants folded in."""
    prim = node.primitive
    if callable(prim.label):
        return prim.label(node)
    label = prim.label
    if label is None:
        label = prim.emit.op if isinstance(prim.emit, (Infix, Prefix)) else prim.name
    lits = [_number(a.value) if isinstance(a, Literal) else None for a in node.inputs]
    if isinstance(prim.emit, Infix) and len(node.inputs) == 2:
        if lits[1] is not None:
            return f"{label} {lits[1]}"
        if lits[0] is not None:
            return f"{lits[0]} {label}"
        return label
    if any(lit is not None for lit in lits):
        label += "(" + ", ".join(lit if lit is not None else "·" for lit in lits) + ")"
    return label


def _rounded(style: str) -> str:
    return style.replace("style=filled", 'style="filled,rounded"')


class _Scene:
    """Turns one graph (and optional values and gradients) into DOT statements.

    Every value is drawn as a small label node the edge passes through (``wire``), so its value sits
    above the line and its gradient below, as in the lectures.
    """

    def __init__(self, graph, nodes, names, env, gradients, precision):
        self.graph, self.nodes, self.names = graph, nodes, names
        self.env, self.gradients, self.precision = env, gradients, precision
        self.backward_values = {out for node in nodes if node.backward for out in node.outs}
        self.inputs = set(graph.inputs)

    # ------------------------------------------------------------------ labels

    def value_text(self, value) -> list[str]:
        """An annotation's lines: a scalar, a small array written out (a matrix row by row), or the
        first entries of a large one."""
        a = np.asarray(value)
        num = lambda x: _number(x, self.precision)
        if a.ndim == 0:
            return [num(a[()])]
        if a.size <= MAX_ELEMENTS or (a.ndim == 2 and max(a.shape) <= 4):
            if a.ndim == 1:
                return ["[" + " ".join(num(x) for x in a) + "]"]
            rows = a.reshape(-1, a.shape[-1])
            return [("[[" if i == 0 else " [") + " ".join(num(x) for x in row) + ("]]" if i == len(rows) - 1 else "]")
                    for i, row in enumerate(rows)]
        return ["[" * a.ndim + " ".join(num(x) for x in a.ravel()[:3]) + " …" + "]" * a.ndim]

    def title(self, var) -> str:
        """A value's name and, for arrays, its shape. Inputs are named by their own node already, and
        temporaries the generated code writes inline have no name."""
        name = "" if var in self.inputs else self.names.get(var, "?")
        shape = str(var.aval) if var.aval.shape else ""
        return f"{name}: {shape}" if name and shape else name or shape

    def edge_label(self, values: list, color: str) -> str:
        """Name and value above the rule, gradient below; the rule is the edge passing through."""
        top, bottom = [], []
        if len(values) > 4:  # several values between two source lines: name a few
            more = f'<FONT COLOR="{NAME_COLOR}">and {len(values) - 3} more</FONT>'
            return self.edge_label(values[:3], color).replace("</TD></TR><HR/>", f"<BR/>{more}</TD></TR><HR/>", 1)
        for var in values:
            title = self.title(var)
            title = f'<FONT COLOR="{NAME_COLOR}">{_html(title)}</FONT>' if title else ""
            if len(values) > 1:  # several values on one edge (collapsed drawings): names only
                top.append(title)
                continue
            if self.env is not None and var in self.env:
                value_color = GRAD_COLOR if var.grad_of is not None else VALUE_COLOR
                texts = [f'<FONT COLOR="{value_color}">{_html(t)}</FONT>' for t in self.value_text(self.env[var])]
                if len(texts) == 1 and title:
                    top.append(f'{title}<FONT COLOR="{NAME_COLOR}"> = </FONT>{texts[0]}')
                else:
                    top += ([title] if title else []) + texts
            elif title:
                top.append(title)
            if self.gradients is not None and var in self.gradients and var.grad_of is None:
                bottom += [f'<FONT COLOR="{GRAD_COLOR}">{_html(t)}</FONT>'
                           for t in self.value_text(self.gradients[var])]
        n = max(len(top), len(bottom), 1)  # equal heights put the rule, and so the edge, in the middle
        top = [" "] * (n - len(top)) + top
        bottom = bottom + [" "] * (n - len(bottom))
        return (f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1" COLOR="{color}">'
                f'<TR><TD>{"<BR/>".join(top)}</TD></TR><HR/><TR><TD>{"<BR/>".join(bottom)}</TD></TR></TABLE>>')

    def wire(self, key: str, source: str, targets: list, values: list) -> tuple[str, list[str]]:
        """The label node ``key`` and the edges from ``source`` through it to each target. A value used
        several times fans out from its label, which carries its total gradient: the sum of its uses'
        gradients (the lectures' duplicate rule). Values the backward pass computes flow right to left,
        as the lectures draw them: their edges are laid out reversed."""
        backward = values[0] in self.backward_values
        color = GRAD_COLOR if backward else EDGE_COLOR
        # arrowsize on every edge: Graphviz 2.43 misreads it as an arrow type when set as a default
        attrs = f'color="{color}", arrowsize=0.6'
        label = (f"{key} [shape=plaintext, fontsize=10, margin=0, height=0, width=0, "
                 f"label={self.edge_label(values, color)}];")
        if backward:
            edges = [f"{key}:e -> {source} [dir=none, {attrs}];"]
            edges += [f"{target} -> {key}:w [dir=back, {attrs}];" for target in targets]
        else:
            edges = [f"{source} -> {key}:w [arrowhead=none, {attrs}];"]
            edges += [f"{key}:e -> {target} [{attrs}];" for target in targets]
        return label, edges

    # ------------------------------------------------------------------ nodes

    def input_nodes(self) -> list[str]:
        out = []
        for i, var in enumerate(self.graph.inputs):
            label = f"<B>{_html(self.names[var])}</B>"
            if i >= self.graph.n_args:
                label += f'<BR/><FONT POINT-SIZE="9" COLOR="{NAME_COLOR}">captured</FONT>'
            out.append(f"i{i} [shape=plaintext, label=<{label}>];")
        return out

    def output_nodes(self) -> tuple[list[str], list]:
        """The returned values, named at the right (the value) or left (gradients) of the picture, and
        (Var, node id) for each."""
        out, ends = [], []
        for k, atom in enumerate(self.graph.outputs):
            text = _number(atom.value) if isinstance(atom, Literal) else self.names[atom]
            out.append(f"o{k} [shape=plaintext, label=<<B>{_html(text)}</B>>];")
            if isinstance(atom, Var):
                ends.append((atom, f"o{k}"))
        forward = [f"o{k};" for k, atom in enumerate(self.graph.outputs) if atom not in self.backward_values]
        if forward:
            out.append("{rank=sink; " + " ".join(forward) + "}")
        return out, ends

    def op_node(self, key: str, node) -> str:
        text = _op_label(node)
        style = BACKWARD_STYLE if node.backward else FORWARD_STYLE
        shape = "circle" if len(text) <= 3 else "box"
        if shape == "box":
            style = _rounded(style)
        return f"{key} [shape={shape}, {style}, label=<{_html(text)}>];"

    def line_node(self, key: str, members: list) -> str:
        source = members[0].source
        text = (source.line or f"line {source.lineno}") if source is not None else "(no source line)"
        if len(text) > 60:
            text = text[:57] + "..."
        where = f"{source.short()} · " if source is not None else ""
        count = f"{len(members)} operation" + ("s" if len(members) != 1 else "")
        prefix = "backward of " if members[0].backward else ""
        style = _rounded(BACKWARD_STYLE if members[0].backward else FORWARD_STYLE)
        return (f"{key} [shape=box, {style}, label=<{_html(prefix + text)}<BR/>"
                f'<FONT POINT-SIZE="9" COLOR="{NAME_COLOR}">{_html(where + count)}</FONT>>];')

    # ------------------------------------------------------------------ whole pictures

    def detailed(self, cluster: bool, collapse=frozenset()) -> list[str]:
        """Every operation a node, except those of the source lines in ``collapse``: each of those lines
        is one node that shows the line. With ``cluster``, the forward operations of each other line
        that holds several are boxed together, with the labels of the values that stay inside the box."""
        producer = {var: f"i{i}" for i, var in enumerate(self.graph.inputs)}
        boxes: dict = {}  # line -> [node ids]
        box_of: dict = {}  # node id -> line
        loose = self.input_nodes()
        statements: dict = {}
        keys, lines, members_of = [], {}, {}
        for i, node in enumerate(self.nodes):
            line = _line_key(node)
            if line in collapse:
                key = lines.setdefault(line, f"l{len(lines)}")
                members_of.setdefault(key, []).append(node)
            else:
                key = f"n{i}"
                statements[key] = self.op_node(key, node)
                if cluster and not node.backward:  # boxes would fight the right-to-left flow of the backward pass
                    boxes.setdefault(line, []).append(key)
            keys.append(key)
            producer.update(dict.fromkeys(node.outs, key))
        statements.update({key: self.line_node(key, members) for key, members in members_of.items()})
        for line, members in boxes.items():
            if len(members) > 1:  # a box around one operation says nothing
                box_of.update({member: line for member in members})
        consumers: dict = {}
        for key, node in zip(keys, self.nodes):
            for atom in node.inputs:
                if isinstance(atom, Var) and producer.get(atom) != key:  # not a value inside a collapsed line
                    targets = consumers.setdefault(atom, [])
                    if key not in targets or key not in members_of:  # x * x draws both edges; a line one
                        targets.append(key)
        out_lines, ends = self.output_nodes()
        for var, key in ends:
            consumers.setdefault(var, []).append(key)
        edges, inside = [], {}
        for k, var in enumerate(list(self.graph.inputs) + [out for node in self.nodes for out in node.outs]):
            targets = consumers.get(var)
            if not targets:
                continue
            label, wires = self.wire(f"v{k}", producer[var], targets, [var])
            line = box_of.get(producer[var])
            if line is not None and any(box_of.get(t) == line for t in targets):  # a path out and back in
                inside.setdefault(line, []).append(label)                      # would scramble the box
            else:
                loose.append(label)
            edges += wires
        body = loose + [statements[key] for key in statements if key not in box_of]
        for k, (line, members) in enumerate((line, m) for line, m in boxes.items() if len(m) > 1):
            source = next(n.source for n in self.nodes if _line_key(n) == line)
            title = f"{source.short()}  {source.line}" if source else "no source line"
            body.append(f"subgraph cluster_{k} {{")
            body.append(f'  label={_quote(title)}; style="dashed,rounded"; color="#8a8a8a"; fontcolor="#555555";')
            body += ["  " + statements[key] for key in members] + ["  " + label for label in inside.get(line, [])]
            body.append("}")
        return body + out_lines + edges

    def collapsed(self) -> list[str]:
        """One node per source line (forward and backward apart); edges carry the values between lines."""
        producer = {var: f"i{i}" for i, var in enumerate(self.graph.inputs)}
        body = self.input_nodes()
        groups: dict = {}
        for node in self.nodes:
            groups.setdefault(_line_key(node), []).append(node)
        for k, members in enumerate(groups.values()):
            body.append(self.line_node(f"l{k}", members))
            producer.update({out: f"l{k}" for node in members for out in node.outs})
        out_lines, ends = self.output_nodes()
        body += out_lines
        crossing: dict = {}  # (from, to) -> the values that go from one line to the other, in graph order
        for node in self.nodes:
            target = producer[node.out]
            for atom in node.inputs:
                if isinstance(atom, Var) and producer[atom] != target:
                    values = crossing.setdefault((producer[atom], target), [])
                    if atom not in values:
                        values.append(atom)
        for var, key in ends:
            crossing.setdefault((producer[var], key), []).append(var)
        for k, ((source, target), values) in enumerate(crossing.items()):
            label, wires = self.wire(f"v{k}", source, [target], values)
            body += [label] + wires
        return body
