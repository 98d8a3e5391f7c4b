"""Compile generated modules with Numba.

Each module is written once to a real file named by the hash of its source (and of the tracegrad,
Numba and NumPy versions), imported from there and compiled with ``numba.njit(cache=True)``, so Numba's
on-disk cache works across processes. Writes are atomic (temporary file, then rename), so several
processes can share one cache directory. Set it with ``TRACEGRAD_CACHE_DIR`` or ``set_cache_dir``.
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
import weakref
from pathlib import Path

import numba
from numba.core.errors import NumbaPerformanceWarning
import numpy as np

from . import __version__
from .codegen import Module
from .errors import CompileError

# Generated code multiplies transposed views; Numba handles them correctly, only warns about speed.
warnings.filterwarnings("ignore", message=".*is faster on contiguous arrays", category=NumbaPerformanceWarning)

MALLOC_TUNED = False  # whether tune_malloc() has changed glibc's malloc in this process


def tune_malloc() -> bool:
    """Opt in: keep glibc's malloc from returning every large freed array to the OS at once.

    Compiled code allocates its temporaries with malloc. glibc serves blocks over its mmap threshold
    (128 KiB at first, then rising with what is freed) with mmap and gives freed memory at the top of
    the heap back to the OS, so a call can pay page faults for its large temporaries again and again.
    This raises the mmap threshold to 64 MiB and the trim threshold to 256 MiB. It is process-wide,
    so it changes the behaviour of every other library in the process, and the process keeps up to
    256 MiB of freed memory: tracegrad never does it unless asked, by this call or by setting the
    environment variable ``TRACEGRAD_TUNE_MALLOC=1`` before importing tracegrad. Measured gains are in
    benchmarks/RESULTS.md (a few percent on a 10⁶-element Rosenbrock gradient, more on an MLP step at
    batch 1024). Returns whether malloc was tuned (False on anything but glibc).

    >>> import tracegrad as tg
    >>> tuned = tg.tune_malloc()  # once, at the start of a program that trains on large batches
    """
    global MALLOC_TUNED
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, 64 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False
    MALLOC_TUNED = MALLOC_TUNED or tuned
    return tuned


if os.environ.get("TRACEGRAD_TUNE_MALLOC", "0") not in ("", "0"):
    tune_malloc()

_cache_dir: Path | None = None
# path -> dispatcher, while something uses it: dropping a specialisation frees its compiled code. The
# last few loaded are kept anyway, so that `tg.grad(f)(x)` written in a loop does not load them every time.
_loaded: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
RECENT_MODULES = 16
_recent: collections.deque = collections.deque(maxlen=RECENT_MODULES)
_lock = threading.Lock()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracegrad"


def cache_dir() -> Path:
    """Where generated modules (and Numba's cache of them) live."""
    if _cache_dir is not None:
        return _cache_dir
    env = os.environ.get("TRACEGRAD_CACHE_DIR")
    return Path(env) if env else default_cache_dir()


def set_cache_dir(path) -> None:
    """Use ``path`` for generated modules from now on (``None``: back to the default)."""
    global _cache_dir
    _cache_dir = None if path is None else Path(path)


def module_path(module: Module) -> Path:
    key = "\n".join([module.source, __version__, numba.__version__, np.__version__, sys.version])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / f"{module.function}_{digest}.py"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(module: Module):
    """The Numba dispatcher for ``module``'s function; compiled lazily on the first call."""
    path = module_path(module)
    with _lock:
        dispatcher = _loaded.get(path)
        if dispatcher is not None:
            if dispatcher not in _recent:
                _recent.append(dispatcher)
            return dispatcher
        if not path.exists() or path.read_text(encoding="utf-8") != module.source:
            _write_atomically(path, module.source)
        name = f"tracegrad_generated_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        py_module = importlib.util.module_from_spec(spec)
        sys.modules[name] = py_module  # Numba's cache finds the module by name when it loads
        spec.loader.exec_module(py_module)
        # error_model="numpy": 1/0 gives inf and 0/0 nan, as in NumPy, instead of raising
        jit = numba.njit(cache=True, error_model="numpy")
        for part in module.parts:  # globals the function calls: compiled when it is
            setattr(py_module, part, jit(getattr(py_module, part)))
        dispatcher = jit(getattr(py_module, module.function))
        _loaded[path] = dispatcher
        _recent.append(dispatcher)
        weakref.finalize(dispatcher, _forget_module, name, py_module)
        return dispatcher


def _forget_module(name: str, py_module) -> None:
    """Drop a generated module no dispatcher uses any more (unless the name has been loaded again)."""
    if sys.modules.get(name) is py_module:
        del sys.modules[name]


def compile_error(exc: Exception, module: Module) -> CompileError:
    return CompileError(
        f"Numba could not compile the generated code in {module_path(module)}. This is a tracegrad bug: "
        f"please report it with that file.\n{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


NUMBA_ERRORS = (numba.core.errors.NumbaError,)
