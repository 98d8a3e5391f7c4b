"""Run a user's Python function on traced values and record it as a ``Graph``.

Arrays the function reads from its closure or globals, and those of the user's helpers it calls by
name, become extra graph inputs that are read again on every call (so an in-place change or a rebinding
is seen), never constants baked into the code; ``captures`` finds how to read the other arrays a trace
captures. ``math`` functions in those globals are swapped for versions that accept traced scalars. The
names the function gives its local variables become the names of the values they hold.
"""
from __future__ import annotations

import functools
import inspect
import math
import pickle
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import primitives  # noqa: F401  (registers the primitives)
from .captures import is_users_function, owner_readers, path_readers, searchable
from .core import COMPLEX_HINT, MATH_FUNCTIONS, MODULE_FUNCTIONS, Builder, TracedArray, _to_atom
from .errors import GradTypeError, TracegradError, TracingError, UnsupportedError, raised_at, user_source
from .ir import Aval, Graph, Literal, Node, Var, is_valid_name
from .primitives.assign import as_array, contains_traced
from .primitives.constants import ConstantArray, constant
from .pytree import TreeDef, flatten, leaf_paths, unflatten


# What the compiled code computes with: native-order bools, integers and float32/float64 (no float16,
# longdouble, big-endian data, np.matrix or masked arrays, whose semantics or layout differ).
_COMPILABLE = frozenset(np.dtype(t) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                                 np.uint16, np.uint32, np.uint64, np.float32, np.float64))


def aval_of(leaf) -> Aval:
    """The abstract value of one argument leaf; raises for what cannot be traced."""
    if isinstance(leaf, TracedArray):  # an argument from an enclosing trace (grad of grad)
        return leaf.aval
    if isinstance(leaf, bool):
        return Aval((), np.bool_)
    if isinstance(leaf, int):
        return Aval((), np.int64)
    if isinstance(leaf, float):
        return Aval((), np.float64)
    if (type(leaf) is np.ndarray or isinstance(leaf, np.generic)) and leaf.dtype in _COMPILABLE:
        return Aval(leaf.shape, leaf.dtype)
    if isinstance(leaf, complex) or isinstance(getattr(leaf, "dtype", None), np.dtype) and leaf.dtype.kind == "c":
        raise GradTypeError(f"complex numbers are not supported yet: an argument of type {type(leaf).__name__}"
                            + (f" and dtype {leaf.dtype}" if hasattr(leaf, "dtype") else ""), hint=COMPLEX_HINT)
    raise GradTypeError(
        f"cannot trace an argument of type {type(leaf).__name__}"
        + (f" and dtype {leaf.dtype}" if hasattr(leaf, "dtype") else ""),
        hint="arguments must be floats, ints, NumPy arrays, or tuples/lists/dicts of them")


@dataclass
class Capture:
    """An array the traced function reads without receiving it as an argument."""

    var: Var
    read: Callable[[], Any]  # returns the array to pass on this call
    held: bool = False  # a constant the trace created (np.arange(n)), not a closure cell or global: never changes

    def current(self):
        value = self.read()
        if isinstance(value, TracedArray):
            return value
        value = np.asarray(value)
        return value[()] if value.ndim == 0 else value  # 0-d values are scalars in compiled code


@dataclass
class Traced:
    """The result of tracing: the graph, how its inputs and outputs map to pytrees, and its captures."""

    graph: Graph
    in_tree: TreeDef
    out_tree: TreeDef
    captures: list


def arg_names(fn, args) -> list[str]:
    """One readable name per flattened leaf of ``args``, from the function's parameter names."""
    names = []
    for base, arg in zip(_parameter_names(fn, len(args)), args):
        names.extend(leaf_paths(arg, base))
    return names


