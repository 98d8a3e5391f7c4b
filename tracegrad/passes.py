"""Graph-to-graph passes. Each returns a new graph computing exactly the same outputs.

Nodes are never mutated (graphs share them); a pass builds new nodes where inputs change. Every
rewrite here is exact in floating point, NaN and inf included.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .core import PRIMITIVES, Conditional, Primitive, broadcast_subscripts
from .interpret import evaluate
from .ir import Aval, Graph, IRError, Literal, Node, Var
from .notation import inlinable
from .primitives.nest import Index, Origin, index_atom


_FULL = PRIMITIVES["full"]  # (an array of one value, folded from constants, is written as np.full)


def _rebuild(graph: Graph, nodes: list, replace: dict) -> Graph:
    outputs = [replace.get(v, v) if isinstance(v, Var) else v for v in graph.outputs]
    return Graph(graph.name, graph.inputs, nodes, outputs, graph.n_args, dict(graph.meta))


def _with_inputs(node: Node, replace: dict) -> Node:
    if replace:  # (runs for every node: a node reading nothing replaced is returned at once)
        for a in node.inputs:
            if a in replace:  # (literals are never keys)
                inputs = tuple([replace.get(a, a) for a in node.inputs])
                return node if inputs == node.inputs else _replace_inputs(node, inputs)
    return node


def _replace_inputs(node: Node, inputs: tuple) -> Node:
    """``dataclasses.replace(node, inputs=inputs)``, without its look at the fields on every call."""
    return Node(node.primitive, inputs, node.params, node.out, node.source, node.group, node.backward, node.also)


def dce(graph: Graph, prune: bool = False) -> Graph:
    """Dead-code elimination: drop nodes no output depends on. With ``prune``, loops also drop the
    outputs nothing reads, such as the carries they store for a gradient (so only for graphs that are
    not differentiated again)."""
    live = {v for v in graph.outputs if isinstance(v, Var)}
    kept = []
    for node in reversed(graph.nodes):
        if node.out in live or node.also and any(out in live for out in node.also):
            if prune and node.primitive.prune is not None:  # a loop stores only the outputs something reads
                node = node.primitive.prune(node, live) or node
            kept.append(node)
            live.update(node.inputs)  # (literals too: they are never a node's output)
    kept.reverse()
    return Graph(graph.name, graph.inputs, kept, graph.outputs, graph.n_args, dict(graph.meta))


def _key(node: Node):
    inputs = tuple([("lit", a.value, a.aval.dtype.str) if type(a) is not Var else id(a) for a in node.inputs])
    if not node.params:
        return node.primitive.name, inputs, "[]"
    # a nested graph is itself only (its printed form does not tell how its values are wired)
    params = sorted((k, ("graph", id(v)) if isinstance(v, Graph) else v) for k, v in node.params.items())
    return node.primitive.name, inputs, repr(params)


def cse(graph: Graph) -> Graph:
    """Common subexpressions: a node equal to an earlier one (same primitive, inputs and params) is dropped
    and its uses read the earlier value. Named constants (``full``: ``grad_out = 1.0``) and aliases
    (``copy``) are kept: they name distinct gradients."""
    seen: dict = {}
    replace: dict = {}
    nodes = []
    outputs, defined = {v for v in graph.outputs if isinstance(v, Var)}, _defined(graph)
    for node in graph.nodes:
        node = _with_inputs(node, replace)
        # (an unnamed constant, np.arange(5) made twice, is one; not a result: two results are two arrays)
        if (node.inputs or not _named(node.out, defined) and node.out not in outputs) and not node.primitive.alias:
            key = _key(node)
            if key in seen:
                replace.update(zip(node.outs, seen[key]))  # (every result of a node of several: w, v = eigh(a))
                continue
            seen[key] = node.outs
        nodes.append(node)
    return _rebuild(graph, nodes, replace)


def simplify(graph: Graph, constants: dict | None = None) -> Graph:
    """Algebraic simplification, by the rules primitives declare (``rewrite``):

    - an explicit broadcast (a primitive that ``broadcasts``) feeding an elementwise node that broadcasts
      anyway is skipped (``grad_Y = grad_L * G`` rather than broadcasting ``grad_L`` to G's shape first);
    - then each node's own ``rewrite``: ``-(-x)`` is ``x``; a reshape of a reshape is one reshape (or none,
      back to the same shape); the sum of a scalar broadcast to n elements is the scalar times n;
      ``stop_gradient(x)`` is ``x`` (optimised graphs are compiled, never differentiated again).

    A rule sees the nodes defining a node's inputs through ``producer``, which looks through aliases
    (``copy``) to an alias or a broadcast.

    First, unnamed constants are folded: ``s5 = s4 * 2.0`` with ``s4 = 1.0`` (a seed whose value is not
    computed, multiplied through; its aliases) is the literal ``2.0`` where it is read, computed as the
    reference computes it, and an alias naming nothing is the value it aliases. Named values (``grad_out =
    1.0``, ``grad_s9 = -grad_out``) and what is computed from them stay: they are the lines of the chain
    rule a reader follows.
    """
    defs: dict = {}
    replace: dict = {}
    nodes = []
    uniform: dict = dict(constants or {})  # values whose every element is one known scalar (a seed): Var -> it
    outputs, defined = {v for v in graph.outputs if isinstance(v, Var)}, _defined(graph)

    def producer(atom):
        return defs.get(atom) if isinstance(atom, Var) else None

    for node in graph.nodes:
        node = _with_inputs(node, replace)
        prim = node.primitive
        unnamed = not _named(node.out, defined) and node.out not in outputs
        value = _constant_value(node, uniform) if unnamed else None
        if value is not None:
            uniform[node.out] = value
            if not node.out.aval.shape:
                replace[node.out] = Literal(value, node.out.aval.dtype)
                continue
            if node.inputs:  # an array of one value
                node = Node(_FULL, (), dict(shape=node.out.aval.shape, value=value.item(), dtype=node.out.aval.dtype),
                            node.out, node.source, node.group, node.backward)
                prim = node.primitive
        if prim.alias and unnamed and isinstance(node.inputs[0], Var):
            replace[node.out] = node.inputs[0]  # an alias naming nothing
            continue
        if prim.elementwise:
            node = _read_constants(_skip_broadcasts(node, defs), uniform, defined)
        if prim.rewrite is not None:
            simpler = prim.rewrite(node, producer)
            if isinstance(simpler, Node):
                node = simpler
            elif simpler is not None:
                replace[node.out] = simpler
                continue
        # an alias stands for what it aliases (one lookup, however long the chain of aliases)
        source = producer(node.inputs[0]) if prim.alias else None
        defs[node.out] = source if source is not None and (source.primitive.alias or source.primitive.broadcasts) \
            else node
        nodes.append(node)
    return _rebuild(graph, nodes, replace)


def _defined(graph: Graph) -> set:
    return set(graph.inputs) | {v for node in graph.nodes for v in node.outs}


def _named(var: Var, defined: set) -> bool:
    """The value has a name in the generated code: its own, or ``grad_x`` / ``tan_x`` of a value computed."""
    return var.hint is not None or var.grad_of in defined or var.tangent_of in defined


def _constant_value(node: Node, uniform: dict):
    """The one value every element of ``node``'s output has, when its inputs are literals or unnamed
    constants (``uniform``): a scalar node with no inputs (a seed), an array of one value, a broadcast of a
    constant, or an operator (``cheap``) on constants; else None."""
    prim, out = node.primitive, node.out
    if node.also or prim.multiple_results or out.aval.dtype.kind not in "biuf":
        return None
    if not node.inputs:
        if prim is _FULL:
            return out.aval.dtype.type(node.params["value"])
        return out.aval.dtype.type(prim.ref(**node.params)) if not out.aval.shape else None
    if not (prim.broadcasts or prim.elementwise and prim.cheap):
        return None
    values = []
    for atom in node.inputs:
        value = atom.aval.dtype.type(atom.value) if isinstance(atom, Literal) else uniform.get(atom)
        if value is None:
            return None
        values.append(value)
    if prim.broadcasts:
        return values[0]
    with np.errstate(all="ignore"):  # (the compiled code computes the same inf or NaN)
        return out.aval.dtype.type(prim.ref(*values, **node.params))


def _read_constants(node: Node, uniform: dict, defined: set) -> Node:
    """An elementwise node reads an unnamed array of one value as that value (a literal), where the other
    inputs still give it its shape."""
    inputs = list(node.inputs)
    for i, atom in enumerate(inputs):
        if isinstance(atom, Var) and atom.aval.shape and atom in uniform and not _named(atom, defined):
            candidate = inputs[:i] + [Literal(uniform[atom], atom.aval.dtype)] + inputs[i + 1:]
            if np.broadcast_shapes(*(a.aval.shape for a in candidate)) == node.out.aval.shape:
                inputs = candidate
    inputs = tuple(inputs)
    return node if inputs == node.inputs else _replace_inputs(node, inputs)


def _skip_broadcasts(node: Node, defs: dict) -> Node:
    inputs = None  # (made only for a node reading a broadcast)
    for i, atom in enumerate(node.inputs):
        source = defs.get(atom) if isinstance(atom, Var) else None  # aliases are looked through (grad_s7 = grad_s8)
        if source is None or not source.primitive.broadcasts:
            continue
        if inputs is None:
            inputs = list(node.inputs)
        candidate = inputs[:i] + [source.inputs[0]] + inputs[i + 1:]
        if np.broadcast_shapes(*(a.aval.shape for a in candidate)) == node.out.aval.shape:
            inputs = candidate
    if inputs is None:
        return node
    inputs = tuple(inputs)
    return node if inputs == node.inputs else _replace_inputs(node, inputs)


# ---------------------------------------------------------------- elementwise fusion


def _without_orphan_aliases(graph: Graph) -> Graph:
    """An alias (``copy``) naming the gradient (or tangent) of a value the graph no longer computes (a loop
    body's forward value that only its gradient needed) names nothing: its users read the aliased value."""
    present = set(graph.inputs) | {v for node in graph.nodes for v in node.outs}
    replace, nodes = {}, []
    for node in graph.nodes:
        node = _with_inputs(node, replace)
        of = node.out.grad_of if node.out.grad_of is not None else node.out.tangent_of
        if node.primitive.alias and of is not None and of not in present \
                and isinstance(node.inputs[0], Var):
            replace[node.out] = node.inputs[0]
            continue
        nodes.append(node)
    return _rebuild(graph, nodes, replace) if replace else graph


def _optimize_bodies(graph: Graph, fusion: bool) -> Graph:
    nodes, changed, defined = [], False, _defined(graph)
    constants = {node.out: node.params["value"] for node in graph.nodes  # (unnamed arrays of one value)
                 if node.primitive is _FULL and not _named(node.out, defined)}
    for node in graph.nodes:
        if node.primitive.scoped is not None:  # a loop: its body is a graph of its own
            scoped = set(node.primitive.scoped(node))
            params = {}
            for k, v in node.params.items():
                if isinstance(v, Graph):  # its other inputs are the node's, in order: constants known outside
                    outer = zip([x for x in v.inputs if x not in scoped], node.inputs)
                    known = {var: var.aval.dtype.type(atom.value if isinstance(atom, Literal) else constants[atom])
                             for var, atom in outer if isinstance(atom, Literal) or atom in constants}
                    v = optimize(v, fusion, known)
                params[k] = v
            node = dataclasses.replace(node, params=params)
            changed = True
        nodes.append(node)
    graph = Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args, dict(graph.meta))
    return dce(graph, prune=True) if changed else graph  # (constants a body no longer reads)


