"""Namedtuples and dataclasses as parameter containers: traced as pytrees (fields in declaration order),
given back as the same class, through the per-call guards, the optimisers and tg.fit."""
import collections
import dataclasses
from typing import NamedTuple

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.pytree import flatten, unflatten
from tracegrad.testing import numeric_grad

Pair = collections.namedtuple("Pair", "w b")


class Layer(NamedTuple):
    w: np.ndarray
    b: np.ndarray


@dataclasses.dataclass
class Params:
    w: np.ndarray
    b: np.ndarray
    extras: dict = dataclasses.field(default_factory=dict)


INIT_CALLS = []


@dataclasses.dataclass(frozen=True)
class Frozen:
    layers: list
    scale: float = 1.0

    def __post_init__(self):
        INIT_CALLS.append(self)


def loss(p, x):
    return np.sum(np.tanh(x @ p.w + p.b) ** 2)


def _takes_fast_path(f, *args) -> bool:
    slow = []
    f._use = lambda entry: (slow.append(entry), type(f)._use(f, entry))
    try:
        f(*args)
    finally:
        del f._use
    return not slow and f.specialize(*args).guard is not None


@pytest.fixture
def x(rng):
    return rng.normal(size=(5, 3))


@pytest.mark.parametrize("make", [Pair, Layer, lambda w, b: Params(w, b, {"c": 0.5 * b})],
                         ids=["namedtuple", "NamedTuple", "dataclass"])
def test_gradients_come_back_in_the_same_class(make, x, rng):
    p = make(rng.normal(size=(3, 2)), rng.normal(size=2))
    f = tg.value_and_grad(loss)
    value, g = f(p, x)
    assert type(g) is type(p)
    assert value == pytest.approx(loss(p, x), rel=1e-12)
    expected = numeric_grad(loss, p, x)
    assert type(expected) is type(p)
    for a, b in zip(flatten(g)[0], flatten(expected)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert _takes_fast_path(f, p, x)  # the guard checks the class and reads the fields
    again = f(p, x)[1]
    assert type(again) is type(p)
    for a, b in zip(flatten(again)[0], flatten(g)[0]):
        np.testing.assert_array_equal(a, b)


def test_leaves_are_named_after_fields(x, rng):
    source = tg.source(tg.grad(loss), Params(np.ones((3, 2)), np.ones(2), {"c": np.ones(2)}), x)
    assert "def loss_grad(p_w, p_b, p_extras_c, x):" in source


def test_same_fields_in_another_class_is_another_structure(x, rng):
    w, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    f = tg.grad(loss)
    assert type(f(Pair(w, b), x)) is Pair
    assert type(f(Layer(w, b), x)) is Layer  # the guard made for Pair does not take a Layer
    assert type(f(Pair(w, b), x)) is Pair
    assert flatten(Pair(w, b))[1] != flatten(Layer(w, b))[1]
    assert flatten(Pair(w, b))[1] != flatten((w, b))[1]
    assert repr(flatten(Pair(w, b))[1]) == "Pair(*, *)"
    assert repr(flatten(Params(w, b))[1]) == "Params(w=*, b=*, extras={})"


def test_a_frozen_dataclass_nested_with_dicts_and_lists(x, rng):
    f = Frozen([{"w": rng.normal(size=(3, 2))}, {"w": rng.normal(size=(3, 2))}], 2.0)

    def two(f, x):
        return f.scale * np.sum((x @ f.layers[0]["w"]) * (x @ f.layers[1]["w"]))

    INIT_CALLS.clear()
    g = tg.grad(two)(f, x)
    assert type(g) is Frozen and type(g.layers[0]) is dict
    assert INIT_CALLS == []  # rebuilt without __init__ / __post_init__ (they may not accept traced values)
    np.testing.assert_allclose(g.layers[0]["w"], x.T @ (x @ f.layers[1]["w"]) * 2.0, rtol=1e-12)
    assert g.scale == pytest.approx(two(f, x) / 2.0, rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.scale = 1.0


def test_results_in_a_namedtuple_and_a_dataclass(rng):
    f = tg.jit(lambda p: (Pair(p.w * 2, p.b + 1), Params(p.b, p.w, {})))
    p = Pair(np.ones(2), np.zeros(3))
    for _ in range(2):  # the general path, then the guard
        pair, params = f(p)
        assert type(pair) is Pair and type(params) is Params and params.extras == {}
        np.testing.assert_array_equal(pair.w, [2.0, 2.0])
        np.testing.assert_array_equal(params.w, np.zeros(3))


@pytest.mark.parametrize("make_opt", [lambda: tg.optim.Adam(lr=0.1), lambda: tg.optim.SGD(lr=0.1, momentum=0.9)])
@pytest.mark.parametrize("container", ["namedtuple", "dataclass"])
def test_optimisers_update_namedtuples_and_dataclasses_as_they_update_dicts(make_opt, container, x, rng):
    w, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    p = Layer(w.copy(), b.copy()) if container == "namedtuple" else Params(w.copy(), b.copy())
    d = {"w": w.copy(), "b": b.copy()}
    opt, opt_d = make_opt(), make_opt()
    state, state_d = opt.init(p), opt_d.init(d)
    assert all(type(state[slot]) is type(p) for slot in opt.slots)
    grad = tg.grad(loss)
    grad_d = tg.grad(lambda d, x: loss(Pair(d["w"], d["b"]), x))
    for _ in range(4):
        opt.update(p, grad(p, x), state)
        opt_d.update(d, grad_d(d, x), state_d)
    assert opt.__dict__.get("_fast") is not None  # the compiled update of all arrays at once
    np.testing.assert_array_equal(p.w, d["w"])
    np.testing.assert_array_equal(p.b, d["b"])


def test_fit_trains_a_dataclass(rng):
    X = rng.normal(size=(32, 3))
    y = X @ np.array([1.0, -1.0, 2.0]) + 0.5
    model = Params(np.zeros(3), np.zeros(()))

    def mse(p, X, y):
        return tg.nn.mse(X @ p.w + p.b, y)

    fit = dict(optimizer=tg.optim.SGD(lr=0.1), batch_size=8, epochs=30, progress=False)
    trained, _ = tg.fit(mse, model, (X, y), **fit)
    as_dict, _ = tg.fit(lambda p, X, y: tg.nn.mse(X @ p["w"] + p["b"], y), {"w": np.zeros(3), "b": np.zeros(())},
                        (X, y), **fit)
    assert type(trained) is Params
    np.testing.assert_allclose(trained.w, as_dict["w"], rtol=1e-12)
    np.testing.assert_allclose(trained.w, [1.0, -1.0, 2.0], atol=1e-3)
    assert model.w.tolist() == [0.0, 0.0, 0.0]  # fit trains a copy


def test_unflatten_of_flatten_is_the_same_tree(rng):
    tree = {"a": Pair(1.0, [Layer(np.ones(2), None)]), "b": Frozen([Params(np.ones(1), np.zeros(1))], 3.0)}
    leaves, treedef = flatten(tree)
    assert len(leaves) == 5  # 1.0, two ones, a zeros, 3.0 (None and the empty extras hold none)
    again = unflatten(treedef, leaves)
    assert flatten(again)[1] == treedef
    assert type(again["a"]) is Pair and type(again["b"].layers[0]) is Params
