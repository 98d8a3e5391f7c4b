"""docs/api.md is generated from the docstrings: it must match them, and every export needs a docstring."""
import inspect
import os
import sys

import tracegrad as tg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_api_reference  # noqa: E402


def test_api_reference_is_up_to_date():
    with open(make_api_reference.OUT, encoding="utf-8") as f:
        assert f.read() == make_api_reference.render(), "run: python tools/make_api_reference.py"


def test_every_export_has_a_docstring():
    names = [(name, getattr(tg, name)) for name in tg.__all__]
    names += [(f"{name}.{m}", getattr(obj, m)) for name, obj in list(names) if inspect.ismodule(obj)
              for m in getattr(obj, "__all__", [])]
    missing = [name for name, obj in names if not inspect.getdoc(obj)]
    assert not missing, f"exports without a docstring: {missing}"
