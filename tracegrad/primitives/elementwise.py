"""Elementwise primitives. Each VJP is written with traced operations, in the notation of the code it generates.

An elementwise primitive's JVP, unless it declares one, comes from its VJP (``diagonal``). Non-differentiable
points follow one principle: the derivative used is the midpoint of the
subdifferential. So ties of maximum/minimum split the gradient evenly, abs'(0) = 0, sign' = 0. A choice
(maximum, minimum, where) selects rather than multiplies: the input not chosen gets exactly +0.0, even from
an inf or NaN cotangent (docs/DESIGN.md).
"""
import math

import numpy as np

from ..core import Conditional, Infix, Prefix, numpy_function, primitive
from ..registry import KinkAt, sign_of
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
    domain = "real"
    numpy = [np.add]
    shape = shapes.elementwise
    ref = np.add
    emit = Infix("+", ADD)
    into = "np.add({x}, {y}, {out})"

    def vjp(g, out, x, y):
        return [g, g]

    def simplify(x, y):
        return x if _is(y, 0) else y if _is(x, 0) else None


@elementwise
class sub:
    """x - y"""
    domain = "real"
    numpy = [np.subtract]
    shape = shapes.elementwise
    ref = np.subtract
    emit = Infix("-", ADD)
    into = "np.subtract({x}, {y}, {out})"

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
    domain = "real"
    numpy = [np.multiply]
    shape = shapes.elementwise
    ref = np.multiply
    emit = Infix("*", MUL)
    into = "np.multiply({x}, {y}, {out})"

    def vjp(g, out, x, y):
        return [g * y, g * x]

    def simplify(x, y):
        return x if _is(y, 1) else y if _is(x, 1) else None


@elementwise
class div:
    """x / y"""
    domain = ("real", "away_from_zero")
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
    domain = "real"
    numpy = [np.negative]
    shape = shapes.same
    ref = np.negative
    emit = Prefix("-", UNARY)

    def vjp(g, out, x):
        return [-g]

    def rewrite(node, producer):
        """-(-x) is x."""
        inner = producer(node.inputs[0])
        if inner is not None and inner.primitive is neg and node.out.aval == inner.inputs[0].aval:
            return inner.inputs[0]
        return None


@elementwise
class pow:
    """x ** y"""
    backward = "`g * y * x ** (y - 1)` (0 where `y == 0`, at `x = 0` too), `g * out * log(x)`"
    domain = "positive"
    numpy = [np.power]
    math = [math.pow]
    shape = shapes.elementwise  # int ** int stays int, as in NumPy
    ref = np.power
    emit = Infix("**", POW, "right")

    def vjp(g, out, x, y):
        # d/dx x**y = y x**(y-1), which is 0 wherever y = 0, x = 0 included (0 * 0**-1 would be nan, as JAX
        # notes): a constant exponent 0 gives no gradient, an array of exponents selects 0 where it is 0
        # (the exponent there replaced by 1, so that neither branch is nan, even differentiated again).
        # d/dy x**y = x**y log x, which is 0 at x = 0 (out is 0 there): log(1) keeps 0 * -inf out
        if isinstance(y, (np.generic, int, float)):  # a constant exponent
            dx = None if y == 0 else g * y * x ** (y - 1)
        else:
            zero = y == 0
            dx = g * where(zero, 0, y * x ** (where(zero, 1, y) - 1))
        return [dx, g * out * log(where(x == 0, 1.0, x))]

    def simplify(x, y):
        return x if _is(y, 1) else None


# ---------------------------------------------------------------- transcendental functions


@elementwise
class exp:
    """e ** x"""
    domain = "real"
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
    domain = "real"
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
    domain = "real"
    numpy = [np.sin]
    math = [math.sin]
    shape = unary_float
    ref = np.sin
    emit = "np.sin({x})"

    def vjp(g, out, x):
        return [g * cos(x)]


@elementwise
class cos:
    domain = "real"
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
    domain = "real"
    numpy = [np.sinh]
    math = [math.sinh]
    shape = unary_float
    ref = np.sinh
    emit = "np.sinh({x})"

    def vjp(g, out, x):
        return [g * cosh(x)]


@elementwise
class cosh:
    domain = "real"
    numpy = [np.cosh]
    math = [math.cosh]
    shape = unary_float
    ref = np.cosh
    emit = "np.cosh({x})"

    def vjp(g, out, x):
        return [g * sinh(x)]


@elementwise
class tanh:
    domain = "real"
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
    usage = "`tg.sigmoid`, `scipy.special.expit`"
    label = "σ"
    domain = "real"
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


# ---------------------------------------------------------------- inverse trigonometric and hyperbolic, other bases


