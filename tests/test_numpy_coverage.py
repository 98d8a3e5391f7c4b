"""The NumPy and SciPy functions built from primitives (array manipulation, arrays built from traced values,
assignment, cumulative operations, einsum, linear algebra, SciPy's special functions), table-driven: each
case is checked against NumPy's own result, its gradient against central differences (first and second
order), in float32, and a sample compiled."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

import tracegrad as tg
from tracegrad.interpret import evaluate
from tracegrad.testing import numeric_grad

V, M, T3 = (4,), (3, 4), (2, 3, 4)
SQ = (3, 3)


def _spd(a):
    """A symmetric positive definite matrix from any square one (well conditioned)."""
    return a @ a.T + a.shape[0] * np.eye(a.shape[0])


# ---- functions with statements: assignment into arrays (functional, see docs/guide/tracing.md)


def assign_into_zeros(x):
    y = np.zeros(5)
    y[0] = x[0]
    y[3:] = x[1:] * 2
    y[-1] += x[0] * x[1]
    return y


def augmented_slices(x):
    y = np.ones((3, 4))
    y[1:] += x[:2]
    y[:, 0] *= x[2, 0]
    y[0, 1:] -= x[0, 1:] ** 2
    y[2] /= 2.0
    return y


def assign_into_copy(x):
    y = x.copy()
    y[0] = 0.0
    return y * x


def rows_in_a_loop(x):
    out = np.zeros((3, 4))
    out[0] = np.tanh(x[0])
    for i in range(1, 3):
        out[i] = np.tanh(x[i] + out[i - 1])
    return out


def mask_assignment(x):
    y = x * 1.0
    y[y < 0] = 0.0
    return y * x


def zeros_like_columns(x):
    y = np.zeros_like(x)
    y[..., 1] = x[..., 0]
    y[:, 2:] = np.exp(x[:, :2])
    return y


def view_written_through(x):
    y = np.zeros((2, 3))
    row = y[1]
    row[0] = x[0]
    row[1:] += x[1:3] ** 2
    y[0][2] = x[1]  # C style: a view's element
    return y


def in_place_alias(x):
    y = x * 1.0
    z = y
    z += x ** 2
    z *= 3.0
    return y


def assign_from_argument(x, v):
    x = x.copy()
    x[1] = v[0]
    x[:, 2] = v
    return x


def assign_at_argmax(x):
    y = x * 2.0
    k = np.argmax(x)  # a traced integer
    y[k] += 3 * x[0]
    y[k - 1] = x[1] ** 2
    return y


def rows_at_a_loop_index(x):
    def body(i, y):
        y[i, 1:] = x[i, :3] * 2
        y[i] += x[i]
        y[-1 - i, 0] = np.sin(x[i, 0])
        return y
    return tg.fori_loop(0, 3, body, np.ones((3, 4)))


def _sign_free_eigh(a):
    """What eigh gives that does not depend on the signs LAPACK picks for the eigenvectors."""
    w, v = np.linalg.eigh(a)
    return v * v * w[..., None, :] + v[..., :, :1] * v[..., :1, :]


def _sign_free_svd(a, full_matrices=True):
    u, s, vt = np.linalg.svd(a, full_matrices=full_matrices)
    return (u[..., :, :1] * vt[..., :1, :] * s[..., :1, None] + np.sum(u ** 2 * s[..., None, :], axis=-1, keepdims=True)
            + np.sum(vt ** 2 * s[..., :, None] ** 2, axis=-2, keepdims=True))


def columns_at_a_loop_index(x):
    def body(i, y):
        y[:, i] = np.tanh(x[:, i] + y[:, i - 1])  # a traced index after full slices: that axis first
        y[0, i] += x[1, i] ** 2  # after an integer: the row y[0]
        y[i - 1, i] = y[i - 1, i - 1] * 2.0  # two traced indices
        return y
    return tg.fori_loop(1, 4, body, x * 1.0)


def _sorted_copy(x):
    y = x.copy()
    y.sort()
    return y * np.arange(1.0, 5.0) + x  # the copy is sorted, x is not


# name -> (function, argument shapes, domain); the function returns an array (or a number)
CASES = {
    # ---- array manipulation
    "repeat": (lambda x: np.repeat(x, 2), (M,), "real"),
    "repeat axis": (lambda x: np.repeat(x, 3, axis=1), (M,), "real"),
    "repeat counts": (lambda x: np.repeat(x, [1, 0, 2], axis=0), (M,), "real"),
    "tile": (lambda x: np.tile(x, (2, 1, 2)), (M,), "real"),
    "tile int": (lambda x: np.tile(x, 3), (V,), "real"),
    "hstack": (lambda x, y: np.hstack([x, y, x]), (V, (2,)), "real"),
    "hstack 2-d": (lambda x, y: np.hstack((x, y)), (M, (3, 2)), "real"),
    "vstack": (lambda x, y: np.vstack([x, y]), (V, M), "real"),
    "column_stack": (lambda x, y: np.column_stack([x, y]), ((3,), M), "real"),
    "dstack": (lambda x, y: np.dstack([x, y]), (M, M), "real"),
    "split": (lambda x: np.split(x, 2, axis=1)[1] * np.split(x, [1], axis=0)[0][:, :2], (M,), "real"),
    "array_split": (lambda x: np.concatenate([p * (i + 1) for i, p in enumerate(np.array_split(x, 3))]), ((7,),), "real"),
    "hsplit vsplit": (lambda x: np.hsplit(x, 2)[0][1:] + np.vsplit(x, [1])[1][:, 2:], (M,), "real"),
    "pad constant": (lambda x: np.pad(x, ((1, 0), (2, 1)), constant_values=0.5), (M,), "real"),
    "pad int": (lambda x: np.pad(x, 2), (V,), "real"),
    "pad edge": (lambda x: np.pad(x, 2, mode="edge"), (M,), "real"),
    "pad reflect": (lambda x: np.pad(x, (1, 2), mode="reflect"), (V,), "real"),
    "pad wrap": (lambda x: np.pad(x, ((0, 1), (2, 0)), mode="wrap"), (M,), "real"),
    "roll": (lambda x: np.roll(x, 1), (M,), "real"),
    "roll axis": (lambda x: np.roll(x, -1, axis=1), (M,), "real"),
    "roll axes": (lambda x: np.roll(x, (1, 2), axis=(0, 1)), (M,), "real"),
    "flip": (lambda x: np.flip(x) * x, (M,), "real"),
    "flip axis": (lambda x: np.flip(x, axis=1), (T3,), "real"),
    "fliplr flipud": (lambda x: np.fliplr(x) + np.flipud(x) * 2, (SQ,), "real"),
    "swapaxes": (lambda x: np.swapaxes(x, 0, 2), (T3,), "real"),
    "moveaxis": (lambda x: np.moveaxis(x, 0, -1), (T3,), "real"),
    "moveaxis several": (lambda x: np.moveaxis(x, [0, 1], [2, 0]), (T3,), "real"),
    "rollaxis": (lambda x: np.rollaxis(x, 2), (T3,), "real"),
    "atleast_1d": (lambda x: np.atleast_1d(x) * 2, ((),), "real"),
    "atleast_2d": (lambda x: np.atleast_2d(x).T, (V,), "real"),
    "atleast_3d": (lambda x: np.atleast_3d(x), (M,), "real"),
    "diag of vector": (lambda x: np.diag(x), (V,), "real"),
    "diag offset": (lambda x: np.diag(x, 1) + np.diag(x, -1) * 2, (V,), "real"),
    "diag of matrix": (lambda x: np.diag(x), (M,), "real"),
    "diagonal offset": (lambda x: np.diagonal(x, -1) + np.diagonal(x, 1)[:2], (M,), "real"),
    "diagonal 3-d": (lambda x: np.diagonal(x, 0, 1, 2), (T3,), "real"),
    "trace": (lambda x: np.trace(x) * x, (SQ,), "real"),
    "trace offset": (lambda x: np.trace(x, 1), (M,), "real"),
    "diagflat": (lambda x: np.diagflat(x), ((2, 2),), "real"),
    "tril": (lambda x: np.tril(x), (M,), "real"),
    "triu": (lambda x: np.triu(x, 1), (SQ,), "real"),
    "tril 3-d": (lambda x: np.tril(x, -1), (T3,), "real"),
    "append": (lambda x, y: np.append(x, y), (M, V), "real"),
    "append axis": (lambda x, y: np.append(x, y, axis=0), (M, (1, 4)), "real"),
    "rot90": (lambda x: np.rot90(x) + np.rot90(x, 3).T[::-1] * 0.5, (SQ,), "real"),
    "gradient": (lambda x: np.gradient(x) * np.gradient(x, 0.5)[0], (V,), "real"),
    "gradient 2-d": (lambda x: np.gradient(x)[0] + np.gradient(x, axis=1) * 2, (M,), "real"),
    # ---- arrays built from traced values, assignment into arrays
    "np.array of scalars": (lambda x: np.array([x[0], x[1] * x[2], 2.0]), (V,), "real"),
    "np.array nested": (lambda x: np.array([[x[0], x[1]], [x[2], x[0] * x[1]]]), (V,), "real"),
    "np.array of arrays": (lambda x, y: np.array([x, y * 2]) + np.array(x), (V, V), "real"),
    "np.array dtype": (lambda x: np.array([x[0], x[1]], dtype=np.float64) * 2, (V,), "real"),
    "np.asarray of list": (lambda x, y: np.asarray([x, y]).T @ y[:2], (V, V), "real"),
    "np.mean of list": (lambda x, y: np.mean([x, y], axis=0) + np.sum([x[0], y[1]]), (V, V), "real"),
    "ufunc of list": (lambda x: np.exp([x[0], x[1]]) + np.maximum([x[2], x[3]], 0.0), (V,), "away"),
    "np.r_": (lambda x: np.r_[x, 1.0, x[:2] ** 2], (V,), "real"),
    "np.r_ range": (lambda x: np.r_[0:2, x[:2]] * x, (V,), "real"),
    "np.c_": (lambda x: np.c_[x, x * 2], (V,), "real"),
    "assign into zeros": (assign_into_zeros, ((3,),), "real"),
    "augmented slices": (augmented_slices, (M,), "real"),
    "assign into copy": (assign_into_copy, (M,), "real"),
    "rows in a loop": (rows_in_a_loop, (M,), "real"),
    "mask assignment": (mask_assignment, (M,), "away"),
    "zeros_like columns": (zeros_like_columns, (M,), "real"),
    "view written through": (view_written_through, (V,), "real"),
    "in-place alias": (in_place_alias, (M,), "real"),
    "assign from argument": (assign_from_argument, (M, (3,)), "real"),
    "assign at argmax": (assign_at_argmax, (V,), "real"),
    "rows at a loop index": (rows_at_a_loop_index, (M,), "real"),
    "columns at a loop index": (columns_at_a_loop_index, (M,), "real"),
    # ---- cumulative operations, sorting, reductions over any axes, methods
    "prod": (lambda x: np.prod(x), (V,), "real"),
    "prod axis": (lambda x: np.prod(x, axis=1), (T3,), "real"),
    "prod axes keepdims": (lambda x: np.prod(x, axis=(0, 2), keepdims=True), (T3,), "real"),
    "prod with a zero": (lambda x: np.prod(x * np.array([1.0, 0.0, 1.0, 1.0])), (V,), "real"),
    "cumsum": (lambda x: np.cumsum(x), (M,), "real"),
    "cumsum axis": (lambda x: np.cumsum(x, axis=1), (T3,), "real"),
    "cumsum axis 0": (lambda x: x.cumsum(axis=0), (M,), "real"),
    "cumprod": (lambda x: np.cumprod(x), (V,), "real"),
    "cumprod axis": (lambda x: np.cumprod(x, axis=0), (M,), "real"),
    "cumprod with a zero": (lambda x: np.cumprod(x * np.array([1.0, 0.0, 1.0, 1.0])), (V,), "real"),
    "sort": (lambda x: np.sort(x) * np.arange(1.0, 5.0), (V,), "real"),
    "sort axis 0": (lambda x: np.sort(x, axis=0), (M,), "real"),
    "sort 3-d": (lambda x: np.sort(x, axis=1), (T3,), "real"),
    "sort method": (lambda x: _sorted_copy(x), (V,), "real"),
    "diff": (lambda x: np.diff(x), (V,), "real"),
    "diff n axis": (lambda x: np.diff(x, n=2, axis=0), ((4, 3),), "real"),
    "diff prepend": (lambda x: np.diff(x, prepend=0.0, append=x[-1:] * 2), (V,), "real"),
    "max 3-d axis": (lambda x: np.max(x, axis=1), (T3,), "real"),
    "min 3-d axes": (lambda x: np.min(x, axis=(0, 2), keepdims=True), (T3,), "real"),
    "max 4-d": (lambda x: x.max(axis=(1, 3)), ((2, 2, 3, 2),), "real"),
    "ptp": (lambda x: np.ptp(x, axis=0), (M,), "real"),
    "argmax gather": (lambda x: x[np.argmax(x, axis=0), np.arange(4)] + x[np.argmin(x[:, 0])], (M,), "real"),
    "argsort gather": (lambda x: x[np.argsort(x)] * np.arange(4.0), (V,), "real"),
    "any all": (lambda x: np.where(np.any(x > 0, axis=1), 1.0, 2.0) * np.where(np.all(x > -3), x[:, 0], 0.0), (M,), "real"),
    "var method": (lambda x: x.var() + x.var(axis=0, ddof=1) + x.std(axis=1).sum(), (M,), "real"),
    "squeeze item": (lambda x: x[:1].squeeze() * x[1:2, 2:3].item() + x[0, 0].item(), (M,), "real"),
    "methods": (lambda x: x.prod(axis=0) + x.cumsum(axis=1)[:, -1].sum() + x.flatten()[:4] + x.ravel()[4:8]
                + x.clip(-0.5, 0.5)[0] + x.cumprod(axis=1)[1] + x.swapaxes(0, 1)[:, 2] + x.trace()
                + x.diagonal()[0] + x.repeat(2)[::3][:4] + x.transpose()[0, 1] + x.transpose(1, 0)[1:, 0].sum(),
                (M,), "away"),
    # ---- products of any rank
    "matmul 3-d": (lambda a, b: a @ b, ((2, 3, 4), (2, 4, 2)), "real"),
    "matmul broadcast": (lambda a, b: np.matmul(a, b), ((2, 1, 3, 4), (3, 4, 2)), "real"),
    "matmul stack by matrix": (lambda a, b: a @ b, (T3, (4, 2)), "real"),
    "matmul matrix by stack": (lambda a, b: a @ b, ((2, 3), T3), "real"),
    "matmul vector by stack": (lambda a, b: a @ b, ((3,), T3), "real"),
    "matmul stack by vector": (lambda a, b: np.matmul(a, b), (T3, V), "real"),
    "einsum matmul": (lambda a, b: np.einsum("ij,jk->ik", a, b), (M, (4, 2)), "real"),
    "einsum batched": (lambda a, b: np.einsum("bij,bjk->bik", a, b), (T3, (2, 4, 3)), "real"),
    "einsum trace": (lambda a: np.einsum("ii", a), (SQ,), "real"),
    "einsum diagonal": (lambda a: np.einsum("ii->i", a), (SQ,), "real"),
    "einsum transpose": (lambda a: np.einsum("ijk->kij", a), (T3,), "real"),
    "einsum sum": (lambda a: np.einsum("ij->j", a) + np.einsum("ij->", a), (M,), "real"),
    "einsum outer": (lambda a, b: np.einsum("i,j->ij", a, b), (V, (3,)), "real"),
    "einsum dot": (lambda a, b: np.einsum("i,i", a, b), (V, V), "real"),
    "einsum implicit": (lambda a, b: np.einsum("ij,jk", a, b), (M, (4, 2)), "real"),
    "einsum ellipsis": (lambda a, b: np.einsum("...ij,...jk->...ik", a, b), (T3, (2, 4, 2)), "real"),
    "einsum three": (lambda a, b, c: np.einsum("ij,jk,k->i", a, b, c), (M, (4, 2), (2,)), "real"),
    "einsum bilinear": (lambda x, A, y: np.einsum("ni,ij,nj->n", x, A, y), ((5, 3), SQ, (5, 3)), "real"),
    "einsum elementwise": (lambda a, b: np.einsum("ij,ij->i", a, b), (M, M), "real"),
    "tensordot": (lambda a, b: np.tensordot(a, b), (T3, (3, 4, 2)), "real"),
    "tensordot axes": (lambda a, b: np.tensordot(a, b, axes=([0, 2], [1, 0])), (T3, (4, 2)), "real"),
    "tensordot 0": (lambda a, b: np.tensordot(a, b, axes=0), (V, (2,)), "real"),
    "inner": (lambda a, b: np.inner(a, b), (M, (2, 4)), "real"),
    "inner vectors": (lambda a, b: np.inner(a, b), (V, V), "real"),
    "outer": (lambda a, b: np.outer(a, b), (M, V), "real"),
    "kron": (lambda a, b: np.kron(a, b), ((2, 2), M), "real"),
    "kron vectors": (lambda a, b: np.kron(a, b), (V, (2,)), "real"),
    "cross": (lambda a, b: np.cross(a, b), ((4, 3), (3,)), "real"),
    "vdot": (lambda a, b: np.vdot(a, b), (M, M), "real"),
    "dot 3-d": (lambda a, b: np.dot(a, b), (T3, (4, 2)), "real"),
    # ---- np.linalg
    "inv": (lambda a: np.linalg.inv(a), (SQ,), "spd"),
    "det": (lambda a: np.linalg.det(a), (SQ,), "spd"),
    "det general": (lambda a: np.linalg.det(a + 3 * np.eye(3)), (SQ,), "real"),
    "slogdet": (lambda a: np.linalg.slogdet(a)[1] * np.linalg.slogdet(a)[0], (SQ,), "spd"),
    "slogdet negative": (lambda a: np.linalg.slogdet(-a)[1] + np.linalg.slogdet(-a)[0], (SQ,), "spd"),
    "solve vector": (lambda a, b: np.linalg.solve(a, b), (SQ, (3,)), "spd"),
    "solve matrix": (lambda a, b: np.linalg.solve(a, b), (SQ, (3, 2)), "spd"),
    "cholesky": (lambda a: np.linalg.cholesky(a), (SQ,), "spd"),
    "cholesky symmetric": (lambda a: np.linalg.cholesky(a @ a.T + 3 * np.eye(3)), (SQ,), "real"),
    "eigh": (lambda a: _sign_free_eigh(a + a.T + np.diag([0.0, 2.0, 4.0])), (SQ,), "real"),
    "eigvalsh upper": (lambda a: np.linalg.eigvalsh(a + np.diag([0.0, 2.0, 4.0]), UPLO="U"), (SQ,), "real"),
    "eigh result fields": (lambda a: np.linalg.eigh(_spd(a)).eigenvalues, (SQ,), "real"),
    "qr": (lambda a: np.linalg.qr(a).Q @ np.diag(np.diag(np.linalg.qr(a).R)), (M[::-1],), "real"),
    "qr r wide": (lambda a: np.linalg.qr(a, mode="r"), (M,), "real"),
    "qr complete wide": (lambda a: np.linalg.qr(a, mode="complete")[0], (M,), "real"),
    "svd": (lambda a: _sign_free_svd(a, full_matrices=False), (M,), "real"),
    "svd square full": (lambda a: _sign_free_svd(a), (SQ,), "real"),
    "svd values": (lambda a: np.linalg.svd(a, compute_uv=False) + np.linalg.svdvals(a * 2.0), (M,), "real"),
    "pinv": (lambda a: np.linalg.pinv(a), (M,), "real"),
    "pinv of a stack": (lambda a: np.linalg.pinv(a, rcond=1e-10), ((2, 4, 3),), "real"),
    "norm 2 nuc": (lambda x: np.linalg.norm(x, 2) + np.linalg.norm(x, "nuc") + np.linalg.norm(x, -2), (M,), "real"),
    "norm 2 axes keepdims": (lambda x: np.linalg.norm(x, 2, axis=(2, 0), keepdims=True), (T3,), "real"),
    # ---- np.linalg on stacks of matrices (the leading axes are a batch)
    "inv stack": (lambda a: np.linalg.inv(a + 3 * np.eye(3)), ((2, 3, 3),), "real"),
    "det stack": (lambda a: np.linalg.det(a + 3 * np.eye(3)), ((2, 2, 3, 3),), "real"),
    "slogdet stack": (lambda a: np.linalg.slogdet(a - 3 * np.eye(3))[1] * np.linalg.slogdet(a - 3 * np.eye(3))[0],
                      ((2, 3, 3),), "real"),
    "solve stack vector": (lambda a, b: np.linalg.solve(a + 3 * np.eye(3), b), ((2, 3, 3), (3,)), "real"),
    "solve stacks broadcast": (lambda a, b: np.linalg.solve(a + 3 * np.eye(3), b), ((3, 3), (2, 3, 2)), "real"),
    "cholesky stack": (lambda a: np.linalg.cholesky(a @ np.swapaxes(a, -1, -2) + 3 * np.eye(3)), ((2, 3, 3),), "real"),
    "eigh stack": (lambda a: _sign_free_eigh(a + np.diag([0.0, 2.0, 4.0])), ((2, 3, 3),), "real"),
    "qr stack": (lambda a: np.linalg.qr(a)[0] * np.linalg.qr(a)[1][..., :1, :], ((2, 3, 3),), "real"),
    "svd stack": (lambda a: _sign_free_svd(a, full_matrices=False), ((2, 4, 3),), "real"),
    "matrix_power stack": (lambda a: np.linalg.matrix_power(a, 2) + np.linalg.matrix_power(a, 0), ((2, 3, 3),), "real"),
    "norm": (lambda x: np.linalg.norm(x), (M,), "real"),
    "norm vector ords": (lambda x: np.linalg.norm(x, 1) + np.linalg.norm(x, np.inf) + np.linalg.norm(x, 3), (V,), "away"),
    "norm axis": (lambda x: np.linalg.norm(x, axis=1, keepdims=True), (M,), "real"),
    "norm matrix ords": (lambda x: np.linalg.norm(x, "fro") + np.linalg.norm(x, 1) + np.linalg.norm(x, -np.inf), (M,), "away"),
    "multi_dot": (lambda a, b, c: np.linalg.multi_dot([a, b, c]), (M, (4, 2), (2,)), "real"),
    "matrix_power": (lambda a: np.linalg.matrix_power(a, 3) + np.linalg.matrix_power(a, -1), (SQ,), "spd"),
    # ---- SciPy
    "gammaln": (lambda x: scipy.special.gammaln(x), (M,), "positive"),
    "gammaln negative": (lambda x: scipy.special.gammaln(-x - 0.5 * (x > 1.0)), (V,), "unit"),
    "digamma": (lambda x: scipy.special.digamma(x) + scipy.special.psi(x * 3.0), (M,), "positive"),
    "polygamma": (lambda x: scipy.special.polygamma(1, x) + scipy.special.polygamma(3, x + 2.0), (M,), "positive"),
    "erf erfc": (lambda x: scipy.special.erf(x) * scipy.special.erfc(x * 0.5), (M,), "real"),
    "ndtr": (lambda x: scipy.special.ndtr(x), (M,), "real"),
    "xlogy": (lambda x, y: scipy.special.xlogy(x, y) + scipy.special.xlogy(x * 0.0, y), (V, V), "positive"),
    "xlog1py": (lambda x, y: scipy.special.xlog1py(x, y), (V, V), "positive"),
    "betaln": (lambda a, b: scipy.special.betaln(a, b), (V, V), "positive"),
    "logit": (lambda p: scipy.special.logit(p), (V,), "probability"),
    "logsumexp": (lambda x: scipy.special.logsumexp(x), (M,), "real"),
    "logsumexp axis b": (lambda x, b: scipy.special.logsumexp(x, axis=1, b=b), (M, (4,)), "positive"),
    "logsumexp keepdims": (lambda x: scipy.special.logsumexp(x, axis=0, keepdims=True), (M,), "real"),
    "softmax": (lambda x: scipy.special.softmax(x, axis=1), (M,), "real"),
    "softmax all": (lambda x: scipy.special.softmax(x), (M,), "real"),
    "log_softmax": (lambda x: scipy.special.log_softmax(x, axis=-1), (M,), "real"),
    "norm.logpdf": (lambda x, m, s: scipy.stats.norm.logpdf(x, m, s), (V, V, V), "positive"),
    "norm.pdf cdf": (lambda x: scipy.stats.norm.pdf(x) + scipy.stats.norm.cdf(x, loc=0.5, scale=2.0), (V,), "real"),
    "norm.logcdf sf": (lambda x: scipy.stats.norm.logcdf(x) + scipy.stats.norm.sf(x) + scipy.stats.norm.logsf(x), (V,), "real"),
    "norm frozen": (lambda x, m: scipy.stats.norm(m, 2.0).logpdf(x), (V, ()), "real"),
    "multivariate_normal": (lambda x, m, c: scipy.stats.multivariate_normal.logpdf(x, m, c @ c.T + 3 * np.eye(3)),
                            ((3,), (3,), SQ), "real"),
    "multivariate_normal rows": (lambda x, m, c: scipy.stats.multivariate_normal.logpdf(x, m, c @ c.T + np.eye(3)),
                                 ((5, 3), (3,), SQ), "real"),
    "multivariate_normal diagonal": (lambda x, v: scipy.stats.multivariate_normal.logpdf(x, np.zeros(3), v),
                                     ((4, 3), (3,)), "positive"),
    "multivariate_normal frozen": (lambda x: scipy.stats.multivariate_normal(np.zeros(3), 2.0).pdf(x), ((2, 3),), "real"),
}

NAMES = list(CASES)


def draw(shape, domain, rng, dtype=np.float64):
    x = rng.normal(size=shape)
    if domain == "positive":
        x = np.abs(x) + 0.5
    elif domain == "unit":
        x = 0.8 * np.tanh(x)
    elif domain == "away":
        x = np.sign(x) * (np.abs(x) + 0.3)
    elif domain == "probability":
        x = 0.1 + 0.8 / (1 + np.exp(-x))
    elif domain == "spd":
        x = _spd(x)
    return np.asarray(x, dtype) if shape else dtype(x)


def make_case(name, dtype=np.float64, seed=0):
    fn, shapes, domain = CASES[name]
    rng = np.random.default_rng(seed)
    args = [draw(shape, domain, rng, dtype) for shape in shapes]
    out_shape = np.shape(fn(*[np.asarray(a, np.float64) for a in args]))
    weights = np.asarray(rng.normal(size=out_shape), dtype)

    def loss(*xs):
        return np.sum(fn(*xs) * weights)
    return fn, loss, args


def interpret(fn, args):
    """``fn``'s traced graph evaluated by the reference interpreter."""
    fun = fn if isinstance(fn, tg.Function) else tg.jit(fn)
    graph = tg.make_graph(fun, *args)
    graph.verify()
    return evaluate(graph, *args, *fun.specialize(*args).captured())


