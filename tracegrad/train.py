"""``tg.fit``: minibatch training where each epoch is one compiled function.

    params, history = tg.fit(loss, params, (X, y), optimizer=tg.optim.SGD(lr=0.1, momentum=0.9),
                             batch_size=32, epochs=20, shuffle=True, seed=0)

``loss(params, X_batch, y_batch)`` is your plain NumPy loss. ``fit`` compiles its value and gradient
(``tg.value_and_grad(loss).specialize(...)``), then generates the source of one epoch for your number of
parameter arrays, data arrays and your optimiser, and compiles that with Numba too. One call of it
shuffles, gathers every minibatch, runs forward and backward, updates the parameters in place and
sums the loss, with no Python between steps. Print it with ``tg.train.epoch_source(...)`` (same
arguments as ``fit``).

The last batch: when ``batch_size`` does not divide the number of samples, the remaining ``n % batch_size``
samples form a smaller last batch. Its shapes differ, so the loss is compiled a second time for that
size: each step's loss is exactly your loss on exactly its samples (no padding, no masks), as PyTorch's
``DataLoader`` does. ``drop_last=True`` skips those samples instead (they change with every shuffle).

Your own loop. ``fit`` is built from pieces you can call from your own ``@numba.njit`` code: the
compiled value-and-gradient kernel (arguments: the flattened pytree leaves, dict keys sorted, then
``.captured()``) and the optimiser's update of one flat array::

    compiled = tg.value_and_grad(loss).specialize(params, X[:32], y[:32])
    vg, captured = compiled.dispatcher, compiled.captured()  # (W, b, Xb, yb, *captured) -> (loss, gW, gb)
    update = opt.kernel                                      # (param, grad, *state, lr, t, *hyperparameters)

    @numba.njit
    def train(W, b, X, y, vW, vb, rows, lr, momentum, weight_decay, nesterov):
        for s in range(X.shape[0] // 32):
            loss, gW, gb = vg(W, b, X[s * 32:(s + 1) * 32], y[s * 32:(s + 1) * 32], rows)
            update(W.reshape(-1), gW.ravel(), vW, lr, s + 1, momentum, weight_decay, nesterov)
            update(b, gb, vb, lr, s + 1, momentum, weight_decay, nesterov)

    train(W, b, X, y, np.zeros(W.size), np.zeros(b.size), captured[0], 0.1, *opt.hyperparameters())

(``captured[0]`` is the ``np.arange(32)`` that ``nn.softmax_cross_entropy`` indexes with.)
tests/test_fit.py::test_own_numba_loop_gives_what_fit_gives runs this and compares it with ``fit``.
"""
from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import __version__, backend, tiers
from .api import Function, value_and_grad
from .codegen import Module, comment_text
from .errors import (DataError, NonFiniteError, NonFiniteTrainingError, TracegradError, TrainingError,
                     TrainingInterrupted, raised_at)
from .ir import Aval, identifier
from .optim import Optimizer, _check_params, adam_update, rmsprop_update, sgd_update
from .primitives.random import random_fold_in
from .pytree import flatten, leaf_paths, unflatten

__all__ = ["fit", "History", "epoch_source"]

_PREFLIGHT_ROWS = 4096  # the first loss is evaluated eagerly over the data in chunks of this many rows


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch.

    ``loss``: the mean training loss of the epoch, over its minibatches as they were trained (weighted by
    batch size); ``val_loss`` and ``metrics[name]``: on the validation data after the epoch (on the
    training data if there is none); ``time``: seconds in the compiled epoch function; ``wall_time``:
    seconds for the whole epoch, with validation, metrics and progress;
    ``initial_loss``: the loss on the training data before training; ``compile_time``: seconds spent
    tracing and compiling (with ``compile="background"``, only preparing: Numba compiles meanwhile);
    ``compiled``: for each epoch, whether it ran compiled (True) or on NumPy while Numba was compiling
    (False); ``steps``: updates made. To resume exactly where training stopped, pass the
    optimiser state and the shuffle stream back: ``fit(..., state=history.state, seed=history.seed)``.
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    time: list = field(default_factory=list)
    wall_time: list = field(default_factory=list)
    initial_loss: float = math.nan
    compile_time: float = 0.0
    compiled: list = field(default_factory=list)
    steps: int = 0
    state: dict | None = field(default=None, repr=False)
    seed: int = 0


