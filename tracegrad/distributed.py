"""Data-parallel gradients on Dask arrays: one compiled kernel per chunk of rows, summed by a tree reduction.

``value_and_grad(per_batch_loss, reduction="mean")`` returns a function of ``(params, X, y, ...)`` whose
data arguments are Dask arrays chunked along their rows. Each chunk runs tracegrad's compiled value and
gradient of ``per_batch_loss`` on a Dask worker; the results are combined, weighted by the chunks' row
counts, so the result is the gradient of the loss of the whole data set (to rounding):

- ``reduction="mean"``: the loss of the whole data is the mean of the per-row losses, and
  ``per_batch_loss`` returns the mean over its batch (``np.mean(...)``): chunks are weighted by their rows;
- ``reduction="sum"``: ``per_batch_loss`` returns the sum over its batch: the chunks' values add up.

That is the contract: the loss must be *separable* over rows. A term that does not depend on the rows
(a penalty ``lam * np.sum(w ** 2)``) is fine with ``"mean"`` (the weighted mean of ``mean + P`` is
``mean + P``) but counted once per chunk with ``"sum"``; a statistic of the whole batch (its standard
deviation, a batch norm) is never separable. ``check_separable=True`` evaluates the loss, on NumPy, on a
small sample of the first chunk, whole and in two uneven pieces, and raises ``SeparabilityError`` when
the two disagree.

Needs ``pip install 'tracegrad[dask]'`` (``dask[array]`` and ``distributed``); without a
``dask.distributed.Client`` the graph runs on Dask's default scheduler in this process, and with NumPy
data arguments (no Dask array among them) the function is the single-process compiled gradient.
Importing this module does not import Dask.
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Callable

import numpy as np

from .errors import (DataError, NonFiniteError, NonFiniteTrainingError, SeparabilityError, TracegradError,
                     TrainingError, TrainingInterrupted, user_source)
from .pytree import TreeDef, flatten, unflatten

__all__ = ["value_and_grad", "fit", "chunk_seed", "DistributedFunction"]

REDUCTIONS = ("mean", "sum")
SPLIT_EVERY = 8  # the tree reduction adds at most this many partial results in one task
CHECK_ROWS = 48  # check_separable: rows of the first chunk it evaluates (whole, then as 16 + 32 rows)
KEEP_FUNCTIONS = 16  # per worker process: the compiled functions kept (each distributed function has one)


def value_and_grad(per_batch_loss: Callable, reduction: str = "mean", argnums=0,
                   check_separable: bool = False) -> DistributedFunction:
    """The value and gradient of a loss over data too big for one process, computed chunk by chunk on Dask.

    ``per_batch_loss(params, X, y, ...)`` is an ordinary function tracegrad can differentiate, written for
    one batch of rows. The returned function takes the same arguments, where the data arguments are Dask
    arrays chunked along their first axis only (the same row chunks; other chunkings are rechunked to the
    first one's), and returns ``(value, gradient)`` of the loss over all the rows, as
    ``tg.value_and_grad(per_batch_loss, argnums=argnums)`` would on the whole data in one process.

    ``reduction``: ``"mean"`` if ``per_batch_loss`` returns the mean over the rows of its batch (chunks
    are weighted by their row counts), ``"sum"`` if it returns their sum. ``argnums`` (an int or a tuple of
    ints) says which arguments are differentiated: they are sent to the workers once per call (one key of
    the call's Dask graph, which every chunk's task reads), with every other argument that is not a Dask
    array. Every Dask array argument is
    data, read where it lies: each chunk runs the compiled kernel of ``per_batch_loss`` on a worker (traced
    once per worker process and compiled once per chunk shape: the first call compiles each shape on one
    worker, and the others load it from Numba's disk cache when they share ``TRACEGRAD_CACHE_DIR``, as the
    workers of a ``LocalCluster`` do). The partial results are added by a tree reduction on the workers;
    Dask runs the tasks of a worker that dies again elsewhere (the parameters included: they are not
    ``Client.scatter``-ed, which Dask could not recover).

    ``check_separable=True`` checks the contract on the first call for each argument shape: the loss of
    the first 48 rows, whole and as 16 + 32 rows combined as ``reduction`` says, evaluated in this
    process on NumPy; ``SeparabilityError`` when they differ.

    With no Dask array among the arguments it is ``tg.value_and_grad(per_batch_loss, argnums=argnums)``
    called in this process:

    >>> import numpy as np
    >>> from tracegrad import distributed
    >>> f = distributed.value_and_grad(lambda w, X: np.mean((X @ w) ** 2))
    >>> f(np.ones(2), np.array([[1.0, 0.0], [0.0, 2.0]]))
    (2.5, array([1., 4.]))

    Raises ``DataError`` for Dask arrays chunked along another axis than the rows, row counts that differ,
    chunks of unknown size, a Dask array among the differentiated arguments, or a NumPy array as long as the
    data beside Dask arrays (make it a Dask array with the same row chunks).
    """
    return DistributedFunction(per_batch_loss, reduction, argnums, check_separable)


class DistributedFunction:
    """What ``tracegrad.distributed.value_and_grad`` returns: call it like ``per_batch_loss``."""

    def __init__(self, fun: Callable, reduction: str = "mean", argnums=0, check_separable: bool = False):
        if not callable(fun):
            raise DataError(f"distributed.value_and_grad expects a function, got {type(fun).__name__}",
                            user_source())
        if reduction not in REDUCTIONS:
            raise DataError(f"reduction={reduction!r} is not one of {', '.join(map(repr, REDUCTIONS))}",
                            user_source(), hint='"mean" if the per-batch loss is np.mean(...) over the rows, '
                            '"sum" if it is np.sum(...)')
        from .api import value_and_grad as local_value_and_grad

        self.fun = fun
        self.reduction = reduction
        self.argnums = argnums
        self.check_separable = check_separable
        self.local = local_value_and_grad(fun, argnums=argnums)  # NumPy data: this process, as tg does
        self._kernel = _Kernel(fun, argnums, reduction, uuid.uuid4().hex)
        self._ready: set = set()  # (client, signature) pairs whose kernels the workers have compiled
        self._checked: set = set()  # signatures check_separable has passed
        self.__name__ = getattr(fun, "__name__", "loss")
        self.__doc__ = getattr(fun, "__doc__", None)

    def __repr__(self):
        return f"<tracegrad.distributed.value_and_grad of {getattr(self.fun, '__qualname__', self.fun)!r}>"

    def __call__(self, *args):
        da = sys.modules.get("dask.array")  # not imported: no argument is a Dask array
        positions = [] if da is None else [i for i, a in enumerate(args) if isinstance(a, da.Array)]
        if not positions:
            return self.local(*args)
        wrt = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        data = _check_data(args, positions, wrt, da)
        signature = _signature(args, positions, data)
        if self.check_separable and signature not in self._checked:
            self._check(args, positions, data)
            self._checked.add(signature)
        return self._run(args, positions, data, signature)

    # ------------------------------------------------------------------ the Dask graph

    def _run(self, args, positions, data, signature):
        import dask

        client = _client()
        if client is not None:
            key = (id(client), client.id, signature)
            if key not in self._ready:
                self._warm_up(client, self._shared(args, positions), data)
                self._ready.add(key)
        root = self._graph(args, positions, data)
        if client is not None:
            rows, value, grads = client.compute(root).result()
        else:
            rows, value, grads = dask.compute(root)[0]
        if self.reduction == "mean":
            value, grads = value / rows, [g / rows for g in grads]
        return value, unflatten(self._kernel.grad_tree(args), grads)

    @staticmethod
    def _shared(args, positions) -> "_Shared":
        return _Shared(tuple(None if i in positions else a for i, a in enumerate(args)), tuple(positions))

    def _graph(self, args, positions, data):
        """The call's graph (a ``Delayed``): a task per chunk, then the tree of ``_add`` tasks."""
        import dask

        # The parameters (and other arguments) are one key of the graph, which every chunk's task reads:
        # sent once per call, and copied once to each worker. Not Client.scatter: Dask cannot recompute
        # scattered data, and its memory manager keeps one copy of a broadcast, so the worker holding it
        # dying would lose the call; a key of the graph is computed again elsewhere.
        shared = dask.delayed(self._shared(args, positions), pure=False)
        kernel = dask.delayed(self._kernel, pure=False)  # the user's function too: one key
        blocks = [a.to_delayed().ravel() for a in data]
        parts = [dask.delayed(_chunk, pure=False)(kernel, shared, *chunk) for chunk in zip(*blocks)]
        while len(parts) > 1:  # a tree: SPLIT_EVERY partial results per task, in chunk order
            parts = [dask.delayed(_add, pure=False)(*parts[i:i + SPLIT_EVERY])
                     for i in range(0, len(parts), SPLIT_EVERY)]
        return parts[0]

    def _warm_up(self, client, shared, data):
        """Compile the kernel for each chunk shape on one worker, before every worker needs it at once."""
        from distributed import wait

        shapes = sorted({tuple(a.chunks[0][b] for a in data) for b in range(data[0].numblocks[0])})
        specs = [[((rows,) + a.shape[1:], a.dtype.str) for rows, a in zip(chunk_rows, data)] for chunk_rows in shapes]
        futures = [client.submit(_warm, self._kernel, shared, spec, pure=False) for spec in specs]  # few: by value
        wait(futures)
        for future in futures:
            future.result()  # an error tracing or compiling the kernel, raised here

    # ------------------------------------------------------------------ check_separable

    def _check(self, args, positions, data):
        import dask

        from .api import value_and_grad as local_value_and_grad

        rows = min(CHECK_ROWS, data[0].chunks[0][0])
        if rows < 3:
            return  # too few rows in the first chunk to split it
        sample = dask.compute(*[a[:rows] for a in data])
        evaluate = local_value_and_grad(self.fun, argnums=self.argnums, compile="never")  # NumPy, no compile

        def run(lo, hi):
            full = list(args)
            for i, x in zip(positions, sample):
                full[i] = np.ascontiguousarray(x[lo:hi])
            value, grads = evaluate(*full)
            return value, flatten(grads)[0]

        cut = rows // 3
        whole = run(0, rows)
        pieces = [run(0, cut), run(cut, rows)]
        if self.reduction == "mean":
            weights = [cut / rows, (rows - cut) / rows]
        else:
            weights = [1.0, 1.0]
        combined_value = sum(w * p[0] for w, p in zip(weights, pieces))
        combined = [sum(w * p[1][k] for w, p in zip(weights, pieces)) for k in range(len(whole[1]))]
        rtol = 1e-3 if any(np.asarray(g).dtype == np.float32 for g in whole[1]) else 1e-7
        scale = max([abs(float(whole[0]))] + [float(np.max(np.abs(g), initial=0.0)) for g in whole[1]] + [1e-300])
        if not np.allclose(whole[0], combined_value, rtol=rtol, atol=rtol * scale):
            what = f"its value is {float(whole[0]):.10g} evaluated whole, {float(combined_value):.10g}"
        elif not all(np.allclose(a, b, rtol=rtol, atol=rtol * scale) for a, b in zip(whole[1], combined)):
            worst = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(whole[1], combined))
            what = f"its gradient evaluated whole differs by up to {worst:.3g} from the one"
        else:
            return
        raise SeparabilityError(
            f"{self.__name__} is not separable over rows with reduction={self.reduction!r}: on the first {rows} "
            f"rows of the data, {what} computed from {cut} + {rows - cut} rows combined as the chunks are",
            user_source(),
            hint="the chunked result would be wrong. A term that does not depend on the rows (a penalty) is "
                 "counted once per chunk with reduction='sum': add it to the result outside, or use np.mean "
                 "and reduction='mean'; a statistic of the whole batch (np.std over the rows, a batch norm) "
                 "cannot be split")


