"""Tiered execution: answer at once with NumPy while Numba compiles in another process.

A call whose compiled code is not ready runs the optimised graph on NumPy (``Evaluator``: each node's
reference implementation, a fused loop as whole-array operations), while one worker process compiles
the generated module with Numba and writes Numba's disk cache. The first call after the worker is done
loads the compiled code from that cache (no compiling in this process) and runs it from then on.

``compile="background"`` (the default) does this; ``"wait"`` compiles in the caller, blocking, as
before; ``"never"`` only evaluates. Per function (``tg.grad(f, compile="wait")``) or for the process
(``TRACEGRAD_COMPILE=wait`` or ``tg.set_compile("wait")``).

The worker is one process for the whole program, started on first need and reused; it compiles one
module at a time, in the order asked. It ends with this process: at exit we kill it, and on Linux the
kernel kills it if this process dies (``PR_SET_PDEATHSIG``); elsewhere it notices its parent is gone
within half a second. Numba writes each cache file to a temporary name and renames it, data before
index, so a worker killed mid-compile leaves nothing a later process loads.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
import weakref

import numpy as np

from .errors import CompileWarning, IndexOutOfBoundsError, NonFiniteError, TracegradError, out_of_bounds
from .ir import Graph, Literal
from .rows import OverRows

MODES = ("background", "wait", "never")
LOG_AFTER = 1.0  # seconds a background compile runs before the "tracegrad" logger says so
COMPILE_AFTER = 1.0  # seconds a specialisation's calls spend on NumPy before the worker compiles it

_log = logging.getLogger("tracegrad")
_mode: str | None = None


def check_mode(mode: str, what: str = "compile") -> str:
    if mode not in MODES:
        raise TracegradError(f"{what} must be one of {', '.join(map(repr, MODES))}, got {mode!r}",
                             hint='"background" answers at once with NumPy while Numba compiles; "wait" '
                                  'blocks until compiled; "never" only uses NumPy')
    return mode


def compile_mode() -> str:
    """The process-wide default of ``compile=``: ``set_compile``'s, else ``TRACEGRAD_COMPILE``, else
    ``"background"``."""
    if _mode is not None:
        return _mode
    return check_mode(os.environ.get("TRACEGRAD_COMPILE") or "background", "TRACEGRAD_COMPILE")


def set_compile(mode: str | None) -> None:
    """Set the default ``compile=`` of every transformed function that does not set its own:
    ``"background"``, ``"wait"`` or ``"never"`` (``None``: back to ``TRACEGRAD_COMPILE`` or
    ``"background"``).

    >>> import tracegrad as tg
    >>> tg.set_compile("wait")     # block on the first call until Numba has compiled, as before
    >>> tg.set_compile(None)

    Raises ``TracegradError`` for any other value.
    """
    global _mode
    _mode = None if mode is None else check_mode(mode)


def compile_after() -> float:
    """How long (seconds) a specialisation's calls run on NumPy before its background compile starts:
    ``TRACEGRAD_COMPILE_AFTER``, else ``COMPILE_AFTER`` (1 s). 0 starts it at the first call."""
    value = os.environ.get("TRACEGRAD_COMPILE_AFTER")
    if value is None or not value.strip():
        return COMPILE_AFTER
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0.0:
        raise TracegradError(f"TRACEGRAD_COMPILE_AFTER must be a number of seconds >= 0, got {value!r}",
                             hint="0 compiles at the first call; unset, a specialisation compiles once its calls "
                                  f"have spent {COMPILE_AFTER:g} s on NumPy")
    return seconds


_parallel: bool | str | None = None
_ENV_PARALLEL = {"": False, "0": False, "false": False, "1": True, "true": True, "auto": "auto"}


def check_parallel(value, what: str = "parallel", rows: bool = True) -> bool | str | OverRows:
    """``value`` if it is a setting of ``parallel=`` (``False``, ``True``, ``"auto"``, or with ``rows``
    ``over_rows(...)``), else a clear error."""
    if isinstance(value, OverRows) and not rows:
        raise TracegradError(f"{what}={value!r}: over_rows names the data arguments of one function, for "
                             "tg.grad and tg.value_and_grad", hint="use parallel=True here, or pass "
                             "parallel=tg.over_rows(...) to the grad or value_and_grad of your loss")
    if value is True or value is False or (isinstance(value, str) and value == "auto") or isinstance(value, OverRows):
        return value
    raise TracegradError(f"{what} must be False, True, 'auto' or tg.over_rows(...), got {value!r}",
                         hint="True runs large fused loops on all of Numba's threads; 'auto' only very large "
                              "ones, when there is more than one thread; tg.over_rows(...) a loss's blocks of "
                              "rows, one a thread; False (the default) none")


def parallel_mode() -> bool | str:
    """The process-wide default of ``parallel=``: ``set_parallel``'s, else ``TRACEGRAD_PARALLEL`` (``0``,
    ``1`` or ``auto``), else ``False``."""
    if _parallel is not None:
        return _parallel
    value = os.environ.get("TRACEGRAD_PARALLEL", "")
    setting = _ENV_PARALLEL.get(value.strip().lower())
    if setting is None:
        raise TracegradError(f"TRACEGRAD_PARALLEL must be 0, 1 or auto, got {value!r}",
                             hint="unset it, or set it to 0 (serial, the default), 1 (parallel) or auto")
    return setting


def set_parallel(mode: bool | str | None) -> None:
    """Set the default ``parallel=`` of every transformed function (and ``fit``) that does not set its
    own: ``False``, ``True`` or ``"auto"`` (``None``: back to ``TRACEGRAD_PARALLEL`` or ``False``). It is
    read when a specialisation is made: functions already called keep the code they have.

    >>> import tracegrad as tg
    >>> tg.set_parallel(True)     # large fused loops run on all of Numba's threads
    >>> tg.set_parallel(None)

    Raises ``TracegradError`` for any other value.
    """
    global _parallel
    _parallel = None if mode is None else check_parallel(mode, rows=False)


# ---------------------------------------------------------------------------------------- evaluating


class Evaluator:
    """Run a graph with NumPy, returning what the compiled function returns: a tuple of outputs,
    Python scalars for 0-d values and fresh arrays (never an input or a view of one).

    ``checks`` are the generated code's ``debug_nans`` checks ((value, message) pairs, from
    ``Module.checks``): the same values are checked, in the same order, raising the same
    ``NonFiniteError``. Like the compiled code (``error_model="numpy"``), division by zero gives inf
    without a warning. An index out of bounds raises ``IndexOutOfBoundsError`` at the user's line.
    """

    def __init__(self, graph: Graph, checks=(), fresh: bool = True):
        self.graph, self.fresh = graph, fresh
        slot = {var: i for i, var in enumerate(graph.inputs)}
        messages = dict(checks)
        self._steps = []
        for node in graph.nodes:
            reads = tuple((False, a.aval.dtype.type(a.value)) if isinstance(a, Literal) else (True, slot[a])
                          for a in node.inputs)
            writes = []
            for out in node.outs:
                slot[out] = len(slot)
                writes.append((slot[out], out.aval, messages.get(out)))
            ref, params = node.primitive.ref, node.params
            if node.primitive.name == "loop":  # a loop node: its body, evaluated once per iteration
                ref, params = _CountedLoop(**node.params), {}
            elif node.primitive.name == "loop_nest" and node.params.get("origin") is not None:
                ref, params = _Origin(node), {}
            self._steps.append((ref, reads, params, tuple(writes),
                                len(node.outs) > 1 or node.primitive.multiple_results, node.source))
        self._n_slots = len(slot)
        self._outputs = tuple((False, _scalar(a.aval.dtype.type(a.value))) if isinstance(a, Literal)
                              else (True, slot[a]) for a in graph.outputs)
        self._fast = _straight_line(self._steps, len(graph.inputs), self._outputs) \
            if len(self._steps) <= STRAIGHT_LINE_MAX else None

    def __call__(self, *args):
        inputs = [_as_value(value, var.aval.dtype) for var, value in zip(self.graph.inputs, args)]
        if not self.fresh:  # a loop's body, inside the evaluation of its graph
            return self._evaluate(inputs)
        with np.errstate(all="ignore"):
            results = self._evaluate(inputs)
        outs, seen = [], []
        for value in results:
            if isinstance(value, np.ndarray):
                # as the generated code does: never hand back the caller's array, a view, or one array twice
                if value.base is not None or not value.flags.writeable or any(value is a for a in args) \
                        or any(value is s for s in seen):
                    value = value.copy()
                seen.append(value)
            else:
                value = _scalar(value)
            outs.append(value)
        return tuple(outs)

    def _evaluate(self, inputs: list) -> tuple:
        """The outputs, from the inputs as ``_as_value`` made them."""
        if self._fast is not None:
            try:
                return self._fast(*inputs)
            except IndexOutOfBoundsError:  # (located already, in a loop's body)
                raise
            except IndexError:  # the straight-line code knows no lines: the steps one by one name it
                pass
        env = [None] * self._n_slots
        env[:len(inputs)] = inputs
        self._run(env)
        return tuple(env[x] if is_var else x for is_var, x in self._outputs)

    def _run(self, env: list) -> None:
        for ref, reads, params, writes, several, source in self._steps:
            try:
                result = ref(*[env[x] if is_var else x for is_var, x in reads], **params)
            except IndexOutOfBoundsError:  # (located already, in a loop's body)
                raise
            except IndexError as exc:  # x[i] at a traced i: named at the user's line
                raise out_of_bounds(exc, source) from None
            for (i, aval, message), value in zip(writes, result if several else (result,)):
                value = _as_value(value, aval.dtype)
                env[i] = value
                if message is not None and not np.all(np.isfinite(value)):
                    raise NonFiniteError(message)


# A graph of at most this many nodes is evaluated by a Python function written for it (``_straight_line``);
# a larger one (an unrolled loop of thousands of steps) step by step, rather than compile that much source.
STRAIGHT_LINE_MAX = 5000


def _straight_line(steps: list, n_inputs: int, outputs: tuple):
    """The evaluator's steps as one Python function of the inputs, a line per node calling its reference
    implementation (``v7 = r3(v2, c3_1, **p3)``), each value converted only where it is not already what
    ``_as_value`` makes (a NumPy scalar of the dtype for a 0-d value, an array of the dtype otherwise):
    interpreting the steps costs several microseconds a node, which small graphs (``fit``'s steps on
    NumPy) spend most of their time on. Same references, same order, same checks: same results."""
    env = {"ndarray": np.ndarray, "as_value": _as_value, "np": np, "NonFiniteError": NonFiniteError}
    lines = [f"def run({', '.join(f'v{i}' for i in range(n_inputs))}):"]
    for k, (ref, reads, params, writes, several, _) in enumerate(steps):
        env[f"r{k}"] = ref
        args = []
        for j, (is_var, x) in enumerate(reads):
            if is_var:
                args.append(f"v{x}")
            else:
                env[f"c{k}_{j}"] = x
                args.append(f"c{k}_{j}")
        if params:
            env[f"p{k}"] = params
            args.append(f"**p{k}")
        names = [f"v{i}" for i, _, _ in writes]
        target = "".join(n + ", " for n in names) if several else names[0]
        lines.append(f"    {target} = r{k}({', '.join(args)})")
        for (i, aval, message), name in zip(writes, names):
            env[f"d{i}"], env[f"t{i}"] = aval.dtype, aval.dtype.type
            if aval.shape:
                lines.append(f"    if {name}.__class__ is not ndarray or {name}.dtype is not d{i}: "
                             f"{name} = as_value({name}, d{i})")
            else:
                lines.append(f"    if {name}.__class__ is not t{i}: {name} = as_value({name}, d{i})")
            if message is not None:
                env[f"m{i}"] = message
                lines.append(f"    if not np.all(np.isfinite({name})): raise NonFiniteError(m{i})")
    results = []
    for j, (is_var, x) in enumerate(outputs):
        if is_var:
            results.append(f"v{x}")
        else:
            env[f"o{j}"] = x
            results.append(f"o{j}")
    lines.append(f"    return ({''.join(r + ', ' for r in results)})")
    exec(compile("\n".join(lines) + "\n", "<tracegrad evaluator>", "exec"), env)
    return env["run"]


class _CountedLoop:
    """A ``loop`` node as the primitive's ``ref`` runs it, with its body as an ``Evaluator`` built once (not
    interpreted again at every iteration): what runs ``fit``'s epochs until Numba is done."""

    def __init__(self, body: Graph, length: int, n_consts: int, n_carry: int, reverse: bool):
        self.evaluate = Evaluator(body, fresh=False)
        self.length, self.n_consts, self.n_carry = length, n_consts, n_carry
        self.order = range(length - 1, -1, -1) if reverse else range(length)
        self.carries = [o.aval.dtype for o in body.outputs[:n_carry]]
        self.ys = [o.aval for o in body.outputs[n_carry:]]

    def __call__(self, *inputs):
        n_consts, n_carry = self.n_consts, self.n_carry
        consts, carry, xs = inputs[:n_consts], inputs[n_consts:n_consts + n_carry], inputs[n_consts + n_carry:]
        ys = [np.empty((self.length,) + a.shape, a.dtype) for a in self.ys]
        for t in self.order:
            outs = self.evaluate(np.int64(t), *consts, *carry, *[x[t] for x in xs])
            carry = outs[:n_carry]
            for stacked, y in zip(ys, outs[n_carry:]):
                stacked[t] = y
        return [np.asarray(c, dtype)[()] for c, dtype in zip(carry, self.carries)] + ys


