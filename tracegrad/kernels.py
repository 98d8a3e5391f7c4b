"""Numba versions of the primitives' kernels, for generated code to import by name.

``from tracegrad.kernels import sigmoid`` gives the ``kernel`` a primitive declares as a
``numba.njit(cache=True)`` function (``backend.jit``: compiled in memory if Numba has nowhere to cache
it), so generated code that calls it loads from Numba's disk cache in a new process. Kernels of elementwise primitives take scalars: codegen calls them inside loops.
"""
from . import backend, primitives  # noqa: F401  (registers the primitives)
from .core import PRIMITIVES


def kernel_functions() -> dict:
    """Every kernel name mapped to its Python function."""
    table = {}
    for prim in PRIMITIVES.values():
        if prim.kernel is None:
            continue
        kernels = prim.kernel if isinstance(prim.kernel, dict) else {prim.name: prim.kernel}
        for name, fn in kernels.items():
            table[name] = fn
    return table


_TABLE = kernel_functions()


def __getattr__(name):
    if name not in _TABLE:
        raise AttributeError(f"tracegrad.kernels has no kernel {name!r}")
    compiled = backend.jit(_TABLE[name], error_model="numpy")  # cached on disk when Numba can
    globals()[name] = compiled
    return compiled


def __dir__():
    return sorted(_TABLE)