def _fused_vjp(g, out, *inputs, body, shape, accumulate):
    raise IRError("fused nodes are made after differentiation and cannot be differentiated")


def _fused_ref(*inputs, body, shape, accumulate):
    results = [np.broadcast_to(value, out.aval.shape).copy() for value, out in zip(evaluate(body, *inputs), body.outputs)]
    return results if len(results) > 1 else results[0]


# Not in the registry: the grouping passes make these nodes, and ``lower`` turns each into a ``loop_nest``.
fused = Primitive(
    name="fused",
    doc="""A group of elementwise nodes to be computed in one loop nest over ``shape``: no temporary arrays.

    ``body`` is a graph over the same array-level values (its inputs are this node's inputs, its outputs
    this node's outputs): what ``fuse``, ``_read_what_is_stored`` and ``merge_loops`` group and merge. An
    output of shape ``shape`` is stored element by element; one whose ``accumulate`` entry is True is a
    sum of reductions or slice gradients of values of ``shape`` (``accumulation_leaves``). It never reaches
    code generation, and has no render: ``lower`` makes it a ``loop_nest`` on scalars.""",
    shape=lambda *avals, body, shape, accumulate: body.outputs[0].aval,
    ref=_fused_ref,
    emit=None,
    vjp=_fused_vjp,
)

