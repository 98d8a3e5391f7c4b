"""tg.nn: values against formulas and hand-computed numbers, gradients against central differences,
stability at extreme inputs, and the checks on labels and shapes.

Gradients are taken from the differentiated graph run by the reference interpreter (no Numba compile
per function, so the table stays fast); one test runs them all through Numba as well."""
import math

import numpy as np
import pytest
import scipy.special

import tracegrad as tg
from tracegrad import nn
from tracegrad.interpret import evaluate
from tracegrad.pytree import flatten
from tracegrad.testing import numeric_grad


def graph_value_and_grad(f, *args):
    """(value, gradient w.r.t. args[0]) from the value-and-gradient graph, run by the interpreter."""
    compiled = tg.value_and_grad(f).specialize(*args)
    outs = evaluate(compiled.graph, *flatten(args)[0], *compiled.captured())
    return outs[0], outs[1]


X = np.array([[-2.5, -0.7, 0.3], [1.2, 3.1, -0.1]])
WEIGHTS = np.array([[0.3, -1.1, 0.7], [2.0, 0.5, -0.4]])

ACTIVATIONS = {
    "sigmoid": (nn.sigmoid, lambda x: scipy.special.expit(x)),
    "tanh": (nn.tanh, np.tanh),
    "relu": (nn.relu, lambda x: np.where(x > 0, x, 0.0)),
    "leaky_relu": (lambda x: nn.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "elu": (lambda x: nn.elu(x, 0.5), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    "swish": (nn.swish, lambda x: x / (1 + np.exp(-x))),
    "softmax": (nn.softmax, lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
    "log_softmax": (nn.log_softmax, lambda x: x - np.log(np.exp(x).sum(axis=1, keepdims=True))),
    "logsumexp rows": (lambda x: nn.logsumexp(x, axis=1), lambda x: np.log(np.exp(x).sum(axis=1))),
    "logsumexp all": (nn.logsumexp, lambda x: np.log(np.exp(x).sum())),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_value_and_gradient(name):
    fn, formula = ACTIVATIONS[name]
    np.testing.assert_allclose(fn(X), formula(X), rtol=1e-14, atol=1e-15)

    def weighted(x):
        y = fn(x)
        return np.sum(y * WEIGHTS[:, :1]) if np.ndim(y) == 2 else np.sum(y * WEIGHTS[:, 0]) if np.ndim(y) else y * 1.5

    value, grad = graph_value_and_grad(weighted, X)
    assert value == pytest.approx(weighted(X), rel=1e-14)
    np.testing.assert_allclose(grad, numeric_grad(weighted, X), rtol=1e-6, atol=1e-8)


def test_logsumexp_and_softmax_are_stable():
    big = np.array([[1000.0, 1000.0, -1000.0], [-1e4, -1e4 + 1.0, -1e4 + 2.0]])
    np.testing.assert_allclose(nn.logsumexp(big, axis=1), scipy.special.logsumexp(big, axis=1), rtol=1e-15)
    np.testing.assert_allclose(nn.logsumexp(big, axis=1, keepdims=True), scipy.special.logsumexp(big, axis=1, keepdims=True))
    np.testing.assert_allclose(nn.softmax(big).sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(nn.log_softmax(big), scipy.special.log_softmax(big, axis=1), rtol=1e-14)
    np.testing.assert_allclose(nn.softmax(big, axis=0), scipy.special.softmax(big, axis=0), rtol=1e-14)
    value, grad = graph_value_and_grad(lambda x: nn.softmax_cross_entropy(x, np.array([2, 0])), big)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    expected = scipy.special.softmax(big, axis=1) - np.eye(3)[[2, 0]]
    np.testing.assert_allclose(grad, expected / 2, atol=1e-15)


# ------------------------------------------------------------------------------ losses: hand-computed values

PRED, TARGET = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.0, 1.5])  # differences 0, 2, 2.5


def test_regression_losses_by_hand():
    assert nn.mse(PRED, TARGET) == pytest.approx((0 + 4 + 6.25) / 3, rel=1e-15)
    assert nn.mae(PRED, TARGET) == pytest.approx(4.5 / 3, rel=1e-15)
    assert nn.huber(PRED, TARGET) == pytest.approx((0 + 1.5 + 2.0) / 3, rel=1e-15)
    assert nn.huber(PRED, TARGET, delta=3.0) == pytest.approx((0 + 2.0 + 3.125) / 3, rel=1e-15)
    assert nn.log_cosh(PRED, TARGET) == pytest.approx(np.mean(np.log(np.cosh([0, 2, 2.5]))), rel=1e-14)
    assert nn.log_cosh(np.array([1000.0]), np.array([0.0])) == pytest.approx(1000 - math.log(2), rel=1e-15)


def test_classification_losses_by_hand():
    bce = nn.binary_cross_entropy(np.array([0.9, 0.2]), np.array([1.0, 0.0]))
    assert bce == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, rel=1e-14)
    z, y = np.array([2.0, -1.0, 0.0, 800.0, -800.0]), np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    expected = np.mean([math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2), 800.0, 0.0])
    assert nn.binary_cross_entropy_with_logits(z, y) == pytest.approx(expected, rel=1e-14)
    assert np.isfinite(nn.binary_cross_entropy(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    # softmax cross-entropy: -log(e^2 / (e^2 + 1 + e^-1))
    assert nn.softmax_cross_entropy(np.array([[2.0, 0.0, -1.0]]), np.array([0])) == pytest.approx(
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))), rel=1e-14)


