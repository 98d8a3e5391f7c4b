"""Control flow as IR: ``loop``, a counted loop whose body is a graph (``tg.scan``, ``tg.fori_loop``), and
``while_loop`` (``tg.while_loop``, forward only).

A loop node reads constants, initial carries and sequences, and runs its body ``length`` times::

    carries, ys = loop[body, length, n_consts, n_carry, reverse](*consts, *init, *xs)

The body is a closed graph with inputs ``(t, *consts, *carries, *x_t)`` (``t`` the iteration's index,
``x_t`` the sequences' rows ``xs[t]``) and outputs ``(*new_carries, *y_t)``; the node's outputs are the
final carries, then each ``y`` stacked over the iterations (shape ``(length, *y_t.shape)``). Every loop
made by ``loop_bind`` also stacks each carry as it was at the start of each iteration: its VJP, a loop
running backwards (``for t in range(n - 1, -1, -1):``), reads them instead of running the forward loop
again, and ``prune`` drops them when no gradient needs them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..core import PRIMITIVES, Block, Builder, TracedArray, current_builder, primitive
from ..errors import ShapeError
from ..ir import Aval, Graph, IRError, Literal, Node, Var


def _layout(body: Graph, n_consts: int, n_carry: int):
    """The body's inputs as (index, consts, carries, rows of the sequences)."""
    ins = body.inputs
    return ins[0], ins[1:1 + n_consts], ins[1 + n_consts:1 + n_consts + n_carry], ins[1 + n_consts + n_carry:]


def _shape(*avals, body, length, n_consts, n_carry, reverse):
    _, consts, carries, rows = _layout(body, n_consts, n_carry)
    expected = [v.aval for v in consts] + [v.aval for v in carries] + [Aval((length,) + v.aval.shape, v.aval.dtype)
                                                                         for v in rows]
    if list(avals) != expected:
        raise ShapeError(f"loop inputs {', '.join(map(str, avals))} do not match its body "
                         f"({', '.join(map(str, expected))})")
    outs = [o.aval for o in body.outputs]
    return tuple(outs[:n_carry]) + tuple(Aval((length,) + a.shape, a.dtype) for a in outs[n_carry:])


def _ref(*inputs, body, length, n_consts, n_carry, reverse):
    from ..interpret import evaluate  # (interpret imports core, which imports the primitives)

    consts, carry = list(inputs[:n_consts]), list(inputs[n_consts:n_consts + n_carry])
    xs = inputs[n_consts + n_carry:]
    ys = [np.empty((length,) + o.aval.shape, o.aval.dtype) for o in body.outputs[n_carry:]]
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        outs = evaluate(body, np.int64(t), *consts, *carry, *(x[t] for x in xs))
        carry = outs[:n_carry]
        for stacked, y in zip(ys, outs[n_carry:]):
            stacked[t] = y
    return [np.asarray(c, o.aval.dtype)[()] for c, o in zip(carry, body.outputs)] + ys


def _render(printer, node, args):
    """``for t in range(n):`` with the body's statements inside, under the same names."""
    p = node.params
    body, length, n_carry = p["body"], p["length"], p["n_carry"]
    index, consts, carries, rows = _layout(body, p["n_consts"], n_carry)
    args = [text for text, _ in args]
    name = printer.names
    for var, text in zip(consts, args):  # the body reads the constants under their outer names
        printer.alias(var, text)
    lines = [f"{name[v]} = {text}" for v, text in zip(carries, args[len(consts):])]
    stacked = list(zip(node.outs[n_carry:], body.outputs[n_carry:]))
    lines += [f"{name[out]} = {printer.empty(out.aval)}" for out, _ in stacked]
    order = f"range({length - 1}, -1, -1)" if p["reverse"] else f"range({length})"
    lines.append(f"for {name[index]} in {order}:")
    inner = [f"{name[v]} = {x}[{name[index]}]" for v, x in zip(rows, args[len(consts) + n_carry:])]
    lines = [(line, None) for line in lines] + [("    " + line, None) for line in inner]
    lines += [("    " + code, note) for code, note in printer.block(body)]
    lines += [(f"    {name[out]}[{name[index]}] = {printer.atom(y)}", None) for out, y in stacked]
    lines += _assign([(name[v], printer.atom(new)) for v, new in zip(carries, body.outputs) if new is not v],
                     "    ")
    return lines + _assign([(name[out], name[v]) for out, v in zip(node.outs, carries)])