# A value fusion computes again in each loop that reads it, instead of storing it, is built from at most
# this many cheap nodes since the last stored value (x[1:] - x[:-1] ** 2 is two): a long chain keeps
# every ninth value as an array, so recomputing costs at most this much per value.
RECOMPUTE_NODES = 8


def _statements(members: list) -> int:
    """How many statements a group of nodes takes in generated code, after inlining."""
    uses, consumer_group = {}, {}
    for member in members:
        for a in member.inputs:
            uses[a] = uses.get(a, 0) + 1
            consumer_group[a] = member.group
    return 1 + sum(1 for m in members[:-1] if not inlinable(m, uses, consumer_group))


def _outer(node: Node) -> bool:
    """An elementwise node none of whose array inputs has its shape (``reshape(a, (n, 1)) * b``, an outer
    product): Numba broadcasts such an expression several times slower than a loop nest computes it."""
    shape = node.out.aval.shape
    arrays = [a.aval.shape for a in node.inputs if a.aval.shape]
    return node.primitive.elementwise and len(shape) > 1 and bool(arrays) and shape not in arrays


def _scalar_kernel(node: Node) -> bool:
    """The node's kernel (or its ``x if c else y``) works on one element at a time: on arrays it must be
    called inside a loop."""
    prim = node.primitive
    return prim.elementwise and (prim.kernel is not None or isinstance(prim.emit, Conditional))