@elementwise
class arcsin:
    """inverse sine, on [-1, 1]"""
    numpy = [np.arcsin]
    math = [math.asin]
    shape = unary_float
    ref = np.arcsin
    emit = "np.arcsin({x})"
    domain = "unit"

    def vjp(g, out, x):
        return [g / sqrt(1 - x * x)]


@elementwise
class arccos:
    """inverse cosine, on [-1, 1]"""
    numpy = [np.arccos]
    math = [math.acos]
    shape = unary_float
    ref = np.arccos
    emit = "np.arccos({x})"
    domain = "unit"

    def vjp(g, out, x):
        return [-g / sqrt(1 - x * x)]


@elementwise
class arctan:
    """inverse tangent"""
    numpy = [np.arctan]
    math = [math.atan]
    shape = unary_float
    ref = np.arctan
    emit = "np.arctan({x})"
    domain = "real"

    def vjp(g, out, x):
        return [g / (1 + x * x)]


@elementwise
class arcsinh:
    """inverse hyperbolic sine"""
    numpy = [np.arcsinh]
    math = [math.asinh]
    shape = unary_float
    ref = np.arcsinh
    emit = "np.arcsinh({x})"
    domain = "real"

    def vjp(g, out, x):
        return [g / sqrt(x * x + 1)]


@elementwise
class arccosh:
    """inverse hyperbolic cosine, on [1, inf)"""
    numpy = [np.arccosh]
    math = [math.acosh]
    shape = unary_float
    ref = np.arccosh
    emit = "np.arccosh({x})"
    domain = "above_one"

    def vjp(g, out, x):
        return [g / sqrt(x * x - 1)]


@elementwise
class arctanh:
    """inverse hyperbolic tangent, on (-1, 1)"""
    numpy = [np.arctanh]
    math = [math.atanh]
    shape = unary_float
    ref = np.arctanh
    emit = "np.arctanh({x})"
    domain = "unit"

    def vjp(g, out, x):
        return [g / (1 - x * x)]


LN2, LN10 = math.log(2.0), math.log(10.0)


@elementwise
class log2:
    """base-2 logarithm"""
    backward = "`g / (x * log(2))`"
    numpy = [np.log2]
    math = [math.log2]
    shape = unary_float
    ref = np.log2
    emit = "np.log2({x})"
    domain = "positive"

    def vjp(g, out, x):
        return [g / (x * LN2)]


@elementwise
class log10:
    """base-10 logarithm"""
    backward = "`g / (x * log(10))`"
    numpy = [np.log10]
    math = [math.log10]
    shape = unary_float
    ref = np.log10
    emit = "np.log10({x})"
    domain = "positive"

    def vjp(g, out, x):
        return [g / (x * LN10)]


@elementwise
class exp2:
    """2 ** x"""
    backward = "`g * out * log(2)`"
    numpy = [np.exp2]
    math = [math.exp2] if hasattr(math, "exp2") else []  # (Python 3.11+)
    shape = unary_float
    ref = np.exp2
    emit = "np.exp2({x})"
    domain = "real"

    def vjp(g, out, x):
        return [g * out * LN2]


@elementwise
class sinc:
    """sin(pi x) / (pi x), 1 at 0 (NumPy's normalised sinc)"""
    backward = "`g * (cos(pi * x) - out) / x` (0 at 0)"
    numpy = [np.sinc]  # a plain function, not a ufunc
    shape = unary_float
    ref = np.sinc
    emit = "np.sinc({x})"
    domain = "real"

    def vjp(g, out, x):
        # (cos(pi x) - sinc(x)) / x, which is 0 at 0 (the branch not taken divides by 1, not 0)
        zero = x == 0
        return [g * where(zero, 0.0, (cos(x * math.pi) - out) / where(zero, 1.0, x))]


def _erf_kernel(x):
    return type(x)(math.erf(x))  # float32 stays float32 in Numba


@elementwise
class erf:
    """the error function 2 / sqrt(pi) * integral of exp(-t**2) from 0 to x (``math.erf``)"""
    backward = "`g * 2 / sqrt(pi) * exp(-x * x)`"
    math = [math.erf]
    shape = unary_float
    emit = "erf({x})"
    kernel = _erf_kernel
    domain = "real"

    def ref(x):
        x = np.asarray(x)
        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(shapes.float_dtype(x.dtype))[()]

    def vjp(g, out, x):
        return [g * (2 / math.sqrt(math.pi)) * exp(-(x * x))]


# ---------------------------------------------------------------- two-argument functions


