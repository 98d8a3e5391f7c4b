"""The tiers: NumPy evaluation while Numba compiles in a worker process, then the compiled code.

The rest of the suite runs with TRACEGRAD_COMPILE=wait (conftest.py); these tests choose their tier.
"""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import tiers
from tracegrad.errors import CompileWarning, NonFiniteError, TracegradError
from tracegrad.interpret import evaluate

from test_primitives import PARAMS, make_case

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh_cache(tmp_path):
    """An empty cache directory: nothing is compiled yet, so a first call must evaluate."""
    tg.set_cache_dir(tmp_path)
    yield tmp_path
    tg.set_cache_dir(None)


def mlp_loss(W1, b1, W2, X, y):
    h = np.tanh(X @ W1 + b1)
    return np.mean((h @ W2 - y) ** 2)


def mlp_args(rng):
    return (rng.normal(size=(6, 8)), np.zeros(8), rng.normal(size=(8, 3)), rng.normal(size=(5, 6)),
            rng.normal(size=(5, 3)))


def assert_same(a, b):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        if isinstance(x, tuple):
            assert_same(x, y)
        else:
            np.testing.assert_array_equal(x, y)
            assert type(x) is type(y)


# ------------------------------------------------------------------------------ the evaluator


@pytest.mark.parametrize("name,i", PARAMS)
def test_evaluator_equals_the_reference_interpreter_on_optimized_graphs(name, i):
    loss, args, _ = make_case(name, i)
    compiled = tg.value_and_grad(loss, argnums=tuple(range(len(args))), compile="never").specialize(*args)
    inputs = [*args, *compiled.captured()]
    with np.errstate(all="ignore"):
        expected = evaluate(compiled.graph, *inputs)
    got = compiled.evaluator(*inputs)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # the same steps interpreted one by one (graphs over STRAIGHT_LINE_MAX nodes): the same values
    stepwise = tiers.Evaluator(compiled.graph, compiled.module.checks)
    stepwise._fast = None
    for a, b in zip(stepwise(*inputs), got):
        np.testing.assert_array_equal(a, b)


def test_a_graph_over_the_straight_line_limit_is_evaluated_step_by_step(monkeypatch, rng):
    x = rng.normal(size=7)
    want = np.sum(np.sin(x) * x + 1.0)
    small = tg.jit(lambda x: np.sum(np.sin(x) * x + 1.0), compile="never")
    assert small(x) == pytest.approx(want, rel=1e-14) and small.specialize(x).evaluator._fast is not None
    monkeypatch.setattr(tiers, "STRAIGHT_LINE_MAX", 0)
    large = tiers.Evaluator(small.specialize(x).graph)
    assert large._fast is None and large(x) == (small(x),)


# The evaluator against the compiled code on every primitive case (float64 and float32, rtol 1e-12 in float64):
# tests/test_primitives_compiled.py, in the test that compiles each case once for its own check too.


def test_evaluator_returns_what_compiled_code_returns(rng):
    x = rng.normal(size=(3, 4))
    for fun in (lambda x: x, lambda x: x.T, lambda x: (x, x), lambda x: (np.sum(x), x.reshape(-1)),
                lambda x: np.broadcast_to(np.sum(x), (2, 2)), lambda x: np.float32(2.0) * np.sum(x)):
        want = tg.jit(fun, compile="wait")(x)
        got = tg.jit(fun, compile="never")(x)
        assert_same(got, want)
        for g in got if isinstance(got, tuple) else (got,):
            if isinstance(g, np.ndarray):
                assert not np.shares_memory(g, x) and g.flags.writeable
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], np.ndarray):
            assert not np.shares_memory(got[0], got[1])


def test_evaluator_keeps_float32_and_python_floats(rng):
    x32 = rng.normal(size=5).astype(np.float32)
    vg = tg.value_and_grad(lambda x: np.sum(np.exp(x) * 0.5), compile="never")
    value, g = vg(x32)
    assert type(value) is np.float32 and g.dtype == np.float32
    value, g = tg.value_and_grad(lambda a, b: a * b + np.sin(a), compile="never")(2.0, 3.0)
    assert type(value) is float and type(g) is float


def test_evaluator_divides_by_zero_like_compiled_code_and_quietly():
    f = lambda x: np.sum(1.0 / x + np.log(x))  # noqa: E731
    x = np.array([0.0, 1.0, -1.0])
    with np.errstate(all="raise"):  # the evaluator sets its own: no FloatingPointError, no warning
        got = tg.jit(f, compile="never")(x)
    assert_same(got, tg.jit(f, compile="wait")(x))