_INDEX_AVAL = Aval((), np.dtype(np.int64))


def _index_values(n: int, nodes: list | None = None) -> list:
    """Index values ``i0, i1, ...`` (int64 scalars) whose arithmetic adds nodes to ``nodes``."""
    nodes = [] if nodes is None else nodes
    return [Index(Var(_INDEX_AVAL, hint=f"i{d}"), nodes) for d in range(n)]


def loop_read(node: Node, loop: list | None = None):
    """How a loop nest reads a structural node (``broadcast_to``, a slice's gradient ``place``) element by
    element, from its primitive's ``loop_index`` at the index values ``loop`` (``Index``; throwaway ones
    when only asking whether it can): (subscripts of its input, conditions), or None."""
    prim = node.primitive
    if prim.loop_index is None:
        return None
    loop = _index_values(node.out.aval.ndim) if loop is None else loop
    return prim.loop_index(loop, node.out.aval.shape, node.inputs[0].aval.shape, **node.params)


def accumulate_write(node: Node, loop: list | None = None):
    """How a loop nest over a node's input computes it by adding each element into the output
    (``reduce_sum``, a slice's gradient ``place``), from its primitive's ``accumulate_index`` at the index
    values ``loop``: the output's subscripts, or None."""
    prim = node.primitive
    if prim.accumulate_index is None:
        return None
    x = node.inputs[0] if node.inputs else None
    if not isinstance(x, Var) or not x.aval.ndim or node.out.aval.dtype.kind not in "fi":
        return None
    loop = _index_values(x.aval.ndim) if loop is None else loop
    return prim.accumulate_index(loop, x.aval.shape, node.out.aval.shape, **node.params)


def accumulation_leaves(node: Node, defs: dict, uses: dict, outputs=frozenset()):
    """The accumulating nodes (``accumulate_write``) whose sum ``node`` is, all over inputs of one shape,
    joined by ``add`` nodes used only there (``uses``: how many nodes use each value); or None.
    ``np.sum(s8)`` is one leaf; the gradient of x in ``x[1:] * x[:-1]`` is two (the slices' ``place``).
    (A walk with a stack, not recursion: an unrolled sum of 10,000 terms is a chain 10,000 adds deep.)"""
    if accumulate_write(node) is not None:
        return [node]
    if node.primitive.name != "add":
        return None
    leaves, todo = [], [node]
    while todo:
        current = todo.pop()
        if current is not node and accumulate_write(current) is not None:
            leaves.append(current)
            continue
        for a in reversed(current.inputs):  # left to right, as written
            producer = defs.get(a) if isinstance(a, Var) else None
            if producer is None or a.aval != current.out.aval or a in outputs or uses.get(a) != 1:
                return None
            if accumulate_write(producer) is None and producer.primitive.name != "add":
                return None  # (at once: an unrolled sum must not be walked from each of its adds)
            todo.append(producer)
    return leaves if len({leaf.inputs[0].aval.shape for leaf in leaves}) == 1 else None


