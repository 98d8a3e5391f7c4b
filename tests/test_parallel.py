"""parallel=: large loop nests as prange over fixed blocks of rows (primitives.nest._blocks), the same result
whatever the number of threads, and the setting's plumbing. Compiling with Numba's parallel=True is
slow, so the compiled checks share a few small functions (the thresholds lowered by a fixture)."""
import numba
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import backend, tiers
from tracegrad.primitives import nest
from tracegrad.errors import TracegradError
from tracegrad.testing import numeric_grad


def layer_loss(w, b, X):
    """A scalar sum, row sums (each row adds to its own element) and a sum over rows (b's gradient:
    every row adds to the same elements, so each block has partial sums of its own)."""
    h = np.tanh(X * w + b)
    return np.sum(h ** 2) + 0.5 * np.sum(np.sum(h, axis=1) ** 2)


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def row_differences(X):
    """Rows that add to their own and the next row's elements of a 2-D gradient (grad_X[i0 + 1, i1]): not
    carried in registers (a row of them), so the blocks alternate."""
    return np.sum((X[1:] - X[:-1]) ** 2 * X[:-1])


def layer_args(rng, rows, cols, dtype=np.float64):
    return tuple(a.astype(dtype) for a in (rng.normal(size=cols) * 0.5, rng.normal(size=cols) * 0.1,
                                           rng.normal(size=(rows, cols))))


@pytest.fixture
def small_loops(monkeypatch):
    """Loops of 256 elements and 32 rows run in parallel (4 blocks of at least 8 rows)."""
    monkeypatch.setattr(nest, "PARALLEL_MIN", 256)
    monkeypatch.setattr(nest, "BLOCKS", 4)


@pytest.fixture
def default_setting(monkeypatch):
    monkeypatch.delenv("TRACEGRAD_PARALLEL", raising=False)
    yield
    tg.set_parallel(None)


# ---------------------------------------------------------------------------------- generated code


def test_large_loops_become_blocks_of_rows(rng):
    args = layer_args(rng, 4096, 16)  # 65,536 elements, 4,096 rows: over PARALLEL_MIN
    source = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True).source(*args)
    assert "from numba import prange" in source
    assert f"for blk in prange({nest.BLOCKS}):" in source
    per = 4096 // nest.BLOCKS
    assert f"for i0 in range(np.uintp(blk * {per}), np.uintp(blk * {per} + {per})):" in source
    assert f"# 4096 rows in {nest.BLOCKS} blocks of {per} on Numba's threads (np.uintp rows: no x[-1] check)" in source
    assert "_blk += " in source  # the scalar sum: one partial per block ...
    assert "grad_b_blocks[blk, i1] += " in source  # ... the sum over rows: a row of partials per block
    assert "# the blocks' partial sums, in block order" in source
    serial = tg.value_and_grad(layer_loss, argnums=(0, 1)).source(*args)
    assert "prange" not in serial


def test_thresholds_count_elements(rng):
    # a loop of PARALLEL_MIN elements and more runs in parallel (with 128 rows and more), one element fewer
    # does not: the MLP step's 1024 x 10 loops (a few µs of work) stay serial at batch 1024
    rows = nest.PARALLEL_MIN // 16
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    assert "prange" in f.source(*layer_args(rng, rows, 16))
    assert "prange" not in f.source(*layer_args(rng, rows - 1, 16))
    assert "prange" not in f.source(*layer_args(rng, 1024, 10))


def test_small_loops_stay_serial(rng):
    # batch 32 x 128 (4,096 elements) is below PARALLEL_MIN: the code is the serial code, byte for byte
    args = layer_args(rng, 32, 128)
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    g = tg.value_and_grad(layer_loss, argnums=(0, 1))
    assert f.source(*args) == g.source(*args)
    assert backend.module_path(f.specialize(*args).module) == backend.module_path(g.specialize(*args).module)
    assert not f.specialize(*args).module.parallel


def test_loops_adding_at_scaled_indices_stay_serial():
    # grad_x[2 * i0] += ...: rows are not blocks of grad_x's elements
    def f(x):
        return np.sum(np.sin(x[::2]) * x[1::2])

    x = np.linspace(-1, 1, 200000)
    source = tg.value_and_grad(f, parallel=True).source(x)
    assert "grad_x[2 * i0 + 1] += " in source and "prange" not in source  # (100,000 rows: large enough)
    assert source == tg.value_and_grad(f).source(x)