class _Origin:
    """A ``loop_nest`` node as the NumPy tier runs it: the array-level nodes it was lowered from (its
    ``origin``), each a whole-array NumPy operation, evaluated as a graph built once. The same values as
    the body run on broadcast index arrays (``loop_nest``'s ``ref``, which the primitive suite checks
    against the compiled loops), in a few NumPy calls on the arrays as they are instead of a view per
    read and a sum per ``add_at``: small loops (``fit``'s steps) run several times faster."""

    def __init__(self, node):
        self.evaluate = Evaluator(Graph(node.params["body"].name, list(node.inputs), list(node.params["origin"].nodes),
                                        list(node.outs)), fresh=False)
        self.shapes = [aval.shape for aval in node.params["avals_out"]]

    def __call__(self, *inputs):
        results, given = [], None
        for value, shape in zip(self.evaluate._evaluate(inputs), self.shapes):  # (inputs: values already)
            # fresh arrays of the output's shape, as the loop writes them (never an input, or a view)
            if not shape:  # (a 0-d value is a NumPy scalar here: immutable, as it is)
                pass
            elif value.__class__ is not np.ndarray or value.shape != shape:
                value = np.broadcast_to(value, shape).copy()
            elif value.base is not None:
                value = value.copy()
            else:
                given = given or {id(x) for x in inputs}
                if id(value) in given:
                    value = value.copy()
            results.append(value)
        return results if len(results) > 1 else results[0]


