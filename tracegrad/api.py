"""The public transformations: ``grad``, ``value_and_grad``, ``jit``, and ways to look inside them.

A transformed function is specialised on the structure, shapes and dtypes of its arguments: the first
call with a new signature traces, differentiates, generates code and compiles it; later calls go
straight to the compiled Numba function.
"""
from __future__ import annotations

import functools
import os
import keyword
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import backend, tiers
from .autodiff import value_and_grad_graph
from .codegen import Module, generate
from .passes import optimize
from .core import TracedArray, current_builder
from .errors import GradTypeError
from .interpret import inline
from .ir import Graph, Literal, Var
from .pytree import TreeDef, flatten, unflatten
from .tracer import Traced, arg_names, aval_of, trace

_SCALARS = (float, int, bool)
_log = logging.getLogger("tracegrad")


class _Stopwatch:
    """Seconds per stage, each lap from the end of the one before."""

    def __init__(self):
        self.laps: dict = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now


def _signature(leaf):
    """A hashable key for one argument leaf: its kind, shape and dtype."""
    kind = type(leaf)
    if kind in _SCALARS:
        return kind
    if kind is np.ndarray:
        return (leaf.dtype, leaf.shape)
    if isinstance(leaf, TracedArray) or kind in (tuple, list, dict):
        raise TypeError  # not a flat leaf: take the general path
    if isinstance(leaf, np.generic):
        return (kind,)
    raise TypeError


def _to_kernel_arg(leaf):
    return leaf[()] if type(leaf) is np.ndarray and leaf.ndim == 0 else leaf


def _like_input(value, leaf):
    """A gradient in the same form as the argument it belongs to (float for float, float32 for float32...)."""
    if type(leaf) is float:
        return float(value)
    if isinstance(leaf, np.generic):
        return type(leaf)(value)
    if isinstance(leaf, np.ndarray) and leaf.ndim == 0:
        return np.asarray(value, leaf.dtype)
    return value


def _as_output(value, var):
    """A returned value: Python float for float64 scalars, NumPy scalars for other dtypes, arrays as they are."""
    aval = var.aval
    if aval.shape:
        return value
    if aval.dtype == np.float64:
        return float(value)
    if isinstance(var, Literal):  # a Python constant the function returned: as it was
        return var.value
    return aval.dtype.type(value)


def _returned_as_is(var) -> bool:
    """Numba returns this output already as tracegrad returns it (arrays, and float64 scalars as float)."""
    return bool(var.aval.shape) or var.aval.dtype == np.float64


