"""Graph pictures: the DOT text (always), its numbers against the lectures, layout choices, and rendering
with Graphviz when it is installed (skipped, with the reason, when it is not)."""
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.draw import GRAD_COLOR, MAX_INCHES, VALUE_COLOR, Drawing, MissingDependencyError

try:
    import graphviz  # noqa: F401
    HAVE_PACKAGE = True
except ImportError:
    HAVE_PACKAGE = False
HAVE_GRAPHVIZ = HAVE_PACKAGE and shutil.which("dot") is not None
needs_graphviz = pytest.mark.skipif(not HAVE_GRAPHVIZ, reason="needs tracegrad[draw] and Graphviz's dot program")

NEURON_ARGS = (2.0, -1.0, -3.0, -2.0, -3.0)


def neuron(w0, x0, w1, x1, w2):
    s0 = w0 * x0
    s1 = w1 * x1
    s2 = s0 + s1
    s3 = s2 + w2
    L = tg.sigmoid(s3)
    return L


def loss(W, X, y):
    p = 1 / (1 + np.exp(-(X @ W)))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def loss_args():
    rng = np.random.default_rng(0)
    return rng.normal(size=3), rng.normal(size=(8, 3)), (rng.random(8) > 0.5) * 1.0


# ------------------------------------------------------------------------------ reading the DOT text back


def labels(dot):
    """{label node id: (text above the rule, text below it)} with the markup stripped."""
    out = {}
    for key, top, bottom in re.findall(r"^\s*(v\d+) \[.*?<TR><TD>(.*?)</TD></TR><HR/><TR><TD>(.*?)</TD></TR>", dot, re.M):
        strip = lambda html: re.sub(r"<[^>]+>", "", html.replace("<BR/>", "\n")).replace("&lt;", "<").strip()
        out[key] = (strip(top), strip(bottom))
    return out


def colored(html_cell_text, color):
    return re.findall(rf'<FONT COLOR="{color}">([^<]*)</FONT>', html_cell_text)


def op_nodes(dot):
    """{node id: operator label} for the operation nodes."""
    return dict(re.findall(r"^\s*(n\d+) \[shape=\w+, .*label=<(.*?)>\];$", dot, re.M))


def edges(dot):
    return re.findall(r"^\s*(\w+)(?::\w)? -> (\w+)(?::\w)?", dot, re.M)


# ------------------------------------------------------------------------------ the lectures' pictures


def test_neuron_values_above_gradients_below_as_in_the_lectures():
    d = tg.draw(neuron, *NEURON_ARGS, values=True, grads=True)
    assert sorted(op_nodes(d.dot).values()) == ["*", "*", "+", "+", "σ"]
    found = labels(d.dot)
    # (value above, gradient below), in the order of the graph: inputs w0 x0 w1 x1 w2, then s0 s1 s2 s3 L
    assert list(found.values()) == [
        ("2", "-0.197"), ("-1", "0.393"), ("-3", "-0.393"), ("-2", "-0.59"), ("-3", "0.197"),
        ("s0 = -2", "0.197"), ("s1 = 6", "0.197"), ("s2 = 4", "0.197"), ("s3 = 1", "0.197"), ("L = 0.731", "1"),
    ]
    # green for values, red for gradients
    first = re.search(r"^\s*v0 \[.*$", d.dot, re.M).group(0)
    top, bottom = first.split("<HR/>")
    assert colored(top, VALUE_COLOR) == ["2"]
    assert colored(bottom, GRAD_COLOR) == ["-0.197"]


def test_values_and_gradients_agree_with_value_and_grad():
    def f3(x):
        a = -x
        b = np.exp(a)
        c = np.sin(b)
        return 2 / c
    d = tg.draw(f3, -4.499, values=True, grads=True, precision=6)
    value, grad = tg.value_and_grad(f3)(-4.499)
    found = labels(d.dot)
    assert found["v0"] == (f"{-4.499:.6g}", f"{grad:.6g}")  # the input x: LECTURES.md example 3, in radians
    assert found["v0"][1] == "-80.3931"  # LECTURES.md: about -80.393
    assert list(found.values())[-1][0].endswith(f"{value:.6g}")


def test_a_value_used_twice_fans_out_from_one_label_with_the_summed_gradient():
    def f(x):
        return x * x + x
    d = tg.draw(f, 3.0, values=True, grads=True)
    assert labels(d.dot)["v0"] == ("3", "7")  # d/dx (x^2 + x) = 2x + 1 = 7: the duplicate rule
    assert [dst for src, dst in edges(d.dot) if src == "v0"] == ["n0", "n0", "n1"]


