"""Elementwise primitives. Each VJP is written with traced operations, in the notation of the code it generates.

An elementwise primitive's JVP, unless it declares one, comes from its VJP (``diagonal``). Non-differentiable
points follow one principle: the derivative used is the midpoint of the
subdifferential. So ties of maximum/minimum split the gradient evenly, abs'(0) = 0, sign' = 0.
"""
import math

import numpy as np

from ..core import Infix, Prefix, numpy_function, primitive
from ..errors import UnsupportedError, user_source
from ..ir import Aval
from . import shapes
from .shapes import unary_float, binary_float, comparison

ADD, MUL, UNARY, POW, CMP = 11, 12, 13, 14, 6


def elementwise(cls):
    """Declare an elementwise primitive: its inputs broadcast to its output, element by element.

    Inputs of another dtype are converted to the output's first (``cast_inputs``), so the compiled code
    computes in exactly the dtype NumPy's promotion gives (Numba's own promotion differs for ints with
    float32). A declaration can narrow that with its own ``cast_inputs``.
    """
    cls.elementwise = True
    if "cast_inputs" not in vars(cls):
        cls.cast_inputs = True
    if "jvp" not in vars(cls) and "vjp" in vars(cls):
        cls.jvp = diagonal(vars(cls)["vjp"])
    return primitive(cls)


def diagonal(vjp):
    """The JVP of an elementwise primitive, from its VJP. Its Jacobian with respect to each input is
    diagonal (after broadcasting), so it is its own transpose: the VJP rule given an input's tangent in place
    of ``g`` (rules return cotangents before ``sum_to``) gives that input's term of the output's tangent,
    ``tan_x * cos(x)``. The tangent is the sum of the terms."""
    vjp = getattr(vjp, "__func__", vjp)

    def jvp(tangents, out, *inputs, **params):
        terms = [vjp(t, out, *inputs, **params)[k] for k, t in enumerate(tangents) if t is not None]
        terms = [term for term in terms if term is not None]
        total = terms[0] if terms else None
        for term in terms[1:]:
            total = total + term
        return total

    jvp.__qualname__ = jvp.__name__ = f"diagonal({vjp.__qualname__})"
    return jvp


def _is(atom, value) -> bool:
    """True when ``atom`` is the literal ``value`` (used by simplification rules)."""
    return getattr(atom, "value", None) == value and type(getattr(atom, "value", None)) is not bool


# ---------------------------------------------------------------- arithmetic


@elementwise
class add:
    """x + y"""
    numpy = [np.add]
    shape = shapes.elementwise
    ref = np.add
    emit = Infix("+", ADD)

    def vjp(g, out, x, y):
        return [g, g]

    def simplify(x, y):
        return x if _is(y, 0) else y if _is(x, 0) else None


@elementwise
class sub:
    """x - y"""
    numpy = [np.subtract]
    shape = shapes.elementwise
    ref = np.subtract
    emit = Infix("-", ADD)

    def vjp(g, out, x, y):
        return [g, -g]

    def jvp(tangents, out, x, y):
        tan_x, tan_y = tangents
        return tan_x if tan_y is None else -tan_y if tan_x is None else tan_x - tan_y

    def simplify(x, y):
        return x if _is(y, 0) else None


@elementwise
class mul:
    """x * y"""
    numpy = [np.multiply]
    shape = shapes.elementwise
    ref = np.multiply
    emit = Infix("*", MUL)

    def vjp(g, out, x, y):
        return [g * y, g * x]

    def simplify(x, y):
        return x if _is(y, 1) else y if _is(x, 1) else None


@elementwise
class div:
    """x / y"""
    numpy = [np.divide]
    shape = binary_float
    ref = np.divide
    emit = Infix("/", MUL)

    def vjp(g, out, x, y):
        return [g / y, -g * out / y]

    def jvp(tangents, out, x, y):
        tan_x, tan_y = tangents
        if tan_y is None:
            return tan_x / y
        return (-(out * tan_y) if tan_x is None else tan_x - out * tan_y) / y

    def simplify(x, y):
        return x if _is(y, 1) else None


@elementwise
class neg:
    """-x"""
    numpy = [np.negative]
    shape = shapes.same
    ref = np.negative
    emit = Prefix("-", UNARY)

    def vjp(g, out, x):
        return [-g]


@elementwise
class pow:
    """x ** y"""
    numpy = [np.power]
    math = [math.pow]
    shape = shapes.elementwise  # int ** int stays int, as in NumPy
    ref = np.power
    emit = Infix("**", POW, "right")

    def vjp(g, out, x, y):
        # d/dy x**y = x**y log x, which is 0 at x = 0 (out is 0 there): log(1) keeps 0 * -inf out
        return [g * y * x ** (y - 1), g * out * log(where(x == 0, 1.0, x))]

    def simplify(x, y):
        return x if _is(y, 1) else None


# ---------------------------------------------------------------- transcendental functions