def _parameter_names(fn, n) -> list[str]:
    """The names of ``fn``'s first ``n`` positional parameters (``arg<i>`` past those it declares)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]


def trace(fn, args: tuple, name: str | None = None) -> Traced:
    """Trace ``fn(*args)`` into a graph. Only the shapes and dtypes of ``args`` matter."""
    leaves, in_tree = flatten(args)
    avals = [aval_of(leaf) for leaf in leaves]
    names = arg_names(fn, args)
    with Builder(name or getattr(fn, "__name__", "f")) as builder:
        inputs = [builder.new_input(aval, hint) for aval, hint in zip(avals, names)]
        input_vars = [t.var for t in inputs]  # (x[0] = v in the function gives x another value: not an input)
        it = iter(inputs)
        traced_args = _rebuild(args, it)
        preparer = _Preparer(builder)
        prepared = preparer.prepare(fn)
        random_states = _random_states(fn, preparer.roots)
        try:
            result, local_names = _call_recording_locals(prepared, traced_args, builder)
        except (TypeError, TracegradError) as exc:  # list + 1, None * x ...: say which argument was not an array
            explained = _explained(exc, container_note(fn, args), builder.name)
            if explained is None:
                raise
            raise explained from None
        _check_random_states(random_states, builder.name)
        out_leaves, out_tree = flatten(result)
        outputs = [_output_atom(leaf, builder) for leaf in out_leaves]
    for var, hint in local_names.items():
        if var.hint is None:
            var.hint = hint
    captures, constants = _captures(builder, preparer.roots)
    graph = Graph(builder.name, input_vars + [c.var for c in captures], constants + builder.nodes,
                  outputs, n_args=len(inputs))
    return Traced(graph, in_tree, out_tree, captures)


def _captures(builder, roots) -> tuple[list[Capture], list[Node]]:
    """How each captured array is read on a call: the readers the preparation made (closures, globals),
    else a path from ``roots`` or the module or class keeping it (``captures``), else the array itself;
    and, for such arrays that are integer ranges (``np.arange(n)``, made in your code or a library's), a
    node computing the range in the code instead."""
    readers = dict(builder.readers)
    unread = {id(value): value for _, value in builder.captured
              if id(value) not in readers and type(value) is np.ndarray}
    found = path_readers(unread, roots)
    for key, (read, name) in found.items():
        readers[key] = read
        var = builder._captured_ids[key]
        if var.hint is None and isinstance(name, str) and is_valid_name(name):
            var.hint = name  # self.W is named W
        del unread[key]
    readers.update(owner_readers(unread, builder))
    captures, constants = [], []
    for var, value in builder.captured:
        if id(value) in readers:
            captures.append(Capture(var, readers[id(value)]))
            continue
        written = ConstantArray.of(value)  # a range (np.arange(n)) the code can compute itself
        if written is None:
            captures.append(Capture(var, _holder(value), True))
        else:
            use = next((node.source for node in builder.nodes if var in node.inputs and node.source), None)
            constants.append(Node(constant, (), dict(value=written), var, use))
    return captures, constants


def _explained(exc, note, name):
    """``exc`` (raised while tracing ``name``) again with ``note`` on arguments that are pytrees or None,
    when it is the kind of error such an argument causes; else None."""
    if note is None:
        return None
    if type(exc) is UnsupportedError or type(exc) is TracingError and exc.message.startswith("conversion to"):
        return type(exc)(f"{exc.message}\n  {note}", exc.source, exc.hint)
    if isinstance(exc, TypeError) and not isinstance(exc, TracegradError):
        return GradTypeError(f"{name} raised TypeError while tracing: {exc}\n  {note}", raised_at(exc),
                             hint="pass np.array(...) where the function expects an array")
    return None


def container_note(fn, args) -> str | None:
    """What to tell the user about arguments that are pytrees (or None) rather than arrays, if any."""
    names = _parameter_names(fn, len(args))
    notes = []
    for name, arg in zip(names, args):
        if arg is None:
            notes.append(f"argument {name!r} is None: it is traced as an empty pytree, with no value in it")
        elif type(arg) in (tuple, list, dict):
            notes.append(f"argument {name!r} is a {type(arg).__name__}: tracegrad traces a {type(arg).__name__} "
                         f"as a pytree, one traced value per entry, not as an array")
    return "; ".join(notes) or None


def _rebuild(tree, it):
    leaves, treedef = flatten(tree)
    return unflatten(treedef, [next(it) for _ in leaves])


def _holder(value):
    return lambda: value


def _output_atom(leaf, builder):
    if isinstance(leaf, TracedArray) and leaf.builder is builder:
        return leaf.var
    if isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic):
        return Literal(leaf, np.result_type(leaf))
    if not isinstance(leaf, (TracedArray, np.ndarray, np.generic)):
        raise GradTypeError(f"{builder.name} returned a {type(leaf).__name__}: a traced function returns numbers, "
                            f"arrays, or tuples, lists and dicts of them")
    return _to_atom(leaf, builder)


# ---------------------------------------------------------------- closures, globals and math


class _TracingMath(types.ModuleType):
    """Stands in for the ``math`` module inside a traced function: traced scalars go to the primitives."""

    def __getattr__(self, name):
        return _math_shim(getattr(math, name))


def _math_shim(fn):
    impl = MATH_FUNCTIONS.get(fn)
    if impl is None:
        if not callable(fn):
            return fn

        def unsupported(*args, **kwargs):
            if any(isinstance(a, TracedArray) for a in args):
                raise UnsupportedError(f"math.{fn.__name__} is not supported on traced values",
                                       hint="use the NumPy function of the same name")
            return fn(*args, **kwargs)
        return unsupported

    def shim(*args):
        if any(isinstance(a, TracedArray) for a in args):
            return impl(*args)
        return fn(*args)
    shim.__name__ = fn.__name__
    return shim


_MATH_MODULE = _TracingMath("math")


# ---------------------------------------------------------------- numpy and scipy: what NumPy does not dispatch


class _TracingModule(types.ModuleType):
    """Stands in for ``numpy`` (or ``scipy``, ``scipy.special``, ``scipy.stats``) inside a traced function:
    the functions NumPy does not dispatch to traced values (``np.array``, ``np.zeros``, ``np.r_``,
    ``scipy.special.logsumexp``) are replaced by those of ``core.MODULE_FUNCTIONS``, and NumPy's functions
    given lists holding traced values (``np.mean([a, b])``) get arrays. Everything else is the module's own."""

    def __init__(self, module):
        super().__init__(module.__name__, module.__doc__)
        self._module = module
        self._seen = {}

    def __getattr__(self, name):
        if name in self._seen:
            return self._seen[name]
        value = getattr(self._module, name)
        sub = MODULE_FUNCTIONS.get((self._module.__name__, name))
        if sub is None:
            sub = _stand_in_module(value) or _list_taking(value, name) or value
        self._seen[name] = sub
        return sub

    def __dir__(self):
        return dir(self._module)


def _stand_in_modules() -> set:
    names = set()
    for module, _ in MODULE_FUNCTIONS:
        parts = module.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


_STAND_INS: dict = {}


def _stand_in_module(value):
    if not isinstance(value, types.ModuleType) or value.__name__ not in _stand_in_modules():
        return None
    if value.__name__ not in _STAND_INS or _STAND_INS[value.__name__]._module is not value:
        _STAND_INS[value.__name__] = _TracingModule(value)
    return _STAND_INS[value.__name__]


# NumPy functions whose first argument is a sequence of arrays, not an array
_SEQUENCE_FIRST = frozenset(["concatenate", "stack", "vstack", "hstack", "dstack", "column_stack", "row_stack", "block",
                             "broadcast_arrays", "meshgrid", "einsum", "ix_"])


def _list_taking(fn, name):
    """``fn`` (a NumPy function) taking lists that hold traced values as arrays, or None if it needs nothing."""
    if not (isinstance(fn, np.ufunc) or type(fn).__name__ == "_ArrayFunctionDispatcher"):
        return None
    skip_first = name in _SEQUENCE_FIRST

    def converted(*args, **kwargs):
        args = [as_array(a) if isinstance(a, (list, tuple)) and not (skip_first and i == 0) and contains_traced(a)
                else a for i, a in enumerate(args)]
        return fn(*args, **kwargs)
    converted.__name__, converted.__doc__, converted.__wrapped__ = name, fn.__doc__, fn
    if isinstance(fn, np.ufunc):  # np.add.reduce and the rest stay reachable
        return _Ufunc(fn, converted)
    return converted


class _Ufunc:
    def __init__(self, ufunc, call):
        self._ufunc, self._call = ufunc, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._ufunc, name)


