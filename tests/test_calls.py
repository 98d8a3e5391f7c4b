"""The per-call fast path: guards for whole argument trees, the bounded specialisation cache, freeing."""
import collections
import gc
import threading
import weakref

import numpy as np
import pytest

import tracegrad as tg


def _slow(f, *args):
    """What the general path returns for ``args`` (no guard involved)."""
    entry = f.specialize(*args)
    return entry.run(tg.api.flatten(args)[0])


def _assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (a != a and b != b)


def _takes_fast_path(f, *args) -> bool:
    """Whether calling ``f(*args)`` now goes through its guard alone (never reaching ``Function._use``,
    which every other path calls)."""
    slow = []
    f._use = lambda entry: (slow.append(entry), type(f)._use(f, entry))
    try:
        f(*args)
    finally:
        del f._use
    return not slow and type(f).__call__ is f.specialize(*args).guard is not None


def _mlp(params, x):
    h = np.tanh(x @ params["layers"][0]["W"] + params["layers"][0]["b"])
    out = h @ params["layers"][1]["W"] + params["layers"][1]["b"]
    return np.sum(out ** 2) * params["scale"]


@pytest.fixture
def tree(rng):
    return {"layers": [{"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)},
                       {"W": rng.normal(size=(4, 2)), "b": rng.normal(size=2)}],
            "scale": 0.5, "unused": None}


def _with_aux(params, x):
    return _mlp(params, x), {"half": 0.5 * np.sum(x), "n": (np.float32(1.0) + x.shape[0], [x * 2.0])}


CASES = {
    "value_and_grad": lambda: tg.value_and_grad(_mlp),
    "grad": lambda: tg.grad(_mlp),
    "grad, two argnums": lambda: tg.grad(_mlp, argnums=(0, 1)),
    "value_and_grad, aux": lambda: tg.value_and_grad(_with_aux, has_aux=True),
    "grad, aux": lambda: tg.grad(_with_aux, has_aux=True),
    "jit, a tree out": lambda: tg.jit(lambda p, x: {"y": (x @ p["layers"][0]["W"], [np.float32(2.0) * p["scale"]]),
                                                  "z": None, "c": 3.0}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tree_of_arguments_takes_the_fast_path_and_gives_what_the_general_path_gives(case, tree, rng):
    f = CASES[case]()
    x = rng.normal(size=(5, 3))
    first = f(tree, x)
    assert _takes_fast_path(f, tree, x)
    second = f(tree, x)  # through the guard
    _assert_same(second, first)
    _assert_same(second, _slow(f, tree, x))
    if case.startswith("value_and_grad"):
        assert type(second[1]["scale"]) is float and second[1]["unused"] is None
        assert list(second[1]) == ["layers", "scale", "unused"]  # keys sorted, as unflatten gives them


def _keys_swapped(tree):
    return {"layers": tree["layers"], "scale": tree["scale"], "other": None}


MISMATCHES = {
    "another key set": _keys_swapped,
    "a key more": lambda t: dict(t, extra=None),
    "a key fewer": lambda t: {k: v for k, v in t.items() if k != "unused"},
    "float32 leaf": lambda t: dict(t, layers=[dict(t["layers"][0], b=t["layers"][0]["b"].astype(np.float32)),
                                              t["layers"][1]]),
    "another shape": lambda t: dict(t, layers=[t["layers"][0], {"W": t["layers"][1]["W"][:, :1],
                                                                 "b": t["layers"][1]["b"][:1]}]),
    "a tuple for a list": lambda t: dict(t, layers=tuple(t["layers"])),
    "int for float": lambda t: dict(t, scale=1),
    "array for float": lambda t: dict(t, scale=np.array(0.5)),
    "None for a leaf": lambda t: dict(t, scale=None),
}


@pytest.mark.parametrize("change", MISMATCHES)
def test_arguments_the_guard_was_not_made_for_take_the_general_path(change, tree, rng):
    x = rng.normal(size=(5, 3))
    f = tg.value_and_grad(_mlp)
    f(tree, x)
    assert _takes_fast_path(f, tree, x)
    other = MISMATCHES[change](tree)
    fresh = tg.value_and_grad(_mlp)
    try:
        expected = fresh(other, x)
    except Exception as e:  # the general path's error: the guard must give the same
        with pytest.raises(type(e)):
            f(other, x)
    else:
        _assert_same(f(other, x), expected)
    _assert_same(f(tree, x), _slow(f, tree, x))  # and back


def test_containers_the_trees_do_not_know_are_still_refused(tree, rng):
    x = rng.normal(size=(5, 3))
    Pair = collections.namedtuple("Pair", "a b")
    f = tg.grad(lambda p, x: np.sum(x * p[0]) + p[1])
    g = f((np.ones(3), 2.0), x[0])
    assert _takes_fast_path(f, (np.ones(3), 2.0), x[0])
    np.testing.assert_array_equal(g[0], x[0])
    for odd in (Pair(np.ones(3), 2.0), [np.ones(3), 2.0]):
        fresh = tg.grad(lambda p, x: np.sum(x * p[0]) + p[1])
        try:
            expected = fresh(odd, x[0])
        except tg.TracegradError as e:
            with pytest.raises(type(e)):
                f(odd, x[0])
        else:
            _assert_same(f(odd, x[0]), expected)
    ordered = collections.OrderedDict(tree)
    h = tg.grad(_mlp)
    h(tree, x)
    with pytest.raises(tg.TracegradError):
        tg.grad(_mlp)(ordered, x)
    with pytest.raises(tg.TracegradError):
        h(ordered, x)


def test_keyword_and_missing_arguments_go_through_the_general_path(tree, rng):
    x = rng.normal(size=(5, 3))
    f = tg.value_and_grad(_mlp)
    expected = f(tree, x)
    _assert_same(f(tree, x=x), expected)
    _assert_same(f(params=tree, x=x), expected)
    with pytest.raises(tg.GradTypeError):
        f(tree)
    with pytest.raises(tg.GradTypeError):
        f(tree, x, x)


def test_specialisations_are_bounded_and_the_least_recently_used_is_dropped():
    traces = []

    def loss(x):
        traces.append(x.shape)
        return np.sum(x ** 2)

    f = tg.grad(loss)
    f.max_specializations = 2
    a, b, c = np.ones(2), np.ones(3), np.ones(4)
    for x in (a, b, a, a, c):  # a was used after b: b is the one dropped
        np.testing.assert_array_equal(f(x), 2 * x)
    assert len(f._cache) == 2 and len(f._flat) == 2
    assert traces == [(2,), (3,), (4,)]
    np.testing.assert_array_equal(f(a), 2 * a)
    assert traces == [(2,), (3,), (4,)]
    np.testing.assert_array_equal(f(b), 2 * b)  # traced again
    assert traces == [(2,), (3,), (4,), (3,)]
    assert len(f._cache) == 2


def test_the_default_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_MAX_SPECIALIZATIONS", "3")
    assert tg.api._max_specializations() == 3
    monkeypatch.setenv("TRACEGRAD_MAX_SPECIALIZATIONS", "many")
    with pytest.raises(ValueError, match="TRACEGRAD_MAX_SPECIALIZATIONS"):
        tg.api._max_specializations()


@pytest.fixture
def no_recent_modules(monkeypatch):
    """The backend keeps the last few modules it loaded alive on purpose: not those of these tests."""
    from tracegrad import backend

    monkeypatch.setattr(backend, "_recent", collections.deque(maxlen=0))


def _dispatchers(f, *arg_lists):
    return [weakref.ref(f.specialize(*args).dispatcher) for args in arg_lists]


def test_a_dropped_specialisation_is_freed(no_recent_modules):
    f = tg.grad(lambda x: np.sum(np.sin(x) * 3.0))
    f.max_specializations = 1
    f(np.ones(5))
    f(np.ones(5))  # its guard is installed
    (first,) = _dispatchers(f, (np.ones(5),))
    f(np.ones(6))  # drops the first
    gc.collect()
    assert first() is None
    np.testing.assert_allclose(f(np.ones(6)), 3 * np.cos(np.ones(6)))


def test_del_f_frees_its_compiled_code(tree, rng, no_recent_modules):
    f = tg.value_and_grad(lambda p, x: _mlp(p, x) * 1.25)
    x = rng.normal(size=(5, 3))
    f(tree, x)
    f(tree, x)
    f(tree, x[:2])
    refs = _dispatchers(f, (tree, x), (tree, x[:2])) + [weakref.ref(f), weakref.ref(type(f))]
    del f
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_arrays_numba_made_take_the_fast_path_too():
    # Numba's float32 arrays hold a dtype equal to, but not the same object as, NumPy's own
    x = tg.jit(lambda x: x * 2.0)(np.ones(3, np.float32))
    assert x.dtype == np.float32
    f = tg.grad(lambda p: np.sum(p["x"] ** 2))
    f({"x": np.ones(3, np.float32)})
    assert _takes_fast_path(f, {"x": x})
    np.testing.assert_array_equal(f({"x": x})["x"], 4 * np.ones(3, np.float32))


def test_the_guard_writer_example_holds():
    import doctest

    from tracegrad import guards

    assert doctest.testmod(guards).failed == 0


def test_a_trace_in_another_thread_leaves_this_threads_calls_alone():
    f = tg.grad(lambda x: np.sum(np.sin(x)))
    x = np.linspace(0.0, 1.0, 5)
    want = f(x)
    f(x)
    entered, release = threading.Event(), threading.Event()

    def slow_loss(y):
        entered.set()
        release.wait(30)
        return np.sum(y * y)

    results = []
    thread = threading.Thread(target=lambda: results.append(tg.grad(slow_loss)(np.ones(3))))
    thread.start()
    try:
        assert entered.wait(30)
        assert tg.core.ENTERED  # another thread is tracing: the guard hands calls to _dispatch
        got = f(x)
    finally:
        release.set()
        thread.join()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(results[0], 2.0 * np.ones(3))
    assert not tg.core.ENTERED


@pytest.mark.parametrize("x", [1.1, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-45])
def test_float32_scalars_come_back_as_float32_with_their_exact_value(x):
    # the guard writes Numba's float (a float32's exact value) back as float32 by one32 * o0, not float32(o0)
    f = tg.jit(lambda a: a[0] * np.float32(1.0))
    a = np.array([x], np.float32)
    f(a)
    assert _takes_fast_path(f, a)
    for result in (f(a), _slow(f, a)):
        assert type(result) is np.float32
        assert result.tobytes() == a[0].tobytes() or (np.isnan(result) and np.isnan(a[0]))