def fit(loss, params, data, *, optimizer: Optimizer, batch_size: int = 32, epochs: int = 1,
        shuffle: bool = True, seed: int = 0, drop_last: bool = False, validation=None, metrics=None,
        progress=True, state=None, compile=None, key=None):
    """Train ``params`` to minimise ``loss(params, *batch)`` over minibatches of ``data``.

    ``data`` is an array or a tuple of arrays with the same first dimension (samples); each step passes
    ``batch_size`` rows of each. ``params`` is any pytree of float arrays; it is copied, never modified,
    and the trained copy is returned with a ``History``. ``validation`` is a tuple like ``data``;
    ``metrics`` maps names to ``fn(params, *validation)`` (plain NumPy, run after every epoch).
    ``progress``: a tqdm bar over the epochs when tqdm is installed, else a printed line per epoch (at
    most about 20 lines; ``"plain"`` forces the lines, ``False`` is silent). To continue a run exactly,
    pass ``state=history.state, seed=history.seed``. ``epochs=0`` only compiles.

    ``key``: a ``tg.random.key(seed)`` for a loss that draws random numbers (dropout, noise): the loss is
    then called as ``loss(params, *batch, key)``, and update ``t`` (counted from 1 over the whole run, so a
    resumed run continues the sequence) gets the key ``tg.random.fold_in(key, t)``, in the compiled and the
    NumPy epochs alike. The initial loss, the validation loss and the checks before training call
    ``loss(params, *data, None)``: evaluation, where ``tg.nn.dropout`` does nothing.

    ``compile``: ``"background"`` (the default, see ``tg.set_compile``) starts training at once, running
    epochs on NumPy while Numba compiles the epoch function in another process, and switches to the
    compiled epochs between two epochs once it is ready (``history.compiled`` says which ran compiled);
    ``"wait"`` compiles first, and then gives the same results bit for bit on every run; ``"never"`` only
    uses NumPy. The NumPy epochs shuffle alike and agree with compiled ones to rounding.

    Like a ``tg.value_and_grad`` function, ``fit`` traces ``loss`` once per argument shapes and reuses the
    compiled code on later calls (and, from the disk cache, in later processes): arrays the loss reads
    from globals are read every epoch, Python numbers only at the first trace.

    >>> import numpy as np, tracegrad as tg
    >>> X = np.linspace(-1, 1, 64).reshape(-1, 1); y = 3 * X[:, 0] + 1
    >>> def loss(p, X, y):
    ...     return tg.nn.mse(X @ p["w"] + p["b"], y)
    >>> p, h = tg.fit(loss, {"w": np.zeros(1), "b": np.zeros(())}, (X, y), optimizer=tg.optim.SGD(lr=0.5),
    ...               batch_size=16, epochs=30, progress=False)
    >>> print(p["w"].round(3), p["b"].round(3), len(h.loss))
    [3.] 1.0 30

    Raises ``DataError`` for data of different lengths, a batch size outside [1, samples], labels out of
    range for a ``tg.nn`` loss, a loss that does not return one number; ``GradTypeError`` for parameters
    that are not float arrays. Once training has started, nothing is lost: every stop raises a
    ``TrainingError`` carrying ``err.params``, ``err.state`` and ``err.history``:

    - ``NonFiniteTrainingError`` (also a ``NonFiniteError``) when a loss or gradient is not finite: it names
      the epoch and step; ``err.params`` are those reached, to which no part of that step was applied;
    - ``TrainingInterrupted`` (also a ``KeyboardInterrupt``) for Ctrl-C, and ``TrainingError`` (from the
      original exception) when a metric, the validation loss or the progress bar raises: both carry the
      parameters, optimiser state and history after the last complete epoch, and
      ``fit(loss, err.params, data, ..., state=err.state, seed=err.history.seed, epochs=remaining)``
      continues exactly as the uninterrupted run would have.
    """
    data, batch_size = _check_arguments(loss, data, optimizer, batch_size)
    key = _check_key(key)
    if key is not None:
        loss = _Keyed(loss)
    n = data[0].shape[0]
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise DataError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an int, got {seed!r}")
    if validation is not None:
        validation = _as_arrays(validation, "validation")
    if metrics is not None and (not isinstance(metrics, dict) or not all(map(callable, metrics.values()))):
        raise DataError(f"metrics must be a dict of name: fn(params, *validation), got {metrics!r}")
    metrics = dict(metrics or {})
    if progress not in (True, False, "plain"):
        raise DataError(f"progress must be True, False or 'plain', got {progress!r}")
    mode = tiers.compile_mode() if compile is None else tiers.check_mode(compile)

    leaves, tree = flatten(params)
    _check_params(leaves, params)
    if not leaves:
        raise DataError("params has no arrays to train")
    leaves = [np.array(leaf, order="C", copy=True) for leaf in leaves]
    params = unflatten(tree, leaves)
    state = optimizer.init(params) if state is None else _copy_state(optimizer, state, params)
    slot_leaves = [flatten(state[slot])[0] for slot in optimizer.slots]

    history = History(state=state, metrics={name: [] for name in metrics}, steps=state["step"], seed=seed)
    history.initial_loss = _preflight(loss, params, data, "data")
    if validation is not None:
        _preflight(loss, params, validation, "validation")
    t_compile = time.perf_counter()
    trainer = _Trainer(loss, params, data, optimizer, batch_size, drop_last, key)
    keyed = () if key is None else (key,)
    rng_state = np.array([int(seed) % 2 ** 64], dtype=np.uint64)
    perm = np.arange(n, dtype=np.int64)
    flat_params = [leaf.reshape(-1) if leaf.ndim == 0 else leaf for leaf in leaves]
    flat_slots = [s.reshape(-1) for slots in slot_leaves for s in slots]

    hyperparameters = optimizer.hyperparameters()

    def run(n_steps, shuffle_now, compiled=True):
        lrs = np.array([optimizer.learning_rate(state["step"] + i) for i in range(n_steps)], dtype=np.float64)
        losses = np.zeros(max(n_steps, 1))
        args = (*flat_params, *data, *trainer.buffers, *trainer.captured(), *flat_slots, perm, rng_state,
                bool(shuffle_now), n_steps, lrs, state["step"], losses, *keyed, *hyperparameters)
        if not compiled:
            return trainer.evaluate_epoch(*args), losses
        try:
            return trainer.epoch(*args), losses
        except Exception as exc:  # a Numba error (CompileError), or its disk cache's (recovered from)
            return backend.call_failed(exc, trainer.module, trainer.epoch, args), losses

    def epoch_arguments():
        return (*flat_params, *data, *trainer.buffers, *trainer.captured(), *flat_slots, perm, rng_state, False, 0,
                np.zeros(0), state["step"], np.zeros(1), *keyed, *hyperparameters)

    compiling = None  # the background compile of the epoch function, until it is in use
    if mode == "wait":
        with backend.quiet_compile():
            run(0, False)  # compiles the epoch function (no steps)
    elif mode == "background":
        # from the disk cache it loads before the first epoch: a NumPy epoch may take longer than that
        compiling = tiers.background(trainer.epoch, epoch_arguments(), calls=trainer.calls,
                                     label=trainer.module.function, load_now=True)
    history.compile_time = time.perf_counter() - t_compile
    compiled = mode != "never" and compiling is None

    def checkpoint():  # copies: the compiled code updates the arrays in place
        return ([leaf.copy() for leaf in leaves], [[s.copy() for s in slots] for slots in slot_leaves],
                state["step"], int(rng_state[0]), len(history.loss))

    # What an interrupt or a failing metric hands back: the last epoch completed in full. It is replaced
    # by one assignment, so a Ctrl-C at any point leaves it whole.
    saved = checkpoint()
    reporter = _Progress(progress, epochs)
    doing, epoch = "training", 1
    try:
        for epoch in range(1, epochs + 1):
            doing = "training"
            # the tier changes between epochs only
            if compiling is not None and compiling.poll(stacklevel=2) != "pending":
                compiled, compiling = compiling.state == "compiled", None
            t0 = time.perf_counter()
            (code, done, total), losses = run(trainer.steps, shuffle, compiled)
            elapsed = time.perf_counter() - t0
            state["step"] += int(done)
            history.steps, history.seed = state["step"], int(rng_state[0])
            if code:
                raise _failure(trainer, loss, params, state, history, perm, epoch, int(done), int(code),
                               float(losses[done]))
            history.loss.append(float(total) / trainer.samples_per_epoch)
            history.time.append(elapsed)
            history.compiled.append(compiled)
            evaluate_on = validation if validation is not None else data
            if validation is not None:
                doing = "the validation loss"
                history.val_loss.append(float(loss(params, *validation)))
            for name, metric in metrics.items():
                doing = f"metric {name!r}"
                history.metrics[name].append(float(metric(params, *evaluate_on)))
            doing = "the progress report"
            reporter.epoch(epoch, history)
            history.wall_time.append(time.perf_counter() - t0)
            saved = checkpoint()
    except (TrainingError, DataError):  # a captured array changed shape: the user's to fix, before resuming
        raise
    except KeyboardInterrupt:
        raise _stopped(TrainingInterrupted, "interrupted", saved, tree, optimizer, history, epoch, epochs) from None
    except Exception as exc:
        raise _stopped(TrainingError, f"{doing} raised {type(exc).__name__}: {exc}", saved, tree, optimizer,
                       history, epoch, epochs) from exc
    finally:
        reporter.close()
    return params, history