@dataclass
class Compiled:
    """One specialisation of a transformed function: its graph, generated module and Numba function.

    ``dispatcher`` is a ``numba.njit`` function: call it from your own ``@numba.njit`` code with the
    flattened arguments followed by ``captured()`` (arrays the function reads from its closure or globals).

    ``timings`` holds the seconds each stage of making it took: ``trace``, ``autodiff``, ``passes``,
    ``codegen``, ``load`` (writing and importing the module) and, after the first call, ``numba``
    (Numba's compile or cache load, and that call). With ``compile="background"`` a first call that had
    to wait for Numba ran on NumPy instead (``evaluate``); the worker's compile (``background``) and
    loading its result here (``numba``) are added when the compiled code takes over. The same is logged
    at INFO level on the ``"tracegrad"`` logger: ``logging.basicConfig(level=logging.INFO)`` shows it.

    ``tier`` says what runs the calls: ``"compiled"``, ``"evaluating"`` (NumPy, see ``tracegrad.tiers``)
    or ``None`` before the first call; ``wait()`` blocks until the compiled code is in use.
    """

    graph: Graph
    module: Module
    dispatcher: Any
    traced: Traced
    pack: Callable  # (outputs, argument leaves) -> the result the user sees
    direct: str | None = None  # the same as an expression of the outputs `o0, o1, ...`, when no leaf needs converting
    signature: tuple = ()  # the flat arguments' signatures (_signature), when the arguments are flat
    timings: dict = field(default_factory=dict)  # seconds per stage: trace, autodiff, passes, codegen, load, numba
    compile_mode: str = "wait"  # compile=: "background", "wait" or "never" (tracegrad.tiers)

    def __post_init__(self):
        self.guard = None
        self.tier = None
        self._call = self._first_call  # then the dispatcher, the evaluator, or the evaluator until compiled
        self._background = None
        self._evaluator = None
        if self.compile_mode == "wait":
            self._make_guard()

    def _make_guard(self):
        captures = self.traced.captures
        # Constants the trace created are passed as they are; closure and global arrays are read and
        # checked on every call, so they rule the fast path out.
        held = all(c.held for c in captures)
        if held and self.direct is not None and self.signature:
            self.guard = _make_guard(self.signature, self.direct, len(self.graph.outputs), self.dispatcher,
                                     [c.current() for c in captures], self.module)

    @property
    def source(self) -> str:
        return self.module.source

    def captured(self) -> list:
        return [c.current() for c in self.traced.captures]

    def run(self, leaves):
        args = [_to_kernel_arg(leaf) for leaf in leaves]
        for capture in self.traced.captures:
            value = capture.current()
            if value.shape != capture.var.aval.shape or value.dtype != capture.var.aval.dtype:
                raise _Stale
            args.append(value)
        try:
            outs = self._call(*args)
        except backend.NUMBA_ERRORS as exc:
            raise backend.compile_error(exc, self.module) from None
        return self.pack(outs if isinstance(outs, tuple) else (outs,), leaves)

    # ------------------------------------------------------------------ tiers

    @property
    def evaluator(self) -> tiers.Evaluator:
        """The same function on NumPy (the optimised graph, evaluated): what runs until Numba is done."""
        if self._evaluator is None:
            self._evaluator = tiers.Evaluator(self.graph, self.module.checks)
        return self._evaluator

    def wait(self) -> str:
        """Block until the compiled code runs the calls (when a background compile is under way); the tier."""
        if self._background is not None and self.tier == "evaluating":
            self._background.wait()
            self._evaluate_until_compiled()
        return self.tier

    def _first_call(self, *args):
        """Choose the tier: with compile="wait" compiled (compiling here, or loading Numba's cache); with
        "background" NumPy now, while a thread loads Numba's cache or the worker compiles first."""
        clock = _Stopwatch()
        if self.compile_mode == "never":
            self.tier, self._call = "evaluating", self.evaluator
            return self._call(*args)
        if self.compile_mode == "background":
            self._background = tiers.background(self.dispatcher, args, self.module.parts, label=self.module.function)
            if self._background is not None:
                self.tier, self._call = "evaluating", self._evaluate_until_compiled
                outs = self.evaluator(*args)
                clock.lap("evaluate")
                self.timings.update(clock.laps)
                self._report("Numba compiles it in the background; this call ran on NumPy", compiled=False)
                return outs
        outs = self.dispatcher(*args)  # Numba compiles, or loads from its cache
        clock.lap("numba")
        self.timings.update(clock.laps)
        stats = self.dispatcher.stats
        self._report("Numba " + ("loaded from its cache" if sum(stats.cache_hits.values()) else "compiled"))
        self._use_compiled()
        return outs

    def _evaluate_until_compiled(self, *args):
        state = self._background.poll(stacklevel=6 if args else 4)  # warn at the user's call
        if state == "compiled":
            self.timings.update(background=self._background.compile_seconds, numba=self._background.load_seconds)
            self._use_compiled()
        elif state == "failed":
            self._call = self.evaluator
        else:
            return self.evaluator(*args) if args else None
        return self._call(*args) if args else None

    def _use_compiled(self):
        self.tier, self._call = "compiled", self.dispatcher
        if self.guard is None:
            self._make_guard()

    def _report(self, what: str, compiled: bool = True):
        _log.info("%s %s (%d lines%s): %s; %s", "compiled" if compiled else "prepared", self.module.function,
                  self.source.count("\n"), f", {len(self.module.parts) + 1} functions" if self.module.parts else "",
                  ", ".join(f"{stage} {seconds * 1e3:.1f} ms" for stage, seconds in self.timings.items()), what)


