"""Functions with a derivative of their own: ``tg.custom_vjp`` and ``tg.custom_jvp`` (JAX's decorator API).

The lecture notes build backpropagation from modules with a forward function, which stores what the
backward needs, and a backward function mapping the upstream gradient to one gradient per input. A
``custom_vjp`` function is such a module: its forward (``fwd``) is traced into the graph as usual and
returns the outputs and the residuals; its backward (``bwd``) is the node's VJP, written with NumPy
operations on traced values, so it appears in the generated source and can be differentiated again.
A ``custom_jvp`` function's rule maps tangents instead; reverse mode transposes it (primitives/control.py).
"""
from __future__ import annotations

import functools

import numpy as np

from .core import PRIMITIVES, Builder, TracedArray, current_builder
from .errors import ShapeError, TracegradError, UnsupportedError, user_source
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


def _trace_in_place(owner, fn, args, source, what, leaves_of, python_scalars_inside=False):
    """Trace ``fn(*args)`` in a child builder (``owner``, the decorated function, answering its own calls
    with the plain function meanwhile). ``leaves_of(result)`` gives the leaves of the graph's outputs and
    anything else the caller wants back. Returns (the graph: captured arrays then the arguments as its
    inputs, the captured values, the argument leaves, what ``leaves_of`` gave besides the leaves).
    ``python_scalars_inside``: Python numbers among the arguments are constants of the graph, not inputs
    (so they keep NumPy's weak-scalar promotion: ``x32 * 2.0`` stays float32), and are not returned."""
    leaves, in_tree = flatten(args)
    avals = [aval_of(leaf) for leaf in leaves]
    with Builder(getattr(fn, "__name__", what)) as inner:
        inputs = [leaf if python_scalars_inside and _python_scalar(leaf) else inner.new_input(aval, hint)
                  for leaf, aval, hint in zip(leaves, avals, arg_names(fn, args))]
        owner._in_fwd += 1
        try:
            prepared = _Preparer(inner).prepare(fn)
            result, names = _call_recording_locals(prepared, tuple(unflatten(in_tree, inputs)), inner)
        finally:
            owner._in_fwd -= 1
        out_leaves, extra = leaves_of(result)
        outputs = [_output_atom(leaf, inner) for leaf in out_leaves]
    for var, hint in names.items():
        if var.hint is None:
            var.hint = hint
    consts = [value for _, value in inner.captured]
    if any(isinstance(value, TracedArray) for value in consts):
        raise UnsupportedError(f"{what}: {getattr(fn, '__name__', 'fwd')} reads a value traced by the "
                               "enclosing function without receiving it as an argument", source,
                               "pass it as an argument, so that its derivative comes from the rule")
    outer = current_builder()
    for key, read in inner.readers.items():
        outer.readers.setdefault(key, read)
    # (the inputs' vars as created: an argument the function assigns into is rebound to another value)
    graph = Graph(inner.name, [var for var, _ in inner.captured] + list(inner.inputs), inner.nodes, outputs)
    return graph, consts, [leaf for leaf, t in zip(leaves, inputs) if isinstance(t, TracedArray)], extra


def _python_scalar(leaf) -> bool:
    return isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)


def _bind_call(primitive, consts, leaves, source, **params):
    outer = current_builder()
    saved, outer.source = outer.source, source
    try:
        return PRIMITIVES[primitive](*consts, *leaves, n_consts=len(consts), **params)
    finally:
        outer.source = saved


def _bind(f, args):
    source = user_source()
    name = getattr(f.fwd, "__name__", "fwd")

    def pair(result):
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TracegradError(f"custom_vjp: {name} must return a pair (outputs, residuals)", source)
        out_leaves, out_tree = flatten(result[0])
        res_leaves, res_tree = flatten(result[1])
        res_numbers = tuple((k, leaf) for k, leaf in enumerate(res_leaves) if _python_scalar(leaf))
        res_leaves = [leaf for leaf in res_leaves if not _python_scalar(leaf)]
        return out_leaves + res_leaves, (len(out_leaves), out_tree, res_tree, res_numbers)

    # Python numbers among the arguments stay constants of the forward function (NEP 50: x32 * 2.0 stays
    # float32), and those among the residuals reach the backward function as they are
    fwd, consts, leaves, (n_out, out_tree, res_tree, res_numbers) = _trace_in_place(
        f, f.fwd, args, source, "custom_vjp", pair, python_scalars_inside=True)
    numbers = tuple(k for k, leaf in enumerate(flatten(args)[0]) if _python_scalar(leaf))
    trees = (out_tree, res_tree, tuple(flatten(a)[1] for a in args), numbers, res_numbers)
    outs = _bind_call("custom_vjp_call", consts, leaves, source, fwd=fwd, n_out=n_out, bwd=f.bwd, trees=trees)
    return unflatten(out_tree, outs[:n_out])


