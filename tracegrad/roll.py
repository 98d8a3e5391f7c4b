"""Plain Python loops rolled back up: ``roll_loops``, a graph → graph pass on the traced forward graph.

Tracing runs a ``for`` loop over traced values, so its n iterations arrive as n copies of the body. This
pass finds runs of nodes whose signatures (primitive, params, source line, avals) repeat with a period k,
checks that the copies are the same computation wired the same way, and replaces them by one ``loop``
node (``primitives/control.py``) whose body is one copy::

    for t in range(n):             # traced: 6n nodes          rolled: one loop node
        a = -k * x                 #   neg, mul                 body: neg, mul, mul, add, mul, add
        v = v + dt * a             #   mul, add                 carries: v, x
        x = x + dt * v             #   mul, add                 consts: k

Each input of each body node must be, in every iteration, the same kind of value:
- a value the same iteration computed, at the same place in the body;
- a *carry*: the value the previous iteration computed at one place (in the first iteration, a value
  from before the loop or a literal: the carry's initial value);
- a *constant*: the same value from before the loop (or the same literal) in every iteration;
- a *row*: ``X[..., c + s*t, ...]`` of an array from before the loop, the index affine in the iteration
  (``xs[t]``, ``x[i + 1]``, ``for x in xs``); the loop reads the rows of a slice of ``X`` made before it.
Values of an iteration are used by that iteration and the next only; the last iteration's carries are the
loop's results, and a place whose value every iteration leaves for after the loop (``ys.append(h)``) is
stacked by the loop: those uses read its rows ``Y[j]``, and ``np.stack`` of them all is ``Y``. Anything
else (a value used two iterations later, iterations that differ, values of some iterations used after)
is left unrolled, exactly as traced: a run is cut where it stops fitting, and a last iteration whose
other values are used after the loop stays unrolled after it. The first iteration often
differs (``v + dt * a`` with ``v = 0.0`` traces to ``dt * a``): it stays unrolled before the loop.

The pass is linear in the graph's size (signatures are compared through prefix hashes) and never
changes the arithmetic: the rolled graph computes exactly what the unrolled one did, in the same order.
Set ``tracegrad.roll.ENABLED = False`` to compile loops unrolled, as traced.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .core import PRIMITIVES
from .ir import Aval, Graph, Literal, Node, Var

ENABLED = True  # roll the loops of every traced function (api._build, nested grad)
MIN_ITERATIONS = 4  # shorter runs stay unrolled: they compile quickly, read well written out,
MIN_NODES = 48  # and the fusion passes can merge their elementwise work across iterations
_CANDIDATES = 8  # periods tried at each position: the next occurrences of the same signature

_MOD = (1 << 61) - 1  # prefix hashes of the signature sequence: a period is checked in O(1)
_BASE = 1_000_003


def rolled(traced):
    """``traced`` (a ``tracer.Traced``) with its graph's loops rolled, if rolling is enabled."""
    if not ENABLED:
        return traced
    graph = roll_loops(traced.graph)
    return traced if graph is traced.graph else dataclasses.replace(traced, graph=graph)