def _as_value(value, dtype):
    if value.__class__ is np.ndarray and value.dtype == dtype:
        return value if value.ndim else value[()]
    value = np.asarray(value, dtype)
    return value[()] if value.ndim == 0 else value


def _scalar(value):
    """A 0-d result as Numba returns it: a Python float, int or bool."""
    return value.item() if isinstance(value, (np.generic, np.ndarray)) else value


# ---------------------------------------------------------------------------------- the compile worker


class Job:
    """One module compiled in the worker: ``done`` is set when it finished; ``error`` says why it failed."""

    def __init__(self, label: str):
        self.label = label
        self.done = threading.Event()
        self.error: str | None = None
        self.seconds = 0.0  # in the worker
        self.started = time.perf_counter()
        self.then: list = []  # called with the job when it is done, in the worker's thread


class _Worker:
    """The one compile process: started on first need by its own thread, which sends it one job at a
    time and reads its answer."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None
        self.started = threading.Event()  # the process has been started (by the thread, after submit)
        self._closing = False

    def submit(self, key, request: dict, label: str, then) -> Job:
        """Compile ``request`` unless the same ``key`` is compiling or compiled; ``then(job)`` when done."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or (job.done.is_set() and job.error is not None):  # new, or failed: try again
                job = self._jobs[key] = Job(label)
                self._queue.put((job, request))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="tracegrad-compile", daemon=True)
                    self._thread.start()
                timer = threading.Timer(LOG_AFTER, _log_still_compiling, (job,))
                timer.daemon = True
                timer.start()
            done = job.done.is_set()
            if not done:
                job.then.append(then)
        if done:
            then(job)
        return job

    def _serve(self):
        # This thread starts the process and lives as long as it: Linux's parent-death signal follows the
        # thread that started the child.
        while True:
            job, request = self._queue.get()
            try:
                reply = self._ask(request)
            except Exception as exc:  # the worker died or could not start
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            job.seconds = reply.get("seconds", time.perf_counter() - job.started)
            job.error = reply.get("error")
            with self._lock:
                job.done.set()
                then, job.then = job.then, []
            for callback in then:
                try:
                    callback(job)
                except Exception:  # noqa: BLE001 (this thread must go on serving the other jobs)
                    _log.exception("tracegrad: handling the background compile of %s failed", job.label)

    def _ask(self, request: dict) -> dict:
        if self._closing:
            raise RuntimeError("the program is exiting")
        if self.process is None or self.process.poll() is not None:
            self.process = _start_process()
            self.started.set()
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the compile process exited (code {self.process.wait()})")
        return json.loads(line)

    def close(self):
        self._closing = True
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()  # a compile cut short leaves only Numba's temporary files, never a cache entry
            process.wait()


