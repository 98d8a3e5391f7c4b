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
import uuid
from collections import OrderedDict
from typing import Callable

import numpy as np

from .errors import DataError, SeparabilityError, TracegradError, user_source
from .pytree import TreeDef, flatten, unflatten

__all__ = ["value_and_grad", "DistributedFunction"]

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
        if a.ndim == 0:
            raise DataError(f"argument {i} is a 0-d Dask array: data arguments have rows", user_source())
        if any(np.isnan(c) for chunks in a.chunks for c in chunks):
            raise DataError(f"argument {i} has chunks of unknown size {a.chunks}", user_source(),
                            hint="call .compute_chunk_sizes() on it first")
        if any(n > 1 for n in a.numblocks[1:]):
            raise DataError(f"argument {i} is a Dask array chunked along axis "
                            f"{1 + [n > 1 for n in a.numblocks[1:]].index(True)} (chunks {a.chunks}): "
                            "tracegrad.distributed splits the data by rows only, each chunk holding whole rows",
                            user_source(), hint=f"rechunk it: x.rechunk({{{', '.join(f'{k}: -1' for k in range(1, a.ndim))}}})")
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
