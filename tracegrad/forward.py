"""Forward mode: append to a graph the tangent of each value, computed by each primitive's JVP rule.

The tangent nodes are recorded with the same ``bind`` the tracer uses, right after the node whose tangent
they compute, so the result is an ordinary graph (``tan_y = tan_x * np.cos(x)`` beside ``y = np.sin(x)``):
printable, optimisable, compilable and differentiable again. Only values that depend on an input with a
tangent get one; a tangent is one value of its primal's shape, never a Jacobian.
"""
from __future__ import annotations

import itertools

import numpy as np

from .core import PRIMITIVES, Builder, TracedArray, current_builder
from .ir import Aval, Graph, IRError, Var
from .passes import dce
from .primitives.structural import broadcast_to


def jvp_graph(graph: Graph, wrt: list[int], name: str | None = None) -> Graph:
    """A graph computing ``graph``'s outputs and their tangents along the inputs listed in ``wrt``.

    Its inputs are ``graph``'s arguments, then one tangent per input in ``wrt`` (``tan_x``), then
    ``graph``'s captured inputs; its outputs are ``graph``'s outputs followed by one tangent per output
    (zeros where an output does not depend on those inputs). Raises ``IRError`` for an input that is not
    floating-point."""
    primals = [graph.inputs[i] for i in wrt]
    for var in primals:
        if var.aval.dtype.kind != "f":
            raise IRError(f"a tangent for the input {var!r}, which is not floating-point")
    tangent_inputs = []
    for var in primals:
        tangent = Var(var.aval)
        tangent.tangent_of = var
        tangent_inputs.append(tangent)
    builder = Builder(name or f"{graph.name}_jvp")
    builder.inputs = list(graph.inputs[:graph.n_args]) + tangent_inputs + list(graph.inputs[graph.n_args:])
    with builder:
        tangents = forward(builder, graph.nodes, dict(zip(primals, tangent_inputs)))
        outputs = []
        for out in graph.outputs:
            primal = out if isinstance(out, Var) else None
            t = tangents.get(primal)
            outputs.append(t if t is not None else zeros(out.aval, primal))
    if builder.captured:
        raise IRError("a JVP rule captured an array; rules must be written with traced operations only")
    result = Graph(builder.name, builder.inputs, builder.nodes, list(graph.outputs) + outputs,
                   graph.n_args + len(wrt))
    return dce(result)


def forward(builder: Builder, nodes: list, seeds: dict) -> dict:
    """Record ``nodes`` into ``builder``, each followed by the nodes of its tangent, starting from the
    tangents ``seeds`` ({value: its tangent Var}); returns every value's tangent Var."""
    tangents = dict(seeds)
    known = set(builder.inputs) | {v for n in nodes for v in n.outs}
    groups = itertools.count(1 + max((n.group for n in nodes if n.group is not None), default=-1))
    saved = builder.source, builder.group
    for node in nodes:
        ts = [tangents.get(a) if isinstance(a, Var) else None for a in node.inputs]
        start = len(builder.nodes)
        builder.nodes.append(node)
        if node.primitive.nondiff or all(t is None for t in ts):
            continue
        if node.primitive.jvp is None:
            raise IRError(f"{node.primitive.name} has no forward-mode (JVP) rule")
        builder.source, builder.group = node.source, next(groups)
        args = [TracedArray(a, builder) if isinstance(a, Var) else a.aval.dtype.type(a.value) for a in node.inputs]
        several = node.primitive.multiple_results
        out = [builder.wrap(v) for v in node.outs] if several else builder.wrap(node.out)
        result = node.primitive.jvp([None if t is None else builder.wrap(t) for t in ts], out, *args, **node.params)
        if any(node.out in n.outs for n in builder.nodes[start + 1:]):
            del builder.nodes[start]  # the rule computed the outputs again with their tangents (a loop carrying both)
        for var, t in zip(node.outs, result if several else [result]):
            if t is not None and var.aval.dtype.kind == "f":
                tangents[var] = _named(var, _as_tangent(t, var.aval, builder), builder, known)
    builder.source, builder.group = saved
    return tangents


def zeros(aval: Aval, of: Var | None = None) -> Var:
    """A zero tangent recorded in the current builder (named ``tan_<of>``)."""
    var = current_builder().add_node(PRIMITIVES["full"], (), dict(shape=aval.shape, value=0.0, dtype=aval.dtype),
                                     aval)
    var.tangent_of = of
    return var


def dependents(nodes: list, seeds) -> set:
    """The values computed by ``nodes`` that depend on ``seeds`` (differentiably), the seeds included."""
    reached = set(seeds)
    for node in nodes:
        if not node.primitive.nondiff and any(isinstance(a, Var) and a in reached for a in node.inputs):
            reached.update(v for v in node.outs if v.aval.dtype.kind == "f")
    return reached


def _named(var: Var, t: TracedArray, builder: Builder, known: set) -> Var:
    """Make ``t`` the value displayed as ``tan_<var>``: name it, or alias it if it has a name already."""
    t = t.var
    if t not in known and t.hint is None and t.grad_of is None and t.tangent_of is None:
        t.tangent_of = var
        return t
    alias = builder.add_node(PRIMITIVES["copy"], (t,), {}, t.aval)
    alias.tangent_of = var
    return alias


def _as_tangent(t, aval: Aval, builder: Builder) -> TracedArray:
    """Give a rule's result exactly the shape and dtype of the value it is the tangent of."""
    if not isinstance(t, TracedArray):  # a scalar constant left by folding
        value = np.asarray(t)
        if value.ndim:
            raise IRError("a JVP rule returned a constant array")
        params = dict(shape=(), value=value.item(), dtype=aval.dtype)
        t = builder.wrap(builder.add_node(PRIMITIVES["full"], (), params, Aval((), aval.dtype)))
    if t.dtype != aval.dtype:
        t = t.astype(aval.dtype)
    if t.shape != aval.shape:
        t = broadcast_to(t, shape=aval.shape)
    return t


def linearize_graph(graph: Graph, wrt: list[int]) -> tuple[Graph, Graph]:
    """``jvp_graph`` cut in two. ``primal`` (``graph``'s inputs) computes the residuals: the values the
    tangents are computed from. ``tangent`` (the residuals, then one tangent per input in ``wrt``) computes
    the outputs' tangents, linear in its tangent inputs: run once per tangent, it repeats none of the work
    that does not depend on the tangents (``jacfwd``'s columns)."""
    jvp = jvp_graph(graph, wrt)
    tangent_inputs = jvp.inputs[graph.n_args:graph.n_args + len(wrt)]
    moving = set(tangent_inputs)
    primal_nodes, tangent_nodes = [], []
    for node in jvp.nodes:
        if any(isinstance(a, Var) and a in moving for a in node.inputs):
            moving.update(node.outs)
            tangent_nodes.append(node)
        else:
            primal_nodes.append(node)
    tangents = jvp.outputs[len(graph.outputs):]
    read = [a for node in tangent_nodes for a in node.inputs] + list(tangents)
    residuals = list(dict.fromkeys(a for a in read if isinstance(a, Var) and a not in moving))
    primal = dce(Graph(f"{graph.name}_primal", list(graph.inputs), primal_nodes, residuals, graph.n_args))
    tangent = Graph(f"{graph.name}_tangent", residuals + list(tangent_inputs), tangent_nodes, tangents)
    return primal, tangent
