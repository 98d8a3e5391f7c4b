"""Functions with a derivative of their own: ``tg.custom_vjp`` (JAX's decorator API).

The lecture notes build backpropagation from modules with a forward function, which stores what the
backward needs, and a backward function mapping the upstream gradient to one gradient per input. A
``custom_vjp`` function is such a module: its forward (``fwd``) is traced into the graph as usual and
returns the outputs and the residuals; its backward (``bwd``) is the node's VJP, written with NumPy
operations on traced values, so it appears in the generated source and can be differentiated again.
"""
from __future__ import annotations

import functools

from .core import PRIMITIVES, Builder, TracedArray, current_builder
from .errors import TracegradError, UnsupportedError, user_source
from .pytree import flatten, unflatten
from .tracer import _call_recording_locals, _output_atom, _Preparer, arg_names, aval_of
from .ir import Graph


class custom_vjp:
    """Give ``fun`` a derivative of its own::

        @tg.custom_vjp
        def f(x, y):
            return x * y

        def f_fwd(x, y):            # the outputs, and what the backward pass needs (the residuals)
            return x * y, (x, y)

        def f_bwd(res, g):          # one gradient per argument, in the argument's structure
            x, y = res
            return g * y, g * x

        f.defvjp(f_fwd, f_bwd)

    Outside a traced function ``f`` is ``fun`` itself. Inside one, ``f_fwd`` is traced in place of ``fun``
    (keep them computing the same outputs) and ``f_bwd`` is differentiation's rule for it. ``f_bwd`` returns
    a tuple with one gradient per argument (``None``: no gradient). ``f_fwd`` must not close over values
    traced by the enclosing function: pass them as arguments.
    """

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.fwd = self.bwd = None
        self._in_fwd = 0  # inside its own forward function, a call is the plain function

    def defvjp(self, fwd, bwd):
        """Set the forward (``fwd(*args) -> (outputs, residuals)``) and backward
        (``bwd(residuals, g) -> tuple of gradients``) functions; returns ``self``."""
        self.fwd, self.bwd = fwd, bwd
        return self

    def __call__(self, *args):
        if current_builder() is None or self._in_fwd:
            return self.fun(*args)
        if self.fwd is None:
            raise TracegradError(f"custom_vjp function {self.__name__} has no rule yet: call "
                                 f"{self.__name__}.defvjp(fwd, bwd)", user_source())
        return _bind(self, args)


def _bind(f, args):
    source = user_source()
    leaves, in_tree = flatten(args)
    avals = [aval_of(leaf) for leaf in leaves]
    with Builder(getattr(f.fwd, "__name__", "fwd")) as inner:
        inputs = [inner.new_input(aval, hint) for aval, hint in zip(avals, arg_names(f.fwd, args))]
        f._in_fwd += 1
        try:
            prepared = _Preparer(inner).prepare(f.fwd)
            result, names = _call_recording_locals(prepared, tuple(unflatten(in_tree, inputs)), inner)
        finally:
            f._in_fwd -= 1
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TracegradError(f"custom_vjp: {getattr(f.fwd, '__name__', 'fwd')} must return a pair "
                                 "(outputs, residuals)", source)
        out_leaves, out_tree = flatten(result[0])
        res_leaves, res_tree = flatten(result[1])
        outputs = [_output_atom(leaf, inner) for leaf in out_leaves + res_leaves]
    for var, hint in names.items():
        if var.hint is None:
            var.hint = hint
    consts = [value for _, value in inner.captured]
    if any(isinstance(value, TracedArray) for value in consts):
        raise UnsupportedError(f"custom_vjp: {getattr(f.fwd, '__name__', 'fwd')} reads a value traced by the "
                               "enclosing function without receiving it as an argument", source,
                               "pass it as an argument, so that its gradient comes from the backward function")
    outer = current_builder()
    for key, read in inner.readers.items():
        outer.readers.setdefault(key, read)
    fwd = Graph(inner.name, [var for var, _ in inner.captured] + list(inner.inputs), inner.nodes, outputs)
    trees = (out_tree, res_tree, tuple(flatten(a)[1] for a in args))
    saved, outer.source = outer.source, source
    try:
        outs = PRIMITIVES["custom_vjp_call"](*consts, *leaves, fwd=fwd, n_consts=len(consts),
                                             n_out=len(out_leaves), bwd=f.bwd, trees=trees)
    finally:
        outer.source = saved
    return unflatten(out_tree, outs[:len(out_leaves)])