def epoch_source(loss, params, data, *, optimizer: Optimizer, batch_size: int = 32, drop_last: bool = False,
                 key=None) -> str:
    """The generated source of ``fit``'s epoch function for these arguments: exactly what Numba compiles."""
    data, batch_size = _check_arguments(loss, data, optimizer, batch_size)
    leaves, _ = flatten(params)
    _check_params(leaves, params)
    return _Trainer(loss, params, data, optimizer, batch_size, drop_last, _check_key(key)).module.source


# ------------------------------------------------------------------------------ compiling an epoch


class _Trainer:
    """The compiled pieces of one ``fit``: the loss kernels (full and last batch) and the epoch function."""

    def __init__(self, loss, params, data, optimizer, batch_size, drop_last, key=None):
        n = data[0].shape[0]
        self.data = data
        self.key = key
        keyed = () if key is None else (key,)  # the loss's last argument: a key per step
        self.vg = _value_and_grad(loss.loss if isinstance(loss, _Keyed) else loss)
        last = 0 if drop_last else n % batch_size
        self.steps = n // batch_size + (1 if last else 0)
        self.samples_per_epoch = n - (n % batch_size if drop_last else 0)
        full_batch = [np.empty((batch_size,) + d.shape[1:], d.dtype) for d in data]
        last_batch = [np.empty((last,) + d.shape[1:], d.dtype) for d in data] if last else []
        self.buffers = full_batch + last_batch
        self.full = self.vg.specialize(params, *full_batch, *keyed)
        self.last = self.vg.specialize(params, *last_batch, *keyed) if last else None
        leaves = flatten(params)[0]
        paths = leaf_paths(params, "params")
        # fitting again with the same shapes writes the same epoch: kept with the loss kernel it calls
        key = (self.last.module.source if self.last else None, tuple(paths), tuple(leaf.ndim for leaf in leaves),
               len(data), type(optimizer), bool(keyed))
        epochs = self.full.__dict__.setdefault("_fit_epochs", {})
        if key not in epochs:
            epochs[key] = _generate(self.full, self.last, leaves, paths, len(data), optimizer, bool(keyed))
        self.module = epochs[key]
        self.epoch = backend.load(self.module)
        # The functions it calls are globals of the epoch module, set before it compiles. Its text names
        # their files (each named by the hash of its own text), so the epoch's file, and Numba's cache
        # of it, change whenever they do.
        called = self.epoch.py_func.__globals__
        called["value_and_grad"] = self.full.dispatcher
        if self.last is not None:
            called["value_and_grad_last"] = self.last.dispatcher
        called[_update_name(optimizer)] = optimizer.kernel
        # the same for the compile worker: name -> (dispatcher, the parts of its file it calls)
        self.calls = {"value_and_grad": (self.full.dispatcher, self.full.module.parts),
                      _update_name(optimizer): (optimizer.kernel, ())}
        if self.last is not None:
            self.calls["value_and_grad_last"] = (self.last.dispatcher, self.last.module.parts)
        self.optimizer, self.n_params, self.n_data = optimizer, len(leaves), len(data)
        self.scalar = [leaf.ndim == 0 for leaf in leaves]

    def evaluate_epoch(self, *args):
        """What the compiled epoch function does, on NumPy: the same arguments, shuffle, steps and checks,
        with the loss's evaluator (``tiers.Evaluator``) and the optimiser's update on whole arrays."""
        p, d = self.n_params, self.n_data
        params, data = args[:p], args[p:p + d]
        rest = args[p + d + len(self.buffers):]
        n_captured = len(self.full.traced.captures)
        n_last = len(self.last.traced.captures) if self.last is not None else 0
        captured, captured_last = rest[:n_captured], rest[n_captured:n_captured + n_last]
        rest = rest[n_captured + n_last:]
        n_slots = len(self.optimizer.slots) * p
        slots, (perm, rng_state, shuffle, n_steps, learning_rates, first_step, losses) = \
            rest[:n_slots], rest[n_slots:n_slots + 7]
        keyed = self.key is not None
        key, hyper = rest[n_slots + 7] if keyed else None, rest[n_slots + 7 + keyed:]
        update = _whole_array_update(self.optimizer)
        n = perm.shape[0]
        batch_size = self.buffers[0].shape[0]
        if shuffle:
            _shuffle(perm, rng_state)
        kernel_params = [q[0] if s else q for q, s in zip(params, self.scalar)]
        total = 0.0
        n_full = min(n_steps, n // batch_size)
        plan = [(step, step * batch_size, batch_size, self.full, captured) for step in range(n_full)]
        if n_steps > n_full:  # the last, smaller batch
            plan.append((n_full, n_full * batch_size, n - n_full * batch_size, self.last, captured_last))
        for step, start, size, compiled, captured_now in plan:
            rows = perm[start:start + size]
            step_key = () if key is None else (random_fold_in(key, np.uint64(first_step + step + 1)),)
            out = compiled.evaluator(*kernel_params, *(x[rows] for x in data), *step_key, *captured_now)
            loss = out[0]
            grads = [np.full(1, g) if s else np.asarray(g).ravel() for g, s in zip(out[1:], self.scalar)]
            losses[step] = loss
            if not np.isfinite(loss):
                return 1, step, total
            if not np.isfinite(sum(np.sum(g) for g in grads)):
                return 2, step, total
            lr, t = learning_rates[step], first_step + step + 1
            for i, (q, g) in enumerate(zip(params, grads)):
                update(q.reshape(-1), g, *slots[i::p], lr, t, *hyper)
            total += loss * size
        return 0, n_steps, total

    def captured(self) -> list:
        """The arrays the loss reads from its closure or globals, as they are now (read every epoch)."""
        values = []
        for compiled in (self.full, self.last):
            for capture, value in zip(compiled.traced.captures, compiled.captured()) if compiled else ():
                aval = capture.var.aval
                if value.shape != aval.shape or value.dtype != aval.dtype:
                    raise DataError(f"an array the loss reads from outside ({capture.var.hint or 'captured'}) "
                                    f"changed from {aval} to {Aval(value.shape, value.dtype)} during fit",
                                    hint="change its values in place, or call fit again")
                values.append(value)
        return values


_SPLITMIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _shuffle(perm, rng_state) -> None:
    """The epoch function's Fisher-Yates shuffle driven by splitmix64, its random numbers drawn at once."""
    n = perm.shape[0]
    golden, mix1, mix2 = _SPLITMIX
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as in the compiled code
        rng = rng_state[0] + np.arange(1, n, dtype=np.uint64) * golden
        z = (rng ^ (rng >> np.uint64(30))) * mix1
        z = (z ^ (z >> np.uint64(27))) * mix2
        z = z ^ (z >> np.uint64(31))
    i = np.arange(n - 1, 0, -1, dtype=np.uint64)
    js = (z % (i + np.uint64(1))).tolist()
    order = list(range(n))
    for i, j in zip(range(n - 1, 0, -1), js):
        order[i], order[j] = order[j], order[i]
    perm[:] = order
    if n > 1:
        rng_state[0] = rng[-1]


class _WholeArray:
    """A flat array that an optimiser's update indexes as its only element: the built-in updates are
    elementwise (``for i in range(param.shape[0]): param[i] -= lr * g``), so their loop runs once, on
    whole arrays, in NumPy."""

    shape = (1,)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, i):
        return self.array

    def __setitem__(self, i, value):
        self.array[...] = value


