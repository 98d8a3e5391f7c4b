"""The IR: printing, verification, and the import direction of the modules."""
import ast
import pathlib

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir import IRError, Node, Var, Aval
from tracegrad.core import PRIMITIVES


def test_graph_prints_with_avals():
    text = str(tg.make_graph(lambda x, y: np.sum(x * y), np.ones((2, 3), np.float32), np.ones(3, np.float32)))
    assert text.splitlines() == [
        "graph <lambda>(x: f32[2,3], y: f32[3]):",
        "  s0: f32[2,3] = mul x y",
        "  out: f32[] = reduce_sum[axes=(0, 1)] s0",
        "  return out",
    ]


def test_verifier_accepts_traced_and_differentiated_graphs():
    f = lambda x: np.sum(np.maximum(x, 0.0) ** 2)
    tg.make_graph(f, np.ones(3)).verify()
    tg.make_graph(tg.grad(f), np.ones(3)).verify()


def test_verifier_rejects_use_before_definition_and_wrong_avals():
    graph = tg.make_graph(lambda x: np.exp(x) + x, np.ones(3))
    broken = tg.Graph("broken", graph.inputs, list(reversed(graph.nodes)), graph.outputs)
    with pytest.raises(IRError, match="before it is defined"):
        broken.verify()
    node = graph.nodes[0]
    wrong = Node(node.primitive, node.inputs, node.params, Var(Aval((4,), np.float64)))
    with pytest.raises(IRError, match="shape rule"):
        tg.Graph("wrong", graph.inputs, [wrong], [wrong.out]).verify()


def test_backward_graph_is_in_the_same_ir():
    graph = tg.make_graph(tg.grad(lambda x: np.sum(np.tanh(x))), np.ones(2))
    assert all(node.primitive is PRIMITIVES[node.primitive.name] for node in graph.nodes)
    assert any(node.backward for node in graph.nodes) and any(not node.backward for node in graph.nodes)


PACKAGE = pathlib.Path(tg.__file__).parent


def imports_of(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_import_direction():
    for path in PACKAGE.rglob("*.py"):
        imports = imports_of(path)
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in ("backend.py", "kernels.py"):
            assert "numba" not in imports, f"{rel} imports numba: only backend and kernels may"
        if rel in ("autodiff.py", "forward.py", "passes.py", "codegen.py", "ir.py", "interpret.py") or \
                rel.startswith("primitives/"):
            assert not any(i.endswith("tracer") for i in imports), f"{rel} imports the tracer"
        if rel == "ir.py":
            assert imports <= {"__future__", "keyword", "unicodedata", "dataclasses", "typing", "numpy", ".errors"}, imports
