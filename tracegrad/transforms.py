"""Jacobians and Hessians, built from ``grad`` and a loop: ``jacrev`` (= ``jacobian``) and ``hessian``.

The Jacobian of ``f`` is one loop over the entries of ``f``'s output, each step the gradient of one entry
(a reverse pass): ``J[k] = grad(lambda x: f(x).ravel()[k])(x)``. The loop is a ``scan``, so the whole
Jacobian is one compiled function whose source stays the same size whatever the output's size, and its
rows are never a Python loop of calls. ``hessian(f)`` is ``jacrev(grad(f))``: a loop of Hessian-vector
products against the basis vectors, the Hessian formed one row at a time.
"""
from __future__ import annotations

import numpy as np

from .api import grad, jit
from .errors import GradTypeError
from .loops import scan


def jacrev(fun, argnums=0, has_aux: bool = False):
    """The Jacobian of ``fun`` with respect to the argument(s) ``argnums``, row by row in reverse mode.

    For an output of shape ``out`` and an argument of shape ``a`` the Jacobian has shape ``out + a``
    (JAX's layout: ``J[i, j] = d out[i] / d x[j]``); with a tuple of ``argnums``, a tuple of Jacobians.
    Arguments and outputs are floats or arrays. The result is a compiled function (as ``tg.jit``); called
    on traced values it traces into the enclosing function. ``has_aux``: ``fun`` returns ``(out, aux)``
    and the result is ``(jacobian, aux)``.
    """
    def jacobian_of(*args):
        out, aux = _split(fun(*args), has_aux)
        shape = tuple(np.shape(out))
        if not shape:  # a scalar: the gradient
            jac = grad(lambda *xs: _split(fun(*xs), has_aux)[0], argnums=argnums)(*args)
            return (jac, aux) if has_aux else jac
        size = int(np.prod(shape, dtype=np.int64))

        def row(k):  # the gradient of the output's k-th entry (k traced: the loop's row of arange(size))
            return grad(lambda *xs: np.reshape(_split(fun(*xs), has_aux)[0], (size,))[k], argnums=argnums)(*args)

        _, rows = scan(lambda carry, k: (carry, row(k)), 0.0, np.arange(size))
        if isinstance(argnums, int):
            jac = np.reshape(rows, shape + tuple(np.shape(args[argnums])))
        else:
            jac = tuple(np.reshape(r, shape + tuple(np.shape(args[i]))) for r, i in zip(rows, argnums))
        return (jac, aux) if has_aux else jac

    jacobian_of.__name__ = f"jacobian_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    return jit(jacobian_of)


jacobian = jacrev


def hessian(fun, argnums=0, has_aux: bool = False):
    """The Hessian of a scalar ``fun``: ``jacrev(grad(fun))``, one Hessian-vector product per row, in one
    compiled loop. For an argument of shape ``a`` it has shape ``a + a``."""
    if not isinstance(argnums, int):
        raise GradTypeError("hessian takes one argument position (argnums=int)",
                            hint="stack the arguments into one array, or use jacrev(grad(f, argnums=...))")
    return jacrev(grad(fun, argnums=argnums, has_aux=has_aux), argnums=argnums, has_aux=has_aux)


def _split(result, has_aux):
    if not has_aux:
        return result, None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise GradTypeError("has_aux=True needs the function to return a pair (output, aux)")
    return result