@elementwise
class exp:
    """e ** x"""
    numpy = [np.exp]
    math = [math.exp]
    shape = unary_float
    ref = np.exp
    emit = "np.exp({x})"

    def vjp(g, out, x):
        return [g * out]


@elementwise
class log:
    """natural logarithm"""
    numpy = [np.log]
    math = [math.log]
    shape = unary_float
    ref = np.log
    emit = "np.log({x})"
    domain = "positive"

    def vjp(g, out, x):
        return [g / x]


@elementwise
class log1p:
    """log(1 + x), accurate for small x"""
    numpy = [np.log1p]
    math = [math.log1p]
    shape = unary_float
    ref = np.log1p
    emit = "np.log1p({x})"
    domain = "positive"

    def vjp(g, out, x):
        return [g / (1 + x)]


@elementwise
class expm1:
    """exp(x) - 1, accurate for small x"""
    numpy = [np.expm1]
    math = [math.expm1]
    shape = unary_float
    ref = np.expm1
    emit = "np.expm1({x})"

    def vjp(g, out, x):
        return [g * (out + 1)]


@elementwise
class sqrt:
    """square root"""
    numpy = [np.sqrt]
    math = [math.sqrt]
    shape = unary_float
    ref = np.sqrt
    emit = "np.sqrt({x})"
    domain = "positive"

    def vjp(g, out, x):
        return [g / (2 * out)]


@elementwise
class sin:
    numpy = [np.sin]
    math = [math.sin]
    shape = unary_float
    ref = np.sin
    emit = "np.sin({x})"

    def vjp(g, out, x):
        return [g * cos(x)]


@elementwise
class cos:
    numpy = [np.cos]
    math = [math.cos]
    shape = unary_float
    ref = np.cos
    emit = "np.cos({x})"

    def vjp(g, out, x):
        return [-g * sin(x)]


@elementwise
class tan:
    numpy = [np.tan]
    math = [math.tan]
    shape = unary_float
    ref = np.tan
    emit = "np.tan({x})"
    domain = "small"

    def vjp(g, out, x):
        return [g * (1 + out * out)]


@elementwise
class sinh:
    numpy = [np.sinh]
    math = [math.sinh]
    shape = unary_float
    ref = np.sinh
    emit = "np.sinh({x})"

    def vjp(g, out, x):
        return [g * cosh(x)]


@elementwise
class cosh:
    numpy = [np.cosh]
    math = [math.cosh]
    shape = unary_float
    ref = np.cosh
    emit = "np.cosh({x})"

    def vjp(g, out, x):
        return [g * sinh(x)]


@elementwise
class tanh:
    numpy = [np.tanh]
    math = [math.tanh]
    shape = unary_float
    ref = np.tanh
    emit = "np.tanh({x})"

    def vjp(g, out, x):
        return [g * (1 - out * out)]


def _sigmoid_kernel(x):
    one = type(x)(1)  # float32 stays float32 in Numba
    return one / (one + np.exp(-x))


@elementwise
class sigmoid:
    """The logistic function 1 / (1 + exp(-x)); ``scipy.special.expit`` traces to it.

    A primitive rather than a composite because its derivative is short: (1 - y) * y.
    """
    numpy = ["expit"]  # scipy.special.expit is a ufunc: matched by name, so scipy is not imported
    shape = unary_float
    emit = "sigmoid({x})"
    kernel = _sigmoid_kernel

    def ref(x):
        x = np.asarray(x)
        with np.errstate(over="ignore"):
            return (1 / (1 + np.exp(-x))).astype(shapes.float_dtype(x.dtype))

    def vjp(g, out, x):
        return [g * (1 - out) * out]


# ---------------------------------------------------------------- kinks: the midpoint of the subdifferential


@elementwise
class abs:
    """|x|; abs'(0) = 0"""
    numpy = [np.absolute]
    math = [math.fabs]
    shape = shapes.same
    ref = np.absolute
    emit = "np.abs({x})"
    cheap = True

    def vjp(g, out, x):
        return [g * sign(x)]


@elementwise
class sign:
    """-1, 0 or 1; its derivative is 0 everywhere it exists, and we use 0 at 0 too"""
    numpy = [np.sign]
    shape = shapes.same
    ref = np.sign
    emit = "np.sign({x})"
    cheap = True
    nondiff = True


@elementwise
class maximum:
    """elementwise max(x, y); at a tie each input gets half the gradient (NaN propagates, as in NumPy)"""
    numpy = [np.maximum]
    shape = shapes.elementwise
    ref = np.maximum
    emit = "np.maximum({x}, {y})"
    cheap = True

    def vjp(g, out, x, y):
        tie = x == y
        half = g * 0.5
        return [where(tie, half, where(x > y, g, 0.0)), where(tie, half, where(x < y, g, 0.0))]


