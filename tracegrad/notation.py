"""Code notation: how generated code spells an operation (``Infix``, ``Prefix``, ``Conditional``, ``Block``),
the subscripts a loop reads a broadcast array at, which temporaries are written inline, and how labels write constants and indices. Primitives declare their
``emit`` and ``label`` with these; codegen, the fusion pass and ``draw`` read them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Infix:
    """A binary operator template: ``{x} op {y}`` with Python precedence ``prec``.

    ``assoc`` is "left" (``a - b - c``), "right" (``a ** b ** c``) or "none" (comparisons, never chained).
    """

    op: str
    prec: int
    assoc: str = "left"


@dataclass(frozen=True)
class Prefix:
    """A unary operator template: ``op{x}``."""

    op: str
    prec: int


@dataclass(frozen=True)
class Conditional:
    """Python's conditional expression ``{x} if {c} else {y}``, for a primitive of three scalar inputs
    ``(c, x, y)``: a choice read as it is, with no kernel to look up. It works on scalars only, so on
    arrays it is computed in a loop, one element at a time, like a scalar kernel."""


@dataclass(frozen=True)
class Block:
    """A statement that holds other statements (a loop): ``render(printer, node, args)`` returns the lines
    ``(code, note)`` of the whole block, asking ``printer`` for the lines of its nested graph."""

    render: Callable



def broadcast_subscripts(loop: list, out_shape: tuple, in_shape: tuple) -> list:
    """Subscripts reading an array of ``in_shape``, broadcast to ``out_shape``, at the loop's index values
    ``loop``: size-1 axes read element 0 (the int), missing leading axes are dropped."""
    lead = len(out_shape) - len(in_shape)
    return [0 if d == 1 and out_shape[lead + k] != 1 else loop[lead + k] for k, d in enumerate(in_shape)]


def inlinable(node, uses: dict, consumer_group: dict) -> bool:
    """A temporary of a VJP (or JVP) rule, used once, by the same rule: codegen writes it inside its user's
    expression (``grad_s3 = grad_L * (1 - L) * L``) instead of as a statement of its own."""
    out = node.out
    return (node.group is not None and uses.get(out) == 1 and out.hint is None and out.grad_of is None
            and out.tangent_of is None and consumer_group.get(out) == node.group)


def number_text(value, precision=6) -> str:
    """A constant as pictures and labels show it: ints as ints, floats to ``precision`` digits."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = f"{float(value):.{precision}g}"
    return "0" if text == "-0" and precision < 6 else text


def index_text(index) -> str:
    """An index as written in brackets: ``[1:, None, ...]``."""
    parts = []
    for entry in index:
        if entry is None:
            parts.append("None")
        elif entry is Ellipsis:
            parts.append("...")
        elif isinstance(entry, slice):
            start = "" if entry.start is None else entry.start
            stop = "" if entry.stop is None else entry.stop
            parts.append(f"{start}:{stop}" + (f":{entry.step}" if entry.step not in (None, 1) else ""))
        else:
            parts.append(repr(entry))
    return "[" + ", ".join(parts) + "]"
