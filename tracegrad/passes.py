"""Graph-to-graph passes. Each returns a new graph computing exactly the same outputs.

Nodes are never mutated (graphs share them); a pass builds new nodes where inputs change. Every
rewrite here is exact in floating point, NaN and inf included.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .core import PRIMITIVES, Primitive
from .interpret import evaluate
from .ir import Graph, IRError, Literal, Node, Var


def _rebuild(graph: Graph, nodes: list, replace: dict) -> Graph:
    outputs = [replace.get(v, v) if isinstance(v, Var) else v for v in graph.outputs]
    return Graph(graph.name, graph.inputs, nodes, outputs, graph.n_args, dict(graph.meta))


def _with_inputs(node: Node, replace: dict) -> Node:
    inputs = tuple(replace.get(a, a) if isinstance(a, Var) else a for a in node.inputs)
    return node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)


def dce(graph: Graph) -> Graph:
    """Dead-code elimination: drop nodes no output depends on."""
    live = {v for v in graph.outputs if isinstance(v, Var)}
    kept = []
    for node in reversed(graph.nodes):
        if node.out in live:
            kept.append(node)
            live.update(a for a in node.inputs if isinstance(a, Var))
    kept.reverse()
    return Graph(graph.name, graph.inputs, kept, graph.outputs, graph.n_args, dict(graph.meta))


def _key(node: Node):
    inputs = tuple(("lit", a.value, a.aval.dtype.str) if isinstance(a, Literal) else id(a) for a in node.inputs)
    return node.primitive.name, inputs, repr(sorted(node.params.items()))


def cse(graph: Graph) -> Graph:
    """Common subexpressions: a node equal to an earlier one (same primitive, inputs and params) is dropped
    and its uses read the earlier value. Constants (``full``) and aliases (``copy``) are kept: they name
    distinct gradients."""
    seen: dict = {}
    replace: dict = {}
    nodes = []
    for node in graph.nodes:
        node = _with_inputs(node, replace)
        if node.inputs and node.primitive.name != "copy":
            key = _key(node)
            if key in seen:
                replace[node.out] = seen[key]
                continue
            seen[key] = node.out
        nodes.append(node)
    return _rebuild(graph, nodes, replace)


def simplify(graph: Graph) -> Graph:
    """Algebraic simplification:

    - an explicit ``broadcast_to`` feeding an elementwise node that broadcasts anyway is skipped
      (``grad_Y = grad_L * G`` rather than broadcasting ``grad_L`` to G's shape first);
    - ``-(-x)`` is ``x``;
    - the sum of a scalar broadcast to n elements is the scalar times n;
    - ``stop_gradient(x)`` is ``x`` (optimised graphs are compiled, never differentiated again).
    """
    defs: dict = {}
    replace: dict = {}
    nodes = []
    for node in graph.nodes:
        node = _with_inputs(node, replace)
        prim = node.primitive
        if prim.elementwise:
            node = _skip_broadcasts(node, defs)
        if prim.name == "stop_gradient":  # only differentiation cares; optimised graphs are not differentiated
            replace[node.out] = node.inputs[0]
            continue
        if prim.name == "neg" and isinstance(node.inputs[0], Var):
            inner = defs.get(node.inputs[0])
            if inner is not None and inner.primitive.name == "neg" and node.out.aval == inner.inputs[0].aval:
                replace[node.out] = inner.inputs[0]
                continue
        if prim.name == "reduce_sum" and isinstance(node.inputs[0], Var):
            inner = defs.get(node.inputs[0])
            if inner is not None and inner.primitive.name == "broadcast_to" and inner.inputs[0].aval.shape == () \
                    and node.out.aval.shape == ():
                count = Literal(inner.out.aval.size, node.out.aval.dtype)
                node = dataclasses.replace(node, primitive=PRIMITIVES["mul"], inputs=(inner.inputs[0], count), params={})
        defs[node.out] = node
        nodes.append(node)
    return _rebuild(graph, nodes, replace)


def _skip_broadcasts(node: Node, defs: dict) -> Node:
    inputs = list(node.inputs)
    for i, atom in enumerate(inputs):
        source = defs.get(atom) if isinstance(atom, Var) else None
        while source is not None and source.primitive.name == "copy":  # look through aliases (grad_s7 = grad_s8)
            source = defs.get(source.inputs[0]) if isinstance(source.inputs[0], Var) else None
        if source is None or source.primitive.name != "broadcast_to":
            continue
        candidate = inputs[:i] + [source.inputs[0]] + inputs[i + 1:]
        if np.broadcast_shapes(*(a.aval.shape for a in candidate)) == node.out.aval.shape:
            inputs = candidate
    inputs = tuple(inputs)
    return node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)


# ---------------------------------------------------------------- elementwise fusion


def _fused_vjp(g, out, *inputs, body, shape):
    raise IRError("fused nodes are made after differentiation and cannot be differentiated")


def _fused_ref(*inputs, body, shape):
    return np.broadcast_to(evaluate(body, *inputs)[0], shape).copy()


# Not in the registry: fusion makes these nodes, users never write them.
fused = Primitive(
    name="fused",
    doc="""A group of elementwise nodes computed in one loop nest over ``shape``: no temporary arrays.

    ``body`` is a graph over the same values (its inputs are this node's inputs, its one output this
    node's output); codegen writes it as ``for i0 in range(n): ...`` with the body's statements inside.""",
    shape=lambda *avals, body, shape: body.outputs[0].aval,
    ref=_fused_ref,
    emit=None,  # written by codegen as a loop nest
    vjp=_fused_vjp,
)


def inlinable(node: Node, uses: dict, consumer_group: dict) -> bool:
    """A temporary of a VJP rule, used once, by the same rule: codegen writes it inside its user's
    expression (``grad_s3 = grad_L * (1 - L) * L``) instead of as a statement of its own."""
    out = node.out
    return (node.group is not None and uses.get(out) == 1 and out.hint is None and out.grad_of is None
            and consumer_group.get(out) == node.group)


def _statements(members: list) -> int:
    """How many statements a group of nodes takes in generated code, after inlining."""
    uses, consumer_group = {}, {}
    for member in members:
        for a in member.inputs:
            uses[a] = uses.get(a, 0) + 1
            consumer_group[a] = member.group
    return 1 + sum(1 for m in members[:-1] if not inlinable(m, uses, consumer_group))


def _scalar_kernel(node: Node) -> bool:
    """The node's kernel works on one element at a time: on arrays it must be called inside a loop."""
    return node.primitive.elementwise and node.primitive.kernel is not None


def loop_read(node: Node):
    """How a fused loop reads a structural node (``broadcast_to``, a slice's gradient ``place``) element by
    element, from its primitive's ``loop_index``: (subscripts of its input, conditions), or None."""
    prim = node.primitive
    if prim.loop_index is None:
        return None
    loop = [f"i{d}" for d in range(node.out.aval.ndim)]
    return prim.loop_index(loop, node.out.aval.shape, node.inputs[0].aval.shape, **node.params)


def _fusible(node: Node) -> bool:
    # structural nodes join a loop as reads of their input: inside the loop they cost nothing
    return (node.primitive.elementwise or loop_read(node) is not None) and node.out.aval.ndim > 0


def fuse(graph: Graph, group: bool = True) -> Graph:
    """Elementwise fusion: each maximal group of elementwise nodes of one shape, whose intermediate
    values are used only inside the group, becomes one ``fused`` node (one loop, no temporaries).

    A group that spells as one statement stays as it is (Numba fuses an array expression itself), unless
    it uses a scalar kernel. ``group=False`` only puts each array use of a scalar kernel in a loop of its
    own (the unfused code of ``debug_nans``)."""
    uses: dict = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(node)
    outputs = {v for v in graph.outputs if isinstance(v, Var)}
    defs = {node.out: node for node in graph.nodes}
    assigned: dict = {}  # member node -> root node of its group
    groups: dict = {}  # root -> [members in graph order]
    for root in reversed(graph.nodes):
        if root in assigned or not root.primitive.elementwise or not _fusible(root):
            continue
        if not group and not _scalar_kernel(root):
            continue
        members = {root}
        changed = group
        while changed:
            changed = False
            for member in list(members):
                for a in member.inputs:
                    producer = defs.get(a) if isinstance(a, Var) else None
                    if (producer is None or producer in members or producer in assigned or not _fusible(producer)
                            or producer.out.aval.shape != root.out.aval.shape or producer.out in outputs
                            or not all(user in members for user in uses[producer.out])):
                        continue
                    members.add(producer)
                    changed = True
        ordered = [n for n in graph.nodes if n in members]
        if _statements(ordered) > 1 or any(_scalar_kernel(n) for n in ordered):
            for member in members:
                assigned[member] = root
            groups[root] = ordered
    if not groups:
        return graph
    nodes = []
    for node in graph.nodes:
        root = assigned.get(node)
        if root is None:
            nodes.append(node)
        elif node is root:
            nodes.append(_fused_node(groups[root]))
    return Graph(graph.name, graph.inputs, nodes, graph.outputs, graph.n_args, dict(graph.meta))


def _fused_node(members: list) -> Node:
    root = members[-1]
    inside = {m.out for m in members}
    inputs, seen = [], set()
    for member in members:
        for a in member.inputs:
            if isinstance(a, Var) and a not in inside and a not in seen:
                seen.add(a)
                inputs.append(a)
    body = Graph(f"fused_{root.primitive.name}", list(inputs), list(members), [root.out])
    params = dict(body=body, shape=root.out.aval.shape)
    return Node(fused, tuple(inputs), params, root.out, root.source, None, root.backward)


def optimize(graph: Graph, fusion: bool = True) -> Graph:
    """The standard pipeline: common subexpressions, simplification, dead code, then elementwise fusion
    (``fusion=False``: only the loops that scalar kernels need)."""
    graph = dce(simplify(cse(graph)))
    return fuse(graph, group=fusion)
