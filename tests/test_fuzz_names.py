"""Fuzzing the user's names: random (Unicode) local variable names and dict keys must give code that
compiles and the gradient central differences give. Few examples: each one compiles a new function."""
import keyword
import unicodedata

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import tracegrad as tg

# any character but surrogates (not encodable) for dict keys; identifier characters for locals
KEY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=4)
NAME_CHARS = st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Lm", "Nl", "Mn", "Nd", "Pc", "No"))
NAME = st.text(NAME_CHARS, min_size=1, max_size=4).filter(
    lambda s: s.isidentifier() and not keyword.iskeyword(s)
    and unicodedata.normalize("NFKC", s) not in {"np", "d", "x", "tg"} and not s.startswith("_"))


def _function(locals_: list, keys: list):
    """``f(d, x)`` reading every key of ``d`` and naming each intermediate with one of ``locals_``."""
    lines, previous = [], "x"
    for i, (name, key) in enumerate(zip(locals_, keys)):
        lines.append(f"    {name} = np.sin({previous}) * d[{key!r}] + {i + 1.0} * x")
        previous = name
    lines.append(f"    return np.sum({previous} * {previous})")
    namespace = {"np": np}
    exec("def f(d, x):\n" + "\n".join(lines) + "\n", namespace)
    return namespace["f"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=3, max_size=3), keys=st.lists(KEY, min_size=3, max_size=3, unique=True))
def test_any_names_compile_and_give_the_right_gradient(names, keys):
    f = _function(names, keys)
    d = {key: 0.3 + 0.2 * i for i, key in enumerate(keys)}
    x = np.array([0.5, -1.0])
    grad = tg.grad(f, argnums=(0, 1))
    got_d, got_x = grad(d, x)
    want_d, want_x = tg.numeric_grad(f, d, x, argnums=(0, 1))
    assert got_d.keys() == want_d.keys()
    for key in keys:
        np.testing.assert_allclose(got_d[key], want_d[key], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-7)
    assert grad.source(d, x).isascii()  # every name ASCII, whatever the keys and locals
