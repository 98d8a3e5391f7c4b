"""Compile generated modules with Numba.

Each module is written once to a real file named by the hash of its source (and of the tracegrad,
Numba and NumPy versions), executed from the text in memory and compiled with ``numba.njit(cache=True)``,
so Numba's on-disk cache works across processes. Writes are atomic (temporary file, then rename), so
several processes of one user can share one cache directory. Set it with ``TRACEGRAD_CACHE_DIR`` or
``set_cache_dir``.

What is in the cache directory runs in this process (Numba's index files are pickles), so it is created
0700 and used only when no other user can write it or a directory above it; otherwise, or when it cannot
be written, a private temporary directory is used, or nothing (compiled in memory), with one
``CacheWarning``. A Numba cache file that cannot be read is discarded and compiled again (``call_failed``).
"""
from __future__ import annotations

import atexit
import collections
import errno
import hashlib
import linecache
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import types
import warnings
import weakref
from pathlib import Path

import numba
from numba.core.errors import NumbaPerformanceWarning
import numpy as np

from . import __version__
from .codegen import Module
from .errors import CacheError, CacheWarning, CompileError, _is_internal
from .ir import Graph


class quiet_compile(warnings.catch_warnings):
    """Around a call that compiles generated code: generated code multiplies transposed views, which Numba
    handles correctly and only warns about for speed, and a parallel loop's body calls serial functions,
    which Numba compiles with the caller's ``parallel=`` and warns that it found nothing to run in parallel
    (``tg.over_rows``). Scoped to the call, never a process-wide filter."""

    def __enter__(self):
        result = super().__enter__()
        warnings.filterwarnings("ignore", message=".*is faster on contiguous arrays", category=NumbaPerformanceWarning)
        warnings.filterwarnings("ignore", message=r"\s*The keyword argument .parallel=True. was specified but no transformation",
                                category=NumbaPerformanceWarning)
        return result

MALLOC_TUNED = False  # whether tune_malloc() has changed glibc's malloc in this process


