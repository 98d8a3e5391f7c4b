"""Evaluate a graph. With NumPy (``evaluate``) this is the reference semantics every backend is tested
against; with ``bind`` (``inline``) it replays a graph into the graph being built (grad of grad)."""
from __future__ import annotations

import re

import numpy as np

from .core import TracedArray, bind
from .ir import Graph, IRError, Literal, Var


def evaluate(graph: Graph, *inputs) -> list:
    """Run ``graph`` on NumPy values using each primitive's reference implementation."""
    if len(inputs) != len(graph.inputs):
        raise IRError(f"graph {graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {}
    for var, value in zip(graph.inputs, inputs):
        env[var] = _as_value(value, var.aval.dtype)
    read = lambda atom: atom.aval.dtype.type(atom.value) if isinstance(atom, Literal) else env[atom]
    for node in graph.nodes:
        result = node.primitive.ref(*(read(a) for a in node.inputs), **node.params)
        several = node.also or node.primitive.multiple_results
        for out, value in zip(node.outs, result) if several else [(node.out, result)]:
            aval = out.aval
            if np.shape(value) != aval.shape or np.asarray(value).dtype != aval.dtype:
                raise IRError(f"{node.primitive.name}: reference gave {np.asarray(value).dtype}{list(np.shape(value))}, "
                              f"shape rule says {aval}")
            env[out] = _as_value(value, aval.dtype)
    return [read(out) for out in graph.outputs]


def _as_value(value, dtype):
    value = np.asarray(value, dtype)
    return value[()] if value.ndim == 0 else value


def inline(graph: Graph, *inputs, keep_names: bool = False) -> list:
    """Replay ``graph`` on traced values: its nodes are recorded into the current builder. ``keep_names``:
    the new values take the names of those they replay (hints, ``grad_``, ``tan_``) when they have none, and
    their nodes the rule (``group``) they came from."""
    from .core import current_builder

    builder = current_builder()
    env = dict(zip(graph.inputs, inputs))
    read = lambda atom: atom.aval.dtype.type(atom.value) if isinstance(atom, Literal) else env[atom]
    saved = builder.source, builder.group
    # the graph's results named only as results (``out``, ``out1``: api.name_outputs) take the caller's names
    results = {v for v in graph.outputs if isinstance(v, Var) and v.hint and re.fullmatch(r"out\d*", v.hint)}
    try:
        for node in graph.nodes:
            builder.source = node.source
            if keep_names:  # and the rule each value came from (codegen writes a rule's temporaries inline)
                builder.group = node.group
            if node.primitive.multiple_results:
                env.update(zip(node.outs, bind(node.primitive, *(read(a) for a in node.inputs), **node.params)))
            elif node.inputs:
                env[node.out] = bind(node.primitive, *(read(a) for a in node.inputs), **node.params)
            else:
                env[node.out] = builder.wrap(builder.add_node(node.primitive, (), node.params, node.out.aval))
            if keep_names:
                for out in node.outs:
                    if out not in results:
                        _name_like(env[out], out, env)
    finally:
        builder.source, builder.group = saved
    return [read(out) for out in graph.outputs]


def _name_like(value, original, env) -> None:
    """Give the replayed ``value`` the name of ``original``, if it has none of its own."""
    if not isinstance(value, TracedArray):
        return
    var = value.var
    if var.hint or var.grad_of is not None or var.tangent_of is not None:
        return
    var.hint = original.hint
    for link in ("grad_of", "tangent_of"):
        of = env.get(getattr(original, link))
        if isinstance(of, TracedArray):
            setattr(var, link, of.var)
