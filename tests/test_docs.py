"""Every ```python block of the user guide runs, and prints what the guide shows it printing.

A page's blocks run in order in one namespace, as a reader would paste them. A ```text block right
after a ```python block is that block's output, compared exactly (trailing spaces aside; ``...`` matches
anything, as in doctest). Each block is compiled as a file named ``example.py``, so generated code and
error messages point at ``example.py:<line in the block>``. After a change to what blocks print (the
generated code, say), ``python tools/update_doc_outputs.py`` rewrites the ```text blocks that no longer match.
"""
import contextlib
import doctest
import io
import linecache
import os
import re

import pytest

import tracegrad as tg
from tracegrad.core import PRIMITIVES

GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "guide")
PAGES = sorted(f for f in os.listdir(GUIDE) if f.endswith(".md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def blocks(text):
    """[(code, expected output or None, line number in the page)] for each ```python block."""
    found = [(m.group(1), m.group(2), text[:m.start()].count("\n") + 1, m.start(), m.end()) for m in FENCE.finditer(text)]
    out = []
    for i, (lang, body, line, start, end) in enumerate(found):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(found) and found[i + 1][0] == "text" and not text[end:found[i + 1][3]].strip():
            expected = found[i + 1][1]
        out.append((body, expected, line))
    return out


def run_block(code, namespace, filename):
    lines = code.splitlines(keepends=True)
    linecache.cache[filename] = (len(code), None, lines, filename)  # so errors can quote the line
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, filename, "exec"), namespace)
    return stdout.getvalue()


def same(expected, got):
    clean = lambda s: "\n".join(line.rstrip() for line in s.strip("\n").splitlines())
    checker = doctest.OutputChecker()
    return checker.check_output(clean(expected) + "\n", clean(got) + "\n", doctest.ELLIPSIS)


def test_the_guide_has_its_pages():
    assert {"getting_started.md", "tracing.md", "generated_code.md", "primitives.md", "training.md",
            "performance.md", "faq.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run_and_print_what_the_page_shows(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    text = open(os.path.join(GUIDE, page), encoding="utf-8").read()
    found = blocks(text)
    if page != "README.md":
        assert found, f"{page} has no python blocks"
    run_blocks(found, page, tmp_path, "example.py")


def run_blocks(found, page, tmp_path, name):
    """Run a page's blocks in order in one namespace, each compiled as a file ``name``, and compare what each
    prints with the text block after it."""
    namespace = {"__name__": "__main__"}
    for k, (code, expected, line) in enumerate(found):
        filename = os.path.join(str(tmp_path), f"block{k}", name)
        try:
            got = run_block(code, namespace, filename)
        except Exception as exc:
            raise AssertionError(f"{page}:{line}: the block raised {type(exc).__name__}: {exc}") from exc
        if expected is not None:
            assert same(expected, got), f"{page}:{line}: the block printed\n{got}\ninstead of\n{expected}"


README = os.path.join(os.path.dirname(GUIDE), os.pardir, "README.md")


def test_readme_code_blocks_run_and_print_what_the_readme_shows(tmp_path, monkeypatch):
    """The README's blocks run in order in one namespace, each compiled as a file ``first.py`` (the name its
    generated code's comments show), and print what the ```text block after them shows."""
    monkeypatch.chdir(tmp_path)
    found = blocks(open(README, encoding="utf-8").read())
    assert len(found) >= 4 and sum(expected is not None for _, expected, _ in found) >= 3
    run_blocks(found, "README.md", tmp_path, "first.py")


def test_output_comparison_can_fail():
    assert same("a\n  b  \n", "a\n  b\n") and same("took ... s\n", "took 0.25 s\n")
    assert not same("12.0\n", "12.5\n")
    code, expected, _ = blocks("```python\nprint(1 + 1)\n```\n\n```text\n3\n```\n")[0]
    assert not same(expected, run_block(code, {}, "example.py"))


def test_every_primitive_is_in_the_primitive_list():
    text = open(os.path.join(GUIDE, "primitives.md"), encoding="utf-8").read()
    ours = [name for name, prim in PRIMITIVES.items() if prim.ref.__module__.startswith("tracegrad.primitives")]
    missing = [name for name in ours if f"`{name}`" not in text]
    assert not missing, f"add these primitives to docs/guide/primitives.md: {missing}"
    assert "sigmoid" in ours