def tune_malloc() -> bool:
    """Opt in: keep glibc's malloc from returning every large freed array to the OS at once.

    Compiled code allocates its temporaries with malloc. glibc serves blocks over its mmap threshold
    (128 KiB at first, then rising with what is freed) with mmap and gives freed memory at the top of
    the heap back to the OS, so a call can pay page faults for its large temporaries again and again.
    This raises the mmap threshold to 64 MiB and the trim threshold to 256 MiB. It is process-wide,
    so it changes the behaviour of every other library in the process, and the process keeps up to
    256 MiB of freed memory: tracegrad never does it unless asked, by this call or by setting the
    environment variable ``TRACEGRAD_TUNE_MALLOC=1`` before importing tracegrad. Calls from Python
    reuse a workspace for temporaries of 32 KiB and more, so the gain left is small (benchmarks/RESULTS.md);
    it is mostly for code calling ``.dispatcher`` from its own loops, which allocates them at each call.
    Returns whether malloc was tuned (False on anything but glibc).

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
_in_use: dict = {}  # configured directory -> the directory used instead of it (or None: compile in memory)
_warned: set = set()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracegrad"


def cache_dir() -> Path:
    """Where generated modules (and Numba's cache of them) live: ``TRACEGRAD_CACHE_DIR``, ``set_cache_dir``,
    else ``$XDG_CACHE_HOME/tracegrad`` (``~/.cache/tracegrad``).

    Code from this directory runs in your process (Numba's index files are pickles), so tracegrad
    creates it readable and writable by you alone, and uses it only when it and every directory above
    it are yours (or root's) and no one else can write them. Otherwise, or when it cannot be written
    (a read-only or full disk), it warns once (``CacheWarning``) and uses a private temporary directory
    for this process. ``python -m tracegrad cache --info`` shows its size; ``--clear`` empties it.
    """
    if _cache_dir is not None:
        return _cache_dir
    env = os.environ.get("TRACEGRAD_CACHE_DIR")
    return Path(env) if env else default_cache_dir()


def set_cache_dir(path) -> None:
    """Use ``path`` for generated modules from now on (``None``: back to the default)."""
    global _cache_dir
    _cache_dir = None if path is None else Path(path)


class _Unsafe(Exception):
    """A cache directory someone other than this user could write."""


def _private_group(st) -> bool:
    """A group-writable directory is still private when its group is the user's own group and has no
    other members (user private groups, where the default umask is 002)."""
    try:
        import grp
        import pwd

        uid = os.getuid()
        user = pwd.getpwuid(uid).pw_name
        return (st.st_gid == os.getgid() and all(member == user for member in grp.getgrgid(st.st_gid).gr_mem)
                and all(p.pw_uid == uid for p in pwd.getpwall() if p.pw_gid == st.st_gid))
    except (ImportError, KeyError):
        return False


def _check_private(directory: Path) -> None:
    """Raise ``_Unsafe`` unless only this user (and root) can change what ``directory`` holds: it is
    ours and no one else can write it, and each directory above it is ours or root's and writable by
    no one else (or sticky, like /tmp)."""
    if os.name != "posix":
        return
    directory = directory.resolve()
    uid = os.getuid()
    st = os.stat(directory)
    if st.st_uid != uid:
        raise _Unsafe(f"{directory} belongs to another user")
    if _others_can_write(st):
        raise _Unsafe(f"other users can write {directory}")
    for parent in directory.parents:
        st = os.stat(parent)
        if st.st_uid not in (uid, 0):
            raise _Unsafe(f"{parent}, above it, belongs to another user")
        if _others_can_write(st) and not st.st_mode & stat.S_ISVTX:  # in a sticky one, only ours are ours to move
            raise _Unsafe(f"other users can write {parent}, above it")


def unsafe_reason(directory: Path) -> str | None:
    """Why tracegrad would not use ``directory`` as its cache (another user could write it), or None."""
    try:
        _check_private(Path(directory))
    except _Unsafe as exc:
        return str(exc)
    return None


def _others_can_write(st) -> bool:
    return bool(st.st_mode & 0o002 or st.st_mode & 0o020 and not _private_group(st))


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` 0700 whatever the umask, and any missing parent 0700 too (as the XDG base
    directory specification asks of ~/.cache). An existing one is left as it is (and checked)."""
    missing = [d for d in [directory, *directory.parents] if not d.exists()][::-1]
    for d in missing:
        try:
            os.mkdir(d, 0o700)  # never more than 0700; the umask may only take bits away
        except FileExistsError:  # another process was first
            continue
        if d == directory:
            os.chmod(d, 0o700)  # and not less: chmod's mode is not masked
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))


def _prepare(directory: Path) -> None:
    """Make ``directory`` ready to hold generated modules and Numba's cache of them (``__pycache__``,
    created 0700 here before Numba would create it 0755), or raise ``OSError`` / ``_Unsafe``."""
    _make_private_dir(directory)
    _check_private(directory)
    pycache = directory / "__pycache__"
    _make_private_dir(pycache)
    _check_private(pycache)
    for d in (directory, pycache):
        tempfile.TemporaryFile(dir=d).close()  # writable, with space for a file


def _warn_once(key, message: str) -> None:
    """One ``CacheWarning`` per ``key`` and process, attributed to the user's line that led to it."""
    if key in _warned:
        return
    _warned.add(key)
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and _is_internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, CacheWarning, stacklevel=level)


def _temporary_dir() -> Path | None:
    """A private directory for this process, removed at exit; None when none can be made."""
    try:
        directory = Path(tempfile.mkdtemp(prefix="tracegrad-"))  # created 0700, ours
        atexit.register(shutil.rmtree, directory, True)
        _prepare(directory)
        return directory
    except (OSError, _Unsafe):
        return None


