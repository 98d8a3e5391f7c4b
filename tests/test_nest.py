"""Loop nests (primitives/nest.py): fusion lowers each group to a ``loop_nest`` whose index arithmetic, reads
and sums are IR values, and the decisions about a loop (parallel= blocks) read those values, not text. The
primitive's reference and compiled code are checked with every other primitive (tests/test_primitives.py,
its cases ``loop_nest``, ``element``, ``add_at``)."""
import dataclasses

import numpy as np

import tracegrad as tg
from tracegrad.codegen import Printer
from tracegrad.ir import Graph, Literal, Node, assign_names
from tracegrad.primitives import nest


def loop_nests(fun, *args):
    graph = tg.make_graph(fun, *args)
    return graph, [node for node in graph.nodes if node.primitive is nest.loop_nest]


def slices(x):
    return np.sum(x[1:] * x[:-1])


def test_a_slice_gradient_adds_at_index_values_the_body_computes(rng):
    graph, (loop,) = loop_nests(tg.grad(slices), rng.normal(size=8))
    body = loop.params["body"]
    i0 = body.inputs[0]
    assert i0.aval.shape == () and i0.aval.dtype == np.int64 and loop.params["shape"] == (7,)
    defs = {m.out: m for m in body.nodes}
    # (and the forward sum, out += s2, at no subscript)
    subscripts = [m.inputs[1] for m in body.nodes if m.primitive is nest.add_at and len(m.inputs) == 2]
    assert len(subscripts) == 2 and i0 in subscripts  # grad_x[i0] += ..., and grad_x[i0 + 1] += ...
    (shifted,) = [defs[s] for s in subscripts if s is not i0]
    assert shifted.primitive.name == "add" and shifted.inputs[0] is i0
    assert isinstance(shifted.inputs[1], Literal) and shifted.inputs[1].value == 1
    assert "grad_x[i0 + 1] += " in tg.source(tg.grad(slices), rng.normal(size=8))


def test_a_guarded_read_is_an_element_node_with_its_conditions(rng):
    f = lambda x: np.sum(x[1:] * x[:-1]) + np.sum(x ** 2)  # grad_x also has 2 x: one loop over x reads the rest
    graph, loops = loop_nests(tg.grad(f), rng.normal(size=6))
    guarded = [m for loop in loops for m in loop.params["body"].nodes
               if m.primitive is nest.element and m.params["guards"]]
    assert len(guarded) == 2
    conditions = {m.inputs[-1] for m in guarded}
    defs = {m.out: m for loop in loops for m in loop.params["body"].nodes}
    assert {defs[c].primitive.name for c in conditions} == {"ge", "lt"}  # i0 >= 1, i0 < 5
    # evaluated on whole arrays, a guarded read never reads out of range where its condition fails
    x = rng.normal(size=6)
    np.testing.assert_allclose(tg.grad(f)(x), tg.testing.numeric_grad(f, x), rtol=1e-7)


def parallel_decision(loop, graph):
    printer = Printer(assign_names(graph), comments=False, check_finite=False, parallel_min=1)
    return nest._blocks(printer, loop, nest.layout(loop)[1])


def with_subscript(loop, make):
    """``loop`` with its write at ``i0 + 1`` moved to the index value ``make(i0)`` builds."""
    body = loop.params["body"]
    i0, defs, nodes = body.inputs[0], {m.out: m for m in body.nodes}, []
    for member in body.nodes:
        if member.primitive is nest.add_at and member.inputs[1:] and member.inputs[1] in defs:
            new = []
            at = make(nest.Index(i0, new)).atom
            nodes.extend(new)
            member = Node(member.primitive, (member.inputs[0], at), {}, member.out, member.source, member.group,
                          member.backward)
        nodes.append(member)
    return dataclasses.replace(loop, params=dict(loop.params, body=Graph(body.name, body.inputs, nodes,
                                                                          body.outputs)))


def test_the_parallel_decision_reads_the_index_values(rng):
    graph, (loop,) = loop_nests(tg.grad(slices), rng.normal(size=401))  # 400 rows: 16 blocks of 25
    blocks = parallel_decision(loop, graph)
    assert blocks is not None and blocks.sweeps  # i0 + 1: rows add to their neighbours', blocks alternate
    assert parallel_decision(with_subscript(loop, lambda i: i + 24), graph).sweeps  # less than a block away
    assert parallel_decision(with_subscript(loop, lambda i: i + 25), graph) is None  # a block away
    assert parallel_decision(with_subscript(loop, lambda i: 2 * i), graph) is None  # scaled: serial
    assert parallel_decision(with_subscript(loop, lambda i: 399 - i), graph) is None  # reversed: serial
    assert not parallel_decision(with_subscript(loop, lambda i: i), graph).sweeps  # its own rows


def test_a_sum_every_row_adds_to_gets_partial_sums_per_block(rng):
    f = lambda b, X: np.sum(np.tanh(X + b) ** 2)  # grad_b[i1] += ...: no i0, every row adds to it
    b, X = rng.normal(size=4), rng.normal(size=(300, 4))
    graph, loops = loop_nests(tg.grad(f), b, X)
    decisions = [parallel_decision(loop, graph) for loop in loops]
    assert any(d is not None and d.partial and not d.sweeps for d in decisions)
