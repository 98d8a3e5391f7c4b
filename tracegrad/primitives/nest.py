"""Loop nests: ``loop_nest``, a loop over an index space whose iterations are independent, with its body a
graph on scalars; ``element`` and ``add_at``, how that body reads and adds to arrays at index values.

``passes.optimize`` lowers each group of elementwise nodes it fused into one loop nest (``passes.lower``)::

    s5, grad_x = loop_nest[shape=(49,), accumulate=(False, True), ...](x, grad_out)

Its body's first inputs are the index values ``i0, i1, ...`` (int64 scalars), then the node's inputs (the
same Vars). Arrays are read with ``element(x, i0, 0)`` (a broadcast read: element 0 of a size-1 axis), or
guarded, ``element(g, i0 - 1, i0 >= 1, guards=1)``, zero where a condition fails (a slice's gradient read
in a loop over the whole array); the index arithmetic and the conditions are nodes on the index values
(``add``, ``sub``, ``mul``, comparisons). Each output is either stored at the index (``s5[i0] = ...``) or
a sum: ``add_at(value, *subscripts)`` nodes add to it at index values the body computes
(``grad_x[i0 + 1] += grad_s0``, ``grad_b[i1] += g``, ``out += s8``). Iterations never read what another
iteration writes, which is what lets ``parallel=`` run blocks of rows at once (``_blocks``).

Its ``emit`` is the only code that writes a loop nest; its ``ref`` runs the body once on whole arrays (the
index values bound to broadcast ``np.arange``s), so the NumPy tier stays vectorised.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ..core import PRIMITIVES, Block, primitive
from ..errors import ShapeError
from ..ir import Aval, IRError, Literal, Node, Var, literal_source
from ..notation import inlinable

INDEX = np.dtype(np.int64)


# ---------------------------------------------------------------- index values, as primitives declare them


class Index:
    """An index value inside a loop nest's body, for ``loop_index``/``accumulate_index`` declarations:
    ``i - 1``, ``2 * i + 1``, ``i >= 1``, ``i == 2`` each add a node to the body (``add``, ``mul``, ``ge``,
    ...) and give its value. Ints stay ints until they meet an index value."""

    __slots__ = ("atom", "nodes")

    def __init__(self, atom, nodes: list):
        self.atom, self.nodes = atom, nodes

    def _apply(self, name: str, a, b) -> "Index":
        a, b = (x.atom if isinstance(x, Index) else Literal(x, INDEX) for x in (a, b))
        prim = PRIMITIVES[name]
        out = Var(prim.shape(a.aval, b.aval))
        self.nodes.append(Node(prim, (a, b), {}, out))
        return Index(out, self.nodes)

    def __add__(self, other):
        return self if isinstance(other, int) and other == 0 else self._apply("add", self, other)

    def __radd__(self, other):
        return self if other == 0 else self._apply("add", other, self)

    def __sub__(self, other):
        return self if isinstance(other, int) and other == 0 else self._apply("sub", self, other)

    def __rsub__(self, other):
        return self._apply("sub", other, self)

    def __mul__(self, other):
        return self if isinstance(other, int) and other == 1 else self._apply("mul", self, other)

    def __rmul__(self, other):
        return self if other == 1 else self._apply("mul", other, self)

    def __ge__(self, other):
        return self._apply("ge", self, other)

    def __gt__(self, other):
        return self._apply("gt", self, other)

    def __le__(self, other):
        return self._apply("le", self, other)

    def __lt__(self, other):
        return self._apply("lt", self, other)

    def __eq__(self, other):  # (a node, not a truth value: index values are never compared as objects)
        return self._apply("eq", self, other)

    __hash__ = None


def index_atom(value):
    """An ``Index`` or an int (a constant subscript) as an atom of the body."""
    return value.atom if isinstance(value, Index) else Literal(value, INDEX)


# ---------------------------------------------------------------- element: a read at index values


def _element_parts(inputs, guards):
    """(the array, its subscripts, the conditions) of an ``element`` node's inputs."""
    return inputs[0], inputs[1:len(inputs) - guards], inputs[len(inputs) - guards:]


def _element_shape(x, *rest, guards):
    if len(rest) - guards != x.ndim:
        raise ShapeError(f"element: {x.ndim} subscripts needed, got {len(rest) - guards}")
    return Aval((), x.dtype)


