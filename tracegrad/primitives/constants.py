"""Integer ranges the traced function makes itself (``np.arange(n)``, as in ``logp[np.arange(n), labels]``).

Such an array reaches the graph as a constant the trace holds (not an array read from your variables at
each call): the generated code computes it (``s0 = np.arange(8)``) instead of taking it as a hidden
argument that a ``.dispatcher`` caller would have to supply. Which arrays: those the trace holds that are
int64 ranges, decided by value, so the same function always gives the same code. Changing such an array
in place after tracing (no name of yours reads it) is not seen.
"""
from __future__ import annotations

import numpy as np

from ..registry import primitive
from ..ir import Aval


class ConstantArray:
    """An int64 range as a node parameter: hashable, compared by value, printed as the code writes it."""

    __slots__ = ("start", "stop", "step")

    def __init__(self, start: int, stop: int, step: int):
        self.start, self.stop, self.step = start, stop, step

    @staticmethod
    def of(value) -> "ConstantArray | None":
        """The range ``value`` is (an int64 vector ``np.arange(start, stop, step)``), else None."""
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.int64 or value.size < 2:
            return None
        start, step = int(value[0]), int(value[1] - value[0])
        stop = start + step * value.size
        if step == 0 or not np.array_equal(value, np.arange(start, stop, step)):
            return None
        return ConstantArray(start, stop, step)

    @property
    def array(self) -> np.ndarray:
        return np.arange(self.start, self.stop, self.step)

    def source(self) -> str:
        args = ([self.stop] if self.start == 0 and self.step == 1 else
                [self.start, self.stop] if self.step == 1 else [self.start, self.stop, self.step])
        return f"np.arange({', '.join(map(str, args))})"

    def _key(self):
        return self.start, self.stop, self.step

    def __eq__(self, other):
        return isinstance(other, ConstantArray) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return self.source()


@primitive
class constant:
    """an integer range the traced function made itself, computed by the generated code (``np.arange(8)``)"""
    shape = staticmethod(lambda value: Aval((len(range(value.start, value.stop, value.step)),), np.dtype(np.int64)))
    emit = staticmethod(lambda args, out, value: value.source())
    nondiff = True
    usage = "`np.arange(n)` made inside the function (by you or a library): the code computes it"
    label = staticmethod(lambda node: node.params["value"].source())

    def ref(value):
        return value.array
