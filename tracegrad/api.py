"""The public transformations: ``grad``, ``value_and_grad``, ``jit``, and ways to look inside them.

A transformed function is specialised on the structure, shapes and dtypes of its arguments: the first
call with a new signature traces, differentiates, generates code and compiles it; later calls go
straight to the compiled Numba function.
"""
from __future__ import annotations

import inspect

import functools
from collections import OrderedDict
import os
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import backend, rows, tiers
from .autodiff import value_and_grad_graph
from .codegen import Module, generate
from .primitives import nest
from .passes import optimize
from .core import ENTERED as _ENTERED, TracedArray, current_builder, _state as _tracing
from .errors import GradTypeError, IndexOutOfBoundsError
from .guards import GuardWriter
from .static import StaticArgs
from .interpret import inline
from .ir import Graph, Literal, Var, ascii_name
from .pytree import LEAF, TreeDef, flatten, unflatten
from .roll import rolled
from .tracer import Traced, arg_names, aval_of, container_note, trace

_SCALARS = (float, int, bool)
_log = logging.getLogger("tracegrad")
LONG_COMPILE_WARNING = 30.0  # seconds: a compile expected to take longer is announced as a warning


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
    flattened arguments (the leaves of each argument's pytree, a dict's keys sorted) followed by
    ``captured()`` (arrays the function reads from its closure or globals); ``arguments()`` names them in
    order. It always returns a tuple of arrays and scalars: for ``value_and_grad`` the value, then the
    gradients' leaves; for ``grad`` the gradients' leaves; for ``jit`` the output's leaves (a 1-tuple for
    one output). Called from Python with the wrong arguments it raises Numba's own ``TypeError``.
    Large temporaries (``codegen.WORKSPACE_BYTES``, 32 KiB, and more) of calls from Python live in a
    ``workspace`` of buffers allocated once for the specialisation and reused (outputs never share memory
    with it; a thread finding it in use gets new ones); ``dispatcher`` allocates them at each call, and a
    loop in your own ``@numba.njit`` code that should not can call ``workspace_dispatcher`` with buffers of its
    own (``new_workspace()``).

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
    direct: _Result | None = None  # the same, as expressions of the outputs, when the guard can write it
    in_tree: TreeDef | None = None  # the structure of the arguments (a tuple of them) and their leaves'
    signature: tuple = ()  # signatures (_signature): what the guard checks
    timings: dict = field(default_factory=dict)  # seconds per stage: trace, autodiff, passes, codegen, load, numba
    key: tuple = ()  # the key of the function's specialisation cache
    compile_mode: str = "wait"  # compile=: "background", "wait" or "never" (tracegrad.tiers)

    def __post_init__(self):
        self.guard = None
        self.tier = None
        self._call = self._first_call  # then the dispatcher, the evaluator, or the evaluator until compiled
        self._background = None
        self._evaluator = None
        self._workspace = None
        if self.compile_mode == "wait":
            self._make_guard()

    @property
    def workspace(self) -> backend.Workspace | None:
        """The buffers this specialisation's compiled calls reuse for their large temporaries (see
        ``codegen.WORKSPACE_BYTES``), allocated at the first compiled call; None when it needs none.
        ``dispatcher`` allocates its own at each call."""
        if self._workspace is None and self.module.inner:
            self._workspace = backend.Workspace(self.module, self.dispatcher)
        return self._workspace

    @property
    def workspace_dispatcher(self):
        """For a loop in your own ``@numba.njit`` code: the compiled function that takes a workspace, called
        with ``dispatcher``'s arguments followed by the buffers of ``new_workspace()``; ``dispatcher`` itself
        when the specialisation has no workspace (then ``new_workspace()`` is ``()``)."""
        return self.dispatcher if self.workspace is None else self.workspace.inner

    def new_workspace(self) -> tuple:
        """Buffers for ``workspace_dispatcher``: a tuple of new arrays (uninitialised) of your own, to pass
        at every call of one loop; not the ones calls from Python use. The function writes its large
        temporaries into them, so two calls running at the same time (threads) need two workspaces;
        its results never share memory with them.

        >>> import numba, numpy as np, tracegrad as tg
        >>> vg = tg.value_and_grad(lambda W, X: np.sum(np.tanh(X @ W) ** 2))
        >>> W, X = np.full((50, 100), 0.01), np.ones((200, 50))
        >>> compiled = vg.specialize(W, X)
        >>> kernel, buffers = compiled.workspace_dispatcher, compiled.new_workspace()
        >>> @numba.njit
        ... def descend(W, X, buffers):
        ...     for _ in range(10):
        ...         value, g = kernel(W, X, *buffers)   # X @ W and its tanh go into the buffers
        ...         W = W - 1e-4 * g
        ...     return value
        >>> [b.shape for b in buffers], descend(W, X, buffers) < vg(W, X)[0]
        ([(200, 100), (200, 100)], True)
        """
        return () if self.workspace is None else self.workspace.new_buffers()

    def _compiled(self):
        """What a compiled call calls: the dispatcher, or the function taking the workspace with it."""
        return self.workspace or self.dispatcher

    def _make_guard(self):
        captures = self.traced.captures
        # Constants the trace created are passed as they are; closure and global arrays are read and
        # checked on every call, so they rule the fast path out.
        # A 0-d array is passed as a scalar: the guard would keep its value at the time it was made.
        held = all(c.held and c.var.aval.shape for c in captures)
        if held and self.direct is not None and self.in_tree is not None:
            self.guard = _make_guard(self.in_tree, self.signature, self.direct, len(self.graph.outputs),
                                     self.dispatcher, [c.current() for c in captures], self.module, self.workspace,
                                     weakref.WeakMethod(self.locate))

    @property
    def source(self) -> str:
        return self.module.source

    def captured(self) -> list:
        """The arrays the function reads from its closure or globals, as they are now: the dispatcher's
        last parameters."""
        return [c.current() for c in self.traced.captures]

    def arguments(self) -> list:
        """The names of the dispatcher's parameters, in order (those of ``captured()`` last)."""
        return list(inspect.signature(self.dispatcher.py_func).parameters)

    def run(self, leaves):
        return self.pack(self.call(leaves), leaves)

    def call(self, leaves) -> tuple:
        """The function's outputs, flat, for the flattened arguments ``leaves`` (the graph's outputs in
        order, as the compiled code returns them: ``fit`` keeps its epochs' parameters flat with this)."""
        args = [_to_kernel_arg(leaf) for leaf in leaves]
        for capture in self.traced.captures:
            value = capture.current()
            if value.shape != capture.var.aval.shape or value.dtype != capture.var.aval.dtype:
                raise _Stale
            args.append(value)
        try:
            outs = self._call(*args)
        except Exception as exc:  # a Numba error (CompileError), or its disk cache's (recovered from)
            if self.tier == "evaluating":  # NumPy's error, as it is
                raise
            if isinstance(exc, IndexError):
                self.locate(args)
                raise
            outs = backend.call_failed(exc, self.module, self.dispatcher, args)
        return outs if isinstance(outs, tuple) else (outs,)

    def locate(self, args) -> None:
        """After the compiled code raised an index out of bounds (its kernels know no source lines), run the
        call again on NumPy, which raises ``IndexOutOfBoundsError`` naming the indexing and the user's line.
        Returns if NumPy does not fail (the caller then raises the compiled code's error)."""
        try:
            self.evaluator(*args)
        except IndexOutOfBoundsError as located:
            raise located from None

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
            self._background = self.background(args)
            if self._background is not None:
                self.tier, self._call = "evaluating", self._evaluate_until_compiled
                outs = self._evaluate(args)
                clock.lap("evaluate")
                self.timings.update(clock.laps)
                after = tiers.compile_after()
                self._report("Numba compiles it in the background" + (
                    f" once its calls have spent {after:g} s on NumPy" if after > 0 else "") +
                    "; this call ran on NumPy", compiled=False)
                return outs
        compiled = self._compiled()
        self.announce_compile(self.workspace.inner if self.workspace is not None else self.dispatcher)
        with backend.quiet_compile():
            outs = compiled(*args)  # Numba compiles, or loads from its cache
        clock.lap("numba")
        self.timings.update(clock.laps)
        stats = (self.workspace.inner if self.workspace is not None else self.dispatcher).stats
        self._report("Numba " + ("loaded from its cache" if sum(stats.cache_hits.values()) else "compiled"))
        self._use_compiled()
        return outs

    def background(self, args, load_now: bool = False) -> tiers.Background | None:
        """``tiers.background`` for what the calls run (the function taking the workspace, if there is one)."""
        if self.workspace is not None:
            return tiers.background(self.workspace.inner, [*args, *self.workspace.buffers], self.module.inner_parts,
                                    label=self.module.function, load_now=load_now, defer=True)
        return tiers.background(self.dispatcher, args, self.module.parts, label=self.module.function,
                                load_now=load_now, defer=True)

    def _evaluate_until_compiled(self, *args):
        state = self._background.poll(stacklevel=6 if args else 4)  # warn at the user's call
        if state == "compiled":
            self.timings.update(background=self._background.compile_seconds, numba=self._background.load_seconds)
            self._use_compiled()
        elif state == "failed":
            self._call = self.evaluator
        else:
            return self._evaluate(args) if args else None
        return self._call(*args) if args else None

    def _evaluate(self, args):
        """A call on NumPy while the compiled code is not ready; its time counts towards starting the compile."""
        t = time.perf_counter()
        try:
            return self.evaluator(*args)
        finally:
            self._background.evaluated(time.perf_counter() - t)

    def _use_compiled(self):
        self.tier, self._call = "compiled", self._compiled()
        if self.guard is None:
            self._make_guard()

    def announce_compile(self, dispatcher) -> None:
        """Before a compile from scratch that the caller waits for: when Numba's disk cache has nothing for
        ``dispatcher`` and the estimate (``backend.compile_estimate``) is at least ``backend.LONG_COMPILE``
        seconds, say so on the "tracegrad" logger (at WARNING from ``LONG_COMPILE_WARNING`` seconds on, so
        that a program without logging set up prints it too)."""
        if backend.has_cache_entries(dispatcher):
            return
        seconds = backend.compile_estimate(self.graph)
        if seconds >= backend.LONG_COMPILE:
            _log.log(logging.WARNING if seconds >= LONG_COMPILE_WARNING else logging.INFO,
                     "compiling %s with Numba: about %.0f s (%d lines of generated code); with compile=\"background\" "
                     "the calls would run on NumPy meanwhile", self.module.function, seconds, self.source.count("\n"))

    def _report(self, what: str, compiled: bool = True):
        _log.info("%s %s (%d lines%s): %s; %s", "compiled" if compiled else "prepared", self.module.function,
                  self.source.count("\n"), f", {len(self.module.parts) + 1} functions" if self.module.parts else "",
                  ", ".join(f"{stage} {seconds * 1e3:.1f} ms" for stage, seconds in self.timings.items()), what)


