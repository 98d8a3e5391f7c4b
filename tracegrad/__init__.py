"""tracegrad: differentiate plain NumPy code and run it as compiled Numba code.

>>> import numpy as np, tracegrad as tg
>>> @tg.grad
... def loss(w):
...     return np.sum(np.tanh(w) ** 2)
>>> loss(np.zeros(3))
array([0., 0., 0.])
"""
__version__ = "0.1.0"

from . import primitives as _primitives  # noqa: F401  (registers every primitive)
from .api import Compiled, Function, grad, jit, make_graph, source, value_and_grad
from .backend import cache_dir, set_cache_dir, tune_malloc
from .tiers import set_compile, set_parallel
from .rows import over_rows
from .errors import (CompileError, CompileWarning, GradTypeError, NonFiniteError, ShapeError, TracegradError,
                     TracingError,
                     UnsupportedError)
from .ir import Aval, Graph
from .captures import HeldArrayWarning
from .loops import fori_loop, scan, while_loop
from .transforms import hessian, hvp, jacfwd, jacobian, jacrev, jvp, linearize, vjp, vmap
from .custom import custom_jvp, custom_vjp
from . import nn, optim, random
from .nn import sigmoid, stop_gradient
from .errors import DataError, NonFiniteTrainingError, TrainingError, TrainingInterrupted
from .train import History, fit
from .draw import Drawing, MissingDependencyError, draw
from .errors import CacheError, CacheWarning, GradCheckError, IndexOutOfBoundsError, SeparabilityError
from . import distributed  # imports Dask only when called on Dask arrays
from .testing import KinkWarning, check_grad, numeric_grad

__all__ = [
    "nn", "optim", "random", "fit", "History", "DataError", "TrainingError", "TrainingInterrupted", "NonFiniteTrainingError",
    "grad", "value_and_grad", "jit", "make_graph", "source", "sigmoid", "stop_gradient",
    "scan", "fori_loop", "while_loop", "custom_vjp", "vmap", "jacrev", "jacfwd", "jacobian", "hessian", "hvp",
    "jvp", "linearize", "vjp", "custom_jvp",
    "Function", "Compiled", "Graph", "Aval", "cache_dir", "set_cache_dir", "tune_malloc", "set_compile", "set_parallel",
    "over_rows",
    "TracegradError", "TracingError", "UnsupportedError", "ShapeError", "GradTypeError", "CompileError",
    "CompileWarning", "NonFiniteError", "IndexOutOfBoundsError", "HeldArrayWarning", "CacheError", "CacheWarning",
    "draw", "Drawing", "MissingDependencyError",
    "check_grad", "numeric_grad", "GradCheckError", "KinkWarning",
    "distributed", "SeparabilityError",
]