def _whole_array_update(optimizer):
    """The optimiser's update on NumPy arrays for the built-in optimisers; the compiled kernel otherwise."""
    function = optimizer.update_function
    if function not in (sgd_update, adam_update, rmsprop_update):
        return optimizer.kernel

    def update(param, grad, *rest):
        n_slots = len(optimizer.slots)
        function(_WholeArray(param), _WholeArray(grad), *(_WholeArray(s) for s in rest[:n_slots]), *rest[n_slots:])
    return update


_TRANSFORMED = weakref.WeakKeyDictionary()


def _value_and_grad(loss) -> Function:
    """``value_and_grad(loss)``, one per loss function, so that fitting it again reuses its traces (like
    any transformed function, it reads Python numbers from globals once, at its first trace)."""
    try:
        return _TRANSFORMED[loss]
    except (KeyError, TypeError):
        pass
    vg = value_and_grad(loss)
    try:
        _TRANSFORMED[loss] = vg
    except TypeError:  # not weak-referenceable: no reuse
        pass
    return vg


# the names the epoch's code uses for itself; the user's parameter keys and hyperparameters take others
_EPOCH_NAMES = frozenset({
    "n", "batch_size", "n_full", "step", "start", "k", "row", "out", "loss", "lr", "t", "total", "rng", "z", "i", "j",
    "perm", "rng_state", "shuffle", "n_steps", "learning_rates", "first_step", "losses", "np", "value_and_grad",
    "value_and_grad_last", "key", "step_key", "random_fold_in"})


