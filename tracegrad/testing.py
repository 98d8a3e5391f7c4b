"""Gradient checking: ``numeric_grad`` (central differences) and ``check_grad``, which compares
tracegrad's compiled gradient with central differences and says so when a test point sits on a kink.

``check_grad`` works in two modes. ``"directional"`` (the default) compares the derivative along a few
seeded random unit directions v: the compiled reverse-mode gradient g gives <g, v>, central differences
give (f(x + h v) - f(x - h v)) / 2h; with ``order=2`` the function checked is <grad f(x), u> for a
random u, so this is the dot-product test <u, H v> of the Hessian. Its cost does not grow with the
number of inputs. ``"full"`` differentiates numerically entry by entry and reports the worst entries.
Both modes also run the dot-product test of forward against reverse mode, <1, J v> = <J^T 1, v>: the
derivative along random directions by every JVP rule (``forward.jvp_graph``, run by the reference
interpreter) against the compiled gradient, which must agree up to rounding.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .api import value_and_grad
from .errors import DataError, GradCheckError, GradTypeError, SourceInfo
from .forward import jvp_graph
from .interpret import evaluate
from .ir import Graph, IRError, Var
from .pytree import flatten, unflatten
from .tracer import arg_names, trace


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
    if not leaves:
        raise GradTypeError(f"numeric_grad: argument {argnums} is {args[argnums]!r}, with no floats or arrays in it")
    grads = []
    for k, leaf in enumerate(leaves):
        kind = leaf.dtype if isinstance(leaf, (np.ndarray, np.generic)) else type(leaf).__name__
        if not (isinstance(leaf, float) or isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind == "f"):
            raise GradTypeError(f"numeric_grad: argument {argnums} has a non-float leaf ({kind})",
                                hint="pass floats or float arrays")
        x = np.array(leaf, dtype=np.float64)
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


# ---------------------------------------------------------------------- defaults per dtype


@dataclass(frozen=True)
class Tolerances:
    """Defaults for one precision: ``eps`` is the relative step of differences computed in it; ``rtol``
    and ``atol`` apply to gradients computed in it (``atol`` is scaled by the size of the gradient)."""

    eps: float
    rtol: float
    atol: float


DEFAULTS = {
    np.dtype(np.float64): Tolerances(eps=1e-6, rtol=1e-5, atol=1e-7),
    np.dtype(np.float32): Tolerances(eps=1e-3, rtol=2e-3, atol=1e-4),
}


def _defaults(dtype) -> Tolerances:
    return DEFAULTS[np.dtype(np.float64)] if np.dtype(dtype) == np.float64 else DEFAULTS[np.dtype(np.float32)]


class KinkWarning(UserWarning):
    """check_grad found a kink (abs, maximum, minimum, where, sign, np.max, np.min, clip) within the
    finite-difference step of the point it checked: there, finite differences mean nothing."""


# ---------------------------------------------------------------------- the report


JVP_ROUNDING = 1e4  # forward and reverse mode agree within this many units in the last place of |g| . |v|


@dataclass(frozen=True)
class Kink:
    """A non-differentiable point within the step of the checked point: the operation and the user's line."""

    operation: str
    source: SourceInfo | None

    def __str__(self) -> str:
        where = f"{self.source.short()}: {self.source.line}" if self.source is not None else "(unknown line)"
        return f"{where}  [{self.operation}]"


@dataclass
class Row:
    """One comparison: a direction (directional mode) or one gradient entry (full mode)."""

    label: str  # "direction 0", or the argument's name
    index: tuple | None  # the entry's index in its argument (full mode)
    analytic: float
    numeric: float
    tolerance: float
    kinks: tuple = ()

    @property
    def abs_error(self) -> float:
        return abs(self.analytic - self.numeric)

    @property
    def rel_error(self) -> float:
        scale = max(abs(self.analytic), abs(self.numeric))
        return self.abs_error / scale if scale > 0 else 0.0

    @property
    def within(self) -> bool:
        return bool(self.abs_error <= self.tolerance)  # False for NaN

    @property
    def status(self) -> str:
        if self.within:
            return "ok"
        if self.kinks and np.isfinite(self.analytic):
            return "kink"  # finite differences across a kink: not a failure of the gradient
        return "FAIL"