def _fusible(node: Node) -> bool:
    # structural nodes join a loop as reads of their input: inside the loop they cost nothing
    return (node.primitive.elementwise or loop_read(node) is not None) and node.out.aval.ndim > 0


def _recomputable(graph: Graph, uses: dict, outputs: set) -> set:
    """Cheap elementwise values that every fused loop reading them computes again instead of reading an
    array: each user is elementwise over the same shape or accumulates it, and the value is built from
    at most ``RECOMPUTE_NODES`` such nodes."""
    size: dict = {}
    for node in graph.nodes:
        shape = node.out.aval.shape
        if not (node.primitive.cheap and shape and node.out not in outputs):
            continue
        if not all((user.primitive.elementwise and user.out.aval.shape == shape) or accumulate_write(user) is not None
                   for user in uses.get(node.out, ())):
            continue
        total = 1 + sum(size.get(a, 0) for a in set(node.inputs))
        if total <= RECOMPUTE_NODES:
            size[node.out] = total
    return {node for node in graph.nodes if node.out in size}


def fuse(graph: Graph, group: bool = True) -> Graph:
    """Elementwise fusion: each maximal group of elementwise nodes of one shape becomes one ``fused``
    node (one loop nest, no temporaries, once ``lower`` has made it a ``loop_nest``). A group ends in an elementwise node, or in reductions and slice
    gradients of its values, summed inside the loop (``accumulation_leaves``). Its other values are used
    only inside the group, or are cheap enough to compute again in every loop that needs them
    (``x[:-1] ** 2``: recomputed rather than stored for the backward pass).

    A group that spells as one statement stays as it is (Numba fuses an array expression itself), unless
    it uses a scalar kernel, is an outer product, or sums what it computes (``sum_axis(-g, 1)``: Numba
    would store ``-g`` in an array for the sum to read). ``group=False`` only puts each array use of a scalar kernel in a loop of its
    own (the unfused code of ``debug_nans``)."""
    if not _has_arrays(graph):
        return graph
    uses: dict = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(node)
    outputs = {v for v in graph.outputs if isinstance(v, Var)}
    defs = {node.out: node for node in graph.nodes}
    position = {node: k for k, node in enumerate(graph.nodes)}
    counts = {v: len(users) for v, users in uses.items()}
    again = _recomputable(graph, uses, outputs) if group else set()
    assigned: dict = {}  # member node -> root node of its group (recomputed nodes are never assigned)
    copied: set = set()  # nodes some loop computes again: their inputs must stay available
    groups: dict = {}  # root -> ([members in graph order], domain, accumulate)
    for root in reversed(graph.nodes):
        if root in assigned:
            continue
        # (a value other loops compute again keeps its inputs: they read them)
        leaves = accumulation_leaves(root, defs, counts, outputs) if group and root not in copied else None
        if leaves is not None:
            members = accumulation_tree(root, leaves, defs)
            domain = leaves[0].inputs[0].aval.shape
        elif root.primitive.elementwise and _fusible(root) and (group or _scalar_kernel(root)):
            members, domain = {root}, root.out.aval.shape
        else:
            continue
        copies = set()  # recomputed here; other loops may compute them too, so never assigned
        # Grow the group from its members' inputs. A producer refused because one of its users was not yet a
        # member is looked at again when that user joins (a new member's producers are all looked at).
        todo = [a for member in members for a in member.inputs] if group else []
        while todo:
            a = todo.pop()
            producer = defs.get(a) if isinstance(a, Var) else None
            if (producer is None or producer in members or producer in assigned or not _fusible(producer)
                    or producer.out.aval.shape != domain or producer.out in outputs):
                continue
            # used only here, by values no other loop computes again: it belongs to this loop
            exclusive = producer not in copied and all(user in members and user not in copied
                                                       for user in uses[producer.out])
            if not exclusive:
                if producer not in again:
                    continue
                copies.add(producer)  # cheap: computed again here, and wherever else it is read
                copied.add(producer)
            members.add(producer)
            todo.extend(producer.inputs)
        ordered = sorted(members, key=position.__getitem__)
        if _statements(ordered) > 1 or any(_scalar_kernel(n) or _outer(n) for n in ordered) or \
                (leaves is not None and len(ordered) > len(leaves)):
            for member in members - copies:
                assigned[member] = root
            groups[root] = (ordered, domain, leaves is not None)
    if not groups:
        return graph
    nodes = []
    for node in graph.nodes:
        root = assigned.get(node)
        if root is None:
            nodes.append(node)
        elif node is root:
            nodes.append(_fused_node(*groups[root]))
    return _read_what_is_stored(dce(Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args,
                                          dict(graph.meta))))


