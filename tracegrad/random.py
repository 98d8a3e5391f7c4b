"""Random numbers that are drawn at every call of a traced function: from an explicit key.

A traced function runs once, while it is traced; ``np.random.rand(3)`` there would draw three numbers
once and the compiled code would reuse them at every call (tracegrad refuses it, see below). Instead,
pass a *key* as an argument and draw from it with these functions::

    def loss(params, x, y, key):
        h = tg.nn.dropout(np.tanh(x @ params["W"]), 0.5, key)
        return tg.nn.mse(h @ params["v"], y)

    key = tg.random.key(0)
    for step in range(100):
        g = tg.grad(loss)(params, x, y, tg.random.fold_in(key, step))  # new numbers at every step

A key is a ``numpy.uint64`` scalar. The same key gives the same numbers, in the compiled code and in the
NumPy evaluator alike; for several draws, ``split`` a key or ``fold_in`` a counter: never draw twice
from one key (two draws of one key and shape are the same numbers). The generator is counter-based
(number ``i`` of a draw is SplitMix64's finaliser of ``key + (i + 1) * golden``, see
``tracegrad/primitives/random.py``): it has no state to carry, so
the draws are plain values in the graph, computed at every call.

Called outside a traced function (or with a key that is not traced), these functions compute eagerly
with NumPy, and give the numbers the compiled code gives.

Gradients: no gradient flows into a key. ``normal`` and ``uniform`` are reparameterised, ``loc + scale *
eps`` and ``low + (high - low) * u``, so gradients with respect to ``loc``, ``scale``, ``low`` and
``high`` are those of the samples (the pathwise estimator); ``bernoulli``'s samples do not depend smoothly
on ``p``, and its gradient with respect to ``p`` is 0.

``np.random`` inside a traced function (``np.random.rand``, ``np.random.default_rng``, a ``Generator``
or ``RandomState`` the function reads from its globals or closure, and its methods) raises
``UnsupportedError`` at that line: its numbers would be drawn once, while tracing.
"""
from __future__ import annotations

import numpy as np

from .core import TracedArray
from .errors import GradTypeError, user_source
from .primitives.random import (KEY0, KEY_DTYPE, random_fold_in, random_normal, random_permutation,
                                random_uniform)

__all__ = ["key", "split", "fold_in", "uniform", "normal", "bernoulli", "permutation"]