@dataclass
class GradCheckReport:
    """What ``check_grad`` compared and found. ``str(report)`` is a readable table."""

    function: str
    argument_names: tuple
    mode: str
    order: int
    dtype: np.dtype  # of the gradient checked
    fd_dtype: np.dtype  # the precision the finite differences were computed in
    eps: float
    rtol: float
    atol: float
    atol_given: bool  # False: the default atol, scaled by the size of the gradient
    rows: list = field(default_factory=list)
    value: float = float("nan")  # the compiled function's value at the point
    value_numeric: float = float("nan")  # the same from the finite-difference side
    problems: list = field(default_factory=list)  # failures that are not rows (value, dtype, shape, jvp)
    jvp_rows: list = field(default_factory=list)  # forward mode's <1, J v> (numeric) vs <g, v> (analytic)
    jvp_skipped: str | None = None  # why forward mode was not checked (a primitive without a JVP rule)

    @property
    def failures(self) -> list:
        return [row for row in self.rows if row.status == "FAIL"]

    @property
    def kinks(self) -> list:
        seen = []
        for row in self.rows:
            for kink in row.kinks:
                if kink not in seen:
                    seen.append(kink)
        return seen

    @property
    def passed(self) -> bool:
        return not self.failures and not self.problems

    def worst(self, k: int = 5) -> list:
        """The ``k`` rows with the largest error relative to their tolerance, failures first."""
        def badness(row):
            ratio = row.abs_error / row.tolerance if row.tolerance > 0 else np.inf
            return (row.status != "FAIL", -ratio if np.isfinite(ratio) else -np.inf)
        return sorted(self.rows, key=badness)[:k]

    def __repr__(self):
        return f"<GradCheckReport {self.function}: {'passed' if self.passed else 'FAILED'}, {len(self.rows)} rows>"

    def __str__(self) -> str:
        what = "directions" if self.mode == "directional" else "entries"
        verdict = "passed" if self.passed else (
            f"FAILED: {len(self.failures)} of {len(self.rows)} {what} out of tolerance" if self.failures else "FAILED")
        kind = "gradient" if self.order == 1 else "second derivative (gradient of <grad f, u>)"
        fd = np.dtype(self.fd_dtype).name
        norm = "|g|_2" if self.mode == "directional" else "max |g|"
        atol = f"{self.atol:g}" if self.atol_given else f"{self.atol:g}*max(1, {norm})"
        lines = [
            f"check_grad({self.function}) w.r.t. {', '.join(self.argument_names)}, mode={self.mode!r}, "
            f"order={self.order}: {verdict}",
            f"  {np.dtype(self.dtype).name} {kind} vs central differences in {fd}",
            f"  eps={self.eps:g} (step eps*max(1, |x|)), rtol={self.rtol:g}, atol={atol}",
        ]
        if self.problems:
            lines += [f"  problem: {p}" for p in self.problems]
        rows = self.rows if self.mode == "directional" else self.worst()
        if rows:
            if self.mode == "full":
                lines.append(f"  {len(self.rows)} entries checked; the worst {len(rows)}:")
            header = ("direction", "") if self.mode == "directional" else ("argument", "index")
            table = [(*header, "analytic", "numeric", "abs error", "rel error", "status")]
            for row in rows:
                index = "" if row.index is None else ("()" if row.index == () else str(row.index))
                first = row.label.replace("direction ", "") if self.mode == "directional" else row.label
                table.append((first, index, f"{row.analytic:.10g}", f"{row.numeric:.10g}",
                              f"{row.abs_error:.2e}", f"{row.rel_error:.2e}", row.status))
            widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            for r in table:
                cells = [r[i].ljust(widths[i]) if i in (0, 1, 6) else r[i].rjust(widths[i]) for i in range(len(r))]
                lines.append("    " + "  ".join(c for i, c in enumerate(cells) if widths[i]).rstrip())
        if self.kinks:
            lines.append("  kinks within the step (mismatches next to them are not failures):")
            lines += [f"    {kink}" for kink in self.kinks]
        return "\n".join(lines)