def test_loops_adding_at_shifted_indices_alternate_their_blocks():
    # grad_X[i0 + 1, i1] += ...: the last row of a block adds to the first row of the next one, so the
    # even blocks run first, then the odd ones
    X = np.linspace(-1, 1, 100000).reshape(1000, 100)
    source = tg.value_and_grad(row_differences, parallel=True).source(X)
    assert "grad_X[i0 + 1, i1] += " in source
    assert "for sweep in range(2):" in source and f"for half in prange({nest.BLOCKS // 2}):" in source
    assert "blk = 2 * half + sweep" in source


def test_carried_sums_hand_the_blocks_last_registers_on():
    # a 1-D slice gradient is stored an element at a time (nest._Carried): each block keeps what its last
    # row adds to the next block's first element, added after the parallel loop; no sweeps, no zeroing
    x = np.linspace(-1, 1, 100002)
    source = tg.value_and_grad(rosenbrock, parallel=True).source(x)
    per = -(-100001 // nest.BLOCKS)
    assert f"for blk in prange({nest.BLOCKS}):" in source and "sweep" not in source
    assert "grad_x = np.empty((100002,))" in source and "grad_x_at1 += grad_s0" in source
    assert "grad_x_carry[blk, 0] = grad_x_at1" in source
    assert f"grad_x[min(blk * {per} + {per}, 100001)] += grad_x_carry[blk, 0]" in source


def test_parallel_is_in_the_cache_key(rng):
    args = layer_args(rng, 4096, 16)
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True).specialize(*args)
    g = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=False).specialize(*args)
    assert f.module.parallel and not g.module.parallel
    assert backend.module_path(f.module) != backend.module_path(g.module)


def test_only_the_loops_functions_are_compiled_in_parallel(rng):
    args = layer_args(rng, 4096, 16)
    module = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True).specialize(*args).module
    namespace = {}
    exec(compile(module.source, "<test>", "exec"), namespace)
    loops = [name for name in module.parts if "_loop" in name]
    assert loops
    for name in module.parts + (module.function,):
        options = backend.parallel_options(namespace[name])
        assert bool(options) == (name in loops), name
    # only prange: Numba's own parallel array expressions and np.sum would add up in a thread-dependent order
    options = backend.parallel_options(namespace[loops[0]])["parallel"]
    assert options.pop("prange") is True and options and not any(options.values())


def test_auto_is_a_larger_threshold_and_needs_threads(rng, monkeypatch):
    medium = layer_args(rng, 4096, 16)  # 65,536 elements: under AUTO_MIN
    large = layer_args(rng, 4096, 128)  # 524,288 elements
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel="auto")
    monkeypatch.setattr(backend, "threads", lambda: 2)
    assert "prange" not in f.source(*medium)
    assert "prange" in f.source(*large)
    one = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel="auto")
    monkeypatch.setattr(backend, "threads", lambda: 1)
    assert "prange" not in one.source(*large)


# ---------------------------------------------------------------------------------- the setting


@pytest.mark.parametrize("bad", ["yes", 1, 0, "True", 2.0])
def test_bad_settings_are_clear_errors(bad):
    with pytest.raises(TracegradError, match="parallel must be False, True, 'auto' or tg.over_rows"):
        tg.grad(layer_loss, parallel=bad)
    with pytest.raises(TracegradError, match="parallel must be False, True, 'auto' or tg.over_rows"):
        tg.set_parallel(bad)


def test_fit_checks_its_setting():
    X, y = np.ones((8, 2)), np.ones(8)
    with pytest.raises(TracegradError, match="parallel must be"):
        tg.fit(lambda p, X, y: tg.nn.mse(X @ p, y), np.zeros(2), (X, y), optimizer=tg.optim.SGD(lr=0.1),
               batch_size=4, progress=False, parallel="sometimes")