def _has_arrays(graph: Graph) -> bool:
    """Some node reads or computes an array: only then can a loop be fused (or merged)."""
    for node in graph.nodes:
        if node.out.aval.shape or node.also:
            return True
        for a in node.inputs:
            if a.aval.shape:
                return True
    return False


def _read_what_is_stored(graph: Graph) -> Graph:
    """A value a loop would compute again that is stored as an array anyway (a user needed it whole) is
    read from the array instead: one value, one name, and no work done twice."""
    stored = {v for node in graph.nodes for v in node.outs}
    nodes = [_without_copies_of(node, stored) if node.primitive is fused else node for node in graph.nodes]
    return dce(Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args, dict(graph.meta)))


def _without_copies_of(loop: Node, stored: set) -> Node:
    body = loop.params["body"]
    if not any(m.out in stored and m.out not in loop.outs for m in body.nodes):
        return loop
    needed, kept = set(body.outputs), []
    for member in reversed(body.nodes):  # what the outputs still need, reading stored values as arrays
        if member.out in needed and (member.out in loop.outs or member.out not in stored):
            kept.append(member)
            needed.update(a for a in member.inputs if isinstance(a, Var))
    kept.reverse()
    inputs = _read_from_outside(kept)
    params = dict(loop.params, body=Graph(body.name, inputs, kept, body.outputs))
    return dataclasses.replace(loop, inputs=tuple(inputs), params=params)


def accumulation_tree(root: Node, leaves: list, defs: dict) -> set:
    """The nodes of an accumulation: its leaves and the ``add`` nodes joining them."""
    members, todo = set(leaves), [root]
    while todo:
        node = todo.pop()
        members.add(node)
        if node not in leaves:
            todo.extend(defs[a] for a in node.inputs)
    return members


def _read_from_outside(members: list) -> list:
    """The values a loop body reads that it does not compute, in order of first use."""
    inside = {m.out for m in members}
    return list(dict.fromkeys(a for m in members for a in m.inputs if isinstance(a, Var) and a not in inside))


def _fused_node(members: list, domain: tuple, accumulate: bool) -> Node:
    root = members[-1]
    inputs = _read_from_outside(members)
    body = Graph(f"fused_{root.primitive.name}", list(inputs), list(members), [root.out])
    params = dict(body=body, shape=domain, accumulate=(accumulate,))
    return Node(fused, tuple(inputs), params, root.out, root.source, None, root.backward)


def merge_loops(graph: Graph) -> Graph:
    """Fused loops over the same shape that read the same values become one loop computing all their
    outputs, when nothing between them reads the earlier one's outputs and the later one reads them, if
    at all, element by element at the loop's own index (a stored value, not a sum, which is complete only
    after the loop): the forward pass's sum and the backward pass's gradient in one loop; a bias gradient
    and the gradient it sums; ``s5 = np.exp(z)``, stored for the backward pass, and its row sums. A lone
    sum or slice gradient (``np.sum(s5, axis=1)``) joins the loop that computes its terms."""
    if not _has_arrays(graph):
        return graph
    nodes: list = []
    open_loops: list = []  # fused nodes in ``nodes`` whose outputs nothing after them has read yet
    for node in graph.nodes:
        reads = {a for a in node.inputs if isinstance(a, Var)}
        loop = _as_loop(node)
        partner = None if loop is None else next((l for l in reversed(open_loops) if _mergeable(l, loop)), None)
        open_loops = [l for l in open_loops if l is not partner and not reads.intersection(l.outs)]
        if partner is not None:
            nodes.remove(partner)
            node = _merged(partner, loop)
        if node.primitive is fused:
            open_loops.append(node)
        nodes.append(node)
    read = {a for node in nodes for a in node.inputs} | set(graph.outputs)
    nodes = [_without_unread(node, read) if node.primitive is fused and node.also else node for node in nodes]
    return Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args, dict(graph.meta))


