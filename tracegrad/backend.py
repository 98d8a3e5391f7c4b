"""Compile generated modules with Numba.

Each module is written once to a real file named by the hash of its source (and of the tracegrad,
Numba and NumPy versions), imported from there and compiled with ``numba.njit(cache=True)``, so Numba's
on-disk cache works across processes. Writes are atomic (temporary file, then rename), so several
processes can share one cache directory. Set it with ``TRACEGRAD_CACHE_DIR`` or ``set_cache_dir``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numba
from numba.core.errors import NumbaPerformanceWarning
import numpy as np

from . import __version__
from .codegen import Module
from .errors import CompileError

# Generated code multiplies transposed views; Numba handles them correctly, only warns about speed.
warnings.filterwarnings("ignore", message=".*is faster on contiguous arrays", category=NumbaPerformanceWarning)

def _tune_malloc() -> bool:
    """Keep glibc from returning every freed large array to the OS at once.

    Compiled code allocates its temporaries with malloc; glibc serves blocks over 128 KiB with mmap and
    unmaps them on free, so each call pays page faults for every large temporary (10x slower on a
    100,000-element Rosenbrock gradient). PyTorch and JAX avoid this with caching allocators; we raise
    glibc's thresholds instead (64 MiB for mmap, 256 MiB kept before trimming). Set
    ``TRACEGRAD_TUNE_MALLOC=0`` to leave malloc alone.
    """
    if os.environ.get("TRACEGRAD_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))
    except (OSError, AttributeError):  # not glibc
        return False


MALLOC_TUNED = _tune_malloc()

_cache_dir: Path | None = None
_loaded: dict = {}
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
            return dispatcher
        if not path.exists() or path.read_text(encoding="utf-8") != module.source:
            _write_atomically(path, module.source)
        dispatcher = import_file(path, module.function, module.parts)
        _loaded[path] = dispatcher
        return dispatcher


def import_file(path: Path, function: str, parts=()):
    """Import the generated module at ``path`` and wrap ``function`` (and the ``parts`` it calls) with
    ``numba.njit(cache=True)``. The background compiler (``tiers``) calls this too, so both processes name
    the module alike and share Numba's cache entries."""
    name = f"tracegrad_generated_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    py_module = importlib.util.module_from_spec(spec)
    sys.modules[name] = py_module  # Numba's cache finds the module by name when it loads
    spec.loader.exec_module(py_module)
    # error_model="numpy": 1/0 gives inf and 0/0 nan, as in NumPy, instead of raising
    jit = numba.njit(cache=True, error_model="numpy")
    for part in parts:  # globals the function calls: compiled when it is
        setattr(py_module, part, jit(getattr(py_module, part)))
    return jit(getattr(py_module, function))


def file_of(dispatcher) -> tuple:
    """The generated file a dispatcher's function is in, and its name there."""
    return dispatcher.py_func.__code__.co_filename, dispatcher.py_func.__name__


def _read_types(described) -> tuple:
    """Numba types from ``tiers.describe``'s lists."""
    types = []
    for d in described:
        dtype = numba.from_dtype(np.dtype(d[1]))
        types.append(numba.types.Array(dtype, d[2], d[3], readonly=not d[4]) if d[0] == "array" else dtype)
    return tuple(types)


def is_loaded(dispatcher, described_types) -> bool:
    """Whether ``dispatcher`` has compiled code for ``described_types`` (``tiers.describe``) in memory."""
    return _read_types(described_types) in dispatcher.overloads


def has_cache_entries(dispatcher) -> bool:
    """Whether Numba's disk cache has an index for ``dispatcher``'s function (some signature or other):
    a file test, without Numba's first look at its cache (which costs ~0.3-1 s of imports)."""
    try:
        return os.path.exists(dispatcher._cache._cache_file._index_path)
    except AttributeError:  # another Numba
        return True


def load_cached(dispatcher, described_types) -> bool:
    """Give ``dispatcher`` its compiled code for ``described_types`` (``tiers.describe``) if it is ready
    in memory or in Numba's disk cache, without compiling anything; True when it is. (Numba has no public
    call for "load, but do not compile"; this does what ``Dispatcher.compile`` does before it compiles.)"""
    types = _read_types(described_types)
    if types in dispatcher.overloads:
        return True
    if not has_cache_entries(dispatcher):
        return False
    from numba.core.compiler_lock import global_compiler_lock

    try:
        with global_compiler_lock:
            cres = dispatcher._cache.load_overload(types, dispatcher.targetctx)
            if cres is None:
                return False
            dispatcher._cache_hits[types] += 1
            dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
            return True
    except AttributeError:  # another Numba: let the call compile (or load) it as usual
        return False


def compile_file(path: str, function: str, parts, described_types, calls: dict) -> None:
    """Compile ``function`` of the generated file ``path`` for ``described_types`` into Numba's disk cache
    (run in the compile worker). ``calls`` names the globals it calls: other generated functions, as
    (path, function, parts), set before it compiles (``fit``'s epoch calls the loss's code)."""
    dispatcher = _imported.get((path, function))
    if dispatcher is None:
        dispatcher = _imported[(path, function)] = import_file(Path(path), function, parts)
    for name, (callee_path, callee, callee_parts) in calls.items():
        key = (callee_path, callee)
        if key not in _imported:
            _imported[key] = import_file(Path(callee_path), callee, callee_parts)
        dispatcher.py_func.__globals__[name] = _imported[key]
    dispatcher.compile(_read_types(described_types))


_imported: dict = {}  # in the compile worker: (path, function) -> dispatcher


def compile_error(exc: Exception, module: Module) -> CompileError:
    return CompileError(
        f"Numba could not compile the generated code in {module_path(module)}. This is a tracegrad bug: "
        f"please report it with that file.\n{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


NUMBA_ERRORS = (numba.core.errors.NumbaError,)