def test_plain_drawing_names_values_and_shapes():
    d = tg.draw(loss, *loss_args())
    tops = [top for top, bottom in labels(d.dot).values()]
    assert "f64[3]" in tops and "f64[8,3]" in tops and "p: f64[8]" in tops
    assert all(bottom == "" for top, bottom in labels(d.dot).values())
    assert "#1b7a2e" not in d.dot  # no values asked for, none drawn


def test_matrices_are_written_out_and_large_arrays_cut_short():
    X = np.array([[2.0, 1, -3], [-3, 4, 2]])
    W = np.array([[3.0, 2, 1, -1], [2, 1, 3, 2], [3, 2, 1, -2]])
    d = tg.draw(lambda X, W: np.sum(X @ W), X, W, values=True, grads=True)
    found = labels(d.dot)
    assert found["v0"] == ("f64[2,3]\n[[2 1 -3]\n [-3 4 2]]", "[[5 8 4]\n [5 8 4]]")  # ones @ W.T
    d = tg.draw(lambda x: np.sum(x), np.arange(100.0), values=True)
    assert labels(d.dot)["v0"][0] == "f64[100] = [0 1 2 …]"


def test_drawing_is_deterministic_and_dot_text_is_str():
    a = tg.draw(loss, *loss_args(), values=True, grads=True)
    b = tg.draw(loss, *loss_args(), values=True, grads=True)
    assert a.dot == b.dot == str(a)
    assert a.dot.startswith('digraph "loss" {') and a.dot.rstrip().endswith("}")
    assert "loss" in repr(a) and "15 operations" in repr(a)
    assert repr(tg.draw(lambda x: x * 2.0, 1.0)).endswith(": 1 operation>")


# ------------------------------------------------------------------------------ the backward graph


def test_backward_graph_uses_the_names_of_the_generated_code():
    vg = tg.value_and_grad(neuron, argnums=(0, 1, 2, 3, 4))
    d = tg.draw(vg, *NEURON_ARGS, backward=True, values=True)
    source = tg.source(vg, *NEURON_ARGS)
    names = {top.split(" = ")[0] for top, _ in labels(d.dot).values() if " = " in top}
    assert {"grad_s3", "grad_s2", "grad_s1", "grad_s0", "grad_w0", "grad_x1"} <= names
    assert all(re.search(rf"\b{name} = ", source) for name in names)
    found = {top.split(" = ")[0]: top.split(" = ")[1] for top, _ in labels(d.dot).values() if " = " in top}
    assert found["grad_w0"] == "-0.197" and found["grad_x1"] == "-0.59" and found["grad_L"] == "1"
    # 1 - L and grad_L * (1 - L) are written inline in the code: unnamed in the picture too
    assert [top for top, _ in labels(d.dot).values() if top in ("0.269", "s4 = 0.269")] == ["0.269", "0.269"]
    # backward nodes in red, their edges reversed so gradients flow right to left
    assert len(re.findall(r"fillcolor=\"#fcebe8\"", d.dot)) == sum(n.backward for n in d.graph.nodes)
    assert "dir=back" in d.dot
    assert "grad_w0" in d.dot and "{rank=sink; o0;}" in d.dot  # only the value is pinned to the right


def test_backward_of_a_plain_function_differentiates_every_float_argument():
    d = tg.draw(lambda x, n: x ** 2 * n, 3.0, 2, backward=True, values=True)
    outputs = re.findall(r"^\s*o\d+ \[shape=plaintext, label=<<B>(.*?)</B>>\];", d.dot, re.M)
    assert outputs == ["out", "grad_x"]


def test_grads_need_a_scalar_output():
    with pytest.raises(tg.GradTypeError, match="scalar"):
        tg.draw(lambda x: x * 2, np.ones(3), grads=True)
    with pytest.raises(tg.GradTypeError, match="float argument"):
        tg.draw(lambda n: n * 2, 3, backward=True)


# ------------------------------------------------------------------------------ large graphs


def deep(W, x):
    h = x
    for _ in range(40):
        h = np.tanh(W @ h)
    return np.sum(h ** 2)


def test_large_graphs_collapse_by_source_line_with_a_note():
    d = tg.draw(deep, np.eye(3) * 0.5, np.ones(3))
    assert d.collapsed and d.note is not None
    assert "82 operations drawn as 2 source lines" in d.note and "by_line='none'" in d.note
    assert "82 operations drawn as 2 source lines" in d.dot
    lines = re.findall(r"^\s*l\d+ \[shape=box.*label=<(.*?)<BR/>", d.dot, re.M)
    assert lines == ["h = np.tanh(W @ h)", "return np.sum(h ** 2)"]
    assert not op_nodes(d.dot)
    full = tg.draw(deep, np.eye(3) * 0.5, np.ones(3), by_line="none")
    assert not full.collapsed and len(op_nodes(full.dot)) == 82