class _Miss:
    """What a guard returns when the arguments are not the ones it was made for."""

    def __repr__(self):
        return "<no match>"


_MISS = _Miss()


def _make_guard(signature: tuple, result: str, n_out: int, dispatcher, held: list, module: Module) -> Callable:
    """A ``__call__`` written for one specialisation: it checks that the arguments match its signature
    exactly (class, dtype, shape), then calls the compiled function; otherwise it hands them to
    ``Function._dispatch``. It becomes the class's ``__call__`` of the function it serves (each Function
    has a class of its own), so a matching call costs one Python frame. A check per argument costs far
    less than building a key for a dictionary look-up, and Numba's own dispatch would convert an int or a
    float32 to a float64 silently."""
    params, checks, env = [], [], {"np": np, "kernel": dispatcher, "MISS": _MISS, "ndarray": np.ndarray,
                                   "NUMBA_ERRORS": backend.NUMBA_ERRORS, "compile_error": backend.compile_error,
                                   "module": module, "dispatch": Function._dispatch}
    for i, sig in enumerate(signature):
        a = f"_a{i}"  # names no caller passes as keywords: those go to the general path
        params.append(a)
        if isinstance(sig, type):
            checks.append(f"{a}.__class__ is {sig.__name__}")
        elif isinstance(sig, tuple) and len(sig) == 2:
            env[f"dtype{i}"] = sig[0]
            checks.append(f"{a}.__class__ is ndarray and {a}.dtype is dtype{i} and {a}.shape == {sig[1]!r}")
        else:
            return None  # NumPy scalars: the general path converts them
    env.update((f"h{i}", value) for i, value in enumerate(held))
    call = ", ".join(params + [f"h{i}" for i in range(len(held))])
    given = "".join(f"{a}, " for a in params)
    source = (f"def __call__(self, {''.join(p + '=MISS, ' for p in params)}*rest, **kwargs):\n"
              f"    if {' and '.join(checks + ['not rest', 'not kwargs'])}:\n"
              f"        try:\n"
              f"            {''.join(f'o{i}, ' for i in range(n_out))}= kernel({call})\n"
              f"        except NUMBA_ERRORS as exc:\n"
              f"            raise compile_error(exc, module) from None\n"
              f"        return {result}\n"
              f"    return dispatch(self, tuple(a for a in ({given}) if a is not MISS) + rest, kwargs)\n")
    exec(compile(source, f"<tracegrad guard for {module.function}>", "exec"), env)
    return env["__call__"]


class _Stale(Exception):
    """A captured array changed shape or dtype since tracing: trace again."""