# ---------------------------------------------------------------------- the points checked


def _leaf_kind_error(leaf, name: str, arg: str):
    where = f"{name!r}" + (f" (in argument {arg!r})" if name != arg else "")
    if isinstance(leaf, (bool, np.bool_)) or (isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind == "b"):
        what = "a bool"
    elif isinstance(leaf, (int, np.integer)):
        what = "a Python int" if isinstance(leaf, int) else f"an integer ({leaf.dtype})"
    elif isinstance(leaf, (np.ndarray, np.generic)):
        if leaf.dtype.kind == "f":
            return None
        what = f"{'an integer' if leaf.dtype.kind in 'iu' else 'an'} array of dtype {leaf.dtype}"
    elif isinstance(leaf, float):
        return None
    else:
        what = f"a {type(leaf).__name__}, not a float or a float array"
    return GradTypeError(f"check_grad cannot differentiate with respect to {where}: it is {what}",
                         hint="pass floats (2.0 rather than 2, or x.astype(np.float64)), or leave it out of argnums")


def _leaf_at(leaf, values: np.ndarray, dtype):
    """``values`` in the form of ``leaf`` (Python float, NumPy scalar or array), in ``dtype`` if given."""
    if isinstance(leaf, float):
        return float(values[0])
    dtype = np.dtype(dtype or leaf.dtype)
    if isinstance(leaf, np.generic):
        return dtype.type(values[0])
    return values.reshape(leaf.shape).astype(dtype)


class _Point:
    """The differentiated leaves of the arguments as one flat float64 vector, and arguments rebuilt from one."""

    def __init__(self, args: tuple, picked: tuple, names: list):
        self.args = args
        self.picked = picked
        self.trees = {i: flatten(args[i]) for i in picked}
        self.leaves = [leaf for i in picked for leaf in self.trees[i][0]]
        self.names = names
        self.x = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in self.leaves])
        offsets, start = [], 0
        for i, arg in enumerate(args):
            n = len(flatten(arg)[0])
            if i in picked:
                offsets.extend(range(start, start + n))
            start += n
        self.positions = offsets  # of the differentiated leaves among all the leaves of ``args``

    def args_at(self, x: np.ndarray, dtype=None) -> tuple:
        new, pos = list(self.args), 0
        for i in self.picked:
            leaves, tree = self.trees[i]
            rebuilt = []
            for leaf in leaves:
                n = int(np.size(leaf))
                rebuilt.append(_leaf_at(leaf, x[pos:pos + n], dtype))
                pos += n
            new[i] = unflatten(tree, rebuilt)
        return tuple(new)

    def locate(self, k: int) -> tuple:
        """The name of the leaf holding entry ``k`` of the flat vector, and the entry's index in it."""
        for leaf, name in zip(self.leaves, self.names):
            n = int(np.size(leaf))
            if k < n:
                return name, tuple(int(i) for i in np.unravel_index(k, np.shape(leaf)))
            k -= n
        raise IndexError(k)


# ---------------------------------------------------------------------- test data a primitive declares


def _positive(rng, shape):
    return np.abs(rng.normal(size=shape)) + 0.5


def _away_from_zero(rng, shape):
    x = rng.normal(size=shape)
    return np.sign(x) * (np.abs(x) + 0.3)


# Named domains a primitive's ``domain`` can declare: (rng, shape) -> float64 values inside it, kept away
# from the edges and the kinks so that central differences (steps up to 1e-2) stay inside
DOMAINS = {
    "real": lambda rng, shape: rng.normal(size=shape),
    "positive": _positive,  # log, sqrt: (0.5, ...)
    "away_from_zero": _away_from_zero,  # 1 / x, abs: |x| >= 0.3
    "small": lambda rng, shape: 0.5 * np.tanh(rng.normal(size=shape)),  # tan: (-0.5, 0.5)
    "unit": lambda rng, shape: 0.8 * np.tanh(rng.normal(size=shape)),  # arcsin, arctanh: (-0.8, 0.8)
    "above_one": lambda rng, shape: _positive(rng, shape) + 1.0,  # arccosh: (1.5, ...)
    "mask": lambda rng, shape: rng.normal(size=shape) > 0,  # where's condition: booleans
}


