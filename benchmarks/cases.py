"""The benchmark cases: each a plain NumPy function for tracegrad, the same computed by hand-written,
hand-differentiated ``@numba.njit`` code (the practical limit), and optional JAX / PyTorch / autograd
versions (built only if those libraries import; never required).

Every case gives

* ``tg_vg`` / ``tg_fwd``: ``tg.value_and_grad`` (all differentiable arguments) and ``tg.jit`` of the function;
* ``hand_vg`` / ``hand_fwd``: Numba functions with the same positional arguments returning
  ``(value, grad_0, grad_1, ...)`` and ``(value,)``;
* ``flat(result)``: tracegrad's result as the same flat list, for checking;
* ``peers``: name -> builder(args) -> (call, to_list) where ``call()`` runs one value-and-gradient and
  ``to_list(call())`` gives the flat list.

Import cost is small: nothing is compiled or traced until used (hand-written functions are cached on
disk by Numba, ``cache=True``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

import tracegrad as tg


@dataclass
class Case:
    key: str                    # short name, used on the command line and by subprocesses
    label: str                  # what the tables show
    args: tuple
    tg_vg: tg.Function
    tg_fwd: tg.Function
    hand_vg: Callable
    hand_fwd: Callable
    rtol: float
    atol: float
    goal: float | None = None   # tracegrad / hand-written, value + gradient, called from Python
    scalar: bool = False        # scalar arguments: also timed inside an njit loop
    loop_goal: float | None = None
    peers: dict = field(default_factory=dict)
    note: str = ""

    def flat(self, result) -> list:
        value, grads = result
        return [value, *(grads if isinstance(grads, tuple) else (grads,))]


def _jax():
    """JAX in float64 where the inputs are float64 (float32 inputs stay float32)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


# ============================================================================ the lectures' neuron

def neuron(w0, x0, w1, x1, w2):
    """As the lectures write it (examples/lectures.py, example 2)."""
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = tg.sigmoid(s3)
    return L


@numba.njit(cache=True)
def neuron_hand_vg(w0, x0, w1, x1, w2):
    """Value and the five gradients, differentiated by hand: d sigmoid(z)/dz = (1 - s) * s."""
    z = w0 * x0 + w1 * x1 + w2
    s = 1.0 / (1.0 + math.exp(-z))
    dz = (1.0 - s) * s
    return s, dz * x0, dz * w0, dz * x1, dz * w1, dz


@numba.njit(cache=True)
def neuron_hand_fwd(w0, x0, w1, x1, w2):
    z = w0 * x0 + w1 * x1 + w2
    return (1.0 / (1.0 + math.exp(-z)),)


def _neuron_jax(args):
    jax = _jax()
    f = jax.jit(jax.value_and_grad(lambda w0, x0, w1, x1, w2: jax.nn.sigmoid(w0 * x0 + w1 * x1 + w2),
                                   argnums=(0, 1, 2, 3, 4)))

    def call():  # Python floats in, as for tracegrad
        out = f(*args)
        return jax.block_until_ready(out)
    return call, lambda r: [float(r[0]), *(float(g) for g in r[1])]


def _neuron_torch(args):
    import torch

    def call():
        ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
        y = torch.sigmoid(ts[0] * ts[1] + ts[2] * ts[3] + ts[4])
        return y, torch.autograd.grad(y, ts)
    return call, lambda r: [r[0].item(), *(g.item() for g in r[1])]


def _neuron_autograd(args):
    import autograd
    import autograd.numpy as anp
    f = autograd.value_and_grad(lambda w0, x0, w1, x1, w2: 1.0 / (1.0 + anp.exp(-(w0 * x0 + w1 * x1 + w2))),
                                argnum=(0, 1, 2, 3, 4))
    return (lambda: f(*args)), lambda r: [float(r[0]), *(float(g) for g in r[1])]


# ============================================================================ 2 / sin(exp(-x))