def _element_ref(x, *rest, guards):
    x, at, conditions = _element_parts((x,) + rest, guards)
    x = np.asarray(x)
    if not conditions:
        return x[tuple(at)] if at else x
    ok = np.logical_and.reduce(np.broadcast_arrays(*conditions)) if len(conditions) > 1 else conditions[0]
    safe = tuple(np.where(ok, i, 0) for i in at)  # (never out of range where the read does not count)
    return np.where(ok, x[safe] if at else x, x.dtype.type(0))


def element_text(x: str, at: list, conditions: list, dtype) -> str:
    """``x[i0 - 1, i1]``, or guarded ``(x[i0 - 1] if i0 >= 1 else 0.0)``: texts as they are (subscripts and
    conditions need no parentheses)."""
    text = f"{x}[{', '.join(at)}]" if at else x
    if conditions:
        return f"({text} if {' and '.join(conditions)} else {literal_source(0.0, dtype)})"
    return text


@primitive
class element:
    """x[i, j, ...] inside a loop nest, at index values; with ``guards`` trailing conditions, 0 where one fails"""
    usage = "(made by fusion: a loop nest's reads)"
    backward = "(none: loop nests are made after differentiation)"
    shape = _element_shape
    ref = _element_ref
    emit = staticmethod(lambda args, out, guards: element_text(
        args[0], list(args[1:len(args) - guards]), list(args[len(args) - guards:]), out.dtype))
    nondiff = True


@primitive
class add_at:
    """adds ``value`` to a loop nest's sum at index values (``out[i0 + 1] += value``); its result is ``value``"""
    usage = "(made by fusion: a loop nest's sums)"
    backward = "(none: loop nests are made after differentiation)"
    shape = staticmethod(lambda value, *at: Aval((), value.dtype))
    ref = staticmethod(lambda value, *at: value)
    emit = staticmethod(lambda args, out: args[0])  # (only ``loop_nest``'s render writes its ``+=``)
    nondiff = True


# ---------------------------------------------------------------- loop_nest


@dataclass(frozen=True, eq=False)
class Origin:
    """The array-level nodes a loop nest was lowered from, in the program's order: never run, they give its
    values their names (``s3``, ``grad_s3``), its comment the user's line, and pictures their nodes."""

    nodes: tuple

    def __repr__(self):
        return f"<{len(self.nodes)} array-level nodes>"


def layout(node: Node):
    """A loop nest's outputs as the body computes them: ({stored scalar: output}, [(add_at node, output)])."""
    body, accumulate = node.params["body"], node.params["accumulate"]
    defs = {n.out: n for n in body.nodes}
    stored, writes = {}, []
    results = iter(body.outputs)
    for out, summed in zip(node.outs, accumulate):
        if not summed:
            stored[next(results)] = out
    for k, atom in zip(node.params["writes"], results):
        writes.append((defs[atom], node.outs[k]))
    return stored, writes


def _shape(*avals, body, shape, accumulate, writes, avals_out, origin):
    return avals_out[0]


def _ref(*inputs, body, shape, accumulate, writes, avals_out, origin):
    """The body once, on whole arrays: the index values are ``np.arange``s broadcast against each other."""
    plans = _PLANS.get(body)
    if plans is None:
        plans = _PLANS[body] = {}
    key = (shape, accumulate, writes)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _Plan(body, shape, accumulate, writes, avals_out)
    return plan(inputs)


