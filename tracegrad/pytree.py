"""Flatten and unflatten pytrees: nested tuples, lists, dicts, namedtuples and dataclasses with array or
scalar leaves.

Follows JAX's conventions: ``None`` is an empty subtree, dict keys are visited in sorted order, a
namedtuple's fields and a dataclass's fields in the order the class declares them, and anything else is a
leaf. A namedtuple is rebuilt by calling its class; a dataclass without calling ``__init__`` or
``__post_init__`` (its fields are set as they were flattened, traced values included), frozen or not.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .errors import GradTypeError


class TreeDef:
    """The structure of a pytree without its leaves; hashable, so it can key a cache."""

    __slots__ = ("kind", "meta", "children", "_hash")

    def __init__(self, kind: str, meta: Any = None, children: tuple = ()):
        self.kind = kind  # "leaf", "none", "tuple", "list", "dict", "namedtuple" or "dataclass"
        self.meta = meta  # the sorted keys of a dict; the class of a namedtuple; (class, field names) of a dataclass
        self.children = children
        self._hash = hash((kind, meta, children))

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)

    def __eq__(self, other):
        return (
            isinstance(other, TreeDef)
            and self._hash == other._hash
            and (self.kind, self.meta, self.children) == (other.kind, other.meta, other.children)
        )

    def __hash__(self):
        return self._hash

    def __repr__(self):
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind == "tuple":
            return f"({inner}{',' if len(self.children) == 1 else ''})"
        if self.kind == "list":
            return f"[{inner}]"
        if self.kind == "namedtuple":
            return f"{self.meta.__name__}({inner})"
        if self.kind == "dataclass":
            return f"{self.meta[0].__name__}(" + ", ".join(f"{k}={c!r}" for k, c in zip(self.meta[1], self.children)) + ")"
        return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children)) + "}"


LEAF = TreeDef("leaf")
_NONE = TreeDef("none")


MAX_DEPTH = 100  # tuples, lists and dicts nested deeper than this are refused (a cycle would be endless)


def flatten(tree: Any) -> tuple[list, TreeDef]:
    """Return the leaves of ``tree`` in order, and its structure.

    Raises ``GradTypeError`` for containers nested more than ``MAX_DEPTH`` levels deep (or containing
    themselves): the structure is a cache key, compared and printed recursively."""
    leaves: list = []
    return leaves, _flatten(tree, leaves, 0)


_PLAIN_LEAVES = frozenset([np.ndarray, float, int, bool])  # leaves for certain: no container checks


def _flatten(tree, leaves, depth) -> TreeDef:
    kind = type(tree)
    if kind in _PLAIN_LEAVES:
        leaves.append(tree)
        return LEAF
    if tree is None:
        return _NONE
    container = kind is tuple or kind is list or kind is dict
    if not container and (is_namedtuple(tree) or is_dataclass_instance(tree)):
        container = True
    if container:
        if depth == MAX_DEPTH:
            raise GradTypeError(f"a pytree (the arguments or results: tuples, lists and dicts inside each other) is "
                                f"nested more than {MAX_DEPTH} levels deep, or contains itself",
                                hint="pass deep data as NumPy arrays (np.array of the nested lists), or flatten it")
        if kind is dict:
            keys = _sorted_keys(tree)
            return TreeDef("dict", keys, tuple([_flatten(tree[k], leaves, depth + 1) for k in keys]))
        if kind is tuple or kind is list:
            return TreeDef(kind.__name__, None, tuple([_flatten(child, leaves, depth + 1) for child in tree]))
        if isinstance(tree, tuple):
            return TreeDef("namedtuple", kind, tuple([_flatten(child, leaves, depth + 1) for child in tree]))
        names = field_names(kind)
        return TreeDef("dataclass", (kind, names),
                       tuple([_flatten(getattr(tree, name), leaves, depth + 1) for name in names]))
    leaves.append(tree)
    return LEAF


def is_namedtuple(value) -> bool:
    """A namedtuple (``collections.namedtuple`` or ``typing.NamedTuple``): a tuple whose class has ``_fields``."""
    return isinstance(value, tuple) and type(value) is not tuple and isinstance(getattr(type(value), "_fields", None),
                                                                                  tuple)


def is_dataclass_instance(value) -> bool:
    """An instance (not the class) of a ``@dataclasses.dataclass``."""
    return hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type)


def field_names(cls) -> tuple:
    """A dataclass's fields, in the order the class declares them."""
    return tuple(f.name for f in dataclasses.fields(cls))


def new_dataclass(cls, names, values):
    """An instance of the dataclass ``cls`` with its fields ``names`` set to ``values``, without calling
    ``__init__`` (frozen dataclasses too)."""
    obj = object.__new__(cls)
    for name, value in zip(names, values):
        object.__setattr__(obj, name, value)
    return obj


def _sorted_keys(tree: dict) -> tuple:
    try:
        return tuple(sorted(tree))
    except TypeError:
        kinds = sorted({type(k).__name__ for k in tree})
        raise GradTypeError(f"a dict in the arguments has keys that cannot be sorted together ({', '.join(kinds)}): "
                            "tracegrad visits dict entries in sorted key order",
                            hint="use keys of one kind, e.g. all strings") from None


def unflatten(treedef: TreeDef, leaves) -> Any:
    """Rebuild a pytree of structure ``treedef`` from ``leaves``."""
    it = iter(leaves)
    tree = _unflatten(treedef, it)
    return tree


def _unflatten(treedef, it):
    kind = treedef.kind
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    children = [_unflatten(child, it) for child in treedef.children]
    if kind == "tuple":
        return tuple(children)
    if kind == "list":
        return children
    if kind == "namedtuple":
        return treedef.meta(*children)
    if kind == "dataclass":
        return new_dataclass(*treedef.meta, children)
    return dict(zip(treedef.meta, children))


def leaf_paths(tree: Any, prefix: str) -> list[str]:
    """Readable names for the leaves of ``tree``: ``params`` → ``params_W``, ``params_0``, ..."""
    names: list[str] = []

    def walk(node, name):
        if node is None:
            return
        if type(node) in (tuple, list):
            for i, child in enumerate(node):
                walk(child, f"{name}_{i}")
        elif type(node) is dict:
            for key in _sorted_keys(node):
                walk(node[key], f"{name}_{key}")
        elif is_namedtuple(node):
            for key, child in zip(type(node)._fields, node):
                walk(child, f"{name}_{key}")
        elif is_dataclass_instance(node):
            for key in field_names(type(node)):
                walk(getattr(node, key), f"{name}_{key}")
        else:
            names.append(name)

    walk(tree, prefix)
    return names
