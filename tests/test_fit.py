"""tg.fit: the compiled epoch against a plain Python training loop, resuming, the last partial batch,
your own Numba loop, progress and history, and every kind of bad input.

Most tests share one model and one set of shapes (a softmax classifier, 50 samples, batches of 16,
so three full batches and a last one of 2) so that Numba compiles its kernels once."""
import os
import re
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import nn, optim
from tracegrad.errors import SourceInfo
from tracegrad.pytree import flatten

N, FEATURES, CLASSES, BATCH = 50, 4, 3, 16
_rng = np.random.default_rng(42)
X = _rng.normal(size=(N, FEATURES))
Y = (X @ _rng.normal(size=(FEATURES, CLASSES))).argmax(axis=1)
X_VAL, Y_VAL = X[:10] + 0.1, Y[:10]


def LOSS(params, X, y):
    return nn.softmax_cross_entropy(X @ params["W"] + params["b"], y) + 1e-3 * nn.l2_penalty(params["W"])


def start():
    rng = np.random.default_rng(0)
    return {"W": 0.1 * rng.normal(size=(FEATURES, CLASSES)), "b": np.zeros(CLASSES)}


def splitmix_permutation(n, state):
    """fit's shuffle, written again with Python ints: Fisher-Yates driven by splitmix64."""
    perm, mask = list(range(n)), 2 ** 64 - 1
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        j = z % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm, state


def reference_fit(optimizer, params, epochs, seed, shuffle=True):
    """The same training as fit, one Python step at a time: tracegrad's gradient, optimizer.update."""
    params = {k: v.copy() for k, v in params.items()}
    state, vg, losses = optimizer.init(params), tg.value_and_grad(LOSS), []
    for _ in range(epochs):
        order = list(range(N))
        if shuffle:
            order, seed = splitmix_permutation(N, seed)
        total = 0.0
        for start_row in range(0, N, BATCH):
            rows = order[start_row:start_row + BATCH]
            value, grads = vg(params, X[rows], Y[rows])
            optimizer.update(params, grads, state)
            total += value * len(rows)
        losses.append(total / N)
    return params, losses


# ------------------------------------------------------------------------------ the same numbers as a Python loop


@pytest.mark.parametrize("optimizer", [
    optim.SGD(lr=0.2, momentum=0.9),
    optim.Adam(lr=0.05, weight_decay=0.01),
    optim.RMSProp(lr=optim.step_lr(0.01, every=4, gamma=0.5), momentum=0.5),
], ids=["sgd", "adam", "rmsprop-scheduled"])
def test_fit_matches_a_python_training_loop(optimizer):
    params, history = tg.fit(LOSS, start(), (X, Y), optimizer=optimizer, batch_size=BATCH, epochs=3, seed=7,
                             progress=False)
    expected, losses = reference_fit(optimizer, start(), epochs=3, seed=7)
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.loss, losses, rtol=1e-12)
    assert history.steps == 3 * 4 and history.state["step"] == 12
    assert history.initial_loss == pytest.approx(float(LOSS(start(), X, Y)), rel=1e-12)


@pytest.mark.parametrize("optimizer", [
    optim.AdamW(lr=0.05, weight_decay=0.1),
    optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
], ids=["adamw", "sgd-nesterov-decay"])
def test_the_other_branches_of_the_updates_on_the_numpy_tier(optimizer):
    """The updates' other branches (decoupled decay, Nesterov), traced with their hyperparameters as
    arguments; on the NumPy tier (the same graph Numba compiles, without compiling it)."""
    params, history = tg.fit(LOSS, start(), (X, Y), optimizer=optimizer, batch_size=BATCH, epochs=3, seed=7,
                             progress=False, compile="never")
    expected, losses = reference_fit(optimizer, start(), epochs=3, seed=7)
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.loss, losses, rtol=1e-12)
    assert history.compiled == [False] * 3