def nan_loss(x, y):
    z = np.log(x) * y
    return np.sum(np.sqrt(z - 1.0))


@pytest.mark.parametrize("x", [np.array([1.0, 0.0]), np.array([1.0, 2.0])], ids=["log0", "sqrt-negative"])
def test_debug_nans_raises_the_same_error_in_both_tiers(x):
    y = np.array([1.0, 1.0])
    messages = []
    for mode in ("wait", "never"):
        with pytest.raises(NonFiniteError) as err:
            tg.grad(nan_loss, debug_nans=True, compile=mode)(x, y)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "test_tiers.py" in messages[0]  # the message names the value and the user's line


# ------------------------------------------------------------------------------ the setting


def test_the_compile_setting_is_checked_and_global(monkeypatch):
    with pytest.raises(TracegradError, match="compile must be one of"):
        tg.grad(np.sum, compile="later")
    with pytest.raises(TracegradError, match="compile must be one of"):
        tg.set_compile("fast")
    monkeypatch.setenv("TRACEGRAD_COMPILE", "never")
    assert tiers.compile_mode() == "never"
    tg.set_compile("background")
    try:
        assert tiers.compile_mode() == "background"
        f = tg.jit(lambda x: x * 2.0)
        f.specialize(1.0)
        assert f.specialize(1.0).compile_mode == "background"
        assert tg.jit(lambda x: x * 2.0, compile="wait").specialize(1.0).compile_mode == "wait"
    finally:
        tg.set_compile(None)
    monkeypatch.setenv("TRACEGRAD_COMPILE", "sometimes")
    with pytest.raises(TracegradError, match="TRACEGRAD_COMPILE must be one of"):
        tiers.compile_mode()


def test_never_does_not_compile(fresh_cache, rng):
    args = mlp_args(rng)
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="never")
    first = vg(*args)
    vg.wait()  # nothing to wait for
    assert vg.specialize(*args).tier == "evaluating"
    assert_same(vg(*args), first)
    assert not vg.specialize(*args).dispatcher.overloads


# ------------------------------------------------------------------------------ background


def test_background_answers_with_the_evaluator_then_runs_compiled(fresh_cache, rng):
    args = mlp_args(rng)
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="background")
    first = vg(*args)
    entry = vg.specialize(*args)
    assert entry.tier == "evaluating"
    assert "evaluate" in entry.timings and "numba" not in entry.timings
    assert_same(first, tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="never")(*args))
    vg.wait()
    assert entry.tier == "compiled"
    assert {"background", "numba"} <= set(entry.timings)
    later = vg(*args)
    assert_same(later, tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="wait")(*args))
    stats = entry.dispatcher.stats
    assert sum(stats.cache_hits.values()) == 1 and not sum(stats.cache_misses.values())  # loaded, not compiled here
    vg(*args)
    assert type(vg).__call__ is entry.guard  # and the per-call fast path is back


def test_background_switches_by_itself_once_compiled(fresh_cache):
    f = tg.grad(lambda x: np.sum(np.sin(x) * x), compile="background")
    x = np.linspace(0, 1, 7)
    f(x)
    entry = f.specialize(x)
    entry._background.ready.wait(timeout=120)
    f(x)
    assert entry.tier == "compiled"