class _Plan:
    """How ``_ref`` runs one loop nest's body on whole arrays, worked out once: the NumPy tier calls it at
    every call of the function (``fit``'s epochs: thousands of small loops), so each call only runs the
    body's references, reads the views and adds up the sums. Values live in a list, by slot."""

    def __init__(self, body, shape, accumulate, writes, avals_out):
        n = len(shape)
        indices = list(body.inputs[:n])
        slot = {v: k for k, v in enumerate(body.inputs)}
        self.aranges = [np.arange(d, dtype=INDEX).reshape([-1 if e == k else 1 for e in range(n)])
                        for k, d in enumerate(shape)]
        self.n_inputs = len(body.inputs)

        def where(atom):  # (True, slot) of a value, or (False, the literal's value)
            return (False, atom.aval.dtype.type(atom.value)) if isinstance(atom, Literal) else (True, slot[atom])

        self.steps = []  # (view or None, primitive ref, reads, params, dtype)
        for node in body.nodes:
            view = _aligned_read(node, indices, shape)
            reads = tuple(where(a) for a in (node.inputs[:1] if view is not None else node.inputs))
            self.steps.append((view, node.primitive.ref, reads, node.params, node.out.aval.dtype))
            slot[node.out] = len(slot)
        self.n_slots = len(slot)
        outputs = iter(body.outputs)
        self.results = []  # (True, zeros' aval) for a sum, (False, where, dtype) for a stored value
        for aval, summed in zip(avals_out, accumulate):
            self.results.append((True, aval) if summed else (False, where(next(outputs)), aval.dtype))
        defs = {node.out: node for node in body.nodes}
        # each sum: (output, value, subscripts): None where it is a sum over the axes not written
        # (out[i2, i0] += v: over i1), then (axes summed over, region written, order of the axes) or None
        self.sums = []
        for k, atom in zip(writes, outputs):
            node = defs[atom]
            at = node.inputs[1:]
            axes = [indices.index(a) if a in indices else None for a in at]
            if None not in axes and len(set(axes)) == len(axes):
                over = (tuple(d for d in range(n) if d not in axes),
                        tuple(slice(0, shape[d]) for d in axes),  # (grad_x[i0] of an x one longer: its start)
                        tuple(np.argsort(np.argsort(axes))) if axes else None)
                self.sums.append((k, where(node.inputs[0]), None, over))
            else:  # anywhere else (i0 + 1, 2 * i0): np.add.at
                self.sums.append((k, where(node.inputs[0]), tuple(where(a) for a in at), None))
        self.shape = shape

    def __call__(self, inputs):
        env = [None] * self.n_slots
        n = len(self.aranges)
        env[:n] = self.aranges
        env[n:self.n_inputs] = inputs
        k = self.n_inputs
        for view, ref, reads, params, dtype in self.steps:
            args = [env[x] if is_var else x for is_var, x in reads]
            if view is not None:  # (x read at the loop's own indices: a view of x, broadcasting as it is)
                env[k] = np.asarray(args[0])[view]
            else:
                env[k] = np.asarray(ref(*args, **params), dtype)
            k += 1
        read = lambda w: env[w[1]] if w[0] else w[1]
        shape, results = self.shape, []
        for entry in self.results:
            if entry[0]:
                results.append(np.zeros(entry[1].shape, entry[1].dtype))
            else:
                value = read(entry[1])
                results.append(np.array(value if np.shape(value) == shape else np.broadcast_to(value, shape), entry[2]))
        for k, value, at, over in self.sums:
            out = results[k]
            value = read(value)
            if np.shape(value) != shape:
                value = np.ascontiguousarray(np.broadcast_to(value, shape))
            if at is None:
                summed, region, order = over
                total = np.sum(value, axis=summed, dtype=out.dtype)
                out[region] += np.transpose(total, order) if order is not None else total
            else:
                np.add.at(out, tuple(np.broadcast_to(read(a), shape) for a in at), value)
        return results if len(results) > 1 else results[0]


_PLANS = weakref.WeakKeyDictionary()  # body -> {(shape, accumulate, writes): _Plan}


def _aligned_read(node: Node, indices: list, shape: tuple):
    """For an unguarded ``element`` read whose subscripts are the last index values in order (or constants:
    a size-1 axis), the basic index giving the same values as a view that broadcasts against the index
    space; else None."""
    if node.primitive is not element or node.params["guards"]:
        return None
    at = node.inputs[1:]
    lead = len(indices) - len(at)
    view = []
    for k, a in enumerate(at):
        if isinstance(a, Literal):
            view.append(slice(a.value, a.value + 1))
        elif lead >= 0 and a is indices[lead + k]:
            view.append(slice(0, shape[lead + k]))
        else:
            return None
    return tuple(view)


def _vjp(g, out, *inputs, **params):
    raise IRError("loop nests are made after differentiation and cannot be differentiated")


def _jvp(tangents, out, *inputs, **params):
    raise IRError("loop nests are made after differentiation and cannot be differentiated")