def captured_by_enclosing(traced: Traced) -> list:
    """The values of a trace's captures, for a trace made inside another one: the closure and global arrays
    become values of the enclosing trace (read again at each of its calls, and computed from, never
    folded into constants of the enclosing graph); the others (created while tracing) as they are."""
    captured = [c.current() for c in traced.captures]
    enclosing = current_builder()
    for k, (c, value) in enumerate(zip(traced.captures, captured)):
        if not c.held and isinstance(value, np.ndarray):
            enclosing.readers[id(value)] = c.read
            captured[k] = enclosing.wrap(enclosing.capture(value, c.var.hint))
    return captured


class _Miss:
    """What a guard returns when the arguments are not the ones it was made for."""

    def __repr__(self):
        return "<no match>"


_MISS = _Miss()


@dataclass
class _Result:
    """How a guard writes a specialisation's result from Numba's outputs ``o0, o1, ...``: the result's
    structure and, for each of its leaves, an expression of the outputs (``o2``, ``float32(o0)``);
    ``constants`` are the names those expressions use."""

    tree: TreeDef
    leaves: list
    constants: dict = field(default_factory=dict)


def _output_expression(i: int, var, constants: dict) -> str:
    """Output ``i`` as ``_as_output`` returns it, written as an expression of ``o{i}``."""
    if _returned_as_is(var):
        return f"o{i}"
    if isinstance(var, Literal):  # a Python constant the function returned: as it was
        constants[f"c{i}"] = var.value
        return f"c{i}"
    dtype = var.aval.dtype
    if _PRODUCT_KEEPS_FLOAT32 and dtype.kind == "f":  # float32(o0) costs three times one32 * o0 (NumPy 2)
        constants[f"one{i}"] = dtype.type(1)
        return f"one{i} * o{i}"
    constants[f"t{i}"] = dtype.type
    return f"t{i}(o{i})"