# ---------------------------------------------------------------------------------- what runs on the workers


class _Shared:
    """The arguments every chunk reads: the parameters and the other arguments that are not data."""

    def __init__(self, args: tuple, positions: tuple):
        self.args = args  # None at the data's positions
        self.positions = positions

    def fill(self, blocks) -> list:
        args = list(self.args)
        for i, block in zip(self.positions, blocks):
            args[i] = block
        return args


_functions: OrderedDict = OrderedDict()  # in each process: token -> tracegrad Function, the most recent last
_lock = threading.Lock()


class _Kernel:
    """A chunk's task: the per-batch loss's compiled value and gradient, made once per process.

    Pickled (with the user's function) into every task; the tracegrad ``Function`` it calls is kept in the
    worker process under a token, so its specialisations are traced and compiled (or loaded from Numba's
    disk cache) once per process, not once per task."""

    def __init__(self, fun, argnums, reduction, token):
        self.fun, self.argnums, self.reduction, self.token = fun, argnums, reduction, token

    def function(self):
        with _lock:
            f = _functions.get(self.token)
            if f is None:
                from .api import value_and_grad as local_value_and_grad

                f = _functions[self.token] = local_value_and_grad(self.fun, argnums=self.argnums, compile="wait")
                while len(_functions) > KEEP_FUNCTIONS:
                    _functions.popitem(last=False)
            _functions.move_to_end(self.token)
            return f

    def grad_tree(self, args):
        wrt = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        trees = [flatten(args[i])[1] for i in wrt]
        return trees[0] if isinstance(self.argnums, int) else TreeDef("tuple", None, tuple(trees))

    def __call__(self, shared: _Shared, *blocks):
        """(rows, value, gradient leaves) of one chunk; with reduction="mean", times its rows."""
        value, grads = self.function()(*shared.fill(blocks))
        leaves = flatten(grads)[0]
        rows = blocks[0].shape[0]
        if self.reduction == "mean":
            return rows, value * rows, [g * rows for g in leaves]
        return rows, value, leaves