def _render(printer, node, args) -> list:
    """A loop nest as ``for i0 in range(n):`` loops around its body's statements on scalars, under the
    names ``printer`` knows: the only code that writes one."""
    names, ATOM = printer.names, printer.ATOM
    body, shape = node.params["body"], node.params["shape"]
    n = len(shape)
    index = [f"i{d}" for d in range(n)]
    stored, writes = layout(node)
    write_to = {add: out for add, out in writes}
    inline = dict(zip(body.inputs[:n], [(i, ATOM) for i in index]))  # values written where they are read
    defs = {m.out: m for m in body.nodes}

    uses, consumer_group = {}, {}
    for member in body.nodes:
        for a in member.inputs:
            uses[a] = uses.get(a, 0) + 1
            consumer_group[a] = member.group
    exprs = {}  # single-use temporaries of one VJP rule, written inline as outside loops

    def text(atom) -> str:
        return read(atom)[0]

    def read(atom):
        if isinstance(atom, Literal):
            return printer.literal(atom)
        if atom in exprs:
            return exprs.pop(atom)
        if atom in inline:
            return inline[atom]
        if atom in stored:  # a stored output read by a later statement reads back its element
            return f"{names[atom]}[{', '.join(index)}]", ATOM
        if atom not in defs or atom.element_of is not None:
            return names[atom], ATOM
        member = defs[atom]  # index arithmetic or a read, spelled where it is used
        inline[atom] = spelled = spell(member)
        return spelled

    def spell(member):
        if member.primitive is element:
            x, at, conditions = _element_parts(member.inputs, member.params["guards"])
            return element_text(text(x), [text(a) for a in at], [text(c) for c in conditions],
                                member.out.aval.dtype), ATOM
        return printer.spell(member, [read(a) for a in member.inputs], scalar=True)

    carried = _Carried(printer, node, writes)  # sums written an element at a time, or none
    blocks = _blocks(printer, node, writes, carried)  # parallel=: the loop as prange over blocks of rows, or None
    arrays, lines = [], []  # (with blocks: arrays made by the caller, then filled by the loop's function)
    for out, summed in zip(node.outs, node.params["accumulate"]):
        if out in carried:  # every element stored once (by the rows, then after the loop)
            made = printer.new_array(out, out.aval)
        elif blocks is not None and summed and blocks.zero_in_blocks(out):  # zeroed by the blocks, not here
            made = printer.new_array(out, out.aval)
        else:
            made = printer.new_array(out, out.aval, zeros=True) if summed else \
                printer.new_array(out, Aval(shape, out.aval.dtype))
        (arrays if blocks is not None and out.aval.shape else lines).extend(made)
    if printer.comments:
        lines.append(_loop_comment(node, names))
    depth = n + (blocks.depth if blocks is not None else 0)
    row_indent = "    " * (depth - n + 1)  # (the registers of a row: inside the rows' loop, around the others)
    row_start = [row_indent + line for line in carried.row_start()]
    if blocks is not None:
        lines.extend(blocks.header(index, row_start))
    else:
        lines.extend(carried.start() + [f"for {index[0]} in range({shape[0]}):"] + row_start +
                     ["    " * d + f"for {index[d]} in range({size}):" for d, size in enumerate(shape) if d])
    indent = "    " * depth
    for member in body.nodes:
        out = member.out
        if member in carried.shift:  # added into the register of its element
            lines.append(f"{indent}{carried.register(member)} += {text(member.inputs[0])}")
            continue
        if member in write_to:  # added into the output at the subscripts the body computes
            at, total = [text(a) for a in member.inputs[1:]], names[write_to[member]]
            if blocks is not None:  # (or into its block's partial sum)
                at, total = blocks.target(write_to[member], at)
            target = f"{total}[{', '.join(at)}]" if at else total
            lines.append(f"{indent}{target} += {text(member.inputs[0])}")
            continue
        if out.element_of is None:  # index arithmetic and plain reads: written where they are read
            continue
        spelled = spell(member)
        if out not in stored and inlinable(member, uses, consumer_group):
            exprs[out] = spelled
            continue
        target = f"{names[out]}[{', '.join(index)}]" if out in stored else names[out]
        lines.append(f"{indent}{target} = {spelled[0]}")
    lines.extend(row_indent + line for line in carried.row_end(index[0]))
    if blocks is not None:
        lines = arrays + blocks.function(lines + blocks.footer())
    else:
        lines.extend(carried.end())
    return [(line, None) for line in lines]


# ---------------------------------------------------------------- sums carried from row to row

MAX_REACH = 4  # rows a carried sum's adds reach ahead at most (registers a row carries to the next)


