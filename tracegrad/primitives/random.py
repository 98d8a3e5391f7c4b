"""Random numbers from explicit keys: the primitives behind ``tg.random``.

A key is a ``uint64`` scalar. Every draw is a pure function of its key and the position of each number
in the result (a counter-based generator): element ``i`` of a draw from ``key`` comes from
``splitmix64(key + (i + 1) * golden)``, the finaliser of SplitMix64 (Steele, Lea and Flood 2014), whose
stream from a key this is. Nothing is drawn while tracing: a draw from a traced key is a node, computed
at every call by the generated code (a kernel, in Numba) and by the NumPy evaluator (``ref``), which
compute exactly the same bits, so that both tiers give the same uniform numbers, Bernoulli masks and
permutations for the same key, and normal numbers equal up to the last bit of NumPy's and Numba's
``log`` and ``cos`` (see tests/test_random.py).

No gradient flows into a key (``nondiff``): a draw is a constant of the parameters it is combined with,
and the reparameterised samplers of ``tg.random`` (``loc + scale * normal``) differentiate through
``loc`` and ``scale`` by the ordinary rules.
"""
import math

import numpy as np

from ..core import primitive
from ..errors import ShapeError, user_source
from ..ir import Aval

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / the golden ratio: SplitMix64's increment
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S30, S27, S31 = np.uint64(30), np.uint64(27), np.uint64(31)
S11, S40 = np.uint64(11), np.uint64(40)
TWO_POW_M53 = 2.0 ** -53  # uint64 >> 11 times this: a float64 in [0, 1), every multiple of 2**-53 alike
TWO_POW_M24 = np.float32(2.0 ** -24)  # uint64 >> 40 times this: a float32 in [0, 1)
TWO_PI = 2.0 * math.pi
KEY0 = np.uint64(0x243F6A8885A308D3)  # tg.random.key(seed) is fold_in(KEY0, seed) (the digits of pi)

KEY_DTYPE = np.dtype(np.uint64)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def mix(z):
    """SplitMix64's finaliser on uint64 arrays (or a scalar, in Numba): wrapping arithmetic."""
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


def bits(key, start, n):
    """The uint64 numbers ``start .. start + n - 1`` of the stream of ``key``, in NumPy."""
    with np.errstate(over="ignore"):
        counter = np.arange(start + 1, start + n + 1, dtype=np.uint64)
        return mix(np.uint64(key) + counter * GOLDEN)


def _check_key(key: Aval, what: str):
    if key.shape != () or key.dtype != KEY_DTYPE:
        raise ShapeError(f"{what} takes a key, a uint64 scalar made by tg.random.key(seed), not {key}", user_source(),
                         "pass the key as an argument of the traced function and split it for several draws")


def _draw_shape(key, shape, dtype):
    _check_key(key, "a random draw")
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ShapeError(f"random numbers of dtype {np.dtype(dtype)}: float32 or float64 only", user_source())
    return Aval(tuple(shape), dtype)


def _draw_emit(kernel):
    """``kernel(key, n)`` returns a flat array; the emitted call gives it the shape."""
    def emit(args, out, shape, dtype):
        suffix = "32" if np.dtype(dtype) == np.float32 else "64"
        n = int(np.prod(shape, dtype=np.int64))
        call = f"{kernel}{suffix}({args[0]}, {n})"
        if len(shape) == 0:
            return call + "[0]"
        return call if len(shape) == 1 else f"{call}.reshape({tuple(shape)!r})"
    return emit


def _shaped(flat, shape, dtype):
    flat = flat.astype(dtype, copy=False)
    return flat.reshape(shape) if shape else flat[0]


# ---------------------------------------------------------------- the kernels (Numba's subset, scalar loops)


def _uniform64_kernel(key, n):
    k = np.uint64(key)
    out = np.empty(n, np.float64)
    for i in range(n):
        z = k + np.uint64(i + 1) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        out[i] = np.float64(z >> S11) * TWO_POW_M53
    return out


def _uniform32_kernel(key, n):
    k = np.uint64(key)
    out = np.empty(n, np.float32)
    for i in range(n):
        z = k + np.uint64(i + 1) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        out[i] = np.float32(z >> S40) * TWO_POW_M24
    return out


def _normal64_kernel(key, n):
    k = np.uint64(key)
    out = np.empty(n, np.float64)
    for i in range(n):  # numbers 2i and 2i + 1 of the stream: Box-Muller
        z = k + np.uint64(2 * i + 1) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        w = k + np.uint64(2 * i + 2) * GOLDEN
        w = (w ^ (w >> S30)) * MIX1
        w = (w ^ (w >> S27)) * MIX2
        w = w ^ (w >> S31)
        u1, u2 = np.float64(z >> S11) * TWO_POW_M53, np.float64(w >> S11) * TWO_POW_M53
        out[i] = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(TWO_PI * u2)
    return out