def _chunk(kernel: _Kernel, shared: _Shared, *blocks):
    return kernel(shared, *blocks)


def _add(*parts):
    """Partial results added in the order given (a node of the tree reduction)."""
    rows, value, grads = parts[0]
    grads = list(grads)
    for r, v, g in parts[1:]:
        rows, value = rows + r, value + v
        grads = [a + b for a, b in zip(grads, g)]
    return rows, value, grads


def _warm(kernel: _Kernel, shared: _Shared, spec) -> None:
    """Compile (or load) the kernel for chunks shaped as ``spec`` [(shape, dtype)], on zeros."""
    kernel(shared, *[np.zeros(shape, dtype) for shape, dtype in spec])


# ---------------------------------------------------------------------------------- checks of the arguments


def _client():
    """The default ``dask.distributed.Client``, or None (Dask's default scheduler)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def _check_data(args, positions, wrt, da) -> list:
    """The Dask array arguments, checked, all with the row chunks of the first."""
    for i in wrt:
        if not isinstance(i, int) or not -len(args) <= i < len(args):
            raise DataError(f"argnums={i!r} is not the position of an argument ({len(args)} given)", user_source())
        for leaf in flatten(args[i])[0]:
            if isinstance(leaf, da.Array):
                raise DataError(f"argument {i} is differentiated (argnums) but is or holds a Dask array",
                                user_source(), hint="parameters are NumPy arrays or scalars, sent to every "
                                "worker; data are Dask arrays, split by rows")
    for i, a in enumerate(args):
        if i not in positions and not isinstance(a, np.ndarray) and any(
                isinstance(leaf, da.Array) for leaf in _leaves(a)):
            raise DataError(f"argument {i} holds a Dask array inside a {type(a).__name__}", user_source(),
                            hint="pass each Dask data array as an argument of its own")
    data = [args[i] for i in positions]
    first = data[0]
    for i, a in zip(positions, data):
        _check_split_by_rows(a, f"argument {i}")
        if a.shape[0] != first.shape[0]:
            raise DataError(f"argument {i} has {a.shape[0]} rows but argument {positions[0]} has {first.shape[0]}",
                            user_source())
    rows = first.shape[0]
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and i not in wrt and a.ndim and a.shape[0] == rows and rows > 1:
            raise DataError(f"argument {i} is a NumPy array with as many rows ({rows}) as the Dask data: every "
                            "chunk would read all of it", user_source(),
                            hint=f"make it a Dask array with the same row chunks: da.from_array(a, chunks="
                                 f"({'X.chunks[0]'}{', -1' * (a.ndim - 1)}))")
    return [a if a.chunks[0] == first.chunks[0] else a.rechunk({0: first.chunks[0]}) for a in data]


def _leaves(a):
    try:
        return flatten(a)[0]
    except TracegradError:
        return []


def _signature(args, positions, data) -> tuple:
    """What decides the compiled kernels: the structure, shapes and dtypes of the other arguments and the
    chunks' shapes and dtypes."""
    others = []
    for i, a in enumerate(args):
        if i in positions:
            continue
        leaves, tree = flatten(a)
        others.append((tree, tuple((np.shape(x), np.asarray(x).dtype.str, type(x).__name__) for x in leaves)))
    return tuple(others), tuple((a.chunks, a.dtype.str) for a in data)