class _Carried:
    """The 1-D sums of a loop nest that each row (its first index, ``i0``) adds to at its own element and at
    most ``MAX_REACH`` after it: ``grad_x[i0] += a`` and ``grad_x[i0 + 1] += b`` (the gradient of ``x[1:]``
    and ``x[:-1]``), a row sum ``s6[i0] += e`` in a loop over the row's columns. Each is stored once an
    element instead of zeroed and then added to (and, in a row sum, read and written again at every
    column: Numba cannot keep ``s6[i0]`` in a register while the row stores other arrays). A row adds to
    registers, ``grad_x_at0`` for its own element and ``grad_x_at1``... for those after it, stores its own
    element when done, and hands the others on to the next row; the elements past the last row get the
    last registers. The additions happen in the order the serial loop adds them.

    With blocks of rows (``_Blocks``) each block starts its registers at zero and leaves its last ones in
    ``grad_x_carry[blk]``; after the parallel loop they are added to the next block's first elements, in
    block order."""

    def __init__(self, printer, node, writes, max_reach: int = MAX_REACH):
        self.printer, self.reach, self.shift, self.registers, self.carry = printer, {}, {}, {}, {}
        shape, body = node.params["shape"], node.params["body"]
        self.rows = rows = shape[0]
        row, defs = body.inputs[0], {m.out: m for m in body.nodes}
        offsets = {}  # output -> {add_at node: offset}, None when one of its adds is elsewhere
        for add, out in writes:
            at = add.inputs[1:]
            shift = None if len(at) != 1 else 0 if at[0] is row else _row_offset(at[0], row, defs)
            if out not in offsets or offsets[out] is not None:
                ok = shift is not None and 0 <= shift <= max_reach and len(out.aval.shape) == 1
                offsets[out] = {**offsets.get(out, {}), add: shift} if ok else None
        names = printer.names
        for out, adds in offsets.items():
            if adds is None or rows + max(adds.values()) > out.aval.shape[0]:
                continue
            self.reach[out] = reach = max(adds.values())
            self.shift.update((add, (out, shift)) for add, shift in adds.items())
            self.registers[out] = [printer.fresh_name(f"{names[out]}_at{c}") for c in range(reach + 1)]

    def __contains__(self, out) -> bool:
        return out in self.reach

    def register(self, add) -> str:
        out, shift = self.shift[add]
        return self.registers[out][shift]

    def _zero(self, out) -> str:
        return literal_source(0, out.aval.dtype)

    def start(self) -> list:
        """Before the rows: nothing handed on yet."""
        return [f"{r} = {self._zero(out)}" for out, rs in self.registers.items() for r in rs[1:]]

    def row_start(self) -> list:
        """A row's first statement: its registers are those the row before handed on, and a zero."""
        return [f"{', '.join(rs)} = {', '.join(rs[1:] + [self._zero(out)])}" for out, rs in self.registers.items()]

    def row_end(self, row: str) -> list:
        names = self.printer.names
        return [f"{names[out]}[{row}] = {rs[0]}" for out, rs in self.registers.items()]

    def end(self) -> list:
        """After the rows: the elements past the last row, what it handed on (and zeros past that)."""
        names, lines = self.printer.names, []
        for out, rs in self.registers.items():
            lines.extend(f"{names[out]}[{self.rows + c - 1}] = {r}" for c, r in enumerate(rs) if c)
            if out.aval.shape[0] > self.rows + self.reach[out]:
                lines.append(f"{names[out]}[{self.rows + self.reach[out]}:] = {self._zero(out)}")
        return lines

    def block_end(self) -> list:
        """At the end of a block of rows: its last registers, kept for the next block's first elements."""
        return [f"{self.carry[out]}[blk, {c - 1}] = {r}" for out, rs in self.registers.items()
                for c, r in enumerate(rs) if c]

    def name_carries(self) -> None:
        """With blocks of rows: the arrays that keep each block's last registers."""
        names = self.printer.names
        self.carry.update((out, self.printer.fresh_name(f"{names[out]}_carry")) for out, k in self.reach.items() if k)

    def carried_over(self, ends: str) -> list:
        """After the parallel loop: each block's last registers added to the elements after its rows
        (``ends``: the expression of the block's end), in block order."""
        names, lines = self.printer.names, []
        for out, rs in self.registers.items():
            if out.aval.shape[0] > self.rows:
                lines.append(f"{names[out]}[{self.rows}:] = {self._zero(out)}")
        sums = [(out, c) for out, rs in self.registers.items() for c in range(1, len(rs))]
        if sums:
            lines.append(f"for blk in range({BLOCKS}):  # what each block's last rows add to the elements after it")
            lines.extend(f"    {names[out]}[{ends}{f' + {c - 1}' if c > 1 else ''}] += {self.carry[out]}[blk, {c - 1}]"
                         for out, c in sums)
        return lines