def test_training_reduces_the_loss_and_inputs_are_untouched():
    params0 = start()
    copy = {k: v.copy() for k, v in params0.items()}
    params, history = tg.fit(LOSS, params0, (X, Y), optimizer=optim.SGD(lr=0.5, momentum=0.9), batch_size=BATCH,
                             epochs=5, progress=False, validation=(X_VAL, Y_VAL),
                             metrics={"acc": lambda p, X, y: nn.accuracy(X @ p["W"] + p["b"], y)})
    for k in params0:
        np.testing.assert_array_equal(params0[k], copy[k])
        assert params[k] is not params0[k]
    assert history.loss[-1] < 0.5 * history.initial_loss
    assert len(history.loss) == len(history.time) == len(history.val_loss) == len(history.metrics["acc"]) == 5
    assert all(w >= t for w, t in zip(history.wall_time, history.time)) and len(history.wall_time) == 5
    assert history.val_loss[-1] == pytest.approx(float(LOSS(params, X_VAL, Y_VAL)))
    assert history.metrics["acc"][-1] >= 0.9
    assert all(t > 0 for t in history.time) and history.compile_time > 0


def test_resuming_continues_exactly():
    opt = optim.SGD(lr=0.2, momentum=0.9)
    once, h = tg.fit(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH, epochs=2, seed=3, progress=False)
    half, h1 = tg.fit(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH, epochs=1, seed=3, progress=False)
    twice, h2 = tg.fit(LOSS, half, (X, Y), optimizer=opt, batch_size=BATCH, epochs=1, seed=h1.seed,
                       state=h1.state, progress=False)
    for k in once:
        np.testing.assert_array_equal(once[k], twice[k])
    assert h.loss == h1.loss + h2.loss and h2.steps == h.steps == 8


def test_shuffle_changes_every_epoch_and_follows_the_seed():
    perm1, state = splitmix_permutation(N, 0)
    perm2, _ = splitmix_permutation(N, state)
    assert sorted(perm1) == list(range(N)) and perm1 != perm2
    a, _ = tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.2), batch_size=BATCH, epochs=1, seed=1, progress=False)
    b, _ = tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.2), batch_size=BATCH, epochs=1, seed=2, progress=False)
    assert not np.array_equal(a["W"], b["W"])


# ------------------------------------------------------------------------------ your own loop, and drop_last


def test_own_numba_loop_gives_what_fit_gives():
    """The README's recipe: call the compiled value-and-gradient kernel and the optimiser's update
    from your own @numba.njit loop."""
    opt = optim.SGD(lr=0.2, momentum=0.9)
    params = start()
    kernel = tg.value_and_grad(LOSS).specialize(params, X[:BATCH], Y[:BATCH])
    assert kernel.captured() == []  # (the np.arange(16) softmax_cross_entropy indexes with is in the code)
    vg, update, hyper = kernel.dispatcher, opt.kernel, opt.hyperparameters()

    @numba.njit
    def train(W, b, X, y, vW, vb, lr, epochs, momentum, weight_decay, nesterov):
        for epoch in range(epochs):
            for s in range(X.shape[0] // 16):
                t = epoch * (X.shape[0] // 16) + s + 1
                loss, gW, gb = vg(W, b, X[s * 16:(s + 1) * 16], y[s * 16:(s + 1) * 16])
                update(W.reshape(-1), gW.ravel(), vW, lr, t, momentum, weight_decay, nesterov)
                update(b, gb, vb, lr, t, momentum, weight_decay, nesterov)

    W, b = params["W"].copy(), params["b"].copy()
    train(W, b, X, Y, np.zeros(W.size), np.zeros(b.size), opt.lr, 2, *hyper)
    fitted, history = tg.fit(LOSS, params, (X, Y), optimizer=opt, batch_size=BATCH, epochs=2, shuffle=False,
                             drop_last=True, progress=False)
    np.testing.assert_allclose(fitted["W"], W, rtol=1e-13)
    np.testing.assert_allclose(fitted["b"], b, rtol=1e-13)
    assert history.steps == 2 * (N // BATCH)


def test_epoch_source_is_readable_and_deterministic():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    text = tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH)
    assert text == tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH)
    for line in ("def LOSS_fit_epoch(params_W, params_b, state_velocity_W, state_velocity_b, data_0, data_1, seed, "
                 "learning_rates, steps, hyperparameters_momentum, hyperparameters_nesterov,",
                 "    order = permutation(seed, 50)",
                 "    for t in range(3):",  # the three full batches: one loop, its body written once
                 "        loss = ",  # the loss's value, under its name, then its gradient
                 "# test_fit.py:29",  # the user's line
                 "hyperparameters_momentum * carry_state_velocity_W[i0, i1]",  # the update, traced
                 "    return out0, out1, out2, out3, out4, out5\n"):  # parameters, state, losses, finite
        assert line in text, line
    assert text.count("gather_rows(data_0, ") == 2  # a step in the loop, and the last batch of 2 after it
    assert text.count("\ndef ") == 1  # one function: nothing else generated, nothing patched in
    assert "# tracegrad/train.py" in text  # fit's own lines point at fit's code, never at the line calling it,
    assert not re.search(r"train\.py:\d|line \d", text)  # and without numbers: other edits of train.py keep the text
    no_last = tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH, drop_last=True)
    assert no_last.count("gather_rows(data_0, ") == 1 and "for t in range(3):" in no_last
    in_order = tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=10, shuffle=False)
    assert "permutation" not in in_order and "for t in range(5):" in in_order
    assert "def LOSS_fit_epoch(params_W, params_b, state_velocity_W, state_velocity_b, data_0, data_1, order," in in_order


