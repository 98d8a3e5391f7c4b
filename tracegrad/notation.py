"""Code notation: how generated code spells an operation (``Infix``, ``Prefix``, ``Block``), and the
subscripts a loop reads a broadcast array at. Primitives declare their ``emit`` with these; codegen and the
fusion pass read them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


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
class Block:
    """A statement that holds other statements (a loop): ``render(printer, node, args)`` returns the lines
    ``(code, note)`` of the whole block, asking ``printer`` for the lines of its nested graph."""

    render: Callable



def broadcast_subscripts(loop: list, out_shape: tuple, in_shape: tuple) -> list:
    """Subscripts reading an array of ``in_shape``, broadcast to ``out_shape``, at the loop indices
    ``loop``: size-1 axes read element 0, missing leading axes are dropped."""
    lead = len(out_shape) - len(in_shape)
    return ["0" if d == 1 and out_shape[lead + k] != 1 else loop[lead + k] for k, d in enumerate(in_shape)]