def test_the_compile_starts_once_the_calls_have_spent_compile_after_on_numpy(fresh_cache, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_COMPILE_AFTER", "0.2")
    f = tg.grad(lambda x: np.sum(np.sin(x) * np.cos(x) * x), compile="background")
    x = np.linspace(0, 1, 200_000)  # a call on NumPy takes a few milliseconds
    want = f(x)
    background = f.specialize(x)._background
    assert background._deferred and background.job is None  # one call: not yet
    deadline = time.monotonic() + 60
    while background.job is None and time.monotonic() < deadline:
        np.testing.assert_array_equal(f(x), want)
    assert background.job is not None and background._evaluated >= 0.2
    f.wait()
    assert f.specialize(x).tier == "compiled"
    np.testing.assert_allclose(f(x), want, rtol=1e-12)


def test_wait_starts_a_compile_still_waiting_for_its_calls(fresh_cache, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_COMPILE_AFTER", "1000")
    f = tg.grad(lambda x: np.sum(np.tan(x) * x), compile="background")
    x = np.linspace(0, 1, 5)
    f(x)
    entry = f.specialize(x)
    assert entry.tier == "evaluating" and entry._background.job is None
    f.wait()
    assert entry.tier == "compiled" and entry._background.job is not None


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_compile_after_must_be_seconds(monkeypatch, value):
    monkeypatch.setenv("TRACEGRAD_COMPILE_AFTER", value)
    with pytest.raises(TracegradError, match="TRACEGRAD_COMPILE_AFTER"):
        tiers.compile_after()


def test_a_second_process_loads_the_background_compile_from_the_cache(fresh_cache, rng):
    vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="background")
    vg(*mlp_args(rng))
    vg.wait()
    script = textwrap.dedent("""
        import numpy as np, tracegrad as tg
        from test_tiers import mlp_loss, mlp_args
        vg = tg.value_and_grad(mlp_loss, argnums=(0, 1, 2), compile="background")
        args = mlp_args(np.random.default_rng(0))
        vg(*args)  # evaluated while a thread loads the cache entry (the worker is not needed)
        vg.wait()
        entry = vg.specialize(*args)
        print(entry.tier, entry.timings["background"], tg.tiers.worker_pid(),
              sum(entry.dispatcher.stats.cache_misses.values()))
    """)
    out = run_python(script, fresh_cache)
    assert out.stdout.split() == ["compiled", "0.0", "None", "0"], out.stderr


def test_a_failed_background_compile_warns_once_and_keeps_evaluating(fresh_cache, rng):
    f = tg.grad(lambda x: np.sum(np.cos(x) ** 2), compile="background")
    x = rng.normal(size=4)
    entry = f.specialize(x)
    path = tg.backend.module_path(entry.module)
    path.write_text("this is not python\n")  # the worker compiles the file on disk
    first = f(x)
    assert entry.tier == "evaluating"
    with pytest.warns(CompileWarning, match=str(path.name)) as caught:
        f.wait()
        later = [f(x) for _ in range(3)]
    assert len([w for w in caught if issubclass(w.category, CompileWarning)]) == 1
    assert entry.tier == "evaluating"
    want = tg.grad(lambda x: np.sum(np.cos(x) ** 2), compile="never")(x)
    for g in [first] + later:
        np.testing.assert_array_equal(g, want)


def test_one_worker_compiles_for_every_function(fresh_cache):
    fs = [tg.jit(lambda x, k=k: np.tanh(x) * float(k), compile="background") for k in range(3)]
    for f in fs:
        f(np.ones(3))
    pid = tiers.worker_pid()
    assert pid is not None
    for f in fs:
        f.wait()
    assert tiers.worker_pid() == pid
    same = [tg.jit(lambda x: np.exp(x) + 1.0, compile="background") for _ in range(2)]
    jobs = []
    for f in same:
        f(np.ones(2))
        jobs.append(f.specialize(np.ones(2))._background.job)
    assert jobs[0] is jobs[1]  # the same module and types: compiled once


# ------------------------------------------------------------------------------ the worker ends with us


def run_python(script, cache, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               TRACEGRAD_CACHE_DIR=str(cache), TRACEGRAD_COMPILE="background")
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          **kwargs)


def gone(pid, within=10.0):
    """Whether process ``pid`` has ended, waiting at most ``within`` seconds for it to."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


WIDE = textwrap.dedent("""
    import os, signal, sys, numpy as np, tracegrad as tg
    def wide(x):  # a few hundred statements: Numba takes seconds
        total = 0.0
        for k in range(120):
            total = total + np.sum(np.sin(x * (k + 1.0)) * np.cos(x[::-1] + k))
        return total
    x = np.linspace(0, 1, 5)
    f = tg.value_and_grad(wide)
    print(f(x)[0], flush=True)
    print(tg.tiers.worker_pid(), flush=True)