# ---------------------------------------------------------------- parallel=: blocks of rows

# parallel=: a loop nest over at least `parallel_min` elements (the printer's: PARALLEL_MIN with
# parallel=True, AUTO_MIN with "auto") and BLOCKS * BLOCK_ROWS rows runs as `for blk in prange(BLOCKS):`
# around its block's rows, in a function of its own (the only code Numba compiles with parallel=True:
# its array analysis rejects broadcasting comparisons elsewhere in generated code). BLOCKS is a constant,
# not the number of threads: each block adds up its own partial sums, and they are added in block order
# after the loop, so the result is the same whatever the number of threads (and differs from the serial
# loop's only in the order of the additions).
BLOCKS = 16
BLOCK_ROWS = 8
# The thresholds, from bench_parallel.py on this 2-core machine when quiet: a parallel loop cost ~25 µs more
# on two threads than on one (the second thread's start, the rows moving between the cores' caches), so a
# loop of cheap work (1-2 ns an element) pays from a few 10^4 elements, and well from a few 10^5.
PARALLEL_MIN = 32768  # elements: the MLP step's 1024 x 10 loops (~3 µs each) stay serial, its 1024 x 128 do not
AUTO_MIN = 524288  # elements, for parallel="auto" (with more than one thread): ~0.5 ms of work and more
# An array the rows add into, of this many bytes or more, is zeroed by the blocks (a parallel pass before
# the rows) rather than by np.zeros before the loop: about 100 µs of memset a call at 2 MiB, half of it
# on the other thread, for one more start of the threads (~25 µs).
ZERO_IN_BLOCKS_BYTES = 1 << 21