def roll_loops(graph: Graph, min_iterations: int = MIN_ITERATIONS, min_nodes: int = MIN_NODES, *,
               _again: bool = True) -> Graph:
    """Replace each run of at least ``min_iterations`` identical, chained copies of a loop body (and
    ``min_nodes`` nodes) by a ``loop`` node; returns ``graph`` itself when there is none.

    >>> import numpy as np, tracegrad as tg
    >>> from tracegrad.roll import roll_loops
    >>> def total(x):
    ...     s = 0.0
    ...     for i in range(5):
    ...         s = s + x[i] * x[i + 1]
    ...     return s
    >>> [n.primitive.name for n in roll_loops(tg.make_graph(total, np.ones(6)), min_nodes=0).nodes]
    ['getitem', 'getitem', 'mul', 'getitem', 'getitem', 'loop']
    """
    nodes = graph.nodes
    n = len(nodes)
    min_iterations = max(min_iterations, 2)
    if n < max(2 * min_iterations, min_nodes):
        return graph
    signatures = _signatures(nodes)
    following = [-1] * n  # the next node with the same signature
    last: dict = {}
    for i in range(n - 1, -1, -1):
        following[i] = last.get(signatures[i], -1)
        last[signatures[i]] = i
    hashes, powers = [0] * (n + 1), [1] * (n + 1)
    for i, s in enumerate(signatures):
        hashes[i + 1] = (hashes[i] * _BASE + s + 1) % _MOD
        powers[i + 1] = powers[i] * _BASE % _MOD

    def span(i, j):
        return (hashes[j] - hashes[i] * powers[j - i]) % _MOD

    counted: dict = {}  # (i, k) -> repeats(i, k): each run is walked once, whatever the restarts

    def repeats(i, k):
        """How many times the k signatures from i repeat, back to back."""
        if (i, k) not in counted:
            body, m = span(i, i + k), 1
            while i + (m + 1) * k <= n and (i + m * k, k) not in counted and \
                    span(i + m * k, i + (m + 1) * k) == body:
                m += 1
            if i + (m + 1) * k <= n and (i + m * k, k) in counted and span(i + m * k, i + (m + 1) * k) == body:
                m += counted[(i + m * k, k)]
            for j in range(m):
                counted[(i + j * k, k)] = m - j
        return counted[(i, k)]

    index = {}  # value -> the position of the node defining it
    for i, node in enumerate(nodes):
        for out in node.outs:
            index[out] = i
    last_use = {}
    for i, node in enumerate(nodes):
        for a in node.inputs:
            if isinstance(a, Var):
                last_use[a] = i
    for out in graph.outputs:
        if isinstance(out, Var):
            last_use[out] = n

    result, i, changed = [], 0, False
    replace = {}  # a stacked value of iteration j -> the node reading Y[j]
    while i < n:
        done, resume = None, None  # where to look again after a failure: the nearest any candidate allows
        j, tries = following[i], 0
        while j > 0 and tries < _CANDIDATES and done is None:
            k = j - i
            if i + 2 * k > n:
                break
            m = repeats(i, k)
            if m >= min_iterations and m * k >= min_nodes:
                # the same run, from where the user's iterations begin: the most whole iterations, then
                # the largest step back to an earlier line (the loop going back to its first line)
                start = max(range(i, i + k), key=lambda s: (repeats(s, k), _step_back(nodes, s)))
                done, skip = _roll(nodes, start, k, repeats(start, k), index, last_use, min_iterations, min_nodes)
                resume = skip if resume is None else min(resume, skip)
            j, tries = following[j], tries + 1
        if done is None:
            resume = i + 1 if resume is None else max(resume, i + 1)
            result.extend(nodes[i:resume])
            i = resume
            continue
        (made, reads), count = done
        result.extend(nodes[i:start])
        result.extend(made)
        for value, read in reads:
            replace[value] = read
        i = start + count
        changed = True
    if not changed:
        return graph
    if not replace:
        return Graph(graph.name, graph.inputs, result, graph.outputs, graph.n_args, dict(graph.meta))
    # values of the iterations read after the loop: rows of its stacked output, read where first used
    nodes, read = [], set()
    for node in result:
        for a in node.inputs:
            if a in replace and a not in read:
                read.add(a)
                nodes.append(replace[a])
        nodes.append(node)
    outputs = []
    for v in graph.outputs:
        if v in replace and v not in read:
            read.add(v)
            nodes.append(replace[v])
        outputs.append(replace[v].out if v in replace else v)
    rows_of = {read.out: (read.inputs[0], read.params["index"][0]) for read in replace.values()}
    replace = {value: read.out for value, read in replace.items()}
    nodes, whole = _stacks_read_whole([_with_inputs(n, replace) for n in nodes], rows_of)
    outputs = [whole.get(v, v) if isinstance(v, Var) else v for v in outputs]
    graph = Graph(graph.name, graph.inputs, nodes, outputs, graph.n_args, dict(graph.meta))
    # once more: the reads may be steps of a loop too (a sum of the values after the loop)
    return roll_loops(graph, min_iterations, min_nodes, _again=False) if _again else graph


def _with_inputs(node: Node, replace: dict) -> Node:
    inputs = tuple(replace.get(a, a) if isinstance(a, Var) else a for a in node.inputs)
    return node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)