# ---------------------------------------------------------------------------------- data-parallel fit


SYNC_EPOCH = "epoch"
COMPILE_MODES = ("wait", "never")  # not "background": a round on NumPy beside one compiled would differ in rounding


def fit(loss: Callable, params, X, y, *, optimizer, epochs: int = 1, batch_size: int = 32, sync_every="epoch",
        seed: int = 0, drop_last: bool = False, validation=None, metrics=None, state=None, progress=True,
        compile: str = "wait", parallel=None):
    """``tg.fit`` on Dask arrays: each chunk of rows trains on its worker, and the parameters are averaged.

    Local SGD. Training goes in rounds. In a round every chunk of ``X`` and ``y`` (Dask arrays chunked by
    rows only, ``X`` and ``y`` alike) trains, where it lies, from the round's parameters and optimiser
    state with ``tg.fit``'s compiled epoch function (the same generated code and disk-cache entry as
    ``tg.fit`` in one process): for one epoch of the chunk's rows (``sync_every="epoch"``, the default) or
    for ``k`` steps (``sync_every=k``: ``k`` batches drawn from the chunk's rows without replacement). The
    chunk's rows are shuffled by the permutation ``tg.fit`` uses, seeded by ``(seed, round, chunk)``:
    chunk ``c``'s seed for round ``r`` is ``tg.fit``'s seed for its epoch ``r + 1`` (the seed advanced
    once per round), starting from ``seed`` for chunk 0 and from a seed of its own for each other chunk.
    The client then averages the parameters and the optimiser state (momentum, Adam's moments) of the
    chunks weighted by their rows, adding them in chunk order, and the next round starts from the
    average, sent to the workers once (one key of the round's Dask graph). The result depends on the
    chunking, ``sync_every`` and ``seed`` only, never on which worker ran what: with one chunk and
    ``sync_every="epoch"`` it is ``tg.fit(loss, params, (X, y), ..., seed=seed)`` bit for bit.

    ``epochs``: with ``"epoch"``, the number of rounds; with ``k``, rounds enough for ``epochs`` passes over
    all the rows (``ceil(epochs * rows / (chunks * k * batch_size))``). The optimiser's step count
    (learning-rate schedules, Adam's bias correction) advances by the most steps a chunk made in the round.
    A chunk whose rows ``batch_size`` does not divide ends its epoch with a smaller batch, as ``tg.fit``
    does (``drop_last=True`` skips it); every chunk must have at least ``batch_size`` rows (``k *
    batch_size`` with ``sync_every=k``).

    ``validation``: a tuple ``(X_val, y_val)`` of NumPy arrays, and ``metrics``: ``{name: fn(params,
    *validation)}``, evaluated in this process after every round (``history.val_loss``,
    ``history.metrics``). ``state``: an optimiser state to start from (``history.state`` of an earlier
    run); the shuffles then start from ``seed`` again: pass another seed for new ones.

    ``compile``: ``"wait"`` (each worker process compiles the epoch function once, or loads it from the
    disk cache; before the first round one worker compiles each chunk shape so that the others load it)
    or ``"never"`` (NumPy). ``parallel`` as for ``tg.fit``. ``progress``: as for ``tg.fit``, one line per
    round. With a ``dask.distributed.Client``, ``X`` and ``y`` are persisted on the workers for the call
    (every round reads every chunk); without one the rounds run in this process, one chunk after another.

    Returns ``(params, history)``: a ``tg.train.History`` with one entry per round: ``loss`` (the chunks'
    mean training losses averaged by rows), ``time`` (seconds for the round, Dask included),
    ``compiled`` (whether every chunk ran compiled), ``steps``, ``state`` (the averaged optimiser state),
    and ``compile_time`` (the warm-up before the first round); ``initial_loss`` is not computed (NaN).

    >>> import numpy as np, dask.array as da, tracegrad as tg
    >>> from tracegrad import distributed
    >>> X = np.linspace(-1, 1, 64).reshape(-1, 1); y = 3 * X[:, 0] + 1
    >>> def loss(p, X, y):
    ...     return tg.nn.mse(X @ p["w"] + p["b"], y)
    >>> p, h = distributed.fit(loss, {"w": np.zeros(1), "b": np.zeros(())}, da.from_array(X, chunks=(32, 1)),
    ...                        da.from_array(y, chunks=32), optimizer=tg.optim.SGD(lr=0.5), batch_size=16,
    ...                        epochs=30, progress=False, compile="never")
    >>> print(p["w"].round(3), p["b"].round(3), len(h.loss))
    [3.] 1.0 30

    Raises ``GradTypeError`` for parameters that are not float arrays; ``DataError`` for a
    ``tg.value_and_grad`` function in place of the plain loss, ``X`` or ``y`` that are not Dask arrays, chunked along columns, chunked
    differently from each other or of unknown chunk sizes, a chunk smaller than ``batch_size`` (or ``k *
    batch_size``), ``sync_every`` that is neither ``"epoch"`` nor a positive int, ``compile="background"``;
    any error ``tg.fit`` raises on a chunk, naming the chunk. A non-finite loss or gradient in a round
    raises ``NonFiniteTrainingError`` naming the round and the chunk, with ``err.params`` and ``err.state``
    as before that round (the last average) and ``err.history`` of the rounds before it; Ctrl-C raises
    ``TrainingInterrupted`` and an error in a metric ``TrainingError``, both with the parameters, state and
    history of the last complete round.
    """
    from .api import Function
    from .optim import Optimizer, _check_params
    from .train import History, _as_arrays, _copy_state, _Progress

    if isinstance(loss, Function):
        raise DataError(f"distributed.fit takes the plain loss function, not {loss!r}: it differentiates it itself",
                        user_source())
    if not callable(loss):
        raise DataError(f"loss must be a function loss(params, X, y), got {loss!r}", user_source())
    if not isinstance(optimizer, Optimizer):
        raise DataError(f"optimizer must be a tracegrad optimiser such as tg.optim.SGD(lr=0.1), got {optimizer!r}",
                        user_source())
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"{name} must be an int of at least {low}, got {value!r}", user_source())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an int, got {seed!r}", user_source())
    if sync_every != SYNC_EPOCH and (isinstance(sync_every, bool) or not isinstance(sync_every, (int, np.integer))
                                     or sync_every < 1):
        raise DataError(f"sync_every must be 'epoch' or a positive int (steps per round), got {sync_every!r}",
                        user_source(), hint="'epoch': each chunk trains one epoch of its rows per round; k: k steps")
    if compile not in COMPILE_MODES:
        raise DataError(f"compile must be 'wait' or 'never' for distributed.fit, got {compile!r}", user_source(),
                        hint="with 'background' some chunks would train on NumPy and others compiled in the same "
                             "round, and the average would depend on which")
    if progress not in (True, False, "plain"):
        raise DataError(f"progress must be True, False or 'plain', got {progress!r}", user_source())
    if validation is not None:
        validation = _as_arrays(validation, "validation")
    if metrics is not None and (not isinstance(metrics, dict) or not all(map(callable, metrics.values()))):
        raise DataError(f"metrics must be a dict of name: fn(params, *validation), got {metrics!r}", user_source())
    if metrics and validation is None:
        raise DataError("metrics need validation=(X_val, y_val): distributed.fit's training data stay on the "
                        "workers, and the metrics run in this process", user_source())
    metrics = dict(metrics or {})
    rows = _check_fit_data(X, y, int(batch_size) * (1 if sync_every == SYNC_EPOCH else int(sync_every)), sync_every)
    total = sum(rows)
    import dask  # (X and y are Dask arrays: it is installed)

    if sync_every == SYNC_EPOCH:
        rounds = int(epochs)
    else:
        rounds = -(-int(epochs) * total // (len(rows) * int(sync_every) * int(batch_size)))

    leaves, tree = flatten(params)
    _check_params(leaves, params)
    if not leaves:
        raise DataError("params has no arrays to train", user_source())
    params = unflatten(tree, [np.array(leaf, order="C", copy=True) for leaf in leaves])
    state = optimizer.init(params) if state is None else _copy_state(optimizer, state, params)
    trainer = _Trainer(loss, optimizer, int(batch_size), bool(drop_last), sync_every, compile, parallel,
                       _token(loss))
    weights = [r / total for r in rows]
    seeds = [chunk_seed(int(seed), c) for c in range(len(rows))]
    client = _client()
    if client is not None:  # every round reads every chunk: computed (or sent) once, then kept on the workers
        X, y = client.persist([X, y])
    blocks = list(zip(X.to_delayed().ravel(), y.to_delayed().ravel()))
    scheduler = {} if client is not None else {"scheduler": "sync"}  # no Client: here, a chunk at a time

    history = History(state=state, seed=int(seed), steps=state["step"], metrics={name: [] for name in metrics})
    if client is not None and rounds:  # one worker compiles each chunk shape; the others then load it
        t0 = time.perf_counter()
        start = dask.delayed(_Start(params, state, seeds), pure=False)
        first = {}
        for c, r in enumerate(rows):  # (with k steps, every chunk trains on k * batch_size rows)
            first.setdefault(r if sync_every == SYNC_EPOCH else 0, c)
        _collect(dask.compute(*[dask.delayed(_warm_chunk, pure=False)(trainer, start, c, *blocks[c])
                                for c in first.values()]), rows)
        history.compile_time = time.perf_counter() - t0

    reporter = _Progress(progress, rounds, unit="round")
    saved, doing, round_ = (params, state, 0), "training", 0  # the last complete round: replaced at once
    try:
        for round_ in range(1, rounds + 1):
            doing = "training"
            t0 = time.perf_counter()
            start = dask.delayed(_Start(params, state, seeds), pure=False)  # sent once per round
            results = _collect(dask.compute(*[dask.delayed(_train_chunk, pure=False)(trainer, start, c, *block)
                                              for c, block in enumerate(blocks)], **scheduler),
                               rows, round_, rounds, params, state, history)
            params = _average([r.params for r in results], weights, params)
            state = _average_state(optimizer, [r.state for r in results], weights, state)
            seeds = [r.seed for r in results]
            loss_value = 0.0
            for w, r in zip(weights, results):  # in chunk order
                loss_value += w * r.loss
            elapsed = time.perf_counter() - t0
            history.loss.append(loss_value)
            history.time.append(elapsed)
            history.compiled.append(all(r.compiled for r in results))
            history.steps, history.state = state["step"], state
            if validation is not None:
                doing = "the validation loss"
                history.val_loss.append(float(loss(params, *validation)))
            for name, metric in metrics.items():
                doing = f"metric {name!r}"
                history.metrics[name].append(float(metric(params, *validation)))
            doing = "the progress report"
            reporter.epoch(round_, history)
            history.wall_time.append(time.perf_counter() - t0)
            saved = (params, state, round_)
    except (TrainingError, DataError):
        raise
    except KeyboardInterrupt:
        raise _interrupted(TrainingInterrupted, "interrupted", saved, history, round_, rounds) from None
    except Exception as exc:
        raise _interrupted(TrainingError, f"{doing} raised {type(exc).__name__}: {exc}", saved, history, round_,
                           rounds) from exc
    finally:
        reporter.close()
    return params, history


def _interrupted(error, why, saved, history, round_, rounds):
    """The error for training stopped in ``round_``, carrying the parameters, state and history of the last
    complete round."""
    from .train import History

    params, state, done = saved
    kept = History(loss=history.loss[:done], val_loss=history.val_loss[:done],
                   metrics={name: values[:done] for name, values in history.metrics.items()},
                   time=history.time[:done], wall_time=history.wall_time[:done], compiled=history.compiled[:done],
                   compile_time=history.compile_time, steps=state["step"], state=state, seed=history.seed)
    return error(f"training stopped in round {round_} of {rounds}: {why}"
                 f"\n  err.params, err.state, err.history: as after round {done}; round {round_} is discarded",
                 epoch=round_, step=None, params=params, state=state, history=kept,
                 hint="continue with distributed.fit(loss, err.params, X, y, ..., state=err.state) for the rounds "
                      "left (and another seed for new shuffles)")


_TOKENS = weakref.WeakKeyDictionary()  # in the client: loss -> its token, so fitting it again reuses the traces


def _token(loss) -> str:
    """The loss's token: the workers keep the loss under it, and ``tg.fit``'s epoch functions with it."""
    try:
        return _TOKENS.setdefault(loss, uuid.uuid4().hex)
    except TypeError:  # not weak-referenceable: a token per call
        return uuid.uuid4().hex


def chunk_seed(seed: int, chunk: int) -> int:
    """The shuffle seed of ``chunk``'s first round: ``seed`` itself for chunk 0 (so one chunk shuffles as
    ``tg.fit`` does), for the others a splitmix64 mix of ``seed`` and the chunk's index. Round ``r`` of the
    chunk shuffles with this seed advanced ``r`` times, as ``tg.fit``'s epoch ``r + 1`` would.

    >>> from tracegrad import distributed
    >>> distributed.chunk_seed(7, 0), distributed.chunk_seed(7, 1) != distributed.chunk_seed(7, 2)
    (7, True)
    """
    if chunk == 0:
        return int(seed) % 2 ** 64
    from .primitives.shuffle import GOLDEN, MIX1, MIX2

    z = (int(seed) + chunk * GOLDEN) % 2 ** 64
    z = ((z ^ (z >> 30)) * MIX1) % 2 ** 64
    z = ((z ^ (z >> 27)) * MIX2) % 2 ** 64
    return z ^ (z >> 31)


def _check_split_by_rows(a, what: str, variable: str = "x") -> None:
    """A Dask data array with rows, chunks of known sizes and whole rows in each chunk, or a ``DataError``
    naming it (``what``: ``"argument 1"``, ``"X"``; ``variable``: its name in the hint)."""
    if a.ndim == 0:
        raise DataError(f"{what} is a 0-d Dask array: data have one row per sample", user_source())
    if any(np.isnan(c) for chunks in a.chunks for c in chunks):
        raise DataError(f"{what} has chunks of unknown size {a.chunks}", user_source(),
                        hint="call .compute_chunk_sizes() on it first")
    if any(n > 1 for n in a.numblocks[1:]):
        axis = 1 + [n > 1 for n in a.numblocks[1:]].index(True)
        raise DataError(f"{what} is a Dask array chunked along axis {axis} (chunks {a.chunks}): "
                        "tracegrad.distributed splits the data by rows only, each chunk holding whole rows",
                        user_source(),
                        hint=f"rechunk it: {variable}.rechunk({{{', '.join(f'{k}: -1' for k in range(1, a.ndim))}}})")


def _check_fit_data(X, y, least: int, sync_every) -> list:
    """The rows of each chunk, after checking that X and y are Dask arrays chunked alike, by rows only,
    with at least ``least`` rows in every chunk."""
    da = sys.modules.get("dask.array")
    for name, a in (("X", X), ("y", y)):
        if da is None or not isinstance(a, da.Array):
            raise DataError(f"{name} must be a Dask array chunked by rows, got {type(a).__name__}", user_source(),
                            hint="for NumPy arrays in one process use tg.fit(loss, params, (X, y), ...); "
                                 "or da.from_array(X, chunks=(rows_per_chunk, -1))")
        _check_split_by_rows(a, name, name)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]}", user_source())
    if X.chunks[0] != y.chunks[0]:
        raise DataError(f"X and y are chunked differently along the rows: X {X.chunks[0]}, y {y.chunks[0]}: each "
                        "chunk of X trains with the chunk of y beside it", user_source(),
                        hint="y = y.rechunk({0: X.chunks[0]})")
    rows = list(X.chunks[0])
    for c, r in enumerate(rows):
        if r < least:
            what = "batch_size" if sync_every == SYNC_EPOCH else f"sync_every * batch_size ({sync_every} steps)"
            raise DataError(f"chunk {c} of X has {r} rows, fewer than {what} = {least}: every chunk trains "
                            "on its own rows", user_source(),
                            hint="rechunk into fewer, larger chunks (X.rechunk({0: rows})), or a smaller batch_size"
                                 + ("" if sync_every == SYNC_EPOCH else " or sync_every"))
    return rows


