"""The Numba backend: generated files, the cache directory, malloc tuning."""
import os
import subprocess
import sys
import textwrap

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


# ---------------------------------------------------------------- the cache directory: private, or not used

import errno
import stat
import warnings

import numpy as np

import tracegrad as tg
from tracegrad import backend


@pytest.fixture
def cache(tmp_path):
    """A fresh cache directory configured for the test (not yet created)."""
    directory = tmp_path / "cache"
    tg.set_cache_dir(directory)
    yield directory
    tg.set_cache_dir(None)


def _square_grad():
    return tg.grad(lambda x: np.sum(np.tanh(x) * x))  # a new function each time: traced and loaded again


def _expected(x):
    return np.tanh(x) + x * (1 - np.tanh(x) ** 2)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_the_cache_directory_and_pycache_are_created_private_whatever_the_umask(tmp_path):
    directory = tmp_path / "made" / "cache"
    program = textwrap.dedent(f"""
        import os, numpy as np, tracegrad as tg
        os.umask(0)  # in this child process only: the loosest umask there is
        print(tg.grad(lambda x: np.sum(x * x))(np.ones(2)))
    """)
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(directory))
    subprocess.run([sys.executable, "-c", program], env=env, check=True, capture_output=True)
    assert _mode(directory) == 0o700 and _mode(directory / "__pycache__") == 0o700
    modules = list(directory.glob("*.py"))
    assert modules and all(_mode(m) == 0o600 for m in modules)
    assert not list((directory / "__pycache__").glob("*.pyc"))  # compiled from memory: no .pyc to plant


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o777, 0o757, 0o770])
def test_a_cache_directory_others_can_write_is_not_used(cache, mode):
    cache.mkdir()
    os.chmod(cache, mode)
    if mode & 0o020:  # group-writable is fine for the user's own private group: give it another group
        if os.getuid() != 0:
            pytest.skip("needs root to give a directory another group")
        os.chown(cache, 0, 65534)
    with pytest.warns(tg.CacheWarning, match="other users can write"):
        grad = _square_grad()(np.ones(3))
    np.testing.assert_allclose(grad, _expected(np.ones(3)))
    assert not list(cache.iterdir())  # nothing written, nothing read there
    assert backend.module_path(_square_grad().specialize(np.ones(3)).module).parent != cache


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to give a directory away")
def test_a_cache_directory_of_another_user_is_not_used(cache):
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.warns(tg.CacheWarning, match="belongs to another user"):
        np.testing.assert_allclose(_square_grad()(np.ones(2)), _expected(np.ones(2)))


def test_a_cache_path_under_a_file_falls_back_with_one_warning(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    tg.set_cache_dir(tmp_path / "file" / "cache")
    try:
        with pytest.warns(tg.CacheWarning, match="Not a directory") as record:
            first = _square_grad()(np.ones(2))
            second = tg.grad(lambda x: np.sum(np.sin(x)))(np.ones(2))
        assert len(record) == 1
        np.testing.assert_allclose(first, _expected(np.ones(2)))
        np.testing.assert_allclose(second, np.cos(np.ones(2)))
    finally:
        tg.set_cache_dir(None)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_falls_back_to_a_private_directory(cache, monkeypatch, code):
    real = backend._write_atomically

    def fail_in_cache(path, text):  # the directory's checks passed; writing a module there then fails
        if path.parent == cache:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, text)

    monkeypatch.setattr(backend, "_write_atomically", fail_in_cache)
    with pytest.warns(tg.CacheWarning, match=os.strerror(code)) as record:
        np.testing.assert_allclose(_square_grad()(np.ones(3)), _expected(np.ones(3)))
        np.testing.assert_allclose(_square_grad()(np.ones(4)), _expected(np.ones(4)))
    assert len(record) == 1
    assert not list(cache.glob("*.py"))


def test_nothing_writable_at_all_compiles_in_memory(cache, monkeypatch):
    def read_only(directory):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))

    monkeypatch.setattr(backend, "_prepare", read_only)
    with pytest.warns(tg.CacheWarning, match="compiling in memory"):
        grad = _square_grad()
        np.testing.assert_allclose(grad(np.ones(3)), _expected(np.ones(3)))
    assert "def " in grad.source(np.ones(3))
    assert not cache.exists()


def test_numba_with_nowhere_to_cache_compiles_in_memory():
    backend._warned.discard("numba")  # one warning a process: this test wants to see it
    namespace = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)  # no file: Numba has no cache locator for it
    with pytest.warns(tg.CacheWarning, match="compiling in memory"):
        twice = backend.jit(namespace["twice"])
    assert twice(3.0) == 6.0