def _update_name(optimizer) -> str:
    """The epoch module's global holding the optimiser's compiled update (set before it compiles)."""
    name = identifier(optimizer.update_function.__name__)
    return name + "_fn" if name in _EPOCH_NAMES else name


def _generate(full, last, leaves, paths, n_data, optimizer, keyed=False) -> Module:
    """The source of one epoch: shuffle, then for each step gather, value and gradient, check, update."""
    used = set(_EPOCH_NAMES)

    def fresh(name):  # an ASCII identifier no other name of the module has, whatever the user's keys
        name = identifier(name)
        base, i = name, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    update = fresh(_update_name(optimizer))
    hyper = [fresh(name) for name in optimizer.hyperparameter_names()]

    suffixes = [p[len("params"):] for p in paths]  # "_W0", or "" for a single array
    params = [fresh(p) for p in paths]
    grads = [fresh("grad" + s) for s in suffixes]
    slots = [[fresh(slot + s) for s in suffixes] for slot in optimizer.slots]
    data = [fresh(f"data_{i}") for i in range(n_data)]
    batch = [fresh(f"batch_{i}") for i in range(n_data)]
    last_batch = [fresh(f"last_{i}") for i in range(n_data)] if last is not None else []
    captured = [fresh(f"captured_{i}") for i in range(len(full.traced.captures))]
    captured_last = [fresh(f"captured_last_{i}") for i in range(len(last.traced.captures))] if last is not None else []
    scalar = [leaf.ndim == 0 for leaf in leaves]
    flats = [fresh("flat_" + p) for p in params]
    kernel_args = [f"{p}[0]" if s else p for p, s in zip(params, scalar)]

    def step_block(kernel, batch_names, captured_names, size, indent):
        pad = " " * indent
        lines = [f"for k in range({size}):",
                 "    row = perm[start + k]"]
        lines += [f"    {b}[k] = {d}[row]" for b, d in zip(batch_names, data)]
        if keyed:
            lines.append("step_key = random_fold_in(key, np.uint64(first_step + step + 1))  # a key per update")
        lines.append(f"out = {kernel}({', '.join(kernel_args + batch_names + (['step_key'] if keyed else []) + captured_names)})")
        lines.append("loss = out[0]")
        for i, (g, s) in enumerate(zip(grads, scalar)):
            lines.append(f"{g} = np.full(1, out[{i + 1}])" if s else f"{g} = out[{i + 1}].ravel()")
        lines += ["losses[step] = loss",
                  "if not np.isfinite(loss):  # stop before this step's update; fit raises TrainingError",
                  "    return 1, step, total",
                  f"if not np.isfinite({' + '.join(f'np.sum({g})' for g in grads)}):  # NaN or inf in a gradient",
                  "    return 2, step, total",
                  "lr = learning_rates[step]",
                  "t = first_step + step + 1"]
        for i, (flat, g) in enumerate(zip(flats, grads)):
            state = ", ".join(s[i] for s in slots)
            lines.append(f"{update}({flat}, {g}, {state + ', ' if state else ''}lr, t, {', '.join(hyper)})")
        lines.append(f"total += loss * {size}")
        return [pad + line for line in lines]

    header = [
        f"# Generated by tracegrad {__version__}: one epoch of tg.fit, {comment_text(type(optimizer).__name__)} on "
        f"{full.module.function}. Do not edit:",
        "# the file is named by the hash of this text. tracegrad.train sets these before compiling:",
        f"#   value_and_grad = {full.module.function} in {backend.module_path(full.module).name}",
    ]
    if last is not None:
        rows = last.graph.inputs[len(params)].aval.shape[0]
        header.append(f"#   value_and_grad_last = the same for the last batch of {rows}, "
                      f"in {backend.module_path(last.module).name}")
    header.append(f"#   {update} = {update} in {backend.module_path(optimizer.kernel_module()).name}")
    header += ["import numpy as np"] + (["from tracegrad.kernels import random_fold_in"] if keyed else [])
    header += ["", "value_and_grad = None"]
    if last is not None:
        header.append("value_and_grad_last = None")
    header.append(f"{update} = None")
    arguments = (params + data + batch + last_batch + captured + captured_last + [s for ss in slots for s in ss]
                 + ["perm", "rng_state", "shuffle", "n_steps", "learning_rates", "first_step", "losses"]
                 + (["key"] if keyed else []) + hyper)
    body = [f"    {flat} = {p}.reshape(-1)" for flat, p in zip(flats, params)]
    body += [
        "    n = perm.shape[0]",
        f"    batch_size = {batch[0]}.shape[0]",
        "    if shuffle:",
        "        # Fisher-Yates driven by splitmix64: the same seed gives the same order everywhere",
        "        for i in range(n):",
        "            perm[i] = i",
        "        rng = rng_state[0]",
        "        for i in range(n - 1, 0, -1):",
        "            rng += np.uint64(0x9E3779B97F4A7C15)",
        "            z = (rng ^ (rng >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)",
        "            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)",
        "            z = z ^ (z >> np.uint64(31))",
        "            j = np.int64(z % np.uint64(i + 1))",
        "            perm[i], perm[j] = perm[j], perm[i]",
        "        rng_state[0] = rng",
        "    total = 0.0",
        "    n_full = min(n_steps, n // batch_size)",
        "    for step in range(n_full):",
        "        start = step * batch_size",
    ]
    body += step_block("value_and_grad", batch, captured, "batch_size", 8)
    if last is not None:
        body += ["    if n_steps > n_full:  # the last, smaller batch",
                 "        step = n_full",
                 "        start = step * batch_size"]
        body += step_block("value_and_grad_last", last_batch, captured_last, f"{last_batch[0]}.shape[0]", 8)
    body.append("    return 0, n_steps, total")
    name = full.module.function.removesuffix("_value_and_grad") + "_fit_epoch"
    signature = _wrap_signature(f"def {name}(", arguments)
    source = "\n".join(header + ["", ""] + signature + body) + "\n"
    return Module(source, name, ())


