"""Activations, losses, penalties and initialisers for small neural networks, in plain NumPy.

Every function here is ordinary NumPy code: called on arrays it computes eagerly, and inside a
``tg.grad``/``tg.value_and_grad``/``tg.fit`` loss it traces into the graph like the rest of your code.
They are written to be numerically stable: log-sum-exp subtracts the maximum, the cross-entropies
take logits, ``log_cosh`` never forms ``cosh``.

>>> import numpy as np, tracegrad as tg
>>> logits, labels = np.array([[2.0, 0.0, -1.0]]), np.array([0])
>>> round(float(tg.nn.softmax_cross_entropy(logits, labels)), 6)
0.169846
>>> tg.grad(tg.nn.softmax_cross_entropy)(logits, labels).round(4)
array([[-0.1562,  0.1142,  0.042 ]])

Losses average over the samples (the first axis), as in L = (1/N) sum_i L_i; add penalties yourself:
``loss = softmax_cross_entropy(scores, y) + 1e-4 * l2_penalty(weights)``.
"""
from __future__ import annotations

import math

import numpy as np

from . import random
from .errors import DataError, ShapeError
from .primitives.elementwise import sigmoid as _sigmoid
from .primitives.structural import stop_gradient as _stop_gradient
from .pytree import flatten

__all__ = [
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish", "softmax", "log_softmax", "logsumexp",
    "mse", "mae", "huber", "log_cosh", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "softmax_cross_entropy", "multiclass_hinge", "l1_penalty", "l2_penalty",
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "init_mlp", "mlp", "accuracy", "dropout",
]

# ---------------------------------------------------------------------------------------- activations


def sigmoid(x):
    """The logistic function 1 / (1 + exp(-x)), elementwise; also ``tg.sigmoid``.

    Its derivative is (1 - y) * y with y = sigmoid(x), which is how the generated code writes the
    backward pass (``grad_s3 = grad_L * (1.0 - L) * L``, as in the lecture notes). Stable for any x: no
    overflow at -1000, exactly 0 and 1 far out. ``scipy.special.expit`` traces to the same operation.

    >>> import tracegrad as tg
    >>> float(tg.sigmoid(0.0)), float(tg.grad(tg.sigmoid)(0.0))
    (0.5, 0.25)
    """
    return _sigmoid(x)


def stop_gradient(x):
    """``x`` itself, but no gradient flows back through it; also ``tg.stop_gradient``.

    For quantities that shift a computation without changing its value, such as the maximum subtracted
    in a stable softmax: ``np.exp(z - tg.stop_gradient(np.max(z)))``. The generated code uses the value
    as it is and computes no gradient for it (the backward pass of that softmax never reads the max).

    >>> import tracegrad as tg
    >>> float(tg.grad(lambda x: x * tg.stop_gradient(x))(3.0))  # d/dx of x * c at c = 3
    3.0
    """
    return _stop_gradient(x)


def tanh(x):
    """The hyperbolic tangent (``np.tanh``), listed here with the other activations."""
    return np.tanh(x)


def relu(x):
    """max(x, 0). At 0 the gradient is 0.5, tracegrad's midpoint convention for ties of ``maximum``."""
    return np.maximum(x, 0.0)


def leaky_relu(x, slope=0.01):
    """max(slope * x, x) for 0 <= slope < 1 (the notes' example uses slope 0.1)."""
    return np.maximum(slope * x, x)