def _assign(pairs: list, indent: str = "") -> list:
    """``a, b = x, y`` for the pairs (target, value): one tuple assignment, so a swap is a swap; or nothing."""
    if not pairs:
        return []
    return [(indent + ", ".join(a for a, _ in pairs) + " = " + ", ".join(b for _, b in pairs), None)]


def _scoped(node):
    index, _, carries, rows = _layout(node.params["body"], node.params["n_consts"], node.params["n_carry"])
    return [index, *carries, *rows]


def _prune(node, live):
    """Drop the stacked outputs nothing reads (carries stored for a gradient nobody asked for), the body's
    nodes they alone needed, and the constants and sequences the body no longer reads."""
    p, n_carry = node.params, node.params["n_carry"]
    body = p["body"]
    index, consts, carries, rows = _layout(body, p["n_consts"], n_carry)
    keep = [k for k, out in enumerate(node.outs) if k < n_carry or out in live]
    outputs = [body.outputs[k] for k in keep]
    needed, nodes = {v for v in outputs if isinstance(v, Var)}, []
    for member in reversed(body.nodes):
        if any(out in needed for out in member.outs):
            nodes.append(member)
            needed.update(a for a in member.inputs if isinstance(a, Var))
    keep_consts = [i for i, v in enumerate(consts) if v in needed]
    keep_rows = [m for m, v in enumerate(rows) if v in needed]
    if len(keep) == len(node.outs) and len(keep_consts) == len(consts) and len(keep_rows) == len(rows):
        return None
    start = len(consts) + n_carry
    inputs = [node.inputs[i] for i in keep_consts] + list(node.inputs[len(consts):start]) + \
        [node.inputs[start + m] for m in keep_rows]
    body = Graph(body.name, [index] + [consts[i] for i in keep_consts] + list(carries) + [rows[m] for m in keep_rows],
                 nodes[::-1], outputs)
    outs = [node.outs[k] for k in keep]
    return dataclasses.replace(node, inputs=tuple(inputs), params=dict(p, body=body, n_consts=len(keep_consts)),
                               out=outs[0], also=tuple(outs[1:]))


@primitive
class loop:
    """a counted loop: ``length`` runs of ``body`` over carried values and the rows of sequences"""
    usage = "`tg.fori_loop`, `tg.scan` ([loops.md](loops.md))"
    backward = ("a loop running backwards over the stored carries, carrying their gradients and summing the "
                "constants'")
    shape = _shape
    ref = _ref
    emit = Block(_render)
    multiple_results = True
    scoped = _scoped
    prune = _prune
    # a carry can come out as it went in (no iterations); the stacked outputs are arrays of its own
    view = staticmethod(lambda node, out: out in node.outs[:node.params["n_carry"]])

    def vjp(gs, outs, *inputs, body, length, n_consts, n_carry, reverse):
        return _loop_vjp(gs, outs, inputs, body, length, n_consts, n_carry, reverse)

    def jvp(tangents, outs, *inputs, body, length, n_consts, n_carry, reverse):
        return _loop_jvp(tangents, outs, inputs, body, length, n_consts, n_carry, reverse)


# ---------------------------------------------------------------- building loops


def close(builder: Builder, inputs: list, outputs: list, name: str) -> tuple[Graph, list]:
    """The graph ``builder`` recorded, closed: values it read from enclosing traces (or arrays it
    captured) become inputs placed after ``inputs[:1]`` (the index), returned as constants for the node."""
    consts = [value for _, value in builder.captured]
    captured = [var for var, _ in builder.captured]
    graph = Graph(name, [inputs[0]] + captured + list(inputs[1:]), builder.nodes, outputs)
    return graph, consts


