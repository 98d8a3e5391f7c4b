"""Train a small neural network on handwritten digits with tg.fit.

The data are scikit-learn's bundled 8x8 digits (1797 images, no download). The model is the one the
lecture notes build up to: a 64-128-10 multilayer perceptron with ReLU, softmax cross-entropy and
minibatch SGD with momentum (batch 32). The loss is ten lines of plain NumPy; tracegrad differentiates
it, and every epoch (shuffle, minibatches, forward, backward, update) runs as one compiled function.

    pip install -e ".[examples]"       # scikit-learn and matplotlib
    python examples/train_digits.py    # prints the progress and the test accuracy, saves digits_loss.png

Options: --epochs N, --png PATH (where the loss curve goes), --no-png.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402


def predict(params, X):
    """Scores for each class: relu(X W0 + b0) W1 + b1."""
    hidden = np.maximum(X @ params["W0"] + params["b0"], 0.0)
    return hidden @ params["W1"] + params["b1"]


def loss(params, X, y):
    """Mean softmax cross-entropy of the scores against the integer labels y."""
    return nn.softmax_cross_entropy(predict(params, X), y)


def accuracy(params, X, y):
    return nn.accuracy(predict(params, X), y)


def load_digits_split(seed=0):
    X, y = _read_digits()
    X = X / 16.0  # pixel intensities 0..16 scaled to [0, 1]
    order = np.random.default_rng(seed).permutation(len(X))
    train, test = order[:1437], order[1437:]  # 80 / 20
    return X[train], y[train], X[test], y[test]


def _read_digits():
    """scikit-learn's digits: its own file (64 pixels and the label a row) read with NumPy, which is what
    ``sklearn.datasets.load_digits`` does, without the second and more that importing scikit-learn takes."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("sklearn")  # (finds the package without importing it)
    except ValueError:
        spec = None
    if spec is None:
        sys.exit("this example needs scikit-learn for its data set: pip install scikit-learn "
                 "(or pip install -e \".[examples]\")")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not os.path.exists(path):  # (another layout: ask scikit-learn)
        from sklearn.datasets import load_digits
        digits = load_digits()
        return digits.data, digits.target.astype(np.int64)
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def save_loss_curve(history, path):
    try:  # (a Figure of its own, without pyplot: to a file, no window, nothing global)
        import matplotlib.ticker
        from matplotlib.figure import Figure
    except ImportError:
        print("(matplotlib is not installed: no loss curve)")
        return
    epochs = np.arange(1, len(history.loss) + 1)
    fig = Figure(figsize=(5, 3.2), dpi=120)
    ax = fig.subplots()
    ax.plot(epochs, history.loss, "o-", ms=3, label="training (running mean over the epoch)")
    ax.plot(epochs, history.val_loss, "s-", ms=3, label="test")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax cross-entropy")
    ax.set_yscale("log")
    ax.set_title("64-128-10 MLP on the 8x8 digits, tg.fit")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    print(f"loss curve saved to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--png", default="digits_loss.png", help="where to save the loss curve")
    parser.add_argument("--no-png", action="store_true", help="do not save the loss curve")
    opts = parser.parse_args(argv)

    X_train, y_train, X_test, y_test = load_digits_split()
    print(f"digits: {len(X_train)} training and {len(X_test)} test images of 8x8 pixels, 10 classes")
    params = nn.init_mlp([64, 128, 10], rng=0)  # He-normal weights, zero biases
    optimizer = tg.optim.SGD(lr=0.05, momentum=0.9)
    print(f"model: 64-128-10 MLP, ReLU, softmax cross-entropy; {optimizer}, batch 32, {opts.epochs} epochs")

    params, history = tg.fit(loss, params, (X_train, y_train), optimizer=optimizer, batch_size=32,
                             epochs=opts.epochs, shuffle=True, seed=0, validation=(X_test, y_test),
                             metrics={"accuracy": accuracy}, progress="plain")

    steps = history.steps
    train_time = sum(history.time)
    print(f"set up in {history.compile_time:.1f} s; {sum(history.compiled)} of {len(history.compiled)} epochs ran "
          f"compiled (the others on NumPy: a second of epochs on NumPy starts Numba's compile in the background; "
          f"TRACEGRAD_COMPILE=wait compiles first and fills the disk cache for later runs)")
    print(f"trained {steps} steps in {train_time * 1e3:.0f} ms: {train_time / steps * 1e6:.0f} us per step")
    test_accuracy = accuracy(params, X_test, y_test)
    print(f"test accuracy: {test_accuracy:.4f}")
    if not opts.no_png:
        save_loss_curve(history, opts.png)
    assert test_accuracy >= 0.96, f"expected a test accuracy of at least 0.96, got {test_accuracy:.4f}"
    return test_accuracy


if __name__ == "__main__":
    main()
