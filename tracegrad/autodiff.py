"""Reverse mode: turn a forward graph into one graph that computes its value and gradients.

The backward nodes are recorded with the same ``bind`` the tracer uses, by running each primitive's
VJP rule on traced values, so the result is an ordinary graph: printable, optimisable, compilable and
differentiable again. Cotangents of values used more than once are summed (fan-out); only values that
depend on a requested input get a cotangent; no Jacobian is ever formed.
"""
from __future__ import annotations

import itertools

import numpy as np

from .core import PRIMITIVES, Builder, TracedArray, current_builder
from .errors import GradTypeError, user_source
from .ir import Aval, Graph, IRError, Var
from .passes import dce
from .primitives.structural import broadcast_to, sum_to


def value_and_grad_graph(graph: Graph, wrt: list[int], name: str | None = None) -> Graph:
    """A graph with ``graph``'s inputs whose outputs are ``graph``'s outputs followed by the gradient of
    the first output (a scalar) with respect to each input listed in ``wrt``."""
    out = graph.outputs[0]
    if out.aval.shape != ():
        raise GradTypeError(f"grad needs a scalar output, but {graph.name} returns shape {out.aval.shape}",
                            user_source(), hint="reduce it to a scalar (np.sum, np.mean), use jit for the value "
                            "alone, or tg.jacrev for the Jacobian")
    if out.aval.dtype.kind != "f":
        raise GradTypeError(f"grad needs a floating-point output, but {graph.name} returns {out.aval.dtype}",
                            user_source())
    builder = Builder(name or f"{graph.name}_value_and_grad")
    builder.inputs = list(graph.inputs)
    builder.nodes = list(graph.nodes)
    builder.backward = True
    with builder:
        seeds = {}
        if isinstance(out, Var):
            builder.source = next((n.source for n in graph.nodes if out in n.outs), None)
            seeds[out] = seed(out.aval, 1.0, out)
        grads = backward(builder, graph.nodes, seeds, [graph.inputs[i] for i in wrt])
    if builder.captured:
        raise IRError("a VJP rule captured an array; rules must be written with traced operations only")
    result = Graph(builder.name, list(graph.inputs), builder.nodes, list(graph.outputs) + grads, graph.n_args)
    return dce(result)


def seed(aval, value, grad_of=None) -> Var:
    """A constant cotangent recorded in the current builder (``grad_L = 1.0``, or zeros)."""
    var = current_builder().add_node(PRIMITIVES["full"], (), dict(shape=aval.shape, value=value, dtype=aval.dtype),
                                     aval)
    var.grad_of = grad_of
    return var


def backward(builder: Builder, nodes: list, seeds: dict, wrt: list[Var]) -> list[Var]:
    """Record the backward pass of ``nodes`` into ``builder``, starting from the cotangents ``seeds``
    ({value: its cotangent Var}); return the cotangent of each ``wrt`` var (zeros where it has none)."""
    forward_vars = {v for n in nodes for v in n.outs} | set(builder.inputs)
    active = set(wrt)  # values that depend on a requested input
    for node in nodes:
        if not node.primitive.nondiff:
            for a in node.inputs:
                if a in active:  # (literals never are)
                    active.add(node.out)
                    active.update(node.also)
                    break

    def finalize(var, g):
        """Make ``g`` the value displayed as ``grad_<var>``: name it, or alias it if it has a name already."""
        if g.grad_of is var:
            return g
        if g not in forward_vars and g.grad_of is None and g.hint is None:
            g.grad_of = var
            return g
        alias = builder.add_node(PRIMITIVES["copy"], (g,), {}, g.aval)
        alias.grad_of = var
        return alias

    cotangents = {var: g for var, g in seeds.items() if var in active}
    groups = itertools.count()
    for node in reversed(nodes):
        if node.also:
            gs = [cotangents.pop(out, None) for out in node.outs]
            if all(g is None for g in gs):
                continue
            gs = [None if g is None else finalize(out, g) for out, g in zip(node.outs, gs)]
        else:  # (one output, most nodes)
            g = cotangents.pop(node.out, None)
            if g is None:
                continue
            gs = [finalize(node.out, g)]
        if node.primitive.vjp is None:
            continue
        builder.source, builder.group = node.source, next(groups)
        args = [TracedArray(a, builder) if isinstance(a, Var) else a.aval.dtype.type(a.value) for a in node.inputs]
        if node.primitive.multiple_results:
            g = [None if g is None else TracedArray(g, builder) for g in gs]
            out = [TracedArray(v, builder) for v in node.outs]
        else:
            g, out = TracedArray(gs[0], builder), TracedArray(node.out, builder)
        rules = node.primitive.vjp(g, out, *args, **node.params)
        for atom, ct in zip(node.inputs, rules):
            if ct is None or not isinstance(atom, Var) or atom not in active:
                continue
            ct = _as_cotangent(ct, atom, builder)
            cotangents[atom] = (TracedArray(cotangents[atom], builder) + ct).var if atom in cotangents else ct.var
    builder.source, builder.group = None, None
    grads = []
    for var in wrt:
        g = cotangents.get(var)
        grads.append(finalize(var, g) if g is not None else seed(var.aval, 0.0, var))
    return grads


def _as_cotangent(ct, atom: Var, builder: Builder) -> TracedArray:
    """Give a rule's result exactly the shape and dtype of the input it belongs to."""
    if type(ct) is TracedArray and ct.var.aval is atom.aval:  # (already so: most cotangents)
        return ct
    if not isinstance(ct, TracedArray):  # a scalar constant left by folding, e.g. g * 0
        value = np.asarray(ct)
        if value.ndim:
            raise IRError("a VJP rule returned a constant array")
        params = dict(shape=(), value=value.item(), dtype=value.dtype)
        ct = TracedArray(builder.add_node(PRIMITIVES["full"], (), params, Aval((), value.dtype)), builder)
    if ct.shape != atom.aval.shape and np.broadcast_shapes(ct.shape, atom.aval.shape) == atom.aval.shape:
        ct = broadcast_to(ct, shape=atom.aval.shape)
    ct = sum_to(ct, atom.aval.shape)
    if ct.dtype != atom.aval.dtype:
        ct = ct.astype(atom.aval.dtype)
    return ct