def loop_bind(body: Graph, consts: list, init: list, xs: list, length: int, reverse: bool = False) -> list:
    """Record a loop node; returns its outputs (final carries, then each ``y`` stacked). ``body`` has the
    inputs ``(t, *consts, *carries, *x_t)``; each carry is also stacked, for the loop's VJP."""
    n_carry = len(init)
    _, _, carries, _ = _layout(body, len(consts), n_carry)
    body = Graph(body.name, body.inputs, body.nodes, list(body.outputs) + list(carries))
    params = dict(body=body, length=int(length), n_consts=len(consts), n_carry=n_carry, reverse=bool(reverse))
    outs = PRIMITIVES["loop"](*consts, *init, *xs, **params)
    return outs[:len(outs) - n_carry]


def _grad_name(out, carry: Var) -> str | None:
    hint = out.hint if isinstance(out, Var) and out.hint else carry.hint
    return f"grad_{hint}" if hint else None


def _zeros(aval: Aval) -> TracedArray:
    from ..autodiff import seed

    return TracedArray(seed(aval, 0.0), current_builder())


def _loop_vjp(gs, outs, inputs, body, length, n_consts, n_carry, reverse):
    """The backward loop: runs the other way, recomputes each iteration's body from the carries the
    forward loop stored, and carries the carries' cotangents and the constants' summed cotangents."""
    from ..autodiff import backward
    from ..interpret import inline

    index, const_vars, carry_vars, row_vars = _layout(body, n_consts, n_carry)
    consts, xs = inputs[:n_consts], inputs[n_consts + n_carry:]
    stacked = body.outputs[n_carry:]
    history = {}  # carry -> the stacked output holding it at each iteration's start
    for k, y in enumerate(stacked):
        for j, c in enumerate(carry_vars):
            if y is c:
                history.setdefault(j, k)
    if len(history) < n_carry:
        raise IRError("a loop whose stored carries were dropped cannot be differentiated")
    is_float = lambda v: isinstance(v, Var) and v.aval.dtype.kind == "f"
    d_carry = [j for j, v in enumerate(carry_vars) if is_float(v)]
    d_const = [i for i, v in enumerate(const_vars) if is_float(v)]
    d_rows = [m for m, v in enumerate(row_vars) if is_float(v)]
    g_finals, g_ys = gs[:n_carry], gs[n_carry:]
    seeded = [k for k, g in enumerate(g_ys) if g is not None]

    outer = current_builder()
    with Builder(f"{body.name}_vjp") as inner:
        inner.backward, inner.source = True, outer.source
        t = inner.new_input(index.aval, index.hint)
        c_in = [inner.new_input(v.aval, v.hint) for v in const_vars]
        # the cotangent carried in is that of the carry the body returns: grad_x for x = x + dt * v
        ct_carry = [inner.new_input(carry_vars[j].aval, _grad_name(body.outputs[j], carry_vars[j])) for j in d_carry]
        ct_const = [inner.new_input(const_vars[i].aval) for i in d_const]
        h_in = [inner.new_input(v.aval, v.hint) for v in carry_vars]
        x_in = [inner.new_input(v.aval, v.hint) for v in row_vars]
        gy_in = [inner.new_input(stacked[k].aval) for k in seeded]
        inner.backward = False
        recomputed = inline(body, t, *c_in, *h_in, *x_in)
        start = len(inner.nodes)
        inner.backward = True
        seeds: dict = {}

        def add_seed(value, ct):
            if isinstance(value, TracedArray) and value.dtype.kind == "f":
                seeds[value.var] = (TracedArray(seeds[value.var], inner) + ct).var if value.var in seeds else ct.var

        for j, ct in zip(d_carry, ct_carry):
            add_seed(recomputed[j], ct)
        for k, gy in zip(seeded, gy_in):
            add_seed(recomputed[n_carry + k], gy)
        wrt = [c_in[i].var for i in d_const] + [h_in[j].var for j in d_carry] + [x_in[m].var for m in d_rows]
        grads = [inner.wrap(g) for g in backward(inner, inner.nodes[:start], seeds, wrt)]
        g_const, g_carry, g_rows = grads[:len(d_const)], grads[len(d_const):len(d_const) + len(d_carry)], \
            grads[len(d_const) + len(d_carry):]
        new_ct_const = [acc + g for acc, g in zip(ct_const, g_const)]
        outputs = [g.var for g in g_carry + new_ct_const + g_rows]
    ordered = [t.var] + [v.var for v in c_in + ct_carry + ct_const + h_in + x_in + gy_in]
    graph, captured = close(inner, ordered, outputs, f"{body.name}_vjp")
    if captured:
        raise IRError("the VJP of a loop body read a value from outside it")
    ct_init = [g_finals[j] if g_finals[j] is not None else _zeros(carry_vars[j].aval) for j in d_carry]
    ct_init += [_zeros(const_vars[i].aval) for i in d_const]
    rows_in = [outs[n_carry + history[j]] for j in range(n_carry)] + list(xs) + [g_ys[k] for k in seeded]
    results = loop_bind(graph, list(consts), ct_init, rows_in, length, not reverse)
    ct = [None] * len(inputs)
    for j, value in zip(d_carry, results):
        ct[n_consts + j] = value
    for i, value in zip(d_const, results[len(d_carry):]):
        ct[i] = value
    for m, value in zip(d_rows, results[len(d_carry) + len(d_const):]):
        ct[n_consts + n_carry + m] = value
    return ct