class custom_jvp:
    """Give ``fun`` a forward-mode derivative of its own (JAX's decorator API); gradients come from it too::

        @tg.custom_jvp
        def log1pexp(x):
            return np.log1p(np.exp(x))

        @log1pexp.defjvp
        def log1pexp_jvp(primals, tangents):
            x, = primals
            x_dot, = tangents
            return log1pexp(x), x_dot * tg.sigmoid(x)   # not exp(x) / (1 + exp(x)): inf / inf at x = 1000

    The rule takes a tuple of primals (the arguments) and a tuple of their tangents, of the same
    structures, and returns ``(outputs, tangents of the outputs)``; the tangents must be linear in the
    input tangents. Outside a traced function ``f`` is ``fun`` itself; inside one, ``fun`` is traced into
    the graph, the rule is its JVP (called on traced values, so it shows in the generated source and can be
    differentiated again), and reverse mode transposes the rule: the gradient of <tangents out, g> with
    respect to the input tangents is the VJP (``g * sigmoid(x)``), which is exact because the rule is linear
    in them. Inside the rule a call of ``f`` is the plain function. The rule is written with NumPy
    operations on its arguments (a closure array is refused: pass it as an argument), and ``fun`` must not
    close over values traced by the enclosing function.
    """

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.jvp = None
        self._in_fwd = 0  # inside its own function or rule, a call is the plain function

    def defjvp(self, jvp):
        """Set the rule ``jvp(primals, tangents) -> (outputs, output tangents)``; returns ``jvp`` (so that
        ``@f.defjvp`` can decorate it)."""
        self.jvp = jvp
        return jvp

    def __call__(self, *args):
        if current_builder() is None or self._in_fwd:
            return self.fun(*args)
        if self.jvp is None:
            raise TracegradError(f"custom_jvp function {self.__name__} has no rule yet: call "
                                 f"{self.__name__}.defjvp(jvp)", user_source())
        source = user_source()
        fun, consts, leaves, out_tree = _trace_in_place(self, self.fun, args, source, "custom_jvp",
                                                       lambda result: flatten(result), python_scalars_inside=True)
        all_leaves, in_tree = flatten(args)
        constants = {k: leaf for k, leaf in enumerate(all_leaves) if _python_scalar(leaf)}
        rule = _JvpRule(self, in_tree, constants, out_tree, [v.aval for v in fun.outputs])
        outs = _bind_call("custom_jvp_call", consts, leaves, source, fun=fun, rule=rule)
        return unflatten(out_tree, outs)


class _JvpRule:
    """The user's rule as forward mode calls it: flat lists of primal and tangent leaves in, flat lists of
    output and output-tangent leaves out, structures and shapes checked, its local names kept."""

    def __init__(self, owner, in_tree, constants, out_tree, out_avals):
        self.owner, self.in_tree, self.out_tree, self.out_avals = owner, in_tree, out_tree, out_avals
        self.constants = constants  # {leaf position: a Python number}, not an input of the node
        self.__name__ = getattr(owner.jvp, "__name__", "jvp")

    def __call__(self, primals: list, tangents: list):
        """``primals`` and ``tangents``: the node's argument leaves (the Python numbers left out)."""
        builder = current_builder()
        for k in sorted(self.constants):  # a Python number has the tangent 0.0
            primals = primals[:k] + [self.constants[k]] + primals[k:]
            tangents = tangents[:k] + [0.0] + tangents[k:]
        source, name = builder.source, self.__name__
        n_captured, start = len(builder.captured), len(builder.nodes)
        self.owner._in_fwd += 1
        try:
            result, names = _call_recording_locals(
                self.owner.jvp, (unflatten(self.in_tree, primals), unflatten(self.in_tree, tangents)), builder)
        finally:
            self.owner._in_fwd -= 1
        if len(builder.captured) != n_captured:
            raise UnsupportedError(f"custom_jvp: {name} reads an array that is not one of its arguments", source,
                                   "pass it to the decorated function as an argument (or make it a Python float)")
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TracegradError(f"custom_jvp: {name} must return a pair (outputs, output tangents)", source)
        out_leaves, out_tree = flatten(result[0])
        t_leaves, t_tree = flatten(result[1])
        for what, tree in (("outputs", out_tree), ("output tangents", t_tree)):
            if tree != self.out_tree:
                raise TracegradError(f"custom_jvp: {name} returns {what} of structure {tree}, but "
                                     f"{self.owner.__name__} returns structure {self.out_tree}", source)
        for leaf, t, aval in zip(out_leaves, t_leaves, self.out_avals):
            for what, value in (("an output", leaf), ("a tangent", t)):
                if tuple(np.shape(value)) != aval.shape:
                    raise ShapeError(f"custom_jvp: {name} returns {what} of shape {tuple(np.shape(value))} for an "
                                     f"output of shape {aval.shape}", source)
        made = {v for node in builder.nodes[start:] for v in node.outs}
        for var, hint in names.items():
            if var in made and var.hint is None and var.grad_of is None and var.tangent_of is None:
                var.hint = hint
        return out_leaves, t_leaves