def test_tracegrads_own_lines_are_named_without_numbers():
    # the epoch's source names fit's lines; moved by an edit of train.py, they must name the same
    train_py = tg.train.__file__
    assert SourceInfo(train_py, 100, "x = 1").short() == SourceInfo(train_py, 230, "x = 1").short() == "tracegrad/train.py"
    assert SourceInfo(os.path.join(os.path.dirname(train_py), "primitives", "shuffle.py"), 9, "").short() == \
        "tracegrad/primitives/shuffle.py"
    assert SourceInfo(os.path.abspath("model.py"), 12, "").short() == "model.py:12"  # the user's: numbered


def test_the_epoch_is_a_loop_whatever_the_number_of_batches():
    many = np.repeat(X, 20, axis=0), np.repeat(Y, 20)  # 1000 samples: 62 batches of 16 and one of 8
    opt = optim.Adam(lr=0.01)
    short = tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH)
    long = tg.train.epoch_source(LOSS, start(), many, optimizer=opt, batch_size=BATCH)
    assert "for t in range(62):" in long and "for t in range(3):" in short
    assert len(long.splitlines()) == len(short.splitlines())


def test_hyperparameters_are_arguments_and_only_zeros_change_the_code():
    def source(**hyper):
        return tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1, **hyper), batch_size=BATCH)
    assert source(momentum=0.9) == source(momentum=0.5)  # one compiled epoch for every momentum
    assert "* carry_state_velocity" not in source()  # momentum 0: the velocity is left as it is
    for momentum in (0.5, 0.0):
        opt = optim.SGD(lr=0.2, momentum=momentum)
        params, history = tg.fit(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH, epochs=2, seed=7,
                                 progress=False)
        expected, losses = reference_fit(opt, start(), epochs=2, seed=7)
        for k in expected:
            np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)


def clipped_sgd_update(param, grad, velocity, lr, t, limit):
    """An update comparing a hyperparameter with something other than 0: fit needs its value to trace it."""
    for i in range(param.shape[0]):
        g = grad[i]
        if limit < 1.0:
            g = np.minimum(np.maximum(g, -limit), limit)
        velocity[i] = g
        param[i] -= lr * g


class ClippedSGD(optim.Optimizer):
    slots = ("velocity",)
    update_function = staticmethod(clipped_sgd_update)

    def __init__(self, lr, limit):
        super().__init__(lr)
        self.limit = limit


def test_an_update_that_compares_hyperparameters_gets_them_as_constants():
    for limit in (0.05, 2.0):
        opt = ClippedSGD(lr=0.2, limit=limit)
        text = tg.train.epoch_source(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH)
        assert text.count("hyperparameters_limit") == 1 and ("0.05" in text) == (limit == 0.05)  # unused argument
        params, history = tg.fit(LOSS, start(), (X, Y), optimizer=opt, batch_size=BATCH, epochs=2, seed=7,
                                 progress=False, compile="never")
        expected, losses = reference_fit(opt, start(), epochs=2, seed=7)
        for k in expected:
            np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14)


