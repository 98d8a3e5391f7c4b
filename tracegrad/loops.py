"""Loops that stay loops: ``scan`` and ``fori_loop`` trace their body once into a ``loop`` node;
``while_loop`` into a ``while_loop`` node (forward only).

A Python ``for`` loop over traced values is unrolled by tracing: n iterations become n copies of the body
in the graph and in the generated code, and Numba's compile time grows with them. These functions trace
the body once, whatever the trip count; the generated code is one ``for t in range(n):`` loop, and its
gradient is one loop running backwards. They follow JAX's signatures (``jax.lax.scan``,
``jax.lax.fori_loop``), with pytrees of floats and arrays as carries. Called outside a traced function,
they simply run the Python loop.
"""
from __future__ import annotations

import numpy as np

from .core import PRIMITIVES, Builder, TracedArray, current_builder
from .errors import ShapeError, TracingError, user_source
from .ir import Aval, Graph, Literal
from .primitives.control import close, loop_bind
from .pytree import flatten, unflatten
from .tracer import _call_recording_locals, _output_atom, _Preparer, arg_names, aval_of


def scan(f, init, xs=None, length: int | None = None, reverse: bool = False, checkpoint: int | None = None):
    """Run ``carry, y = f(carry, x)`` for each row ``x`` of ``xs``; return the last carry and the ``y``s stacked.

    Equivalent to::

        carry, ys = init, []
        for x in xs:                    # xs[::-1] with reverse=True (ys keep the order of xs)
            carry, y = f(carry, x)
            ys.append(y)
        return carry, np.stack(ys)

    ``init`` and ``carry`` are pytrees (tuples, lists, dicts) of floats and arrays; the carry ``f`` returns
    must have the same structure, shapes and dtypes. ``xs`` is a pytree of arrays with one leading length
    (or ``None`` with ``length=n``); ``y`` is a pytree or ``None``. Inside a traced function the body is
    traced once and compiled as one loop, whatever the length; its gradient is a loop running backwards,
    reading the carries the forward loop stored at each step.

    ``checkpoint=k`` trades time for memory on long loops: the loop runs as blocks of ``k`` steps, only each
    block's first carry is stored, and the gradient runs each block forward again (n/k + k carries stored
    instead of n, about one more forward pass of work; ``k`` near the square root of n stores least).
    """
    x_leaves, x_tree = flatten(xs)
    n = _length(x_leaves, length)
    if current_builder() is None:
        return _run(f, init, xs, x_tree, x_leaves, n, reverse)
    if checkpoint is not None and _check_block(checkpoint) < n:
        return _blocks(lambda c, rows, m: scan(f, c, unflatten(x_tree, rows), length=m, reverse=reverse),
                       init, x_leaves, n, checkpoint, reverse)
    return _trace_loop(f, init, x_leaves, x_tree, n, reverse, "scan")


def fori_loop(lower: int, upper: int, body_fun, init_val, checkpoint: int | None = None):
    """``val = body_fun(i, val)`` for ``i`` in ``range(lower, upper)``; returns the last ``val``.

    ``lower`` and ``upper`` are Python ints (the trip count is part of the compiled code). ``val`` is a
    pytree of floats and arrays whose structure, shapes and dtypes ``body_fun`` keeps. Inside a traced
    function ``body_fun`` is traced once: the generated code is one ``for`` loop and its gradient one loop
    running backwards. ``checkpoint=k``: store the state only every ``k`` steps (see ``scan``).
    """
    for name, bound in (("lower", lower), ("upper", upper)):
        if isinstance(bound, TracedArray) or not isinstance(bound, (int, np.integer)) or isinstance(bound, bool):
            raise TracingError(f"fori_loop's {name} bound must be a Python int, not {type(bound).__name__}",
                               user_source(), "the trip count must be known when tracing; use a static int")
    lower, upper = int(lower), int(upper)
    n = max(upper - lower, 0)
    if current_builder() is None:
        val = init_val
        for i in range(lower, upper):
            val = body_fun(i, val)
        return val
    if checkpoint is not None and _check_block(checkpoint) < n:
        def block(carry, rows, m):  # the block's first step is rows[0]
            return fori_loop(0, m, lambda j, c: body_fun(rows[0][0] + j, c), carry), None
        steps = np.arange(lower, upper, dtype=np.int64)
        return _blocks(block, init_val, [steps], n, checkpoint, False)[0]
    carry, _ = _trace_loop(body_fun, init_val, [], flatten(None)[1], n, False, "fori_loop", lower)
    return carry