# Numba returns a float32 scalar as the Python float of its exact value, so multiplying it by float32's
# 1 gives it back as a float32 (NaN, infinities and -0.0 as they are) where NumPy >= 2 keeps a product of a
# NumPy scalar and a Python float in the NumPy scalar's dtype (NumPy 1 returns float64: the constructor)
_PRODUCT_KEEPS_FLOAT32 = type(np.float32(1) * 0.5) is np.float32


def _make_guard(in_tree: TreeDef, signature: tuple, result: _Result, n_out: int, dispatcher, held: list,
                module: Module, workspace: backend.Workspace | None = None, locate=None) -> Callable | None:
    """A ``__call__`` written for one specialisation: it checks that the arguments match it exactly
    (containers' classes and lengths, dict keys; leaves' classes, dtypes and shapes), then calls the
    compiled function with the leaves and builds the result; otherwise it hands the arguments to
    ``Function._dispatch``. It becomes the ``__call__`` of the class of the function it serves (each
    Function has a class of its own), so a matching call costs one Python frame. Numba's own dispatch
    would convert an int or a float32 to a float64 silently. None for leaves the general path converts
    (0-d arrays); a NumPy scalar is checked by its class and passed as it is (a gradient with respect to
    one needs converting: ``_direct_pack`` leaves those to the general path). With a ``workspace``, it calls
    the function taking the workspace's buffers (``w0, w1, ...``) while it holds the workspace's lock, and the
    dispatcher when another thread has it. ``locate`` (a weak reference to ``Compiled.locate``) names the user's
    line of an index out of bounds."""
    writer = GuardWriter()
    params = [f"_a{i}" for i in range(len(in_tree.children))]  # names no caller passes as keywords
    # (inside a trace: traced into it; ENTERED is empty when no thread traces, a faster test than the
    # thread-local builder, which Function._dispatch reads when it is not)
    writer.check("not rest and not kwargs and not TRACING")
    leaves = [name for param, child in zip(params, in_tree.children) for name in writer.unpack(param, child)]
    for name, sig in zip(leaves, signature):
        if isinstance(sig, type):
            writer.check(f"{name}.__class__ is {sig.__name__}")
        elif isinstance(sig, tuple) and len(sig) == 2 and sig[1] != ():
            writer.check_array(name, *sig)
        elif isinstance(sig, tuple) and len(sig) == 1:  # a NumPy scalar (a tg.random key): passed as it is
            writer.check(f"{name}.__class__ is {writer.constant(sig[0], 'scalar')}")
        else:
            return None  # 0-d arrays: the general path converts them
    env = writer.env
    env.update({"MISS": _MISS, "TRACING": _ENTERED, "kernel": dispatcher, "NUMBA_ERRORS": backend.NUMBA_ERRORS,
                "compile_error": backend.compile_error, "module": module, "dispatch": Function._dispatch,
                "locate": locate or (lambda: None)})
    env.update(result.constants)
    env.update((f"h{i}", value) for i, value in enumerate(held))
    call = ", ".join(leaves + [f"h{i}" for i in range(len(held))])
    given = "".join(p + ", " for p in params)
    outs = "".join(f'o{i}, ' for i in range(n_out))
    if workspace is None:
        run = f"        {outs}= kernel({call})\n"
    else:
        env.update({"lock": workspace.lock, "inner": workspace.inner})
        env.update((f"w{i}", buffer) for i, buffer in enumerate(workspace.buffers))
        buffers = "".join(f", w{i}" for i in range(len(workspace.buffers)))
        run = (f"        if lock.acquire(False):  # the workspace: one caller at a time\n"
               f"            try:\n"
               f"                {outs}= inner({call}{buffers})\n"
               f"            finally:\n"
               f"                lock.release()\n"
               f"        else:  # another thread has it: a new workspace for this call\n"
               f"            {outs}= kernel({call})\n")
    source = (f"def __call__(self, /, {''.join(p + '=MISS, ' for p in params)}*rest, **kwargs):\n"
              f"    try:\n{writer.body('        ')}"
              f"    except (Mismatch, LookupError):\n"
              f"        return dispatch(self, tuple(a for a in ({given}) if a is not MISS) + rest, kwargs)\n"
              f"    try:\n"
              f"{run}"
              f"    except NUMBA_ERRORS as exc:\n"
              f"        raise compile_error(exc, module) from None\n"
              f"    except IndexError:  # x[i] out of bounds: NumPy's run names the user's line\n"
              f"        if locate() is not None:\n"
              f"            locate()(({call}{',' if len(leaves) + len(held) == 1 else ''}))\n"
              f"        raise\n"
              f"    return {writer.tree_expression(result.tree, iter(result.leaves))}\n")
    exec(compile(source, f"<tracegrad guard for {module.function}>", "exec"), env)
    guard = env["__call__"]
    guard.source = source  # to read when debugging the fast path
    return guard