def _stacks_read_whole(nodes: list, rows_of: dict) -> list:
    """``np.stack`` of every row of a loop's stacked output, in order, is that output: in a ``concatenate``
    along axis 0, the inputs ``reshape(Y[0], (1, ...)), ..., reshape(Y[n - 1], (1, ...))`` become ``Y``."""
    reshaped: dict = {}  # reshape(Y[j]) to (1, *row shape) -> (Y, j)
    out, whole = [], {}  # whole: a concatenate of all of Y -> Y
    for node in nodes:
        node = _with_inputs(node, whole)
        name = node.primitive.name
        if name == "reshape" and node.inputs[0] in rows_of and \
                tuple(node.params["shape"]) == (1,) + node.inputs[0].aval.shape:
            reshaped[node.out] = rows_of[node.inputs[0]]
        elif name == "concatenate" and node.params["axis"] == 0 and any(a in reshaped for a in node.inputs):
            inputs, run = [], []
            for a in node.inputs:
                y, j = reshaped.get(a, (None, -1))
                if j == 0 or (run and y is run[0][0] and j == len(run)):
                    if j == 0:
                        inputs.extend(atom for _, atom in run)
                        run = []
                    run.append((y, a))
                    if len(run) == y.aval.shape[0]:
                        inputs.append(y)
                        run = []
                    continue
                inputs.extend(atom for _, atom in run)
                run = []
                inputs.append(a)
            inputs.extend(atom for _, atom in run)
            if len(inputs) == 1:
                whole[node.out] = inputs[0]
                continue
            node = dataclasses.replace(node, inputs=tuple(inputs))
        out.append(node)
    return out, whole


# ---------------------------------------------------------------- signatures


def _param_key(value):
    if isinstance(value, Graph):
        return ("graph", id(value))  # a nested graph is itself only
    if isinstance(value, np.ndarray):
        return ("array", id(value))
    return value


def _signatures(nodes: list) -> list[int]:
    """One small int per node; equal for nodes that may be the same place of a loop body: the same
    primitive, params (a ``getitem``'s integer indices aside), source line and avals."""
    table: dict = {}
    out = []
    for node in nodes:
        params = node.params
        if node.primitive.name == "getitem":
            params = dict(params, index=tuple("#" if type(e) is int else e for e in params["index"]))
        source = node.source
        key = (node.primitive.name, repr(sorted((k, _param_key(v)) for k, v in params.items())) if params else "",
               (source.filename, source.lineno) if source is not None else None,
               tuple([(a.aval.shape, a.aval.dtype) for a in node.inputs]),  # (no Python-level Aval hashing)
               tuple([(v.aval.shape, v.aval.dtype) for v in node.outs]))
        out.append(table.setdefault(key, len(table)))
    return out


def _step_back(nodes: list, i: int) -> int:
    """How many lines back node ``i``'s line is from the previous node's, in the same file (else 0)."""
    before, after = (nodes[i - 1].source if i else None), nodes[i].source
    if before is None or after is None or before.filename != after.filename:
        return 0
    return before.lineno - after.lineno


# ---------------------------------------------------------------- one run of iterations


def _same_literal(a, b) -> bool:
    return isinstance(a, Literal) and isinstance(b, Literal) and a.aval == b.aval and \
        (a.value == b.value or (a.value != a.value and b.value != b.value))


def _same_params(a: Node, b: Node) -> bool:
    if a.primitive is not b.primitive:
        return False
    if not a.params and not b.params:
        return True
    if a.params.keys() != b.params.keys():
        return False
    for key, value in a.params.items():
        other = b.params[key]
        if isinstance(value, (Graph, np.ndarray)) or isinstance(other, (Graph, np.ndarray)):
            if value is not other:
                return False
        elif type(value) is not type(other) or value != other:
            return False
    return True


def _row_axis(first: Node, second: Node):
    """For ``getitem`` nodes reading the same array at indices that differ in one integer entry: that
    entry's position in the index and the axis of the array it indexes; else None."""
    a, b = first.params["index"], second.params["index"]
    if first.inputs[0] is not second.inputs[0] or len(a) != len(b):
        return None
    differ = [e for e, (u, v) in enumerate(zip(a, b)) if u != v or type(u) is not type(v)]
    if len(differ) != 1 or type(a[differ[0]]) is not int or type(b[differ[0]]) is not int:
        return None
    entry = differ[0]
    axis = sum(1 for e in a[:entry] if e is not None)
    return entry, axis


class _Mismatch(Exception):
    pass