def elu(x, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    # exp only ever sees x <= 0: no overflow in the branch np.where does not take (see DESIGN.md)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def swish(x):
    """x * sigmoid(x) (also called SiLU)."""
    return x * _sigmoid(x)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over ``axis``, computed as m + log(sum(exp(x - m))) with m the maximum.

    >>> float(logsumexp(np.array([1000.0, 1000.0])))  # np.log(np.sum(np.exp(x))) gives inf
    1000.6931471805599
    """
    # m is only a shift: the result does not depend on it (its gradient, 1 - sum(softmax), is zero), so no
    # gradient needs to flow through the max: stop_gradient saves the backward pass a max's tie-breaking.
    m = _stop_gradient(np.max(x, axis=axis, keepdims=True))
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    if keepdims:
        return out
    return np.reshape(out, _reduced_shape(np.shape(x), axis))


def log_softmax(x, axis=-1):
    """x - logsumexp(x): log-probabilities, stable for large logits.

    Computed as (x - m) - log(sum(exp(x - m))), m the maximum (a constant shift, no gradient through it):
    subtracting m first keeps the digits that x - (m + log(...)) would lose when |x| is large.
    """
    shifted = x - _stop_gradient(np.max(x, axis=axis, keepdims=True))
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, with the maximum subtracted first."""
    e = np.exp(x - _stop_gradient(np.max(x, axis=axis, keepdims=True)))
    return e / np.sum(e, axis=axis, keepdims=True)


def _reduced_shape(shape, axis):
    if axis is None:
        return ()
    axes = {a % len(shape) for a in ((axis,) if np.ndim(axis) == 0 else axis)}
    return tuple(d for i, d in enumerate(shape) if i not in axes)


# ---------------------------------------------------------------------------------------- regression losses


def mse(pred, target):
    """Mean squared error: mean((pred - target)^2)."""
    _check_same_shape("mse", pred, target)
    d = pred - target
    return np.mean(d * d)


def mae(pred, target):
    """Mean absolute error: mean(|pred - target|) (gradient 0 where they are equal)."""
    _check_same_shape("mae", pred, target)
    return np.mean(np.abs(pred - target))


def huber(pred, target, delta=1.0):
    """Huber loss: 0.5 r^2 for |r| <= delta, delta (|r| - 0.5 delta) beyond, averaged.

    Written as 0.5 q^2 + delta (|r| - q) with q = min(|r|, delta): one expression, no branches.
    """
    _check_same_shape("huber", pred, target)
    r = np.abs(pred - target)
    q = np.minimum(r, delta)
    return np.mean(0.5 * q * q + delta * (r - q))


def log_cosh(pred, target):
    """mean(log(cosh(pred - target))), as |r| + log1p(exp(-2|r|)) - log 2 (cosh overflows past |r| ~ 710)."""
    _check_same_shape("log_cosh", pred, target)
    r = np.abs(pred - target)
    return np.mean(r + np.log1p(np.exp(-2.0 * r)) - math.log(2.0))


# ---------------------------------------------------------------------------------------- classification losses


def binary_cross_entropy(probs, targets):
    """-mean(y log p + (1 - y) log(1 - p)) for probabilities p in [0, 1] and targets y in [0, 1].

    p is clipped to [eps, 1 - eps] (eps the dtype's machine epsilon) so that a saturated p gives a
    large finite loss rather than inf. Prefer ``binary_cross_entropy_with_logits``: it needs no clipping.
    """
    _check_same_shape("binary_cross_entropy", probs, targets)
    eps = float(np.finfo(_dtype(probs)).eps)
    p = np.clip(probs, eps, 1.0 - eps)
    return -np.mean(targets * np.log(p) + (1.0 - targets) * np.log(1.0 - p))


def binary_cross_entropy_with_logits(logits, targets):
    """Binary cross-entropy of sigmoid(logits), without forming the sigmoid:
    mean(max(z, 0) - z y + log(1 + exp(-|z|))), exact for any z."""
    _check_same_shape("binary_cross_entropy_with_logits", logits, targets)
    z = logits
    return np.mean(np.maximum(z, 0.0) - z * targets + np.log1p(np.exp(-np.abs(z))))


def softmax_cross_entropy(logits, labels):
    """-mean(log_softmax(logits)[i, labels[i]]) for logits of shape (N, C) and integer labels in [0, C).

    Raises ``DataError`` for labels that are not integers or (when they are known, i.e. outside a
    trace) not in [0, C), and ``ShapeError`` when the shapes do not fit.
    """
    n = _check_labels("softmax_cross_entropy", logits, labels)
    logp = log_softmax(logits, axis=1)
    return -np.mean(logp[np.arange(n), labels])


def multiclass_hinge(scores, labels, margin=1.0):
    """The multiclass SVM loss: mean over samples of sum_{j != y} max(0, s_j - s_y + margin).

    The j = y term is max(0, margin) = margin, so it is summed with the rest and subtracted.
    """
    n = _check_labels("multiclass_hinge", scores, labels)
    correct = scores[np.arange(n), labels]
    margins = np.maximum(0.0, scores - np.reshape(correct, (n, 1)) + margin)
    return np.mean(np.sum(margins, axis=1)) - margin


def accuracy(scores, labels) -> float:
    """Fraction of rows whose largest score is at the label. Eager only (argmax has no gradient)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


# ---------------------------------------------------------------------------------------- penalties


def l2_penalty(params):
    """sum of w^2 over every leaf of ``params`` (an array or any pytree of arrays): R(W) in the notes."""
    leaves = flatten(params)[0]
    return sum(np.sum(w * w) for w in leaves)


def l1_penalty(params):
    """sum of |w| over every leaf of ``params`` (an array or any pytree of arrays)."""
    leaves = flatten(params)[0]
    return sum(np.sum(np.abs(w)) for w in leaves)


def dropout(x, rate, key):
    """Inverted dropout: each entry of ``x`` is zeroed with probability ``rate`` and the others are divided by
    ``1 - rate``, so that the expectation is ``x``. The mask is drawn from ``key`` (``tg.random``) at every
    call; ``key=None`` (evaluation) or ``rate=0`` returns ``x`` unchanged. In ``tg.fit(..., key=...)`` each
    step's loss gets a key of its own.

    >>> import numpy as np, tracegrad as tg
    >>> dropout(np.ones(6), 0.5, tg.random.key(1))
    array([0., 2., 0., 2., 0., 2.])
    >>> dropout(np.ones(2), 0.5, None)
    array([1., 1.])
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
        raise DataError(f"dropout: rate must be a number in [0, 1), got {rate!r}")
    if key is None or rate == 0:
        return x
    keep = random.bernoulli(key, 1.0 - rate, np.shape(x))
    return np.where(keep, x / (1.0 - rate), 0.0)


# ---------------------------------------------------------------------------------------- initialisers


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _fans(shape) -> tuple[int, int]:
    shape = tuple(shape) if np.ndim(shape) else (int(shape),)
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:], dtype=np.int64))  # 1 for matrices
    return shape[0] * receptive, shape[1] * receptive