ROWS_MODES = ("grad", "value_and_grad")  # what parallel=over_rows(...) can split


class _Stale(Exception):
    """A captured array changed shape or dtype since tracing: trace again."""


def _max_specializations() -> int:
    value = os.environ.get("TRACEGRAD_MAX_SPECIALIZATIONS", "256")
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"TRACEGRAD_MAX_SPECIALIZATIONS must be a positive int, got {value!r}") from None


class Function:
    """A function transformed by ``grad``, ``value_and_grad`` or ``jit``. Call it like the original.

    It keeps at most ``max_specializations`` specialisations (argument structures, shapes and dtypes)
    alive, 256 unless the environment variable ``TRACEGRAD_MAX_SPECIALIZATIONS`` says otherwise; past
    that it drops the one used least recently (traced again, and compiled again or loaded from Numba's
    disk cache, if it is needed again). Set it per function: ``f.max_specializations = 8``. A dropped
    specialisation, or all of them after ``del f``, frees its graph, source and Numba dispatcher, but
    not its machine code: Numba keeps every function it has compiled or loaded until the process ends
    (about 1.5 MiB for a small one), so the bound is generous.
    """

    max_specializations: int = _max_specializations()

    def __init__(self, fun: Callable, mode: str, argnums=0, has_aux: bool = False, debug_nans: bool | None = None,
                 compile: str | None = None, parallel: bool | str | None = None):
        if not callable(fun):
            raise GradTypeError(f"{mode} expects a function, got {type(fun).__name__}")
        if mode != "jit":
            _check_argnums_type(argnums)
        self.fun = fun
        self.mode = mode
        self.argnums = argnums
        self.has_aux = has_aux
        if debug_nans is None:
            debug_nans = os.environ.get("TRACEGRAD_DEBUG_NANS", "") not in ("", "0")
        self.debug_nans = debug_nans
        # (argument structure, leaf signatures) -> Compiled, the least recently used first
        self._cache: OrderedDict = OrderedDict()
        self._flat: dict = {}  # leaf signatures -> Compiled, for flat arguments: one look-up, no flattening
        self._installed: Compiled | None = None  # whose guard is the class's __call__
        self.compile = None if compile is None else tiers.check_mode(compile)  # None: tiers.compile_mode()
        # None: tiers.parallel_mode(); over_rows(...) only where there is a loss to split
        self.parallel = None if parallel is None else tiers.check_parallel(parallel, rows=mode in ROWS_MODES)
        functools.update_wrapper(self, fun, updated=())  # not __dict__: fun may be a Function itself
        # a class of its own, whose __call__ becomes the guard of the specialisation last called
        self.__class__ = type("Function", (Function,), {"__module__": __name__, "__qualname__": "Function"})

    def __repr__(self):
        return f"<tracegrad.{self.mode} of {getattr(self.fun, '__qualname__', self.fun)!r}>"

    def __reduce__(self):  # its own class cannot be pickled; a copy compiles (or loads) again when called
        return Function, (self.fun, self.mode, self.argnums, self.has_aux, self.debug_nans, self.compile,
                          self.parallel)

    def __get__(self, obj, objtype=None):
        """A decorated method: ``self`` is bound, not traced, and argnums count the other arguments.

        Arrays reached through ``self`` (``self.W``, ``self.layers[0].b``) are read again at every call, so
        rebinding an attribute (``self.W = self.W - lr * g``) is seen. One specialisation cache per instance."""
        if obj is None:
            return self
        key = f"_tracegrad_{self.mode}_{id(self)}"
        bound = obj.__dict__.get(key) if hasattr(obj, "__dict__") else None
        if bound is None:
            bound = Function(functools.partial(self.fun, obj), self.mode, self.argnums, self.has_aux, self.debug_nans,
                             self.compile, self.parallel)
            bound.__name__ = getattr(self.fun, "__name__", "method")
            if hasattr(obj, "__dict__"):
                obj.__dict__[key] = bound
        return bound

    def __call__(self, /, *args, **kwargs):  # positional-only: the user's function may have a parameter "self"
        # Until a specialisation with a guard has been called; then the guard is this class's __call__
        # (the fast path) and calls _dispatch for arguments it was not made for.
        return self._dispatch(args, kwargs)

    def _dispatch(self, args, kwargs):
        if kwargs:  # keyword arguments are matched to their positions, then treated like the rest
            args = _positional(self.fun, args, kwargs)
        if _tracing.builder is not None:  # called inside another trace: traced into it, never compiled alone
            return self._call_general(args)
        try:
            entry = self._flat[tuple([a.__class__ if a.__class__ in _SCALARS else _signature(a) for a in args])]
        except (KeyError, TypeError):
            entry = None
        if entry is None:  # outside the except block: a tracing error must not show this KeyError as its context
            return self._call_general(args)
        self._use(entry)
        try:
            return entry.run(args)
        except _Stale:
            pass
        return self._call_general(args, retrace=True)

    def _call_general(self, args, retrace=False):
        leaves, in_tree = flatten(args)
        # Inside another trace, even on plain numbers: the function may read the enclosing function's
        # traced values (a closure), and arrays it reads must be read when the enclosing function runs.
        if _tracing.builder is not None or any(isinstance(leaf, TracedArray) for leaf in leaves):
            return self._call_traced(args, leaves)
        entry = self.specialize(*args, _retrace=retrace)
        self._use(entry)
        return entry.run(leaves)

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
            entry.key = key
            self._remember(entry, flat=in_tree == flatten(tuple(range(len(args))))[1])
        else:
            self._cache.move_to_end(key)
        return entry

    def _remember(self, entry: Compiled, flat: bool) -> None:
        """Keep ``entry``, dropping the least recently used specialisations past ``max_specializations``."""
        self._cache[entry.key] = entry
        self._cache.move_to_end(entry.key)
        if flat:  # the fast path's key
            self._flat[entry.key[1]] = entry
        while len(self._cache) > max(1, self.max_specializations):
            _, old = self._cache.popitem(last=False)
            if self._flat.get(old.key[1]) is old:
                del self._flat[old.key[1]]
            if self._installed is old:  # its guard must not keep it alive
                type(self).__call__ = Function.__call__
                self._installed = None

    def _use(self, entry: Compiled) -> None:
        """``entry`` is being called: it becomes the most recently used, and its guard the fast path."""
        installed = self._installed
        try:
            if installed is not None and self._cache.get(installed.key) is installed:
                self._cache.move_to_end(installed.key)  # its calls took the fast path, unseen until now
            self._cache.move_to_end(entry.key)
        except KeyError:  # dropped by another thread meanwhile
            return
        if entry.guard is not None:
            type(self).__call__ = entry.guard  # the next call like this one takes the fast path
            self._installed = entry

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
            if n == 0:
                raise GradTypeError(
                    f"cannot differentiate with respect to argument {names[i % len(args)]!r}: it is "
                    f"{_describe(args[i % len(args)])}, with no floats or arrays in it",
                    hint="pass the value to differentiate (a float, an array, or a tuple/list/dict of them)")
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
        traced = rolled(trace(self.fun, args, name=getattr(self, "__name__", None)))  # plain loops as loop nodes
        clock.lap("trace")
        graph, pack, direct = self._transform(traced, args, wrt)
        clock.lap("autodiff")
        graph = optimize(graph, fusion=not self.debug_nans)  # unfused, every value is checked on its own
        clock.lap("passes")
        suffix = {"jit": "", "grad": "_grad", "value_and_grad": "_value_and_grad"}[self.mode]
        name = _identifier(traced.graph.name) + suffix + ("_debug_nans" if self.debug_nans else "")
        graph.name = name
        setting = self._parallel_setting()
        module = self._rows_module(setting, args, graph) if isinstance(setting, rows.OverRows) else None
        if module is None:
            module = generate(graph, name, check_finite=self.debug_nans, parallel_min=self._parallel_min())
        clock.lap("codegen")
        dispatcher = backend.load(module)
        clock.lap("load")
        in_tree = flatten(args)[1]
        signature = tuple(_signature(leaf) for leaf in leaves)
        return Compiled(graph, module, dispatcher, traced, pack, direct, in_tree, signature, clock.laps,
                        compile_mode=self.compile or tiers.compile_mode())

    def _rows_module(self, setting: rows.OverRows, args, graph: Graph) -> Module | None:
        """``parallel=over_rows(...)``: the module running ``graph`` block by block of rows on Numba's threads
        (each block's graph traced and generated on its own), or None to run the batch whole."""
        if self.has_aux:
            raise GradTypeError(f"parallel={setting!r} with has_aux=True: the auxiliary results of the blocks "
                                "cannot be combined", hint="over_rows needs a function returning the loss alone")
        if self.debug_nans or not all(isinstance(v, Var) for v in graph.outputs) or rows.draws_random(graph.nodes):
            # (debug_nans: every value is checked where it is computed; random draws depend on the row's
            # place in the whole batch: each block would draw the first block's numbers)
            return None
        leaves, in_tree = flatten(args)
        plan = setting.blocks(args, lambda arg: flatten(arg)[0], backend.threads())
        if plan is None:
            return None
        sizes, split = plan
        wrt = self._differentiable_leaves(args)
        if any(split[i] for i in wrt):
            raise GradTypeError(f"parallel={setting!r} splits the rows of arguments that are differentiated",
                                hint="over_rows names the data arguments; argnums the parameters")
        split += (False,) * (len(graph.inputs) - len(split))  # captured arrays: every block reads all of them
        blocks = {}
        for size in sorted(set(sizes)):
            block_args = unflatten(in_tree, [leaf[:size] if cut else leaf for leaf, cut in zip(leaves, split)])
            traced = rolled(trace(self.fun, block_args, name=getattr(self, "__name__", None)))
            block, _, _ = self._transform(traced, block_args, wrt)
            block = optimize(block, fusion=True)
            block.name = f"{graph.name}_rows{size}"
            if not rows.same_inputs(block, graph, split):
                return None  # (an array the loss made from the batch's size, say: not separable as it stands)
            blocks[size] = generate(block, block.name)
        return rows.module(graph, blocks, sizes, split, setting.reduction)

    def _parallel_setting(self):
        """``parallel=``, or the process's default (``tiers.parallel_mode``) when the function sets none."""
        return tiers.parallel_mode() if self.parallel is None else self.parallel

    def _parallel_min(self) -> int | None:
        """The fewest elements a fused loop runs in parallel with, by ``parallel=`` (None: no loop does)."""
        setting = self._parallel_setting()
        if isinstance(setting, rows.OverRows):  # (a batch too small to split runs serially)
            return None
        if setting == "auto":  # (a fixed threshold for now: see docs/DESIGN.md, "parallel=")
            return nest.AUTO_MIN if backend.threads() > 1 else None
        return nest.PARALLEL_MIN if setting else None

    def _transform(self, traced: Traced, args, wrt):
        """The graph to compile, and how to turn its flat outputs back into this function's results."""
        graph, out_tree = traced.graph, traced.out_tree
        name_outputs(graph)
        if self.mode == "jit":
            outs = list(graph.outputs)

            def pack(values, leaves):
                return unflatten(out_tree, [_as_output(v, var) for v, var in zip(values, outs)])
            constants: dict = {}
            direct = _Result(out_tree, [_output_expression(i, v, constants) for i, v in enumerate(outs)], constants)
            return graph, pack, direct

        value_tree, aux_tree = _split_aux(out_tree, self.has_aux, graph.name, container_note(self.fun, args))
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
        return vg, pack, self._direct_pack(args, outs, wrt, arg_trees, aux_tree)

    def _direct_pack(self, args, outs, wrt, arg_trees, aux_tree) -> _Result | None:
        """``pack`` as expressions of Numba's outputs ``o0, o1, ...``, for the guard to write; None when a
        gradient needs converting to its argument's form (NumPy scalars, 0-d arrays)."""
        leaves = flatten(args)[0]
        if not all(type(leaves[i]) is float or (type(leaves[i]) is np.ndarray and leaves[i].ndim) for i in wrt):
            return None
        constants: dict = {}
        n_out = len(outs)
        value = _output_expression(0, outs[0], constants)
        aux = [_output_expression(i, v, constants) for i, v in enumerate(outs[1:], 1)]
        grads = [f"o{i}" for i in range(n_out, n_out + len(wrt))]
        if isinstance(self.argnums, int):
            grad_tree = arg_trees[self.argnums]
        else:
            grad_tree = TreeDef("tuple", None, tuple(arg_trees[i] for i in self.argnums))
        if self.mode == "grad":
            tree, exprs = grad_tree, grads
            if self.has_aux:
                tree, exprs = TreeDef("tuple", None, (grad_tree, aux_tree)), grads + aux
        elif self.has_aux:
            tree = TreeDef("tuple", None, (TreeDef("tuple", None, (LEAF, aux_tree)), grad_tree))
            exprs = [value] + aux + grads
        else:
            tree, exprs = TreeDef("tuple", None, (LEAF, grad_tree)), [value] + grads
        return _Result(tree, exprs, constants)

    # ------------------------------------------------------------------ inside another trace (grad of grad)

    def _call_traced(self, args, leaves):
        wrt = self._differentiable_leaves(args) if self.mode != "jit" else []
        traced = rolled(trace(self.fun, args, name=getattr(self, "__name__", None)))
        graph, _, _ = self._transform(traced, args, wrt)
        outs = inline(graph, *leaves, *captured_by_enclosing(traced), keep_names=True)
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