def interpret_grads(loss, args):
    fun = tg.value_and_grad(loss, argnums=tuple(range(len(args))))
    outs = interpret(fun, args)
    return outs[0], outs[1:]


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_numpy(name):
    fn, _, args = make_case(name)
    expected = fn(*args)
    (got,) = interpret(fn, args)
    assert np.shape(got) == np.shape(expected)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(name):
    _, loss, args = make_case(name)
    value, grads = interpret_grads(loss, args)
    assert value == pytest.approx(loss(*args), rel=1e-10)
    for k, g in enumerate(grads):
        assert np.shape(g) == np.shape(args[k])
        np.testing.assert_allclose(g, numeric_grad(loss, *args, argnums=k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_second_order_matches_central_differences(name):
    _, loss, args = make_case(name)
    rng = np.random.default_rng(1)
    direction = [rng.normal(size=np.shape(a)) for a in args]

    def directional(*xs):
        grads = tg.grad(loss, argnums=tuple(range(len(xs))))(*xs)
        return sum(np.sum(g * v) for g, v in zip(grads, direction))

    _, second = interpret_grads(directional, args)
    first = lambda *xs: sum(np.sum(g * v) for g, v in zip(interpret_grads(loss, xs)[1], direction))
    for k, g in enumerate(second):
        np.testing.assert_allclose(g, numeric_grad(first, *args, argnums=k), rtol=1e-4, atol=1e-5)


FLOAT64_IN_SCIPY = {"polygamma", "norm.logpdf", "norm.logcdf sf"}


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(name):
    fn, loss, args = make_case(name, np.float32)
    (value,) = interpret(fn, args)
    # scipy.stats and polygamma compute in float64 whatever they are given; tracegrad keeps float32
    expected = np.float32 if name in FLOAT64_IN_SCIPY else np.asarray(fn(*args)).dtype
    assert np.asarray(value).dtype == expected
    _, grads = interpret_grads(loss, args)
    _, grads64 = interpret_grads(*make_case(name, np.float64)[1:])
    for g, g64 in zip(grads, grads64):
        assert np.asarray(g).dtype == np.float32
        np.testing.assert_allclose(g, g64, rtol=2e-3, atol=2e-4)


# Compiling takes seconds a case: a sample exercising each new kernel and spelling, compiled as one function
# (eigh, qr, svd and dynamic_setitem, and a 3-d matmul, inv, slogdet, a solve with a matrix and cholesky, as
# first cases of their primitives, are compiled by tests/test_primitives_compiled.py; the stacks of the
# decompositions by the NaN test below)
COMPILED = ["pad edge", "diag of vector", "np.r_", "augmented slices", "cumprod axis", "sort 3-d", "argmax gather",
            "slogdet stack", "solve stack vector", "polygamma", "erf erfc", "norm.pdf cdf"]


def _chain(cases):
    """The sum of the cases' losses, each reached through a closure (so the tracer prepares it, as it does
    the functions a traced function calls by name)."""
    (_, loss, case_args), rest = cases[0], cases[1:]
    n = len(case_args)
    if not rest:
        return lambda *args: loss(*args)
    tail = _chain(rest)
    return lambda *args: loss(*args[:n]) + tail(*args[n:])


def test_compiled_matches_numpy():
    cases = [make_case(name) for name in COMPILED]
    everything = _chain(cases)
    args = [a for _, _, case_args in cases for a in case_args]
    value, grads = tg.value_and_grad(everything, argnums=tuple(range(len(args))))(*args)
    ref_value, ref_grads = interpret_grads(everything, args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- what is refused, and how


def _stale_view(x):
    y = x * 1.0
    tail = y[1:]
    y[1] = 0.0
    return np.sum(tail)  # NumPy's view would see the 0.0


def _reshaped_view(x):
    y = x * 1.0
    flat = y.reshape(-1)
    flat[0] = 1.0
    return y


def _traced_second_index(x):
    def body(i, y):
        y[1:, i] = 1.0
        return y
    return tg.fori_loop(0, 3, body, np.outer(x, x))


def _mask_of_values(x):
    y = x * 1.0
    y[y > 0] = x[:2]
    return y


@pytest.mark.parametrize("fn,error,words", [
    (_stale_view, tg.TracingError, "assigned into"),
    (_reshaped_view, tg.UnsupportedError, "reshaped or transposed view"),
    (_traced_second_index, tg.UnsupportedError, "traced integer index after a partial slice"),
    (_mask_of_values, tg.UnsupportedError, "boolean mask"),
], ids=["stale view", "reshaped view", "traced index after a slice", "mask of values"])
def test_assignment_that_cannot_be_functional_is_refused(fn, error, words):
    with pytest.raises(error) as info:
        tg.jit(fn)(np.arange(1.0, 4.0))
    assert words in info.value.message
    assert info.value.source.filename == __file__


@pytest.mark.parametrize("name,fn", [
    ("np.polyval", lambda x: np.polyval(x, 2.0)),
    ("scipy.special.j0", lambda x: scipy.special.j0(x)),
    ("np.linalg.eigvals", lambda x: np.linalg.eigvals(np.outer(x, x))),
    ("scipy.linalg.expm", lambda x: __import__("scipy.linalg").linalg.expm(np.outer(x, x))),
    ("np.fft.fft", lambda x: np.fft.fft(x)),
])
def test_unsupported_functions_are_named_at_the_users_line(name, fn):
    with pytest.raises(tg.UnsupportedError) as info:
        tg.grad(lambda x: np.sum(fn(x)))(np.arange(1.0, 4.0))
    assert info.value.message.startswith(f"{name} is not supported")
    assert info.value.source.filename == __file__


@pytest.mark.parametrize("words,fn,error", [
    ("np.linalg.svd with full_matrices=True of a non-square matrix", lambda x: np.linalg.svd(np.outer(x, x)[:2])[0],
     tg.UnsupportedError),
    ("np.linalg.qr with mode='raw'", lambda x: np.linalg.qr(np.outer(x, x), mode="raw")[0], tg.UnsupportedError),
    ("np.linalg.inv of an array of shape (3,)", lambda x: np.linalg.inv(x), tg.ShapeError),
    ("the last two axes must be square", lambda x: np.linalg.det(np.outer(x, x)[None, :2]), tg.ShapeError),
    ("do not broadcast", lambda x: np.linalg.solve(np.ones((2, 3, 3)) + x, np.ones((3, 3, 1))), tg.ShapeError),
], ids=["svd full", "qr raw", "inv of a vector", "det not square", "solve stacks"])
def test_linalg_arguments_it_cannot_take_are_named_at_the_users_line(words, fn, error):
    with pytest.raises(error) as info:
        tg.grad(lambda x: np.sum(fn(x)))(np.arange(1.0, 4.0))
    assert words in info.value.message
    assert info.value.source.filename == __file__


def test_eigh_gradient_at_a_repeated_eigenvalue():
    """At a repeated eigenvalue the terms that would divide by zero are left out: the gradient is finite, and
    right for a symmetric function of the eigenvalues and for the projector onto a whole eigenspace (both
    smooth there, so central differences check them)."""
    a = np.diag([1.0, 1.0, 3.0])
    c = np.arange(9.0).reshape(3, 3)

    def spectral_sum(a):  # trace(expm(a)), smooth
        return np.sum(np.exp(np.linalg.eigvalsh(a)))

    def projector(a):  # onto the eigenspace of the eigenvalue 1 (twice), smooth while it stays apart from 3
        v = np.linalg.eigh(a)[1][:, :2]
        return np.sum(v @ v.T * c)

    for loss in (spectral_sum, projector):
        g = tg.grad(loss)(a)
        np.testing.assert_allclose(g, numeric_grad(loss, a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tg.grad(spectral_sum)(a), np.diag(np.exp([1.0, 1.0, 3.0])), rtol=1e-12)


def test_linalg_of_a_matrix_holding_nan_gives_nan_in_every_tier():
    """A NaN or an inf in one matrix of a stack gives NaNs for that matrix, the others their values: as NumPy's
    inv and det do, where Numba's LAPACK calls raise and NumPy's svd fails to converge."""
    def decompositions(a):
        w, v = np.linalg.eigh(a)
        return (np.linalg.det(a)[:, None] + w + np.linalg.svd(a, compute_uv=False) + np.sum(np.linalg.qr(a)[1], 1)
                + np.sum(np.linalg.inv(a) + v * v, 1))
    a = np.stack([_spd(np.arange(9.0).reshape(3, 3) / 9), np.eye(3)])
    a[1, 0, 0] = np.nan
    expected = decompositions(a[:1])
    for mode in ("never", "wait"):
        got = tg.jit(decompositions, compile=mode)(a)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
        assert np.isnan(got[1]).all()


def test_assignment_at_a_traced_index_out_of_bounds_raises_in_every_tier():
    def shifted(x):
        y = x * 1.0
        y[np.argmax(x) + 2] = 0.0  # the largest entry is the last: 2 past the end
        return y
    for mode in ("never", "wait"):
        with pytest.raises(IndexError, match="index out of bounds in y"):
            tg.jit(shifted, compile=mode)(np.arange(1.0, 4.0))


def test_assignment_leaves_the_callers_array_and_numpy_code_alone():
    x = np.arange(1.0, 4.0)
    f = tg.jit(assign_from_argument)
    v = np.array([7.0, 8.0, 9.0])
    x2 = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(f(x2, v), assign_from_argument(x2, v))
    assert np.array_equal(x2, np.arange(9.0).reshape(3, 3))  # functional: the argument is not written

    def constant_table(x):
        table = np.zeros(3)  # assigned only NumPy values: the same array NumPy builds
        for i in range(3):
            table[i] = i * i
        return x * table
    np.testing.assert_allclose(tg.jit(constant_table)(x), x * np.array([0.0, 1.0, 4.0]))


def test_assignment_into_arguments_and_carries():
    def into_argument(x):
        x[0] = 1.0
        return np.sum(x * x)

    def scan_body(c, row):  # assignment into a carry and a row, in a traced loop body
        c[0] = c[0] + row[1]
        row[1] = 0.0
        return c * 0.5, np.sum(row * c)

    def looped(c, xs):
        carry, ys = tg.scan(scan_body, c, xs)
        return np.sum(carry) + np.sum(ys)

    x = np.full(3, 2.0)
    np.testing.assert_allclose(tg.grad(into_argument)(x), [0.0, 4.0, 4.0])
    c, xs = np.arange(1.0, 4.0), np.arange(12.0).reshape(4, 3) / 10
    g = tg.grad(looped, argnums=(0, 1))(c, xs)
    def reference(c, xs):  # NumPy writes into the arrays given: fresh copies for each evaluation
        return looped(c.copy(), xs.copy())
    for k, expected in enumerate(numeric_grad(reference, c, xs, argnums=(0, 1))):
        np.testing.assert_allclose(g[k], expected, rtol=1e-6, atol=1e-8)


def _integer_sums(x, y, z):
    return (np.sum(x * 2), np.sum(y, axis=1), np.sum(z > 1, axis=0), np.sum((z > 1) & (z < 3)), np.sum(y),
            np.all(np.isfinite(z)))


@pytest.mark.parametrize("mode", ["never", "wait"])
def test_integer_and_boolean_sums_keep_numpys_dtypes_in_every_tier(mode):
    # bools and signed ints add up in int64, unsigned ints in uint64, as NumPy does
    args = (np.arange(12, dtype=np.int32).reshape(3, 4), np.arange(12, dtype=np.uint8).reshape(3, 4),
            np.arange(12.0).reshape(3, 4))
    got = tg.jit(_integer_sums, compile=mode)(*args)
    for value, expected in zip(got, _integer_sums(*args)):
        assert np.asarray(value).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(value, expected)


def test_counts_are_added_up_inside_the_loop_that_computes_them():
    # a count of a condition (np.sum(z > 1), np.all) accumulates in the loop, with no array of 0s and 1s
    source = tg.jit(lambda z: (np.sum(z > 1, axis=0), np.all(np.isfinite(z)))).source(np.ones((3, 4)))
    code = [line.split("#")[0] for line in source.splitlines()]  # (the comments quote the user's line)
    assert not any("np.sum(" in line for line in code)
    assert any("[i1] += " in line for line in code)