@elementwise
class arctan2:
    """the angle of the point (x, y): arctan2(y, x), in (-pi, pi]"""
    backward = "`g * x / (x * x + y * y)` to `y`, `-g * y / (x * x + y * y)` to `x`"
    numpy = [np.arctan2]
    math = [math.atan2]
    shape = binary_float
    ref = np.arctan2
    emit = "np.arctan2({y}, {x})"
    domain = ("real", "away_from_zero")  # (away from the origin, where it has no derivative)

    def vjp(g, out, y, x):
        r2 = x * x + y * y
        return [g * x / r2, -g * y / r2]


@elementwise
class hypot:
    """sqrt(x ** 2 + y ** 2), without overflow"""
    numpy = [np.hypot]
    math = [math.hypot]
    shape = binary_float
    ref = np.hypot
    emit = "np.hypot({x}, {y})"
    domain = ("away_from_zero", "real")

    def vjp(g, out, x, y):
        return [g * x / out, g * y / out]


@elementwise
class logaddexp:
    """log(exp(x) + exp(y)), computed without overflow"""
    numpy = [np.logaddexp]
    shape = binary_float
    ref = np.logaddexp
    emit = "np.logaddexp({x}, {y})"
    domain = "real"

    def vjp(g, out, x, y):  # exp(x - out) <= 1: no overflow either
        return [g * exp(x - out), g * exp(y - out)]


@elementwise
class logaddexp2:
    """log2(2 ** x + 2 ** y), computed without overflow"""
    numpy = [np.logaddexp2]
    shape = binary_float
    ref = np.logaddexp2
    emit = "np.logaddexp2({x}, {y})"
    domain = "real"

    def vjp(g, out, x, y):
        return [g * exp2(x - out), g * exp2(y - out)]


# ---------------------------------------------------------------- kinks: the midpoint of the subdifferential


@elementwise
class abs:
    """|x|; abs'(0) = 0"""
    usage = "`np.abs`, `abs`, `math.fabs`"
    backward = "`g * sign(x)` (so 0 at 0)"
    kink = KinkAt(lambda node: node.inputs[:1], sign_of, "abs(x) at x = 0")
    domain = "away_from_zero"
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
    kink = KinkAt(lambda node: node.inputs[:1], sign_of, "sign(x) at x = 0")
    numpy = [np.sign]
    shape = shapes.same
    ref = np.sign
    emit = "np.sign({x})"
    cheap = True
    nondiff = True


@elementwise
class maximum:
    """elementwise max(x, y); at a tie each input gets half the gradient (NaN propagates, as in NumPy)"""
    backward = "`g` to the larger input; at a tie half to each"
    kink = KinkAt(lambda node: node.inputs, sign_of, "maximum(x, y) at a tie x = y")
    domain = "real"
    numpy = [np.maximum]
    shape = shapes.elementwise
    ref = np.maximum
    emit = "np.maximum({x}, {y})"
    cheap = True

    def vjp(g, out, x, y):  # grad_x = grad_out if x > y else grad_out * 0.5 if x == y else 0.0
        tie = x == y
        half = g * 0.5
        return [where(x > y, g, where(tie, half, 0.0)), where(x < y, g, where(tie, half, 0.0))]


@elementwise
class minimum:
    """elementwise min(x, y); at a tie each input gets half the gradient"""
    backward = "`g` to the smaller input; at a tie half to each"
    kink = KinkAt(lambda node: node.inputs, sign_of, "minimum(x, y) at a tie x = y")
    domain = "real"
    numpy = [np.minimum]
    shape = shapes.elementwise
    ref = np.minimum
    emit = "np.minimum({x}, {y})"
    cheap = True

    def vjp(g, out, x, y):  # grad_x = grad_out if x < y else grad_out * 0.5 if x == y else 0.0
        tie = x == y
        half = g * 0.5
        return [where(x < y, g, where(tie, half, 0.0)), where(x > y, g, where(tie, half, 0.0))]


def _fmax_vjp(g, out, x, y):
    # the gradient goes to the input chosen (the one that is not NaN), half to each at a tie
    tie = x == y
    half = g * 0.5
    return [where(tie, half, where(out == x, g, 0.0)), where(tie, half, where(out == y, g, 0.0))]


@elementwise
class fmax:
    """elementwise max(x, y) ignoring NaN; at a tie each input gets half the gradient"""
    backward = "`g` to the larger input (the one that is not NaN); at a tie half to each"
    numpy = [np.fmax]
    shape = shapes.elementwise
    ref = np.fmax
    emit = "np.fmax({x}, {y})"
    cheap = True
    domain = "real"
    kink = KinkAt(lambda node: node.inputs, sign_of, "fmax(x, y) at a tie x = y")
    vjp = _fmax_vjp


