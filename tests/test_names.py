"""Whatever the user's names (files, functions, locals, dict keys), generated code is safe and correct:
names are ASCII and distinct, user strings in comments and messages are escaped."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir import ascii_name, identifier


@pytest.mark.parametrize("text,expected", [
    ("loss", "loss"), ("W0", "W0"), ("σ²", "sigma2"), ("ｙ", "y"), ("ﬁ", "fi"), ("é", "e"), ("Σ", "Sigma"),
    ("a-b c", "a_b_c"), ("中", "u4e2d"), ("k\n", "k_"),
])
def test_ascii_name_spells_any_text_in_ascii(text, expected):
    assert ascii_name(text) == expected


@pytest.mark.parametrize("text,expected", [("x", "x"), ("", "v"), ("2x", "v_2x"), ("if", "v_if"), ("λ", "lamda")])
def test_identifier_is_always_a_plain_python_identifier(text, expected):
    assert identifier(text) == expected


def _compiled_module_source(fun, *args):
    return fun.specialize(*args).source


def test_dict_keys_python_would_normalise_to_one_name_stay_two_values():
    # "ﬁ" and "fi", "ｙ" and "y": one identifier each after Python's NFKC normalisation
    f = tg.grad(lambda d: d["ﬁ"] * 2.0 + d["fi"] * 3.0 + d["ｙ"] * 5.0 + d["y"] * 7.0)
    args = {"ﬁ": 1.0, "fi": 1.0, "ｙ": 1.0, "y": 1.0}
    assert f(args) == {"ﬁ": 2.0, "fi": 3.0, "ｙ": 5.0, "y": 7.0}
    assert _compiled_module_source(f, args).isascii()


def test_a_key_and_a_local_that_normalise_alike_do_not_meet():
    def f(p):
        p_y = p["y"] * 2.0
        return p["ｙ"] * 5.0 + p_y * p_y

    assert tg.grad(f)({"ｙ": 1.0, "y": 1.0}) == {"ｙ": 5.0, "y": 8.0}


def test_unicode_keys_in_fit_and_in_value_names():
    params = {"σ²": np.ones(2), "μ": np.zeros(2)}
    X = np.linspace(0, 1, 8).reshape(4, 2)

    def loss(p, X):
        return np.mean((X * p["σ²"] + p["μ"] - 1.0) ** 2)

    fitted, _ = tg.fit(loss, params, (X,), optimizer=tg.optim.SGD(lr=0.1), batch_size=2, epochs=2, progress=False)
    assert set(fitted) == {"σ²", "μ"} and np.all(np.isfinite(fitted["σ²"]))
    source = tg.source(tg.grad(loss), params, X)
    assert source.isascii() and "p_sigma2" in source and "p_mu" in source


@pytest.mark.parametrize("name", ["sigmoid", "where", "max_axis", "gather_rows", "np", "range"])
def test_a_function_named_like_a_kernel_or_a_global_of_the_module(name):
    namespace = {"N": np, "tg": tg}
    exec(f"def {name}(x):\n    return N.max(tg.sigmoid(N.where(x > 0, x, 0.1 * x)), axis=0)\n", namespace)
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    expected = np.max(1 / (1 + np.exp(-np.where(x > 0, x, 0.1 * x))), axis=0)
    np.testing.assert_allclose(tg.jit(namespace[name])(x), expected)


def test_a_local_named_like_the_debug_check_error_or_a_kernel():
    def f(x):
        NonFiniteError = x * 2.0
        sigmoid = tg.sigmoid(NonFiniteError)
        return sigmoid * x

    assert tg.grad(f, debug_nans=True)(0.0) == pytest.approx(0.5)
    with pytest.raises(tg.NonFiniteError, match="backward pass"):
        tg.grad(lambda x: np.sqrt(x) * 0 + f(x), debug_nans=True)(0.0)


def test_a_very_long_function_name_is_shortened_in_file_names():
    namespace = {"np": np}
    name = "a" * 200
    exec(f"def {name}(x):\n    return x * x\n", namespace)
    f = tg.grad(namespace[name])
    assert f(3.0) == 6.0
    entry = f.specialize(3.0)
    assert len(entry.module.function) <= 60 and entry.module.function.startswith("aaaa")


def _load(path, text):
    import importlib.util

    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("user_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_newline_in_the_file_name_stays_inside_the_comment(tmp_path):
    # a file name may hold any character but "/": one with a newline must not end the `# file:line`
    # comment and run when the generated module is imported
    module = _load(tmp_path / "model.py\nraise SystemExit('the file name ran')\n#.py",
                   "import numpy as np\ndef loss(x):\n    return np.sum(x * x)\n")
    f = tg.grad(module.loss, debug_nans=True)
    np.testing.assert_array_equal(f(np.ones(2)), [2.0, 2.0])
    source = f.source(np.ones(2))
    assert "\nraise SystemExit" not in source and "model.py\\nraise SystemExit" in source


def test_the_users_line_in_a_debug_message_is_an_escaped_literal(tmp_path):
    # quotes, a backslash, braces and non-ASCII on the user's line: the message still says exactly it
    line = "return np.log(x) + 0 * len('}{\\'\"\\\\σ')"
    module = _load(tmp_path / "quotes.py", f"import numpy as np\ndef f(x):\n    {line}\n")
    with pytest.raises(tg.NonFiniteError) as info:
        tg.grad(module.f, debug_nans=True)(0.0)
    assert f"quotes.py:3: {line}" in str(info.value)
    assert tg.grad(module.f, debug_nans=True).source(1.0).isascii()


def test_plain_ascii_names_are_unchanged():
    def loss(W, X, y):
        p = 1 / (1 + np.exp(-(X @ W)))
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    source = tg.source(tg.grad(loss), np.ones(3), np.ones((8, 3)), np.ones(8))
    assert "def loss_grad(W, X, y):" in source and "grad_p = " in source and "grad_W = X.T @ grad_s0" in source
