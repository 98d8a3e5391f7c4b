"""Graph-to-graph passes. Each returns a new graph computing the same outputs."""
from __future__ import annotations

from .ir import Graph, Var


def dce(graph: Graph) -> Graph:
    """Dead-code elimination: drop nodes no output depends on."""
    live = {v for v in graph.outputs if isinstance(v, Var)}
    kept = []
    for node in reversed(graph.nodes):
        if node.out in live:
            kept.append(node)
            live.update(a for a in node.inputs if isinstance(a, Var))
    kept.reverse()
    return Graph(graph.name, graph.inputs, kept, graph.outputs, graph.n_args, dict(graph.meta))