@elementwise
class minimum:
    """elementwise min(x, y); at a tie each input gets half the gradient"""
    numpy = [np.minimum]
    shape = shapes.elementwise
    ref = np.minimum
    emit = "np.minimum({x}, {y})"
    cheap = True

    def vjp(g, out, x, y):
        tie = x == y
        half = g * 0.5
        return [where(tie, half, where(x < y, g, 0.0)), where(tie, half, where(x > y, g, 0.0))]


def _where_kernel(c, x, y):
    return x if c else y


def _where_shape(c, x, y):
    out = shapes.elementwise(x, y)
    return type(out)(shapes.broadcast(c, x, y), out.dtype)


@elementwise
class where:
    """c ? x : y elementwise; the gradient goes to the branch taken, zero to the other"""
    shape = _where_shape
    emit = "where({c}, {x}, {y})"
    cheap = True
    kernel = _where_kernel
    cast_inputs = (1, 2)

    def ref(c, x, y):
        return np.where(c, x, y).astype(np.result_type(x, y))

    def vjp(g, out, c, x, y):
        return [None, where(c, g, 0.0), where(c, 0.0, g)]

    def jvp(tangents, out, c, x, y):
        _, tan_x, tan_y = tangents
        return where(c, 0.0 if tan_x is None else tan_x, 0.0 if tan_y is None else tan_y)


# ---------------------------------------------------------------- comparisons (no gradient)


def _comparison(name, op, ufunc, doc):
    cls = type(name, (), dict(__doc__=doc, numpy=[ufunc], shape=comparison, ref=ufunc,
                              emit=Infix(op, CMP, "none"), nondiff=True, cast_inputs=()))
    return elementwise(cls)


lt = _comparison("lt", "<", np.less, "x < y")
le = _comparison("le", "<=", np.less_equal, "x <= y")
gt = _comparison("gt", ">", np.greater, "x > y")
ge = _comparison("ge", ">=", np.greater_equal, "x >= y")
eq = _comparison("eq", "==", np.equal, "x == y")
ne = _comparison("ne", "!=", np.not_equal, "x != y")


@elementwise
class isfinite:
    """True where x is neither NaN nor infinite"""
    numpy = [np.isfinite]
    shape = staticmethod(lambda x: Aval(x.shape, np.bool_))
    ref = np.isfinite
    emit = "np.isfinite({x})"
    nondiff = True
    cast_inputs = ()


# ---------------------------------------------------------------- dtype conversion


def _convert_emit(args, out, dtype):
    spelled = f"np.{np.dtype(dtype).name}"
    return f"{spelled}({args[0]})" if out.ndim == 0 else f"{args[0]}.astype({spelled})"


@elementwise
class convert:
    """x.astype(dtype)"""
    cast_inputs = ()
    shape = staticmethod(lambda x, dtype: type(x)(x.shape, dtype))
    emit = _convert_emit

    def ref(x, dtype):
        return np.asarray(x).astype(dtype)

    def vjp(g, out, x, dtype):
        return [convert(g, dtype=x.dtype) if x.dtype.kind == "f" else None]

    def jvp(tangents, out, x, dtype):
        return convert(tangents[0], dtype=dtype) if np.dtype(dtype).kind == "f" else None


@numpy_function(np.where)
def np_where(condition, x=None, y=None):
    """np.where(c, x, y); a condition that is not boolean means ``c != 0``, as in NumPy."""
    if x is None or y is None:
        raise UnsupportedError("np.where with one argument (its result has a data-dependent shape)", user_source())
    dtype = condition.dtype if hasattr(condition, "dtype") else np.asarray(condition).dtype
    if dtype != np.bool_:
        condition = condition != 0
    return where(condition, x, y)


# ---------------------------------------------------------------- logic on boolean masks (no gradient)


def _logical(name, op, ufunc, doc):
    cls = type(name, (), dict(__doc__=doc, numpy=[ufunc], shape=_logical_shape, ref=ufunc,
                              emit=Infix(op, {"|": 7, "^": 8, "&": 9}[op]), nondiff=True, cast_inputs=()))
    return elementwise(cls)


def _logical_shape(x, y):
    if x.dtype != np.bool_ or y.dtype != np.bool_:
        raise UnsupportedError(f"&, | and ^ on traced values need boolean masks, got {x} and {y}", user_source(),
                               "combine comparisons: (x > 0) & (x < 2)")
    return comparison(x, y)


logical_and = _logical("logical_and", "&", np.logical_and, "x & y on boolean masks")
logical_or = _logical("logical_or", "|", np.logical_or, "x | y on boolean masks")
logical_xor = _logical("logical_xor", "^", np.logical_xor, "x ^ y on boolean masks")


@elementwise
class logical_not:
    """~x on a boolean mask"""
    numpy = [np.logical_not]
    shape = staticmethod(lambda x: x if x.dtype == np.bool_ else _logical_shape(x, x))
    ref = np.logical_not
    emit = "np.logical_not({x})"
    nondiff = True
    cast_inputs = ()