def neighbour_update(param, grad, lr, t):
    for i in range(param.shape[0]):
        param[i] -= lr * (grad[i] + grad[i - 1])


class NeighbourSGD(optim.Optimizer):
    update_function = staticmethod(neighbour_update)


def test_an_update_that_is_not_elementwise_is_a_clear_error():
    with pytest.raises(tg.DataError, match=r"reads grad\[-1\]: fit needs an elementwise update"):
        fit_with(optimizer=NeighbourSGD(lr=0.1))


def test_the_compiled_epoch_is_loaded_from_numbas_cache_in_a_new_process():
    tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=1, progress=False)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np, tracegrad as tg
        from tracegrad import backend, optim
        from test_fit import LOSS, X, Y, start
        tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=16, epochs=1, progress=False)
        epoch = [d for d in backend._loaded.values() if d.py_func.__name__.endswith("_fit_epoch")][0]
        print(sum(epoch.stats.cache_hits.values()), sum(epoch.stats.cache_misses.values()))
    """)
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(tg.cache_dir()))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]  # one hit, no miss


# ------------------------------------------------------------------------------ other shapes and dtypes


def test_single_data_array_scalar_parameter_float32():
    data = np.linspace(0, 2, 12, dtype=np.float32).reshape(12, 1)

    def loss(p, X):
        return np.mean((X[:, 0] - p["c"]) ** 2)
    params, history = tg.fit(loss, {"c": np.array(0.0, np.float32)}, data, optimizer=optim.SGD(lr=0.3),
                             batch_size=5, epochs=3, shuffle=False, progress=False)
    c = 0.0
    for _ in range(3):
        for rows in (slice(0, 5), slice(5, 10), slice(10, 12)):  # the last batch has two samples
            c -= 0.3 * 2 * (c - float(np.mean(data[rows, 0], dtype=np.float64)))
    assert params["c"].dtype == np.float32 and params["c"].shape == ()
    assert float(params["c"]) == pytest.approx(c, rel=1e-6)
    assert history.steps == 3 * 3


# ------------------------------------------------------------------------------ progress


def test_plain_progress_prints_one_line_per_epoch(capsys):
    tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=2, progress="plain",
           validation=(X_VAL, Y_VAL), metrics={"acc": lambda p, X, y: nn.accuracy(X @ p["W"], y)})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and "val_loss" in lines[0] and " acc " in lines[1]


def test_progress_without_tqdm_falls_back_to_lines(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=1)
    assert capsys.readouterr().out.startswith("epoch 1/1  loss ")


def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=2)
    captured = capsys.readouterr()
    assert "2/2" in captured.err and "loss" in captured.err and captured.out == ""


# ------------------------------------------------------------------------------ non-finite loss or gradient


def sqrt_loss(p, X):
    return np.sum(np.sqrt(p["w"])) * np.mean(X)


ONES = np.ones((4, 1))


def test_nan_loss_stops_with_the_epoch_and_step_and_keeps_the_parameters():
    # w -= 0.5 * 0.5 / sqrt(w): 1 -> 0.75 -> 0.4613 -> 0.0933 -> -0.7255, then sqrt(w) is nan at update 5,
    # which is epoch 3, step 1 with two steps per epoch
    w, trajectory = 1.0, []
    for _ in range(4):
        w -= 0.5 * 0.5 / np.sqrt(w)
        trajectory.append(w)
    with pytest.raises(tg.TrainingError) as info:
        tg.fit(sqrt_loss, {"w": np.array([1.0])}, ONES, optimizer=optim.SGD(lr=0.5), batch_size=2, epochs=5,
               shuffle=False, progress=False)
    err = info.value
    assert (err.epoch, err.step) == (3, 1)
    assert "epoch 3, step 1 of 2 (update 5): the loss is nan" in str(err)
    assert "sqrt_loss" not in str(err) or "test_fit.py" in str(err)
    assert "first non-finite value" in str(err) and "test_fit.py" in str(err)  # debug_nans names our line
    np.testing.assert_allclose(err.params["w"], [trajectory[-1]], rtol=1e-12)
    assert err.state["step"] == 4 and len(err.history.loss) == 2
    assert isinstance(err, tg.NonFiniteError) and isinstance(err, tg.NonFiniteTrainingError)


def test_infinite_gradient_stops_before_the_update():
    with pytest.raises(tg.TrainingError, match=r"epoch 1, step 1 .*gradient is not finite \(in params_w\)") as info:
        tg.fit(sqrt_loss, {"w": np.array([0.0])}, ONES, optimizer=optim.SGD(lr=0.5), batch_size=2, epochs=1,
               shuffle=False, progress=False)
    assert info.value.params["w"][0] == 0.0 and info.value.state["step"] == 0


class StopAt:
    """A metric that raises ``error`` when it is evaluated after epoch ``epoch``, and scores 0 before."""

    def __init__(self, epoch, error):
        self.epoch, self.error, self.calls = epoch, error, 0

    def __call__(self, params, X, y):
        self.calls += 1
        if self.calls == self.epoch:
            raise self.error
        return 0.0


@pytest.mark.parametrize("error, kind", [(KeyboardInterrupt(), tg.TrainingInterrupted),
                                         (ValueError("bad metric"), tg.TrainingError)])
def test_a_stop_keeps_the_last_complete_epoch_and_resuming_is_bit_for_bit(error, kind):
    def optimizer():
        return optim.Adam(lr=optim.cosine_lr(0.05, 28))

    full, full_history = tg.fit(LOSS, start(), (X, Y), optimizer=optimizer(), batch_size=BATCH, epochs=7, seed=3,
                                metrics={"zero": StopAt(0, None)}, progress=False)
    with pytest.raises(kind) as info:
        tg.fit(LOSS, start(), (X, Y), optimizer=optimizer(), batch_size=BATCH, epochs=7, seed=3,
               metrics={"zero": StopAt(4, error)}, progress=False)
    err = info.value
    assert isinstance(err, tg.TrainingError) and err.epoch == 4 and err.step is None
    assert "training stopped in epoch 4 of 7" in str(err) and "epochs=4" in err.hint
    assert len(err.history.loss) == 3 and len(err.history.metrics["zero"]) == 3
    assert err.history.loss == full_history.loss[:3] and err.state["step"] == 3 * 4 == err.history.steps
    if kind is tg.TrainingInterrupted:
        assert isinstance(err, KeyboardInterrupt) and err.__cause__ is None
    else:
        assert err.__cause__ is error and "metric 'zero' raised ValueError: bad metric" in str(err)
    resumed, history = tg.fit(LOSS, err.params, (X, Y), optimizer=optimizer(), batch_size=BATCH, epochs=4,
                              state=err.state, seed=err.history.seed, progress=False)
    for name in full:
        assert np.array_equal(resumed[name], full[name])
    assert err.history.loss + history.loss == full_history.loss
    assert history.state["step"] == full_history.state["step"]
    for slot in ("m", "v"):
        for name in full:
            assert np.array_equal(history.state[slot][name], full_history.state[slot][name])


def test_a_real_ctrl_c_is_a_training_interrupted_carrying_the_last_complete_epoch():
    import signal

    calls = []

    def press_ctrl_c_in_epoch_3(params, X, y):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # Python's own handler raises KeyboardInterrupt from here
        return 0.0

    # Python's own handler, whatever the test runner installed (pytest-xdist's workers ignore SIGINT)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            tg.fit(LOSS, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=5,
                   metrics={"ctrl_c": press_ctrl_c_in_epoch_3}, progress=False)
    finally:
        signal.signal(signal.SIGINT, handler)
    err = info.value
    assert isinstance(err, tg.TrainingInterrupted) and err.epoch == 3 and len(err.history.loss) == 2
    assert err.state["step"] == 2 * 4 and "interrupted" in str(err)


def test_a_stop_in_the_first_epoch_gives_back_the_starting_point():
    p0 = start()
    with pytest.raises(tg.TrainingError) as info:
        tg.fit(LOSS, p0, (X, Y), optimizer=optim.SGD(lr=0.1, momentum=0.9), batch_size=BATCH, epochs=3,
               validation=(X_VAL, Y_VAL), metrics={"boom": StopAt(1, RuntimeError("boom"))}, progress=False)
    err = info.value
    for name in p0:
        assert np.array_equal(err.params[name], p0[name]) and err.params[name] is not p0[name]
        assert not np.any(err.state["velocity"][name])
    assert err.history.loss == [] and err.history.val_loss == [] and err.state["step"] == 0


# ------------------------------------------------------------------------------ bad input


def fit_with(**overrides):
    arguments = dict(loss=LOSS, params=start(), data=(X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH,
                     epochs=1, progress=False)
    arguments.update(overrides)
    return tg.fit(arguments.pop("loss"), arguments.pop("params"), arguments.pop("data"), **arguments)


@pytest.mark.parametrize("overrides, error, message", [
    (dict(data=(X, Y[:-1])), tg.DataError, "data\\[0\\] has 50, data\\[1\\] has 49"),
    (dict(data=(X[:0], Y[:0])), tg.DataError, "no samples"),
    (dict(data=(X, "abc")), tg.DataError, "data\\[1\\] must be a numeric array"),
    (dict(data=[]), tg.DataError, "tuple of arrays"),
    (dict(batch_size=0), tg.DataError, "batch_size must be an int from 1 to the number of samples \\(50\\), got 0"),
    (dict(batch_size=51), tg.DataError, "got 51"),
    (dict(batch_size=8.0), tg.DataError, "got 8.0"),
    (dict(batch_size=True), tg.DataError, "got True"),
    (dict(epochs=-1), tg.DataError, "epochs"),
    (dict(seed=1.5), tg.DataError, "seed"),
    (dict(progress="yes"), tg.DataError, "progress"),
    (dict(optimizer="sgd"), tg.DataError, "tg.optim.SGD"),
    (dict(loss=tg.value_and_grad(LOSS)), tg.DataError, "plain loss function"),
    (dict(data=(X, np.where(Y == 2, 3, Y))), tg.DataError, "label 3 is out of range for 3 classes"),
    (dict(validation=(X_VAL, Y_VAL - 1)), tg.DataError, "label -1 is out of range"),
    (dict(validation=(X_VAL, Y)), tg.DataError, "validation\\[0\\] has 10, validation\\[1\\] has 50"),
    (dict(params={"W": np.zeros((FEATURES, CLASSES), int), "b": np.zeros(CLASSES)}), tg.GradTypeError,
     "parameter params_W has dtype int64"),
    (dict(params={"W": np.zeros((FEATURES, CLASSES)), "b": 0.0}), tg.GradTypeError, "params_b is a float"),
    (dict(params={}), tg.DataError, "no arrays"),
    (dict(state={"step": 0, "velocity": {"W": np.zeros(2)}}), tg.DataError, "does not match"),
])
def test_bad_input(overrides, error, message):
    with pytest.raises(error, match=message):
        fit_with(**overrides)


def test_labels_out_of_range_in_a_hand_written_loss():
    def loss(params, X, y):  # indexes like nn.softmax_cross_entropy, without its checks
        logp = nn.log_softmax(X @ params["W"] + params["b"])
        return -np.mean(logp[np.arange(y.shape[0]), y])
    with pytest.raises(tg.DataError, match="IndexError on rows 0..13, 34..35 of the data: are the labels in range"):
        fit_with(loss=loss, data=(X, Y + 1))


@pytest.mark.parametrize("row", [0, 31, 49])
@pytest.mark.parametrize("label", [-1, CLASSES])
def test_one_label_out_of_range_anywhere_is_found_before_training(row, label):
    """fit checks the loss on one batch, not on all the data: the batch holds each array's extreme rows."""
    labels = Y.copy()
    labels[row] = label
    with pytest.raises(tg.DataError, match=f"label {label} is out of range"):
        fit_with(data=(X, labels), compile="never")


