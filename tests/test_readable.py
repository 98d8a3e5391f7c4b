"""What the generated code and the compiled function look like to a reader and to a ``.dispatcher`` caller:
no hidden parameters for arrays the library makes itself, and arguments that can be named."""
import linecache
import re

import numba
import numpy as np

import tracegrad as tg


def mlp(params, X, y):
    hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    logits = hidden @ params["W2"] + params["b2"]
    return tg.nn.softmax_cross_entropy(logits, y)


def mlp_args():
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(4, 5)), "b1": np.zeros(5), "W2": rng.normal(size=(5, 3)), "b2": np.zeros(3)}
    return params, rng.normal(size=(6, 4)), rng.integers(0, 3, 6)


def test_a_range_the_library_makes_is_computed_by_the_code_not_a_hidden_parameter():
    f = tg.value_and_grad(mlp)
    compiled = f.specialize(*mlp_args())
    assert compiled.captured() == []
    assert compiled.arguments() == ["params_W1", "params_W2", "params_b1", "params_b2", "X", "y"]
    source = compiled.source
    assert "def mlp_value_and_grad(params_W1, params_W2, params_b1, params_b2, X, y):" in source
    assert "= np.arange(6)" in source
    params, X, y = mlp_args()
    value, grads = f(params, X, y)
    # the dispatcher takes exactly the flattened arguments (dict keys sorted) and returns value, gradients
    out = compiled.dispatcher(params["W1"], params["W2"], params["b1"], params["b2"], X, y)
    assert len(out) == 5 and out[0] == value
    np.testing.assert_array_equal(out[1], grads["W1"])


def test_ranges_with_a_start_and_a_step_and_other_constants():
    def f(x):
        return np.sum(x * np.arange(2, 11, 3)) + np.sum(x * np.array([1, 5, 6]))  # the second is no range
    compiled = tg.grad(f).specialize(np.ones(3))
    assert "np.arange(2, 11, 3)" in compiled.source and len(compiled.captured()) == 1
    np.testing.assert_array_equal(tg.grad(f)(np.ones(3)), [3.0, 10.0, 14.0])


def test_the_dispatcher_of_jit_returns_a_tuple_even_for_one_output():
    f = tg.jit(lambda x: np.sum(x * x))
    compiled = f.specialize(np.ones(3))
    assert compiled.dispatcher(np.ones(3)) == (3.0,) and f(np.ones(3)) == 3.0

    kernel = compiled.dispatcher

    @numba.njit
    def twice(x):
        return kernel(x)[0] * 2.0
    assert twice(np.ones(3)) == 6.0


def predict(params, X):
    hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    return hidden @ params["W2"] + params["b2"]


def layer(x, W):
    h = np.tanh(x @ W)
    return h


def loss_through_helpers(params, X, y):
    scores = predict(params, X)
    h = layer(scores, np.eye(3))
    out = layer(h, np.eye(3) * 0.5)
    return tg.nn.softmax_cross_entropy(out, y)


def test_values_named_in_helpers_keep_their_names_in_the_graph_the_source_and_drawings():
    args = mlp_args()
    graph = tg.make_graph(loss_through_helpers, *args)
    names = set(graph.names().values())
    assert {"hidden", "scores", "h", "out"} <= names  # `hidden` lives in predict only
    source = tg.source(tg.grad(loss_through_helpers), *args)
    assert "hidden = np.empty((6, 5))" in source or "hidden[i0, i1] = " in source
    assert "grad_hidden = " in source and "grad_scores" in source
    dot = tg.draw(loss_through_helpers, *args, by_line="none").dot
    assert "hidden: f64[6,5]" in dot


def test_a_helper_local_whose_name_is_taken_is_prefixed_by_the_helper():
    def two_layers(x, W):
        h = layer(x, W)        # the first call's `h` is this h
        g = layer(h, W) * 2.0  # the second call's `h` is not g: it is named layer_h
        return np.sum(g)
    graph = tg.make_graph(two_layers, np.ones((2, 3)), np.eye(3))
    assert {"h", "layer_h", "g"} <= set(graph.names().values())


def test_the_mlp_gradient_reads_without_a_glossary():
    """ReLU's backward is a choice written out (no nested where()), and the kernels say what they do."""
    source = tg.source(tg.value_and_grad(mlp), *mlp_args())
    kernels = next(line for line in source.splitlines() if line.startswith("from tracegrad.kernels import "))
    assert "gather_pairs" in kernels and "scatter_add_pairs" in kernels  # logp[np.arange(n), y] and its gradient
    assert not {"where", "take2", "put_add2"} & set(kernels.split("import ")[1].split(", "))
    relu_grad = re.search(r"^ +(grad_\w+) = grad_hidden\[i0, i1\] if (\w+) > 0\.0 else "
                          r"grad_hidden\[i0, i1\] \* 0\.5 if (\w+) == 0\.0 else 0\.0$", source, re.M)
    assert relu_grad and relu_grad.group(2) == relu_grad.group(3), source
    assert re.search(r" = gather_pairs\(\w+, \w+, y\)", source) and re.search(
        r" = scatter_add_pairs\(grad_\w+, \w+, y, \(6, 3\)\)", source)


def test_each_fused_loop_has_a_comment_saying_what_it_computes():
    source = tg.source(tg.value_and_grad(mlp), *mlp_args())
    lines = source.splitlines()
    loops = [k for k, line in enumerate(lines) if re.match(r" +for i0 in range", line)]
    assert len(loops) == 6  # (one of them the sum of the softmax's gradient, summed as it is computed)
    for k in loops:  # the line above each loop nest is its comment, at the loop's indentation
        assert lines[k - 1].strip().startswith("# ") and lines[k - 1].index("#") == lines[k].index("for"), lines[k - 1]
    comments = [lines[k - 1].strip() for k in loops]
    relu = 'hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)'
    assert comments[0] == f"# hidden: {relu}"
    assert comments[1] == "# s7, s8 (sum): return tg.nn.softmax_cross_entropy(logits, y)"
    assert comments[-1] == f"# grad_params_b1 (sum), grad_s1: gradient of {relu}"
    assert source == tg.source(tg.value_and_grad(mlp), *mlp_args())  # deterministic


def test_a_loop_comment_is_one_ascii_line_whatever_the_users_line_holds():
    code = "def f(x):\n    σ = np.exp(x)\n    return np.sum(σ * x)  # ∂ \u2028 x\n"
    lines = [line + "\n" for line in code.split("\n")[:-1]]  # (splitlines would end a line at \u2028)
    linecache.cache["typed.py"] = (len(code), None, lines, "typed.py")
    namespace = {"np": np}
    exec(compile(code, "typed.py", "exec"), namespace)
    source = tg.source(tg.grad(namespace["f"]), np.ones(3))
    assert source.isascii()
    comment = next(line.strip() for line in source.splitlines() if line.strip().startswith("# out (sum)"))
    quoted = "return np.sum(\\u03c3 * x)  # \\u2202 \\u2028 x"
    assert comment == f"# out (sum), grad_x: {quoted}, and its gradient (and line 2)"
    exec(compile(code.replace("σ", "s"), "<typed>", "exec"), namespace)  # no text to quote: where it is
    source = tg.source(tg.grad(namespace["f"]), np.ones(3))
    assert "# out (sum), grad_x: <typed>:3, and its gradient (and line 2)" in source
