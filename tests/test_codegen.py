"""Generated source: readable, exact, deterministic across runs and processes."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.codegen import generate
from tracegrad.interpret import evaluate

PROGRAM = textwrap.dedent("""
    import numpy as np, tracegrad as tg
    def loss(W, X, y):
        p = 1 / (1 + np.exp(-(X @ W)))
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    args = (np.ones(3), np.ones((4, 3)), np.ones(4))
    print(tg.source(tg.grad(loss), *args), end="")
""")


def test_source_is_byte_identical_across_processes(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    env = dict(os.environ, PYTHONHASHSEED="random")
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert "def loss_grad(W, X, y):" in runs[0] and "grad_W = X.T @ grad_s0" in runs[0]


def test_same_function_same_source_within_a_process(rng):
    f = lambda x, y: np.sum(np.tanh(x @ y) ** 2)
    args = (rng.normal(size=(2, 3)), rng.normal(size=(3, 2)))
    assert tg.source(tg.grad(f), *args) == tg.source(tg.grad(f), *args)


def test_user_variable_names_become_value_names():
    def f(x, w):
        hidden = np.tanh(x * w)
        loss = np.sum(hidden ** 2)
        return loss

    src = tg.source(tg.grad(f, argnums=1), np.ones(3), np.ones(3))
    assert "        hidden = np.tanh(s0)" in src  # one fused loop: the same names inside
    assert "grad_loss = 1.0" in src and "grad_hidden" in src and "return loss, grad_w" in src


@pytest.mark.parametrize("expr", [
    lambda a, b, c: a - (b - c),
    lambda a, b, c: (a - b) - c,
    lambda a, b, c: a / (b * c),
    lambda a, b, c: (a / b) * c,
    lambda a, b, c: a ** (b ** c),
    lambda a, b, c: (a ** b) ** c,
    lambda a, b, c: -(a ** b) + c,
    lambda a, b, c: (-a) ** 2 * c - b,
    lambda a, b, c: a + (b + c),
    lambda a, b, c: np.where((a < b) == (b < c), a, c),
])
def test_generated_expressions_keep_the_graphs_evaluation_order(expr):
    # The backward pass inlines temporaries; parentheses must keep the exact order (floats are not associative).
    args = (1.3, 0.7, 1.9)
    fun = tg.value_and_grad(expr, argnums=(0, 1, 2))
    value, grads = fun(*args)
    outs = evaluate(tg.make_graph(fun, *args), *args)
    assert value == outs[0]
    assert grads == tuple(outs[1:])


def test_float32_literals_are_typed():
    src = tg.source(lambda x: x * 0.5 + 1, np.ones(2, np.float32))
    assert "np.float32(0.5)" in src and "np.float32(1.0)" in src


def test_provenance_comments_point_at_the_users_line():
    def f(x):
        y = np.exp(x)  # the line the comment should name
        return np.sum(y * y)

    src = tg.source(tg.grad(f), np.ones(2))
    import inspect
    line = inspect.getsourcelines(f)[1] + 1
    assert f"# test_codegen.py:{line}" in src
    assert "# forward and backward pass in one loop" in src  # the sum and the gradient: one loop


def test_the_module_is_a_real_file_with_exactly_the_shown_source():
    fun = tg.grad(lambda x: np.sum(np.sin(x)))
    entry = fun.specialize(np.ones(3))
    import inspect
    path = inspect.getfile(entry.dispatcher.py_func)
    with open(path) as f:
        assert f.read() == entry.source
    assert os.path.dirname(path) == str(tg.cache_dir())


def test_comments_never_touch_long_statements():
    src = tg.source(tg.grad(lambda x, c: np.sum(np.maximum(0.0, x) * c)), np.ones(4), np.ones(4))
    for line in src.splitlines():
        if "# " in line and not line.lstrip().startswith("#"):
            code, _ = line.split("# ", 1)
            assert code.endswith("  "), line


def _unrolled(n):
    def f(x, w):
        for i in range(n):
            x = np.tanh(x * w) + 0.5 * x
        return np.sum(x * x)
    return f


@pytest.mark.parametrize("debug_nans", [False, True])
def test_long_code_is_split_into_parts_that_compute_the_same(rng, monkeypatch, debug_nans):
    import tracegrad.codegen as codegen
    import tracegrad.roll as roll

    monkeypatch.setattr(roll, "ENABLED", False)  # the loop unrolled, as traced: long code
    x, w = rng.normal(), rng.normal()  # scalars: straight-line code (array code would be one loop)
    f = _unrolled(12)
    whole = tg.value_and_grad(f, argnums=(0, 1), debug_nans=debug_nans)
    expected = whole(x, w)
    assert not whole.specialize(x, w).module.parts
    monkeypatch.setattr(codegen, "PART_LINES", 25)
    monkeypatch.setattr(codegen, "SPLIT_LINES", 50)
    split = tg.value_and_grad(f, argnums=(0, 1), debug_nans=debug_nans)
    entry = split.specialize(x, w)
    parts = entry.module.parts
    assert len(parts) >= 3 and parts[0] == f"{entry.module.function}_part1"
    for part in parts:
        assert f"def {part}(" in entry.source and f"= {part}(" in entry.source
    value, grads = split(x, w)
    assert value == pytest.approx(expected[0], rel=1e-14)
    for g, e in zip(grads, expected[1]):
        np.testing.assert_allclose(g, e, rtol=1e-13)
    reference = evaluate(entry.graph, x, w)
    np.testing.assert_allclose(grads[1], reference[2], rtol=1e-12)
    assert tg.value_and_grad(f, argnums=(0, 1), debug_nans=debug_nans).source(x, w) == entry.source


def test_each_part_takes_what_it_reads_and_returns_what_is_read_later():
    from tracegrad.codegen import _split

    body = [("a", [("a = x + 1", None)]), ("b", [("b = a * 2", None)]), ("c", [("c = np.sin(b) + x", None)]),
            ("d", [("d = c * a", None), ("if not np.isfinite(d): raise NonFiniteError('b is not finite')", None)])]
    functions = _split(body, ["x"], "return d, b", "f", 3)  # parts of 3 lines
    assert [(name, args) for name, args, _ in functions] == [("f_part1", ["x"]), ("f_part2", ["a", "c"]),
                                                             ("f", ["x"])]
    assert functions[0][2][-1] == ("return a, b, c", None)
    assert functions[1][2][-1] == ("return d,", None)
    assert [line for line, _ in functions[2][2]] == ["a, b, c = f_part1(x)", "d, = f_part2(a, c)", "return d, b"]


def test_one_array_concatenated_or_stacked_compiles():
    """np.concatenate([x]) is a one-element tuple in the generated code: (x,), not (x)."""
    x = np.array([1.0, -2.0, 3.0])
    for join in (np.concatenate, np.stack):
        g = tg.grad(lambda x: np.sum(join([x]) ** 2), compile="wait")
        np.testing.assert_array_equal(g(x), 2 * x)