def _roll(nodes, start, k, m, index, last_use, min_iterations, min_nodes):
    """Roll ``m`` iterations of ``k`` nodes from ``start`` if they fit (or as many as fit from the
    first). Returns ((the nodes replacing them, how many nodes they replace) or None, the position from
    which the caller looks for a loop again after a failure)."""
    at = lambda j, p: nodes[start + j * k + p]
    end = start + m * k
    # the pattern, from the second iteration: what each input of each place of the body is
    rows = {}  # place -> (entry of the index, axis, first index, step)
    pattern = []  # per place: per input ("in", place) | ("carry", place) | ("const", atom)
    for p in range(k):
        first, second = at(0, p), at(1, p)
        if first.also or second.also or first.primitive.multiple_results:  # (a loop node in a Python loop)
            return None, start + k
        if first.primitive.name == "getitem" and first.params["index"] != second.params["index"]:
            row = _row_axis(first, second)
            if row is None or index.get(first.inputs[0], -1) >= start:
                return None, start + k
            entry, axis = row
            size = first.inputs[0].aval.shape[axis]
            c0, c1 = first.params["index"][entry] % size, second.params["index"][entry] % size
            if c0 == c1:  # x[-1] and x[n - 1]: the same row, read as two different indices
                return None, start + k
            rows[p] = (entry, axis, c0, c1 - c0)
            pattern.append([("const", first.inputs[0])])
            continue
        if not _same_params(first, second):
            return None, start + k
        kinds = []
        for a in second.inputs:
            where = index.get(a, -1) if isinstance(a, Var) else -1
            if where < start:
                kinds.append(("const", a))
            elif (where - start) // k == 1:
                kinds.append(("in", (where - start) % k))
            else:
                kinds.append(("carry", (where - start) % k))
        pattern.append(kinds)
    carries = sorted({place for kinds in pattern for kind, place in kinds if kind == "carry"})
    if not carries:
        return None, end  # no iteration reads the one before: these are not the steps of one loop

    def check(j):
        """Raise _Mismatch unless iteration j is the pattern's; returns the carries' initial values for j = 0."""
        init = {}
        for p in range(k):
            node, template = at(j, p), at(1, p)
            if p in rows:
                entry, axis, c0, step = rows[p]
                index_j = node.params["index"]
                x = node.inputs[0]
                if node.primitive is not template.primitive or x is not template.inputs[0] or \
                        type(index_j[entry]) is not int or index_j[entry] % x.aval.shape[axis] != c0 + j * step or \
                        index_j[:entry] + index_j[entry + 1:] != template.params["index"][:entry] + \
                        template.params["index"][entry + 1:]:
                    raise _Mismatch
                continue
            if not _same_params(node, template) or len(node.inputs) != len(template.inputs) or node.also:
                raise _Mismatch
            for a, b, (kind, what) in zip(node.inputs, template.inputs, pattern[p]):
                if kind == "const":
                    if not (a is what or _same_literal(a, what)):
                        raise _Mismatch
                elif kind == "in":
                    if a is not at(j, what).out:
                        raise _Mismatch
                elif j > 0:
                    if a is not at(j - 1, what).out:
                        raise _Mismatch
                else:  # the first iteration reads the carry's initial value
                    if isinstance(a, Var) and index.get(a, -1) >= start or a.aval != b.aval:
                        raise _Mismatch
                    if what in init and not (init[what] is a or _same_literal(init[what], a)):
                        raise _Mismatch
                    init[what] = a
        return init

    try:
        init = check(0)
    except _Mismatch:
        return None, start + k  # the first iteration differs: the run may start one iteration later
    valid = 1
    try:
        while valid < m:
            check(valid)
            valid += 1
    except _Mismatch:
        pass

    # a place whose value every iteration leaves for after the run (a list of per-step values) is
    # stacked: the loop's rows Y[t], read after it as Y[j] (or Y itself: np.stack of them all)
    after = start + valid * k
    escaping = [p for p in range(k) if last_use.get(at(valid - 1, p).out, -1) >= after]
    stacked = [p for p in escaping if p not in rows and
               all(last_use.get(at(j, p).out, -1) >= after for j in range(valid))]
    if stacked and valid >= min_iterations and valid * k >= min_nodes and all(
            last_use.get(at(j, p).out, -1) < after for j in range(valid - 1) for p in range(k) if p not in stacked) \
            and all(p in stacked or p in carries for p in escaping):
        return (_build(at, k, valid, start, pattern, rows, carries, init, stacked), valid * k), after

    # values of an iteration are used by it and the next only; the last one's carries after the loop
    latest = []  # per iteration: the last use of any of its values
    for j in range(valid):
        latest.append(max(last_use.get(at(j, p).out, -1) for p in range(k)))
    count = valid
    reach = -1
    bound = [0] * (valid + 1)  # bound[c]: the last use of iterations 0 .. c-2
    for c in range(2, valid + 1):
        reach = max(reach, latest[c - 2])
        bound[c] = reach
    while count >= 2 and bound[count] >= start + count * k:
        count -= 1
    carry_set = set(carries)
    if any(last_use.get(at(count - 1, p).out, -1) >= start + count * k for p in range(k) if p not in carry_set):
        count -= 1  # the last iteration's other values are used after the loop: it stays unrolled
    if count < min_iterations or count * k < min_nodes:
        return None, (start + max(valid - 1, 1) * k if valid < m else end)
    return (_build(at, k, count, start, pattern, rows, carries, init), count * k), start + count * k