def _average(trees, weights, like):
    """The trees' leaves times ``weights``, added in the order given (weights of one chunk: 1.0, exact),
    each with the shape and dtype of ``like``'s."""
    leaves, tree = flatten(like)
    columns = [flatten(t)[0] for t in trees]
    out = []
    for k, leaf in enumerate(leaves):
        acc = np.multiply(columns[0][k], weights[0], dtype=leaf.dtype)
        for w, values in zip(weights[1:], columns[1:]):
            acc = acc + np.multiply(values[k], w, dtype=leaf.dtype)
        out.append(np.asarray(acc, dtype=leaf.dtype).reshape(leaf.shape))
    return unflatten(tree, out)


def _average_state(optimizer, states, weights, like) -> dict:
    state = {"step": max(s["step"] for s in states)}
    for slot in optimizer.slots:
        state[slot] = _average([s[slot] for s in states], weights, like[slot])
    return state


class _Start:
    """What every chunk's task of a round reads: the round's parameters, optimiser state and the chunks' seeds."""

    def __init__(self, params, state, seeds):
        self.params, self.state, self.seeds = params, state, seeds


class _Result:
    """A chunk's round: its parameters, optimiser state, mean loss, next seed and whether it ran compiled."""

    def __init__(self, params, state, loss, seed, compiled):
        self.params, self.state, self.loss, self.seed, self.compiled = params, state, loss, seed, compiled