def _carried_tangents(body: Graph, seeds: list, carries: list, news: list, first: set) -> list:
    """The carries that have a tangent: those starting with one (positions ``first``) and those whose new
    value the body computes from a value with a tangent, until no more are found."""
    from ..forward import dependents

    carried = set(first)
    while True:
        reached = dependents(body.nodes, list(seeds) + [carries[j] for j in carried])
        more = {j for j, new in enumerate(news) if isinstance(new, Var) and new in reached
                and carries[j].aval.dtype.kind == "f"} - carried
        if not more:
            return sorted(carried)
        carried |= more


def _with_tangents(body: Graph, groups: list) -> tuple[Graph, list, set]:
    """``body``'s JVP graph with its inputs in groups: each ``(values, those with a tangent)`` is followed by
    the tangents of the latter. Returns it (with ``body``'s outputs), every output's tangent (zeros where it
    has none), and the positions of the outputs that have one."""
    from ..forward import dependents, jvp_graph

    wrt_vars = [v for _, wanted in groups for v in wanted]
    position = {v: i for i, v in enumerate(body.inputs)}
    graph = jvp_graph(Graph(body.name, body.inputs, body.nodes, body.outputs), [position[v] for v in wrt_vars],
                      name=f"{body.name}_jvp")
    tangent_of = dict(zip(wrt_vars, graph.inputs[len(body.inputs):]))
    inputs = []
    for values, wanted in groups:
        inputs += list(values) + [tangent_of[v] for v in wanted]
    reached = dependents(body.nodes, wrt_vars)
    has = {k for k, out in enumerate(body.outputs) if isinstance(out, Var) and out in reached}
    n = len(body.outputs)
    return Graph(graph.name, inputs, graph.nodes, list(body.outputs)), graph.outputs[n:], has


def _take_over(outs: list, values: list) -> None:
    """Make the node just recorded (which computed ``values``) define the Vars of ``outs`` in their place: a
    JVP rule's loop carrying values and tangents replaces the node whose outputs ``outs`` were."""
    builder = current_builder()
    node = builder.nodes[-1]
    swap = {value.var: out.var for value, out in zip(values, outs)}
    new = [swap.get(v, v) for v in node.outs]
    builder.nodes[-1] = dataclasses.replace(node, out=new[0], also=tuple(new[1:]))