def _build(at, k, count, start, pattern, rows, carries, init, stacked=()):
    """The loop node for ``count`` iterations (and the slices its rows are read from); with ``stacked``
    places, the rows of each stacked value and a ``(value of iteration j, Y, j)`` for each use after."""
    hint = lambda p: at(count - 1, p).out.hint
    t = Var(Aval((), np.int64), "t")
    consts: dict = {}  # outer value -> body input
    for p, kinds in enumerate(pattern):
        for kind, what in kinds:
            if kind == "const" and isinstance(what, Var) and what not in consts and p not in rows:
                consts[what] = Var(what.aval, what.hint)
    carry_in = {p: Var(at(1, p).out.aval, hint(p)) for p in carries}
    row_in = {p: Var(at(1, p).out.aval, hint(p)) for p in rows}
    body_out = {}
    body_nodes = []
    for p in range(k):
        if p in rows:
            body_out[p] = row_in[p]
            continue
        template = at(1, p)
        inputs = []
        for kind, what in pattern[p]:
            if kind == "const":
                inputs.append(consts[what] if isinstance(what, Var) else what)
            elif kind == "in":
                inputs.append(body_out[what])
            else:
                inputs.append(carry_in[what])
        body_out[p] = Var(template.out.aval, hint(p))
        body_nodes.append(Node(template.primitive, tuple(inputs), template.params, body_out[p], template.source,
                               template.group, template.backward))
    body = Graph("loop", [t, *consts.values(), *(carry_in[p] for p in carries), *(row_in[p] for p in rows)],
                 body_nodes, [body_out[p] for p in carries] + [body_out[p] for p in stacked] +
                 [carry_in[p] for p in carries])

    made, xs = [], []
    for p in rows:  # the rows X[..., c0 + step * t, ...] as a sequence: a slice of X, that axis first
        entry, axis, c0, step = rows[p]
        first = at(0, p)
        x, index = first.inputs[0], list(first.params["index"])
        stop = c0 + count * step
        index[entry] = slice(c0, stop if stop >= 0 else None, step if step != 1 else None)
        index = tuple(index)
        if index == (slice(0, x.aval.shape[0], None),):  # the whole array, row by row
            xs.append(x)
            continue
        getitem = PRIMITIVES["getitem"]
        sliced = Var(getitem.shape(x.aval, index=index))
        made.append(Node(getitem, (x,), {"index": index}, sliced, first.source))
        position = sum(1 for e in index[:entry] if not isinstance(e, int))
        if position:
            perm = (position,) + tuple(a for a in range(sliced.aval.ndim) if a != position)
            transpose = PRIMITIVES["transpose"]
            moved = Var(transpose.shape(sliced.aval, perm=perm))
            made.append(Node(transpose, (sliced,), {"perm": perm}, moved, first.source))
            sliced = moved
        xs.append(sliced)
    finals = [at(count - 1, p).out for p in carries]
    ys = [Var(Aval((count,) + at(1, p).out.aval.shape, at(1, p).out.aval.dtype)) for p in stacked]
    history = [Var(Aval((count,) + at(1, p).out.aval.shape, at(1, p).out.aval.dtype)) for p in carries]
    params = dict(body=body, length=count, n_consts=len(consts), n_carry=len(carries), reverse=False)
    outs = finals + ys + history
    made.append(Node(PRIMITIVES["loop"], (*consts, *(init[p] for p in carries), *xs), params, outs[0],
                     at(0, 0).source, None, False, tuple(outs[1:])))
    getitem = PRIMITIVES["getitem"]
    reads = []  # each read where it is first used (a sum of them after the loop can then roll too)
    for p, y in zip(stacked, ys):
        for j in range(count):
            value = at(j, p).out
            reads.append((value, Node(getitem, (y,), {"index": (j,)}, Var(value.aval, value.hint), at(j, p).source)))
    return made, reads