class Function:
    """A function transformed by ``grad``, ``value_and_grad`` or ``jit``. Call it like the original."""

    def __init__(self, fun: Callable, mode: str, argnums=0, has_aux: bool = False, debug_nans: bool | None = None,
                 compile: str | None = None):
        if not callable(fun):
            raise TypeError(f"{mode} expects a function, got {type(fun).__name__}")
        if mode != "jit":
            _check_argnums_type(argnums)
        self.fun = fun
        self.mode = mode
        self.argnums = argnums
        self.has_aux = has_aux
        if debug_nans is None:
            debug_nans = os.environ.get("TRACEGRAD_DEBUG_NANS", "") not in ("", "0")
        self.debug_nans = debug_nans
        self.compile = None if compile is None else tiers.check_mode(compile)  # None: tiers.compile_mode()
        self._cache: dict = {}
        functools.update_wrapper(self, fun, updated=())  # not __dict__: fun may be a Function itself
        # a class of its own, whose __call__ becomes the guard of the specialisation last called
        self.__class__ = type("Function", (Function,), {"__module__": __name__, "__qualname__": "Function"})

    def __repr__(self):
        return f"<tracegrad.{self.mode} of {getattr(self.fun, '__qualname__', self.fun)!r}>"

    def __reduce__(self):  # its own class cannot be pickled; a copy compiles (or loads) again when called
        return Function, (self.fun, self.mode, self.argnums, self.has_aux, self.debug_nans, self.compile)

    def __get__(self, obj, objtype=None):
        """A decorated method: ``self`` is bound, not traced, and argnums count the other arguments.

        Arrays reached through ``self`` are passed by reference (in-place changes are seen); rebinding an
        attribute after the first call is not. One specialisation cache per instance."""
        if obj is None:
            return self
        key = f"_tracegrad_{self.mode}_{id(self)}"
        bound = obj.__dict__.get(key) if hasattr(obj, "__dict__") else None
        if bound is None:
            bound = Function(functools.partial(self.fun, obj), self.mode, self.argnums, self.has_aux, self.debug_nans,
                             self.compile)
            bound.__name__ = getattr(self.fun, "__name__", "method")
            if hasattr(obj, "__dict__"):
                obj.__dict__[key] = bound
        return bound

    def __call__(self, *args, **kwargs):
        # Until a specialisation with a guard has been called; then the guard is this class's __call__
        # (the fast path) and calls _dispatch for arguments it was not made for.
        return self._dispatch(args, kwargs)

    def _dispatch(self, args, kwargs):
        if kwargs:  # keyword arguments are matched to their positions, then treated like the rest
            args = _positional(self.fun, args, kwargs)
        try:
            entry = self._cache[tuple([a.__class__ if a.__class__ in _SCALARS else _signature(a) for a in args])]
        except (KeyError, TypeError):
            return self._call_general(args)
        if entry.guard is not None:
            type(self).__call__ = entry.guard  # the next call like this one takes the fast path
        try:
            return entry.run(args)
        except _Stale:
            return self._call_general(args, retrace=True)

    def _call_general(self, args, retrace=False):
        leaves, in_tree = flatten(args)
        if any(isinstance(leaf, TracedArray) for leaf in leaves):
            return self._call_traced(args, leaves)
        return self.specialize(*args, _retrace=retrace).run(leaves)

    def wait(self) -> None:
        """Block until compiled code runs every specialisation called so far (with ``compile="background"``,
        the first calls run on NumPy while Numba compiles in another process)."""
        for entry in list(self._cache.values()):
            entry.wait()

    # ------------------------------------------------------------------ specialisation

    def specialize(self, *args, _retrace=False) -> Compiled:
        """The compiled specialisation for arguments like ``args`` (traced and generated on first use)."""
        leaves, in_tree = flatten(args)
        for leaf in leaves:
            aval_of(leaf)  # a clear error for what cannot be traced, before it is used as a key
        key = (in_tree, tuple(_signature(leaf) for leaf in leaves))
        entry = None if _retrace else self._cache.get(key)
        if entry is None:
            entry = self._build(args, leaves)
            self._cache[key] = entry
            if in_tree == flatten(tuple(range(len(args))))[1]:  # flat arguments: the fast path's key
                self._cache[tuple(_signature(leaf) for leaf in leaves)] = entry
        return entry

    def graph(self, *args) -> Graph:
        """The graph this function runs for arguments like ``args`` (value and gradients in one graph)."""
        return self.specialize(*args).graph

    def source(self, *args) -> str:
        """The exact Python source Numba compiles for arguments like ``args``."""
        return self.specialize(*args).source

    def _differentiable_leaves(self, args) -> list[int]:
        argnums = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        names = _param_names(self.fun, len(args))
        wrt, start = [], 0
        offsets = []
        for arg in args:
            n = len(flatten(arg)[0])
            offsets.append((start, n))
            start += n
        for i in argnums:
            if not -len(args) <= i < len(args):
                raise GradTypeError(f"argnums={self.argnums} is out of range for {len(args)} argument(s)")
            first, n = offsets[i % len(args)]
            for leaf in flatten(args[i % len(args)])[0]:
                aval = aval_of(leaf)
                if aval.dtype.kind != "f":
                    raise GradTypeError(
                        f"cannot differentiate with respect to argument {names[i % len(args)]!r}: it has dtype "
                        f"{aval.dtype}" + (" (a Python int)" if type(leaf) is int else ""),
                        hint="pass floats (e.g. 2.0 rather than 2, or x.astype(np.float64)), or leave it out of argnums")
            wrt.extend(range(first, first + n))
        return wrt

    def _build(self, args, leaves) -> Compiled:
        _check_arity(self.fun, args)
        clock = _Stopwatch()
        wrt = self._differentiable_leaves(args) if self.mode != "jit" else []
        traced = trace(self.fun, args, name=getattr(self, "__name__", None))
        clock.lap("trace")
        graph, pack, direct = self._transform(traced, args, wrt)
        clock.lap("autodiff")
        graph = optimize(graph, fusion=not self.debug_nans)  # unfused, every value is checked on its own
        clock.lap("passes")
        suffix = {"jit": "", "grad": "_grad", "value_and_grad": "_value_and_grad"}[self.mode]
        name = _identifier(traced.graph.name) + suffix + ("_debug_nans" if self.debug_nans else "")
        graph.name = name
        module = generate(graph, name, check_finite=self.debug_nans)
        clock.lap("codegen")
        dispatcher = backend.load(module)
        clock.lap("load")
        if any(type(leaf) is np.ndarray and leaf.ndim == 0 for leaf in leaves):
            direct = None  # 0-d arrays are passed to Numba as scalars
        flat = flatten(args)[1] == flatten(tuple(range(len(args))))[1]
        signature = tuple(_signature(leaf) for leaf in leaves) if flat else ()
        return Compiled(graph, module, dispatcher, traced, pack, direct, signature, clock.laps,
                        self.compile or tiers.compile_mode())

    def _transform(self, traced: Traced, args, wrt):
        """The graph to compile, and how to turn its flat outputs back into this function's results."""
        graph, out_tree = traced.graph, traced.out_tree
        for i, out in enumerate(graph.outputs):
            if isinstance(out, Var) and out.hint is None and out not in graph.inputs:
                out.hint = "out" if len(graph.outputs) == 1 else f"out{i}"
        if self.mode == "jit":
            outs = list(graph.outputs)

            def pack(values, leaves):
                return unflatten(out_tree, [_as_output(v, var) for v, var in zip(values, outs)])
            direct = "o0" if out_tree.kind == "leaf" and _returned_as_is(outs[0]) else None
            return graph, pack, direct

        value_tree, aux_tree = _split_aux(out_tree, self.has_aux, graph.name)
        n_out = len(graph.outputs)
        vg = value_and_grad_graph(graph, wrt)
        outs = list(graph.outputs)
        arg_trees = [flatten(a)[1] for a in args]
        argnums = self.argnums
        mode, has_aux = self.mode, self.has_aux

        def pack(values, leaves):
            value = _as_output(values[0], outs[0])
            grads = [_like_input(g, leaves[i]) for g, i in zip(values[n_out:], wrt)]
            if isinstance(argnums, int):
                result = unflatten(arg_trees[argnums], grads)
            else:
                it = iter(grads)
                result = tuple(unflatten(arg_trees[i], [next(it) for _ in range(arg_trees[i].num_leaves)])
                               for i in argnums)
            if has_aux:
                aux = unflatten(aux_tree, [_as_output(v, var) for v, var in zip(values[1:n_out], outs[1:])])
                return (result, aux) if mode == "grad" else ((value, aux), result)
            return result if mode == "grad" else (value, result)
        return vg, pack, self._direct_pack(args, outs, len(vg.outputs))

    def _direct_pack(self, args, outs, n: int) -> str | None:
        """For the common case (argnums pick plain floats or arrays, no aux), the result is Numba's ``n``
        outputs ``o0, o1, ...`` regrouped, with no pytree work: the expression that regroups them, or None."""
        argnums = self.argnums
        picked = [argnums] if isinstance(argnums, int) else list(argnums)
        if self.has_aux or not all(type(args[i]) is float or (type(args[i]) is np.ndarray and args[i].ndim)
                                   for i in picked):
            return None
        grads = "o1" if isinstance(argnums, int) else f"({''.join(f'o{i}, ' for i in range(1, n))})"
        if self.mode == "grad":
            return grads
        # a float32 loss: Numba returns it as a Python float
        value = "o0" if _returned_as_is(outs[0]) else f"np.{outs[0].aval.dtype.name}(o0)"
        return f"({value}, {grads})"

    # ------------------------------------------------------------------ inside another trace (grad of grad)

    def _call_traced(self, args, leaves):
        wrt = self._differentiable_leaves(args) if self.mode != "jit" else []
        traced = trace(self.fun, args, name=getattr(self, "__name__", None))
        graph, _, _ = self._transform(traced, args, wrt)
        captured = [c.current() for c in traced.captures]
        enclosing = current_builder()
        for c, value in zip(traced.captures, captured):
            if not c.held:  # the enclosing trace reads it again on each call too
                enclosing.readers[id(value)] = c.read
        outs = inline(graph, *leaves, *captured)
        n_out = len(traced.graph.outputs)
        if self.mode == "jit":
            return unflatten(traced.out_tree, outs)
        value_tree, aux_tree = _split_aux(traced.out_tree, self.has_aux, graph.name)
        arg_trees = [flatten(a)[1] for a in args]
        grads = iter(outs[n_out:])
        if isinstance(self.argnums, int):
            result = unflatten(arg_trees[self.argnums], [next(grads) for _ in range(arg_trees[self.argnums].num_leaves)])
        else:
            result = tuple(unflatten(arg_trees[i], [next(grads) for _ in range(arg_trees[i].num_leaves)])
                           for i in self.argnums)
        if self.has_aux:
            aux = unflatten(aux_tree, outs[1:n_out])
            return (result, aux) if self.mode == "grad" else ((outs[0], aux), result)
        return result if self.mode == "grad" else (outs[0], result)


