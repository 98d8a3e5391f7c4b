"""Batching, for ``vmap``: replay a graph computed for one example on a batch of examples, each value that
depends on a mapped input carrying the batch as a new leading axis.

Each node is recorded once for the whole batch by its primitive's ``batch`` rule (``dot``: the vectors
of a batch times an unmapped matrix are one matrix product, ``x @ W.T``); an elementwise primitive needs
none (its batched inputs get size-1 axes where the example had fewer dimensions, and broadcasting does
the rest). A node none of whose inputs is batched is recorded as it is, once; a node whose primitive has
no rule for its case (``dynamic_index`` with a batched index, a ``loop``) is recorded inside a ``loop``
node over the batch, on its own: correct for every primitive, fast for those with a rule.
"""
from __future__ import annotations

import numpy as np

from .core import Builder, bind, current_builder
from .interpret import _name_like
from .ir import Aval, Graph, Literal, Var
from .primitives.control import close, loop_bind
from .primitives.structural import broadcast_to, reshape
from .tracer import _output_atom


def batch_inline(graph: Graph, inputs: list, batched: list, size: int) -> list:
    """Record ``graph`` into the current trace for a batch of ``size`` examples. ``inputs`` are the values
    of its inputs, ``batched[k]`` True where ``inputs[k]`` holds the batch on a leading axis (else the value
    is the same for every example). Returns the outputs, each with the batch on its leading axis. The new
    values take the names of those they replay (``h``, ``grad_W1``)."""
    builder = current_builder()
    env = dict(zip(graph.inputs, inputs))
    mapped = {var for var, b in zip(graph.inputs, batched) if b}
    read = lambda atom: atom.aval.dtype.type(atom.value) if isinstance(atom, Literal) else env[atom]
    saved = builder.source, builder.group
    try:
        for node in graph.nodes:
            builder.source, builder.group = node.source, node.group
            args = [read(a) for a in node.inputs]
            flags = [isinstance(a, Var) and a in mapped for a in node.inputs]
            if not any(flags):
                results = _unbatched(node, args)
            else:
                results = _batched(node, args, flags, size)
                mapped.update(node.outs)
            results = results if node.primitive.multiple_results else [results]
            for out, value in zip(node.outs, results):
                env[out] = value
                _name_like(value, out, env)
    finally:
        builder.source, builder.group = saved
    outputs = []
    for out in graph.outputs:
        value = read(out)
        if not (isinstance(out, Var) and out in mapped):  # the same for every example: repeated
            value = broadcast_to(value, shape=(size,) + out.aval.shape)
        outputs.append(value)
    return outputs


def _unbatched(node, args):
    if node.inputs or node.primitive.multiple_results:
        return bind(node.primitive, *args, **node.params)
    builder = current_builder()
    return builder.wrap(builder.add_node(node.primitive, (), node.params, node.out.aval))


def _batched(node, args, flags, size):
    prim = node.primitive
    if prim.batch is not None:
        result = prim.batch(tuple(flags), *args, **node.params)
    elif prim.elementwise and not prim.multiple_results:
        result = _elementwise(node, args, flags, size)
    else:
        result = None
    return _one_at_a_time(node, args, flags, size) if result is None else result


def _elementwise(node, args, flags, size):
    """Each batched input with size-1 axes after the batch axis where it has fewer dimensions than the
    output, so that it broadcasts against the others as it did for one example."""
    ndim = node.out.aval.ndim
    aligned = []
    for arg, flag, atom in zip(args, flags, node.inputs):
        if flag and atom.aval.ndim < ndim:
            arg = reshape(arg, shape=(size,) + (1,) * (ndim - atom.aval.ndim) + atom.aval.shape)
        aligned.append(arg)
    return bind(node.primitive, *aligned, **node.params)


def _one_at_a_time(node, args, flags, size):
    """The node inside a loop over the batch (``for t in range(n):``), the rows of its batched inputs as
    its inputs, under their names."""
    prim = node.primitive
    with Builder(f"{prim.name}_each") as inner:
        inner.source, inner.group = node.source, node.group
        t = inner.new_input(Aval((), np.dtype(np.int64)), "t")
        rows = [inner.new_input(Aval(atom.aval.shape, atom.aval.dtype), getattr(arg, "var", atom).hint)
                for arg, flag, atom in zip(args, flags, node.inputs) if flag]
        it = iter(rows)
        result = bind(prim, *(next(it) if flag else arg for arg, flag in zip(args, flags)), **node.params)
        results = result if prim.multiple_results else [result]
        outputs = [_output_atom(value, inner) for value in results]
        for var, out in zip(outputs, node.outs):
            if isinstance(var, Var) and var.hint is None and var.grad_of is None and var.tangent_of is None:
                var.hint = out.hint
    body, consts = close(inner, [t.var] + [r.var for r in rows], outputs, inner.name)
    ys = loop_bind(body, consts, [], [arg for arg, flag in zip(args, flags) if flag], size)
    return list(ys) if prim.multiple_results else ys[0]