@elementwise
class fmin:
    """elementwise min(x, y) ignoring NaN; at a tie each input gets half the gradient"""
    backward = "`g` to the smaller input (the one that is not NaN); at a tie half to each"
    numpy = [np.fmin]
    shape = shapes.elementwise
    ref = np.fmin
    emit = "np.fmin({x}, {y})"
    cheap = True
    domain = "real"
    kink = KinkAt(lambda node: node.inputs, sign_of, "fmin(x, y) at a tie x = y")
    vjp = _fmax_vjp  # (the same rule: to the input chosen)


@elementwise
class floor:
    """the largest integer <= x; its derivative is 0 wherever it exists (and we use 0 at the steps)"""
    backward = "none (0 between the steps)"
    numpy = [np.floor]
    math = [math.floor]  # (a float here, where math.floor gives an int)
    shape = shapes.same
    ref = np.floor
    emit = "np.floor({x})"
    nondiff = True
    domain = "real"
    kink = KinkAt(lambda node: node.inputs[:1], np.floor, "floor(x) at an integer x")


@elementwise
class ceil:
    """the smallest integer >= x; its derivative is 0 wherever it exists (and we use 0 at the steps)"""
    backward = "none (0 between the steps)"
    numpy = [np.ceil]
    math = [math.ceil]  # (a float here, where math.ceil gives an int)
    shape = shapes.same
    ref = np.ceil
    emit = "np.ceil({x})"
    nondiff = True
    domain = "real"
    kink = KinkAt(lambda node: node.inputs[:1], np.ceil, "ceil(x) at an integer x")


def _mod_steps(x, y):
    with np.errstate(all="ignore"):
        return np.floor(x / y)


@elementwise
class mod:
    """x % y, with the sign of y (np.mod, np.remainder): x - floor(x / y) * y; jumps where x / y is an integer"""
    usage = "`x % y`, `np.mod`, `np.remainder`"
    numpy = [np.remainder]
    shape = shapes.elementwise
    ref = np.remainder
    emit = Infix("%", MUL)
    domain = ("real", "away_from_zero")
    kink = KinkAt(lambda node: node.inputs, _mod_steps, "x % y where x / y is an integer")

    def vjp(g, out, x, y):
        return [g, -g * floor(x / y)]


def _where_shape(c, x, y):
    out = shapes.elementwise(x, y)
    return type(out)(shapes.broadcast(c, x, y), out.dtype)


@elementwise
class where:
    """c ? x : y elementwise; the gradient goes to the branch taken, zero to the other"""
    usage = "`np.where(c, x, y)`"
    backward = "`where(c, g, 0)`, `where(c, 0, g)`; none to `c`"
    domain = ("mask", "real", "real")
    shape = _where_shape
    emit = Conditional()  # x if c else y, in a loop over the elements
    cheap = True
    cast_inputs = (1, 2)

    def ref(c, x, y):
        out, dtype = np.where(c, x, y), np.result_type(x, y)
        return out if out.dtype == dtype else out.astype(dtype)

    def vjp(g, out, c, x, y):
        return [None, where(c, g, 0.0), where(c, 0.0, g)]

    def jvp(tangents, out, c, x, y):
        _, tan_x, tan_y = tangents
        return where(c, 0.0 if tan_x is None else tan_x, 0.0 if tan_y is None else tan_y)


# ---------------------------------------------------------------- comparisons (no gradient)


def _comparison(name, op, ufunc, doc):
    def text(node, users):  # where it decides a branch of np.where, the report says so
        if any(user.primitive is where and user.inputs[0] is node.out for user in users):
            return f"np.where condition x {op} y flips"
        return f"comparison x {op} y flips"

    cls = type(name, (), dict(__doc__=doc, numpy=[ufunc], shape=comparison, ref=ufunc,
                              emit=Infix(op, CMP, "none"), nondiff=True, cast_inputs=(),
                              kink=KinkAt(lambda node: node.inputs, sign_of, text)))
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
    usage = "`x.astype(dtype)`"
    backward = "`g` converted back to `x`'s dtype"
    label = staticmethod(lambda node: f"as {np.dtype(node.params['dtype']).name}")
    domain = ("real",)  # one input (dtype is a param)
    cast_inputs = ()
    shape = staticmethod(lambda x, dtype: type(x)(x.shape, dtype))
    emit = _convert_emit
    cheap = True  # one instruction per element: fused loops convert as they read, never storing a copy

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
    usage = "`~x`, `np.logical_not`"
    numpy = [np.logical_not]
    shape = staticmethod(lambda x: x if x.dtype == np.bool_ else _logical_shape(x, x))
    ref = np.logical_not
    emit = "np.logical_not({x})"
    nondiff = True
    cast_inputs = ()