def f3(x):
    """The lectures' example 3."""
    return 2 / np.sin(np.exp(-x))


@numba.njit(cache=True)
def f3_hand_vg(x):
    """d/dx 2/sin(u), u = exp(-x):  -2 cos(u)/sin(u)^2 * (-u)."""
    u = math.exp(-x)
    s = math.sin(u)
    return 2.0 / s, 2.0 * u * math.cos(u) / (s * s)


@numba.njit(cache=True)
def f3_hand_fwd(x):
    return (2.0 / math.sin(math.exp(-x)),)


def _f3_jax(args):
    jax = _jax()
    import jax.numpy as jnp
    f = jax.jit(jax.value_and_grad(lambda x: 2 / jnp.sin(jnp.exp(-x))))
    return (lambda: jax.block_until_ready(f(*args))), lambda r: [float(r[0]), float(r[1])]


def _f3_torch(args):
    import torch

    def call():
        x = torch.tensor(args[0], dtype=torch.float64, requires_grad=True)
        y = 2 / torch.sin(torch.exp(-x))
        return y, torch.autograd.grad(y, x)[0]
    return call, lambda r: [r[0].item(), r[1].item()]


def _f3_autograd(args):
    import autograd
    import autograd.numpy as anp
    f = autograd.value_and_grad(lambda x: 2 / anp.sin(anp.exp(-x)))
    return (lambda: f(*args)), lambda r: [float(r[0]), float(r[1])]


# ============================================================================ Rosenbrock

def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@numba.njit(cache=True)
def rosenbrock_hand_vg(x):
    """One loop for the value and the gradient."""
    n = x.shape[0]
    g = np.zeros_like(x)
    f = 0.0
    for i in range(n - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        f += 100.0 * a * a + b * b
        g[i] += -400.0 * a * x[i] - 2.0 * b
        g[i + 1] += 200.0 * a
    return f, g


@numba.njit(cache=True)
def rosenbrock_hand_fwd(x):
    n = x.shape[0]
    f = 0.0
    for i in range(n - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        f += 100.0 * a * a + b * b
    return (f,)


def _rosen_jax(args):
    jax = _jax()
    import jax.numpy as jnp
    f = jax.jit(jax.value_and_grad(
        lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)))
    x = jnp.asarray(args[0])
    return (lambda: jax.block_until_ready(f(x))), lambda r: [float(r[0]), np.asarray(r[1])]


def _rosen_torch(args):
    import torch
    x = torch.from_numpy(args[0].copy()).requires_grad_(True)

    def call():
        y = torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
        return y, torch.autograd.grad(y, x)[0]
    return call, lambda r: [r[0].item(), r[1].numpy()]


def _rosen_autograd(args):
    import autograd
    import autograd.numpy as anp
    f = autograd.value_and_grad(lambda x: anp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))
    return (lambda: f(*args)), lambda r: [float(r[0]), r[1]]


# ============================================================================ MLP 64-128-10 training step

def mlp_loss(W1, b1, W2, b2, X, y):
    """Softmax cross-entropy of a ReLU MLP, integer labels, mean over the batch."""
    h = np.maximum(X @ W1 + b1, 0.0)
    logits = h @ W2 + b2
    m = np.max(logits, axis=1, keepdims=True)
    z = logits - m
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(logp[np.arange(X.shape[0]), y])