class _Failed:
    """A chunk whose ``tg.fit`` raised a tracegrad error: re-raised by the client, naming the chunk."""

    def __init__(self, chunk, exc):
        self.chunk, self.nonfinite = chunk, isinstance(exc, NonFiniteError)
        self.kind, self.message, self.source, self.hint = type(exc).__name__, exc.message, exc.source, exc.hint


_losses: OrderedDict = OrderedDict()  # in each process: token -> the loss function as first unpickled


class _Trainer:
    """A chunk's round: ``tg.fit`` for one epoch of the chunk (or ``k`` steps), from the round's start.

    The loss is kept in the worker process under a token, so that ``tg.fit`` finds its traced and compiled
    epoch functions (kept per loss object) in every round, not only in the first."""

    def __init__(self, loss, optimizer, batch_size, drop_last, sync_every, compile, parallel, token):
        self.fun, self.optimizer, self.batch_size, self.drop_last = loss, optimizer, batch_size, drop_last
        self.sync_every, self.compile, self.parallel, self.token = sync_every, compile, parallel, token

    def loss(self):
        with _lock:
            fun = _losses.setdefault(self.token, self.fun)
            _losses.move_to_end(self.token)
            while len(_losses) > KEEP_FUNCTIONS:
                _losses.popitem(last=False)
            return fun

    def __call__(self, start: _Start, chunk: int, X, y, epochs: int = 1):
        from .primitives.shuffle import next_seed
        from .train import fit as local_fit

        seed, n = start.seeds[chunk], X.shape[0]
        if self.sync_every == SYNC_EPOCH:
            data, shuffle, drop_last = (X, y), True, self.drop_last
        else:  # k batches without replacement, in the order of the chunk's permutation
            rows = _chunk_order(self.compile)(np.uint64(seed), X)[:self.sync_every * self.batch_size]
            data, shuffle, drop_last = (X[rows], y[rows]), False, False
        try:
            params, history = local_fit(self.loss(), start.params, data, optimizer=self.optimizer,
                                        batch_size=self.batch_size, epochs=epochs, shuffle=shuffle, seed=seed,
                                        drop_last=drop_last, progress=False, state=start.state,
                                        compile=self.compile, parallel=self.parallel)
        except TracegradError as exc:
            return _Failed(chunk, exc)
        return _Result(params, history.state, history.loss[0] if history.loss else np.nan, next_seed(seed, n),
                       all(history.compiled))


