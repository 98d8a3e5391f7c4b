"""The primitives page of the guide and the README's list of traced functions are generated from the registry
(tools/make_primitive_docs.py): they must be current, and a row must say what the declaration says."""
import os
import sys

import numpy as np

from tracegrad.registry import PRIMITIVES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_primitive_docs  # noqa: E402


def test_generated_docs_are_up_to_date():
    for path, text in make_primitive_docs.render().items():
        with open(path, encoding="utf-8") as f:
            assert f.read() == text, f"{os.path.relpath(path, ROOT)} is out of date: run python tools/make_primitive_docs.py"


def test_every_primitive_has_a_row_and_every_numpy_function_is_listed():
    guide = make_primitive_docs.guide_tables()
    missing = [name for name in PRIMITIVES if f"| `{name}` |" not in guide]
    assert not missing, missing
    readme = make_primitive_docs.readme_list()
    for name in ("arctan2", "logaddexp", "hypot", "fmax", "remainder", "sinc", "deg2rad", "exp"):
        assert name in readme, name
    assert "erf" in readme and "atan2" in readme  # the math functions


def test_a_row_says_what_the_declaration_says():
    # the backward column of a rule that is one ``return [...]`` is that expression, as written
    assert make_primitive_docs.backward(PRIMITIVES["cos"]) == "`-g * sin(x)`"
    assert make_primitive_docs.backward(PRIMITIVES["sign"]) == "none"  # nondiff
    assert make_primitive_docs.usage(PRIMITIVES["arctan2"]) == "`np.arctan2`, `math.atan2`"
    assert make_primitive_docs.usage(PRIMITIVES["lt"]) == "`x < y`, `np.less`"
    assert make_primitive_docs.numpy_name(np.linalg.norm) == "np.linalg.norm"
    assert make_primitive_docs.numpy_name("expit") == "scipy.special.expit"
