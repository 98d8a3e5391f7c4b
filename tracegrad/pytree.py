"""Flatten and unflatten pytrees: nested tuples, lists and dicts with array or scalar leaves.

Follows JAX's conventions: ``None`` is an empty subtree, dict keys are visited in sorted order,
and anything that is not a tuple, list or dict is a leaf.
"""
from __future__ import annotations

from typing import Any

from .errors import GradTypeError


class TreeDef:
    """The structure of a pytree without its leaves; hashable, so it can key a cache."""

    __slots__ = ("kind", "meta", "children", "_hash")

    def __init__(self, kind: str, meta: Any = None, children: tuple = ()):
        self.kind = kind  # "leaf", "none", "tuple", "list" or "dict"
        self.meta = meta  # the sorted keys of a dict
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


def _flatten(tree, leaves, depth) -> TreeDef:
    if tree is None:
        return _NONE
    kind = type(tree)
    if kind is tuple or kind is list or kind is dict:
        if depth == MAX_DEPTH:
            raise GradTypeError(f"a pytree (the arguments or results: tuples, lists and dicts inside each other) is "
                                f"nested more than {MAX_DEPTH} levels deep, or contains itself",
                                hint="pass deep data as NumPy arrays (np.array of the nested lists), or flatten it")
        if kind is dict:
            keys = _sorted_keys(tree)
            return TreeDef("dict", keys, tuple([_flatten(tree[k], leaves, depth + 1) for k in keys]))
        return TreeDef(kind.__name__, None, tuple([_flatten(child, leaves, depth + 1) for child in tree]))
    leaves.append(tree)
    return LEAF


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
        else:
            names.append(name)

    walk(tree, prefix)
    return names