def key(seed: int) -> np.uint64:
    """A key from an integer ``seed`` (any Python int from -2**63 to 2**64 - 1): a ``numpy.uint64``.

    >>> import tracegrad as tg
    >>> tg.random.key(0) == tg.random.key(0), tg.random.key(0) == tg.random.key(1)
    (np.True_, np.False_)
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise GradTypeError(f"tg.random.key takes an int seed, got {type(seed).__name__}")
    if not -2 ** 63 <= int(seed) < 2 ** 64:
        raise GradTypeError(f"tg.random.key: the seed {seed} does not fit in 64 bits")
    return random_fold_in(KEY0, np.uint64(int(seed) % 2 ** 64))


def _check(k, what):
    """``k`` is a key (traced or not): a uint64 scalar."""
    if isinstance(k, TracedArray):
        return k  # the primitive's shape rule checks it
    if isinstance(k, (np.ndarray, np.generic)) and k.dtype == KEY_DTYPE and np.ndim(k) == 0:
        return np.uint64(k)
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        raise GradTypeError(f"{what} takes a key, not the int {k}", user_source(),
                            "make one with tg.random.key(seed) and pass it as an argument")
    raise GradTypeError(f"{what} takes a key (a uint64 scalar made by tg.random.key(seed)), got "
                        f"{type(k).__name__}" + (f" of dtype {k.dtype} and shape {np.shape(k)}" if hasattr(k, "dtype")
                                                 else ""), user_source())


def fold_in(key, data):
    """A new key from ``key`` and the integer ``data`` (an int, or an integer array: one key per entry).

    Different ``data`` give independent keys: ``fold_in(key, step)`` is a fresh key for each step.

    >>> import tracegrad as tg
    >>> k = tg.random.key(0)
    >>> tg.random.fold_in(k, 1) == tg.random.fold_in(k, 1), tg.random.fold_in(k, 1) == tg.random.fold_in(k, 2)
    (np.True_, np.False_)
    """
    key = _check(key, "tg.random.fold_in")
    if not isinstance(data, TracedArray):
        data = np.asarray(data)
        if data.dtype.kind not in "iu":
            raise GradTypeError(f"tg.random.fold_in folds integers into a key, not {data.dtype}", user_source())
        if data.ndim == 0:
            data = data.astype(np.uint64)[()] if data.dtype.kind == "u" else np.uint64(int(data) % 2 ** 64)
    return random_fold_in(key, data)


def split(key, num: int = 2):
    """``num`` new keys from ``key``, as an array of shape ``(num,)`` (``k1, k2 = tg.random.split(key)``).

    Key ``i`` is ``fold_in(key, i)``.

    >>> import tracegrad as tg
    >>> tg.random.split(tg.random.key(0), 3).shape
    (3,)
    """
    key = _check(key, "tg.random.split")
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise GradTypeError(f"tg.random.split: num must be a positive int, got {num!r}", user_source())
    if isinstance(key, TracedArray):  # one node per key: fold_in of the literals 0 .. num - 1
        return np.stack([random_fold_in(key, np.uint64(i)) for i in range(num)])
    return random_fold_in(key, np.arange(num, dtype=np.uint64))


def _dtype_of(dtype, *values):
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise GradTypeError(f"random numbers of dtype {dtype}: float32 or float64 only", user_source())
        return dtype
    floats = [np.dtype(v.dtype) for v in values if hasattr(v, "dtype") and np.dtype(v.dtype).kind == "f"]
    return np.dtype(np.float32) if floats and all(d == np.float32 for d in floats) else np.dtype(np.float64)


def _shape_of(shape, *values):
    if shape is None:
        return np.broadcast_shapes(*(np.shape(v) for v in values))
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise GradTypeError(f"a negative dimension in the shape {shape}", user_source())
    return shape


def uniform(key, shape=None, low=0.0, high=1.0, dtype=None):
    """Uniform random numbers in [``low``, ``high``) of ``shape`` (default: the shape of ``low`` and ``high``
    broadcast), computed as ``low + (high - low) * u`` with ``u`` in [0, 1): differentiable with respect to
    ``low`` and ``high``. ``dtype``: float64, or float32 when ``low`` or ``high`` are float32 arrays.

    >>> import tracegrad as tg
    >>> u = tg.random.uniform(tg.random.key(0), (2, 3))
    >>> u.shape, bool(((0 <= u) & (u < 1)).all())
    ((2, 3), True)
    """
    key = _check(key, "tg.random.uniform")
    dtype = _dtype_of(dtype, low, high)
    shape = _shape_of(shape, low, high)
    u = random_uniform(key, shape=shape, dtype=dtype)
    if _is_number(low, 0.0) and _is_number(high, 1.0):
        return u
    return low + (high - low) * u


def normal(key, shape=None, loc=0.0, scale=1.0, dtype=None):
    """Normal random numbers of mean ``loc`` and standard deviation ``scale``, of ``shape`` (default: the
    shape of ``loc`` and ``scale`` broadcast), computed as ``loc + scale * eps`` with ``eps`` standard normal:
    differentiable with respect to ``loc`` and ``scale`` (the reparameterisation trick).

    >>> import numpy as np, tracegrad as tg
    >>> def sample_mean(mu, sigma, key):
    ...     return np.mean(tg.random.normal(key, (1000,), mu, sigma))
    >>> tg.grad(sample_mean, argnums=(0, 1))(2.0, 0.5, tg.random.key(0))[0]
    1.0
    """
    key = _check(key, "tg.random.normal")
    dtype = _dtype_of(dtype, loc, scale)
    shape = _shape_of(shape, loc, scale)
    eps = random_normal(key, shape=shape, dtype=dtype)
    if _is_number(loc, 0.0) and _is_number(scale, 1.0):
        return eps
    return loc + scale * eps


def bernoulli(key, p=0.5, shape=None):
    """Booleans that are True with probability ``p``, of ``shape`` (default: the shape of ``p``):
    ``uniform(key, shape) < p``. There is no gradient with respect to ``p``.

    >>> import tracegrad as tg
    >>> tg.random.bernoulli(tg.random.key(0), 0.5, (4,)).dtype
    dtype('bool')
    """
    key = _check(key, "tg.random.bernoulli")
    shape = _shape_of(shape, p)
    return random_uniform(key, shape=shape, dtype=np.dtype(np.float64)) < p


def permutation(key, n: int):
    """A random permutation of ``range(n)`` (int64), for shuffling rows: ``x[tg.random.permutation(key, len(x))]``.

    >>> import tracegrad as tg
    >>> sorted(tg.random.permutation(tg.random.key(0), 5).tolist())
    [0, 1, 2, 3, 4]
    """
    key = _check(key, "tg.random.permutation")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise GradTypeError(f"tg.random.permutation: n must be a non-negative int, got {n!r}", user_source())
    return random_permutation(key, n=int(n))


def _is_number(value, number) -> bool:
    return type(value) in (int, float) and value == number
