"""Graph-to-graph passes. Each returns a new graph computing exactly the same outputs.

Nodes are never mutated (graphs share them); a pass builds new nodes where inputs change. Every
rewrite here is exact in floating point, NaN and inf included.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .core import PRIMITIVES
from .ir import Graph, Literal, Node, Var


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
    - the sum of a scalar broadcast to n elements is the scalar times n.
    """
    defs: dict = {}
    replace: dict = {}
    nodes = []
    for node in graph.nodes:
        node = _with_inputs(node, replace)
        prim = node.primitive
        if prim.elementwise:
            node = _skip_broadcasts(node, defs)
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
        if source is None or source.primitive.name != "broadcast_to":
            continue
        candidate = inputs[:i] + [source.inputs[0]] + inputs[i + 1:]
        if np.broadcast_shapes(*(a.aval.shape for a in candidate)) == node.out.aval.shape:
            inputs = candidate
    inputs = tuple(inputs)
    return node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)


def optimize(graph: Graph) -> Graph:
    """The standard pipeline: common subexpressions, simplification, then dead code."""
    return dce(simplify(cse(graph)))
