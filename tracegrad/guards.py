"""Python source for guards: the per-call checks that arguments have exactly the structure, classes,
dtypes and shapes a compiled function was made for, and the code that takes them apart and builds
results again.

A guard is written once per specialisation and compiled with ``exec``: a check per container and per
leaf (``x.__class__ is dict and len(x) == 2``, ``w.dtype is dtype0 and w.shape == (3, 4)``) costs far
less than flattening the arguments and building a key for a dictionary look-up.

>>> from tracegrad.pytree import flatten
>>> writer = GuardWriter()
>>> leaves = writer.unpack("params", flatten({"b": 0.0, "W": None})[1])
>>> print(writer.body("    "), end="")
    if not (params.__class__ is dict and len(params) == 2 and params[k2] is None):
        raise Mismatch
    n0 = params[k3]
>>> leaves
['n0']
"""
from __future__ import annotations

from itertools import count

import numpy as np

from .pytree import TreeDef, new_dataclass


class Mismatch(Exception):
    """Raised inside a guard when its arguments are not the ones it was made for."""


_CONTAINERS = {"tuple": "tuple", "list": "list", "dict": "dict"}


class GuardWriter:
    """Statements that check values and bind their parts to names, and the namespace they need.

    Checks accumulate into one ``if not (a and b and ...): raise Mismatch``, written out before the next
    binding: a container is checked before it is indexed. Indexing a dict with a key it lacks raises
    ``KeyError``; a guard catches ``(Mismatch, LookupError)``."""

    def __init__(self):
        self.env: dict = {"ndarray": np.ndarray, "Mismatch": Mismatch}
        self.lines: list = []
        self._conditions: list = []
        self._names = count()

    def check(self, condition: str) -> None:
        self._conditions.append(condition)

    def flush(self) -> None:
        if self._conditions:
            self.lines.append(f"if not ({' and '.join(self._conditions)}):")
            self.lines.append("    raise Mismatch")
            self._conditions.clear()

    def bind(self, expression: str) -> str:
        """A new local name for ``expression``, evaluated after the checks so far."""
        self.flush()
        name = f"n{next(self._names)}"
        self.lines.append(f"{name} = {expression}")
        return name

    def constant(self, value, prefix: str = "k") -> str:
        """A name for ``value`` in the guard's namespace (dict keys need not be strings)."""
        name = f"{prefix}{len(self.env)}"  # the namespace grows by one each time: a new name
        self.env[name] = value
        return name

    def unpack(self, name: str, tree: TreeDef) -> list:
        """Check that ``name`` has the structure ``tree``; the names of its leaves, in flatten order."""
        if tree.kind == "leaf":
            return [name]
        if tree.kind == "none":
            self.check(f"{name} is None")
            return []
        if tree.kind == "dataclass":  # its class fixes its fields: read each as an attribute
            self.check(f"{name}.__class__ is {self.constant(tree.meta[0], 'cls')}")
            items = [f"{name}.{field}" for field in tree.meta[1]]
        else:
            cls = self.constant(tree.meta, "cls") if tree.kind == "namedtuple" else _CONTAINERS[tree.kind]
            self.check(f"{name}.__class__ is {cls} and len({name}) == {len(tree.children)}")
            keys = [self.constant(k) for k in tree.meta] if tree.kind == "dict" else range(len(tree.children))
            items = [f"{name}[{key}]" for key in keys]
        leaves = []
        for item, child in zip(items, tree.children):
            leaves += self.unpack(item if child.kind == "none" else self.bind(item), child)
        return leaves

    def check_array(self, name: str, dtype, shape: tuple) -> None:
        """``name`` is exactly an ndarray of ``dtype`` and ``shape``."""
        d = self.constant(dtype, "dtype")
        # NumPy's own arrays share one dtype object per type; arrays Numba made may hold an equal copy
        self.check(f"{name}.__class__ is ndarray and ({name}.dtype is {d} or {name}.dtype == {d}) "
                   f"and {name}.shape == {shape!r}")

    def body(self, indent: str) -> str:
        self.flush()
        return "".join(f"{indent}{line}\n" for line in self.lines)

    def tree_expression(self, tree: TreeDef, leaves) -> str:
        """An expression building a pytree of structure ``tree`` from the expressions ``leaves`` (an iterator)."""
        if tree.kind == "leaf":
            return next(leaves)
        if tree.kind == "none":
            return "None"
        children = [self.tree_expression(child, leaves) for child in tree.children]
        if tree.kind == "dict":
            return "{" + ", ".join(f"{self.constant(k)}: {c}" for k, c in zip(tree.meta, children)) + "}"
        if tree.kind == "list":
            return "[" + ", ".join(children) + "]"
        if tree.kind == "namedtuple":
            return f"{self.constant(tree.meta, 'cls')}({', '.join(children)})"
        if tree.kind == "dataclass":
            self.env.setdefault("new_dataclass", new_dataclass)
            return (f"new_dataclass({self.constant(tree.meta[0], 'cls')}, {self.constant(tree.meta[1])}, "
                    f"({''.join(c + ', ' for c in children)}))")
        return "(" + "".join(c + ", " for c in children) + ")"