@numba.njit(cache=True)
def mlp_hand_vg(W1, b1, W2, b2, X, y):
    """Loss and the four parameter gradients, derived by hand: d loss / d logits = (softmax - onehot) / n."""
    n = X.shape[0]
    hidden = W1.shape[1]
    classes = W2.shape[1]
    h = X @ W1
    for i in range(n):
        for j in range(hidden):
            v = h[i, j] + b1[j]
            h[i, j] = v if v > 0 else 0
    logits = h @ W2
    d = np.empty_like(logits)
    inv_n = 1.0 / n
    loss = 0.0
    for i in range(n):
        m = logits[i, 0] + b2[0]
        for c in range(1, classes):
            m = max(m, logits[i, c] + b2[c])
        s = 0.0
        for c in range(classes):
            e = np.exp(logits[i, c] + b2[c] - m)
            d[i, c] = e
            s += e
        loss += m + np.log(s) - (logits[i, y[i]] + b2[y[i]])
        scale = inv_n / s
        for c in range(classes):
            d[i, c] *= scale
        d[i, y[i]] -= inv_n
    grad_W2 = h.T @ d
    grad_b2 = d.sum(axis=0)
    dh = d @ W2.T
    for i in range(n):
        for j in range(hidden):
            if h[i, j] <= 0:
                dh[i, j] = 0
    grad_W1 = X.T @ dh
    grad_b1 = dh.sum(axis=0)
    return loss / n, grad_W1, grad_b1, grad_W2, grad_b2


@numba.njit(cache=True)
def mlp_hand_fwd(W1, b1, W2, b2, X, y):
    n = X.shape[0]
    hidden = W1.shape[1]
    classes = W2.shape[1]
    h = X @ W1
    for i in range(n):
        for j in range(hidden):
            v = h[i, j] + b1[j]
            h[i, j] = v if v > 0 else 0
    logits = h @ W2
    loss = 0.0
    for i in range(n):
        m = logits[i, 0] + b2[0]
        for c in range(1, classes):
            m = max(m, logits[i, c] + b2[c])
        s = 0.0
        for c in range(classes):
            s += np.exp(logits[i, c] + b2[c] - m)
        loss += m + np.log(s) - (logits[i, y[i]] + b2[y[i]])
    return (loss / n,)