def glorot_uniform(shape, rng, dtype=np.float64):
    """Uniform on [-a, a] with a = sqrt(6 / (fan_in + fan_out)); ``shape`` is (fan_in, fan_out) for ``x @ W``.

    >>> glorot_uniform((2, 3), rng=0).shape
    (2, 3)
    """
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _generator(rng).uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(shape, rng, dtype=np.float64):
    """Normal with standard deviation sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return (_generator(rng).standard_normal(size=shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def he_uniform(shape, rng, dtype=np.float64):
    """Uniform on [-a, a] with a = sqrt(6 / fan_in): for ReLU layers."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return _generator(rng).uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(shape, rng, dtype=np.float64):
    """Normal with standard deviation sqrt(2 / fan_in): for ReLU layers."""
    fan_in, _ = _fans(shape)
    return (_generator(rng).standard_normal(size=shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def init_mlp(sizes, rng, init=he_normal, dtype=np.float64) -> dict:
    """Parameters of a fully connected network with layer widths ``sizes``: ``{"W0", "b0", "W1", ...}``,
    weights from ``init`` (shape (in, out), for ``x @ W``) and zero biases.

    >>> {k: v.shape for k, v in init_mlp([4, 8, 2], rng=0).items()}
    {'W0': (4, 8), 'b0': (8,), 'W1': (8, 2), 'b1': (2,)}
    """
    rng = _generator(rng)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = init((fan_in, fan_out), rng, dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype)
    return params


def mlp(params, x, activation=relu):
    """The network of ``init_mlp``: ``activation(x @ W + b)`` for every layer but the last, which is linear."""
    layers = len(params) // 2
    for i in range(layers):
        x = x @ params[f"W{i}"] + params[f"b{i}"]
        if i < layers - 1:
            x = activation(x)
    return x


# ---------------------------------------------------------------------------------------- checks


def _dtype(x):
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def _check_same_shape(name, pred, target):
    if np.ndim(pred) and np.ndim(target) and np.shape(pred) != np.shape(target):
        raise ShapeError(f"{name}: predictions of shape {np.shape(pred)} and targets of shape "
                         f"{np.shape(target)} differ",
                         hint="reshape one of them (a column (n, 1) against a vector (n,) would broadcast to (n, n))")


def _check_labels(name, scores, labels) -> int:
    """The number of samples, after checking that ``labels`` fit ``scores`` (values only when known)."""
    if np.ndim(scores) != 2:
        raise ShapeError(f"{name}: scores must have shape (samples, classes), got {np.shape(scores)}")
    n, classes = np.shape(scores)
    dtype = np.dtype(getattr(labels, "dtype", None) or np.asarray(labels).dtype)
    if dtype.kind not in "iu":
        raise DataError(f"{name}: labels must be integers (class indices), got dtype {dtype}",
                        hint="use labels.astype(np.int64); for one-hot targets use labels.argmax(axis=1)")
    if np.shape(labels) != (n,):
        raise ShapeError(f"{name}: {n} rows of scores but labels of shape {np.shape(labels)}")
    if isinstance(labels, np.ndarray) and labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise DataError(f"{name}: label {bad} is out of range for {classes} classes (labels must be in "
                            f"[0, {classes - 1}])")
    return n