def sample(domain, shape, rng, dtype=np.float64):
    """Inputs for a test of a primitive: an array of ``shape`` (a scalar of ``dtype`` for shape ``()``) drawn
    from ``domain``, a name in ``DOMAINS`` or a function (rng, shape) -> float64 values. Booleans stay
    booleans."""
    draw = DOMAINS[domain] if isinstance(domain, str) else domain
    x = np.asarray(draw(rng, shape))
    if x.dtype != np.bool_:
        x = x.astype(dtype)
    return x if shape else x.dtype.type(x)


def input_domains(prim, n: int) -> tuple:
    """The domain of each of ``n`` inputs of ``prim``, from its declaration (one for all, or one per input)."""
    if isinstance(prim.domain, tuple):
        return prim.domain
    return (prim.domain,) * n


# ---------------------------------------------------------------------- kinks


@dataclass
class _Watch:
    kink: Kink
    slots: tuple  # positions of the watched values among the probe graph's outputs
    signature: Callable  # (*values, **params) -> an array that changes when a step crosses the kink
    params: dict


class _Probe:
    """The checked function's graph, run by the reference interpreter, watching every non-differentiable
    operation the checked arguments reach, as its primitive declares (``kink``: ``KinkAt``): at each point it
    gives the value and a signature per kink (the signs of ``x`` for abs/sign, of ``x - y`` for
    maximum/minimum/comparisons, the positions of the extrema for np.max/np.min). A kink lies within the
    step when its signature is not the same at x - h v, x and x + h v (a sign that is 0 at x and not at
    x + h v counts: the step leaves the kink)."""

    def __init__(self, fun, args: tuple, positions: list):
        traced = trace(fun, args)
        graph = self.function_graph = traced.graph
        self.positions = positions
        self.captured = [c.current() for c in traced.captures]
        active = {graph.inputs[i] for i in positions}
        for node in graph.nodes:
            if any(isinstance(a, Var) and a in active for a in node.inputs):
                active.add(node.out)
        self.precision = np.dtype(np.float64)
        if any(n.out in active and n.out.aval.dtype.kind == "f" and n.out.aval.dtype.itemsize < 8 for n in graph.nodes):
            self.precision = np.dtype(np.float32)  # the function itself rounds to float32: so must the steps
        users: dict = {}
        for node in graph.nodes:
            for a in node.inputs:
                if isinstance(a, Var):
                    users.setdefault(a, []).append(node)
        outputs = [graph.outputs[0]]
        self.watches: list[_Watch] = []
        for node in graph.nodes:
            kink = node.primitive.kink
            if kink is None or not any(isinstance(a, Var) and a in active for a in node.inputs):
                continue
            watched = tuple(kink.watch(node))
            text = kink.text(node, users.get(node.out, [])) if callable(kink.text) else kink.text
            slots = tuple(range(len(outputs), len(outputs) + len(watched)))
            outputs.extend(watched)
            self.watches.append(_Watch(Kink(text, node.source), slots, kink.signature, dict(node.params)))
        self.graph = Graph(graph.name, list(graph.inputs), list(graph.nodes), outputs, graph.n_args)

    def run(self, leaves: list) -> tuple:
        """The value and the kink signatures at one point (given as all the graph's argument leaves)."""
        with np.errstate(all="ignore"):  # a NaN or inf shows in the report
            outs = evaluate(self.graph, *leaves, *self.captured)
            signatures = [watch.signature(*(np.asarray(outs[s], np.float64) for s in watch.slots), **watch.params)
                          for watch in self.watches]
        return float(outs[0]), signatures

    def tangent(self, leaves: list, tangents: list) -> float:
        """The derivative along ``tangents`` (one per differentiated leaf) by forward mode: every JVP rule,
        run by the reference interpreter."""
        if not hasattr(self, "jvp"):
            self.jvp = jvp_graph(self.function_graph, list(self.positions))
        with np.errstate(all="ignore"):
            outs = evaluate(self.jvp, *leaves, *tangents, *self.captured)
        return float(outs[len(self.function_graph.outputs)])

    def kinks_between(self, *signature_lists) -> tuple:
        """The kinks whose signature is not the same at all the points given."""
        found = []
        for k, watch in enumerate(self.watches):
            first, *others = [s[k] for s in signature_lists]
            if any(not np.array_equal(first, s, equal_nan=True) for s in others) and watch.kink not in found:
                found.append(watch.kink)
        return tuple(found)


