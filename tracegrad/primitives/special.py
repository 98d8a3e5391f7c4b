"""SciPy's special functions and the normal distributions: ``scipy.special.gammaln``, ``digamma``/``psi``,
``polygamma``, ``erf``, ``erfc``, ``ndtr``, ``xlogy``, ``xlog1py``, ``betaln``, ``logit``, ``logsumexp``,
``softmax``, ``log_softmax``; ``scipy.stats.norm`` (``logpdf``, ``pdf``, ``cdf``, ``logcdf``, ``sf``) and
``scipy.stats.multivariate_normal.logpdf``.

SciPy's special functions are ufuncs: they reach the traced values' ``__array_ufunc__`` and are matched by
name, as ``expit`` is, so SciPy is never imported here. Its Python functions and distribution objects are
swapped in by the tracer (``core.MODULE_FUNCTIONS``); given no traced value they call SciPy's own.
"""
import math

import numpy as np

from ..core import PRIMITIVES, NUMPY_FUNCTIONS, TracedArray, module_function, numpy_function, primitive
from ..errors import UnsupportedError, user_source
from .elementwise import elementwise, where
from .shapes import unary_float
from .structural import stop_gradient


def _gammaln_kernel(x):
    """log |Gamma(x)|, with SciPy's values where ``math.lgamma`` would raise: inf at the poles (0, -1, ...)
    and at +-inf, NaN at NaN."""
    if x != x:
        return x
    if math.isinf(x) or (x <= 0.0 and x == math.floor(x)):
        return type(x)(math.inf)
    return type(x)(math.lgamma(x))


def _polygamma_kernel(x, n):
    """psi^(n)(x), n >= 0: the recurrence psi^(n)(x) = psi^(n)(x + 1) - (-n)! ... up to x >= 10, then the
    asymptotic series (its next term is below 1e-13 there)."""
    if x != x or x == -math.inf:
        return type(x)(math.nan)
    if x == math.inf:  # digamma grows like log x; its derivatives go to 0
        return type(x)(math.inf if n == 0 else 0.0)
    if x <= 0.0 and x == math.floor(x):
        return type(x)(math.nan)
    z = float(x)
    acc = 0.0
    fact = 1.0
    for k in range(2, n + 1):
        fact *= k  # n!
    sign = -1.0 if n % 2 == 0 else 1.0  # (-1)^(n + 1)
    while z < 10.0:
        acc += (-1.0 / z) if n == 0 else sign * fact / z ** (n + 1)
        z += 1.0
    f = 1.0 / (z * z)
    if n == 0:
        series = math.log(z) - 0.5 / z - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (
            1.0 / 240 - f * (1.0 / 132 - f * 691.0 / 32760)))))
        return type(x)(acc + series)
    # (-1)^(n+1) [(n-1)!/z^n + n!/(2 z^(n+1)) + sum_k B_2k (2k+n-1)!/((2k)! z^(2k+n))]
    bernoulli = (1.0 / 6, -1.0 / 30, 1.0 / 42, -1.0 / 30, 5.0 / 66, -691.0 / 2730, 7.0 / 6)
    total = fact / n / z ** n + fact / (2.0 * z ** (n + 1))
    top = fact / n  # (2k + n - 1)! / (2k)!, from k = 0: (n - 1)!
    for k in range(1, 8):
        top *= (2 * k + n - 2) * (2 * k + n - 1) / ((2 * k - 1) * (2 * k))
        total += bernoulli[k - 1] * top / z ** (2 * k + n)
    return type(x)(acc + sign * total)


@elementwise
class gammaln:
    """log |Gamma(x)| (``scipy.special.gammaln``); its derivative is digamma"""
    domain = "positive"
    numpy = ["gammaln"]  # scipy.special's ufunc, matched by name
    shape = unary_float
    emit = "gammaln({x})"
    kernel = _gammaln_kernel

    def ref(x):
        x = np.asarray(x)
        return np.vectorize(lambda v: _gammaln_kernel(float(v)), otypes=[unary_float(_aval(x)).dtype])(x)[()]

    def vjp(g, out, x):
        return [g * polygamma(x, n=0)]


def _aval(x):
    from ..ir import Aval
    return Aval(np.shape(x), np.asarray(x).dtype)


@elementwise
class polygamma:
    """the n-th derivative of digamma (n = 0: digamma itself; ``scipy.special.digamma``, ``psi``, ``polygamma``)"""
    domain = "positive"
    shape = staticmethod(lambda x, n: unary_float(x))
    emit = staticmethod(lambda args, out, n: f"polygamma({args[0]}, {n})")
    kernel = _polygamma_kernel

    def ref(x, n):
        x = np.asarray(x)
        dtype = unary_float(_aval(x)).dtype
        return np.vectorize(lambda v: _polygamma_kernel(float(v), n), otypes=[dtype])(x)[()]

    def vjp(g, out, x, n):
        return [g * polygamma(x, n=n + 1)]


_SQRT2, _SQRT_2PI, _2_SQRTPI = math.sqrt(2.0), math.sqrt(2.0 * math.pi), 2.0 / math.sqrt(math.pi)


