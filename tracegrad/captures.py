"""Where a traced function's outside arrays live, so that each call reads them again.

The tracer swaps the arrays a function names (its closure, its globals, its helpers') for inputs with a
reader each. For the other arrays a trace captures, this module finds a way to read them at every call:
a short path from a container the function names (``self.W``, ``PARAMS["W"]``, ``self.layers[0].b``),
else the module or class that keeps them under a name; it warns about one it cannot follow.
"""
from __future__ import annotations

import functools
import gc
import os
import sys
import sysconfig
import types
import warnings

import numpy as np

from .core import TracedArray
from .errors import TracegradError, _is_internal


def is_users_function(fn) -> bool:
    """A function of the user's own (not tracegrad's, NumPy's, the standard library's or an installed
    package's): the tracer follows calls into it."""
    return is_users_file(fn.__code__.co_filename)


def is_users_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return False
    return not _is_internal(filename) and not os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def _library_dirs() -> tuple:
    paths = sysconfig.get_paths()
    return tuple(os.path.join(os.path.abspath(paths[key]), "") for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if key in paths)


_LIBRARY_DIRS = _library_dirs()


# Arrays reached through containers are looked for this deep (self.layers[0].W is 3), among this many values
PATH_DEPTH, PATH_BUDGET = 3, 5000


def searchable(value) -> bool:
    """A value the path search looks into: a dict, list or tuple, one of the user's own modules, or a plain
    object (not a class, function or array) with a ``__dict__``."""
    if type(value) in (dict, list, tuple):
        return True
    if isinstance(value, types.ModuleType):
        filename = getattr(value, "__file__", None)
        return isinstance(filename, str) and is_users_file(filename)
    if isinstance(value, (np.ndarray, np.generic, type, types.FunctionType, functools.partial,
                          TracedArray, str, bytes, int, float, complex)):
        return False
    try:
        return type(getattr(value, "__dict__", None)) is dict
    except Exception:  # a proxy whose attribute look-up raises: not looked into
        return False


def _children(value):
    """(step, child) pairs of a searchable value: dict entries, items, attributes."""
    if type(value) is dict:
        return ((("item", key), child) for key, child in value.items())
    if type(value) in (list, tuple):
        return ((("item", i), child) for i, child in enumerate(value))
    return ((("attr", name), child) for name, child in vars(value).items())


def path_readers(targets: dict, roots: list) -> dict:
    """Readers for arrays the trace held (``targets``: id -> array) that it can find again, at every call,
    through the containers the traced functions read by name: ``self.W``, ``PARAMS["W"]``,
    ``self.layers[0].W``. Breadth first, so the shortest path wins; the search is bounded (``PATH_DEPTH``,
    ``PATH_BUDGET`` values looked at). Arrays it does not find stay as they were traced (held by reference).
    Returns {id: (reader, the last key of its path)}."""
    found: dict = {}
    if not targets:
        return found
    queue, seen, budget = [(read, value, (name,)) for read, value, name in roots], set(), PATH_BUDGET
    for depth in range(PATH_DEPTH):
        next_queue = []
        for read, value, path in queue:
            if id(value) in seen:
                continue
            seen.add(id(value))
            for step, child in _children(value):
                budget -= 1
                if budget < 0:
                    return found
                key = id(child)
                if key in targets and key not in found and child is targets[key]:
                    found[key] = (_path_reader(read, path + (step,)), step[1])
                    if len(found) == len(targets):
                        return found
                elif depth + 1 < PATH_DEPTH and searchable(child):
                    next_queue.append((read, child, path + (step,)))
        queue = next_queue
    return found


class HeldArrayWarning(UserWarning):
    """A traced function reads an array that tracegrad cannot read again at each call (kept deep inside
    the user's dicts): in-place changes are seen, rebinding it is not."""


def _modules() -> list:
    """``sys.modules``'s items, taken while another thread may be importing (tracegrad's loader thread)."""
    for _ in range(100):
        try:
            return list(sys.modules.items())
        except RuntimeError:  # changed size during the copy: take it again
            continue
    return list(dict(sys.modules).items())