# ---------------------------------------------------------------------- the two sides


class _FiniteDifferences:
    """The numeric side: the function at points near x, in float64 when it can take float64 copies of
    float32 arguments, and the kinks the probe sees between those points."""

    def __init__(self, f, fun, point: _Point, order: int, u_like, u_float64):
        self.f, self.point, self.order = f, point, order
        self.dtype, self.extra = np.float64, u_float64  # the arguments' dtype (None: their own)
        try:
            self.probe = _Probe(fun, point.args_at(point.x, np.float64) + u_float64, point.positions)
            if order == 1:
                f(*point.args_at(point.x, np.float64))
            self.precision = self.probe.precision
        except Exception:  # e.g. code that insists on float32: difference in the arguments' own dtype
            self.dtype, self.extra = None, u_like
            self.probe = _Probe(fun, point.args_at(point.x) + u_like, point.positions)
            self.precision = min((np.asarray(leaf).dtype for leaf in point.leaves), key=lambda d: d.itemsize)
        self.unit = np.finfo(self.precision).eps
        self.center_value, self.center = self.probe.run(self._leaves(point.x))

    def _leaves(self, x) -> list:
        return flatten(self.point.args_at(x, self.dtype) + self.extra)[0]

    def value(self, x) -> float:
        """The function at x: the user's own NumPy code (order 1), else the graph of <grad f, u>."""
        with np.errstate(all="ignore"):  # a NaN or inf shows in the report
            if self.order == 1:
                return float(self.f(*self.point.args_at(x, self.dtype)))
            return self.probe.run(self._leaves(x))[0]

    def difference(self, x, step) -> tuple:
        """The central difference along ``step``, its rounding noise, and the kinks it crosses."""
        f_plus, f_minus = self.value(x + step), self.value(x - step)
        h = float(np.linalg.norm(step))
        noise = 16 * self.unit * max(abs(f_plus), abs(f_minus), abs(self.center_value)) / h
        kinks = self.probe.kinks_between(self.center, self.probe.run(self._leaves(x + step))[1],
                                         self.probe.run(self._leaves(x - step))[1])
        return (f_plus - f_minus) / (2 * h), noise, kinks

    def tangent(self, x, v) -> float:
        """The forward-mode derivative at x along v (the JVP rules, in the probe's precision)."""
        along = flatten(self.point.args_at(v, self.dtype) + self.extra)[0]
        return self.probe.tangent(self._leaves(x), [along[p] for p in self.point.positions])


def _gradient_projection(f, argnums: tuple):
    """<grad f(*args), u>, with u passed as a last argument: the function whose gradient is H u."""
    inner = value_and_grad(f, argnums=argnums)

    def projected(*args_and_u):
        *args, u = args_and_u
        _, grads = inner(*args)
        return sum(np.sum(g * w) for g, w in zip(flatten(grads)[0], flatten(u)[0]))
    projected.__name__ = f"{getattr(f, '__name__', 'f')}_grad_dot_u"
    return projected


# ---------------------------------------------------------------------- bad input


def _check_settings(f, args, mode, order, directions):
    if mode not in ("directional", "full"):
        raise DataError(f"check_grad: mode must be 'directional' or 'full', got {mode!r}")
    if order not in (1, 2):
        raise DataError(f"check_grad: order must be 1 or 2, got {order!r}")
    if mode == "directional" and (not isinstance(directions, int) or directions < 1):
        raise DataError(f"check_grad: directions must be a positive int, got {directions!r}")
    if not callable(f):
        raise GradTypeError(f"check_grad expects a function, got {type(f).__name__}")
    if not args:
        raise GradTypeError(f"check_grad needs the arguments to call {getattr(f, '__name__', 'f')} with")