def test_multiclass_hinge_by_hand():
    # the classic three-example SVM-loss illustration: losses 2.9, 0 and 12.9
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    assert nn.multiclass_hinge(scores, np.array([0, 1, 2])) == pytest.approx((2.9 + 0 + 12.9) / 3, rel=1e-14)
    value, grad = graph_value_and_grad(lambda s: nn.multiclass_hinge(s, np.array([0, 1, 2])), scores)
    # row 0: class 1 violates (+1), the label gets -1; row 2: both others violate, the label gets -2
    np.testing.assert_allclose(grad, np.array([[-1, 1, 0], [0, 0, 0], [1, 1, -2]]) / 3, atol=1e-15)


LOSSES = {
    "mse": lambda p: nn.mse(p, TARGET),
    "mae": lambda p: nn.mae(p, TARGET),
    "huber": lambda p: nn.huber(p, TARGET, delta=2.2),
    "log_cosh": lambda p: nn.log_cosh(p, TARGET),
    "binary_cross_entropy": lambda p: nn.binary_cross_entropy(p / 5.0, np.array([1.0, 0.0, 0.3])),
    "binary_cross_entropy_with_logits": lambda p: nn.binary_cross_entropy_with_logits(p - 2.5, np.array([1.0, 0.0, 0.3])),
    "softmax_cross_entropy": lambda p: nn.softmax_cross_entropy(np.outer(p, np.array([1.0, -0.5])), np.array([0, 1, 1])),
    "multiclass_hinge": lambda p: nn.multiclass_hinge(np.outer(p, np.array([1.0, -0.5, 0.2])), np.array([0, 1, 2])),
    "l2_penalty": lambda p: nn.l2_penalty({"a": p, "b": [p[:2], p[1]]}),
    "l1_penalty": lambda p: nn.l1_penalty(p - 0.5),
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradient_matches_central_differences(name):
    loss = LOSSES[name]
    value, grad = graph_value_and_grad(loss, PRED)
    assert value == pytest.approx(loss(PRED), rel=1e-14)
    np.testing.assert_allclose(grad, numeric_grad(loss, PRED), rtol=1e-6, atol=1e-8)


def test_compiled_by_numba(rng):
    """One compiled function using the activations and the losses that tg.fit's tests do not compile:
    Numba agrees with the interpreter."""
    losses = ("mae", "huber", "log_cosh", "binary_cross_entropy", "l1_penalty")

    def everything(x):
        total = 0.0
        for fn, _ in ACTIVATIONS.values():
            total = total + np.sum(fn(x) * 0.1)
        for name in losses:
            total = total + LOSSES[name](x[0] + 2.0)
        return total
    x = X + 0.01 * rng.normal(size=X.shape)
    value, grad = tg.value_and_grad(everything)(x)
    expected_value, expected_grad = graph_value_and_grad(everything, x)
    assert value == pytest.approx(expected_value, rel=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)


def test_penalties():
    params = {"W": np.array([[1.0, -2.0]]), "b": np.array([3.0])}
    assert nn.l2_penalty(params) == 14.0
    assert nn.l1_penalty(params) == 6.0


# ------------------------------------------------------------------------------ bad input


def test_labels_out_of_range_or_not_integers():
    scores = np.zeros((3, 4))
    with pytest.raises(tg.DataError, match="label 4 is out of range for 4 classes"):
        nn.softmax_cross_entropy(scores, np.array([0, 4, 1]))
    with pytest.raises(tg.DataError, match="label -1 is out of range"):
        nn.multiclass_hinge(scores, np.array([0, -1, 1]))
    with pytest.raises(tg.DataError, match="must be integers"):
        nn.softmax_cross_entropy(scores, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(tg.ShapeError, match="labels of shape"):
        nn.softmax_cross_entropy(scores, np.array([0, 1]))
    with pytest.raises(tg.ShapeError, match="scores must have shape"):
        nn.softmax_cross_entropy(np.zeros(4), np.array([0]))


def test_float_labels_are_refused_while_tracing_too():
    with pytest.raises(tg.DataError, match="must be integers"):
        tg.grad(nn.softmax_cross_entropy)(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_prediction_and_target_shapes_must_agree():
    with pytest.raises(tg.ShapeError, match=r"\(3, 1\).*\(3,\)"):
        nn.mse(PRED.reshape(3, 1), TARGET)
    assert nn.mse(PRED, 0.0) == pytest.approx(21 / 3)  # a scalar target is fine


# ------------------------------------------------------------------------------ initialisers and the MLP


def test_initialisers_are_seeded_and_scaled():
    a, b = nn.he_normal((400, 300), rng=1), nn.he_normal((400, 300), rng=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.he_normal((400, 300), rng=2))
    assert a.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert nn.glorot_normal((400, 300), rng=0).std() == pytest.approx(math.sqrt(2 / 700), rel=0.02)
    u = nn.glorot_uniform((400, 300), rng=0)
    limit = math.sqrt(6 / 700)
    assert u.max() <= limit and u.min() >= -limit and u.max() > 0.99 * limit
    h = nn.he_uniform((400, 300), rng=np.random.default_rng(0), dtype=np.float32)
    assert h.dtype == np.float32 and np.abs(h).max() <= math.sqrt(6 / 400)
    with pytest.raises(TypeError, match="rng"):
        nn.he_normal((2, 2), rng=None)


def test_init_mlp_and_mlp():
    params = nn.init_mlp([5, 7, 3], rng=0)
    assert {k: v.shape for k, v in params.items()} == {"W0": (5, 7), "b0": (7,), "W1": (7, 3), "b1": (3,)}
    x = np.arange(10.0).reshape(2, 5)
    expected = np.maximum(x @ params["W0"], 0) @ params["W1"]
    np.testing.assert_allclose(nn.mlp(params, x), expected, rtol=1e-14)
    np.testing.assert_allclose(nn.mlp(params, x, activation=np.tanh), np.tanh(x @ params["W0"]) @ params["W1"], rtol=1e-14)
    assert nn.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5