class _Blocks:
    """How one loop nest is written as blocks of rows run in parallel. Each summed output is added to
    as the serial loop does when every row adds to elements of its own (``s6[i0] += e``), else into
    partial sums of each block (``out_blk += s8``, ``grad_b_blocks[blk, i1] += g``), added up after the
    loop in block order. When rows add to their neighbours' elements too (``grad_x[i0 + 1] += g``, fewer
    rows away than a block has), the even blocks run first and then the odd ones (``sweeps``): two blocks
    running at once are never neighbours."""

    def __init__(self, printer, node, partial: list, sweeps: bool, carried: _Carried):
        self.printer, self.node, self.rows, self.carried = printer, node, node.params["shape"][0], carried
        self.per = -(-self.rows // BLOCKS)  # rows per block (the last may have fewer)
        self.sweeps = sweeps
        self.depth = 2 if sweeps else 1  # the loops around the rows' loop
        names = printer.names
        self.partial = {out: printer.fresh_name(f"{names[out]}_blocks") for out in partial}
        self.local = {out: printer.fresh_name(f"{names[out]}_blk") for out in partial if not out.aval.shape}
        self.zeroed = []  # arrays the rows add into that the blocks zero first (zero_in_blocks)
        carried.name_carries()

    def zero_in_blocks(self, out) -> bool:
        """Whether the summed output ``out`` (an array the rows add into, not a partial sum) is large enough
        to be zeroed by the blocks in a parallel pass before the rows (``header``); if so, it is."""
        if out in self.partial or not out.aval.shape or \
                int(np.prod(out.aval.shape)) * out.aval.dtype.itemsize < ZERO_IN_BLOCKS_BYTES:
            return False
        self.zeroed.append(out)
        return True

    def header(self, index: list, row_start: list) -> list:
        """The lines before the body: sums' set-up, the parallel loop over the blocks, a block's rows (each
        starting with ``row_start``) and the loops inside a row."""
        shape, per, lines = self.node.params["shape"], self.per, []
        if self.zeroed:
            lines.append(f"for blk in prange({BLOCKS}):  # the arrays the rows add into, zeroed a block each")
            for out in self.zeroed:
                size = int(np.prod(out.aval.shape))
                chunk = -(-size // BLOCKS)
                lines.append(f"    {self.printer.names[out]}.reshape(-1)[blk * {chunk}:blk * {chunk} + {chunk}] = "
                             f"{literal_source(0, out.aval.dtype)}")
        for out, name in self.partial.items():
            lines.append(f"{name} = {self.printer.zeros(Aval((BLOCKS,) + out.aval.shape, out.aval.dtype))}")
        for out, name in self.carried.carry.items():
            lines.append(f"{name} = {self.printer.empty(Aval((BLOCKS, self.carried.reach[out]), out.aval.dtype))}")
        if self.sweeps:
            lines.append("for sweep in range(2):  # even blocks, then odd: rows add to their neighbours' elements")
            lines.append(f"    for half in prange({BLOCKS // 2}):")
            lines.append("        blk = 2 * half + sweep")
        else:
            lines.append(f"for blk in prange({BLOCKS}):")
        inside = "    " * self.depth
        lines.extend(f"{inside}{name} = {self.printer.zeros(out.aval)}" for out, name in self.local.items())
        lines.extend(inside + line for line in self.carried.start())
        # unsigned rows: Numba checks every signed subscript for a negative value (x[-1]), which LLVM can
        # drop only where it proves the index >= 0, as it does in range(n) but not from a block's start
        lines.append(f"{inside}for {index[0]} in range(np.uintp(blk * {per}), np.uintp({self.end})):")
        lines.extend(row_start)
        lines.extend(inside + "    " * d + f"for {index[d]} in range({n}):" for d, n in enumerate(shape) if d)
        self.printer.uses_prange = True
        return lines

    @property
    def end(self) -> str:
        """The end of block ``blk``'s rows, as an expression."""
        per = self.per
        return f"blk * {per} + {per}" if self.rows % BLOCKS == 0 else f"min(blk * {per} + {per}, {self.rows})"

    def target(self, out, at: list) -> tuple:
        """Where the loop adds to ``out`` what the serial loop adds at ``at``: (subscripts, name)."""
        if out in self.local:
            return [], self.local[out]
        if out in self.partial:
            return ["blk"] + at, self.partial[out]
        return at, self.printer.names[out]

    def footer(self) -> list:
        names = self.printer.names
        inside = "    " * self.depth
        lines = [f"{inside}{self.partial[out]}[blk] = {name}" for out, name in self.local.items()]
        lines.extend(inside + line for line in self.carried.block_end())
        if self.partial:
            lines.append("for blk in range(%d):  # the blocks' partial sums, in block order" % BLOCKS)
            lines.extend(f"    {names[out]} += {name}[blk]" for out, name in self.partial.items())
        return lines + self.carried.carried_over(self.end)

    def function(self, lines: list) -> list:
        """The loop's ``lines`` as a function of the module (``printer.functions``) taking the values the loop
        reads and the arrays it fills, and returning its scalar sums (``lines`` start them at zero); the
        line calling it."""
        names, node = self.printer.names, self.node
        sums = [out for out in node.outs if not out.aval.shape]
        params = list(dict.fromkeys([names[a] for a in node.inputs if isinstance(a, Var)] +
                                    [names[out] for out in node.outs if out.aval.shape]))
        name = self.printer.fresh_name(f"{self.printer.function}_loop{len(self.printer.functions) + 1}")
        returned = ", ".join(names[out] for out in sums)
        about = (f"# {self.rows} rows in {BLOCKS} blocks of {self.per} on Numba's threads "
                 "(np.uintp rows: no x[-1] check)")
        self.printer.functions.append((name, params, [about] + lines + ([f"return {returned}"] if sums else [])))
        call = f"{name}({', '.join(params)})"
        return [f"{returned} = {call}" if sums else call]


def _blocks(printer, node: Node, writes: list, carried: _Carried):
    """A loop nest as blocks of rows in parallel (``_Blocks``), or None: it stays serial when parallel= is
    off, the loop is small, or rows of blocks that are not neighbours may add to one element
    (``grad_x[2 * i0] += g``). Decided on the subscripts each ``add_at`` writes at (IR values): the row
    index ``i0`` itself (each row adds to elements of its own), ``i0 + c`` or ``i0 - c`` with ``c`` less
    than a block's rows (near a block's edge, its neighbour's), no ``i0`` at all (every row adds to the
    same elements: partial sums per block), or anything else (serial)."""
    shape, minimum = node.params["shape"], getattr(printer, "parallel_min", None)
    if minimum is None or int(np.prod(shape)) < minimum or shape[0] < BLOCKS * BLOCK_ROWS:
        return None
    if not all(printer.names[a].isidentifier() for a in node.inputs if isinstance(a, Var)):
        return None  # (a loop's body may spell a value as an expression: not a parameter of a function)
    body = node.params["body"]
    row, defs = body.inputs[0], {m.out: m for m in body.nodes}
    partial, shifted = [], set()
    for add, out in writes:
        at = add.inputs[1:]
        if row in at or out in carried:  # each row adds to elements of its own (or carried: each block's own)
            continue
        rows = [a for a in at if _reads(a, row, defs)]
        if not rows:  # every row adds to the same elements: partial sums per block
            if out not in partial:
                partial.append(out)
            continue
        shift = _row_offset(rows[0], row, defs) if len(rows) == 1 else None
        if shift is None or abs(shift) >= -(-shape[0] // BLOCKS):
            return None  # scaled (2 * i0), reversed (9 - i0), or shifted by a block or more: stays serial
        shifted.add(out)  # rows near a block's edge add to its neighbour's
    sweeps = bool(shifted - set(partial))  # (an output with partial sums per block is each block's own)
    if sweeps and BLOCKS % 2:
        return None  # (odd blocks cannot alternate)
    return _Blocks(printer, node, partial, sweeps, carried)


def _reads(atom, row: Var, defs: dict) -> bool:
    """Whether the index value ``atom`` depends on ``row``."""
    todo, seen = [atom], set()
    while todo:
        a = todo.pop()
        if a is row:
            return True
        if isinstance(a, Var) and a in defs and a not in seen:
            seen.add(a)
            todo.extend(defs[a].inputs)
    return False


def _row_offset(atom, row: Var, defs: dict):
    """``c`` when ``atom`` is ``row + c`` or ``row - c`` (an int constant), else None."""
    node = defs.get(atom) if isinstance(atom, Var) else None
    if node is None or node.primitive.name not in ("add", "sub"):
        return None
    a, b = node.inputs
    if a is row and isinstance(b, Literal):
        return b.value if node.primitive.name == "add" else -b.value
    if b is row and isinstance(a, Literal) and node.primitive.name == "add":
        return a.value
    return None


LOOP_COMMENT_SOURCE = 60  # characters of the user's line a loop's comment quotes at most


def _loop_comment(node: Node, names: dict) -> str:
    """What a loop nest computes, in one comment line above it: its outputs (``(sum)`` for one it adds up)
    and the user's line they come from, quoted, or the gradient of it (other lines the loop takes part of
    are named): ``# grad_b (sum), grad_s1: gradient of hidden = np.maximum(X @ W + b, 0.0)``. The lines are
    those of the array-level nodes it was lowered from (``origin``)."""
    members = node.params["origin"].nodes
    defs = {m.out: m for m in members}
    outs = ", ".join(names[v] + (" (sum)" if acc else "") for v, acc in zip(node.outs, node.params["accumulate"]))
    sources = []  # the outputs' lines first: the line the loop is for
    for member in [defs[v] for v in node.outs] + list(members):
        if member.source is not None and member.source not in sources:
            sources.append(member.source)
    text = ""
    if sources:
        line = sources[0].line.strip() or sources[0].short()  # (no text: code typed at a prompt, exec'd strings)
        line = line if len(line) <= LOOP_COMMENT_SOURCE else line[:LOOP_COMMENT_SOURCE - 3].rstrip() + "..."
        passes = frozenset(defs[v].backward for v in node.outs)
        text = {frozenset({False}): f": {line}", frozenset({True}): f": gradient of {line}",
                frozenset({False, True}): f": {line}, and its gradient"}[passes]
        others = [s.short() if s.filename != sources[0].filename else f"line {s.lineno}" for s in sources[1:]
                  if s.filename != sources[0].filename or not s.internal]  # (tracegrad's lines: no numbers)
        if others:
            text += f" (and {', '.join(others[:2])}{', ...' if len(others) > 2 else ''})"
    # on one line and in ASCII whatever the user's line holds (as codegen.comment_text; the source stays ASCII)
    return "".join(c if c.isascii() and c.isprintable() else ascii(c)[1:-1] for c in "# " + outs + text)


@primitive
class loop_nest:
    """a loop over the index space ``shape`` with independent iterations: each stores or adds up scalars its
    ``body`` computes from the index values"""
    usage = "(made by fusion: `for i0 in range(n):` around elementwise code)"
    backward = "(none: loop nests are made after differentiation)"
    shape = _shape
    ref = _ref
    vjp = _vjp
    jvp = _jvp
    array_level = staticmethod(lambda node: node.params["origin"].nodes)

    emit = Block(_render)
    label = staticmethod(lambda node: f"loop nest {node.params['shape']}")
