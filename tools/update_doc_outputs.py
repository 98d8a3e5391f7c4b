"""Rewrite the ```text blocks of the guide pages and the README that no longer match what their ```python
block prints (after a change to the generated code, say), running the blocks as tests/test_docs.py does.

    python tools/update_doc_outputs.py                  # every guide page and the README
    python tools/update_doc_outputs.py docs/guide/generated_code.md README.md

A block that still matches is left as it is (its ``...`` stay); one that does not is replaced by the new
output, and its page and line are printed: read the diff before committing (a ``...`` the old block had,
standing for a time or an address, must be put back by hand).
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import test_docs  # noqa: E402  (the same block runner and comparison as the test)


def update(path: str, filename: str) -> int:
    text = open(path, encoding="utf-8").read()
    found = [m for m in test_docs.FENCE.finditer(text)]
    replacements = []  # (start, end, new body) of the text blocks to rewrite
    namespace = {"__name__": "__main__"}
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # blocks that write files write them here, as in the test
        for i, m in enumerate(found):
            if m.group(1) != "python":
                continue
            name = os.path.join(tmp, f"block{i}", filename)
            got = test_docs.run_block(m.group(2), namespace, name)
            nxt = found[i + 1] if i + 1 < len(found) else None
            if nxt is None or nxt.group(1) != "text" or text[m.end():nxt.start()].strip():
                continue
            if not test_docs.same(nxt.group(2), got):
                body = "\n".join(line.rstrip() for line in got.strip("\n").splitlines()) + "\n"
                replacements.append((nxt.start(2), nxt.end(2), body))
                print(f"{os.path.relpath(path, ROOT)}:{text[:nxt.start()].count(chr(10)) + 1}: rewritten")
        os.chdir(here)
    for start, end, body in reversed(replacements):
        text = text[:start] + body + text[end:]
    if replacements:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return len(replacements)


def main(paths):
    """``paths`` relative to the repository (every guide page and the README when empty)."""
    guide = os.path.relpath(test_docs.GUIDE, ROOT)
    for page in paths or [os.path.join(guide, p) for p in test_docs.PAGES] + ["README.md"]:
        update(os.path.join(ROOT, page), "first.py" if page == "README.md" else "example.py")


if __name__ == "__main__":
    main(sys.argv[1:])