def _split_aux(out_tree: TreeDef, has_aux: bool, name: str):
    if has_aux:
        if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
            raise GradTypeError(f"has_aux=True needs {name} to return a pair (value, aux), got structure {out_tree}")
        value_tree, aux_tree = out_tree.children
    else:
        value_tree, aux_tree = out_tree, None
    if value_tree.kind != "leaf":
        raise GradTypeError(f"grad needs {name} to return one scalar, got structure {value_tree}",
                            hint="return a single value, or use has_aux=True to return (value, aux)")
    return value_tree, aux_tree


def _check_arity(fun, args) -> None:
    """A clear error, before tracing, when ``fun`` cannot take ``args``."""
    import inspect

    try:
        signature = inspect.signature(fun)
    except (TypeError, ValueError):  # no signature to read (some builtins): nothing to check
        return
    try:
        signature.bind(*args)
    except TypeError as e:
        raise GradTypeError(f"{getattr(fun, '__name__', fun)}: {e}") from None


def _positional(fun, args, kwargs) -> tuple:
    import inspect

    try:
        bound = inspect.signature(fun).bind(*args, **kwargs)
    except TypeError as e:
        raise GradTypeError(f"{getattr(fun, '__name__', fun)}: {e}") from None
    bound.apply_defaults()
    if bound.kwargs:
        raise GradTypeError(f"{getattr(fun, '__name__', fun)}: keyword-only or **kwargs arguments are not supported",
                            hint="pass them positionally")
    return tuple(bound.args)