def _loop_jvp(tangents, outs, inputs, body, length, n_consts, n_carry, reverse):
    """One loop carrying each value and its tangent: the body's JVP graph. It replaces the forward loop
    (defines its outputs), so the forward steps run once."""
    from .structural import zeros

    index, const_vars, carry_vars, row_vars = _layout(body, n_consts, n_carry)
    t_consts, t_init, t_rows = tangents[:n_consts], tangents[n_consts:n_consts + n_carry], tangents[n_consts + n_carry:]
    d_const = [i for i, t in enumerate(t_consts) if t is not None]
    d_rows = [m for m, t in enumerate(t_rows) if t is not None]
    seeds = [const_vars[i] for i in d_const] + [row_vars[m] for m in d_rows]
    d_carry = _carried_tangents(body, seeds, carry_vars, body.outputs[:n_carry],
                                {j for j, t in enumerate(t_init) if t is not None})
    graph, out_tangents, has = _with_tangents(body, [
        ([index], []), (const_vars, [const_vars[i] for i in d_const]), (carry_vars, [carry_vars[j] for j in d_carry]),
        (row_vars, [row_vars[m] for m in d_rows])])
    n_y = len(body.outputs) - n_carry
    d_ys = [k for k in range(n_y) if n_carry + k in has]
    outputs = list(body.outputs[:n_carry]) + [out_tangents[j] for j in d_carry] + list(body.outputs[n_carry:]) + \
        [out_tangents[n_carry + k] for k in d_ys]
    consts = list(inputs[:n_consts]) + [t_consts[i] for i in d_const]
    init = list(inputs[n_consts:n_consts + n_carry]) + [
        zeros(carry_vars[j].aval) if t_init[j] is None else t_init[j] for j in d_carry]
    xs = list(inputs[n_consts + n_carry:]) + [t_rows[m] for m in d_rows]
    results = loop_bind(Graph(graph.name, graph.inputs, graph.nodes, outputs), consts, init, xs, length, reverse)
    k = len(d_carry)
    _take_over(outs, results[:n_carry] + results[n_carry + k:n_carry + k + n_y])
    out_tangents = [None] * len(outs)
    for pos, j in enumerate(d_carry):
        out_tangents[j] = results[n_carry + pos]
    for pos, y in enumerate(d_ys):
        out_tangents[n_carry + y] = results[n_carry + k + n_y + pos]
    return out_tangents


# ---------------------------------------------------------------- while


def _while_layout(node):
    n_consts = node.params["n_consts"]
    return node.params["body"].inputs[n_consts:]


def _while_shape(*avals, cond, body, n_consts):
    expected = [v.aval for v in body.inputs]
    if list(avals) != expected:
        raise ShapeError(f"while_loop inputs {', '.join(map(str, avals))} do not match its body "
                         f"({', '.join(map(str, expected))})")
    return tuple(o.aval for o in body.outputs)


def _while_ref(*inputs, cond, body, n_consts):
    from ..interpret import evaluate

    consts, carry = list(inputs[:n_consts]), list(inputs[n_consts:])
    while evaluate(cond, *consts, *carry)[0]:
        carry = evaluate(body, *consts, *carry)
    return [np.asarray(c, o.aval.dtype)[()] for c, o in zip(carry, body.outputs)]


def _while_render(printer, node, args):
    """``while True:`` the condition's statements, ``if not c: break``, the body's statements."""
    p = node.params
    cond, body, n_consts = p["cond"], p["body"], p["n_consts"]
    name = printer.names
    texts = [text for text, _ in args]
    for var, text in zip(body.inputs[:n_consts], texts):
        printer.alias(var, text)
    carries = body.inputs[n_consts:]
    lines = [(f"{name[v]} = {text}", None) for v, text in zip(carries, texts[n_consts:])]
    lines.append(("while True:", None))
    lines += [("    " + code, note) for code, note in printer.block(cond)]
    lines.append((f"    if not {printer.atom(cond.outputs[0])}:", None))
    lines.append(("        break", None))
    lines += [("    " + code, note) for code, note in printer.block(body)]
    lines += _assign([(name[v], printer.atom(new)) for v, new in zip(carries, body.outputs) if new is not v],
                     "    ")
    return lines + _assign([(name[out], name[v]) for out, v in zip(node.outs, carries)])


def _while_vjp(gs, outs, *inputs, cond, body, n_consts):
    from ..errors import GradTypeError

    raise GradTypeError("while_loop has no gradient: its trip count is known only when it runs",
                        current_builder().source,
                        "write the loop with tg.fori_loop (a fixed trip count) or tg.scan to differentiate it, "
                        "or stop the gradient at its inputs with tg.stop_gradient")