_orders: dict = {}  # in each process: compile mode -> tg.jit of _order


def _order(seed, X):
    """The order of ``X``'s rows that ``tg.fit`` would shuffle them into with ``seed``."""
    from .primitives.shuffle import permutation

    return permutation(seed, n=X.shape[0])


def _chunk_order(mode):
    """``_order`` compiled (``tg.fit``'s permutation as Numba runs it: 40 ms for 10**6 rows, where the NumPy
    reference's swaps in Python take 2 s), one specialisation per chunk shape."""
    with _lock:
        if mode not in _orders:
            from .api import jit

            _orders[mode] = jit(_order, compile=mode)
        return _orders[mode]


def _train_chunk(trainer: _Trainer, start: _Start, chunk: int, X, y):
    return trainer(start, chunk, X, y)


def _warm_chunk(trainer: _Trainer, start: _Start, chunk: int, X, y):
    """``tg.fit`` with ``epochs=0`` on a chunk: traces and compiles (or loads) the epoch for its shape."""
    return trainer(start, chunk, X, y, epochs=0)


def _collect(results, rows, round_=0, rounds=0, params=None, state=None, history=None) -> list:
    """The chunks' results, or the first chunk's error (in chunk order) raised here."""
    for failed in results:
        if not isinstance(failed, _Failed):
            continue
        first = sum(rows[:failed.chunk])
        where = f"chunk {failed.chunk} (rows {first}..{first + rows[failed.chunk] - 1})"
        if failed.nonfinite:  # tg.fit's message, less what it says of its own err.params
            lines = [line for line in failed.message.split("\n") if not line.startswith("  err.params")]
            message = "\n".join(lines).replace("training stopped at epoch 1, ", "", 1)
            raise NonFiniteTrainingError(
                f"training stopped in round {round_} of {rounds}, on {where}, at {message}"
                f"\n  err.params, err.state: as before round {round_} (the average of round {round_ - 1})",
                epoch=round_, step=None, params=params, state=state, history=history, hint=failed.hint)
        raise DataError(f"{where}: {failed.message}", failed.source, failed.hint)
    return list(results)
