"""A corpus of user-style functions (the lectures' nets and losses), written as plain NumPy, each passing
check_grad in both modes. A KinkWarning is an error here: the points are drawn away from every kink, so
a warning would mean the check did not really happen."""
import numpy as np
import pytest

import tracegrad as tg

RNG = np.random.default_rng(0)
N, D, H, C = 6, 4, 5, 3  # examples, features, hidden units, classes
X = RNG.normal(size=(N, D))
LABELS = RNG.integers(0, C, size=N)
TARGETS = (RNG.random(N) > 0.5) * 1.0  # binary targets
Y = RNG.normal(size=N)  # regression targets


# ---------------------------------------------------------------------- the functions, as a user writes them


def sigmoid_neuron(w0, x0, w1, x1, w2):
    s = w0 * x0 + w1 * x1 + w2
    return 1.0 / (1.0 + np.exp(-s))


def svm_two_layer(W1, b1, W2, b2, X, y, reg=1e-2):
    h = np.maximum(0.0, X @ W1 + b1)  # ReLU
    scores = h @ W2 + b2
    correct = scores[np.arange(X.shape[0]), y]
    margins = np.maximum(0.0, scores - correct[:, None] + 1.0)
    data_loss = (np.sum(margins) - X.shape[0]) / X.shape[0]  # the correct class adds exactly 1 per row
    return data_loss + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))


def softmax_cross_entropy(W, b, X, y):
    logits = X @ W + b
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(X.shape[0]), y])


def binary_cross_entropy(w, b, X, t):
    p = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    return -np.mean(t * np.log(p) + (1.0 - t) * np.log(1.0 - p))


def huber(w, X, y, delta=1.0):
    r = X @ w - y
    small = np.abs(r) <= delta
    return np.mean(np.where(small, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)))


def log_cosh(w, X, y):
    return np.mean(np.log(np.cosh(X @ w - y)))


def mean_absolute_error(w, X, y):
    return np.mean(np.abs(X @ w - y))


def leaky_relu_net(W, v, X, y):
    z = X @ W
    h = np.where(z > 0, z, 0.01 * z)
    return np.mean((h @ v - y) ** 2)


def elu_net(W, v, X, y, alpha=1.0):
    z = X @ W
    h = np.where(z > 0, z, alpha * (np.exp(z) - 1.0))
    return np.mean((h @ v - y) ** 2)


def swish_net(W, v, X, y):
    z = X @ W
    h = z * tg.sigmoid(z)
    return np.mean((h @ v - y) ** 2)


def maxout_net(W, v, X, y, pieces=2):
    z = X @ W  # (N, H * pieces)
    h = np.max(z.reshape(X.shape[0] * H, pieces), axis=1).reshape(X.shape[0], H)
    return np.mean((h @ v - y) ** 2)


def log_softmax_loss(W, X, T):
    z = X @ W
    m = np.max(z, axis=1, keepdims=True)
    logp = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))
    return np.sum(logp * T)


def squared_norm(W, x):
    return np.sum((W @ x) ** 2)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


# ---------------------------------------------------------------------- points, away from every kink


def normal(*shape, scale=1.0):
    return RNG.normal(size=shape) * scale


CORPUS = {  # name -> (function, arguments, argnums)
    "sigmoid neuron": (sigmoid_neuron, (2.0, -1.0, -3.0, -2.0, -3.0), (0, 1, 2, 3, 4)),
    "2-layer net, SVM hinge + L2": (svm_two_layer, (normal(D, H), normal(H, scale=0.1), normal(H, C), normal(C),
                                                    X, LABELS), (0, 1, 2, 3)),
    "softmax cross-entropy": (softmax_cross_entropy, (normal(D, C), normal(C), X, LABELS), (0, 1)),
    "binary cross-entropy": (binary_cross_entropy, (normal(D, scale=0.5), 0.1, X, TARGETS), (0, 1)),
    "Huber": (huber, (normal(D), X, Y), 0),
    "log-cosh": (log_cosh, (normal(D), X, Y), 0),
    "MAE": (mean_absolute_error, (normal(D), X, Y), 0),
    "leaky ReLU": (leaky_relu_net, (normal(D, H), normal(H), X, Y), (0, 1)),
    "ELU": (elu_net, (normal(D, H), normal(H), X, Y), (0, 1)),
    "swish": (swish_net, (normal(D, H), normal(H), X, Y), (0, 1)),
    "maxout": (maxout_net, (normal(D, 2 * H), normal(H), X, Y), (0, 1)),
    "log-softmax": (log_softmax_loss, (normal(D, C), X, normal(N, C)), 0),
    "||Wx||^2": (squared_norm, (normal(3, D), normal(D)), (0, 1)),
    "Rosenbrock": (rosenbrock, (np.array([-1.2, 1.0, 0.5, 0.8]),), 0),
}
SECOND_ORDER = ["sigmoid neuron", "softmax cross-entropy", "Rosenbrock"]  # each compiles a grad of a grad

pytestmark = pytest.mark.filterwarnings("error::tracegrad.testing.KinkWarning")


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_passes_check_grad_in_both_modes(name):
    f, args, argnums = CORPUS[name]
    directional = tg.check_grad(f, *args, argnums=argnums, directions=4)
    full = tg.check_grad(f, *args, argnums=argnums, mode="full")
    assert directional.passed and full.passed
    n_entries = sum(np.size(a) for i, a in enumerate(args) if i in np.atleast_1d(argnums))
    assert len(full.rows) == n_entries and len(directional.rows) == 4
    assert max(row.abs_error for row in full.rows) < 1e-6 * max(1.0, max(abs(row.analytic) for row in full.rows))


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_smooth_corpus_passes_at_second_order(name):
    f, args, argnums = CORPUS[name]
    assert tg.check_grad(f, *args, argnums=argnums, order=2).passed


@pytest.mark.parametrize("name", ["softmax cross-entropy", "2-layer net, SVM hinge + L2"])
def test_corpus_in_float32(name):
    f, args, argnums = CORPUS[name]
    args32 = tuple(a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a for a in args)
    report = tg.check_grad(f, *args32, argnums=argnums, mode="full")
    assert report.passed and report.dtype == np.float32 and report.fd_dtype == np.float64


def test_the_points_exercise_both_sides_of_each_branch():
    """Otherwise a wrong rule for one side would go unchecked."""
    w, X_, y = CORPUS["Huber"][1]
    r = X_ @ w - y
    assert np.any(np.abs(r) <= 1.0) and np.any(np.abs(r) > 1.0)
    for name in ("leaky ReLU", "ELU"):
        W, v, X_, y = CORPUS[name][1]
        assert np.any(X_ @ W > 0) and np.any(X_ @ W < 0)
    W1, b1 = CORPUS["2-layer net, SVM hinge + L2"][1][:2]
    W2, b2 = CORPUS["2-layer net, SVM hinge + L2"][1][2:4]
    scores = np.maximum(0.0, X @ W1 + b1) @ W2 + b2
    margins = scores - scores[np.arange(N), LABELS][:, None] + 1.0
    assert np.any(margins > 0) and np.sum(margins < 0) > 0 and np.any(X @ W1 + b1 < 0)