def _wrap_signature(start: str, arguments: list, width: int = 110) -> list:
    lines, line = [], start
    for i, arg in enumerate(arguments):
        piece = arg + ("):" if i == len(arguments) - 1 else ", ")
        if len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = " " * len(start) + piece
        else:
            line += piece
    lines.append(line)
    return lines


# ------------------------------------------------------------------------------ checks and reports


class _Keyed:
    """The loss of a ``fit`` with a key, as the checks and the validation call it: ``loss(params, *data, None)``."""

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, params, *data):
        return self.loss(params, *data, None)


def _check_key(key):
    if key is None:
        return None
    if isinstance(key, (np.ndarray, np.generic)) and key.dtype == np.uint64 and key.ndim == 0:
        return np.uint64(key)
    raise DataError(f"key must be a key made by tg.random.key(seed), got {key!r}")


def _check_arguments(loss, data, optimizer, batch_size):
    if isinstance(loss, Function):
        raise DataError(f"fit takes the plain loss function, not {loss!r}: it differentiates it itself")
    if not callable(loss):
        raise DataError(f"loss must be a function loss(params, *batch), got {loss!r}")
    if not isinstance(optimizer, Optimizer):
        raise DataError(f"optimizer must be a tracegrad optimiser such as tg.optim.SGD(lr=0.1), got {optimizer!r}")
    data = _as_arrays(data, "data")
    n = data[0].shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= n:
        raise DataError(f"batch_size must be an int from 1 to the number of samples ({n}), got {batch_size!r}")
    return data, int(batch_size)


