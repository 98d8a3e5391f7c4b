"""A regression network (docs/LECTURES.md, example 10): one hidden layer of sigmoid units, squared error.

    a = W x + b,   h = sigmoid(a),   y_hat = V h + c,   E = (y_hat - y)^2

fitted to 200 noisy samples of y = sin(2x) on [-2, 2], with 16 hidden units, averaged over
minibatches of 20, trained with Adam and a cosine learning-rate schedule. c is a scalar parameter
(a 0-d array). The script prints the generated code of the gradient, the training progress every
100 epochs and the fit at a few points.

    python examples/regression.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402

EPOCHS, BATCH = 600, 20


def predict(params, x):
    a = np.outer(x, params["W"]) + params["b"]  # a = W x + b for every sample x (one row each)
    h = tg.sigmoid(a)
    y_hat = h @ params["V"] + params["c"]
    return y_hat


def loss(params, x, y):
    E = (predict(params, x) - y) ** 2
    return np.mean(E)


def main():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 200)
    y = np.sin(2 * x) + 0.1 * rng.standard_normal(200)
    params = {"W": nn.glorot_normal((16,), rng) * 3, "b": np.zeros(16), "V": nn.glorot_normal((16,), rng),
              "c": np.array(0.0)}

    print("the gradient tracegrad generates for this loss (a batch of 20):\n")
    print(tg.source(tg.value_and_grad(loss), params, x[:BATCH], y[:BATCH]))

    steps = EPOCHS * (len(x) // BATCH)
    optimizer = tg.optim.Adam(lr=tg.optim.cosine_lr(0.05, total_steps=steps, final_lr=1e-4))
    params, history = tg.fit(loss, params, (x, y), optimizer=optimizer, batch_size=BATCH, epochs=EPOCHS,
                             seed=0, progress=False)
    for epoch in range(0, EPOCHS + 1, 100):
        value = history.initial_loss if epoch == 0 else history.loss[epoch - 1]
        print(f"epoch {epoch:>3}: mean squared error {value:.4f}")
    print(f"({history.steps} Adam steps in {sum(history.time) * 1e3:.0f} ms; the noise alone has variance 0.01)\n")

    grid = np.linspace(-2, 2, 9)
    print("     x   sin(2x)   network")
    for xi, fi in zip(grid, predict(params, grid)):
        print(f"{xi:6.2f}  {np.sin(2 * xi):8.3f}  {fi:8.3f}")
    error = np.max(np.abs(predict(params, grid) - np.sin(2 * grid)))
    assert history.loss[-1] < 0.02 and error < 0.15, (history.loss[-1], error)
    return history


if __name__ == "__main__":
    main()
