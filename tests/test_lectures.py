"""The worked examples of the lecture notes (docs/LECTURES.md), with their exact numbers."""
import math

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.testing import numeric_grad


def test_example1_sum_times_z():
    def f(x, y, z):
        q = x + y
        return q * z

    value, grads = tg.value_and_grad(f, argnums=(0, 1, 2))(-2.0, 5.0, -4.0)
    assert value == -12.0
    assert grads == (-4.0, -4.0, 3.0)


def neuron(w0, x0, w1, x1, w2):
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = tg.sigmoid(s3)
    return L


def test_example2_sigmoid_neuron_numbers():
    value, grads = tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4))(2.0, -1.0, -3.0, -2.0, -3.0)
    L = 1 / (1 + math.exp(-1.0))
    assert value == pytest.approx(L, abs=1e-15)
    grad_s3 = (1 - L) * L
    assert grad_s3 == pytest.approx(0.19661193324148185)
    assert grads == pytest.approx((-grad_s3, 2 * grad_s3, -2 * grad_s3, -3 * grad_s3, grad_s3), abs=1e-15)
    assert np.round(grads, 3).tolist() == [-0.197, 0.393, -0.393, -0.59, 0.197]


def test_example2_generated_code_is_the_lectures_flat_code():
    code = tg.source(tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4)), 2.0, -1.0, -3.0, -2.0, -3.0)
    statements = [line.split("#")[0].strip() for line in code.splitlines() if line.startswith("    ")]
    statements = [s for s in statements if s]
    lecture = [
        "s0 = w0 * x0", "s1 = w1 * x1", "s2 = s0 + s1", "s3 = s2 + w2", "L = sigmoid(s3)",
        "grad_L = 1.0", "grad_s3 = grad_L * (1.0 - L) * L", "grad_s2 = grad_s3",
        "grad_w1 = grad_s1 * x1", "grad_x1 = grad_s1 * w1", "grad_w0 = grad_s0 * x0", "grad_x0 = grad_s0 * w0",
        "grad_w2 = grad_s3", "grad_s1 = grad_s2", "grad_s0 = grad_s2",
    ]
    for line in lecture:
        assert line in statements, line
    assert statements[-1] == "return L, grad_w0, grad_x0, grad_w1, grad_x1, grad_w2"


def test_example3_radians_not_degrees():
    f = lambda x: 2 / np.sin(np.exp(-x))
    x = -4.499
    value, dfdx = tg.value_and_grad(f)(x)
    assert value == pytest.approx(2.16395, abs=1e-5)
    assert dfdx == pytest.approx(-80.393, abs=1e-3)
    assert dfdx == pytest.approx(numeric_grad(f, x), rel=1e-6)


def test_example3_with_math_functions():
    f = lambda x: 2 / math.sin(math.exp(-x))
    assert tg.grad(f)(-4.499) == pytest.approx(-80.393, abs=1e-3)


def test_example4_sum_of_squares():
    assert tg.grad(lambda x, y: x ** 2 + y ** 2, argnums=(0, 1))(5.0, 3.0) == (10.0, 6.0)


X5 = np.array([[2.0, 1, -3], [-3, 4, 2]])
W5 = np.array([[3.0, 2, 1, -1], [2, 1, 3, 2], [3, 2, 1, -2]])
G5 = np.array([[2.0, 3, -3, 9], [-8, 1, 4, 6]])


def test_example5_matrix_multiply_backward():
    assert (tg.jit(lambda X, W: X @ W)(X5, W5) == [[-1, -1, 2, 6], [5, 2, 11, 7]]).all()
    dX, dW = tg.grad(lambda X, W: np.sum((X @ W) * G5), argnums=(0, 1))(X5, W5)
    assert (dX == [[0, 16, -9], [-24, 9, -30]]).all()
    assert (dW == [[28, 3, -18, 0], [-30, 7, 13, 33], [-22, -7, 17, -15]]).all()


def test_example6_relu_backward():
    upstream = np.array([4.0, -1, 5, 9])
    dx = tg.grad(lambda x: np.sum(np.maximum(0, x) * upstream))(np.array([1.0, -2, 3, -1]))
    assert dx.tolist() == [4, 0, 5, 0]


def test_example7_norm_of_Wx(rng):
    W, x = rng.normal(size=(4, 4)), rng.normal(size=4)
    dW, dx = tg.grad(lambda W, x: np.sum((W @ x) ** 2), argnums=(0, 1))(W, x)
    np.testing.assert_allclose(dW, 2 * np.outer(W @ x, x), rtol=1e-12)
    np.testing.assert_allclose(dx, 2 * W.T @ (W @ x), rtol=1e-12)