def _check_block(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TracingError(f"checkpoint must be a positive int (steps per stored carry), got {k!r}", user_source())
    return int(k)


def _blocks(run, init, x_leaves: list, n: int, k: int, reverse: bool):
    """A loop of n steps as an outer loop over blocks of k steps, each ``run(carry, rows, k)`` (an inner
    loop), and the last n % k steps after them; the outer loop stores only each block's first carry."""
    whole = n // k * k
    head = [x[:whole].reshape((n // k, k) + tuple(x.shape[1:])) for x in x_leaves]
    tail = [x[whole:] for x in x_leaves]

    def outer(carry, rows):
        return run(carry, list(rows), k)

    def blocks(carry):
        carry, ys = scan(outer, carry, tuple(head), reverse=reverse)
        return carry, None if ys is None else _map(lambda y: y.reshape((whole,) + tuple(y.shape[2:])), ys)

    def rest(carry):
        return run(carry, tail, n - whole) if n > whole else (carry, None)

    if reverse:
        carry, ys_tail = rest(init)
        carry, ys_head = blocks(carry)
    else:
        carry, ys_head = blocks(init)
        carry, ys_tail = rest(carry)
    if ys_head is None or ys_tail is None:
        return carry, ys_head
    head_leaves, tree = flatten(ys_head)
    return carry, unflatten(tree, [np.concatenate([a, b]) for a, b in zip(head_leaves, flatten(ys_tail)[0])])


def _map(fn, tree):
    leaves, treedef = flatten(tree)
    return unflatten(treedef, [fn(leaf) for leaf in leaves])


def while_loop(cond_fun, body_fun, init_val):
    """``val = body_fun(val)`` while ``cond_fun(val)`` is true; returns the last ``val``.

    ``cond_fun`` returns a boolean scalar (``val[0] < 1.0``, not Python's ``and``/``or``: use ``&``/``|``),
    ``body_fun`` returns ``val`` in the structure, shapes and dtypes it came in. The trip count is known only
    when the loop runs, so it has no gradient (as in JAX): differentiating through it is a
    ``tg.GradTypeError``. Use ``fori_loop`` or ``scan`` for loops you differentiate.
    """
    if current_builder() is None:
        val = init_val
        while cond_fun(val):
            val = body_fun(val)
        return val
    init_leaves, init_tree = flatten(init_val)
    init_avals = [aval_of(leaf) for leaf in init_leaves]
    carry_names = arg_names(body_fun, (init_val,))
    source = user_source()
    with Builder("cond") as first:
        carries = [first.new_input(aval, hint) for aval, hint in zip(init_avals, carry_names)]
        prepared = _Preparer(first).prepare(cond_fun)
        result, _ = _call_recording_locals(prepared, (unflatten(init_tree, carries),), first)
        flag = _output_atom(result, first)
        if flag.aval != Aval((), np.bool_):
            raise TracingError(f"while_loop: the condition returns {flag.aval}, not a boolean scalar", source,
                               "compare: x < 1.0; combine with & and |")
    with Builder(getattr(body_fun, "__name__", "body")) as second:
        second.captured, second._captured_ids = list(first.captured), dict(first._captured_ids)  # shared constants
        second.inputs = list(first.inputs)
        carry_vars = list(first.inputs)  # (the cond's carries, whatever an assignment there rebound)
        carry = unflatten(init_tree, [second.wrap(v) for v in carry_vars])
        result, local_names = _call_recording_locals(_Preparer(second).prepare(body_fun), (carry,), second)
        carry_out = _carry_atoms(result, init_tree, init_avals, carry_names, second, "while_loop", source)
    for var, hint in local_names.items():
        if var.hint is None:
            var.hint = hint
    outer = current_builder()
    for key, read in list(first.readers.items()) + list(second.readers.items()):
        outer.readers.setdefault(key, read)
    consts = [value for _, value in second.captured]
    const_vars = [var for var, _ in second.captured]
    inputs = const_vars + carry_vars
    cond = Graph("cond", inputs, first.nodes, [flag])
    body = Graph(second.name, inputs, second.nodes, carry_out)
    init = [_concrete(leaf, aval) for leaf, aval in zip(init_leaves, init_avals)]
    outs = PRIMITIVES["while_loop"](*consts, *init, cond=cond, body=body, n_consts=len(consts))
    return unflatten(init_tree, outs)


def _carry_atoms(new_carry, init_tree, init_avals, carry_names, builder, what, source) -> list:
    """The body's returned carry as atoms, checked against the carry it started as."""
    out_leaves, out_tree = flatten(new_carry)
    if out_tree != init_tree:
        raise TracingError(f"{what}: the body returns a carry of structure {out_tree}, but it started as "
                           f"{init_tree}", source, "return the carry in the structure it came in")
    atoms = []
    for k, (leaf, aval) in enumerate(zip(out_leaves, init_avals)):
        atom = Literal(leaf, aval.dtype) if isinstance(leaf, (bool, int, float)) else _output_atom(leaf, builder)
        if atom.aval != aval:
            raise TracingError(f"{what}: carry {carry_names[k]!r} goes in as {aval} and comes out of the body as "
                               f"{atom.aval}", source,
                               "a carry keeps its shape and dtype; convert it (x.astype) or start it as it ends")
        atoms.append(atom)
    return atoms


def _length(x_leaves: list, length) -> int:
    lengths = set()
    for x in x_leaves:
        shape = np.shape(x)
        if not shape:
            raise ShapeError("scan: every leaf of xs needs a leading axis to scan over, got a scalar", user_source())
        lengths.add(shape[0])
    if len(lengths) > 1:
        raise ShapeError(f"scan: the leaves of xs have different lengths {sorted(lengths)}", user_source())
    if length is not None:
        if lengths and lengths != {length}:
            raise ShapeError(f"scan: length={length} but xs has length {lengths.pop()}", user_source())
        return int(length)
    if not lengths:
        raise ShapeError("scan: give xs or length", user_source())
    return lengths.pop()


def _run(f, init, xs, x_tree, x_leaves, n, reverse):
    """The loop itself, in Python, on NumPy values (scan called outside any trace)."""
    carry, ys = init, [None] * n
    for t in (range(n - 1, -1, -1) if reverse else range(n)):
        carry, ys[t] = f(carry, unflatten(x_tree, [x[t] for x in x_leaves]))
    if n == 0 or ys[0] is None:
        return carry, None
    y_leaves = [flatten(y)[0] for y in ys]
    return carry, unflatten(flatten(ys[0])[1], [np.stack(column) for column in zip(*y_leaves)])


def _concrete(leaf, aval):
    """A Python number as a NumPy scalar of its own dtype, so joining the loop does not change it."""
    return aval.dtype.type(leaf) if isinstance(leaf, (bool, int, float)) else leaf


def _trace_loop(f, init, x_leaves, x_tree, n, reverse, what, lower=None):
    """Trace ``f`` once into a loop node. ``lower`` given: ``f(i, carry)`` (fori_loop), else ``f(carry, x)``."""
    init_leaves, init_tree = flatten(init)
    init_avals = [aval_of(leaf) for leaf in init_leaves]
    row_avals = [Aval(np.shape(x)[1:], x.dtype) for x in x_leaves]
    index_name = "t"
    if lower is not None:
        names = arg_names(f, (0, init))
        index_name, carry_names, row_names = (names[0] if lower == 0 else "t"), names[1:], []
    else:
        names = arg_names(f, (init, unflatten(x_tree, list(x_leaves))))
        carry_names, row_names = names[:len(init_leaves)], names[len(init_leaves):]
    source = user_source()
    name = getattr(f, "__name__", what)
    name = what if name == "<lambda>" else name
    with Builder(name) as inner:
        t = inner.new_input(Aval((), np.int64), index_name)
        carries = [inner.new_input(aval, hint) for aval, hint in zip(init_avals, carry_names)]
        rows = [inner.new_input(aval, hint) for aval, hint in zip(row_avals, row_names)]
        in_vars = [t.var] + [c.var for c in carries] + [r.var for r in rows]  # before an assignment rebinds one
        carry = unflatten(init_tree, carries)
        prepared = _Preparer(inner).prepare(f)
        if lower is not None:
            args = (t if lower == 0 else t + lower, carry)
        else:
            args = (carry, unflatten(x_tree, rows))
        result, local_names = _call_recording_locals(prepared, args, inner)
        if lower is not None:
            new_carry, y = result, None
        elif isinstance(result, tuple) and len(result) == 2:
            new_carry, y = result
        else:
            raise TracingError(f"scan's function must return a pair (carry, y), got {type(result).__name__}", source)
        carry_out = _carry_atoms(new_carry, init_tree, init_avals, carry_names, inner, what, source)
        y_leaves, y_tree = flatten(y)
        ys = [_output_atom(leaf, inner) for leaf in y_leaves]
    for var, hint in local_names.items():
        if var.hint is None:
            var.hint = hint
    outer = current_builder()
    for key, read in inner.readers.items():  # closure and global arrays the body reads: read at every call
        outer.readers.setdefault(key, read)
    graph, consts = close(inner, in_vars, carry_out + ys, name)
    # arrays the body reads from closures and globals keep their names as the loop's constants
    consts = [outer.wrap(outer.capture(value, var.hint)) if isinstance(value, np.ndarray) else value
              for value, var in zip(consts, graph.inputs[1:])]
    outer_source = outer.source
    outer.source = source if outer_source is None else outer_source  # (a rule's, or fit's, line: keep it)
    try:
        outs = loop_bind(graph, consts, [_concrete(leaf, aval) for leaf, aval in zip(init_leaves, init_avals)],
                         list(x_leaves), n, reverse)
    finally:
        outer.source = outer_source
    return unflatten(init_tree, outs[:len(init_leaves)]), (unflatten(y_tree, outs[len(init_leaves):])
                                                           if y_leaves or y_tree.kind != "none" else None)