def _check_argnums_type(argnums):
    ok = isinstance(argnums, int) and not isinstance(argnums, bool) or (
        isinstance(argnums, (tuple, list)) and argnums and all(isinstance(i, int) and not isinstance(i, bool) for i in argnums))
    if not ok:
        raise GradTypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")


def _param_names(fun, n) -> list[str]:
    return arg_names(fun, (0,) * n)  # a scalar per argument: one name each


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "f"
    if cleaned[0].isdigit():
        cleaned = "f_" + cleaned
    return cleaned + "_fn" if keyword.iskeyword(cleaned) else cleaned


# ---------------------------------------------------------------------- public functions


def _transform_decorator(mode):
    def transform(fun=None, *, argnums=0, has_aux=False, debug_nans=None, compile=None):
        if fun is None:
            return lambda f: Function(f, mode, argnums, has_aux, debug_nans, compile)
        return Function(fun, mode, argnums, has_aux, debug_nans, compile)
    return transform


def grad(fun: Callable | None = None, *, argnums=0, has_aux: bool = False, debug_nans: bool | None = None,
         compile: str | None = None) -> Function:
    """The gradient of a scalar function, compiled.

    ``grad(f)(*args)`` returns the gradient of ``f`` with respect to argument ``argnums`` (an int, or a
    tuple of ints for a tuple of gradients), each shaped like its argument (pytrees of tuples, lists and
    dicts too). With ``has_aux=True``, ``f`` returns ``(value, aux)`` and the result is ``(gradient, aux)``.

    >>> import numpy as np, tracegrad as tg
    >>> tg.grad(lambda x: np.sum(x ** 2))(np.array([1.0, 2.0]))
    array([2., 4.])

    With ``debug_nans=True`` (default: the environment variable ``TRACEGRAD_DEBUG_NANS=1``) the compiled
    code checks every value and raises ``NonFiniteError`` at the first NaN or inf, naming the value,
    the forward or backward pass and your line; off, the checks are not in the code at all.

    ``compile``: ``"background"`` (the default, see ``tg.set_compile``) answers the first calls at once
    with NumPy while Numba compiles in another process, then runs the compiled code; ``"wait"`` blocks
    on the first call until Numba has compiled (or loaded from its cache); ``"never"`` only uses NumPy.
    ``f.wait()`` blocks until the compiled code is in use.

    Raises ``GradTypeError`` for a non-scalar output, an integer argument or ``argnums`` out of range,
    ``TracingError`` for Python control flow on traced values, ``UnsupportedError`` for NumPy functions
    tracegrad does not know, and ``ShapeError`` for shapes that do not fit.
    """
    return _transform_decorator("grad")(fun, argnums=argnums, has_aux=has_aux, debug_nans=debug_nans, compile=compile)


