"""The Numba backend: generated files, the cache directory, malloc tuning."""
import os
import subprocess
import sys

import pytest


def test_generated_files_are_written_atomically_and_only_once(tmp_path):
    import numpy as np
    import tracegrad as tg
    from tracegrad import backend

    tg.set_cache_dir(tmp_path)
    try:
        fun = tg.grad(lambda x: np.sum(np.cos(x)))
        entry = fun.specialize(np.ones(2))
        path = backend.module_path(entry.module)
        stamp = path.stat().st_mtime_ns
        backend.load(entry.module)  # loading again neither rewrites the file nor leaves temporaries
        assert path.stat().st_mtime_ns == stamp
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    finally:
        tg.set_cache_dir(None)


_SPY = """
import ctypes, sys
called = []
class Spy(ctypes.CDLL):  # records every C function looked up through ctypes.CDLL
    def __getattr__(self, name):
        called.append(name)
        return super().__getattr__(name)
    def __getitem__(self, name):
        called.append(name)
        return super().__getitem__(name)
ctypes.CDLL = Spy
import numpy as np, tracegrad as tg
tg.grad(lambda x: np.sum(x * x))(np.ones(3))
if sys.argv[1] == "call":
    print(tg.tune_malloc())
import tracegrad.backend as b
print("mallopt" in called, b.MALLOC_TUNED)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
@pytest.mark.parametrize("setting,how,expected", [
    ("", "import", "False False"), ("0", "import", "False False"),  # the default: malloc left alone
    ("1", "import", "True True"), ("", "call", "True\nTrue True")])  # opted in: the variable or the call
def test_malloc_is_left_alone_unless_asked(setting, how, expected):
    env = dict(os.environ, TRACEGRAD_TUNE_MALLOC=setting)
    out = subprocess.run([sys.executable, "-c", _SPY, how], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected, out.stderr
