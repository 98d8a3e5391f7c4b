import os
import tempfile

import numpy as np
import pytest

# Compiled kernels are cached on disk; tests share one cache directory per run unless CI sets one.
os.environ.setdefault("TRACEGRAD_CACHE_DIR", os.path.join(tempfile.gettempdir(), "tracegrad-test-cache"))
# Most tests check what the compiled code does, so they compile before the first call returns, as
# compile="wait" does; tests/test_tiers.py checks the background and NumPy tiers explicitly.
os.environ.setdefault("TRACEGRAD_COMPILE", "wait")
# a background compile starts at the first call (test_tiers.py checks the default, after 1 s on NumPy)
os.environ.setdefault("TRACEGRAD_COMPILE_AFTER", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
