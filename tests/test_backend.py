"""The Numba backend: generated files, the cache directory, malloc tuning."""
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
@pytest.mark.parametrize("setting,expected", [("1", "True"), ("0", "False")])
def test_malloc_tuning_is_on_by_default_and_can_be_turned_off(setting, expected):
    env = dict(os.environ, TRACEGRAD_TUNE_MALLOC=setting)
    out = subprocess.run([sys.executable, "-c", "import tracegrad.backend as b; print(b.MALLOC_TUNED)"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == expected


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