def owner_readers(unread: dict, builder) -> dict:
    """Readers for arrays of ``unread`` (id -> array: held, not found by the path search) that a module of
    the user's own or a class keeps under a name (a global of a function called through a dict, ``Cls.W``):
    those are read at every call too. For one some other dict keeps under a name (deeper than the search),
    a ``HeldArrayWarning`` at the user's line says rebinding it will not be seen (lists are not looked at:
    tracegrad's own lists of captured values would be mistaken for the user's).

    Arrays only the trace holds were created while tracing (``np.arange(n)``), and tuples cannot be rebound
    into: neither is worth a word. Reference counts spare the heap search (``gc.get_referrers``) in the
    common case. Best effort: the collector does not track a dict holding only arrays and strings, so an
    array deep inside such dicts stays held without a word."""
    if not unread:
        return {}
    # a probe with the references each array of `unread` has here: a (var, array) pair, a dict, a list
    holders = [(None, np.empty(0))]
    holders.append({0: holders[0][1]})
    baseline = _reference_counts([holders[0][1]])[0]
    values = list(unread.values())
    suspects = [value for value, count in zip(values, _reference_counts(values)) if count > baseline]
    del values
    if not suspects:
        return {}
    ours = {id(unread), id(builder.captured), id(suspects)} | {id(n.params) for n in builder.nodes}
    modules = {}  # id(a module's globals) -> its name, and None for tracegrad's, NumPy's and libraries'
    for name, module in _modules():
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            modules[id(vars(module))] = name if is_users_file(filename) else None
    readers, warned = {}, set()
    for referrer in gc.get_referrers(*suspects):
        if type(referrer) is not dict or id(referrer) in ours or modules.get(id(referrer), "") is None:
            continue
        for key, value in list(referrer.items()):
            if not isinstance(key, str):  # a cache keyed by arguments, not a name
                continue
            if not any(value is v for v in suspects) or id(value) in readers:
                continue
            owner = modules.get(id(referrer)) or _class_of(referrer, key, value)
            if isinstance(owner, str):  # a module's global
                readers[id(value)] = _path_reader(lambda globals_=referrer: globals_, (owner, ("item", key)))
            elif owner is not None:  # a class attribute
                readers[id(value)] = _path_reader(lambda cls=owner: cls, (owner.__qualname__, ("attr", key)))
            elif id(value) not in warned and not _tracegrads(referrer):
                warned.add(id(value))
                _warn_held_array(builder, value, f"dict entry {key!r}")
    return readers


def _tracegrads(dictionary) -> bool:
    """Whether ``dictionary`` holds the globals of code tracegrad generated (a guard keeping the arrays its
    specialisation passes on)."""
    return any(isinstance(referrer, types.FunctionType) and referrer.__globals__ is dictionary
               and referrer.__code__.co_filename.startswith("<tracegrad") for referrer in gc.get_referrers(dictionary))


def _class_of(dictionary, key, value):
    """The class whose attribute dictionary ``dictionary`` is, if any."""
    for referrer in gc.get_referrers(dictionary):
        if isinstance(referrer, type) and referrer.__dict__.get(key) is value:
            return referrer
    return None


_WARNED: set = set()  # (file, line, message) of each HeldArrayWarning given


def _warn_held_array(builder, value, where):
    var = builder._captured_ids[id(value)]
    use = next((n.source for n in builder.nodes if var in n.inputs and n.source), None)
    message = (f"{builder.name} reads an array ({var.aval}) kept in a {where} that tracegrad cannot read again "
               f"at each call (deeper than {PATH_DEPTH} steps from a name the function uses): in-place changes "
               f"are seen, but rebinding it is not. Pass it as an argument, or keep it in a global, a closure "
               f"variable or an attribute of self")
    key = (use.filename, use.lineno, message) if use is not None else (None, 0, message)
    if key in _WARNED:  # once per line and message in a process (Numba's compiling resets warnings' own registry)
        return
    _WARNED.add(key)
    if use is not None:
        warnings.warn_explicit(message, HeldArrayWarning, use.filename, use.lineno)
    else:
        warnings.warn(message, HeldArrayWarning, stacklevel=5)


def _reference_counts(values: list) -> list:
    return [sys.getrefcount(value) for value in values]


def _path_reader(read_root, path):
    def read():
        value = read_root()
        for kind, key in path[1:]:
            try:
                value = value[key] if kind == "item" else getattr(value, key)
            except (KeyError, IndexError, AttributeError, TypeError) as exc:
                raise TracegradError(f"an array the traced function read while tracing, at "
                                     f"{_spell(path)}, cannot be read any more ({type(exc).__name__}: {exc})",
                                     hint="keep it where the function reads it, or pass it as an argument") from None
        return value
    return read


def _spell(path) -> str:
    return path[0] + "".join(f"[{key!r}]" if kind == "item" else f".{key}" for kind, key in path[1:])