def _start_process() -> subprocess.Popen:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from tracegrad.tiers import serve; serve(int(sys.argv[1]))",
         str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        close_fds=True, cwd=package_root)  # (not the caller's directory: it may be a temporary one, removed later)


def _log_still_compiling(job: Job) -> None:
    if not job.done.is_set():
        _log.info("compiling %s with Numba in the background (%.0f s so far); calls run on NumPy until it is ready",
                  job.label, time.perf_counter() - job.started)


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _Worker()
            atexit.register(_worker.close)
        return _worker


def _forget_worker_after_fork() -> None:
    """In a forked child: the worker and its thread belong to the parent. Compiles the parent started
    never finish here, so they count as failed (the child evaluates); a new worker starts on need."""
    global _worker
    if _worker is not None:
        _worker.process, _worker._closing = None, True  # the parent's process: not ours to kill at exit
        _worker = None
    for compile_ in list(_started):
        if compile_.state == "pending":
            compile_.error, compile_.state = "the process forked while Numba compiled", "failed"
            compile_.ready.set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)


def worker_pid() -> int | None:
    """The compile process's id, if it is running (for tests and the curious); just after the first
    compile was asked for, waits for the worker's thread to start it."""
    if _worker is not None and _worker._thread is not None:
        _worker.started.wait(timeout=10)
    process = _worker.process if _worker is not None else None
    return process.pid if process is not None and process.poll() is None else None


