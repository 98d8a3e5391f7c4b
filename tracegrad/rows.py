"""``parallel=tg.over_rows(...)``: a loss of a batch of rows, its value and gradient computed block by block of
rows on all of Numba's threads, and the blocks' results combined in a fixed order.

A loss that is the mean (or the sum) of per-row losses is *separable*: the loss of the batch is the mean of
the losses of its blocks of rows, weighted by their rows, and so is its gradient. ``over_rows`` takes that
as a contract (the same as ``tracegrad.distributed``'s, there across Dask workers, here across threads):
the data arguments it names are split into as many blocks as Numba has threads, one block a thread, and
each block runs the whole compiled value and gradient of the loss, products included (each thread's own
BLAS call on its rows), in one parallel loop. The loop-level ``parallel=True`` starts threads at every
large fused loop and leaves matrix products on one thread; this starts them once a call.

The generated module (``f.source(...)``) holds the compiled function of a block (one per block size, at
most two) and the function that runs them::

    def loss_value_and_grad(W, b, X, y):
        # X, y split into 2 blocks of rows, one a thread; reduction='mean': each block's value and
        # gradients weighted by its rows, added in block order
        out_blocks = np.empty((2,), np.float64)
        ...
        for blk in prange(2):
            lo = blk * 512
            (out_blk, grad_W_blk, grad_b_blk), failed[blk] = loss_value_and_grad_rows512_caught(
                W, b, X[lo:lo + 512], y[lo:lo + 512])
            ...

Numba drops what a function called in a parallel loop raises: each block's call catches it (``_caught``)
and flags the block, and a failed block runs again after the loop, alone, to raise it (an index out of
bounds then names the user's line, as in the serial code).

The result equals the whole batch's to rounding, and is the same at every call for a given thread count
(the blocks are fixed, and added in order). Below ``MIN_BLOCK_ROWS`` rows a block, or with one thread,
the batch runs as one block, serially.
"""
from __future__ import annotations

from . import __version__
from .codegen import Module, comment_text, function_name
from .errors import DataError, TracegradError, user_source
from .ir import Graph, assign_names, literal_source, nested_graphs

REDUCTIONS = ("mean", "sum")
MIN_BLOCK_ROWS = 128  # fewer rows a block and the threads cost more than they save (benchmarks/bench_parallel.py)


class OverRows:
    """The setting ``parallel=over_rows(*data, reduction=...)``: which arguments are data split by rows."""

    def __init__(self, data: tuple, reduction: str, written: tuple | None = None):
        self.data, self.reduction = data, reduction
        self.written = data if written is None else written  # (as the user wrote them: static ones counted)

    def __repr__(self):
        return f"over_rows({', '.join(map(str, self.written))}, reduction={self.reduction!r})"

    def __eq__(self, other):
        return isinstance(other, OverRows) and (self.data, self.reduction) == (other.data, other.reduction)

    def __hash__(self):
        return hash((OverRows, self.data, self.reduction))

    def __reduce__(self):
        return OverRows, (self.data, self.reduction)

    def blocks(self, args, leaves_of, threads: int) -> tuple | None:
        """``(sizes, split)``: the rows of each block and, per flat leaf of ``args``, whether it is split;
        None when the batch runs as one block (too few rows, or one thread). ``leaves_of(arg)`` flattens."""
        positions = []
        for i in self.data:
            if not i < len(args):
                raise DataError(f"{self!r}: there is no argument {i} of {len(args)}", user_source())
            positions.append(i)
        split, rows = [], None
        for position, arg in enumerate(args):
            leaves = leaves_of(arg)
            if position not in positions:
                split.extend([False] * len(leaves))
                continue
            for leaf in leaves:
                shape = getattr(leaf, "shape", ())
                if not shape:
                    raise DataError(f"{self!r}: argument {position} holds {type(leaf).__name__} {leaf!r}, not an "
                                    "array of rows", user_source())
                if rows is not None and shape[0] != rows:
                    raise DataError(f"{self!r}: the data arguments have {rows} and {shape[0]} rows: they must "
                                    "have as many", user_source())
                rows = shape[0]
            split.extend([True] * len(leaves))
        n_blocks = min(threads, (rows or 0) // MIN_BLOCK_ROWS)
        if n_blocks < 2:
            return None
        q, r = divmod(rows, n_blocks)
        return tuple(q + 1 if b < r else q for b in range(n_blocks)), tuple(split)


def over_rows(*data: int, reduction: str = "mean") -> OverRows:
    """``parallel=`` for a loss of a batch of rows: the arguments at positions ``data`` are split by rows
    into blocks, one a thread, each running the whole compiled value and gradient; the blocks' results are
    combined as ``reduction`` says (``"mean"``: the loss is the mean over the rows, so each block counts by
    its rows; ``"sum"``: the sum, so they add up). For ``grad`` and ``value_and_grad`` (positions count
    static arguments too, as ``argnums`` do); ``jit``, ``has_aux`` and ``fit`` refuse it, and ``debug_nans``,
    random draws (each block would draw the first block's numbers) and arrays the loss makes from the
    batch's size run the batch whole, serially.

    The loss must be separable over the rows, as for ``tracegrad.distributed.value_and_grad``: a penalty
    that does not depend on the rows is right with ``"mean"`` and counted once a block with ``"sum"``; a
    statistic of the whole batch (a batch norm) is never right. The data arguments are not differentiated.

    >>> import numpy as np, tracegrad as tg
    >>> loss = lambda w, X, y: np.mean((X @ w - y) ** 2)
    >>> vg = tg.value_and_grad(loss, parallel=tg.over_rows(1, 2))
    >>> X, y = np.ones((512, 3)), np.arange(512.0)
    >>> value, g = vg(np.zeros(3), X, y)
    >>> bool(np.isclose(value, np.mean(y ** 2))), np.allclose(g, -2 * X.T @ y / 512)
    (True, True)
    """
    if reduction not in REDUCTIONS:
        raise TracegradError(f"over_rows: reduction must be 'mean' or 'sum', got {reduction!r}")
    if not data or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in data):
        raise TracegradError(f"over_rows takes the positions of the data arguments (ints from 0), got {data!r}",
                             hint="tg.over_rows(1, 2) for loss(params, X, y)")
    return OverRows(tuple(data), reduction)