def _normal32_kernel(key, n):  # computed in float64, rounded once: as ref does
    k = np.uint64(key)
    out = np.empty(n, np.float32)
    for i in range(n):
        z = k + np.uint64(2 * i + 1) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        w = k + np.uint64(2 * i + 2) * GOLDEN
        w = (w ^ (w >> S30)) * MIX1
        w = (w ^ (w >> S27)) * MIX2
        w = w ^ (w >> S31)
        u1, u2 = np.float64(z >> S11) * TWO_POW_M53, np.float64(w >> S11) * TWO_POW_M53
        out[i] = np.float32(np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(TWO_PI * u2))
    return out


def _fold_in_kernel(key, data):
    d = np.uint64(data) + GOLDEN
    d = (d ^ (d >> S30)) * MIX1
    d = (d ^ (d >> S27)) * MIX2
    d = d ^ (d >> S31)
    z = np.uint64(key) ^ d
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


def _permutation_kernel(key, n):
    out = np.arange(n)
    k = np.uint64(key)
    for i in range(n - 1, 0, -1):  # Fisher-Yates, number n - 1 - i of the stream choosing the swap
        z = k + np.uint64(n - i) * GOLDEN
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        j = np.int64(z % np.uint64(i + 1))
        out[i], out[j] = out[j], out[i]
    return out


# ---------------------------------------------------------------- the primitives


@primitive
class random_uniform:
    """uniform random numbers in [0, 1) of ``shape`` and ``dtype`` drawn from ``key``"""
    usage = "`tg.random.uniform`, `tg.random.bernoulli`, `tg.nn.dropout`"
    backward = "none (`low + (high - low) * u` differentiates through `low`, `high`)"
    shape = staticmethod(_draw_shape)
    emit = staticmethod(_draw_emit("random_uniform"))
    kernel = {"random_uniform64": _uniform64_kernel, "random_uniform32": _uniform32_kernel}
    nondiff = True
    domain = "key"

    def ref(key, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        z = bits(key, 0, n)
        if np.dtype(dtype) == np.float32:
            return _shaped((z >> S40).astype(np.float32) * TWO_POW_M24, shape, dtype)
        return _shaped((z >> S11).astype(np.float64) * TWO_POW_M53, shape, dtype)


@primitive
class random_normal:
    """standard normal random numbers of ``shape`` and ``dtype`` drawn from ``key`` (Box-Muller)"""
    usage = "`tg.random.normal`"
    backward = "none (`loc + scale * eps` differentiates through `loc`, `scale`)"
    shape = staticmethod(_draw_shape)
    emit = staticmethod(_draw_emit("random_normal"))
    kernel = {"random_normal64": _normal64_kernel, "random_normal32": _normal32_kernel}
    nondiff = True
    domain = "key"

    def ref(key, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        u = ((bits(key, 0, 2 * n) >> S11).astype(np.float64) * TWO_POW_M53).reshape(n, 2)
        z = np.sqrt(-2.0 * np.log(1.0 - u[:, 0])) * np.cos(TWO_PI * u[:, 1])
        return _shaped(z, shape, dtype)


def _fold_in_shape(key, data):
    _check_key(key, "tg.random.fold_in")
    if data.dtype.kind not in "iu":
        raise ShapeError(f"tg.random.fold_in folds integers into a key, not {data}", user_source())
    return Aval(data.shape, KEY_DTYPE)


@primitive
class random_fold_in:
    """a new key from ``key`` and the integer ``data`` (elementwise over data): split and fold_in.

    ``splitmix64(key ^ splitmix64(data + golden))``."""
    usage = "`tg.random.fold_in`, `tg.random.split`, `tg.random.key`"
    backward = "none"
    shape = staticmethod(_fold_in_shape)
    emit = "random_fold_in({key}, {data})"
    kernel = _fold_in_kernel
    elementwise = True
    nondiff = True
    domain = "key"

    def ref(key, data):
        with np.errstate(over="ignore"):
            d = np.asarray(data).astype(np.uint64)  # negative ints wrap, as np.uint64(-1) does in Numba
            out = mix(np.uint64(key) ^ mix(d + GOLDEN))
        return out if out.ndim else out[()]


@primitive
class random_permutation:
    """a random permutation of ``range(n)`` drawn from ``key`` (Fisher-Yates)"""
    usage = "`tg.random.permutation`"
    backward = "none"
    shape = staticmethod(lambda key, n: (_check_key(key, "tg.random.permutation"), Aval((n,), np.int64))[1])
    emit = "random_permutation({key}, {n})"
    kernel = _permutation_kernel
    nondiff = True
    domain = "key"

    def ref(key, n):
        z = bits(key, 0, max(n - 1, 0))
        js = (z % np.arange(n, 1, -1, dtype=np.uint64)).tolist()  # i + 1 for i = n - 1 .. 1
        out = list(range(n))
        for i, j in zip(range(n - 1, 0, -1), js):
            out[i], out[j] = out[j], out[i]
        return np.array(out, dtype=np.int64)