# --------------------------------------------------------------------------- one function, two tiers


def describe(args) -> list:
    """The Numba types of a call's arguments, as JSON-able lists, worked out as ``numba.typeof`` does but
    without Numba (whose first use costs this process a second): ``["array", dtype, ndim, layout,
    writeable]`` or ``["scalar", dtype]``. Raises TypeError for anything else."""
    described = []
    for a in args:
        kind = a.__class__
        if kind is np.ndarray:
            flags = a.flags
            layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
            described.append(["array", a.dtype.str, a.ndim, layout, bool(flags.writeable)])
        elif kind is float or kind is bool or (kind is int and -2 ** 63 <= a < 2 ** 63):
            described.append(["scalar", {float: "<f8", bool: "|b1", int: "<i8"}[kind]])
        elif isinstance(a, np.generic) and a.dtype.kind in "biuf":
            described.append(["scalar", a.dtype.str])
        else:
            raise TypeError(f"no background compile for arguments of type {kind.__name__}")
    return described


class Background:
    """The compiled code of one dispatcher for one signature, loaded into this process by a thread (not
    the caller's) from Numba's disk cache, after the worker has compiled it into that cache if it was not
    there. ``poll()``: "compiled", "pending" or "failed" (after one ``CompileWarning``).

    With ``defer``, a compile from scratch waits for ``start()``: the caller starts it once its calls have
    spent ``compile_after()`` seconds on NumPy (``evaluated``). A compile slows this process's own NumPy
    work while it runs (this 2-core machine: the NumPy epochs of ``examples/train_digits.py`` took up to
    3x as long beside a Numba compile in another process), and a process that ends first throws it away:
    a short run is quicker on NumPy alone. Entries already in Numba's cache load at once."""

    def __init__(self, dispatcher, described: list, request: dict, label: str, path, cached: bool,
                 defer: bool = False):
        self.dispatcher, self.described, self.label, self.path = dispatcher, described, label, path
        self.state = "pending"
        self.error: str | None = None
        self.compile_seconds = 0.0  # in the worker (0 when it came from the cache)
        self.load_seconds = 0.0  # loading the cache entry here
        self.ready = threading.Event()
        self.job: Job | None = None
        self._request = request
        self._warned = False
        self._lock = threading.Lock()
        self._deferred = False  # a compile from scratch, waiting for start()
        self._evaluated = 0.0  # seconds the calls spent on NumPy while it waits
        self._defer = defer
        _started.add(self)
        if cached:  # Numba's cache has entries for this function: try them before compiling
            threading.Thread(target=self._load_or_compile, name="tracegrad-load", daemon=True).start()
        else:
            self._compile()

    def _compile(self):
        with self._lock:
            if self._defer:
                self._deferred = True
                return
        self.job = worker().submit((str(self.path), json.dumps(self.described)), self._request, self.label,
                                   self._compiled)

    def start(self) -> None:
        """Start a deferred compile now (nothing when it started already, or needs none)."""
        with self._lock:
            deferred, self._defer, self._deferred = self._deferred, False, False
        if deferred:
            _log.info("compiling %s with Numba in the background (its calls have run %.1f s on NumPy)",
                      self.label, self._evaluated)
            self._compile()

    def evaluated(self, seconds: float) -> None:
        """A call ran ``seconds`` on NumPy: start the deferred compile once they add up to ``compile_after()``."""
        self._evaluated += seconds
        if self._deferred and self._evaluated >= compile_after():
            self.start()

    def _load_or_compile(self):
        if not self._load():
            self._compile()

    def _compiled(self, job: Job) -> None:  # in the worker's thread
        self.compile_seconds = job.seconds
        if job.error is not None:
            self._fail(job.error)
        elif not self._load():
            self._fail("its compiled code was not in Numba's cache afterwards (is the directory writable?)")

    def _load(self) -> bool:
        """Load the cache entry here (the first time in a process, ~0.3-1 s of Numba's own imports)."""
        from . import backend

        t = time.perf_counter()
        try:
            loaded = backend.load_cached(self.dispatcher, self.described)
        except Exception as exc:  # noqa: BLE001 (reported as a failure; the evaluator carries on)
            self._fail(f"{type(exc).__name__}: {exc}")
            return True
        if loaded:
            self.load_seconds = time.perf_counter() - t
            self.state = "compiled"
            _log.info("%s %s (loaded from Numba's cache in %.0f ms); calls run compiled from now on",
                      f"compiled in the background in {self.compile_seconds:.1f} s:" if self.job else "ready:",
                      self.label, self.load_seconds * 1e3)
            self.ready.set()
        return loaded

    def _fail(self, error: str):
        self.error, self.state = error, "failed"
        self.ready.set()

    def poll(self, stacklevel: int = 2) -> str:
        """The state; a failure is reported once, as a warning pointing ``stacklevel`` frames up."""
        if self.state == "failed" and not self._warned:
            self._warned = True
            warnings.warn(f"Numba could not compile {self.path} in the background: {self.error}\n{self.label} "
                          f"keeps running on NumPy (compile='wait' raises the error; compile='never' skips Numba)",
                          CompileWarning, stacklevel=stacklevel + 1)
        return self.state

    def wait(self) -> str:
        self.start()
        self.ready.wait()
        return self.poll()