def _describe(arg) -> str:
    if arg is None:
        return "None"
    return f"an empty {type(arg).__name__}" if isinstance(arg, (tuple, list, dict)) and not arg else type(arg).__name__


def _split_aux(out_tree: TreeDef, has_aux: bool, name: str, note: str | None = None):
    if has_aux:
        if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
            raise GradTypeError(f"has_aux=True needs {name} to return a pair (value, aux), got structure {out_tree}")
        value_tree, aux_tree = out_tree.children
    else:
        value_tree, aux_tree = out_tree, None
    if value_tree.kind != "leaf":
        raise GradTypeError(f"grad needs {name} to return one scalar, got structure {value_tree}"
                            + (f"\n  {note}" if note and value_tree.kind in ("tuple", "list") else ""),
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
    return ascii_name(name).strip("_")  # codegen.function_name makes it a valid, short, free name


# ---------------------------------------------------------------------- public functions


def _transform_decorator(mode):
    def transform(fun=None, *, argnums=0, has_aux=False, debug_nans=None, compile=None, parallel=None,
                  static_argnums=(), static_argnames=()):
        def make(f):
            if static_argnums not in ((), None) or static_argnames:  # (0 is a position)
                return StaticArgs(f, lambda g, a, p: Function(g, mode, a, has_aux, debug_nans, compile, p),
                                  argnums, static_argnums, static_argnames, parallel)
            return Function(f, mode, argnums, has_aux, debug_nans, compile, parallel)
        return make if fun is None else make(fun)
    return transform


def grad(fun: Callable | None = None, *, argnums=0, has_aux: bool = False, debug_nans: bool | None = None,
         compile: str | None = None, parallel: bool | str | None = None, static_argnums=(),
         static_argnames=()) -> Function:
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

    ``static_argnums`` / ``static_argnames``: arguments used as Python values while tracing (a loop count
    for ``range(n)``, a size, a flag), not traced; each new value (hashable) traces again.

    ``compile``: ``"background"`` (the default, see ``tg.set_compile``) answers the first calls at once
    with NumPy while Numba compiles in another process, then runs the compiled code; ``"wait"`` blocks
    on the first call until Numba has compiled (or loaded from its cache); ``"never"`` only uses NumPy.
    ``f.wait()`` blocks until the compiled code is in use.

    ``parallel``: ``False`` (the default, see ``tg.set_parallel``) runs the compiled code on one thread;
    ``True`` runs each fused loop over at least 32,768 elements (and 128 rows) on all of Numba's threads,
    as fixed blocks of rows whose sums are added in block order (the same result whatever the number
    of threads); ``"auto"`` does so only for loops of 524,288 elements or more, when Numba has more
    than one thread. Matrix products use BLAS's own threads either way. ``tg.over_rows(*data,
    reduction="mean")``, for a loss that is the mean (or sum) over the rows of its data arguments, splits
    those rows into a block a thread, each running the whole compiled value and gradient (its products
    too), and combines the blocks' results in block order. See docs/guide/scaling.md.

    Raises ``GradTypeError`` for a non-scalar output, an integer argument or ``argnums`` out of range,
    ``TracingError`` for Python control flow on traced values, ``UnsupportedError`` for NumPy functions
    tracegrad does not know, and ``ShapeError`` for shapes that do not fit.
    """
    return _transform_decorator("grad")(fun, argnums=argnums, has_aux=has_aux, debug_nans=debug_nans, compile=compile,
                                        parallel=parallel, static_argnums=static_argnums,
                                        static_argnames=static_argnames)


def value_and_grad(fun: Callable | None = None, *, argnums=0, has_aux: bool = False,
                   debug_nans: bool | None = None, compile: str | None = None,
                   parallel: bool | str | None = None, static_argnums=(), static_argnames=()) -> Function:
    """Like ``grad``, but returns ``(value, gradient)`` from one compiled pass (``((value, aux), gradient)``
    with ``has_aux``).

    >>> import tracegrad as tg
    >>> tg.value_and_grad(lambda x, y: x * y + y)(3.0, 2.0)
    (8.0, 2.0)
    """
    return _transform_decorator("value_and_grad")(fun, argnums=argnums, has_aux=has_aux, debug_nans=debug_nans,
                                                  compile=compile, parallel=parallel,
                                                  static_argnums=static_argnums, static_argnames=static_argnames)


def jit(fun: Callable, *, debug_nans: bool | None = None, compile: str | None = None,
        parallel: bool | str | None = None, static_argnums=(), static_argnames=()) -> Function:
    """Compile ``fun`` (forward only). It may return any pytree of arrays and scalars. ``compile``,
    ``parallel``, ``static_argnums`` and ``static_argnames`` as for ``grad``.

    >>> import numpy as np, tracegrad as tg
    >>> tg.jit(lambda x: np.tanh(x) * 2)(np.zeros(2))
    array([0., 0.])
    """
    if static_argnums not in ((), None) or static_argnames:  # (0 is a position)
        return StaticArgs(fun, lambda g, a, p: Function(g, "jit", debug_nans=debug_nans, compile=compile, parallel=p),
                          None, static_argnums, static_argnames, parallel)
    return Function(fun, "jit", debug_nans=debug_nans, compile=compile, parallel=parallel)


def name_outputs(graph: Graph) -> Graph:
    """Name the graph's unnamed results ``out`` (``out0``, ``out1``, ... for several), as the generated code,
    the printout and drawings call them."""
    for i, out in enumerate(graph.outputs):
        if isinstance(out, Var) and out.hint is None and out not in graph.inputs:
            out.hint = "out" if len(graph.outputs) == 1 else f"out{i}"
    return graph


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
      out: f64[] = add s0 y
      return out
    """
    if isinstance(fun, (Function, StaticArgs)):
        return fun.graph(*args)
    if not callable(fun):
        raise GradTypeError(f"make_graph expects a function, got {type(fun).__name__}")
    return name_outputs(trace(fun, args).graph)


def source(fun: Callable, *args) -> str:
    """The generated Python source that runs for ``fun`` and arguments like ``args``: exactly the text
    Numba compiles. A plain function is shown as ``jit(fun)``; a ``grad`` function with its backward pass."""
    if not isinstance(fun, (Function, StaticArgs)):
        if not callable(fun):
            raise GradTypeError(f"source expects a function, got {type(fun).__name__}")
        fun = jit(fun)
    return fun.source(*args)