def test_collapsed_backward_keeps_forward_and_backward_lines_apart(monkeypatch):
    monkeypatch.setattr(tg.roll, "ENABLED", False)  # the compiled graph as traced: 40 layers, a large graph
    d = tg.draw(deep, np.eye(3) * 0.5, np.ones(3), backward=True, values=True)
    lines = re.findall(r"^\s*l\d+ \[shape=box.*label=<(.*?)<BR/>", d.dot, re.M)
    assert lines == ["h = np.tanh(W @ h)", "return np.sum(h ** 2)",
                     "backward of return np.sum(h ** 2)", "backward of h = np.tanh(W @ h)"]
    crowded = [top for top, _ in labels(d.dot).values() if "more" in top]  # the forward values the
    assert len(crowded) == 1 and re.fullmatch(r"h: f64\[3\]\n(s\d+: f64\[3\]\n){2}and \d+ more", crowded[0])


def test_lines_with_several_operations_are_boxed_and_single_ones_are_not():
    d = tg.draw(loss, *loss_args(), by_line="cluster")
    titles = re.findall(r'label="test_draw.py:\d+  (.*?)";', d.dot)
    assert titles == ["p = 1 / (1 + np.exp(-(X @ W)))",
                      "return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))"]
    assert "subgraph cluster" not in tg.draw(neuron, *NEURON_ARGS).dot
    assert "subgraph cluster" not in tg.draw(loss, *loss_args(), by_line="none").dot
    with pytest.raises(ValueError, match="by_line"):
        tg.draw(loss, *loss_args(), by_line="lines")


def xor_network(params, X, y):
    h = tg.sigmoid(X @ params["W1"] + params["b1"])
    logit = h @ params["w2"] + params["b2"]
    return tg.nn.binary_cross_entropy_with_logits(logit, y)


def xor_args():
    rng = np.random.default_rng(1)
    params = {"W1": rng.normal(size=(2, 3)), "b1": np.zeros(3), "w2": rng.normal(size=3), "b2": np.zeros(())}
    return params, np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), np.array([0.0, 1.0, 1.0, 0.0])


def mlp(params, X, y):
    hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    logits = hidden @ params["W2"] + params["b2"]
    return tg.nn.softmax_cross_entropy(logits, y)


def mlp_args():
    rng = np.random.default_rng(2)
    params = {"W1": rng.normal(size=(4, 16)), "b1": np.zeros(16), "W2": rng.normal(size=(16, 3)), "b2": np.zeros(3)}
    return params, rng.normal(size=(8, 4)), rng.integers(0, 3, 8)


def test_a_network_is_drawn_top_to_bottom_with_its_library_calls_as_one_node_each():
    d = tg.draw(xor_network, *xor_args(), values=True, grads=True)
    assert "rankdir=TB" in d.dot and "rankdir=LR" in tg.draw(neuron, *NEURON_ARGS).dot
    lines = re.findall(r"^\s*l\d+ \[shape=box.*label=<(.*?)<BR/>", d.dot, re.M)
    assert lines == ["return tg.nn.binary_cross_entropy_with_logits(logit, y)"]  # the loss's many operations
    assert sorted(op_nodes(d.dot).values()) == ["+", "+", "@", "@", "σ"]  # the user's own lines, in full
    titles = [t.replace('\\"', '"') for t in re.findall(r'label="test_draw.py:\d+  (.*?)";', d.dot)]
    assert titles == ['h = tg.sigmoid(X @ params["W1"] + params["b1"])',
                      'logit = h @ params["w2"] + params["b2"]']
    assert d.collapsed and d.note.startswith("10 of 15 operations drawn as the 1 source line holding them")
    wire = [dst for src, dst in edges(d.dot) if src == "l0"]  # the loss leaves the line's node ...
    assert len(wire) == 1 and ("l0", wire[0]) in edges(d.dot) and (wire[0], "o0") in edges(d.dot)
    assert labels(d.dot)[wire[0]][1] == "1"  # ... with gradient 1
    every = tg.draw(xor_network, *xor_args(), by_line="none")
    assert len(op_nodes(every.dot)) == 15 and not every.collapsed
    assert "rankdir=LR" in tg.draw(xor_network, *xor_args(), direction="LR").dot
    with pytest.raises(ValueError, match="direction"):
        tg.draw(neuron, *NEURON_ARGS, direction="up")


# ------------------------------------------------------------------------------ other inputs


CAPTURED = np.array([1.0, 2.0])


def test_captured_arrays_are_drawn_as_inputs_with_their_values():
    d = tg.draw(lambda x: np.sum(x * CAPTURED), np.array([3.0, 4.0]), values=True, grads=True)
    assert "<B>CAPTURED</B><BR/>" in d.dot and ">captured<" in d.dot
    found = labels(d.dot)
    assert found["v0"] == ("f64[2] = [3 4]", "[1 2]")
    assert found["v1"] == ("f64[2] = [1 2]", "[3 4]")


