"""The lecture notes' worked examples 1-7 (docs/LECTURES.md), run through tracegrad.

Each example is written the way a student would write it, in plain NumPy. For each one we print the
graph of its value-and-gradient function, the flat Python source tracegrad generates (and Numba
compiles), and the numbers next to the ones in the notes. Assertions check them, so this script fails
loudly if tracegrad computes a wrong number.

    python examples/lectures.py
"""
import inspect
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import tracegrad as tg  # noqa: E402

np.set_printoptions(precision=5, suppress=True)


def fmt(value, indent):
    if np.ndim(value) == 0:
        return f"{float(value):.6g}"
    return np.array2string(np.asarray(value, float), prefix=" " * indent)


def compare(label, got, expected, atol):
    print(f"  {label:<10} tracegrad {fmt(got, 23)}")
    print(f"  {'':<10} lecture   {fmt(expected, 23)}")
    assert np.shape(got) == np.shape(expected), f"{label}: shape {np.shape(got)} != {np.shape(expected)}"
    assert np.allclose(got, expected, rtol=0, atol=atol), f"{label}: {got} != {expected}"


def example(title, f, args, value, grads, atol, aux=None, note=None):
    """Print graph, source and numbers of value_and_grad(f) w.r.t. every argument; check them."""
    print("=" * 78)
    print(title)
    print("=" * 78)
    if note:
        print(note, end="\n\n")
    names = list(inspect.signature(f).parameters)[:len(args)]
    vg = tg.value_and_grad(f, argnums=tuple(range(len(args))), has_aux=aux is not None)
    print(tg.make_graph(vg, *args), end="\n\n")
    print(tg.source(vg, *args))
    out, got_grads = vg(*args)
    got_value, got_aux = out if aux is not None else (out, None)
    compare("value", got_value, value, atol)
    if aux is not None:
        compare(aux[0], got_aux, aux[1], atol)
    for name, got, expected in zip(names, got_grads, grads):
        compare(f"d/d{name}", got, expected, atol)
    print()
    return got_value, got_grads


# 1. f(x, y, z) = (x + y) z ------------------------------------------------------------------------
def f(x, y, z):
    q = x + y
    f = q * z
    return f, q


example("1. f(x, y, z) = (x + y) * z   at x = -2, y = 5, z = -4",
        f, (-2.0, 5.0, -4.0), value=-12.0, grads=(-4.0, -4.0, 3.0), atol=0, aux=("q", 3.0))


# 2. the sigmoid neuron, as the notes' flat code -----------------------------------------------------
def neuron(w0, x0, w1, x1, w2):
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = tg.sigmoid(s3)
    return L


example("2. f(w, x) = sigmoid(w0*x0 + w1*x1 + w2)   at w0 = 2, x0 = -1, w1 = -3, x1 = -2, w2 = -3",
        neuron, (2.0, -1.0, -3.0, -2.0, -3.0), value=0.731,
        grads=(-0.197, 0.393, -0.393, -0.590, 0.197), atol=5e-4)


# 3. f(x) = 2 / sin(exp(-x)) ----------------------------------------------------------------------
def f3(x):
    return 2 / np.sin(np.exp(-x))


x3 = -4.499
_, (dx3,) = example("3. f(x) = 2 / sin(exp(-x))   at x = -4.499 (radians)", f3, (x3,),
                    value=2.16395, grads=(-80.393,), atol=5e-4,
                    note="(The notes round exp(4.499) to 90 and take sin/cos in degrees, getting df/dx = 0: "
                         "a slip.)")
h = 1e-6
fd = (f3(x3 + h) - f3(x3 - h)) / (2 * h)
print(f"  finite difference (f(x+h) - f(x-h)) / 2h = {fd:.6g}\n")
assert np.isclose(dx3, fd, rtol=1e-6), (dx3, fd)


# 4. z(x, y) = x^2 + y^2 --------------------------------------------------------------------------
def z(x, y):
    return x ** 2 + y ** 2


example("4. z(x, y) = x^2 + y^2   at (5, 3)", z, (5.0, 3.0), value=34.0, grads=(10.0, 6.0), atol=0)


# 5. matrix multiply backward: L = sum(Y * G) makes dL/dY = G, the notes' upstream gradient --------
X5 = np.array([[2.0, 1, -3], [-3, 4, 2]])
W5 = np.array([[3.0, 2, 1, -1], [2, 1, 3, 2], [3, 2, 1, -2]])
G = np.array([[2.0, 3, -3, 9], [-8, 1, 4, 6]])
Y5 = np.array([[-1.0, -1, 2, 6], [5, 2, 11, 7]])


def matmul_loss(X, W):
    Y = X @ W
    L = np.sum(Y * G)
    return L, Y


example("5. Y = X W, upstream dL/dY = G   (L = sum(Y * G))", matmul_loss, (X5, W5),
        value=np.sum(Y5 * G), aux=("Y", Y5), atol=0,
        grads=([[0, 16, -9], [-24, 9, -30]], [[28, 3, -18, 0], [-30, 7, 13, 33], [-22, -7, 17, -15]]))


# 6. ReLU backward with upstream [4, -1, 5, 9] -----------------------------------------------------
UP = np.array([4.0, -1, 5, 9])


def relu_loss(x):
    y = np.maximum(0, x)
    return np.sum(y * UP)


example("6. y = ReLU(x) = max(0, x), upstream dL/dy = [4, -1, 5, 9]   at x = [1, -2, 3, -1]",
        relu_loss, (np.array([1.0, -2, 3, -1]),), value=4 * 1 + 5 * 3, grads=([4.0, 0, 5, 0],), atol=0)


# 7. ||W x||^2 against its closed-form gradients ----------------------------------------------------
def sq_norm(W, x):
    y = W @ x
    return np.sum(y ** 2)


rng = np.random.default_rng(0)
W7, x7 = rng.standard_normal((3, 3)), rng.standard_normal(3)
example("7. f(W, x) = ||W x||^2   with W 3x3, x in R^3 (rng seed 0)", sq_norm, (W7, x7),
        value=np.sum((W7 @ x7) ** 2), grads=(2 * np.outer(W7 @ x7, x7), 2 * W7.T @ (W7 @ x7)), atol=1e-12,
        note="lecture values: the closed forms 2 (W x) x^T for W and 2 W^T (W x) for x")

print("=" * 78)
print("All 7 lecture examples match the notes.")
