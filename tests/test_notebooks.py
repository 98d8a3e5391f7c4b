"""The notebooks run top to bottom in a fresh kernel and print what their text says they print.

Each notebook also checks its own numbers with asserts, so a wrong number fails the cell. Needs the
notebooks extra (pip install -e ".[test,notebooks]"); without nbclient these tests are skipped.
"""
import os
import shutil

import pytest

nbclient = pytest.importorskip(
    "nbclient", reason="the notebooks need the notebooks extra: pip install -e '.[test,notebooks]'")
import nbformat  # noqa: E402  (a dependency of nbclient)

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")

try:
    import graphviz  # noqa: F401
    HAVE_GRAPHVIZ = shutil.which("dot") is not None
except ImportError:
    HAVE_GRAPHVIZ = False

# Text each notebook must print (stdout and results), and how many drawings it shows.
EXPECTED = {
    "01_computational_graphs": dict(drawings=6, text=[
        "f = -12.0",
        "df/dx, df/dy, df/dz = (-4.0, -4.0, 3.0)",
        "grad_s3 = grad_L * (1.0 - L) * L",
        "grad_w0 = grad_s0 * x0",
        "L = 0.731",
        "grad_w0 = -0.197, grad_x0 = 0.393, grad_w1 = -0.393, grad_x1 = -0.590, grad_w2 = 0.197",
        "nodes with sigmoid,",
        "tracegrad df/dx = -80.393",
        "(34.0, (10.0, 6.0))",
        "dg/dx at 3: 7.0",
    ]),
    "02_matrices_without_jacobians": dict(drawings=3, text=[
        "would take 256 GiB",
        "[-24.   9. -30.]",
        "grad_X = grad_Y @ W.T",
        "grad_W = X.T @ grad_Y",
        "X      f64[2,3]   grad_X    f64[2,3]",
        "[4. 0. 5. 0.]",
        "dW: (5, 3)  db: (3,)",
    ]),
    "03_training_a_network": dict(drawings=1, figures=2, text=[
        "predictions: [0.",
        "loss: 0.",
        "test accuracy after 15 epochs: 0.9",
        "ms per epoch",
    ]),
    "04_trusting_gradients": dict(drawings=1, text=[
        "softmax_cross_entropy  passed=True",
        "two_layer              passed=True",
        "FAILED: 3 of 3 entries out of tolerance",
        "grad_s2 * 3.3 * s3",
        "a kink lies within the finite-difference step",
        "gradient: [1.  nan 0.5]",
        "is not finite (forward pass)",
        "gradient: [1.  0.  0.5]",
    ]),
    "05_loops_and_transformations": dict(drawings=0, text=[
        "loss ",
        "gradient shapes: [('U', (4, 2)), ('W', (4, 4)), ('b', (4,))]",
        "for t in range(20):",
        "[[ 802. -400.    0.]",
        "per-example gradients: (8, 3)",
        "their mean equals the batch gradient: True",
        "Hessian at x0 matches differences: True",
        "<u, J v> = <J^T u, v>: True",
        "H v is a column of H: True",
        "stable gradient: [0.  0.5 1. ]",
        "sigmoid(x",
    ]),
}


NEEDS = {"03_training_a_network": "tracegrad.fit and scikit-learn (its digits data)"}


def available(name) -> bool:
    if name != "03_training_a_network":
        return True
    import importlib.util

    import tracegrad as tg
    return hasattr(tg, "fit") and importlib.util.find_spec("sklearn") is not None


def run(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name + ".ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # what was saved must not count
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails (asserts included)
    return nb


def outputs(nb):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            yield out


def test_every_notebook_is_tested():
    names = sorted(f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
    assert names == sorted(EXPECTED), names


PUBLIC = {"tracegrad", "tracegrad.nn", "tracegrad.optim", "tracegrad.kernels"}  # kernels: what generated code imports


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebooks_use_only_the_public_api(name):
    import re
    nb = nbformat.read(os.path.join(NOTEBOOKS, name + ".ipynb"), as_version=4)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    modules = set(re.findall(r"^\s*(?:from|import)\s+(tracegrad[\w.]*)", code, re.M))
    assert modules <= PUBLIC, f"{name} imports internals: {sorted(modules - PUBLIC)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_shows_its_results(name):
    if not available(name):
        pytest.skip(f"{name} needs {NEEDS[name]}")
    nb = run(name)
    text = "".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs(nb))
    missing = [line for line in EXPECTED[name]["text"] if line not in text]
    assert not missing, f"{name} no longer prints: {missing}"
    assert not [out for out in outputs(nb) if out.output_type == "error"]
    drawings = [out for out in outputs(nb) if "<tracegrad.Drawing" in out.get("data", {}).get("text/plain", "")]
    assert len(drawings) == EXPECTED[name]["drawings"]
    figures = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
    assert len(figures) == EXPECTED[name].get("figures", 0)
    if HAVE_GRAPHVIZ:  # pictures, not the DOT-text fallback
        assert all("<svg" in out["data"].get("image/svg+xml", "") for out in drawings)
    else:
        assert all("tracegrad[draw]" in out["data"]["text/plain"] for out in drawings)