def _ndtr_kernel(x):
    return type(x)(0.5 * math.erfc(-x / 1.4142135623730951))


@elementwise
class ndtr:
    """the standard normal distribution function (``scipy.special.ndtr``, ``scipy.stats.norm.cdf``)"""
    domain = "real"
    numpy = ["ndtr"]
    shape = unary_float
    emit = "ndtr({x})"
    kernel = _ndtr_kernel

    def ref(x):
        x = np.asarray(x)
        return np.vectorize(lambda v: 0.5 * math.erfc(-v / _SQRT2), otypes=[unary_float(_aval(x)).dtype])(x)[()]

    def vjp(g, out, x):
        return [g * (np.exp(-0.5 * x * x) * (1.0 / _SQRT_2PI))]


# erf and erfc: declared here unless the elementwise module already declares them (then only routed)
if "erf" not in PRIMITIVES:
    @elementwise
    class erf:
        """the error function"""
        domain = "real"
        shape = unary_float
        emit = "erf({x})"
        kernel = lambda x: type(x)(math.erf(x))  # noqa: E731

        def ref(x):
            x = np.asarray(x)
            return np.vectorize(math.erf, otypes=[unary_float(_aval(x)).dtype])(x)[()]

        def vjp(g, out, x):
            return [g * (_2_SQRTPI * np.exp(-(x * x)))]

if "erfc" not in PRIMITIVES:
    @elementwise
    class erfc:
        """the complementary error function 1 - erf(x)"""
        domain = "real"
        shape = unary_float
        emit = "erfc({x})"
        kernel = lambda x: type(x)(math.erfc(x))  # noqa: E731

        def ref(x):
            x = np.asarray(x)
            return np.vectorize(math.erfc, otypes=[unary_float(_aval(x)).dtype])(x)[()]

        def vjp(g, out, x):
            return [g * (-_2_SQRTPI * np.exp(-(x * x)))]

NUMPY_FUNCTIONS.setdefault("erf", PRIMITIVES["erf"])  # scipy.special.erf, matched by name
NUMPY_FUNCTIONS.setdefault("erfc", PRIMITIVES["erfc"])


@numpy_function("digamma", "psi")
def digamma(x):
    return polygamma(x, n=0)


@module_function("scipy.special", "polygamma")
def sp_polygamma(n, x):
    if not isinstance(x, TracedArray) and not isinstance(n, TracedArray):
        import scipy.special
        return scipy.special.polygamma(n, x)
    if isinstance(n, TracedArray) or np.ndim(n) or int(n) != n or n < 0:
        raise UnsupportedError("scipy.special.polygamma(n, x) with n other than a non-negative Python int",
                               user_source())
    return polygamma(x, n=int(n))


@numpy_function("xlogy")
def xlogy(x, y):
    """x * log(y), 0 where x == 0 (the guarded log keeps a NaN out of the gradient)."""
    zero = x == 0
    return where(zero, 0.0, x * np.log(where(zero, 1.0, y)))


@numpy_function("xlog1py")
def xlog1py(x, y):
    zero = x == 0
    return where(zero, 0.0, x * np.log1p(where(zero, 0.0, y)))


@numpy_function("betaln")
def betaln(a, b):
    return gammaln(a) + gammaln(b) - gammaln(a + b)


@numpy_function("logit")
def logit(p):
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------- scipy.special's Python functions


def _scipy(module, name):
    import importlib
    return getattr(importlib.import_module(module), name)


def _traced(*values) -> bool:
    return any(isinstance(v, TracedArray) for v in values)


