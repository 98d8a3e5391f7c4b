"""Draw the pictures under docs/images with ``tg.draw`` (needs ``tracegrad[draw]`` and Graphviz's dot).

    python tools/make_images.py             # rewrite docs/images/*.png
    python tools/make_images.py --before    # also the pictures as tg.draw made them before the
                                            # top-to-bottom layout (*_before.png: rankdir=LR, every op)

The neuron is the lectures' (LECTURES.md, example 2); the XOR network is examples/xor.py's; the MLP is
the digits classifier's shape at a small size, so the picture stays legible.
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import tracegrad as tg  # noqa: E402
from tracegrad import nn  # noqa: E402
from tracegrad.draw import MAX_INCHES  # noqa: E402

import xor  # noqa: E402

OUT = os.path.join(ROOT, "docs", "images")


def neuron(w0, x0, w1, x1, w2):
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = tg.sigmoid(s3)
    return L


def mlp_loss(params, X, y):
    hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    logits = hidden @ params["W2"] + params["b2"]
    return nn.softmax_cross_entropy(logits, y)


def pictures():
    rng = np.random.default_rng(0)
    args = (2.0, -1.0, -3.0, -2.0, -3.0)
    xor_params = {"W1": nn.glorot_normal((2, 3), rng), "b1": np.zeros(3), "w2": nn.glorot_normal((3,), rng),
                  "b2": np.zeros(())}
    mlp_params = {"W1": nn.glorot_normal((4, 8), rng), "b1": np.zeros(8), "W2": nn.glorot_normal((8, 3), rng),
                  "b2": np.zeros(3)}
    X, y = rng.normal(size=(6, 4)), rng.integers(0, 3, 6)
    return {
        "neuron": lambda **kw: tg.draw(neuron, *args, values=True, grads=True, **kw),
        "neuron_backward": lambda **kw: tg.draw(tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4)), *args,
                                                backward=True, values=True, **kw),
        "xor_network": lambda **kw: tg.draw(xor.network_loss, xor_params, xor.X, xor.Y, values=True, grads=True,
                                            **kw),
        "mlp_backward": lambda **kw: tg.draw(mlp_loss, mlp_params, X, y, backward=True, **kw),
    }


def main(before: bool) -> None:
    for name, make in pictures().items():
        path = make().save(os.path.join(OUT, name + ".png"))
        print("wrote", os.path.relpath(path, ROOT))
        if before and name in ("xor_network", "mlp_backward"):
            old = make(by_line="none", direction="LR")  # as drawn before: left to right, unbounded
            old = tg.Drawing(old.dot.replace(f'size="{MAX_INCHES}", ', ""), old.graph)
            path = old.save(os.path.join(OUT, name + "_before.png"))
            print("wrote", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main("--before" in sys.argv)