def _normalize_argnums(argnums, n: int) -> tuple:
    items = argnums if isinstance(argnums, (tuple, list)) else (argnums,)
    if not items or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items):
        raise GradTypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
    for i in items:
        if not -n <= i < n:
            raise GradTypeError(f"argnums={argnums!r} is out of range for {n} argument(s)")
    picked = tuple(int(i) % n for i in items)
    if len(set(picked)) != len(picked):
        raise GradTypeError(f"argnums={argnums!r} names an argument twice")
    return picked


def _checked_point(f, args, picked) -> tuple:
    """The point to check, with a name per differentiated leaf; raises for leaves that are not floats."""
    params = arg_names(f, (0,) * len(args))  # one name per argument
    names = arg_names(f, args)  # one name per leaf
    counts = [len(flatten(arg)[0]) for arg in args]
    leaf_names, arg_of_leaf = [], []
    for i in picked:  # in the order of argnums, as the gradients come
        if counts[i] == 0:
            raise GradTypeError(f"check_grad: argument {params[i]!r} has no leaves to differentiate")
        start = sum(counts[:i])
        leaf_names.extend(names[start:start + counts[i]])
        arg_of_leaf.extend([params[i]] * counts[i])
    picked_leaves = [leaf for i in picked for leaf in flatten(args[i])[0]]
    for leaf, name, arg in zip(picked_leaves, leaf_names, arg_of_leaf):
        error = _leaf_kind_error(leaf, name, arg)
        if error is not None:
            raise error
    return _Point(args, picked, leaf_names), tuple(dict.fromkeys(arg_of_leaf))


def _scalar_value(f, args, name: str) -> float:
    out = f(*args)
    if isinstance(out, (tuple, list, dict)):
        raise GradTypeError(f"check_grad needs {name} to return one scalar, got a {type(out).__name__}",
                            hint="check a function that returns only the value, e.g. lambda *a: f(*a)[0]")
    if np.ndim(out) != 0:
        raise GradTypeError(f"check_grad needs {name} to return a scalar, got an array of shape {np.shape(out)}",
                            hint="check a scalar projection instead: check_grad(lambda x: np.sum(f(x) * w), x) "
                                 "with a fixed random array w of that shape")
    if np.asarray(out).dtype.kind != "f":
        raise GradTypeError(f"check_grad needs {name} to return a float, got {np.asarray(out).dtype}")
    return float(out)


# ---------------------------------------------------------------------- check_grad


