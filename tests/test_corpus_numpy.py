"""A corpus of NumPy and SciPy uses translated from other autodiff projects' test suites (HIPS autograd's
test_numpy.py, test_scipy.py and test_linalg.py: which functions, arguments, shapes and axes they exercise;
the code here is ours). Each case either traces, with its value equal to NumPy's and its gradient to central
differences, or is refused with a tracegrad error that names the function and the line here."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

import tracegrad as tg
from tracegrad.interpret import evaluate
from tracegrad.testing import numeric_grad

R = np.random.default_rng(7)
A3 = R.normal(size=(5, 6, 4))
C32 = R.normal(size=(3, 2))
C10 = R.normal(size=10)
MASK = R.normal(size=(4, 5)) > 0
SPD = (lambda a: a @ a.T + 4 * np.eye(4))(R.normal(size=(4, 4)))


def positive(*shape):
    return R.normal(size=shape) ** 2 + 0.1


def rows_of_three(x):
    assert len(x) == 3  # len() of a traced value is its static length
    return x


def slice_of_slice(x):
    y = x[2:6]
    return y[1:3]


def slices_fan_out(x):
    return x[::-1, 2:4, :] + x[::-1, 3:5, :]


def array_fan_out(x):
    a = np.array([[x, x * 1.0, x + 2.5], [x ** 2, x, x / 2.0]])
    return a + a


# name -> (function, arguments): values and gradients with respect to every float argument
CORPUS = {
    # dot products and outer products
    "dot matrix vector": (lambda x, y: np.dot(x, y), (R.normal(size=(10, 11)), R.normal(size=11))),
    "dot vector matrix": (lambda x, y: np.dot(x, y), (R.normal(size=10), R.normal(size=(10, 11)))),
    "dot with a float": (lambda x, y: np.dot(x, y) + np.dot(y, x), (R.normal(size=(4, 3)), 1.3)),
    "outer": (lambda x, y: np.outer(x, y), (R.normal(size=5), R.normal(size=4))),
    "dot of slices": (lambda x: np.dot(x[:2], x[2:]), (R.normal(size=4),)),
    # reductions
    "max axis of 3-d": (lambda x: np.max(x, axis=1), (R.normal(size=(3, 4, 5)),)),
    "max axis keepdims": (lambda x: np.max(x, axis=1, keepdims=True), (R.normal(size=(3, 4, 5)),)),
    "min axis of 3-d": (lambda x: np.min(x, axis=1), (R.normal(size=(3, 4, 5)),)),
    "sum over an axis tuple": (lambda x: np.sum(x, axis=(1, 2)), (R.normal(size=(4, 5, 3)),)),
    "builtin sum of a list": (lambda x, y: sum([x, y]), (R.normal(size=(3, 4)), R.normal(size=(3, 4)))),
    "mean keepdims": (lambda x: np.mean(x, axis=0, keepdims=True), (R.normal(size=(5, 4)),)),
    "var ddof": (lambda x: np.var(x, ddof=1) + np.var(x, axis=1, keepdims=True, ddof=2).sum(), (R.normal(size=(3, 4)),)),
    "std ddof": (lambda x: np.std(x, axis=None, keepdims=True, ddof=1), (R.normal(size=(1, 3)),)),
    "prod": (lambda x: np.prod(x), (positive(2, 3),)),
    "prod axis": (lambda x: np.prod(x, axis=0), (positive(2, 3),)),
    "prod keepdims": (lambda x: np.prod(x, axis=0, keepdims=True), (positive(2, 3),)),
    "prod of a vector": (lambda x: np.prod(x), (positive(7),)),
    "cumsum axis 0": (lambda x: np.cumsum(x, axis=0), (R.normal(size=(6, 5)),)),
    "cumsum axis 1": (lambda x: np.cumsum(x, axis=1), (R.normal(size=(6, 5)),)),
    "cumsum 1-d": (lambda x: np.cumsum(x), (R.normal(size=8),)),
    "cumsum no axis": (lambda x: np.cumsum(x), (R.normal(size=(4, 5)),)),
    # flips, rotations, shapes
    "flipud": (lambda x: np.flipud(x), (R.normal(size=(5, 4)),)),
    "fliplr": (lambda x: np.fliplr(x), (R.normal(size=(5, 4)),)),
    "rot90": (lambda x: np.rot90(x), (R.normal(size=(5, 4)),)),
    "rot90 twice": (lambda x: np.rot90(x, 2) + np.rot90(x, -1).T, (R.normal(size=(4, 4)),)),
    "reshape method": (lambda x: x.reshape((5 * 4, 6)), (A3,)),
    "reshape call": (lambda x: np.reshape(x, (5 * 4, 6)), (A3,)),
    "reshape without a tuple": (lambda x: x.reshape(5 * 4, 6), (A3,)),
    "ravel and flatten": (lambda x: x.ravel() + np.ravel(x) * x.flatten(), (A3,)),
    "squeeze": (lambda x: np.squeeze(x) + x.squeeze(), (R.normal(size=(5, 1, 4)),)),
    "expand_dims": (lambda x: np.expand_dims(x, 2), (R.normal(size=(5, 1, 4)),)),
    "transpose": (lambda x: x.T, (R.normal(size=(6, 6)),)),
    "len": (rows_of_three, (R.normal(size=(3, 2)),)),
    # indexing
    "index ints": (lambda x: x[3, 0, 1], (A3,)),
    "index slices": (lambda x: x[::-1, 2:4, :], (A3,)),
    "index a list": (lambda x: x[[0, 1, 2], :, :], (A3,)),
    "index a repeated list": (lambda x: np.sum(x[[0, 1, 0]]) + np.sum(x[[0, 0]]), (R.normal(size=3),)),
    "slice of a slice": (slice_of_slice, (R.normal(size=7),)),
    "slices fan out": (slices_fan_out, (A3,)),
    # joining and splitting
    "append to a list": (lambda a, b: np.append(a, b), (np.array([1.0, 2.0, 3.0]), 4.0)),
    "concatenate with constants": (lambda x: np.concatenate((A3[:4], x, A3[:4])), (R.normal(size=(4, 6, 4)),)),
    "concatenate axis by position": (lambda x: np.concatenate((A3, x, A3), 1), (R.normal(size=(5, 6, 4)),)),
    "split": (lambda x: np.split(x, 2)[0], (R.normal(size=10),)),
    "r_ of one": (lambda x: np.r_[x], (R.normal(size=(3, 2)),)),
    "r_ of two": (lambda x: np.r_[x, x], (R.normal(size=(3, 2)),)),
    "r_ with a constant": (lambda x: np.r_[x, C32, x], (R.normal(size=(3, 2)),)),
    "r_ with a range": (lambda x: np.r_[x, C10, 1:10], (R.normal(size=10),)),
    "c_": (lambda x: np.c_[x, C32, x], (R.normal(size=(3, 2)),)),
    # arrays from traced values
    "array of scalars": (lambda x: np.array([x, x * 1.0, x + 2.5]), (3.0,)),
    "2-d array of scalars": (lambda x: np.array([[x, x * 1.0, x + 2.5], [x ** 2, x, x / 2.0]]), (3.0,)),
    "array fan out": (array_fan_out, (3.0,)),
    "array of a scalar": (lambda x: np.array(x), (3.0,)),
    "array of arrays": (lambda x: np.array([x, x]), (R.normal(size=(3, 2)),)),
    "2-d array of arrays": (lambda x: np.array([[2 * x, x + 1], [x, x]]), (R.normal(size=(3, 2)),)),
    # diagonals, triangles, others
    "trace offset": (lambda x: np.trace(x, offset=4), (R.normal(size=(10, 11)),)),
    "trace negative offset": (lambda x: np.trace(x, offset=-3), (R.normal(size=(11, 10)),)),
    "trace of 4-d": (lambda x: np.trace(x, offset=2), (R.normal(size=(5, 6, 4, 3)),)),
    "diag": (lambda x: np.diag(x), (R.normal(size=(6, 6)),)),
    "diagonal last axes": (lambda x: np.diagonal(x, axis1=-1, axis2=-2), (R.normal(size=(3, 4, 4)),)),
    "roll": (lambda x: np.roll(x, 2, axis=1), (R.normal(size=(4, 5)),)),
    "triu": (lambda x: np.triu(x, k=2), (R.normal(size=(5, 5)),)),
    "tril": (lambda x: np.tril(x, k=2), (R.normal(size=(5, 5)),)),
    "clip": (lambda x: np.clip(x, a_min=0.1, a_max=1.1), (np.array([-0.4, 0.3, 0.8, 1.5, 2.0]),)),
    "where with a constant mask": (lambda x, y: np.where(MASK, x, y), (R.normal(size=(4, 5)), R.normal(size=(4, 5)))),
    "repeat axis 1": (lambda x: np.repeat(x, 2, axis=1), (R.normal(size=(5, 3, 4)),)),
    "repeat once": (lambda x: np.repeat(x, 1, axis=1), (R.normal(size=(5, 3, 4)),)),
    "repeat 1-d": (lambda x: np.repeat(x, 2, axis=0), (R.normal(size=5),)),
    "tensordot of scalars": (lambda x: np.tensordot(x * np.ones((2, 2)), x * np.ones((2, 2)), 2), (1.5,)),
    "einsum matrix vector": (lambda a, b: np.einsum("ij,j->i", a, b), (R.normal(size=(3, 4)), R.normal(size=4))),
    "einsum batch": (lambda a, b: np.einsum("bij,bjk->bik", a, b), (R.normal(size=(2, 3, 4)), R.normal(size=(2, 4, 5)))),
    "matmul of stacks": (lambda a, b: np.matmul(a, b), (R.normal(size=(2, 3, 4)), R.normal(size=(2, 4, 2)))),
    # np.linalg
    "inv": (lambda a: np.linalg.inv(a), (SPD,)),
    "inv of a product": (lambda a: np.linalg.inv(np.dot(a, a.T) + np.eye(4)), (R.normal(size=(4, 4)),)),
    "det": (lambda a: np.linalg.det(a), (SPD,)),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1], (SPD,)),
    "solve a vector": (lambda a, b: np.linalg.solve(a, b), (SPD, R.normal(size=4))),
    "solve a matrix": (lambda a, b: np.linalg.solve(a, b), (SPD, R.normal(size=(4, 3)))),
    "cholesky of a symmetrized matrix": (lambda a: np.linalg.cholesky(a @ a.T + 4 * np.eye(4)), (R.normal(size=(4, 4)),)),
    "norm": (lambda x: np.linalg.norm(x), (R.normal(size=(3, 4)),)),
    "norm axis": (lambda x: np.linalg.norm(x, axis=0), (R.normal(size=(3, 4)),)),
    "norm fro": (lambda x: np.linalg.norm(x, "fro"), (R.normal(size=(3, 4)),)),
    "norm ord inf": (lambda x: np.linalg.norm(x, np.inf), (np.array([0.5, -2.0, 1.0]),)),
    "eigh of a symmetric matrix": (lambda a: _eigh_sign_free(a + a.T), (R.normal(size=(4, 4)),)),
    "eigvalsh": (lambda a: np.linalg.eigvalsh(a), (SPD,)),
    "svd singular values": (lambda a: np.linalg.svd(a)[1], (SPD,)),
    "svd reduced": (lambda a: _svd_sign_free(a), (R.normal(size=(5, 3)),)),
    "qr": (lambda a: np.linalg.qr(a)[1], (R.normal(size=(5, 3)),)),
    "matrix 2-norm": (lambda a: np.linalg.norm(a, 2), (SPD,)),
    "a stack of inverses": (lambda a: np.linalg.inv(a + 3 * np.eye(3)), (R.normal(size=(2, 3, 3)),)),
    "a stack of determinants": (lambda a: np.linalg.det(a), (R.normal(size=(3, 2, 2)),)),
    "solve stacks": (lambda a, b: np.linalg.solve(a + 3 * np.eye(3), b), (R.normal(size=(2, 3, 3)), R.normal(size=(2, 3, 4)))),
    # scipy
    "norm.pdf": (lambda x, m, s: scipy.stats.norm.pdf(x, m, s), (R.normal(size=4), R.normal(size=4), positive(4))),
    "norm.cdf": (lambda x, m, s: scipy.stats.norm.cdf(x, loc=m, scale=s), (R.normal(size=4), R.normal(size=4), positive(4))),
    "norm.logpdf": (lambda x, m, s: scipy.stats.norm.logpdf(x, m, s), (R.normal(size=4), R.normal(size=4), positive(4))),
    "norm.logcdf": (lambda x: scipy.stats.norm.logcdf(x), (R.normal(size=4),)),
    "multivariate_normal.logpdf": (lambda x, m: scipy.stats.multivariate_normal.logpdf(x, m, SPD),
                                   (R.normal(size=4), R.normal(size=4))),
    "multivariate_normal.pdf": (lambda x, m: scipy.stats.multivariate_normal.pdf(x, m, SPD / 4),
                                (R.normal(size=4), R.normal(size=4))),
    "logsumexp": (lambda x: scipy.special.logsumexp(x), (R.normal(size=(4, 3)),)),
    "logsumexp axis": (lambda x: scipy.special.logsumexp(x, axis=1), (R.normal(size=(4, 3)),)),
    "logsumexp keepdims": (lambda x: scipy.special.logsumexp(x, axis=0, keepdims=True), (R.normal(size=(4, 3)),)),
    "logsumexp weights": (lambda x, b: scipy.special.logsumexp(x, b=b), (R.normal(size=4), positive(4))),
    "gammaln": (lambda x: scipy.special.gammaln(x), (positive(5),)),
    "digamma": (lambda x: scipy.special.digamma(x), (positive(5),)),
    "psi": (lambda x: scipy.special.psi(x), (positive(5),)),
    "polygamma": (lambda x: scipy.special.polygamma(2, x), (positive(5),)),
    "erf": (lambda x: scipy.special.erf(x), (R.normal(size=5),)),
    "erfc": (lambda x: scipy.special.erfc(x), (R.normal(size=5),)),
    "xlogy": (lambda x, y: scipy.special.xlogy(x, y), (R.normal(size=5), positive(5))),
    "xlog1py": (lambda x, y: scipy.special.xlog1py(x, y), (R.normal(size=5), positive(5))),
    "expit": (lambda x: scipy.special.expit(x), (R.normal(size=5),)),
    "logit": (lambda x: scipy.special.logit(x), (np.array([0.2, 0.5, 0.7]),)),
    "softmax": (lambda x: scipy.special.softmax(x, axis=1), (R.normal(size=(3, 4)),)),
    "log_softmax": (lambda x: scipy.special.log_softmax(x), (R.normal(size=5),)),
}


def _eigh_sign_free(a):
    w, v = np.linalg.eigh(a)
    return v @ np.diag(np.tanh(w)) @ v.T  # a matrix function: the same for either sign of each eigenvector


def _svd_sign_free(a):
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (u * np.sqrt(s)) @ vt


def _interpret(fun, args):
    graph = tg.make_graph(fun, *args)
    return evaluate(graph, *args, *fun.specialize(*args).captured())


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_value_and_gradient(name):
    fn, args = CORPUS[name]
    expected = np.asarray(fn(*args))
    (value,) = _interpret(tg.jit(fn), args)
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    weights = np.random.default_rng(0).normal(size=expected.shape)

    def loss(*xs):
        return np.sum(fn(*xs) * weights)
    argnums = tuple(i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f")
    value, *grads = _interpret(tg.value_and_grad(loss, argnums=argnums), args)
    assert len(grads) == len(argnums)
    for k, g in zip(argnums, grads):
        np.testing.assert_allclose(g, numeric_grad(loss, *args, argnums=k), rtol=1e-5, atol=1e-6)


def _int_of_traced(w):
    return w[:, :-1][np.int64(w[:, -1])].sum()


# name -> (function, argument, error class, what the message starts with)
REFUSED = {
    "index mixing ints, slices and lists": (lambda x: x[3, 2:, [1, 3]], A3, tg.UnsupportedError, "integer-array indexing"),
    "nan_to_num": (lambda x: np.sum(np.sin(np.nan_to_num(x))), R.normal(size=4), tg.UnsupportedError,
                   "np.nan_to_num is not supported"),
    "a traced value as an integer": (_int_of_traced, R.normal(size=(5, 10)), tg.TracingError, "conversion to a NumPy array"),
    "eig": (lambda a: np.sum(np.linalg.eig(a)[0]), SPD, tg.UnsupportedError, "np.linalg.eig is not supported"),
    "full svd of a non-square matrix": (lambda a: np.sum(np.linalg.svd(a[:3])[0]), SPD, tg.UnsupportedError,
                                        "np.linalg.svd with full_matrices=True of a non-square matrix"),
    "scipy.linalg.sqrtm": (lambda a: np.sum(__import__("scipy.linalg").linalg.sqrtm(a)), SPD, tg.UnsupportedError,
                           "scipy.linalg.sqrtm is not supported"),
    "scipy.special.gamma": (lambda x: np.sum(scipy.special.gamma(x)), positive(3), tg.UnsupportedError,
                            "scipy.special.gamma is not supported"),
    "fft": (lambda x: np.sum(np.fft.fft(x).real), R.normal(size=4), tg.UnsupportedError, "np.fft.fft is not supported"),
    "inverse of a vector": (lambda a: np.sum(np.linalg.inv(a)), R.normal(size=3), tg.ShapeError,
                            "np.linalg.inv of an array of shape (3,)"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_corpus_refusals_name_the_function_at_the_users_line(name):
    fn, arg, error, start = REFUSED[name]
    with pytest.raises(error) as info:
        tg.grad(fn)(arg)
    assert info.value.message.startswith(start) or start in info.value.message, info.value.message
    assert info.value.source is not None and info.value.source.filename == __file__