def _replacements() -> dict:
    """{id(object): replacement} for the objects of ``MODULE_FUNCTIONS`` in modules imported so far (a name
    bound by ``from numpy import zeros`` or ``from scipy.special import logsumexp``)."""
    found = {}
    for (module, name), sub in MODULE_FUNCTIONS.items():
        mod = sys.modules.get(module)
        value = getattr(mod, name, None) if mod is not None else None
        if value is not None:
            found[id(value)] = (value, sub)
    return found


def _global_names(code) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


# ---------------------------------------------------------------- np.random: refused, never frozen


_RANDOM_HINT = ("pass a key argument, tg.random.key(seed), and draw with tg.random.uniform(key, shape), "
                "tg.random.normal(key, shape), tg.random.bernoulli(key, p, shape) or tg.nn.dropout(x, rate, key)")


def _frozen_draw(name):
    """What a traced function calls instead of the ``np.random`` function (or method) ``name``."""
    def refuse(*args, **kwargs):
        raise UnsupportedError(f"{name} inside a traced function: its numbers would be drawn once, while tracing, "
                               f"and the same numbers used at every call", user_source(), _RANDOM_HINT)
    refuse.__name__ = name.rsplit(".", 1)[-1]
    return refuse


class _TracingRandom(types.ModuleType):
    """Stands in for ``np.random`` inside a traced function: its functions raise (classes stay, for isinstance)."""

    def __getattr__(self, name):
        value = getattr(np.random, name)
        return value if isinstance(value, type) or not callable(value) else _frozen_draw(f"np.random.{name}")