def value_and_grad(fun: Callable | None = None, *, argnums=0, has_aux: bool = False,
                   debug_nans: bool | None = None, compile: str | None = None) -> Function:
    """Like ``grad``, but returns ``(value, gradient)`` from one compiled pass (``((value, aux), gradient)``
    with ``has_aux``).

    >>> import tracegrad as tg
    >>> tg.value_and_grad(lambda x, y: x * y + y)(3.0, 2.0)
    (8.0, 2.0)
    """
    return _transform_decorator("value_and_grad")(fun, argnums=argnums, has_aux=has_aux, debug_nans=debug_nans,
                                                  compile=compile)


def jit(fun: Callable, *, debug_nans: bool | None = None, compile: str | None = None) -> Function:
    """Compile ``fun`` (forward only). It may return any pytree of arrays and scalars.

    >>> import numpy as np, tracegrad as tg
    >>> tg.jit(lambda x: np.tanh(x) * 2)(np.zeros(2))
    array([0., 0.])
    """
    return Function(fun, "jit", debug_nans=debug_nans, compile=compile)


def make_graph(fun: Callable, *args) -> Graph:
    """The graph of ``fun`` for arguments like ``args``, without running it (like ``jax.make_jaxpr``).

    For a plain function this is the forward graph; for ``grad``/``value_and_grad`` functions it is the
    one graph that computes the value and the gradients.

    >>> import tracegrad as tg
    >>> def f(x, y):
    ...     return x * y + y
    >>> print(tg.make_graph(f, 3.0, 2.0))
    graph f(x: f64[], y: f64[]):
      s0: f64[] = mul x y
      s1: f64[] = add s0 y
      return s1
    """
    if isinstance(fun, Function):
        return fun.graph(*args)
    return trace(fun, args).graph


def source(fun: Callable, *args) -> str:
    """The generated Python source that runs for ``fun`` and arguments like ``args``: exactly the text
    Numba compiles. A plain function is shown as ``jit(fun)``; a ``grad`` function with its backward pass."""
    if not isinstance(fun, Function):
        fun = jit(fun)
    return fun.source(*args)