def _while_jvp(tangents, outs, *inputs, cond, body, n_consts):
    """One while loop carrying each value and its tangent (the condition reads the values): forward mode
    needs no trip count. It replaces the forward loop, as a ``loop``'s JVP does."""
    from .structural import zeros

    const_vars, carry_vars = body.inputs[:n_consts], body.inputs[n_consts:]
    n_carry = len(carry_vars)
    t_consts, t_init = tangents[:n_consts], tangents[n_consts:]
    d_const = [i for i, t in enumerate(t_consts) if t is not None]
    d_carry = _carried_tangents(body, [const_vars[i] for i in d_const], carry_vars, body.outputs,
                                {j for j, t in enumerate(t_init) if t is not None})
    graph, out_tangents, _ = _with_tangents(body, [(const_vars, [const_vars[i] for i in d_const]),
                                                   (carry_vars, [carry_vars[j] for j in d_carry])])
    new_body = Graph(graph.name, graph.inputs, graph.nodes, list(body.outputs) + [out_tangents[j] for j in d_carry])
    new_cond = Graph(cond.name, graph.inputs, cond.nodes, cond.outputs)  # the same values, and it ignores tangents
    results = PRIMITIVES["while_loop"](
        *inputs[:n_consts], *(t_consts[i] for i in d_const), *inputs[n_consts:],
        *(zeros(carry_vars[j].aval) if t_init[j] is None else t_init[j] for j in d_carry),
        cond=new_cond, body=new_body, n_consts=n_consts + len(d_const))
    _take_over(outs, results[:n_carry])
    out_tangents = [None] * n_carry
    for pos, j in enumerate(d_carry):
        out_tangents[j] = results[n_carry + pos]
    return out_tangents


@primitive
class while_loop:
    """``while cond(carry): carry = body(carry)``: forward mode only (no VJP; a JVP)"""
    usage = "`tg.while_loop` ([loops.md](loops.md))"
    backward = "none: a `tg.GradTypeError` (its trip count is known only when it runs)"
    shape = _while_shape
    ref = _while_ref
    emit = Block(_while_render)
    multiple_results = True
    scoped = _while_layout
    view = True
    vjp = staticmethod(_while_vjp)
    jvp = staticmethod(_while_jvp)


# ---------------------------------------------------------------- a function with its own VJP


def _custom_shape(*avals, fwd, n_consts, n_out, bwd, trees):
    if list(avals) != [v.aval for v in fwd.inputs]:
        raise ShapeError("custom_vjp inputs do not match its forward function")
    return tuple(o.aval for o in fwd.outputs)


def _custom_ref(*inputs, fwd, n_consts, n_out, bwd, trees):
    from ..interpret import evaluate

    return evaluate(fwd, *inputs)


def _custom_render(printer, node, args):
    """The forward function's statements in place, its results under the node's names."""
    fwd = node.params["fwd"] if "fwd" in node.params else node.params["fun"]
    for var, (text, _) in zip(fwd.inputs, args):
        printer.alias(var, text)
    lines = printer.block(fwd)
    return lines + _assign([(printer.names[out], printer.atom(value)) for out, value in zip(node.outs, fwd.outputs)])


def _custom_prune(node, live):
    """Without a gradient, the residuals the backward function would read are not kept."""
    p = node.params
    keep = [k for k, out in enumerate(node.outs) if k < p["n_out"] or out in live]
    if len(keep) == len(node.outs):
        return None
    fwd = p["fwd"]
    fwd = Graph(fwd.name, fwd.inputs, fwd.nodes, [fwd.outputs[k] for k in keep])
    outs = [node.outs[k] for k in keep]
    return dataclasses.replace(node, params=dict(p, fwd=fwd), out=outs[0], also=tuple(outs[1:]))


