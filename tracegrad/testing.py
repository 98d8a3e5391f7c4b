"""Numeric gradients by central differences: the yardstick tracegrad's gradients are checked against."""
from __future__ import annotations

import numpy as np

from .errors import GradTypeError
from .pytree import flatten, unflatten


def numeric_grad(fun, *args, argnums=0, eps: float | None = None):
    """Central-difference gradient of scalar ``fun`` with respect to ``args[argnums]``.

    Computed in float64 whatever the arguments' dtype, entry by entry, so it costs two calls of ``fun``
    per input element: meant for tests and small checks. The result has the structure of the argument.

    >>> round(numeric_grad(lambda x: x ** 3, 2.0), 6)
    12.0
    """
    if isinstance(argnums, (tuple, list)):
        return tuple(numeric_grad(fun, *args, argnums=i, eps=eps) for i in argnums)
    if not -len(args) <= argnums < len(args):
        raise GradTypeError(f"argnums={argnums} is out of range for {len(args)} argument(s)")
    leaves, tree = flatten(args[argnums])
    grads = []
    for k, leaf in enumerate(leaves):
        x = np.array(leaf, dtype=np.float64)
        if np.asarray(leaf).dtype.kind != "f" and not isinstance(leaf, float):
            raise GradTypeError(f"numeric_grad: argument {argnums} has a non-float leaf ({np.asarray(leaf).dtype})")
        step = eps if eps is not None else 1e-6 * max(1.0, float(np.max(np.abs(x), initial=0.0)))
        g = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            values = []
            for sign in (1, -1):
                shifted = x.copy()
                shifted[index] += sign * step
                new_leaves = list(leaves)
                new_leaves[k] = shifted[()] if isinstance(leaf, float) else shifted
                new_args = list(args)
                new_args[argnums] = unflatten(tree, new_leaves)
                values.append(float(fun(*new_args)))
            g[index] = (values[0] - values[1]) / (2 * step)
        grads.append(float(g) if isinstance(leaf, float) else g)
    return unflatten(tree, grads)