_started: weakref.WeakSet = weakref.WeakSet()


def wait_all() -> None:
    """Block until every background compile asked for so far has finished and been loaded (or failed),
    starting those still waiting for their calls to spend ``compile_after()`` seconds on NumPy.

    ``f.wait()`` does this for one function; this also covers ``fit``'s epoch functions."""
    for compile_ in list(_started):
        compile_.start()
        compile_.ready.wait()


def background(dispatcher, args, parts=(), label=None, load_now=False, defer=False) -> Background | None:
    """Get ``dispatcher`` (a function of a generated file, calling the functions ``parts`` of the same
    file) compiled for arguments like ``args`` without the caller waiting: a ``Background`` loading it
    from Numba's disk cache in a thread, or having the worker compile it first (with ``defer``, once the
    caller reports enough time on NumPy: ``Background.evaluated``). None when it is ready already (in
    memory, or with ``load_now`` loaded from the disk cache by the caller), or when the arguments are of a
    kind the worker cannot describe (then the call compiles it)."""
    from . import backend

    try:
        described = describe(args)
    except TypeError:
        return None
    if backend.is_loaded(dispatcher, described):
        return None
    cached = backend.has_cache_entries(dispatcher)
    if cached and load_now and backend.load_cached(dispatcher, described):
        return None
    path, function = backend.file_of(dispatcher)
    request = {"path": path, "function": function, "parts": list(parts), "types": described}
    return Background(dispatcher, described, request, label or function, path, cached,
                      defer=defer and compile_after() > 0.0)


# ------------------------------------------------------------------------------------ the worker's side


def serve(parent: int) -> None:
    """The compile process's main loop: one JSON request a line on stdin, one JSON answer a line."""
    _die_with(parent)
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what compiled code or Numba prints goes nowhere near the answers
    from . import backend

    for line in sys.stdin:
        request = json.loads(line)
        t = time.perf_counter()
        try:
            backend.compile_file(request["path"], request["function"], request["parts"], request["types"])
            answer = {"seconds": time.perf_counter() - t}
        except BaseException as exc:  # noqa: BLE001 (every failure is reported, the worker lives on)
            answer = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                      "seconds": time.perf_counter() - t}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, even mid-compile."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