def _forget(directory):
    """As if a new process: the modules loaded from ``directory`` are loaded (and Numba's cache read) again."""
    for key in [k for k in backend._loaded if k[0] == directory]:
        del backend._loaded[key]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_a_corrupt_numba_cache_file_is_discarded_and_rebuilt_with_one_warning(cache, damage, suffix):
    x = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(_square_grad()(x), _expected(x))  # compiled and saved
    files = list((cache / "__pycache__").glob("*" + suffix))
    assert files
    for file in files:
        data = file.read_bytes()
        file.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"garbage\n", "empty": b""}[damage])
    _forget(cache)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        np.testing.assert_allclose(_square_grad()(x), _expected(x))
    cache_warnings = [w for w in record if issubclass(w.category, tg.CacheWarning)]
    assert len(cache_warnings) == 1 and "could not be read" in str(cache_warnings[0].message)
    _forget(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.CacheWarning)  # rebuilt: the next process loads it quietly
        entry = _square_grad().specialize(x)
        np.testing.assert_allclose(entry.dispatcher(x)[1], _expected(x))
        assert sum(entry.dispatcher.stats.cache_hits.values()) == 1


def test_cache_command_reports_and_clears_only_its_own_files(tmp_path):
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", "import numpy as np, tracegrad as tg; tg.grad(np.sin)(1.0)"],
                   env=env, check=True, capture_output=True)
    (tmp_path / "notes.txt").write_text("the user's own file")

    def command(*args):
        return subprocess.run([sys.executable, "-m", "tracegrad", "cache", *args], env=env, check=True,
                              capture_output=True, text=True).stdout

    info = command("--info")
    assert f"cache directory: {tmp_path}" in info and "1 generated modules" in info
    assert int(info.splitlines()[1].split()[0]) >= 3  # the module, Numba's index and its compiled code
    assert "removed" in command("--clear")
    assert command("--info").splitlines()[1].startswith("0 files, 0 bytes")
    assert (tmp_path / "notes.txt").exists()
    os.chmod(tmp_path, 0o777)
    assert "not used by tracegrad: other users can write" in command("--info")


FIT_PROGRAM = textwrap.dedent("""
    import numpy as np, tracegrad as tg
    X = np.linspace(0, 1, 8).reshape(4, 2)
    params, _ = tg.fit(lambda p, X: np.mean((X @ p["w"] - 1.0) ** 2), {"w": np.ones(2)}, (X,),
                       optimizer=tg.optim.Adam(lr=0.1), batch_size=2, epochs=2, progress=False)
    print(params["w"].tolist(), tg.grad(lambda w: np.sum(np.cos(w)))(np.ones(2)).tolist())
""")


def test_corrupt_cache_files_in_a_new_process_are_rebuilt_for_fit_and_grad(tmp_path):
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(tmp_path))

    def run():
        return subprocess.run([sys.executable, "-c", FIT_PROGRAM], env=env, capture_output=True, text=True)

    first = run()
    assert first.returncode == 0, first.stderr
    for file in (tmp_path / "__pycache__").glob("*.nb*"):  # every index and data file: epoch, loss, update, grad
        file.write_bytes(file.read_bytes()[:40])
    second = run()
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "CacheWarning" in second.stderr and "could not be read" in second.stderr
    third = run()  # rebuilt: read back without a word
    assert third.stdout == first.stdout and "CacheWarning" not in third.stderr


def test_an_error_of_the_code_itself_after_a_rebuild_is_raised_as_it_is(cache):
    loss = lambda x: np.sum(np.log(x))  # noqa: E731
    tg.grad(loss, debug_nans=True)(np.ones(2))
    for file in (cache / "__pycache__").glob("*.nbi"):
        file.write_bytes(b"garbage")
    _forget(cache)
    with pytest.warns(tg.CacheWarning, match="could not be read"):
        with pytest.raises(tg.NonFiniteError, match="forward pass"):
            tg.grad(loss, debug_nans=True)(np.zeros(2))


def test_a_cache_directory_deleted_while_running_is_made_again(cache):
    import shutil

    np.testing.assert_allclose(_square_grad()(np.ones(2)), _expected(np.ones(2)))
    shutil.rmtree(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tg.CacheWarning)
        np.testing.assert_allclose(tg.grad(lambda x: np.sum(x ** 3))(np.ones(2)), [3.0, 3.0])
    assert _mode(cache) == 0o700 and list(cache.glob("*.py"))
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


def test_import_leaves_the_warnings_filters_alone():
    """A library must not change its user's process: no warnings filter is added by importing tracegrad
    (NumPy, SciPy and Numba, imported first, add some of their own)."""
    import subprocess
    import sys

    code = ("import numpy, numba, scipy, scipy.special, scipy.linalg, numba.core.errors; "
            "import warnings; before = list(warnings.filters); import tracegrad; "
            "assert warnings.filters == before, [f for f in warnings.filters if f not in before]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