def _custom_vjp(gs, outs, *inputs, fwd, n_consts, n_out, bwd, trees):
    from ..errors import TracegradError
    from ..pytree import flatten, unflatten

    out_tree, res_tree, arg_trees, numbers, res_numbers = trees  # (numbers: the arguments' Python numbers)
    g = unflatten(out_tree, [g if g is not None else _zeros(o.aval) for g, o in zip(gs[:n_out], fwd.outputs)])
    res = list(outs[n_out:])
    for k, number in res_numbers:  # (the residuals' Python numbers are not outputs of the forward function)
        res.insert(k, number)
    res = unflatten(res_tree, res)
    cts = bwd(res, g)
    name = getattr(bwd, "__name__", "bwd")
    if not isinstance(cts, tuple) or len(cts) != len(arg_trees):
        raise TracegradError(f"custom_vjp: {name} must return a tuple of {len(arg_trees)} gradient(s), one per "
                             f"argument, not {type(cts).__name__}" + (f" of {len(cts)}" if isinstance(cts, tuple) else ""),
                             current_builder().source)
    leaves = []
    for k, (ct, tree) in enumerate(zip(cts, arg_trees)):
        ct_leaves, ct_tree = flatten(ct)
        if ct is None:
            ct_leaves = [None] * tree.num_leaves
        elif ct_tree != tree:
            raise TracegradError(f"custom_vjp: {name} returns a gradient of structure {ct_tree} for argument {k}, "
                                 f"which has structure {tree}", current_builder().source)
        leaves.extend(ct_leaves)
    leaves = [leaf for k, leaf in enumerate(leaves) if k not in numbers]  # (Python numbers are not inputs)
    for leaf, var in zip(leaves, fwd.inputs[n_consts:]):
        if leaf is not None and tuple(np.shape(leaf)) != var.aval.shape:
            raise ShapeError(f"custom_vjp: {name} returns a gradient of shape {tuple(np.shape(leaf))} for an "
                             f"argument of shape {var.aval.shape}", current_builder().source)
    if any(g is not None for g in gs[n_out:]):  # (differentiating the backward pass: the residuals' gradients
        leaves = [a if b is None else b if a is None else a + b   # flow back through the forward function)
                  for a, b in zip(leaves, _through(fwd, gs, n_consts, n_out, inputs))]
    return [None] * n_consts + leaves


def _through(fwd: Graph, gs, n_consts, n_out, inputs) -> list:
    """The gradients of the arguments from the cotangents of the residuals, by ordinary reverse mode
    through the forward function, replayed here."""
    from ..autodiff import backward
    from ..interpret import inline

    builder = current_builder()
    saved = builder.source, builder.group
    start = len(builder.nodes)
    args = list(inputs)
    outs = inline(fwd, *args)
    seeds: dict = {}
    for value, g in zip(outs[n_out:], gs[n_out:]):
        if g is not None and isinstance(value, TracedArray) and value.dtype.kind == "f":
            seeds[value.var] = (TracedArray(seeds[value.var], builder) + g).var if value.var in seeds else g.var
    wrt = [a.var for a in args[n_consts:] if isinstance(a, TracedArray)]
    grads = iter(backward(builder, builder.nodes[start:], seeds, wrt))
    builder.source, builder.group = saved
    return [builder.wrap(next(grads)) if isinstance(a, TracedArray) else None for a in args[n_consts:]]


def _custom_jvp(tangents, outs, *inputs, fwd, n_consts, n_out, bwd, trees):
    """Forward mode differentiates the forward function (the backward function maps cotangents, not
    tangents): its JVP graph replaces the node, and agrees with the gradient when ``bwd`` is the derivative
    of ``fwd``."""
    from ..forward import jvp_graph
    from ..interpret import inline

    wrt = [k for k, t in enumerate(tangents) if t is not None]
    values = inline(jvp_graph(fwd, wrt, name=f"{fwd.name}_jvp"), *inputs, *(tangents[k] for k in wrt))
    builder = current_builder()
    n = len(fwd.outputs)
    for out, value in zip(outs, values[:n]):  # the node's outputs, now computed by the nodes inlined here
        atom = value.var if isinstance(value, TracedArray) else Literal(value, out.dtype)
        builder.nodes.append(Node(PRIMITIVES["copy"], (atom,), {}, out.var, builder.source, builder.group))
    return values[n:]


