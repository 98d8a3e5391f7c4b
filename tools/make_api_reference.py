"""Write docs/api.md, the API reference, from the docstrings of everything ``tracegrad`` exports.

    python tools/make_api_reference.py          # rewrite docs/api.md
    python tools/make_api_reference.py --check  # exit 1 if docs/api.md is out of date (the tests do this)
"""
import inspect
import os
import re
import sys

import tracegrad as tg

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api.md")


def entry(name, obj, level="##") -> str:
    if inspect.ismodule(obj):
        text = f"{level} `tg.{name}` (module)\n\n{inspect.getdoc(obj) or ''}\n"
        members = [m for m in getattr(obj, "__all__", []) if not m.startswith("_")]
        return "\n".join([text] + [entry(f"{name}.{m}", getattr(obj, m), "###") for m in members])
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = ""
    # defaults print as '<function relu at 0x7f...>' and "<class 'numpy.float64'>": keep the page stable
    signature = re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", signature)
    signature = re.sub(r"<class '(?:numpy\.)?([\w.]+)'>", lambda m: "np." + m.group(1) if "." not in m.group(1) else m.group(1), signature)
    kind = "class" if inspect.isclass(obj) else "function"
    doc = inspect.getdoc(obj) or "(no docstring)"
    return f"{level} `tg.{name}{signature}`\n\n*{kind}*\n\n{doc}\n"


def render() -> str:
    parts = ["# API reference\n",
             "Generated from the docstrings by `python tools/make_api_reference.py`; "
             "`tests/test_api_reference.py` fails when this page is out of date.\n"]
    parts += [entry(name, getattr(tg, name)) for name in tg.__all__]
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        current = open(OUT, encoding="utf-8").read() if os.path.exists(OUT) else ""
        sys.exit(0 if current == text else 1)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}")