def _directory() -> Path | None:
    """The directory generated modules go to: the configured one when it is safe and writable, else a
    private temporary one (warning once), else None (compiled in memory, warning once)."""
    configured = cache_dir()
    if configured in _in_use:
        return _in_use[configured]
    try:
        _prepare(configured)
        _in_use[configured] = configured
        return configured
    except _Unsafe as exc:
        reason = f"{exc}: a file planted there would run in this process"
    except OSError as exc:
        reason = f"{exc.strerror or exc} ({exc.filename or configured})"
    return _fall_back(configured, reason)


def _fall_back(configured: Path, reason: str, temporary: bool = True) -> Path | None:
    """Stop using the directory chosen for ``configured``: use a private temporary one instead (when
    ``temporary``), else compile in memory. Warns once for each."""
    fallback = _temporary_dir() if temporary else None
    _in_use[configured] = fallback
    instead = (f"using the private temporary directory {fallback} for this process (compiled code is not kept for "
               "the next one)" if fallback is not None else "compiling in memory (no directory can be written)")
    _warn_once((configured, fallback is None), f"tracegrad cannot use the cache directory {configured}: {reason}; "
               f"{instead}. Set TRACEGRAD_CACHE_DIR (or tg.set_cache_dir) to a writable directory only you can write.")
    return fallback


def module_path(module: Module) -> Path:
    """The file ``module`` is written to: named by its function and the hash of its source."""
    key = "\n".join([module.source, __version__, numba.__version__, np.__version__, sys.version])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return (_directory() or Path("<memory>")) / f"{module.function}_{digest}.py"


_GENERATED = re.compile(r"(\w+_[0-9a-f]{20})\.py")  # module_path's names


def cache_files(directory: Path | None = None) -> list:
    """The files tracegrad and Numba wrote in the cache directory, as (path, bytes): generated modules,
    temporaries left by a killed process, and Numba's files for those modules in ``__pycache__``. Other
    files (the directory may be shared with something else) are not listed."""
    directory = Path(directory) if directory is not None else cache_dir()
    found = []
    try:
        entries = list(os.scandir(directory))
        inner = list(os.scandir(directory / "__pycache__")) if (directory / "__pycache__").is_dir() else []
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and (_GENERATED.fullmatch(entry.name) or
                                                     entry.name.startswith(".tmp-") and entry.name.endswith(".py")):
            found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    for entry in inner:
        stem = entry.name.split(".", 1)[0]
        if entry.is_file(follow_symlinks=False) and re.fullmatch(r"\w+_[0-9a-f]{20}", stem):
            found.append((Path(entry.path), entry.stat(follow_symlinks=False).st_size))
    return sorted(found)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jit(function, **options):
    """``numba.njit(cache=True, **options)(function)``; compiled in memory (one warning) when Numba has
    nowhere to keep its cache (a read-only installation without a writable cache directory)."""
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError as exc:  # Numba's "cannot cache function ...: no locator available"
        if "locator" not in str(exc):
            raise
        _warn_once("numba", f"Numba cannot cache {function.__name__} ({exc}); compiling in memory. Set "
                            "NUMBA_CACHE_DIR to a writable directory to keep compiled code between runs.")
        return numba.njit(**options)(function)


def parallel_options(function) -> dict:
    """Numba's options for a generated function: ``parallel=`` for one with ``prange`` loops
    (``parallel=True`` in tracegrad), and then only for them: Numba's other automatic parallelisation
    (array expressions, ``np.sum``, ...) would add up in an order that depends on the threads."""
    if "prange" not in function.__code__.co_names:
        return {}
    return {"parallel": {"prange": True, "comprehension": False, "reduction": False, "inplace_binop": False,
                         "setitem": False, "numpy": False, "stencil": False, "fusion": False}}


def threads() -> int:
    """The number of threads Numba's parallel loops may use in this process (``NUMBA_NUM_THREADS``)."""
    return numba.config.NUMBA_NUM_THREADS


