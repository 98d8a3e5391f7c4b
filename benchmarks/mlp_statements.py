"""Where the MLP step's time goes: single statements of tracegrad's generated code for the MLP step
(``tg.source(tg.value_and_grad(cases.mlp_loss, argnums=(0, 1, 2, 3)), ...)``, batch 1024, float32),
each timed in isolation against the loop a person would write, in the same run (interleaved rounds,
medians of process CPU time). A diagnostic for RESULTS.md, not part of ``run_all.py``:

    python benchmarks/mlp_statements.py

The statements are copied from the generated source (they use tracegrad's kernels, as it does).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from tracegrad.kernels import max_axis, reshape, sum_axis  # noqa: E402

N, H, C = 1024, 128, 10
f32 = np.float32


@numba.njit
def bias_relu_generated(s1, b1):
    s2 = s1 + b1
    h = np.maximum(s2, np.float32(0.0))
    return s2, h


@numba.njit
def bias_relu_loop(s1, b1):
    for i in range(s1.shape[0]):
        for j in range(s1.shape[1]):
            v = s1[i, j] + b1[j]
            s1[i, j] = v if v > 0 else 0
    return s1


@numba.njit
def relu_grad_generated(s2, grad_h):
    grad_s2 = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            grad_s2[i0, i1] = grad_h[i0, i1] if s2[i0, i1] > np.float32(0.0) else \
                grad_h[i0, i1] * np.float32(0.5) if s2[i0, i1] == np.float32(0.0) else np.float32(0.0)
    return grad_s2


@numba.njit
def where(c, x, y):  # the scalar kernel tracegrad's np.where called until it was written inline
    return x if c else y


@numba.njit
def relu_grad_kernel_calls(s2, grad_h):
    grad_s2 = np.empty((N, H), np.float32)
    for i0 in range(N):
        for i1 in range(H):
            grad_s2[i0, i1] = where(s2[i0, i1] == np.float32(0.0), grad_h[i0, i1] * np.float32(0.5),
                                    where(s2[i0, i1] > np.float32(0.0), grad_h[i0, i1], np.float32(0.0)))
    return grad_s2


@numba.njit
def relu_grad_loop(s2, grad_h):
    out = np.empty_like(grad_h)
    for i in range(s2.shape[0]):
        for j in range(s2.shape[1]):
            v = s2[i, j]
            out[i, j] = grad_h[i, j] * np.float32(0.5) if v == 0 else (grad_h[i, j] if v > 0 else np.float32(0.0))
    return out


@numba.njit
def sum_axis0_generated(a):
    return sum_axis(a, 0)


@numba.njit
def sum_axis0_loop(a):
    out = np.zeros(a.shape[1], a.dtype)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[j] += a[i, j]
    return out


@numba.njit
def max_gradient_generated(grad_z, logits, m):
    """The gradient through ``m = np.max(logits, axis=1, keepdims=True)``: zero for a softmax, computed anyway."""
    grad_m = reshape(sum_axis((-grad_z), 1), (N, 1))
    grad_s4 = reshape(grad_m, (N,))
    s19 = (logits == m).astype(np.float32)
    return grad_z + s19 * reshape((grad_s4 / sum_axis(s19, 1)), (N, 1))


@numba.njit
def max_axis_generated(logits):
    return max_axis(logits, 1)


@numba.njit
def max_axis_loop(logits):
    out = np.empty(logits.shape[0], logits.dtype)
    for i in range(logits.shape[0]):
        m = logits[i, 0]
        for j in range(1, logits.shape[1]):
            m = max(m, logits[i, j])
        out[i] = m
    return out


def main():
    rng = np.random.default_rng(0)
    s1 = rng.normal(size=(N, H)).astype(f32)
    b1 = rng.normal(size=H).astype(f32)
    grad_h = rng.normal(size=(N, H)).astype(f32)
    logits = rng.normal(size=(N, C)).astype(f32)
    grad_z = rng.normal(size=(N, C)).astype(f32)
    m = logits.max(axis=1, keepdims=True)
    s2 = s1 + b1
    pairs = [
        ("s2 = s1 + b1; h = np.maximum(s2, 0)  [forward, 1024x128]",
         (bias_relu_generated, (s1, b1)), (bias_relu_loop, (s1.copy(), b1))),
        ("grad_s2 = g if s2 > 0 else g * 0.5 if s2 == 0 else 0  [loop]",
         (relu_grad_generated, (s2, grad_h)), (relu_grad_loop, (s2, grad_h))),
        ("(before: where(s2 == 0, g * 0.5, where(s2 > 0, g, 0)), kernel calls)",
         (relu_grad_kernel_calls, (s2, grad_h)), (relu_grad_loop, (s2, grad_h))),
        ("grad_b1 = sum_axis(grad_s2, 0)  [1024x128]",
         (sum_axis0_generated, (grad_h,)), (sum_axis0_loop, (grad_h,))),
        ("gradient through the softmax's max (zero), 4 statements",
         (max_gradient_generated, (grad_z, logits, m)), None),
        ("s4 = max_axis(logits, 1)  [forward, 1024x10]", (max_axis_generated, (logits,)), (max_axis_loop, (logits,))),
    ]
    timed = {}
    for label, gen, loop in pairs:
        for tag, entry in (("generated", gen), ("loop", loop)):
            if entry is not None:
                fn, args = entry
                fn(*args)
                timed[(label, tag)] = (lambda fn=fn, args=args: harness.time_batch(fn, args, 200))
    result = harness.interleaved(timed, 15)
    print(f"{'statement':68s} {'generated':>10s} {'loop':>10s}")
    for label, _, loop in pairs:
        gen_t = result[(label, "generated")]
        loop_t = result.get((label, "loop"))
        print(f"{label:68s} {harness.fmt_time(gen_t):>10s} {harness.fmt_time(loop_t):>10s}")
    print(f"(medians of 15 interleaved rounds, {harness.CLOCK_NAME})")


if __name__ == "__main__":
    main()