def check_grad(f, *args, argnums=0, mode: str = "directional", order: int = 1, rtol: float | None = None,
               atol: float | None = None, eps: float | None = None, seed: int = 0, directions: int = 3):
    """Check tracegrad's compiled gradient of scalar ``f`` at ``args`` against central differences.

    ``mode="directional"`` compares ``directions`` seeded random directional derivatives (cheap for any
    number of inputs); ``mode="full"`` compares every gradient entry and reports the worst. ``order=2``
    checks the gradient of <grad f, u> for a random u (Hessian-vector products). Finite differences
    are computed in float64 even for float32 arguments (unless ``f`` itself rounds to float32), with a
    step of ``eps * max(1, |x|)``; an entry passes when ``|analytic - numeric| <= atol + rtol * max(|analytic|,
    |numeric|)`` plus the rounding noise of the difference. Defaults depend on the dtype (see
    ``DEFAULTS``); the default ``atol`` is scaled by the size of the gradient (at least 1).

    Forward mode is checked against the gradient too (the dot-product test <1, J v> = <J^T 1, v>, along
    ``directions`` random directions, one in full mode): the derivative along v computed by the JVP rules must
    equal <g, v> up to rounding (``JVP_ROUNDING`` units in the last place of sum |g_i v_i|; a float32 gradient,
    whose forward values may have lost bits that forward mode in float64 keeps, within ``rtol``/``atol`` as
    against the differences); a mismatch is a problem of the report (``report.jvp_rows`` holds the comparisons).

    Where an input of abs/sign/maximum/minimum/where/np.max/np.min/clip is within the step of its kink,
    a ``KinkWarning`` names the line and a mismatch there is not counted as a failure.

    Returns the ``GradCheckReport``; raises ``GradCheckError`` (an ``AssertionError``) carrying it when a
    gradient disagrees, and ``GradTypeError`` for integer or non-array arguments, a non-scalar output
    or ``argnums`` out of range.

    >>> import numpy as np
    >>> report = check_grad(lambda x: np.sum(np.tanh(x) ** 2), np.array([0.5, -1.0, 2.0]))
    >>> report.passed
    True
    >>> print(report)  # doctest: +ELLIPSIS
    check_grad(<lambda>) w.r.t. x, mode='directional', order=1: passed
      float64 gradient vs central differences in float64
      eps=1e-06 (step eps*max(1, |x|)), rtol=1e-05, atol=1e-07*max(1, |g|_2)
        direction      analytic       numeric  abs error  rel error  status
        0          0.3951644654  0.3951644655   ...  ok
        1          0.7150394603  0.7150394604   ...  ok
        2          0.1399525439  0.1399525439   ...  ok
    """
    _check_settings(f, args, mode, order, directions)
    name = getattr(f, "__name__", type(f).__name__)
    picked = _normalize_argnums(argnums, len(args))
    point, arg_labels = _checked_point(f, args, picked)
    _scalar_value(f, args, name)
    dtype = np.dtype(np.float64 if all(np.asarray(leaf).dtype == np.float64 for leaf in point.leaves) else np.float32)

    rng = np.random.default_rng(seed)
    fun, u_like, u_float64 = f, (), ()
    if order == 2:  # check the gradient of <grad f, u>; its differences use the first-order gradient
        fun = _gradient_projection(f, picked)
        u = rng.normal(size=point.x.size)
        u /= np.linalg.norm(u) or 1.0
        u_like = (tuple(point.args_at(u)[i] for i in picked),)
        u_float64 = (tuple(point.args_at(u, np.float64)[i] for i in picked),)
    numeric = _FiniteDifferences(f, fun, point, order, u_like, u_float64)
    working = np.dtype(np.float32) if np.float32 in (dtype, numeric.precision) else np.dtype(np.float64)
    eps = _defaults(numeric.precision).eps if eps is None else float(eps)
    rtol_used = _defaults(working).rtol if rtol is None else float(rtol)
    atol_used = _defaults(working).atol if atol is None else float(atol)

    def tolerance(analytic, numeric_value, noise, size):
        scaled = atol_used * max(1.0, size) if atol is None else atol_used  # a given atol is absolute
        return scaled + rtol_used * max(abs(analytic), abs(numeric_value)) + noise

    # The analytic side: tracegrad's compiled value and gradient, in the arguments' own dtype.
    value, grads = value_and_grad(fun, argnums=picked)(*args, *u_like)
    report = GradCheckReport(name, arg_labels, mode, order, dtype, numeric.precision, eps, rtol_used, atol_used,
                             atol is not None, value=float(value))
    report.value_numeric = numeric.value(point.x) if order == 1 else numeric.center_value
    if not abs(report.value - report.value_numeric) <= tolerance(
            report.value, report.value_numeric, 16 * numeric.unit * abs(report.value_numeric), abs(report.value)):
        report.problems.append(f"the compiled value {report.value!r} differs from {report.value_numeric!r} "
                               f"computed in {numeric.precision.name}")
    grad_leaves = flatten(grads)[0]
    for g, leaf, leaf_name in zip(grad_leaves, point.leaves, point.names):
        if np.shape(g) != np.shape(leaf):
            report.problems.append(f"the gradient of {leaf_name} has shape {np.shape(g)}, expected {np.shape(leaf)}")
        elif not isinstance(leaf, float) and np.asarray(g).dtype != np.asarray(leaf).dtype:
            report.problems.append(f"the gradient of {leaf_name} has dtype {np.asarray(g).dtype}, "
                                   f"expected {np.asarray(leaf).dtype}")
    g = np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in grad_leaves])

    x = point.x
    if mode == "directional":
        h, size = eps * max(1.0, float(np.max(np.abs(x)))), float(np.linalg.norm(g))
        for k in range(directions):
            v = rng.normal(size=x.size)
            v /= np.linalg.norm(v) or 1.0
            difference, noise, kinks = numeric.difference(x, h * v)
            analytic = float(g @ v)
            report.rows.append(Row(f"direction {k}", None, analytic, difference,
                                   tolerance(analytic, difference, noise, size), kinks))
    else:
        size = float(np.max(np.abs(g)))
        for k in range(x.size):
            step = np.zeros_like(x)
            step[k] = eps * max(1.0, abs(float(x[k])))
            difference, noise, kinks = numeric.difference(x, step)
            label, index = point.locate(k)
            report.rows.append(Row(label, index, float(g[k]), difference,
                                   tolerance(g[k], difference, noise, size), kinks))

    # The dot-product test of the two modes, <1, J v> = <J^T 1, v>: forward mode (every JVP rule) against
    # the compiled reverse-mode gradient, exact up to rounding (no truncation error, kinks included).
    unit = float(np.finfo(working).eps)
    # A float32 gradient against forward mode run in float64 (the probe's precision) differs by more than
    # float32's rounding of the result where the forward values lose bits (1 - sigmoid(x) near 1): there the
    # gradient is held to what the comparison with differences asks of it, no more
    mixed, default = np.dtype(dtype) != numeric.precision, _defaults(working)
    for k in range(directions if mode == "directional" else 1):
        v = np.random.default_rng([seed, k]).normal(size=x.size)
        v /= np.linalg.norm(v) or 1.0
        try:
            tangent = numeric.tangent(x, v)
        except IRError as e:  # a primitive of the user's own without a JVP rule: nothing to compare
            report.jvp_skipped = str(e)
            break
        transposed = float(g @ v)
        scale = float(np.abs(g) @ np.abs(v)) + abs(tangent)
        limit = JVP_ROUNDING * unit * scale + np.finfo(working).tiny
        if mixed:  # (the dtype's default tolerances, scaled as the rows above: a looser rtol given for the
            # differences does not loosen this test)
            limit = max(limit, default.atol * max(1.0, size) + default.rtol * max(abs(transposed), abs(tangent)))
        row = Row(f"direction {k}", None, transposed, tangent, limit)
        report.jvp_rows.append(row)
        if not row.within:
            report.problems.append(f"forward mode (jvp) gives {tangent!r} along a random direction where the gradient "
                                   f"(vjp) gives <g, v> = {transposed!r}: a JVP rule disagrees with its VJP")
    if report.kinks:
        warnings.warn(_kink_message(report, name), KinkWarning, stacklevel=2)
    if not report.passed:
        raise GradCheckError(str(report), report, hint=(
            "away from kinks a disagreement means a wrong derivative rule, unless the point is too ill-conditioned "
            "for finite differences (huge values, near a singularity): then try another point or pass eps"))
    return report


def _kink_message(report: GradCheckReport, name: str) -> str:
    crossed = [row for row in report.rows if row.kinks]
    excused = sum(row.status == "kink" for row in crossed)
    sites = "\n".join(f"  {kink}" for kink in report.kinks)
    what = "directions" if report.mode == "directional" else "entries"
    outcome = ("they agree anyway" if not excused else "the one that disagrees is not counted as a failure"
               if excused == 1 else f"the {excused} that disagree are not counted as failures")
    return (f"check_grad({name}): a kink lies within the finite-difference step (eps={report.eps:g}) of the point "
            f"checked, where finite differences mean nothing:\n{sites}\n"
            f"  {len(crossed)} of {len(report.rows)} {what} cross it; {outcome}.\n"
            f"  hint: check at a point away from the kink (inputs away from 0 and from ties)")