def mlp_args(batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    W1 = (rng.normal(size=(64, 128)) / 8).astype(dtype)
    b1 = (rng.normal(size=128) * 0.1).astype(dtype)
    W2 = (rng.normal(size=(128, 10)) / 11).astype(dtype)
    b2 = (rng.normal(size=10) * 0.1).astype(dtype)
    X = rng.normal(size=(batch, 64)).astype(dtype)
    y = rng.integers(0, 10, size=batch)
    return W1, b1, W2, b2, X, y


def _mlp_jax(args):
    jax = _jax()
    import jax.numpy as jnp

    def loss(W1, b1, W2, b2, X, y):
        h = jnp.maximum(X @ W1 + b1, 0.0)
        logits = h @ W2 + b2
        z = logits - jnp.max(logits, axis=1, keepdims=True)
        logp = z - jnp.log(jnp.sum(jnp.exp(z), axis=1, keepdims=True))
        return -jnp.mean(logp[jnp.arange(X.shape[0]), y])
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    dev = [jnp.asarray(a) for a in args]
    return (lambda: jax.block_until_ready(f(*dev))), lambda r: [float(r[0]), *(np.asarray(g) for g in r[1])]


def _mlp_torch(args):
    import torch
    params = [torch.from_numpy(a.copy()).requires_grad_(True) for a in args[:4]]
    X, y = torch.from_numpy(args[4]), torch.from_numpy(args[5])
    rows = torch.arange(X.shape[0])

    def call():
        W1, b1, W2, b2 = params
        h = torch.clamp_min(X @ W1 + b1, 0.0)
        logits = h @ W2 + b2
        z = logits - torch.amax(logits, dim=1, keepdim=True)
        logp = z - torch.log(torch.sum(torch.exp(z), dim=1, keepdim=True))
        loss = -torch.mean(logp[rows, y])
        return loss, torch.autograd.grad(loss, params)
    return call, lambda r: [r[0].item(), *(g.numpy() for g in r[1])]


def _mlp_autograd(args):
    import autograd
    import autograd.numpy as anp

    def loss(W1, b1, W2, b2, X, y):
        h = anp.maximum(X @ W1 + b1, 0.0)
        logits = h @ W2 + b2
        z = logits - anp.max(logits, axis=1, keepdims=True)
        logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
        return -anp.mean(logp[anp.arange(X.shape[0]), y])
    f = autograd.value_and_grad(loss, argnum=(0, 1, 2, 3))
    return (lambda: f(*args)), lambda r: [float(r[0]), *r[1]]


# ============================================================================ the list

PEERS = ("JAX jit", "PyTorch eager", "autograd")


def all_cases() -> list[Case]:
    """Every case, in table order (fresh Function objects: nothing traced yet)."""
    cases = []
    neuron_args = (2.0, -1.0, -3.0, -2.0, -3.0)
    cases.append(Case(
        "neuron", "lectures' neuron (5 scalars)", neuron_args,
        tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4)), tg.jit(neuron), neuron_hand_vg, neuron_hand_fwd,
        rtol=1e-12, atol=0.0, goal=1.5, scalar=True, loop_goal=1.1,
        peers=dict(zip(PEERS, (_neuron_jax, _neuron_torch, _neuron_autograd)))))
    cases.append(Case(
        "sin_exp", "lectures' 2/sin(exp(-x))", (-4.499,),
        tg.value_and_grad(f3), tg.jit(f3), f3_hand_vg, f3_hand_fwd,
        rtol=1e-12, atol=0.0, goal=1.5, scalar=True, loop_goal=1.1,
        peers=dict(zip(PEERS, (_f3_jax, _f3_torch, _f3_autograd))),
        note="goals borrowed from the neuron (the issue sets none for this case)"))
    for n, goal in ((10, None), (1_000, None), (100_000, 1.2)):
        x = np.random.default_rng(n).uniform(-2.0, 2.0, size=n)
        cases.append(Case(
            f"rosen_{n}", f"Rosenbrock n={n:,} f64", (x,),
            tg.value_and_grad(rosenbrock), tg.jit(rosenbrock), rosenbrock_hand_vg, rosenbrock_hand_fwd,
            rtol=1e-10, atol=1e-8, goal=goal,
            peers=dict(zip(PEERS, (_rosen_jax, _rosen_torch, _rosen_autograd)))))
    for dtype, tag in ((np.float32, "f32"), (np.float64, "f64")):
        for batch, goal in ((32, 1.2), (1024, 1.1)):
            tol = (2e-4, 1e-6) if dtype is np.float32 else (1e-9, 1e-12)
            cases.append(Case(
                f"mlp_{batch}_{tag}", f"MLP 64-128-10 step, batch {batch} {tag}", mlp_args(batch, dtype),
                tg.value_and_grad(mlp_loss, argnums=(0, 1, 2, 3)), tg.jit(mlp_loss), mlp_hand_vg, mlp_hand_fwd,
                rtol=tol[0], atol=tol[1], goal=goal,
                peers=dict(zip(PEERS, (_mlp_jax, _mlp_torch, _mlp_autograd)))))
    return cases


def case(key: str) -> Case:
    for c in all_cases():
        if c.key == key:
            return c
    raise KeyError(f"no case {key!r}; known: {', '.join(c.key for c in all_cases())}")


def check(c: Case) -> list:
    """Check tracegrad (value+gradient and forward) against the hand-written code; returns the reference."""
    ref = list(c.hand_vg(*c.args))
    got = c.flat(c.tg_vg(*c.args))
    assert len(got) == len(ref), (c.key, len(got), len(ref))
    for i, (a, b) in enumerate(zip(got, ref)):
        assert np.shape(a) == np.shape(b), (c.key, i, np.shape(a), np.shape(b))
        assert np.allclose(a, b, rtol=c.rtol, atol=c.atol), (c.key, i, a, b)
    fwd = c.tg_fwd(*c.args)
    assert np.allclose(fwd, ref[0], rtol=c.rtol, atol=c.atol), (c.key, "forward", fwd, ref[0])
    assert np.allclose(c.hand_fwd(*c.args)[0], ref[0], rtol=c.rtol, atol=c.atol), (c.key, "hand forward")
    return ref
