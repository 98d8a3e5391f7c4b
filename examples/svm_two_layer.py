"""A two-layer network with the multiclass SVM loss (docs/LECTURES.md, example 9).

    s = W2 max(0, W1 x) + b2,      L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1)
    L(W1, W2) = (1/N) sum_i L_i + lam R(W1) + lam R(W2),   R(W) = sum W^2

written for a batch of row vectors (x W1 rather than W1 x), with the bias trick: each x ends in a
constant 1, so W1 carries the hidden units' biases. The data are three interleaved spirals in the plane
(300 points), which no linear classifier separates: a linear SVM trained the same way is shown first
for comparison. Both train with tg.fit, SGD with momentum, batches of 30.

    python examples/svm_two_layer.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402

LAM = 1e-3


def spirals(points_per_class=100, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k in range(classes):
        r = np.linspace(0.05, 1.0, points_per_class)
        theta = np.linspace(4.0 * k, 4.0 * (k + 1), points_per_class) + 0.2 * rng.standard_normal(points_per_class)
        X.append(np.column_stack([r * np.sin(theta), r * np.cos(theta)]))
        y.append(np.full(points_per_class, k))
    return np.concatenate(X), np.concatenate(y)


def linear_scores(params, X):
    return X @ params["W"] + params["b"]


def linear_svm_loss(params, X, y):
    return nn.multiclass_hinge(linear_scores(params, X), y) + LAM * np.sum(params["W"] ** 2)


def with_ones(X):
    """[x, 1] for each row x: the bias trick."""
    return np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)


def two_layer_scores(params, X):
    hidden = np.maximum(0.0, X @ params["W1"])  # max(0, W1 x), one row per sample
    return hidden @ params["W2"] + params["b2"]


def two_layer_svm_loss(params, X, y):
    data_loss = nn.multiclass_hinge(two_layer_scores(params, X), y)  # (1/N) sum_i L_i
    return data_loss + LAM * np.sum(params["W1"] ** 2) + LAM * np.sum(params["W2"] ** 2)


def ascii_map(scores_fn, params, size=24):
    """The predicted class over [-1, 1]^2, one character per cell."""
    grid = np.linspace(-1, 1, size)
    points = with_ones(np.array([[x, y] for y in grid[::-1] for x in grid]))
    labels = np.argmax(scores_fn(params, points), axis=1).reshape(size, size)
    return "\n".join("   " + "".join(".ox"[k] for k in row) for row in labels)


def main():
    X, y = spirals()
    rng = np.random.default_rng(1)
    print(f"three spirals: {len(X)} points in the plane, 3 classes\n")

    opt = tg.optim.SGD(lr=0.1, momentum=0.9)
    linear = {"W": 0.01 * rng.standard_normal((2, 3)), "b": np.zeros(3)}
    linear, history = tg.fit(linear_svm_loss, linear, (X, y), optimizer=opt, batch_size=30, epochs=100,
                             progress=False)
    linear_accuracy = nn.accuracy(linear_scores(linear, X), y)
    print(f"linear SVM:        loss {history.loss[-1]:.3f}, training accuracy {linear_accuracy:.2f}")

    X1 = with_ones(X)
    params = {"W1": nn.he_normal((3, 100), rng), "W2": nn.he_normal((100, 3), rng), "b2": np.zeros(3)}
    params, history = tg.fit(two_layer_svm_loss, params, (X1, y), optimizer=opt, batch_size=30, epochs=300,
                             progress=False)
    accuracy = nn.accuracy(two_layer_scores(params, X1), y)
    print(f"two-layer network: loss {history.loss[-1]:.3f}, training accuracy {accuracy:.2f} "
          f"({history.steps} steps in {sum(history.time) * 1e3:.0f} ms)\n")
    print("what the two-layer network predicts over [-1, 1]^2 (classes . o x):")
    print(ascii_map(two_layer_scores, params))
    assert linear_accuracy < 0.7 and accuracy > 0.95, (linear_accuracy, accuracy)
    return accuracy


if __name__ == "__main__":
    main()