def _as_arrays(data, what) -> tuple:
    if isinstance(data, np.ndarray):
        data = (data,)
    if not isinstance(data, (tuple, list)) or not data:
        raise DataError(f"{what} must be an array or a tuple of arrays (X, y, ...), got {type(data).__name__}")
    arrays = []
    for i, d in enumerate(data):
        d = np.ascontiguousarray(d)
        if d.ndim == 0 or d.dtype.kind not in "biuf":
            raise DataError(f"{what}[{i}] must be a numeric array with one row per sample, got "
                            f"{'a scalar' if d.ndim == 0 else f'dtype {d.dtype}'}")
        arrays.append(d)
    lengths = [d.shape[0] for d in arrays]
    if len(set(lengths)) > 1:
        raise DataError(f"the arrays of {what} have different numbers of samples: "
                        + ", ".join(f"{what}[{i}] has {m}" for i, m in enumerate(lengths)))
    if lengths[0] == 0:
        raise DataError(f"{what} has no samples")
    return tuple(arrays)


def _copy_state(optimizer, state, params) -> dict:
    leaves, tree = flatten(params)
    copied = {"step": int(state["step"])}
    for slot in optimizer.slots:
        values, slot_tree = flatten(state.get(slot))
        if slot_tree != tree or any(np.shape(v) != p.shape for v, p in zip(values, leaves)):
            raise DataError(f"state[{slot!r}] does not match the parameters: pass the state fit returned for them")
        copied[slot] = unflatten(tree, [np.array(v, dtype=p.dtype, order="C") for v, p in zip(values, leaves)])
    return copied


def _preflight(loss, params, data, what) -> float:
    """The loss over all the data, eagerly in NumPy: checks labels and the like before anything compiles.
    (An index the compiled code would find out of bounds fails here first: the same loss, the same data.)"""
    n, total = data[0].shape[0], 0.0
    for start in range(0, n, _PREFLIGHT_ROWS):
        rows = slice(start, start + _PREFLIGHT_ROWS)
        try:
            value = loss(params, *(d[rows] for d in data))
        except IndexError as exc:
            raise DataError(f"the loss raised IndexError on rows {start}..{min(n, start + _PREFLIGHT_ROWS) - 1} "
                            f"of the {what}: are the labels in range? ({exc})", raised_at(exc)) from None
        except TracegradError:
            raise
        except Exception as exc:  # shapes that do not fit, a loss taking other arguments ...
            raise DataError(f"the loss raised {type(exc).__name__} on the {what} before training: {exc}",
                            raised_at(exc), hint=f"fit calls loss(params, *{what}) on batches of rows of each "
                            f"array in the {what}") from None
        if np.ndim(value) != 0 or not isinstance(value, (float, int, np.floating, np.integer, np.ndarray)):
            shape = f"shape {np.shape(value)}" if hasattr(value, "shape") else f"a {type(value).__name__}"
            raise DataError(f"the loss must return one number (the mean over the batch), got {shape}",
                            hint="reduce it, e.g. return np.mean(...), or tg.nn.mse(pred, y)")
        total += float(value) * (min(n, start + _PREFLIGHT_ROWS) - start)
    return total / n


