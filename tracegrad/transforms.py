"""Transformations built from ``grad``, forward mode, batching and loops: ``vjp``, ``jvp``, ``linearize``,
``jacrev`` (= ``jacobian``), ``jacfwd``, ``hessian``, ``hvp`` and ``vmap``.

The Jacobian of ``f`` is one loop over the entries of ``f``'s output, each step the gradient of one entry
(a reverse pass): ``J[k] = grad(lambda x: f(x).ravel()[k])(x)``. The loop is a ``scan``, so the whole
Jacobian is one compiled function whose source stays the same size whatever the output's size, and its
rows are never a Python loop of calls. ``jacfwd`` is the same loop over the argument's entries, each step a
tangent in forward mode (``forward.py``). ``hessian(f)`` is ``jacfwd(grad(f))``: a loop of Hessian-vector
products against the basis vectors, the Hessian formed one column at a time.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from .api import captured_by_enclosing, grad, jit
from .batching import batch_inline
from .core import current_builder
from .errors import GradTypeError, ShapeError, user_source
from .forward import jvp_graph, linearize_graph
from .interpret import inline
from .loops import scan
from .pytree import flatten, unflatten
from .tracer import trace


def _vdot(tree, cotangent_tree) -> float:
    """<tree, cotangent>: the sum over the floating-point leaves of their elementwise products."""
    leaves, structure = flatten(tree)
    cts, ct_structure = flatten(cotangent_tree)
    if structure != ct_structure:
        raise ShapeError(f"a cotangent of structure {ct_structure} for an output of structure {structure}",
                         user_source())
    total = 0.0
    for leaf, ct in zip(leaves, cts):
        if np.shape(leaf) != np.shape(ct):
            raise ShapeError(f"a cotangent of shape {np.shape(ct)} for an output of shape {np.shape(leaf)}",
                             user_source())
        if _dtype(ct).kind == "f" and _dtype(leaf).kind == "f":  # (integer outputs have no gradient)
            total = total + np.sum(leaf * ct)
    return total


def vjp(fun, *primals):
    """``(fun(*primals), vjp_fn)``: ``vjp_fn(cotangent)`` is the vector-Jacobian product, one tuple entry per
    primal (JAX's convention), computed by one compiled reverse pass (``grad`` of <fun, cotangent>).
    Outputs and cotangents are pytrees of floats and arrays of the same structure and shapes."""
    argnums = tuple(range(len(primals)))
    pullback = grad(lambda *args: _vdot(fun(*args[:-1]), args[-1]), argnums=argnums)
    out = fun(*primals) if current_builder() is not None else jit(fun)(*primals)

    def vjp_fn(cotangent):
        return pullback(*primals, cotangent)

    return out, vjp_fn


def jvp(fun, primals: tuple, tangents: tuple):
    """``(fun(*primals), J @ tangents)``: the Jacobian-vector product, in forward mode (JAX's signature).

    ``fun`` is traced, every primitive's JVP rule appends its tangent (``tan_x``) beside its value
    (``forward.jvp_graph``), and the whole is compiled as one function; called on traced values it traces
    into the enclosing function. Primals and tangents are tuples of pytrees of floats and arrays; tangents
    have the primals' structure, shapes and dtypes (a ``ShapeError`` otherwise). Loops, ``while_loop``
    included, carry their tangents along. Example::

        >>> import numpy as np, tracegrad as tg
        >>> tg.jvp(np.sin, (0.0,), (2.0,))
        (0.0, 2.0)
    """
    primals, tangents = tuple(primals), tuple(tangents)
    p_leaves, p_tree = flatten(primals)
    t_leaves, t_tree = flatten(tangents)
    if p_tree != t_tree or any(np.shape(p) != np.shape(t) for p, t in zip(p_leaves, t_leaves)):
        raise ShapeError(f"jvp: tangents of structure {t_tree} and shapes {[np.shape(t) for t in t_leaves]} for "
                         f"primals of structure {p_tree} and shapes {[np.shape(p) for p in p_leaves]}", user_source())
    for p, t in zip(p_leaves, t_leaves):
        if _dtype(p) != _dtype(t):
            raise ShapeError(f"jvp: a tangent of dtype {_dtype(t)} for a primal of dtype {_dtype(p)}", user_source())
    n = len(primals)

    def both(*args):
        return _traced_jvp(fun, args[:n], args[n:])

    both.__name__ = f"jvp_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    return jit(both)(*primals, *tangents) if current_builder() is None else both(*primals, *tangents)


def _trace_here(fun, args):
    """Trace ``fun(*args)`` alone, inside the current trace: its own inputs (so values it closes over are
    constants of it), and the arrays it captures as the enclosing trace's values."""
    traced = trace(fun, tuple(args), name=getattr(fun, "__name__", None))
    return traced, captured_by_enclosing(traced)


def _float_leaves(graph) -> list[int]:
    return [k for k in range(graph.n_args) if graph.inputs[k].aval.dtype.kind == "f"]


def _traced_jvp(fun, primals, tangents):
    """``fun``'s outputs and their tangents, recorded into the current trace."""
    traced, captured = _trace_here(fun, primals)
    wrt = _float_leaves(traced.graph)
    t_leaves = flatten(tuple(tangents))[0]
    outs = inline(jvp_graph(traced.graph, wrt), *flatten(tuple(primals))[0], *(t_leaves[k] for k in wrt), *captured,
                  keep_names=True)
    n = len(traced.graph.outputs)
    return unflatten(traced.out_tree, outs[:n]), unflatten(traced.out_tree, outs[n:])


def _linearized(fun, primals):
    """The tangent map of ``fun`` at ``primals``, as a function of tangent leaves: the work that does not
    depend on the tangents (``fun``'s value and the derivatives' factors) is recorded into the current trace
    once, here; each call of the returned function records only the tangent part (``linearize_graph``)."""
    traced, captured = _trace_here(fun, primals)
    wrt = _float_leaves(traced.graph)
    primal, tangent = linearize_graph(traced.graph, wrt)
    residuals = inline(primal, *flatten(tuple(primals))[0], *captured, keep_names=True)

    def push(*t_leaves):
        return unflatten(traced.out_tree, inline(tangent, *residuals, *(t_leaves[k] for k in wrt), keep_names=True))
    return traced, push


def linearize(fun, *primals):
    """``(fun(*primals), f_jvp)``: ``f_jvp(*tangents)`` is the Jacobian-vector product at ``primals``
    (JAX's signature), computing only what depends on the tangents: the value and the derivatives' factors
    (``np.cos(x)`` for ``np.sin(x)``) are computed once, here, and passed to one compiled function of the
    tangents (``forward.linearize_graph``). Tangents have the primals' structure, shapes and dtypes (a
    ``ShapeError`` otherwise).

        >>> import numpy as np, tracegrad as tg
        >>> y, f_jvp = tg.linearize(np.sin, 0.0)
        >>> y, f_jvp(2.0)
        (0.0, 2.0)
    """
    parts = {}

    def values_and_residuals(*xs):
        traced, captured = _trace_here(fun, xs)
        primal, parts["tangent"] = linearize_graph(traced.graph, _float_leaves(traced.graph))
        parts["graph"], parts["out_tree"] = traced.graph, traced.out_tree
        leaves = flatten(tuple(xs))[0]
        # the outputs computed again share their nodes with the residuals' (one value each after cse)
        outs = inline(traced.graph, *leaves, *captured, keep_names=True)
        return unflatten(traced.out_tree, outs), inline(primal, *leaves, *captured, keep_names=True)

    values_and_residuals.__name__ = f"linearize_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    inside = current_builder() is not None
    out, residuals = values_and_residuals(*primals) if inside else jit(values_and_residuals)(*primals)
    wrt = _float_leaves(parts["graph"])
    p_leaves = flatten(tuple(primals))[0]

    def tangent_map(*args):
        res, t_leaves = args[:len(residuals)], flatten(tuple(args[len(residuals):]))[0]
        return unflatten(parts["out_tree"], inline(parts["tangent"], *res, *(t_leaves[k] for k in wrt),
                                                   keep_names=True))

    tangent_map.__name__ = f"tangent_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    compiled = None if inside else jit(tangent_map)

    def f_jvp(*tangents):
        t_leaves, t_tree = flatten(tuple(tangents))
        if t_tree != flatten(tuple(primals))[1] or any(np.shape(p) != np.shape(t) or _dtype(p) != _dtype(t)
                                                      for p, t in zip(p_leaves, t_leaves)):
            raise ShapeError(f"linearize: tangents of structure {t_tree}, shapes {[np.shape(t) for t in t_leaves]} "
                             f"and dtypes {[str(_dtype(t)) for t in t_leaves]} for primals of structure "
                             f"{flatten(tuple(primals))[1]}, shapes {[np.shape(p) for p in p_leaves]} and dtypes "
                             f"{[str(_dtype(p)) for p in p_leaves]}", user_source())
        return (tangent_map if compiled is None else compiled)(*residuals, *tangents)

    return out, f_jvp


def jacfwd(fun, argnums=0, has_aux: bool = False):
    """The Jacobian column by column in forward mode: one tangent per entry of the argument, in one
    compiled loop; what does not depend on the tangent (the value, the derivatives' factors) is computed
    once, before the loop (``forward.linearize_graph``). Same layout as ``jacrev`` (``out + arg``); cheaper
    than ``jacrev`` when the argument is smaller than the output. The argument and the output may be
    pytrees, and ``argnums`` a tuple (the arguments as one tuple): the result is then the output's
    structure holding, for each of its arrays, the argument's structure of Jacobians (JAX's layout).
    ``has_aux``: ``fun`` returns ``(out, aux)`` and the result is ``(jacobian, aux)``."""
    def columns(*args):
        several = not isinstance(argnums, int)
        wrt = tuple(args[i] for i in argnums) if several else args[argnums]
        leaves, tree = flatten(wrt)
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
        size = sum(sizes)

        def along(xk):
            call = list(args)
            for i, value in (zip(argnums, xk) if several else [(argnums, xk)]):
                call[i] = value
            return _split(fun(*call), has_aux)[0]
        traced, push = _linearized(along, (wrt,))

        def column(k):  # d out / d x_k: the tangent along the k-th basis vector (k traced: a row of arange)
            e, start, tangents = np.arange(size) == k, 0, []
            for leaf, shape, n in zip(leaves, shapes, sizes):
                part = e if len(leaves) == 1 else e[start:start + n]
                tangents.append(np.reshape(np.where(part, _dtype(leaf).type(1), _dtype(leaf).type(0)), shape))
                start += n
            return push(*tangents)

        if len(leaves) == 1 and not shapes[0]:
            jacs = [unflatten(tree, [out]) for out in flatten(column(0))[0]]
        else:
            _, cols = scan(lambda carry, k: (carry, column(k)), (), np.arange(size))
            jacs = []
            for jac in flatten(cols)[0]:  # (size,) + the output's shape -> the output's shape + (size,)
                out_shape = tuple(np.shape(jac))[1:]
                jac = np.transpose(jac, tuple(range(1, len(out_shape) + 1)) + (0,))
                parts, start = [], 0
                for shape, n in zip(shapes, sizes):
                    part = jac if len(leaves) == 1 else jac[..., start:start + n]
                    parts.append(np.reshape(part, out_shape + shape))
                    start += n
                jacs.append(unflatten(tree, parts))
        jac = unflatten(traced.out_tree, jacs)
        return (jac, _split(fun(*args), True)[1]) if has_aux else jac

    columns.__name__ = f"jacfwd_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    _parameters_of(fun, columns)
    return jit(columns)


def vmap(fun, in_axes=0, out_axes=0, *, parallel=None):
    """``fun`` mapped over an axis of its arguments: ``vmap(f)(xs)[i] == f(xs[i])`` (JAX's conventions).

    ``in_axes`` is an int (every argument), ``None`` (not mapped) or a tuple with one entry per argument
    (an argument that is a pytree is mapped along that axis in every leaf); ``out_axes`` is where the mapped
    axis goes in every output. ``fun`` is traced on one example and its operations are recorded once for the
    whole batch by each primitive's batching rule (``W @ x`` per example is one matrix product), an operation
    without one in a loop over the examples (``batching.py``): one compiled function, so
    ``vmap(grad(loss), in_axes=(None, 0, 0))(params, X, y)`` gives per-example gradients. Raises
    ``ShapeError`` for mapped axes of different sizes or an ``in_axes`` entry out of range. ``parallel`` as
    for ``tg.jit`` (``True``: the batch's large fused loops run as blocks of examples on all cores;
    default ``tg.set_parallel``'s). Example::

        >>> import numpy as np, tracegrad as tg
        >>> tg.vmap(lambda v, M: M @ v, in_axes=(0, None))(np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([[1., 3.],
               [2., 4.]])
    """
    def mapped(*args):
        if isinstance(in_axes, (tuple, list)) and len(in_axes) != len(args):
            raise ShapeError(f"vmap: in_axes has {len(in_axes)} entries for {len(args)} arguments", user_source())
        specs = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        leaves, tree = flatten(tuple(args))
        axes = [a for arg, spec in zip(args, specs) for a in _axes_of(arg, spec, "in_axes")]
        sizes, rows = set(), []
        for k, (leaf, axis) in enumerate(zip(leaves, axes)):
            if axis is None:
                continue
            ndim = len(np.shape(leaf))
            if not -ndim <= axis < ndim:
                raise ShapeError(f"vmap: in_axes={axis} is out of range for argument {_argument_of(args, k)} of "
                                 f"shape {np.shape(leaf)}", user_source())
            rows.append(_move_axis(leaf, axis % ndim, 0))
            sizes.add(np.shape(leaf)[axis])
        if len(sizes) != 1:
            raise ShapeError(f"vmap: the mapped axes have different sizes {sorted(sizes)}" if sizes else
                             "vmap: no argument is mapped (in_axes are all None)", user_source())

        def example(*mapped_leaves):  # fun on one example (the unmapped arguments as they are)
            it = iter(mapped_leaves)
            return fun(*unflatten(tree, [leaf if axis is None else next(it) for leaf, axis in zip(leaves, axes)]))

        example.__name__ = getattr(fun, "__name__", "f")
        # traced on the first example, then replayed for the batch (batching.py); its captures and the
        # enclosing trace's values it reads are the same for every example
        traced = trace(example, tuple(row[0] for row in rows), name=example.__name__)
        captured = captured_by_enclosing(traced)
        outs = batch_inline(traced.graph, rows + captured, [True] * len(rows) + [False] * len(captured),
                            sizes.pop())
        ys = unflatten(traced.out_tree, outs)
        axes_out = _axes_of(ys, out_axes, "out_axes")
        return unflatten(traced.out_tree, [_place(y, axis) for y, axis in zip(outs, axes_out)])

    mapped.__name__ = f"vmap_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    _parameters_of(fun, mapped)
    return jit(mapped, parallel=parallel)


def _axes_of(tree, spec, what: str) -> list:
    """One axis (or None) per leaf of ``tree``: ``spec`` is an int or None for all of them, or a tuple, list
    or dict giving one for each entry (JAX's prefix of the tree)."""
    if spec is None or isinstance(spec, (int, np.integer)):
        return [None if spec is None else int(spec)] * len(flatten(tree)[0])
    if isinstance(spec, dict) and isinstance(tree, dict) and sorted(spec) == sorted(tree):
        return [a for key in sorted(tree) for a in _axes_of(tree[key], spec[key], what)]
    if isinstance(spec, (tuple, list)) and isinstance(tree, (tuple, list)) and len(spec) == len(tree):
        return [a for entry, s in zip(tree, spec) for a in _axes_of(entry, s, what)]
    raise ShapeError(f"vmap: {what} {spec!r} does not fit a value of structure {flatten(tree)[1]}: give an int, "
                     "None, or a tuple, list or dict with one entry for each of its entries", user_source())


def _place(y, axis):
    """A mapped output with its batch axis (first) moved to ``axis``."""
    if axis is None:
        raise ShapeError("vmap: out_axes=None (an output not mapped) is not supported: every output has the "
                         "mapped axis", user_source())
    if not -np.ndim(y) <= axis < np.ndim(y):
        raise ShapeError(f"vmap: out_axes={axis} is out of range for an output of shape {np.shape(y)[1:]}",
                         user_source())
    return _move_axis(y, 0, axis % np.ndim(y))


def _argument_of(args, leaf: int) -> int:
    """The position of the argument holding the ``leaf``-th leaf of ``args``."""
    for k, arg in enumerate(args):
        leaf -= len(flatten(arg)[0])
        if leaf < 0:
            return k
    return len(args) - 1


def _parameters_of(fun, wrapper) -> None:
    """Give ``wrapper(*args)`` ``fun``'s signature, so that the generated code names the arguments as ``fun``
    does (``x``, ``params_W1``) rather than ``arg0``."""
    try:
        wrapper.__signature__ = inspect.signature(fun)
    except (TypeError, ValueError):
        pass


def _move_axis(x, source: int, destination: int):
    """np.moveaxis, as a transpose (or nothing)."""
    if source == destination:
        return x
    order = [d for d in range(np.ndim(x)) if d != source]
    order.insert(destination, source)
    return np.transpose(x, tuple(order))


def _dtype(value) -> np.dtype:
    """The dtype of an array, a traced value or a Python number (float for a Python float)."""
    return np.dtype(value.dtype) if hasattr(value, "dtype") else np.result_type(value)


def _map(fn, tree):
    leaves, structure = flatten(tree)
    return unflatten(structure, [fn(leaf) for leaf in leaves])


def jacrev(fun, argnums=0, has_aux: bool = False):
    """The Jacobian of ``fun`` with respect to the argument(s) ``argnums``, row by row in reverse mode.

    For an output of shape ``out`` and an argument of shape ``a`` the Jacobian has shape ``out + a``
    (JAX's layout: ``J[i, j] = d out[i] / d x[j]``); with a tuple of ``argnums``, a tuple of Jacobians.
    Arguments and outputs are floats, arrays or pytrees of them (the result: the output's structure holding,
    for each of its arrays, the argument's structure of Jacobians). The result is a compiled function (as ``tg.jit``); called
    on traced values it traces into the enclosing function. ``has_aux``: ``fun`` returns ``(out, aux)``
    and the result is ``(jacobian, aux)``.
    """
    def jacobian_of(*args):
        out, aux = _split(fun(*args), has_aux)
        leaves, out_tree = flatten(out)
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        if len(leaves) == 1 and not shapes[0]:  # a scalar: the gradient
            jac = grad(lambda *xs: _split(fun(*xs), has_aux)[0], argnums=argnums)(*args)
            return (jac, aux) if has_aux else jac
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
        size = sum(sizes)

        def entries(*xs):  # the output's entries as one vector (its arrays one after the other)
            outs = flatten(_split(fun(*xs), has_aux)[0])[0]
            if len(outs) == 1:
                return np.reshape(outs[0], (size,))
            return np.concatenate([np.reshape(o, (n,)) for o, n in zip(outs, sizes)])

        def row(k):  # the gradient of the output's k-th entry (k traced: the loop's row of arange(size))
            return grad(lambda *xs: entries(*xs)[k], argnums=argnums)(*args)

        _, rows = scan(lambda carry, k: (carry, row(k)), (), np.arange(size))
        # (each leaf of the gradients, stacked over the output's entries, laid out as out + leaf)
        jacs, start = [], 0
        for shape, n in zip(shapes, sizes):
            part = rows if len(leaves) == 1 else _map(lambda r: r[start:start + n], rows)
            jacs.append(_map(lambda r: np.reshape(r, shape + tuple(np.shape(r))[1:]), part))
            start += n
        jac = unflatten(out_tree, jacs)
        return (jac, aux) if has_aux else jac

    jacobian_of.__name__ = f"jacobian_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    _parameters_of(fun, jacobian_of)
    return jit(jacobian_of)


jacobian = jacrev


def hessian(fun, argnums=0, has_aux: bool = False):
    """The Hessian of a scalar ``fun``: ``jacfwd(grad(fun))``, forward over reverse, one Hessian-vector
    product per column in one compiled loop (the gradient's own factors computed once, before it; 1.3x as
    fast as ``jacrev(grad(fun))`` on a 100-dimensional Rosenbrock, benchmarks/bench_hessian.py). For an
    argument of shape ``a`` it has shape ``a + a``; with ``argnums=(i, j)``, ``H[i][j]`` has shape
    ``a_i + a_j`` (JAX's layout). Raises ``GradTypeError`` when ``fun``'s output is not a scalar."""
    name = getattr(fun, "__name__", "f")

    def scalar(*args):
        result = fun(*args)
        shape = tuple(np.shape(_split(result, has_aux)[0]))
        if shape:
            raise GradTypeError(f"hessian needs a function with a scalar output, but {name} returns shape {shape}",
                                user_source(), hint="the second derivatives of every entry are "
                                "jacfwd(jacrev(f)), of shape out + arg + arg")
        return result

    functools.update_wrapper(scalar, fun, updated=())  # its name and signature, not its attributes
    return jacfwd(grad(scalar, argnums=argnums, has_aux=has_aux), argnums=argnums, has_aux=has_aux)


def hvp(fun, primals: tuple, tangents: tuple):
    """The Hessian-vector product of a scalar ``fun`` at ``primals`` along ``tangents``, without forming the
    Hessian: forward over reverse, the tangent of ``grad(fun)`` (one reverse pass carrying tangents), one
    compiled function. Returns one entry per primal, as ``grad`` with ``argnums`` over all of them."""
    n = len(primals)

    def product(*args):
        return jvp(grad(fun, argnums=tuple(range(n))), args[:n], args[n:])[1]

    product.__name__ = f"hvp_{getattr(fun, '__name__', 'f')}".replace("<lambda>", "lambda")
    return jit(product)(*primals, *tangents) if current_builder() is None else product(*primals, *tangents)


def _split(result, has_aux):
    if not has_aux:
        return result, None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise GradTypeError("has_aux=True needs the function to return a pair (output, aux)")
    return result
