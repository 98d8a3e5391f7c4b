"""In a notebook, the generated code's comments, drawings and errors name the cell (``In [3], line 2``),
not the file IPython compiled it to (``/tmp/ipykernel_123/3718232391.py``)."""
import pytest

IPython = pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.run_cell("import numpy as np\nimport tracegrad as tg")
    yield shell
    InteractiveShell.clear_instance()


def run(shell, code):
    result = shell.run_cell(code)
    assert result.error_in_exec is None and result.error_before_exec is None, result
    return result.result


def test_generated_code_names_the_cell_and_its_line(shell):
    number = shell.execution_count
    run(shell, "def f(x):\n    y = np.sin(x)\n    return y * x\n")
    source = run(shell, "tg.source(tg.grad(f), 1.0)")
    assert f"# In [{number}], line 2" in source and f"# In [{number}], line 3" in source
    assert ".py:2" not in source  # not IPython's file for the cell


def test_a_cell_run_again_unchanged_keeps_its_number_so_the_code_is_the_same(shell):
    first = shell.execution_count
    cell = "def g(x):\n    return np.exp(x) * 2.0\n"
    run(shell, cell)
    before = run(shell, "tg.source(tg.grad(g), 1.0)")
    run(shell, cell)  # a later execution count, the same text
    after = run(shell, "tg.source(tg.grad(g), 1.0)")
    assert after == before and f"In [{first}], line 2" in after


def test_errors_and_drawings_name_the_cell(shell):
    number = shell.execution_count
    run(shell, "def h(x):\n    if x > 0:\n        return x\n    return -x\n")
    message = run(shell, "try:\n    tg.grad(h)(1.0)\nexcept tg.TracegradError as e:\n    m = str(e)\nm")
    assert f"In [{number}], line 2: if x > 0:" in message
    number = shell.execution_count
    run(shell, "def k(x):\n    return np.sum(np.tanh(x) * x + x)\n")
    dot = run(shell, "tg.draw(k, np.ones(3), by_line='cluster').dot")
    assert f"In [{number}], line 2" in dot


def test_outside_a_notebook_files_are_named_as_before():
    from tracegrad.errors import SourceInfo
    info = SourceInfo("/home/me/model.py", 12, "y = x * 2")
    assert info.short() == "model.py:12" and str(info) == "/home/me/model.py:12: y = x * 2"
