"""``tg.fit``: minibatch training where each epoch is one compiled function.

    params, history = tg.fit(loss, params, (X, y), optimizer=tg.optim.SGD(lr=0.1, momentum=0.9),
                             batch_size=32, epochs=20, shuffle=True, seed=0)

``loss(params, X_batch, y_batch)`` is your plain NumPy loss. ``fit`` writes one epoch as a plain function
and compiles it with ``tg.jit``, through the same pipeline (trace, autodiff, passes, codegen, Numba, the
disk cache, the NumPy tier) as any other: the rows' order (``permutation``, a shuffle driven by the
seed), then a ``tg.scan`` over the minibatches whose body gathers the batch's rows, takes the loss's
value and gradient (``tg.value_and_grad(loss)``, traced into the body) and applies the optimiser's
update (its ``update_function``, traced on whole arrays). So one call shuffles, gathers every minibatch,
runs forward and backward, updates the parameters and records every step's loss, with no Python between
steps. Print it with ``tg.train.epoch_source(...)`` (same arguments as ``fit``).

The last batch: when ``batch_size`` does not divide the number of samples, the remaining ``n % batch_size``
samples form a smaller last batch. Its shapes differ, so the loss is traced a second time for that
size, after the loop: each step's loss is exactly your loss on exactly its samples (no padding, no masks), as PyTorch's
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

import functools
import linecache
import math
import operator
import sys
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import backend, tiers
from .api import Function, jit, value_and_grad
from .core import TracedArray, current_builder
from .errors import (DataError, NonFiniteError, NonFiniteTrainingError, SourceInfo, TracegradError, TrainingError,
                     TrainingInterrupted, raised_at)
from .ir import Aval
from .loops import scan
from .optim import Optimizer, _check_params
from . import random
from .primitives.shuffle import next_seed, permutation
from .pytree import flatten, leaf_paths, unflatten

__all__ = ["fit", "History", "epoch_source"]

COUNTED_CHECK = 1024  # a step's gradients of this many elements or more are checked by counting (_all_finite)
_PREFLIGHT_ROWS = 4096  # history.initial_loss is evaluated eagerly over the data in chunks of this many rows


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch.

    ``loss``: the mean training loss of the epoch, over its minibatches as they were trained (weighted by
    batch size); ``val_loss`` and ``metrics[name]``: on the validation data after the epoch (on the
    training data if there is none); ``time``: seconds in the compiled epoch function; ``wall_time``:
    seconds for the whole epoch, with validation, metrics and progress;
    ``initial_loss``: the loss on the training data before training (see below); ``compile_time``: seconds spent
    tracing and compiling (with ``compile="background"``, only preparing: Numba compiles meanwhile);
    ``compiled``: for each epoch, whether it ran compiled (True) or on NumPy while Numba was compiling
    (False); ``steps``: updates made. To resume exactly where training stopped, pass the
    optimiser state and the shuffle stream back: ``fit(..., state=history.state, seed=history.seed)``.

    ``initial_loss`` is a pass of the loss over all the data, eagerly in NumPy, which training itself does
    not need: ``fit`` leaves it to be computed when it is first read (then kept), from the parameters it
    started from and the data it was given (change those arrays in place before reading it and it is
    theirs). It is a property over the field ``_initial_loss``: a number, or a function of no arguments
    that computes it (``fit`` sets that).
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    time: list = field(default_factory=list)
    wall_time: list = field(default_factory=list)
    compile_time: float = 0.0
    compiled: list = field(default_factory=list)
    steps: int = 0
    state: dict | None = field(default=None, repr=False)
    seed: int = 0
    _initial_loss: object = field(default=math.nan, repr=False)  # a float, or a function computing it

    @property
    def initial_loss(self) -> float:
        """The loss on the training data before training, computed when first read."""
        if callable(self._initial_loss):
            self._initial_loss = float(self._initial_loss())
        return self._initial_loss

    @initial_loss.setter
    def initial_loss(self, value) -> None:
        self._initial_loss = value


def fit(loss, params, data, *, optimizer: Optimizer, batch_size: int = 32, epochs: int = 1,
        shuffle: bool = True, seed: int = 0, drop_last: bool = False, validation=None, metrics=None,
        progress=True, state=None, compile=None, parallel=None, key=None):
    """Train ``params`` to minimise ``loss(params, *batch)`` over minibatches of ``data``.

    ``data`` is an array or a tuple of arrays with the same first dimension (samples); each step passes
    ``batch_size`` rows of each. ``params`` is any pytree of float arrays; it is copied, never modified,
    and the trained copy is returned with a ``History``. ``validation`` is a tuple like ``data``;
    ``metrics`` maps names to ``fn(params, *validation)`` (plain NumPy, run after every epoch).
    ``progress``: a tqdm bar over the epochs when tqdm is installed, else a printed line per epoch (at
    most about 20 lines; ``"plain"`` forces the lines, ``False`` is silent). To continue a run exactly,
    pass ``state=history.state, seed=history.seed``. ``epochs=0`` only compiles (with ``compile="wait"``;
    with ``"background"`` it starts the compile).

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

    ``parallel``: as for ``tg.grad`` (default ``tg.set_parallel``'s, else off): a step's large fused loops
    run on all of Numba's threads; the steps themselves run one after another.

    Like a ``tg.value_and_grad`` function, ``fit`` traces ``loss`` once per argument shapes and reuses the
    compiled code on later calls (and, from the disk cache, in later processes): arrays the loss reads
    from globals are read every epoch, Python numbers only at the first trace. The learning rate (its
    schedule, at every step) and the optimiser's other hyperparameters are arguments of the compiled
    epoch, so other values do not compile it again; which hyperparameters are 0 (momentum=0: no
    velocity) is decided when the epoch is traced.

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
    evaluate = loss if key is None else _Keyed(loss)  # (evaluation: no key, no dropout)
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
    parallel = tiers.parallel_mode() if parallel is None else tiers.check_parallel(parallel, "fit: parallel", rows=False)

    leaves, tree = flatten(params)
    _check_params(leaves, params)
    if not leaves:
        raise DataError("params has no arrays to train")
    params = unflatten(tree, [np.array(leaf, order="C", copy=True) for leaf in leaves])
    state = optimizer.init(params) if state is None else _copy_state(optimizer, state, params)

    history = History(state=state, metrics={name: [] for name in metrics}, steps=state["step"], seed=seed)
    _preflight(evaluate, params, data, "data", batch_size)
    if validation is not None:
        _preflight(evaluate, params, validation, "validation", batch_size)
    # computed when first read: fit never changes the arrays of `params` (each epoch returns new ones),
    # but with epochs=0 it returns them, for the caller to change
    history.initial_loss = functools.partial(_mean_loss, evaluate, unflatten(tree, flatten(params)[0]), data, "data")
    if epochs == 0:
        history.initial_loss
    t_compile = time.perf_counter()
    plan = _Plan(data[0].shape[0], batch_size, drop_last)
    hyperparameters = {name: np.array(value) for name, value in zip(optimizer.hyperparameter_names(),
                                                                    optimizer.hyperparameters())}
    seed = int(seed) % 2 ** 64
    in_order = np.arange(plan.n)

    def rates_at(first):  # the learning rates of an epoch starting after update `first`
        if callable(optimizer.lr):  # a schedule: its rate at each step
            return np.array([optimizer.learning_rate(first + i) for i in range(plan.steps)], dtype=np.float64)
        return np.full(plan.steps, optimizer.learning_rate(first), dtype=np.float64)

    first = state["step"]
    order = np.array(seed, np.uint64) if shuffle else in_order  # (the epoch draws the order from the seed)
    first_arguments = (params, {slot: state[slot] for slot in optimizer.slots}, data, order, rates_at(first),
                       np.arange(first + 1, first + 1 + plan.steps, dtype=np.int64), hyperparameters) + \
        (() if key is None else (key,))  # (the epoch takes a key only when the loss does)
    entry = _specialize(loss, optimizer, batch_size, bool(shuffle), bool(drop_last), mode, first_arguments,
                        key is not None, parallel)
    if mode == "wait" and entry.tier != "compiled":  # (fitting again: its calls run compiled already)
        entry.announce_compile(entry.dispatcher)
        with backend.quiet_compile():
            backend.compile_for(entry.dispatcher, tiers.describe(_kernel_args(entry, first_arguments)), entry.module)
    elif mode == "background":  # from the disk cache it loads before the first epoch, else it compiles meanwhile
        try:
            entry.background(_kernel_args(entry, first_arguments), load_now=True)
        except Exception:  # noqa: BLE001 (an unreadable cache: the first epoch's call recovers, on NumPy)
            pass
    history.compile_time = time.perf_counter() - t_compile

    # The epochs run on the epoch function's flat arguments: its first leaves, the parameters' and the
    # optimiser state's (``trainable``), are replaced by the results of each epoch, which come first among
    # its outputs in the same order; the trees are built when something needs them.
    leaves = flatten(first_arguments)[0]
    pair_tree = flatten((params, {slot: state[slot] for slot in optimizer.slots}))[1]
    trainable = leaves[:pair_tree.num_leaves]
    at_order = pair_tree.num_leaves + len(data)  # then the rates and the step numbers

    def trees(trainable):
        new_params, slots = unflatten(pair_tree, trainable)
        return new_params, {"step": state["step"], **slots}

    # What an interrupt or a failing metric hands back: the last epoch completed in full. It is replaced
    # by one assignment, so a Ctrl-C at any point leaves it whole (the arrays are never changed in place:
    # each epoch returns new ones).
    saved = (trainable, state["step"], seed, 0)
    reporter = _Progress(progress, epochs)
    doing, epoch = "training", 1
    steps_total, full = plan.steps, plan.full
    try:
        for epoch in range(1, epochs + 1):
            doing = "training"
            first = state["step"]
            leaves[at_order:at_order + 3] = (np.array(seed, np.uint64) if shuffle else in_order,  # (drawn from the seed)
                                             rates_at(first), np.arange(first + 1, first + 1 + steps_total, dtype=np.int64))
            leaves[:len(trainable)] = trainable
            _check_captures(entry)
            t0 = time.perf_counter()
            # the tier changes between epochs only: one call is one epoch
            outs = entry.call(leaves)
            elapsed = time.perf_counter() - t0
            losses, finite = outs[len(trainable)], outs[len(trainable) + 1]
            done = steps_total if finite.all() else int(np.argmin(finite))
            # as after step `done` (a step that failed changed nothing); a 0-d array comes back a number
            trainable = [new if type(new) is np.ndarray else np.asarray(new, old.dtype).reshape(old.shape)
                         for new, old in zip(outs, trainable)]
            epoch_seed = seed
            if shuffle:
                seed = next_seed(seed, plan.n)
            state["step"] += done
            history.steps, history.seed = state["step"], seed
            if done < steps_total:
                params, state = trees(trainable)
                history.state = state
                code = 1 if not np.isfinite(losses[done]) else 2
                raise _failure(loss, plan, data, params, state, history, np.array(epoch_seed, np.uint64)
                               if shuffle else None, epoch, done, code, float(losses[done]), key)
            total, values = 0.0, losses.tolist()
            for value in values[:full]:  # in order, as a running sum
                total += value * batch_size
            if steps_total > full:
                total += values[full] * plan.last
            history.loss.append(total / plan.samples)
            history.time.append(elapsed)
            history.compiled.append(entry.tier == "compiled")
            if validation is not None or metrics:
                params = trees(trainable)[0]
            evaluate_on = validation if validation is not None else data
            if validation is not None:
                doing = "the validation loss"
                history.val_loss.append(float(evaluate(params, *validation)))
            for name, metric in metrics.items():
                doing = f"metric {name!r}"
                history.metrics[name].append(float(metric(params, *evaluate_on)))
            doing = "the progress report"
            reporter.epoch(epoch, history)
            history.wall_time.append(time.perf_counter() - t0)
            saved = (trainable, state["step"], seed, len(history.loss))
    except (TrainingError, DataError):  # a captured array changed shape: the user's to fix, before resuming
        raise
    except KeyboardInterrupt:
        raise _stopped(TrainingInterrupted, "interrupted", saved, pair_tree, history, epoch, epochs) from None
    except Exception as exc:
        raise _stopped(TrainingError, f"{doing} raised {type(exc).__name__}: {exc}", saved, pair_tree,
                       history, epoch, epochs) from exc
    finally:
        reporter.close()
    params, state = trees(trainable)
    history.state = state
    return params, history


def epoch_source(loss, params, data, *, optimizer: Optimizer, batch_size: int = 32, shuffle: bool = True,
                 drop_last: bool = False, key=None) -> str:
    """The generated source of ``fit``'s epoch function for these arguments: exactly what Numba compiles.

    It is generated like any other function's: ``fit`` traces one epoch (the shuffle, then a ``tg.scan``
    over the minibatches whose body takes the rows of the batch, the loss's value and gradient and the
    optimiser's update) and compiles it through the same pipeline and cache."""
    data, batch_size = _check_arguments(loss, data, optimizer, batch_size)
    leaves, tree = flatten(params)
    _check_params(leaves, params)
    plan = _Plan(data[0].shape[0], batch_size, drop_last)
    state = optimizer.init(params)
    hyperparameters = {name: np.array(value) for name, value in zip(optimizer.hyperparameter_names(),
                                                                    optimizer.hyperparameters())}
    args = (params, {slot: state[slot] for slot in optimizer.slots}, data,
            np.array(0, np.uint64) if shuffle else np.arange(plan.n), np.zeros(plan.steps), np.arange(1, plan.steps + 1),
            hyperparameters) + (() if key is None else (_check_key(key),))
    return _specialize(loss, optimizer, batch_size, bool(shuffle), bool(drop_last), "never", args,
                       key is not None).source


# ------------------------------------------------------------------------------ one epoch, traced


class _Plan:
    """The batches of an epoch: ``full`` batches of ``batch_size`` rows, then a last one of ``last`` rows
    (0 when there is none)."""

    def __init__(self, n, batch_size, drop_last):
        self.n, self.batch_size = n, batch_size
        self.full = n // batch_size
        self.last = 0 if drop_last else n % batch_size
        self.steps = self.full + (1 if self.last else 0)
        self.samples = self.full * batch_size + self.last

    def size(self, step) -> int:
        return self.batch_size if step < self.full else self.last


_EPOCHS = weakref.WeakKeyDictionary()  # loss -> {(optimiser, its branches, batching, mode): tg.jit function}


def _specialize(loss, optimizer, batch_size, shuffle, drop_last, mode, args, keyed=False, parallel=False):
    """The compiled epoch (``Compiled``) for ``args``, from a ``tg.jit`` of one epoch of training ``loss`` with
    ``optimizer``, kept per loss and settings so that fitting again reuses its specialisations.

    The hyperparameters are arguments of the epoch, so other values run the same compiled code; the
    update's branches on them (``if momentum != 0.0:``) are decided when tracing, so which of them are 0
    is part of the key. An update comparing a hyperparameter with anything but 0 gets its values as
    constants instead (one epoch function per values)."""
    try:
        kept = _EPOCHS.setdefault(loss, {})
    except TypeError:  # not weak-referenceable: no reuse
        kept = {}
    values = optimizer.hyperparameters()
    common = (type(optimizer), batch_size, shuffle, drop_last, mode, keyed, parallel)
    if (*common, "constants") not in kept:
        key = (*common, tuple(v == 0.0 for v in values))
        if key not in kept:
            kept[key] = jit(_make_epoch(_value_and_grad(loss), optimizer, batch_size, shuffle, drop_last, keyed=keyed),
                            compile=mode, parallel=parallel)
        try:
            return kept[key].specialize(*args)
        except _NeedsConstants:
            kept[(*common, "constants")] = True
    key = (*common, values)
    if key not in kept:
        kept[key] = jit(_make_epoch(_value_and_grad(loss), optimizer, batch_size, shuffle, drop_last, constants=True,
                                    keyed=keyed),
                        compile=mode, parallel=parallel)
    return kept[key].specialize(*args)


class _NeedsConstants(Exception):
    """An update compared a hyperparameter with something other than 0: it needs its value when tracing."""


class _Hyperparameter(TracedArray):
    """A hyperparameter inside the traced update: the epoch's argument (a traced float64 scalar) in
    arithmetic, its value in comparisons with 0 (``if momentum != 0.0:``, decided when tracing)."""

    __slots__ = ("value",)

    def __init__(self, value: float, traced: TracedArray):
        super().__init__(traced.var, traced.builder)
        self.value = value

    def _zero_test(self, other, equal: bool) -> bool:
        if isinstance(other, (int, float, np.integer, np.floating)) and not isinstance(other, bool) and other == 0:
            return (self.value == 0.0) == equal
        raise _NeedsConstants

    def __eq__(self, other):
        return self._zero_test(other, True)

    def __ne__(self, other):
        return self._zero_test(other, False)

    def __bool__(self):
        return self.value != 0.0

    def _needs_value(self, *args):
        raise _NeedsConstants

    __lt__ = __le__ = __gt__ = __ge__ = __float__ = __int__ = __index__ = _needs_value


def _make_epoch(vg, optimizer, batch_size, shuffle, drop_last, constants=False, keyed=False):
    """The epoch as a plain function of NumPy arrays, for ``tg.jit`` to trace: the order of the rows, then
    ``tg.scan`` over the full batches (each step: the batch's rows, the loss's value and gradient, the
    optimiser's update), then the last, smaller batch if there is one. A step whose loss or gradient is
    not finite changes nothing, nor does any step after it (``ok``); fit finds it in ``finite``."""
    update, slots = optimizer.update_function, optimizer.slots
    names, values = optimizer.hyperparameter_names(), optimizer.hyperparameters()

    def train(order, params, state, data, learning_rates, steps, hyperparameters, key):
        _written_here()
        n = data[0].shape[0]
        full = n // batch_size
        if constants:  # float64 constants, as Numba computes with them
            hyper = [np.float64(v) for v in values]
        else:
            hyper = [_Hyperparameter(v, hyperparameters[name]) for name, v in zip(names, values)]

        def step(carry, batch):
            _written_here()
            step_key = (random.fold_in(key, batch["t"]),) if keyed else ()  # a key per update t
            loss, grads = vg(carry["params"], *(x[batch["rows"]] for x in data), *step_key)
            _written_here()
            finite = _all_finite(loss, grads)
            ok = carry["ok"] & finite
            params, state = _update(update, slots, hyper, carry["params"], grads, carry["state"],
                                    batch["lr"], batch["t"])
            _written_here()
            keep = lambda new, old: old if new is old else np.where(ok, new, old)  # noqa: E731
            return dict(params=_map2(keep, params, carry["params"]), state=_map2(keep, state, carry["state"]),
                        ok=ok), (loss, finite)

        carry = dict(params=params, state=state, ok=True)
        batches = dict(rows=order[:full * batch_size].reshape(full, batch_size), lr=learning_rates[:full],
                       t=steps[:full])
        carry, (losses, finite) = scan(step, carry, batches)
        _written_here()
        if not drop_last and n % batch_size:  # the last, smaller batch
            last = dict(rows=order[full * batch_size:], lr=learning_rates[full], t=steps[full])
            carry, (loss, ok) = step(carry, last)
            _written_here()
            losses = np.concatenate([losses, np.reshape(loss, (1,))])
            finite = np.concatenate([finite, np.reshape(ok, (1,))])
        return carry["params"], carry["state"], losses, finite

    if shuffle:
        def epoch(params, state, data, seed, learning_rates, steps, hyperparameters, key=None):
            _written_here()
            order = permutation(seed, n=data[0].shape[0])
            return train(order, params, state, data, learning_rates, steps, hyperparameters, key)
    else:
        def epoch(params, state, data, order, learning_rates, steps, hyperparameters, key=None):
            return train(order, params, state, data, learning_rates, steps, hyperparameters, key)

    name = getattr(vg.fun, "__name__", "loss")
    epoch.__name__ = epoch.__qualname__ = (name if name.isidentifier() else "loss") + "_fit_epoch"
    return epoch


def _all_finite(loss, grads):
    """Whether the loss and every gradient are finite, traced into the step: an array of ``COUNTED_CHECK``
    elements or more by counting those that are not (``np.all(np.isfinite(g))``: a sum of integers, which
    LLVM vectorises), the others by one sum of them all (fewer operations, which matters on small arrays
    for the NumPy tier; a sum of floats is a chain of dependent additions in the compiled code)."""
    leaves = flatten(grads)[0]
    checks = [np.isfinite(loss)] + [np.all(np.isfinite(g)) for g in leaves if g.size >= COUNTED_CHECK]
    small = [g for g in leaves if g.size < COUNTED_CHECK]
    if small:
        checks.append(np.isfinite(sum(np.sum(g) for g in small)))
    return functools.reduce(operator.and_, checks)


def _written_here() -> None:
    """The nodes fit's own code records next point at the line of train.py calling this, as the loss's
    point at the user's lines: not at the user's call of fit, which would make the epoch's source (and so
    its cache entry) depend on where fit is called from. The generated code names them ``tracegrad/train.py``
    without line numbers (``SourceInfo.short``), so that editing train.py elsewhere does not change it."""
    frame = sys._getframe(1)
    current_builder().source = SourceInfo(frame.f_code.co_filename, frame.f_lineno + 1,
                                          linecache.getline(frame.f_code.co_filename, frame.f_lineno + 1).strip())


def _map2(fn, a, b):
    leaves_a, tree = flatten(a)
    return unflatten(tree, [fn(x, y) for x, y in zip(leaves_a, flatten(b)[0])])


class _Element:
    """A parameter, gradient or state array (traced) that an optimiser's update function indexes as its
    only element: the update functions are elementwise (``for i in range(param.shape[0]): param[i] -= lr *
    g``), so their loop runs once, on whole arrays, and their assignments become new values."""

    shape = (1,)

    def __init__(self, value, what):
        self.value, self.dtype, self.what = value, value.dtype, what

    def __getitem__(self, i):
        if i != 0:
            raise DataError(f"the optimiser's update reads {self.what}[{i!r}]: fit needs an elementwise update, "
                            f"reading and writing element i of its arrays only")
        # a new traced value of its own: ``param[i] -= d`` rebinds what it is given (in-place operators on
        # traced arrays do), which must not be the array the carry still holds
        return TracedArray(self.value.var, self.value.builder) if type(self.value) is TracedArray else self.value

    def __setitem__(self, i, value):
        self[i]
        if not hasattr(value, "astype"):
            value = np.full(self.value.shape, value, self.dtype)
        self.value = value if value.dtype == self.dtype else value.astype(self.dtype)  # stored, as in Numba


def _update(update, slots, hyperparameters, params, grads, state, lr, t):
    """The optimiser's update of every parameter array, traced: ``update(param, grad, *slots, lr, t,
    *hyperparameters)`` on whole arrays. Returns the new parameters and state (pytrees like them)."""
    leaves, tree = flatten(params)
    grad_leaves = flatten(grads)[0]
    slot_leaves = [flatten(state[slot])[0] for slot in slots]
    new_params, new_slots = [], [[] for _ in slots]
    for k, (param, grad) in enumerate(zip(leaves, grad_leaves)):
        grad = grad if grad.dtype == param.dtype else grad.astype(param.dtype)
        args = [_Element(param, "param"), _Element(grad, "grad")]
        args += [_Element(values[k], slot) for slot, values in zip(slots, slot_leaves)]
        try:
            update(*args, lr, t, *hyperparameters)
        except (TracegradError, _NeedsConstants):
            raise
        except Exception as exc:
            raise DataError(f"fit could not run the optimiser's update {update.__name__} on whole arrays: "
                            f"{type(exc).__name__}: {exc}",
                            hint="fit needs an elementwise update: element i of each array from element i of the "
                                 "others (for i in range(param.shape[0]): ...)") from None
        new_params.append(args[0].value)
        for values, element in zip(new_slots, args[2:]):
            values.append(element.value)
    return unflatten(tree, new_params), {slot: unflatten(tree, values) for slot, values in zip(slots, new_slots)}


def _kernel_args(entry, args) -> list:
    """The compiled epoch's arguments for ``args``: the leaves (0-d arrays as scalars), then the captured arrays."""
    return [leaf[()] if type(leaf) is np.ndarray and leaf.ndim == 0 else leaf for leaf in flatten(args)[0]] + \
        entry.captured()


def _check_captures(entry) -> None:
    """The arrays the loss reads from outside (read every epoch) must keep their shapes and dtypes."""
    for capture in entry.traced.captures:
        value, aval = capture.current(), capture.var.aval
        if value.shape != aval.shape or value.dtype != aval.dtype:
            raise DataError(f"an array the loss reads from outside ({capture.var.hint or 'captured'}) "
                            f"changed from {aval} to {Aval(value.shape, value.dtype)} during fit",
                            hint="change its values in place, or call fit again")


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


# ------------------------------------------------------------------------------ checks and reports


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


def _preflight(loss, params, data, what, batch_size) -> None:
    """The loss on one batch, eagerly in NumPy, before anything compiles: a loss that does not return one
    number, or raises on the data (labels out of range for a ``tg.nn`` loss, a shape that does not fit),
    fails here with a ``DataError``. The batch is the first rows with, in place of the last of them, the
    rows holding each data array's smallest and largest values (labels out of range are extremes, so a
    label anywhere in the data is checked: not only those of the first rows), in ``batch_size`` rows."""
    n = data[0].shape[0]
    extremes = []
    for d in data:
        for position in (np.argmin(d), np.argmax(d)):  # (a NaN, where there is one, is both)
            row = int(position) // max(1, d[0].size)
            if row not in extremes:
                extremes.append(row)
    first = [row for row in range(min(n, batch_size)) if row not in extremes]
    rows = np.array(sorted(first[:max(0, batch_size - len(extremes))] + extremes[:batch_size]))
    _loss_on(loss, params, tuple(d[rows] for d in data), what, f"rows {_ranges(rows)}")


def _ranges(rows) -> str:
    """``0..28, 913, 1402`` for sorted row numbers."""
    rows = [int(row) for row in rows]
    parts, start = [], rows[0]
    for previous, row in zip(rows, rows[1:] + [None]):
        if row != previous + 1:
            parts.append(f"{start}..{previous}" if previous > start else f"{start}")
            start = row
    return ", ".join(parts)


def _mean_loss(loss, params, data, what) -> float:
    """The loss over all the data (the mean of its values on chunks of ``_PREFLIGHT_ROWS`` rows, weighted by
    their sizes), eagerly in NumPy: ``history.initial_loss``, computed when it is first read."""
    n, total = data[0].shape[0], 0.0
    for start in range(0, n, _PREFLIGHT_ROWS):
        stop = min(n, start + _PREFLIGHT_ROWS)
        value = _loss_on(loss, params, tuple(d[start:stop] for d in data), what, f"rows {start}..{stop - 1}")
        total += float(value) * (stop - start)
    return total / n


def _loss_on(loss, params, batch, what, rows):
    try:
        value = loss(params, *batch)
    except IndexError as exc:
        raise DataError(f"the loss raised IndexError on {rows} of the {what}: are the labels in range? ({exc})",
                        raised_at(exc)) from None
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
    return value


def _stopped(error, why, saved, pair_tree, history, epoch, epochs) -> TrainingError:
    """The error for training stopped in ``epoch`` by an interrupt or an exception, carrying the parameters,
    optimiser state and history of the last complete epoch (``saved``: the parameters' and state's leaves,
    of ``pair_tree``, the step, the seed, the epochs done) as ``fit`` would have returned them."""
    trainable, step, seed, done = saved
    params, slots = unflatten(pair_tree, trainable)
    state = {"step": step, **slots}
    kept = History(loss=history.loss[:done], val_loss=history.val_loss[:done],
                   metrics={name: values[:done] for name, values in history.metrics.items()},
                   time=history.time[:done], wall_time=history.wall_time[:done],
                   compile_time=history.compile_time, compiled=history.compiled[:done], steps=step, state=state,
                   seed=seed, _initial_loss=history._initial_loss)
    return error(
        f"training stopped in epoch {epoch} of {epochs}: {why}"
        f"\n  err.params, err.state, err.history: as after epoch {done} ({step} updates); epoch {epoch} is discarded",
        epoch=epoch, step=None, params=params, state=state, history=kept,
        hint=f"continue with fit(loss, err.params, data, ..., state=err.state, seed=err.history.seed, "
             f"epochs={epochs - done}): the same as the uninterrupted run")


def _failure(loss, plan, data, params, state, history, seed, epoch, step, code, value, key=None) -> NonFiniteTrainingError:
    """The error for a non-finite loss (code 1) or gradient (code 2) at ``step`` (from 0) of ``epoch``
    (``seed``: the epoch's shuffle, None for the rows in order)."""
    order = np.arange(plan.n) if seed is None else permutation.ref(seed, n=plan.n)
    start = step * plan.batch_size
    batch = tuple(d[order[start:start + plan.size(step)]] for d in data)
    if key is not None:  # the key of the update that failed
        batch += (random.fold_in(key, np.int64(state["step"] + 1)),)
    what = f"the loss is {value}" if code == 1 else f"the loss is {value:.6g} but its gradient is not finite"
    if code == 2:
        grads = flatten(value_and_grad(loss, compile="never")(params, *batch)[1])[0]
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
        f"training stopped at epoch {epoch}, step {step + 1} of {plan.steps} (update {update}): {what}{detail}"
        f"\n  err.params: the parameters after update {update - 1}; no part of update {update} was applied",
        epoch=epoch, step=step + 1, params=params, state=state, history=history,
        hint="lower the learning rate, normalise the inputs, or use a stable loss from tg.nn (logits forms)")


class _Progress:
    """One tqdm bar over the epochs when tqdm is installed (progress=True), else printed lines: every
    epoch up to 20 epochs, beyond that the first, every (epochs // 20)-th and the last."""

    def __init__(self, progress, epochs, unit="epoch"):  # (distributed.fit counts rounds)
        self.epochs, self.bar, self.plain, self.unit = epochs, None, False, unit
        self.every = max(1, epochs // 20)
        if progress is True:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=epochs, unit=unit, desc="fit")
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
            print(f"{self.unit} {epoch:>{width}}/{self.epochs}  " + "  ".join(parts)
                  + f"  ({history.time[-1] * 1e3:.1f} ms, {tier})", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


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