class _TracingNumpy(types.ModuleType):
    """Stands in for ``numpy`` in a traced function that reads ``np.random``: the rest is NumPy's."""

    def __getattr__(self, name):
        return getattr(np, name)


class _FrozenGenerator:
    """Stands in for a ``Generator`` or ``RandomState`` a traced function reads by name: drawing raises."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _frozen_draw(f"{self._name}.{attr} (a NumPy random generator)")


_RANDOM_MODULE = _TracingRandom("numpy.random")
_NUMPY_MODULE = _TracingNumpy("numpy")
_NUMPY_MODULE.__dict__.update({k: v for k, v in vars(np).items() if k != "random"})
_NUMPY_MODULE.random = _RANDOM_MODULE
MODULE_FUNCTIONS[("numpy", "random")] = _RANDOM_MODULE  # NumPy's stand-in (np.array of traced lists) refuses it too
_GLOBAL_GENERATOR = getattr(np.random.mtrand, "_rand", None)  # the RandomState behind np.random.rand
_GENERATORS = (np.random.Generator, np.random.RandomState, np.random.BitGenerator)


def _random_substitute(value, hint, code):
    """The stand-in for ``value`` if it is NumPy's random module, a generator or one of their methods, or
    NumPy itself in code that reads its ``random`` attribute; else None."""
    if value is np.random:
        return _RANDOM_MODULE
    if value is np and "random" in _global_names(code):
        return _stand_in_module(np) or _NUMPY_MODULE  # (its random is _RANDOM_MODULE: MODULE_FUNCTIONS)
    if isinstance(value, _GENERATORS):
        return _FrozenGenerator(hint)
    if isinstance(getattr(value, "__self__", None), _GENERATORS) and callable(value):
        return _frozen_draw(f"{hint} (a method of a NumPy random generator)")
    return None


def _random_states(fn, roots) -> dict:
    """The states of the random generators a trace could draw from without naming them: NumPy's global one
    (``np.random.rand`` in a library function) and those kept by the objects it reads (``self.rng``, the
    attributes and entries of the containers it reads by name), one level deep. A state that moves while
    tracing means numbers were drawn once, to be reused at every call."""
    candidates = [_GLOBAL_GENERATOR, getattr(fn, "__self__", None), fn, *(value for _, value, _ in roots)]
    found = {}
    for value in candidates:
        inner = value.values() if type(value) is dict else vars(value).values() if hasattr(value, "__dict__") else ()
        for g in (value, *inner):
            if isinstance(g, (np.random.Generator, np.random.RandomState)) and id(g) not in found:
                found[id(g)] = (g, _state_of(g))
    return found


def _state_of(generator) -> bytes:
    bit_generator = generator.bit_generator if isinstance(generator, np.random.Generator) else generator._bit_generator
    return pickle.dumps(bit_generator.state)


def _check_random_states(states, name):
    for generator, before in states.values():
        if _state_of(generator) != before:
            which = ("NumPy's global random generator (np.random.rand, np.random.normal, ...)"
                     if generator is _GLOBAL_GENERATOR else f"a {type(generator).__name__} it reads")
            raise UnsupportedError(f"{which} drew numbers while {name} was traced, by it or a function it called: "
                                   f"they would be drawn once, and the same numbers used at every call",
                                   hint=_RANDOM_HINT)


def _substitute(value, hint, builder, read, code=None):
    """What the traced copy of the function sees instead of ``value`` (or ``value`` itself).

    NumPy arrays and scalars become traced inputs read again on every call; Python numbers stay constants;
    ``np.random`` and random generators refuse to draw (see ``_random_substitute``).
    """
    if value is math:
        return _MATH_MODULE
    if code is not None:
        stand_in = _random_substitute(value, hint, code)
        if stand_in is not None:
            return stand_in
    if isinstance(value, types.ModuleType):
        return _stand_in_module(value) or value
    if _hashable(value) and value in MATH_FUNCTIONS:
        return _math_shim(value)
    if (type(value) is np.ndarray or isinstance(value, np.generic)) and value.dtype in _COMPILABLE:
        var = builder.capture(value, hint)
        builder.readers[id(value)] = read
        return TracedArray(var, builder)
    return value


def _hashable(value) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False


class _Preparer:
    """Makes the copies ``trace`` runs: see ``prepare``. Keeps the containers the functions read by name
    (``roots``), where ``captures.path_readers`` looks for arrays reached through them."""

    def __init__(self, builder):
        self.builder = builder
        self.prepared: dict = {}  # each function seen -> its copy, or itself when it needs none
        self.roots: list = []  # (how to read it again, the value now, its name): dicts, lists, objects, self
        self.replacements = _replacements()

    def prepare(self, fn):
        """A copy of ``fn`` whose captured arrays are traced inputs and whose ``math`` accepts traced values.

        The same goes, recursively, for the user's own functions it calls by a global or closure name
        (helpers, and theirs): arrays they read from their globals are read at every call too, and
        ``math`` works in them. A decorated method (a ``functools.partial`` binding ``self``) is the
        copy of its function, bound to the same ``self``.
        """
        if isinstance(fn, functools.partial) and isinstance(fn.func, types.FunctionType):
            for i, arg in enumerate(fn.args):
                self._root(arg, lambda arg=arg: arg, "self" if i == 0 else f"<argument {i}>")
            return functools.partial(self.prepare(fn.func), *fn.args, **fn.keywords)
        if not isinstance(fn, types.FunctionType):
            return fn
        if fn in self.prepared:
            return self.prepared[fn]
        self.prepared[fn] = fn  # until its copy exists, a recursive call reaches the original
        code = fn.__code__
        cells = list(fn.__closure__ or ())
        for i, (name, cell) in enumerate(zip(code.co_freevars, cells)):
            try:
                value = cell.cell_contents
            except ValueError:  # not yet assigned
                continue
            sub = self._substitute(value, name, lambda cell=cell: cell.cell_contents, code)
            if sub is not value:
                cells[i] = types.CellType(sub)
        glob = fn.__globals__
        replaced = {}
        for name in sorted(_global_names(code)):
            if name in glob:
                value = glob[name]
                sub = self._substitute(value, name, lambda name=name: glob[name], code)
                if sub is not value:
                    replaced[name] = sub
        if not replaced and all(a is b for a, b in zip(cells, fn.__closure__ or ())):
            return fn
        new_globals = dict(glob, **replaced) if replaced else glob
        # a function that calls itself, by a closure name or a global one, calls the copy
        own = [i for i, cell in enumerate(cells) if cell is fn.__closure__[i] and _contents(cell) is fn]
        for i in own:
            cells[i] = types.CellType()
        copy = types.FunctionType(code, new_globals, fn.__name__, fn.__defaults__, tuple(cells) if cells else None)
        copy.__kwdefaults__ = fn.__kwdefaults__
        copy.__dict__.update(fn.__dict__)
        self.prepared[fn] = copy
        for i in own:
            cells[i].cell_contents = copy
        if replaced:
            for name in _global_names(code):
                if glob.get(name) is fn:
                    new_globals[name] = copy
        return copy

    def _substitute(self, value, hint, read, code):
        if isinstance(value, types.FunctionType) and is_users_function(value):
            return self.prepare(value)
        replacement = self.replacements.get(id(value))
        if replacement is not None and replacement[0] is value:
            return replacement[1]
        self._root(value, read, hint)
        return _substitute(value, hint, self.builder, read, code)

    def _root(self, value, read, name):
        if searchable(value):
            self.roots.append((read, value, name))


def _contents(cell):
    try:
        return cell.cell_contents
    except ValueError:
        return None


def _name_helper_locals(helpers: list, builder, names: dict) -> None:
    """Add to ``names`` the local variables of the frames of ``helpers`` (functions of the user's the traced
    function called) that hold values not named yet, prefixed by the helper's name where the plain name
    is taken (``predict_hidden``)."""
    taken = set(names.values())
    for helper in helpers:
        prefix = helper.f_code.co_name
        for name, value in helper.f_locals.items():
            if (isinstance(value, TracedArray) and value.builder is builder and is_valid_name(name)
                    and value.var not in names):
                if name in taken and is_valid_name(f"{prefix}_{name}"):
                    name = f"{prefix}_{name}"
                names[value.var] = name
                taken.add(name)


def _call_recording_locals(fn, args, builder):
    """Call ``fn(*args)`` and return its result and {Var: the local variable name that held it}.

    The builder keeps the function's frame (found when the first node is recorded), and the frames of
    the user's other functions that recorded nodes (helpers it called); once they have returned, the
    frames still hold their final local variables. The function's own names come first.
    """
    fn_ = fn.func if isinstance(fn, functools.partial) else fn
    # a wrapper made with functools.wraps (static arguments bound) runs the user's code: its frame is watched
    builder.watch = getattr(getattr(fn_, "__wrapped__", fn_), "__code__", None)
    try:
        result = fn(*args)
    finally:
        frame, builder.watch, builder.watched_frame = builder.watched_frame, None, None
        helpers, builder.helper_frames = list(builder.helper_frames.values()), {}
    names: dict = {}
    if frame is not None:
        for name, value in frame.f_locals.items():
            if isinstance(value, TracedArray) and value.builder is builder and is_valid_name(name):
                names.setdefault(value.var, name)
    # then the locals of the user's helpers it called (predict's `hidden`)
    _name_helper_locals(helpers, builder, names)
    # the frames form a cycle with this one (f_back): let go of them now, not when the collector runs, so
    # that the arrays in their locals are not taken for arrays the user keeps (captures.owner_readers)
    del frame, helpers
    return result, names