def load(module: Module):
    """The Numba dispatcher for ``module``'s function; compiled lazily on the first call.

    The module is written to the cache directory and compiled from the text in memory (never from a
    ``.pyc``); if the directory cannot be written after all (a full disk), the next choice is used."""
    with _lock:
        _drop_forgotten()
        recreated = False
        while True:
            directory = _directory()
            name = module_path(module).name
            dispatcher = _loaded.get((directory, name))
            if dispatcher is not None:
                if dispatcher not in _recent:
                    _recent.append(dispatcher)
                return dispatcher
            try:
                dispatcher = _load(module, directory, name)
            except OSError as exc:  # the directory passed its checks but cannot be written now (a full disk)
                if directory is None:
                    raise
                if not directory.exists() and not recreated:  # deleted while we ran: made (and checked) again
                    _in_use.pop(cache_dir(), None)
                    recreated = True
                    continue
                _fall_back(cache_dir(), f"{exc.strerror or exc} ({exc.filename or directory})",
                           temporary=directory == cache_dir())
                continue
            _loaded[(directory, name)] = dispatcher
            _recent.append(dispatcher)
            return dispatcher


def _load(module: Module, directory: Path | None, name: str):
    stem = name.removesuffix(".py")
    if directory is not None:
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != module.source:
            _write_atomically(path, module.source)
        return import_file(path, module.function, module.parts, module.source)
    # nowhere to write: a module without a file, compiled without Numba's disk cache
    filename = f"<tracegrad {stem}>"
    linecache.cache[filename] = (len(module.source), None, module.source.splitlines(True), filename)
    py_module = types.ModuleType(f"tracegrad_generated_{stem}")
    py_module.__file__ = filename
    sys.modules[py_module.__name__] = py_module
    exec(compile(module.source, filename, "exec"), py_module.__dict__)
    def compile_(function):
        return numba.njit(error_model="numpy", **parallel_options(function))(function)
    for part in module.parts:  # globals the function calls: compiled when it is
        setattr(py_module, part, compile_(getattr(py_module, part)))
    dispatcher = compile_(getattr(py_module, module.function))
    weakref.finalize(dispatcher, _forget_module, py_module.__name__, py_module)
    return dispatcher


def _numba_cache_failed(exc: BaseException) -> bool:
    """Whether ``exc`` came out of Numba's cache: reading a corrupt or truncated index or data file, or
    writing one to a full or read-only disk. The exceptions it was raised from count while they are
    Numba's own (it wraps a callee's errors); an error of the compiled code itself (``NonFiniteError``)
    never does, whatever was being handled when it was raised."""
    import numba.core.caching

    caching = os.path.normcase(os.path.abspath(numba.core.caching.__file__))
    package = os.path.normcase(os.path.dirname(os.path.abspath(numba.__file__))) + os.sep
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        files, tb = [], exc.__traceback__
        while tb is not None:
            files.append(os.path.normcase(os.path.abspath(tb.tb_frame.f_code.co_filename)))
            tb = tb.tb_next
        if caching in files:
            return True
        if not any(f.startswith(package) for f in files):
            return False
        exc = exc.__cause__ or exc.__context__
    return False


def _discard_unloaded_caches() -> list:
    """Delete Numba's cache files of the modules this process loaded but has not compiled yet: one of
    them could not be read. They are written again when compiled."""
    removed = []
    for (directory, name), dispatcher in list(_loaded.items()):
        if directory is None or any(getattr(g, "signatures", None) for g in _jitted(dispatcher)):
            continue
        for file in (directory / "__pycache__").glob(name.removesuffix(".py") + ".*"):
            try:
                file.unlink()
                removed.append(file)
            except OSError:
                pass
    return removed