def _without_unread(loop: Node, read: set) -> Node:
    """A merged loop stores only the values read after it: the others were read inside it."""
    kept = [(v, summed) for v, summed in zip(loop.outs, loop.params["accumulate"]) if summed or v in read]
    if len(kept) == len(loop.outs):
        return loop
    outs = tuple(v for v, _ in kept)
    body = loop.params["body"]
    params = dict(loop.params, body=Graph(body.name, body.inputs, body.nodes, list(outs)),
                  accumulate=tuple(summed for _, summed in kept))
    return dataclasses.replace(loop, params=params, out=outs[0], also=outs[1:])


def _as_loop(node: Node):
    """The node as a fused loop: itself, or a lone sum or slice gradient as a loop over its input."""
    if node.primitive is fused:
        return node
    if accumulate_write(node) is None:
        return None
    x = node.inputs[0]
    body = Graph(f"fused_{node.primitive.name}", [x], [node], [node.out])
    return Node(fused, (x,), dict(body=body, shape=x.aval.shape, accumulate=(True,)), node.out, node.source,
                None, node.backward)


# Loops are not merged past this many nodes in one body: code is split for Numba only between statements,
# and a loop is one statement (codegen.SPLIT_LINES).
MERGE_NODES = 300


def _mergeable(first: Node, second: Node) -> bool:
    domain = first.params["shape"]
    if second.params["shape"] != domain:
        return False
    if len(first.params["body"].nodes) + len(second.params["body"].nodes) > MERGE_NODES:
        return False
    inside_a = {m.out for m in first.params["body"].nodes}
    inside_b = {m.out for m in second.params["body"].nodes}
    if inside_b.intersection(first.outs):  # the second computes an output of the first again: it stays apart
        return False
    stored = {v for v, summed in zip(first.outs, first.params["accumulate"]) if not summed}
    needed = set(second.inputs).intersection(first.outs)
    if needed - stored:  # a sum is complete only after the loop
        return False
    for member in second.params["body"].nodes:  # read at the loop index: elementwise, or summed
        at_index = (member.primitive.elementwise and member.out.aval.shape == domain) or \
            accumulate_write(member) is not None
        if not at_index and needed.intersection(member.inputs):
            return False
    return bool(needed or set(first.inputs) & set(second.inputs) or inside_a & inside_b)


def _merged(first: Node, second: Node) -> Node:
    a, b = first.params["body"], second.params["body"]
    in_a, read_by_a = set(a.nodes), set(first.inputs)
    members = list(a.nodes) + [m for m in b.nodes if m not in in_a]  # values both compute, once
    inputs = list(first.inputs) + [v for v in second.inputs if v not in read_by_a and v not in first.outs]
    outs = first.outs + second.outs
    body = Graph(a.name, inputs, members, list(outs))
    params = dict(body=body, shape=first.params["shape"],
                  accumulate=first.params["accumulate"] + second.params["accumulate"])
    return Node(fused, tuple(inputs), params, outs[0], first.source, None, second.backward, also=outs[1:])


# ---------------------------------------------------------------- lowering to loop nests

_LOOP_NEST, _ELEMENT, _ADD_AT = PRIMITIVES["loop_nest"], PRIMITIVES["element"], PRIMITIVES["add_at"]


def lower(graph: Graph) -> Graph:
    """Each ``fused`` group becomes a ``loop_nest`` (``primitives/nest.py``): its members on scalars,
    reads of outside arrays as ``element`` nodes at the index values (broadcast: element 0 of a size-1
    axis), structural members read through their primitive's ``loop_index``, and sums written by
    ``add_at`` nodes at its ``accumulate_index``: graph to graph, so code generation only prints."""
    if not any(node.primitive is fused for node in graph.nodes):
        return graph
    nodes = [_loop_nest(node) if node.primitive is fused else node for node in graph.nodes]
    return Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args, dict(graph.meta))


