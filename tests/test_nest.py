"""Loop nests (primitives/nest.py): fusion lowers each group to a ``loop_nest`` whose index arithmetic, reads
and sums are IR values, and the decisions about a loop (parallel= blocks) read those values, not text. The
primitive's reference and compiled code are checked with every other primitive (tests/test_primitives.py,
its cases ``loop_nest``, ``element``, ``add_at``)."""
import dataclasses

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.codegen import Printer
from tracegrad.ir import Graph, Literal, Node, assign_names
from tracegrad.primitives import nest
from tracegrad.testing import numeric_grad


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
    assert "grad_x_at1 += " in tg.source(tg.grad(slices), rng.normal(size=8))  # (nest._Carried)


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


def parallel_decision(loop, graph, carry=True):
    printer = Printer(assign_names(graph), comments=False, check_finite=False, parallel_min=1)
    writes = nest.layout(loop)[1]
    return nest._blocks(printer, loop, writes, nest._Carried(printer, loop, writes, nest.MAX_REACH if carry else -1))


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
    blocks = parallel_decision(loop, graph)  # i0 + 1, carried in registers: each block's own elements
    assert blocks is not None and not blocks.sweeps and blocks.carried.reach
    blocks = parallel_decision(loop, graph, carry=False)
    assert blocks is not None and blocks.sweeps  # i0 + 1: rows add to their neighbours', blocks alternate
    for carry in (True, False):
        decide = lambda make: parallel_decision(with_subscript(loop, make), graph, carry)  # noqa: E731
        assert decide(lambda i: i + 24).sweeps  # less than a block away (farther than registers reach)
        assert decide(lambda i: i + 25) is None  # a block away
        assert decide(lambda i: 2 * i) is None  # scaled: serial
        assert decide(lambda i: 399 - i) is None  # reversed: serial
        assert not decide(lambda i: i).sweeps  # its own rows


def test_a_sum_every_row_adds_to_gets_partial_sums_per_block(rng):
    f = lambda b, X: np.sum(np.tanh(X + b) ** 2)  # grad_b[i1] += ...: no i0, every row adds to it
    b, X = rng.normal(size=4), rng.normal(size=(300, 4))
    graph, loops = loop_nests(tg.grad(f), b, X)
    decisions = [parallel_decision(loop, graph) for loop in loops]
    assert any(d is not None and d.partial and not d.sweeps for d in decisions)


# ------------------------------------------------------------------ sums carried from row to row


@pytest.mark.parametrize("fun, size, lines", [
    # own element and the next: the last row's register is the last element
    (slices, 8, ["grad_x_at1 = 0.0", "grad_x_at0, grad_x_at1 = grad_x_at1, 0.0", "grad_x[i0] = grad_x_at0",
                 "grad_x[7] = grad_x_at1"]),
    # two rows ahead: two registers handed on
    (lambda x: np.sum(x[2:] * x[:-2]), 9, ["grad_x_at0, grad_x_at1, grad_x_at2 = grad_x_at1, grad_x_at2, 0.0",
                                           "grad_x[7] = grad_x_at1", "grad_x[8] = grad_x_at2"]),
    # elements past the rows' reach (x[-1]): zero after the loop
    (lambda x: np.sum(x[1:-1] * x[:-2]), 9, ["grad_x[7] = grad_x_at1", "grad_x[8:] = 0.0"]),
])
def test_sums_at_a_row_and_the_next_are_stored_once_an_element(rng, fun, size, lines):
    x = rng.normal(size=size)
    source = tg.source(tg.grad(fun), x)
    for line in lines:
        assert line in source, line
    assert "np.zeros(" not in source and "grad_x[i0 + 1] +=" not in source
    np.testing.assert_allclose(tg.grad(fun)(x), numeric_grad(fun, x), rtol=1e-7, atol=1e-8)


def test_sums_at_scaled_or_earlier_rows_are_added_in_place(rng):
    # grad_x[2 * i0] (x[::2]) is no row's own element: the sum is zeroed and added to as before
    fun = lambda x: np.sum(np.sin(x[::2]) * x[1::2])  # noqa: E731
    x = rng.normal(size=10)
    source = tg.source(tg.grad(fun), x)
    assert "grad_x = np.zeros((10,))" in source and "_at0" not in source
    np.testing.assert_allclose(tg.grad(fun)(x), numeric_grad(fun, x), rtol=1e-7, atol=1e-8)
