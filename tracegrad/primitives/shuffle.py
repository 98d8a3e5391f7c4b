"""``permutation``: a random order of ``n`` rows from a seed, the shuffle ``tg.fit`` draws every epoch.

Fisher-Yates driven by splitmix64, so one seed gives one order in NumPy, in the compiled code and on
every machine. The seed after drawing one order is ``next_seed(seed, n)``.
"""
import numpy as np

from ..core import primitive
from ..errors import UnsupportedError, user_source
from ..ir import Aval

GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def next_seed(seed: int, n: int) -> int:
    """The seed after ``permutation(seed, n=n)``: splitmix64 advanced once per swap."""
    return (int(seed) + max(n - 1, 0) * GOLDEN) % 2 ** 64


def _shape(seed, n):
    if seed.shape or seed.dtype != np.uint64:
        raise UnsupportedError(f"permutation's seed must be a uint64 scalar, not {seed}", user_source())
    return Aval((n,), np.dtype(np.int64))


def _ref(seed, n):
    """The same swaps as the kernel, with its random numbers drawn at once."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as in the compiled code
        rng = np.uint64(seed) + np.arange(1, n, dtype=np.uint64) * np.uint64(GOLDEN)
        z = (rng ^ (rng >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    js = (z % np.arange(n, 1, -1, dtype=np.uint64)).tolist()
    order = list(range(n))
    for i, j in zip(range(n - 1, 0, -1), js):
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


def _kernel(seed, n):
    perm = np.arange(n)
    rng = np.uint64(seed)
    for i in range(n - 1, 0, -1):
        rng += np.uint64(0x9E3779B97F4A7C15)
        z = (rng ^ (rng >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        j = np.int64(z % np.uint64(i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@primitive
class permutation:
    """a random order of ``n`` rows (int64) from a uint64 seed: Fisher-Yates driven by splitmix64"""
    shape = _shape
    ref = _ref
    emit = "permutation({seed}, {n})"
    kernel = {"permutation": _kernel}
    nondiff = True