def test_large_finite_gradients_whose_sum_overflows_are_finite():
    # the step's check counts a large array's gradient elements that are not finite: their sum (inf here,
    # 2048 x 1e306) would stop training although every value is finite
    n = 2 * tg.train.COUNTED_CHECK

    def loss(params, X, y):
        return 1e306 * np.sum(np.sin(params["w"])) + 0.0 * np.sum(X)
    params, history = tg.fit(loss, {"w": np.zeros(n)}, (X, Y), optimizer=optim.SGD(lr=1e-320), batch_size=BATCH,
                             epochs=1, progress=False, compile="never")
    assert history.steps == -(-N // BATCH) and np.all(np.isfinite(history.loss))
    assert np.all(params["w"] < 0)


def test_the_initial_loss_is_computed_when_read():
    calls = []

    def counted(params, X, y):
        calls.append(len(X))
        return LOSS(params, X, y)
    _, history = tg.fit(counted, start(), (X, Y), optimizer=optim.SGD(lr=0.1), batch_size=BATCH, epochs=2,
                        progress=False, compile="never")
    before = len(calls)  # the trace and the check of one batch
    assert history.initial_loss == pytest.approx(float(LOSS(start(), X, Y)), rel=1e-12)
    assert calls[before:] == [len(X)]  # one pass over all the data, when read
    assert history.initial_loss == history.initial_loss and calls[before:] == [len(X)]  # computed once
    assert "initial_loss" not in repr(history) and calls[before:] == [len(X)]
    history.initial_loss = 1.5
    assert history.initial_loss == 1.5


# ------------------------------------------------------------------------------ the examples run and check themselves

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *argv):
    import runpy
    namespace = runpy.run_path(os.path.join(EXAMPLES, name))  # not as __main__: main() is called below
    return namespace["main"](*argv)