def test_global_setting_and_environment(rng, default_setting, monkeypatch):
    args = layer_args(rng, 4096, 16)
    assert tiers.parallel_mode() is False
    assert "prange" not in tg.value_and_grad(layer_loss, argnums=(0, 1)).source(*args)
    tg.set_parallel(True)
    assert "prange" in tg.value_and_grad(layer_loss, argnums=(0, 1)).source(*args)
    # a function's own setting wins
    assert "prange" not in tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=False).source(*args)
    tg.set_parallel(None)
    for value, expected in [("1", True), ("auto", "auto"), ("0", False), ("", False), ("TRUE", True)]:
        monkeypatch.setenv("TRACEGRAD_PARALLEL", value)
        assert tiers.parallel_mode() == expected and type(tiers.parallel_mode()) is type(expected)
    monkeypatch.setenv("TRACEGRAD_PARALLEL", "1")
    assert "prange" in tg.jit(layer_loss).source(*args)
    monkeypatch.setenv("TRACEGRAD_PARALLEL", "often")
    with pytest.raises(TracegradError, match="TRACEGRAD_PARALLEL must be 0, 1 or auto, got 'often'"):
        tg.jit(layer_loss).source(*args)


def test_settings_survive_copies(rng):
    import pickle

    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    assert pickle.loads(pickle.dumps(f)).parallel is True
    static = tg.jit(lambda x, n: np.sum(np.tanh(x) * n), parallel=True, static_argnums=1)
    assert "prange" in static.source(rng.normal(size=(4096, 16)), 3)


# ---------------------------------------------------------------------------------- compiled results


def _same_as_serial(f, g, args, rtol):
    value, grads = f(*args)
    value_s, grads_s = g(*args)
    np.testing.assert_allclose(value, value_s, rtol=rtol)
    for a, b in zip(grads, grads_s):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    return value, grads


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_compiled_results_equal_serial_and_do_not_depend_on_threads(rng, small_loops):
    args = layer_args(rng, 64, 8)
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    assert "prange(4)" in f.source(*args)
    g = tg.value_and_grad(layer_loss, argnums=(0, 1))
    _same_as_serial(f, g, args, 1e-12)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = f(*args)
        numba.set_num_threads(2)
        two = f(*args)
    finally:
        numba.set_num_threads(threads)
    assert one[0] == two[0]  # bit for bit: the blocks are the same, added in the same order
    for a, b in zip(one[1], two[1]):
        assert np.array_equal(a, b)
    numeric = numeric_grad(layer_loss, *args, argnums=(0, 1))  # central differences, on NumPy
    for a, b in zip(one[1], numeric):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # exact values where known: at w = 0, b = 0 every h is 0, and so is the gradient
    zero = (np.zeros(8), np.zeros(8), args[2])
    assert f(*zero)[0] == 0.0 and not np.any(f(*zero)[1][0]) and not np.any(f(*zero)[1][1])