""")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_the_worker_does_not_outlive_its_process(tmp_path, ending):
    script = WIDE + ("os.kill(os.getpid(), signal.SIGKILL)\n" if ending == "sigkill" else "sys.exit(0)\n")
    out = run_python(script, tmp_path)
    lines = out.stdout.split()
    assert len(lines) == 2, out.stderr
    pid = int(lines[1])
    assert gone(pid), f"compile worker {pid} still running after its parent ended ({ending})"
    # whatever the worker was writing when it died, a new process computes the same, compiled or not
    # (Numba writes each cache file to a temporary name, then renames it: a new process finds a whole
    # entry or none)
    again = run_python(WIDE, tmp_path)
    assert np.isclose(float(again.stdout.split()[0]), float(lines[0]), rtol=1e-12), again.stderr


# ------------------------------------------------------------------------------ fit


def fit_problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(45, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    params = {"W": rng.normal(size=(3, 2)) * 0.3, "b": np.zeros(2)}
    return params, (X, y)


def fit_loss(p, X, y):
    return tg.nn.softmax_cross_entropy(X @ p["W"] + p["b"], y)


@pytest.mark.parametrize("optimizer", [tg.optim.SGD(lr=0.1, momentum=0.9), tg.optim.Adam(lr=0.05),
                                       tg.optim.RMSProp(lr=0.01, momentum=0.5)], ids=["sgd", "adam", "rmsprop"])
def test_fit_on_numpy_trains_like_the_compiled_epochs(optimizer):
    params, data = fit_problem()
    runs = {mode: tg.fit(fit_loss, params, data, optimizer=optimizer, batch_size=8, epochs=3, progress=False,
                         compile=mode, seed=5) for mode in ("wait", "never")}
    (p_wait, h_wait), (p_never, h_never) = runs["wait"], runs["never"]
    assert h_wait.compiled == [True] * 3 and h_never.compiled == [False] * 3
    assert h_wait.seed == h_never.seed and h_wait.steps == h_never.steps == 18  # the same shuffles and steps
    np.testing.assert_allclose(h_never.loss, h_wait.loss, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(p_never[k], p_wait[k], rtol=1e-12, atol=1e-14)


def test_fit_wait_is_reproducible_bit_for_bit():
    params, data = fit_problem()
    runs = [tg.fit(fit_loss, params, data, optimizer=tg.optim.SGD(lr=0.1, momentum=0.9), batch_size=8, epochs=2,
                   progress=False, compile="wait", seed=1) for _ in range(2)]
    assert runs[0][1].loss == runs[1][1].loss
    for k in params:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])


def test_fit_switches_to_compiled_epochs_between_epochs(fresh_cache, capsys):
    params, data = fit_problem(1)

    def wait_for_numba(p, X, y):  # a metric runs after each epoch: after the first, the compile is done
        tiers.wait_all()
        return 0.0
    p, h = tg.fit(fit_loss, params, data, optimizer=tg.optim.SGD(lr=0.1), batch_size=8, epochs=3, seed=2,
                  compile="background", progress="plain", metrics={"waited": wait_for_numba})
    assert h.compiled == [False, True, True]
    lines = capsys.readouterr().out.splitlines()
    assert "evaluating" in lines[0] and all("compiled" in line for line in lines[1:])
    p_wait, h_wait = tg.fit(fit_loss, params, data, optimizer=tg.optim.SGD(lr=0.1), batch_size=8, epochs=3, seed=2,
                            compile="wait", progress=False)
    np.testing.assert_allclose(h.loss, h_wait.loss, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(p[k], p_wait[k], rtol=1e-12, atol=1e-14)


def test_fit_loads_its_cached_epoch_before_the_first_epoch(fresh_cache):
    # the epoch's temporaries in a workspace (as a larger model's are): what the epochs run is the function
    # taking it, and that is what must come from the cache, not only the function around it
    script = textwrap.dedent("""
        import numpy as np, tracegrad as tg
        tg.codegen.WORKSPACE_BYTES = 64
        from test_tiers import fit_problem, fit_loss
        params, data = fit_problem(1)
        p, h = tg.fit(fit_loss, params, data, optimizer=tg.optim.SGD(lr=0.1), batch_size=8, epochs=2, seed=2,
                      compile="{mode}", progress=False)
        print(*h.compiled)
    """)
    first = run_python(script.format(mode="wait"), fresh_cache)
    assert first.stdout.split() == ["True", "True"], first.stderr
    sources = [path.read_text() for path in fresh_cache.glob("fit_loss_fit_epoch_*.py")]
    assert any("def fit_loss_fit_epoch_workspace(" in source for source in sources)
    second = run_python(script.format(mode="background"), fresh_cache)
    assert second.stdout.split() == ["True", "True"], second.stderr


def test_a_long_background_compile_is_logged(caplog):
    job = tiers.Job("slow_value_and_grad")
    with caplog.at_level("INFO", logger="tracegrad"):
        tiers._log_still_compiling(job)  # what the timer calls after tiers.LOG_AFTER seconds
        job.done.set()
        tiers._log_still_compiling(job)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "compiling slow_value_and_grad with Numba in the background" in messages[0]


def test_a_long_compile_is_announced_before_it_starts(fresh_cache, caplog, monkeypatch):
    from tracegrad import backend

    def f(x):
        return np.sum(np.tanh(x) * x)
    x = np.linspace(-1.0, 1.0, 5)
    estimate = backend.compile_estimate(tg.make_graph(tg.value_and_grad(f, compile="wait"), x))
    monkeypatch.setattr(backend, "LONG_COMPILE", estimate)  # this small function counts as long
    with caplog.at_level("INFO", logger="tracegrad"):
        tg.value_and_grad(f, compile="wait")(x)  # nothing in the cache: announced, then compiled
        first = [r for r in caplog.records if "about" in r.getMessage()]
        tg.value_and_grad(f, compile="wait")(x)  # a new function object, the same code: loaded, not announced
        second = [r for r in caplog.records if "about" in r.getMessage()][len(first):]
    assert len(first) == 1 and "compiling f_value_and_grad with Numba: about" in first[0].getMessage()
    assert first[0].levelname == "INFO" and not second
    monkeypatch.setattr(backend, "LONG_COMPILE", estimate * 2)  # a shorter estimate is not worth a message
    caplog.clear()
    with caplog.at_level("INFO", logger="tracegrad"):
        tg.value_and_grad(lambda x: np.sum(np.sin(x)), compile="wait")(x)
    assert not [r for r in caplog.records if "about" in r.getMessage()]


def test_the_compile_estimate_grows_with_the_code():
    from tracegrad import backend

    def unrolled(n):
        def f(x, w):
            for _ in range(n):
                x = np.tanh(x * w) + 0.5 * x
            return x
        return tg.make_graph(tg.value_and_grad(f, argnums=(0, 1)), 0.3, 0.9)
    import tracegrad.roll as roll
    enabled, roll.ENABLED = roll.ENABLED, False  # written out, not rolled into a loop
    try:
        graphs = unrolled(10), unrolled(100)
    finally:
        roll.ENABLED = enabled
    (scalars_short, _, _), (scalars_long, _, _) = map(backend.code_size, graphs)
    short, long = map(backend.compile_estimate, graphs)
    assert scalars_long > 5 * scalars_short and long > short
    # arrays cost more than scalars: a matrix product's typing is most of a small MLP's compile
    matmul = backend.compile_estimate(tg.make_graph(tg.value_and_grad(lambda a, b: np.sum(a @ b)),
                                                    np.ones((3, 3)), np.ones((3, 3))))
    assert matmul > backend.compile_estimate(tg.make_graph(tg.value_and_grad(lambda a, b: a * b), 1.0, 2.0))


def test_the_worker_outlives_the_directory_it_was_started_from(tmp_path):
    # a program that starts the worker from a temporary directory and removes it: later compiles still work
    script = textwrap.dedent("""
        import os, shutil, tempfile, numpy as np, tracegrad as tg
        here, tmp = os.getcwd(), tempfile.mkdtemp()
        os.chdir(tmp)
        f = tg.grad(lambda x: np.sum(np.sin(x)), compile="background")
        f(np.ones(3))
        f.wait()
        os.chdir(here)
        shutil.rmtree(tmp)
        g = tg.grad(lambda x: np.sum(np.cos(x) * x), compile="background")
        g(np.ones(3))
        g.wait()
        print(f.specialize(np.ones(3)).tier, g.specialize(np.ones(3)).tier)
    """)
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(tmp_path / "cache"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["compiled", "compiled"], out.stdout + out.stderr


def test_the_setting_survives_pickling():
    import pickle

    f = pickle.loads(pickle.dumps(tg.grad(np.sum, compile="never")))
    assert f.compile == "never"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_evaluates_and_leaves_the_parents_worker_alone(tmp_path):
    script = textwrap.dedent("""
        import os, sys, warnings, numpy as np, tracegrad as tg
        f = tg.grad(lambda x: np.sum(np.sinh(x) * 3.0))
        x = np.linspace(0, 1, 4)
        f(x)
        worker = tg.tiers.worker_pid()
        child = os.fork()
        if child == 0:  # the parent's compile will not finish here: the child evaluates, warned once
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                g = f(x)
            ok = (f.specialize(x).tier == "evaluating" and tg.tiers.worker_pid() is None and len(caught) == 1
                  and np.allclose(g, 3 * np.cosh(x)))
            sys.exit(0 if ok else 1)  # a normal exit: atexit runs, and must not kill the parent's worker
        _, status = os.waitpid(child, 0)
        print(os.waitstatus_to_exitcode(status), tg.tiers.worker_pid() == worker)
    """)
    out = run_python(script, tmp_path)
    assert out.stdout.split() == ["0", "True"], out.stderr