def _stopped(error, why, saved, tree, optimizer, history, epoch, epochs) -> TrainingError:
    """The error for training stopped in ``epoch`` by an interrupt or an exception, carrying the parameters,
    optimiser state and history of the last complete epoch (``saved``) as ``fit`` would have returned them."""
    leaves, slots, step, seed, done = saved
    params = unflatten(tree, leaves)
    state = {"step": step}
    for slot, values in zip(optimizer.slots, slots):
        state[slot] = unflatten(tree, values)
    kept = History(loss=history.loss[:done], val_loss=history.val_loss[:done],
                   metrics={name: values[:done] for name, values in history.metrics.items()},
                   time=history.time[:done], wall_time=history.wall_time[:done], initial_loss=history.initial_loss,
                   compile_time=history.compile_time, steps=step, state=state, seed=seed)
    return error(
        f"training stopped in epoch {epoch} of {epochs}: {why}"
        f"\n  err.params, err.state, err.history: as after epoch {done} ({step} updates); epoch {epoch} is discarded",
        epoch=epoch, step=None, params=params, state=state, history=kept,
        hint=f"continue with fit(loss, err.params, data, ..., state=err.state, seed=err.history.seed, "
             f"epochs={epochs - done}): the same as the uninterrupted run")


def _failure(trainer, loss, params, state, history, perm, epoch, step, code, value) -> NonFiniteTrainingError:
    """The error for a non-finite loss (code 1) or gradient (code 2) at ``step`` (from 0) of ``epoch``."""
    size = trainer.buffers[0].shape[0]
    rows = perm[step * size:(step + 1) * size]
    batch = tuple(d[rows] for d in trainer.data)
    if trainer.key is not None:
        batch += (random_fold_in(trainer.key, np.uint64(state["step"] + 1)),)
        loss = loss.loss
    what = f"the loss is {value}" if code == 1 else f"the loss is {value:.6g} but its gradient is not finite"
    if code == 2:
        grads = flatten(trainer.vg(params, *batch)[1])[0]
        names = [name for name, g in zip(leaf_paths(params, "params"), grads) if not np.all(np.isfinite(g))]
        what += f" (in {', '.join(names)})"
    detail = ""
    try:
        value_and_grad(loss, debug_nans=True, compile="never")(params, *batch)  # the same checks, no Numba
    except NonFiniteError as exc:
        detail = f"\n  first non-finite value: {exc.message}"
    except Exception:  # the diagnosis is a bonus: never hide the real failure behind it
        pass
    update = state["step"] + 1
    return NonFiniteTrainingError(
        f"training stopped at epoch {epoch}, step {step + 1} of {trainer.steps} (update {update}): {what}{detail}"
        f"\n  err.params: the parameters after update {update - 1}; no part of update {update} was applied",
        epoch=epoch, step=step + 1, params=params, state=state, history=history,
        hint="lower the learning rate, normalise the inputs, or use a stable loss from tg.nn (logits forms)")


class _Progress:
    """One tqdm bar over the epochs when tqdm is installed (progress=True), else printed lines: every
    epoch up to 20 epochs, beyond that the first, every (epochs // 20)-th and the last."""

    def __init__(self, progress, epochs):
        self.epochs, self.bar, self.plain = epochs, None, False
        self.every = max(1, epochs // 20)
        if progress is True:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=epochs, unit="epoch", desc="fit")
            except ImportError:
                self.plain = True
        elif progress == "plain":
            self.plain = True

    def epoch(self, epoch, history):
        parts = [f"loss {history.loss[-1]:.4f}"]
        tier = "compiled" if history.compiled[-1] else "evaluating"
        if history.val_loss:
            parts.append(f"val_loss {history.val_loss[-1]:.4f}")
        parts += [f"{name} {values[-1]:.4f}" for name, values in history.metrics.items()]
        if self.bar is not None:
            self.bar.set_postfix_str("  ".join(parts + [tier]), refresh=False)
            self.bar.update(1)
        elif self.plain and (epoch % self.every == 0 or epoch in (1, self.epochs)):
            width = len(str(self.epochs))
            print(f"epoch {epoch:>{width}}/{self.epochs}  " + "  ".join(parts)
                  + f"  ({history.time[-1] * 1e3:.1f} ms, {tier})", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