def test_a_graph_can_be_drawn_directly():
    graph = tg.make_graph(neuron, *NEURON_ARGS)
    assert tg.draw(graph).dot == tg.draw(neuron, *NEURON_ARGS).dot
    assert labels(tg.draw(graph, *NEURON_ARGS, values=True).dot)["v9"] == ("L = 0.731", "")
    with pytest.raises(TypeError, match="5 inputs"):
        tg.draw(graph, 1.0, values=True)


def test_text_from_the_source_is_escaped():
    def f(x):
        return np.sum(np.where(x < 0, -x, x))
    d = tg.draw(f, np.ones(2))
    assert "&lt;" in d.dot and "x < 0" not in d.dot.replace("&lt;", "")


# ------------------------------------------------------------------------------ rendering


def test_missing_graphviz_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    d = tg.draw(neuron, *NEURON_ARGS)
    with pytest.raises(MissingDependencyError, match=r"graphviz Python package") as info:
        d.svg()
    assert "pip install 'tracegrad[draw]'" in str(info.value) and "dot program" in str(info.value)
    assert isinstance(info.value, tg.TracegradError) and isinstance(info.value, ImportError)
    with pytest.raises(MissingDependencyError):
        d.save(tmp_path / "n.png")
    bundle = d._repr_mimebundle_()  # Jupyter shows the DOT text and what to install instead of failing
    assert list(bundle) == ["text/plain"] and "tracegrad[draw]" in bundle["text/plain"]
    assert d.dot in bundle["text/plain"]
    path = d.save(tmp_path / "n.dot")  # DOT text needs nothing
    assert open(path).read() == d.dot


@pytest.mark.skipif(not HAVE_PACKAGE, reason="needs the graphviz package to reach its missing-program error")
def test_missing_dot_program_says_so(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(MissingDependencyError, match="dot program"):
        tg.draw(neuron, *NEURON_ARGS).png()


@needs_graphviz
def test_pictures_render(tmp_path):
    d = tg.draw(neuron, *NEURON_ARGS, values=True, grads=True)
    svg = d.svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "0.731" in svg
    assert d.png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert open(d.save(tmp_path / "n.png"), "rb").read(4) == b"\x89PNG"
    assert "<svg" in open(d.save(tmp_path / "n.svg")).read()
    assert "image/svg+xml" in d._repr_mimebundle_()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@needs_graphviz
@pytest.mark.parametrize("case", ["xor", "xor backward", "mlp", "mlp backward", "deep backward"])
def test_pictures_of_networks_stay_readable_in_size(case):
    drawings = {
        "xor": lambda: tg.draw(xor_network, *xor_args(), values=True, grads=True),
        "xor backward": lambda: tg.draw(xor_network, *xor_args(), backward=True),
        "mlp": lambda: tg.draw(mlp, *mlp_args(), values=True, grads=True),
        "mlp backward": lambda: tg.draw(mlp, *mlp_args(), backward=True, values=True),
        "deep backward": lambda: tg.draw(deep, np.eye(3), np.ones(3), backward=True, values=True),
    }
    d = drawings[case]()
    width, height = png_size(d.png())
    assert 300 <= width <= 2000 and height <= 3300, (width, height)  # 110 dpi: 18 x 30 inches at most
    # that bound scales a picture down: the layout itself must need little of it, or the text gets small
    natural = Drawing(d.dot.replace(f'size="{MAX_INCHES}", ', ""), d.graph)
    width, height = png_size(natural.png())
    assert 300 <= width <= 2600 and height <= 3300, (width, height)


@needs_graphviz
@pytest.mark.parametrize("case", ["neuron", "neuron backward", "loss", "loss backward", "deep", "escaped"])
def test_dot_accepts_every_drawing_without_warnings(case):
    def escaped(x):
        return np.sum(np.where(x < 0, -x, x) * 2)
    drawings = {
        "neuron": lambda: tg.draw(neuron, *NEURON_ARGS, values=True, grads=True),
        "neuron backward": lambda: tg.draw(neuron, *NEURON_ARGS, backward=True, values=True, grads=True),
        "loss": lambda: tg.draw(loss, *loss_args(), values=True, grads=True),
        "loss backward": lambda: tg.draw(loss, *loss_args(), backward=True, values=True),
        "deep": lambda: tg.draw(deep, np.eye(3), np.ones(3), backward=True, values=True),
        "escaped": lambda: tg.draw(escaped, np.ones(2), by_line="cluster", values=True, grads=True),
    }
    result = subprocess.run(["dot", "-Tsvg"], input=drawings[case]().dot.encode(), capture_output=True)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
