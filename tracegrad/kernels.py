"""Numba versions of the primitives' kernels, for generated code to import by name.

``from tracegrad.kernels import sigmoid`` compiles the ``kernel`` a primitive declares, once per
process (and cached on disk by Numba). A kernel with ``kernel_signatures`` becomes a ufunc
(``numba.vectorize``), so it works on scalars and arrays alike; others become ``numba.njit`` functions.
"""
import numba

from . import primitives  # noqa: F401  (registers the primitives)
from .core import PRIMITIVES


def kernel_functions() -> dict:
    """Every kernel name mapped to (python function, vectorize signatures or ())."""
    table = {}
    for prim in PRIMITIVES.values():
        if prim.kernel is None:
            continue
        kernels = prim.kernel if isinstance(prim.kernel, dict) else {prim.name: prim.kernel}
        for name, fn in kernels.items():
            table[name] = (fn, prim.kernel_signatures)
    return table


_TABLE = kernel_functions()


def __getattr__(name):
    if name not in _TABLE:
        raise AttributeError(f"tracegrad.kernels has no kernel {name!r}")
    fn, signatures = _TABLE[name]
    if signatures:
        # Not cache=True: a cached caller of a cached ufunc fails to load in a new process (its
        # environment lives in a '<dynamic>' module). Compiling the few ufunc loops is quick.
        compiled = numba.vectorize(list(signatures))(fn)
    else:
        compiled = numba.njit(cache=True)(fn)
    globals()[name] = compiled
    return compiled


def __dir__():
    return sorted(_TABLE)