def test_float32_and_a_ragged_last_block(rng, small_loops):
    args = layer_args(rng, 70, 8, np.float32)  # 70 rows in 4 blocks of 18: the last has 16
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    assert "min(blk * 18 + 18, 70)" in f.source(*args)
    value, grads = _same_as_serial(f, tg.value_and_grad(layer_loss, argnums=(0, 1)), args, 2e-5)
    assert isinstance(value, np.float32) or np.asarray(value).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    wide = tuple(a.astype(np.float64) for a in args)  # against the float64 gradient
    exact = tg.value_and_grad(layer_loss, argnums=(0, 1))(*wide)
    for a, b in zip(grads, exact[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_plain_sum_and_stored_values(rng, small_loops):
    x = rng.normal(size=300)
    f = tg.jit(lambda x: (np.sum((1.0 - x) ** 2 + np.exp(x)), np.sin(x) * x), parallel=True)
    assert "prange" in f.source(x)
    total, stored = f(x)
    np.testing.assert_allclose(total, np.sum((1.0 - x) ** 2 + np.exp(x)), rtol=1e-13)
    np.testing.assert_array_equal(stored, np.sin(x) * x)


def test_fit_passes_the_setting_to_its_epoch(rng, small_loops):
    # the plumbing alone, without Numba: the epoch's generated source has its loops as prange (the slow
    # test below runs it compiled)
    X = rng.normal(size=(256, 8))
    y = X @ rng.normal(size=8)

    def loss(p, X, y):
        return tg.nn.mse(np.tanh(X * p["a"]) @ p["w"], y)

    p0 = {"a": np.ones(8), "w": np.zeros(8)}
    tg.fit(loss, p0, (X, y), optimizer=tg.optim.SGD(lr=0.1), batch_size=64, epochs=1, progress=False,
           compile="never", parallel=True)
    epochs = [f for f in tg.train._EPOCHS[loss].values() if isinstance(f, tg.Function)]
    assert [f.parallel for f in epochs] == [True]
    assert all("prange" in e.source for e in epochs[0]._cache.values())


@pytest.mark.slow
def test_fit_runs_its_steps_loops_in_parallel(rng, small_loops):
    X = rng.normal(size=(256, 8))
    y = X @ rng.normal(size=8)

    def loss(p, X, y):
        return tg.nn.mse(np.tanh(X * p["a"]) @ p["w"] + p["b"], y)

    p0 = {"a": np.ones(8), "w": np.zeros(8), "b": np.zeros(())}
    settings = dict(optimizer=tg.optim.SGD(lr=0.1), batch_size=64, epochs=3, progress=False, compile="wait")
    serial, h_serial = tg.fit(loss, p0, (X, y), **settings)
    parallel, h_parallel = tg.fit(loss, p0, (X, y), parallel=True, **settings)
    np.testing.assert_allclose(h_parallel.loss, h_serial.loss, rtol=1e-12)
    for k in serial:
        np.testing.assert_allclose(parallel[k], serial[k], rtol=1e-12, atol=1e-15)
    epochs = [f for kept in tg.train._EPOCHS.values() for f in kept.values() if isinstance(f, tg.Function)]
    assert any(f.parallel is True and any("prange" in e.source for e in f._cache.values()) for f in epochs)
    assert h_parallel.loss[-1] < h_parallel.loss[0]


def test_vmap_runs_its_batch_loops_in_parallel(rng, small_loops):
    # per-example gradients: the batched loops over the examples are blocks of rows
    def loss(w, x, y):
        return (np.sum(np.tanh(x * w)) - y) ** 2

    w, X, y = rng.normal(size=8), rng.normal(size=(64, 8)), rng.normal(size=64)
    per_example = tg.vmap(tg.grad(loss), in_axes=(None, 0, 0), parallel=True)
    source = per_example.source(w, X, y)
    assert "for blk in prange(4):" in source
    serial = tg.vmap(tg.grad(loss), in_axes=(None, 0, 0))
    assert "prange" not in serial.source(w, X, y)
    np.testing.assert_allclose(per_example(w, X, y), serial(w, X, y), rtol=1e-13)
    np.testing.assert_allclose(per_example(w, X, y)[5], numeric_grad(lambda w: loss(w, X[5], y[5]), w), rtol=1e-6)
    with pytest.raises(TracegradError, match="parallel"):
        tg.vmap(loss, parallel="sometimes")


def test_the_background_compile_compiles_the_loops_in_parallel_too(rng, small_loops):
    # the worker process imports the file and picks Numba's options by the same rule (backend.parallel_options)
    args = layer_args(rng, 48, 8)
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True, compile="background")
    assert "prange" in f.source(*args)
    first = f(*args)  # on NumPy, or compiled already if the disk cache has it
    f.wait()
    entry = f.specialize(*args)
    assert entry.tier == "compiled"
    again = f(*args)
    np.testing.assert_allclose(again[0], first[0], rtol=1e-12)
    loops = [g for name, g in entry.dispatcher.py_func.__globals__.items() if "_loop" in name]
    assert loops and all(g.targetoptions.get("parallel") for g in loops)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def _one_and_two_threads(f, *args):
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = f(*args)
        numba.set_num_threads(2)
        two = f(*args)
    finally:
        numba.set_num_threads(threads)
    assert one[0] == two[0] and np.array_equal(one[1], two[1])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
@pytest.mark.parametrize("fun, marker", [
    (rosenbrock, "grad_x_carry[blk, 0]"),  # 300 rows in 4 blocks of 75, each adding to x[i] and x[i + 1]
    (lambda x: np.sum(x[2:] * x[:-2] + np.sin(x[1:-1])), "grad_x_carry[blk, 1]"),  # x[i + 2] too
    (row_differences, "for sweep in range(2):"),  # rows of 3: the blocks alternate
])
def test_shifted_sums_in_blocks_give_the_serial_gradient(rng, small_loops, fun, marker):
    x = rng.normal(size=301) if fun is not row_differences else rng.normal(size=(101, 3))
    f = tg.value_and_grad(fun, parallel=True)
    assert marker in f.source(x)
    value, grad = f(x)
    value_s, grad_s = tg.value_and_grad(fun)(x)
    np.testing.assert_allclose(value, value_s, rtol=1e-13)
    np.testing.assert_allclose(grad, grad_s, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(fun, x), rtol=1e-6, atol=1e-5)
    _one_and_two_threads(f, x)


def test_large_arrays_the_rows_add_into_are_zeroed_by_the_blocks(rng, small_loops, monkeypatch):
    """Over ZERO_IN_BLOCKS_BYTES, an array the rows add into is made empty and zeroed in a parallel pass
    before the rows (row_differences' gradient, with alternating blocks). A row sum is stored once a row
    instead (nest._Carried), also in the workspace, a buffer the next call reuses (layer_loss's, 4096 x 8
    bytes): every element written again."""
    monkeypatch.setattr(nest, "ZERO_IN_BLOCKS_BYTES", 1024)
    x = rng.normal(size=(101, 3))
    f = tg.value_and_grad(row_differences, parallel=True)
    source = f.source(x)
    assert "# the arrays the rows add into, zeroed a block each" in source and "for sweep in range(2):" in source
    assert "grad_X.reshape(-1)[blk * 76:blk * 76 + 76] = 0.0" in source and "grad_X = np.empty((101, 3))" in source
    serial = tg.value_and_grad(row_differences)(x)
    for _ in range(2):
        value, grad = f(x)
        np.testing.assert_allclose(value, serial[0], rtol=1e-13)
        np.testing.assert_allclose(grad, serial[1], rtol=1e-13, atol=1e-12)
    args = layer_args(rng, 4096, 8)
    f = tg.value_and_grad(layer_loss, argnums=(0, 1), parallel=True)
    compiled = f.specialize(*args)
    assert "zeroed a block each" not in compiled.source and compiled.workspace is not None
    assert "s4[i0] = s4_at0" in compiled.source and "s4 = np.empty((4096,))" in compiled.source
    g = tg.value_and_grad(layer_loss, argnums=(0, 1))
    for _ in range(2):
        _same_as_serial(f, g, args, 1e-12)


def test_unsigned_rows_read_the_row_before(rng, small_loops):
    # the rows are np.uintp (no negative-subscript checks); a slice's gradient read one row back,
    # (grad_s0[i0 - 1] if i0 >= 1 else 0.0), must still read row 0's neighbour correctly
    def f(x):
        t = np.tanh(x)
        return np.sum(t[1:] ** 2 * x[:-1])

    x = rng.normal(size=300)
    g = tg.value_and_grad(f, parallel=True)
    source = g.source(x)
    assert "in range(np.uintp(blk * 75), np.uintp(blk * 75 + 75)):" in source
    assert "[i0 - 1] if i0 >= 1 else 0.0)" in source
    value, grad = g(x)
    t = np.tanh(x)
    np.testing.assert_allclose(value, np.sum(t[1:] ** 2 * x[:-1]), rtol=1e-13)
    exact = np.zeros_like(x)  # d/dx_i: t_i^2 from x_i's own term, 2 t_i (1 - t_i^2) x_{i-1} from the one before
    exact[:-1] += t[1:] ** 2
    exact[1:] += 2 * t[1:] * (1 - t[1:] ** 2) * x[:-1]
    np.testing.assert_allclose(grad, exact, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, numeric_grad(f, x), rtol=1e-6, atol=1e-6)


def test_names_the_parallel_code_uses_are_not_taken_from_the_user(rng, small_loops):
    def f(x):
        blk = np.sin(x)
        prange = blk * x
        half = np.sum(prange ** 2)
        return half

    x = rng.normal(size=(40, 8))
    g = tg.value_and_grad(f, parallel=True)
    source = g.source(x)
    assert "for blk in prange(4):" in source
    value, grad = g(x)
    np.testing.assert_allclose(value, f(x), rtol=1e-13)
    np.testing.assert_allclose(grad, numeric_grad(f, x), rtol=1e-6, atol=1e-6)