@primitive
class custom_vjp_call:
    """a function with a derivative of its own (``tg.custom_vjp``): its forward function's statements in
    place, and the user's backward function as its VJP"""
    usage = "a `tg.custom_vjp` function (below)"
    backward = "your backward function"
    shape = _custom_shape
    ref = _custom_ref
    emit = Block(_custom_render)
    multiple_results = True
    scoped = staticmethod(lambda node: [])
    prune = _custom_prune
    view = True
    vjp = staticmethod(_custom_vjp)
    jvp = staticmethod(_custom_jvp)


# ---------------------------------------------------------------- a function with its own JVP


def _jvp_call_shape(*avals, fun, n_consts, rule):
    if list(avals) != [v.aval for v in fun.inputs]:
        raise ShapeError("custom_jvp inputs do not match its function")
    return tuple(o.aval for o in fun.outputs)


def _jvp_call_ref(*inputs, fun, n_consts, rule):
    from ..interpret import evaluate

    return evaluate(fun, *inputs)


def _primal_zeros(inputs) -> list:
    """A zero tangent for each primal (a traced ``full``, so that gradients can be taken with respect to it)."""
    return [_zeros(Aval(tuple(np.shape(x)), np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)))
            for x in inputs]


def _jvp_call_jvp(tangents, outs, *inputs, fun, n_consts, rule):
    """The user's JVP rule, called on the traced primals and tangents (zeros where a primal has none): its
    primal outputs take the node's place (``forward`` drops the node), its tangents are the outputs'."""
    builder = current_builder()
    primals, ts = list(inputs[n_consts:]), list(tangents[n_consts:])
    zeros = iter(_primal_zeros([p for p, t in zip(primals, ts) if t is None]))
    values, out_tangents = rule(primals, [t if t is not None else next(zeros) for t in ts])
    for out, value in zip(outs, values):
        atom = value.var if isinstance(value, TracedArray) else Literal(value, out.dtype)
        builder.nodes.append(Node(PRIMITIVES["copy"], (atom,), {}, out.var, builder.source, builder.group))
    return out_tangents


def _jvp_call_vjp(gs, outs, *inputs, fun, n_consts, rule):
    """Reverse mode from the JVP rule: its tangents are linear in the input tangents, so the gradient of
    <tangents, gs> with respect to the input tangents (taken at zero) is the VJP, J^T gs. Only the rule's
    derivative factors survive (``sigmoid(x) * g``); the rule's forward work is dead code."""
    from ..autodiff import backward

    builder = current_builder()
    saved = builder.source, builder.group
    primals = list(inputs[n_consts:])
    zeros = _primal_zeros(primals)
    start = len(builder.nodes)
    _, out_tangents = rule(primals, zeros)
    seeds: dict = {}
    for t, g in zip(out_tangents, gs):
        if g is not None and isinstance(t, TracedArray) and t.dtype.kind == "f":
            seeds[t.var] = (TracedArray(seeds[t.var], builder) + g).var if t.var in seeds else g.var
    wrt = [z.var for z in zeros]
    grads = backward(builder, builder.nodes[start:], seeds, wrt)
    builder.source, builder.group = saved
    for g, z in zip(grads, wrt):
        if g.grad_of is z:  # named after the primal it is the gradient of by the caller, not after the zero
            g.grad_of = None
    return [None] * n_consts + [builder.wrap(g) if p_float else None
                                for g, p_float in zip(grads, (z.aval.dtype.kind == "f" for z in wrt))]


@primitive
class custom_jvp_call:
    """a function with a forward-mode derivative of its own (``tg.custom_jvp``): its statements in place,
    and the user's JVP rule as its JVP; its VJP is the rule's transpose (the gradient with respect to the
    rule's tangents)"""
    usage = "a `tg.custom_jvp` function ([transformations.md](transformations.md))"
    backward = "your JVP rule, transposed: the backward pass of its tangents"
    shape = _jvp_call_shape
    ref = _jvp_call_ref
    emit = Block(_custom_render)
    multiple_results = True
    scoped = staticmethod(lambda node: [])
    view = True
    vjp = staticmethod(_jvp_call_vjp)
    jvp = staticmethod(_jvp_call_jvp)
