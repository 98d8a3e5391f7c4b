"""XOR (docs/LECTURES.md, example 8): no line separates it; one hidden layer of sigmoid units does.

First a linear model, sigmoid(x . w + b) trained on binary cross-entropy, gets stuck: the best it
can do is to answer 0.5 everywhere (loss log 2 = 0.693). Then a 2-3-1 network with sigmoid hidden
units, trained the same way, learns the four points. Both are trained with tg.fit on the full
batch of four points.

    python examples/xor.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])  # x1 XOR x2


def linear(params, X):
    return X @ params["w"] + params["b"]  # a logit


def linear_loss(params, X, y):
    return nn.binary_cross_entropy_with_logits(linear(params, X), y)


def network(params, X):
    h = tg.sigmoid(X @ params["W1"] + params["b1"])  # hidden layer: three sigmoid units
    return h @ params["w2"] + params["b2"]           # output logit


def network_loss(params, X, y):
    return nn.binary_cross_entropy_with_logits(network(params, X), y)


def show(name, logits, history):
    probs = 1 / (1 + np.exp(-logits))
    print(f"{name}: loss {history.initial_loss:.4f} -> {history.loss[-1]:.4f} after {history.steps} steps")
    print("   x1  x2   target   p(1)")
    for (x1, x2), target, p in zip(X, Y, probs):
        print(f"   {x1:.0f}   {x2:.0f}   {target:.0f}        {p:.3f}")
    print()
    return history.loss[-1], int(np.sum((probs > 0.5) == (Y > 0.5)))


def main():
    rng = np.random.default_rng(0)
    opt = tg.optim.SGD(lr=0.5, momentum=0.9)

    params = {"w": rng.normal(size=2), "b": np.zeros(())}
    params, history = tg.fit(linear_loss, params, (X, Y), optimizer=opt, batch_size=4, epochs=500, progress=False)
    linear_loss_value, _ = show("linear model sigmoid(x . w + b)", linear(params, X), history)

    params = {"W1": nn.glorot_normal((2, 3), rng), "b1": np.zeros(3), "w2": nn.glorot_normal((3,), rng),
              "b2": np.zeros(())}
    params, history = tg.fit(network_loss, params, (X, Y), optimizer=opt, batch_size=4, epochs=500, progress=False)
    _, network_right = show("2-3-1 network with sigmoid hidden units", network(params, X), history)
    print(f"the network gets {network_right} of 4 right; its hidden units on the four points (a column per unit):")
    print(np.round(tg.sigmoid(X @ params["W1"] + params["b1"]), 3))
    assert linear_loss_value > 0.69 and network_right == 4
    return history


if __name__ == "__main__":
    main()