def call_failed(exc: Exception, module: Module, dispatcher, args):
    """Recover from ``exc``, raised by a call ``dispatcher(*args)`` of a dispatcher ``load`` gave: when
    Numba's cache could not be read (the cache files it came from are discarded, one warning) or written
    (the code compiled anyway), the call is made again and its result returned. A Numba error is raised
    as ``CompileError``; any other exception (``NonFiniteError``, ...) as it is."""
    for attempt in range(1 + 2 * (len(module.parts) + 2)):  # each function compiled may fail once
        if not _numba_cache_failed(exc):
            break
        if isinstance(exc, OSError):  # saving: the compiled code is in memory already
            what = f"could not be written ({exc.strerror or exc}); compiled code is not kept for the next run"
        else:
            removed = _discard_unloaded_caches()
            what = (f"could not be read ({type(exc).__name__}: {exc}); discarded "
                    f"{', '.join(f.name for f in removed) or 'nothing'} and compiled again")
        _warn_once(("numba cache", module_path(module)), f"Numba's cache of {module_path(module).name} {what}.")
        try:
            return dispatcher(*args)
        except Exception as again:  # noqa: BLE001 (sorted out at the top of the loop)
            exc = again
    if isinstance(exc, NUMBA_ERRORS):
        raise compile_error(exc, module) from None
    if _numba_cache_failed(exc):
        raise CacheError(f"Numba's cache of {module_path(module)} cannot be used: {type(exc).__name__}: {exc}",
                         hint=f"delete {cache_dir()} (python -m tracegrad cache --clear) or set TRACEGRAD_CACHE_DIR "
                              "to a writable directory") from None
    raise exc


def _jitted(dispatcher) -> list:
    """The Numba functions of ``dispatcher``'s generated module: it and the parts it calls."""
    module = dispatcher.py_func.__globals__  # (not the kernels it imports)
    return [dispatcher] + [g for g in module.values() if g is not dispatcher and
                           getattr(getattr(g, "py_func", None), "__globals__", None) is module]


def _forget_module(name: str, py_module) -> None:
    """A generated module no dispatcher uses any more: dropped from ``sys.modules`` at the next ``load``
    (not here: a finalizer runs in the middle of whatever code the garbage collector interrupted, which
    may be iterating ``sys.modules``)."""
    _forgotten.append((name, py_module))  # (one atomic append)


_forgotten: list = []


def _drop_forgotten() -> None:
    while _forgotten:
        name, py_module = _forgotten.pop()
        if sys.modules.get(name) is py_module:  # (unless the name has been loaded again)
            del sys.modules[name]


def import_file(path: Path, function: str, parts=(), source: str | None = None):
    """Import the generated module at ``path`` and wrap ``function`` (and the ``parts`` it calls) with
    ``numba.njit(cache=True, error_model="numpy")``. The module is compiled from ``source`` (the text in
    hand; else the file's text): no ``.pyc`` is read or written, and what runs is what was generated. The
    background compiler (``tiers``) calls this too, so both processes name the module alike and share
    Numba's cache entries."""
    path = Path(path)
    py_module = types.ModuleType(f"tracegrad_generated_{path.stem}")
    py_module.__file__ = str(path)
    sys.modules[py_module.__name__] = py_module  # Numba's cache finds the module by name when it loads
    text = source if source is not None else path.read_text(encoding="utf-8")
    exec(compile(text, str(path), "exec"), py_module.__dict__)
    # error_model="numpy": 1/0 gives inf and 0/0 nan, as in NumPy, instead of raising
    for part in parts:  # globals the function calls: compiled when it is
        part = getattr(py_module, part)
        setattr(py_module, part.__name__, jit(part, error_model="numpy", **parallel_options(part)))
    function = getattr(py_module, function)
    dispatcher = jit(function, error_model="numpy", **parallel_options(function))
    weakref.finalize(dispatcher, _forget_module, py_module.__name__, py_module)
    return dispatcher