def draws_random(nodes) -> bool:
    """Whether ``nodes`` (or a graph nested in one) draw random numbers."""
    nodes = list(nodes)
    return any(node.primitive.name.startswith("random_")
               for graph_nodes in [nodes, *(g.nodes for g in nested_graphs(nodes))] for node in graph_nodes)


def same_inputs(block: Graph, graph: Graph, split: tuple) -> bool:
    """Whether ``block``'s inputs are ``graph``'s for a block of rows: the same avals, but for the rows of the
    inputs ``split`` marks (a capture the loss made from the batch's size would differ)."""
    if len(block.inputs) != len(graph.inputs):
        return False
    return all(b.aval.dtype == g.aval.dtype and (b.aval.shape[1:] == g.aval.shape[1:] if cut else b.aval == g.aval)
               for b, g, cut in zip(block.inputs, graph.inputs, split))


def module(graph: Graph, blocks: dict, sizes: tuple, split: tuple, reduction: str) -> Module:
    """The module running ``blocks`` (block size -> the generated module of the block's graph, whose inputs
    are ``graph``'s: split leaves first rows cut) in ``prange`` over the blocks of ``sizes`` and combining
    their outputs, which are ``graph``'s outputs, as ``reduction`` says.

    A block whose module has a workspace gets buffers of its own: the module's workspace holds, for each
    block size, each of the block's buffers stacked once per block of that size (one thread a block, so
    never shared), and its ``inner`` function (the parallel loop) takes them."""
    kernels = sorted({k for m in blocks.values() for k in m.kernels})
    function = function_name(graph.name, frozenset(kernels))  # (spelled as generate spells the serial one's)
    taken = {"blk", "lo", "prange", "np", function} | set(kernels)
    for block in blocks.values():
        taken.update(block.parts + (block.function,))
    names = assign_names(graph, reserved=frozenset(taken))
    params = [names[v] for v in graph.inputs]
    outs = [names[v] for v in graph.outputs]
    n, n_blocks = sum(sizes), len(sizes)
    order = sorted(blocks, reverse=True)  # the first blocks have a row more
    counts = {size: sizes.count(size) for size in order}
    firsts = {size: sizes.index(size) for size in order}
    taken.update(params, outs)

    def fresh(name: str) -> str:  # a name of this function's own, none of the graph's (a parameter out_blocks)
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    each = {o: fresh(f"{o}_blocks") for o in outs}  # every block's output, by block
    one = {o: fresh(f"{o}_blk") for o in outs}  # one block's
    buffers = {}  # size -> its blocks' buffers: (name here, shape, dtype name)
    for size in order:
        buffers[size] = [(fresh(f"rows{size}_{name}"), (counts[size],) + tuple(shape), dtype)
                         for name, shape, dtype in blocks[size].workspace]

    called = {size: blocks[size].inner or blocks[size].function for size in order}  # (with its buffers)
    caught = {size: fresh(f"{called[size]}_caught") for size in order}
    data = ", ".join(p for p, s in zip(params, split) if s)
    what = (["each block's value and", "gradients weighted by its rows, added in block order"] if reduction == "mean"
            else ["the blocks' values and", "gradients added in block order"])
    lines = [f"# {data} split into {n_blocks} blocks of rows, one a thread; reduction={reduction!r}: {what[0]}",
             f"# {what[1]}"]
    for out, var in zip(outs, graph.outputs):
        lines.append(f"{each[out]} = np.empty({(n_blocks,) + var.aval.shape}, np.{var.aval.dtype.name})")
    failed = fresh("failed")
    lines.append(f"{failed} = np.zeros({n_blocks}, np.bool_)")

    def per_block(loop: str, call, only: str | None = None) -> list:
        """``for blk in loop:`` (skipping a block unless ``only``) with ``lo``, around ``call(size,
        arguments)``'s lines for the block's size."""
        body = [f"for blk in {loop}:"]
        if only is not None:
            body.extend([f"    if not {only}:", "        continue"])
        if len(order) == 1:
            body.append(f"    lo = blk * {order[0]}")
        else:
            body.append(f"    lo = blk * {order[1]} + min(blk, {counts[order[0]]})")
        for k, size in enumerate(order):
            pad = "    " if len(order) == 1 else "        "
            if len(order) > 1:
                body.append(f"    {'if blk < ' + str(counts[size]) + ':' if k == 0 else 'else:'}")
            index = "blk" if firsts[size] == 0 else f"blk - {firsts[size]}"
            args = [f"{p}[lo:lo + {size}]" if s else p for p, s in zip(params, split)]
            args += [f"{name}[{index}]" for name, _, _ in buffers[size]]
            body.extend(pad + line for line in call(size, ", ".join(args)))
        return body

    # Numba drops what a function called in a parallel loop raises (an index out of bounds): each block's
    # call catches it (``_caught``) and says so, and a block that failed is run again after the loop, alone,
    # to raise it
    unpack = f"{', '.join(one[o] for o in outs)}{',' if len(outs) == 1 else ''}"
    lines.extend(per_block(f"prange({n_blocks})", lambda size, args: [
        f"({unpack}), {failed}[blk] = {caught[size]}({args})", *(f"{each[o]}[blk] = {one[o]}" for o in outs)]))
    lines.append(f"if {failed}.any():  # a block raised: again, serially, to raise it here")
    lines.extend("    " + line for line in per_block(f"range({n_blocks})", lambda size, args: [
        f"{called[size]}({args})"], only=f"{failed}[blk]"))
    for out, var in zip(outs, graph.outputs):
        if reduction == "mean":
            terms = [f"{each[out]}[{b}] * {literal_source(size / n, var.aval.dtype)}" for b, size in enumerate(sizes)]
        else:
            terms = [f"{each[out]}[{b}]" for b in range(n_blocks)]
        lines.append(f"{out} = {' + '.join(terms)}")
    lines.append(f"return {', '.join(outs)}{',' if len(outs) == 1 else ''}")

    workspace = tuple(buffer for size in order for buffer in buffers[size])
    catchers = []
    for size in order:
        inputs = params + [name for name, _, _ in buffers[size]]
        nothing = [literal_source(0, v.aval.dtype) if not v.aval.shape else
                   f"np.zeros({v.aval.shape}, np.{v.aval.dtype.name})" for v in graph.outputs]
        catchers.append((caught[size], inputs, [
            "try:", f"    return {called[size]}({', '.join(inputs)}), False",
            "except Exception:  # (whatever it raised, raised again outside the parallel loop)",
            f"    return ({', '.join(nothing)}{',' if len(nothing) == 1 else ''}), True"]))
    functions, inner = [(function, params, lines)], None
    if workspace:  # the parallel loop takes the buffers; the function called without them makes new ones
        inner = fresh(f"{function}_blocks")
        functions = [(inner, params + [name for name, _, _ in workspace], lines),
                     (function, params, ["# a new workspace at each call (tracegrad's own calls pass one kept for "
                                           "this specialisation)"] +
                      [f"{name} = np.empty({shape}, np.{dtype})" for name, shape, dtype in workspace] +
                      [f"return {inner}({', '.join(params + [name for name, _, _ in workspace])})"])]
    header = [f"# Generated by tracegrad {__version__} from graph {comment_text(graph.name)}, in blocks of rows. "
              "Do not edit:",
              "# the file is named by the hash of this text.", "import numpy as np", "from numba import prange"]
    if kernels:
        header.append(f"from tracegrad.kernels import {', '.join(kernels)}")
    texts, parts = [], []
    for size in order:
        block = blocks[size]
        texts.append(block.source[block.source.index("\ndef "):].strip("\n"))
        parts.extend(block.parts + (block.function,))
    functions = catchers + functions
    texts.extend(f"def {name}({', '.join(args)}):\n" + "".join(f"    {line}\n" for line in body).rstrip("\n")
                 for name, args, body in functions)
    parts.extend(name for name, _, _ in functions[:-1])
    source = "\n".join(header) + "\n\n\n" + "\n\n\n".join(texts) + "\n"
    return Module(source, function, tuple(kernels), tuple(parts), inner=inner, workspace=workspace, parallel=True)