@module_function("scipy.special", "logsumexp")
def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """log(sum(b * exp(a))), shifted by the (gradient-free) maximum."""
    if not _traced(a, b):
        return _scipy("scipy.special", "logsumexp")(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    if return_sign:
        raise UnsupportedError("scipy.special.logsumexp with return_sign=True", user_source())
    a = a if isinstance(a, TracedArray) else np.asarray(a)
    m = stop_gradient(np.max(a, axis=axis, keepdims=True))
    e = np.exp(a - m)
    if b is not None:
        e = e * b
    out = np.log(np.sum(e, axis=axis, keepdims=True)) + m
    if keepdims:
        return out
    return np.sum(out, axis=axis) if axis is not None else np.reshape(out, ())


@module_function("scipy.special", "softmax")
def softmax(x, axis=None):
    if not _traced(x):
        return _scipy("scipy.special", "softmax")(x, axis=axis)
    e = np.exp(x - stop_gradient(np.max(x, axis=axis, keepdims=True)))
    return e / np.sum(e, axis=axis, keepdims=True)


@module_function("scipy.special", "log_softmax")
def log_softmax(x, axis=None):
    if not _traced(x):
        return _scipy("scipy.special", "log_softmax")(x, axis=axis)
    return x - logsumexp(x, axis=axis, keepdims=True)


# ---------------------------------------------------------------- scipy.stats


_LOG_2PI = math.log(2.0 * math.pi)


class _Norm:
    """``scipy.stats.norm`` in a traced function: ``logpdf``, ``pdf``, ``cdf``, ``logcdf``, ``sf``, ``logsf``
    of traced values, and frozen (``norm(loc, scale)``); anything else is SciPy's own."""

    _methods = ("logpdf", "pdf", "cdf", "logcdf", "sf", "logsf")

    def __init__(self, loc=0.0, scale=1.0, frozen=False):
        self._frozen, self._is_frozen = (loc, scale), frozen

    def _real(self):
        real = _scipy("scipy.stats", "norm")
        return real(*self._frozen) if self._is_frozen else real

    def __call__(self, loc=0.0, scale=1.0):
        return _Norm(loc, scale, True)

    def __getattr__(self, name):
        return getattr(self._real(), name)

    def _args(self, method, x, loc, scale):
        if self._is_frozen:
            loc, scale = self._frozen
        if not _traced(x, loc, scale):
            return None
        return (x - loc) / scale, scale

    def logpdf(self, x, loc=0.0, scale=1.0):
        args = self._args("logpdf", x, loc, scale)
        if args is None:
            return self._real().logpdf(x) if self._is_frozen else self._real().logpdf(x, loc, scale)
        z, scale = args
        return -0.5 * z * z - 0.5 * _LOG_2PI - np.log(scale)

    def pdf(self, x, loc=0.0, scale=1.0):
        args = self._args("pdf", x, loc, scale)
        if args is None:
            return self._real().pdf(x) if self._is_frozen else self._real().pdf(x, loc, scale)
        return np.exp(self.logpdf(x, loc, scale))

    def cdf(self, x, loc=0.0, scale=1.0):
        args = self._args("cdf", x, loc, scale)
        if args is None:
            return self._real().cdf(x) if self._is_frozen else self._real().cdf(x, loc, scale)
        return ndtr(args[0])

    def logcdf(self, x, loc=0.0, scale=1.0):
        args = self._args("logcdf", x, loc, scale)
        if args is None:
            return self._real().logcdf(x) if self._is_frozen else self._real().logcdf(x, loc, scale)
        return np.log(ndtr(args[0]))

    def sf(self, x, loc=0.0, scale=1.0):
        args = self._args("sf", x, loc, scale)
        if args is None:
            return self._real().sf(x) if self._is_frozen else self._real().sf(x, loc, scale)
        return ndtr(-args[0])

    def logsf(self, x, loc=0.0, scale=1.0):
        args = self._args("logsf", x, loc, scale)
        if args is None:
            return self._real().logsf(x) if self._is_frozen else self._real().logsf(x, loc, scale)
        return np.log(ndtr(-args[0]))


module_function("scipy.stats", "norm")(_Norm())


class _MultivariateNormal:
    """``scipy.stats.multivariate_normal`` in a traced function: ``logpdf`` and ``pdf`` through a Cholesky
    factor, frozen too; anything else is SciPy's own."""

    def __init__(self, mean=None, cov=1, frozen=False):
        self._frozen, self._is_frozen = (mean, cov), frozen

    def __call__(self, mean=None, cov=1, allow_singular=False, seed=None):
        if allow_singular:
            raise UnsupportedError("multivariate_normal with allow_singular=True", user_source())
        return _MultivariateNormal(mean, cov, True)

    def __getattr__(self, name):
        real = _scipy("scipy.stats", "multivariate_normal")
        return getattr(real(*self._frozen) if self._is_frozen else real, name)

    def logpdf(self, x, mean=None, cov=1, allow_singular=False):
        if self._is_frozen:
            mean, cov = self._frozen
        if not _traced(x, mean, cov):
            return _scipy("scipy.stats", "multivariate_normal").logpdf(x, mean, cov, allow_singular)
        if allow_singular:
            raise UnsupportedError("multivariate_normal.logpdf with allow_singular=True", user_source())
        x = x if isinstance(x, TracedArray) else np.asarray(x, np.float64)
        d = x.shape[-1] if x.ndim else 1
        centred = x if mean is None else x - mean
        if np.ndim(cov) < 2:  # a variance, or the diagonal of the covariance
            var = cov * np.ones(d) if np.ndim(cov) == 0 else cov
            quad = np.sum(centred * centred / var, axis=-1)
            logdet = np.sum(np.log(var)) if np.ndim(cov) == 1 else d * np.log(cov)
        else:
            chol = np.linalg.cholesky(cov)
            z = np.linalg.solve(chol, centred.T if x.ndim == 2 else centred)
            quad = np.sum(z * z, axis=0)
            logdet = 2.0 * np.sum(np.log(np.diagonal(chol)))
        return -0.5 * (d * _LOG_2PI + logdet + quad)

    def pdf(self, x, mean=None, cov=1, allow_singular=False):
        if self._is_frozen:
            mean, cov = self._frozen
        if not _traced(x, mean, cov):
            return _scipy("scipy.stats", "multivariate_normal").pdf(x, mean, cov, allow_singular)
        return np.exp(self.logpdf(x, mean, cov))


module_function("scipy.stats", "multivariate_normal")(_MultivariateNormal())