def _scalar(var: Var) -> Var:
    """The scalar a loop nest computes for each element of ``var``: named as it (``element_of``)."""
    scalar = Var(Aval((), var.aval.dtype), var.hint, var.grad_of)
    scalar.tangent_of, scalar.element_of = var.tangent_of, var
    return scalar


def _loop_nest(loop: Node) -> Node:
    group, shape = loop.params["body"], loop.params["shape"]
    members = group.nodes
    nodes: list = []  # the body's, in order (index arithmetic where it is first needed)
    index = _index_values(len(shape), nodes)
    defs = {m.out: m for m in members}
    uses: dict = {}
    for m in members:
        for a in m.inputs:
            uses[a] = uses.get(a, 0) + 1
    sums, joins = {}, set()  # accumulating node -> the output it adds to; the adds joining them
    for out, summed in zip(loop.outs, loop.params["accumulate"]):
        if summed:
            leaves = accumulation_leaves(defs[out], defs, uses)
            sums.update((leaf, out) for leaf in leaves)
            joins |= accumulation_tree(defs[out], leaves, defs) - set(leaves)
    scalars: dict = {}  # array-level value -> its scalar in the body
    reads: dict = {}  # outside array -> its element at the index values

    def value(atom):
        if isinstance(atom, Literal) or not atom.aval.shape:
            return atom  # (a scalar from outside is read as it is)
        if atom in scalars:
            return scalars[atom]
        if atom not in reads:
            at = [index_atom(i) for i in broadcast_subscripts(index, shape, atom.aval.shape)]
            read = Var(Aval((), atom.aval.dtype))
            nodes.append(Node(_ELEMENT, (atom, *at), dict(guards=0), read))
            reads[atom] = read
        return reads[atom]

    position = {out: k for k, out in enumerate(loop.outs)}
    writes = []
    for member in members:
        if member in joins:
            continue
        if member in sums:
            at = [index_atom(i) for i in accumulate_write(member, index)]
            added = _scalar(member.out)
            nodes.append(Node(_ADD_AT, (value(member.inputs[0]), *at), {}, added, member.source, member.group,
                              member.backward))
            writes.append((position[sums[member]], added))
            continue
        scalar = scalars[member.out] = _scalar(member.out)
        structural = loop_read(member, index)
        if structural is not None:  # its input at the subscripts the primitive gives, 0 where it has none
            at, conditions = structural
            x = member.inputs[0]
            inputs = (x, *map(index_atom, at)) if isinstance(x, Var) and x.aval.shape and x not in defs \
                else (value(x),)  # (a scalar, or a value this loop computes: the op covers it whole)
            nodes.append(Node(_ELEMENT, (*inputs, *map(index_atom, conditions)), dict(guards=len(conditions)),
                              scalar, member.source, member.group, member.backward))
        else:
            nodes.append(Node(member.primitive, tuple(value(a) for a in member.inputs), member.params, scalar,
                              member.source, member.group, member.backward))
    accumulate = loop.params["accumulate"]
    stored = [scalars[out] for out, summed in zip(loop.outs, accumulate) if not summed]
    inputs = [i.atom for i in index] + list(loop.inputs)
    # (dce: index values a declaration built and did not return)
    body = dce(Graph(group.name.replace("fused_", "nest_", 1), inputs, nodes, stored + [w for _, w in writes]))
    params = dict(shape=shape, body=body, accumulate=accumulate, writes=tuple(k for k, _ in writes),
                  avals_out=tuple(out.aval for out in loop.outs), origin=Origin(tuple(members)))
    return Node(_LOOP_NEST, loop.inputs, params, loop.out, loop.source, loop.group, loop.backward, loop.also)


def optimize(graph: Graph, fusion: bool = True, constants: dict | None = None) -> Graph:
    """The standard pipeline: common subexpressions, simplification, dead code, then elementwise fusion
    (``fusion=False``: only the loops that scalar kernels need) and the lowering of each fused group to a
    loop nest. The bodies of loops are optimised the same way, after the loops have dropped the outputs
    nothing reads, knowing which of their inputs are arrays of one value (``constants``: {input: value},
    for ``simplify``)."""
    graph = _without_orphan_aliases(dce(simplify(dce(cse(graph)), constants), prune=True))
    graph = _optimize_bodies(graph, fusion)
    graph = fuse(graph, group=fusion)
    return lower(merge_loops(graph) if fusion else graph)