class Workspace:
    """One specialisation's workspace (``codegen.Module.workspace``): its buffers, allocated once, and the
    generated function that takes them (``Module.inner``). Outputs never alias a buffer (codegen puts
    only values that are not returned in it). One caller at a time: a call that finds the lock taken
    (another thread) calls the function that allocates a workspace of its own instead, so threads never
    share one and never wait for each other."""

    def __init__(self, module: Module, dispatcher):
        self.dispatcher = dispatcher  # the function allocating its own workspace
        self.inner = dispatcher.py_func.__globals__[module.inner]  # jitted by import_file, as a part
        self.shapes = tuple((shape, dtype) for _, shape, dtype in module.workspace)
        self.buffers = self.new_buffers()
        self.lock = threading.Lock()

    def new_buffers(self) -> tuple:
        """A set of buffers of its own for ``inner`` (uninitialised: the function writes before it reads)."""
        return tuple(np.empty(shape, dtype) for shape, dtype in self.shapes)

    def __call__(self, *args):
        if self.lock.acquire(False):
            try:
                return self.inner(*args, *self.buffers)
            finally:
                self.lock.release()
        return self.dispatcher(*args)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers)


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


# Numba's compile time, roughly: a fixed cost, a cost per scalar operation, and much more per kind of
# operation on whole arrays (typing one instantiates NumPy's implementation for its types; a second of
# the same kind reuses it). Fitted to, and checked by, benchmarks/compile_estimate.py.
COMPILE_BASE, COMPILE_PER_SCALAR, COMPILE_PER_ARRAY, COMPILE_PER_ARRAY_KIND = 0.4, 0.0015, 0.02, 0.25
LONG_COMPILE = 2.0  # seconds: a compile expected to take longer is announced on the "tracegrad" logger


def code_size(graph) -> tuple:
    """What ``compile_estimate`` counts in an optimised graph: scalar operations (those of loop nests,
    one per array-level node they compute, and of loop bodies on scalars included), operations on whole
    arrays, and kinds of these (primitive, dtypes and ranks)."""
    scalars, arrays, kinds = 0, 0, set()
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.nodes:
            if node.primitive.array_level is not None:  # (its reads and index arithmetic cost next to nothing)
                scalars += len(node.primitive.array_level(node))
                continue
            nested = [v for v in node.params.values() if isinstance(v, Graph)]
            if nested:
                stack.extend(nested)
                continue
            avals = [a.aval for a in node.inputs if hasattr(a, "aval")] + [o.aval for o in node.outs]
            if all(not a.shape for a in avals):
                scalars += 1
            else:
                arrays += 1
                kinds.add((node.primitive.name, tuple((len(a.shape), a.dtype.name) for a in avals)))
    return scalars, arrays, len(kinds)


def compile_estimate(graph) -> float:
    """About how many seconds Numba takes to compile the code of ``graph`` from scratch (a rough estimate:
    within a factor of about 2 on this project's machine)."""
    scalars, arrays, kinds = code_size(graph)
    return COMPILE_BASE + COMPILE_PER_SCALAR * scalars + COMPILE_PER_ARRAY * arrays + COMPILE_PER_ARRAY_KIND * kinds


def compile_for(dispatcher, described_types, module: Module) -> None:
    """Compile ``dispatcher`` (``module``'s) for ``described_types`` (``tiers.describe``) without calling it:
    loaded from Numba's disk cache when it is there (``fit`` compiles its epoch before the first one runs).
    A cache that cannot be read is recovered from as a call's is (``call_failed``)."""
    def compile_now():
        if not load_cached(dispatcher, described_types):
            dispatcher.compile(_read_types(described_types))

    try:
        compile_now()
    except Exception as exc:  # a Numba error (CompileError), or its disk cache's (recovered from)
        call_failed(exc, module, compile_now, ())


def compile_file(path: str, function: str, parts, described_types) -> None:
    """Compile ``function`` of the generated file ``path`` for ``described_types`` into Numba's disk cache
    (run in the compile worker)."""
    dispatcher = _imported.get((path, function))
    if dispatcher is None:
        dispatcher = _imported[(path, function)] = import_file(Path(path), function, parts)
    dispatcher.compile(_read_types(described_types))


_imported: dict = {}  # in the compile worker: (path, function) -> dispatcher


def compile_error(exc: Exception, module: Module) -> CompileError:
    return CompileError(
        f"Numba could not compile the generated code in {module_path(module)}. This is a tracegrad bug: "
        f"please report it with that file.\n{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


NUMBA_ERRORS = (numba.core.errors.NumbaError,)