@pytest.mark.parametrize("name", ["xor.py", "svm_two_layer.py", "regression.py"])
def test_lecture_examples(name, capsys):
    run_example(name)  # each asserts what it shows (XOR learned, spirals separated, sin(2x) fitted)
    assert capsys.readouterr().out


def test_digits_example(tmp_path, capsys):
    pytest.importorskip("sklearn")
    png = tmp_path / "loss.png"
    accuracy = run_example("train_digits.py", ["--epochs", "12", "--png", str(png)])
    assert accuracy >= 0.96
    out = capsys.readouterr().out
    assert "epoch 12/12" in out and "test accuracy" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists() and "no loss curve" in out
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_progress_prints_about_twenty_lines_for_many_epochs(capsys):
    tg.fit(sqrt_loss, {"w": np.array([100.0])}, ONES, optimizer=optim.SGD(lr=1e-3), batch_size=4, epochs=45,
           shuffle=False, progress="plain")
    epochs = [int(line.split()[1].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert epochs == [1] + list(range(2, 45, 2)) + [45]


SCALE = np.ones(1)


def scaled_loss(p, X):
    return np.sum(np.sqrt(p["w"]) * SCALE) * np.mean(X)  # reads the global SCALE at every epoch


def test_arrays_the_loss_reads_from_globals_are_read_every_epoch():
    global SCALE
    SCALE = np.ones(1)

    def change_it(params, X):
        global SCALE
        SCALE = 2 * SCALE if SCALE.shape == (1,) else SCALE
        return 0.0
    params, _ = tg.fit(scaled_loss, {"w": np.array([4.0])}, ONES, optimizer=optim.SGD(lr=1.0), batch_size=4,
                       epochs=2, shuffle=False, progress=False, metrics={"change": change_it})
    # epoch 1 with SCALE 1: w = 4 - 1 * 0.5 / 2; epoch 2 with SCALE 2: w -= 2 * 0.5 / sqrt(w)
    w = 4.0 - 0.25
    np.testing.assert_allclose(params["w"], [w - 1.0 / np.sqrt(w)], rtol=1e-14)

    def reshape_it(params, X):
        global SCALE
        SCALE = np.ones(2)
        return 0.0
    SCALE = np.ones(1)
    with pytest.raises(tg.DataError, match=r"SCALE\) changed from f64\[1\] to f64\[2\]"):
        tg.fit(scaled_loss, {"w": np.array([4.0])}, ONES, optimizer=optim.SGD(lr=1.0), batch_size=4, epochs=2,
               progress=False, metrics={"reshape": reshape_it})
    SCALE = np.ones(1)
