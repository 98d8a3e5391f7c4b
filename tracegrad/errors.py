"""The tracegrad error family, and the helper that finds the user's own source line."""
from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = None  # filled lazily: frames inside NumPy's own Python code are skipped too
_LIBRARY_DIRS = None  # NumPy's and SciPy's directories: a user's line is never inside them


@dataclass(frozen=True)
class SourceInfo:
    """Where a node came from in the user's code."""

    filename: str
    lineno: int
    line: str

    def short(self) -> str:
        """``file.py:12``, ``In [3], line 2`` for a line of a notebook cell, or ``tracegrad/train.py`` for a
        line of tracegrad's own code (``fit``'s epoch), named without its number: generated code names
        lines in its comments and is cached by its text, so an edit elsewhere in tracegrad must not change
        it (and recompile every user's cached function). The line's text says which line it is."""
        if self.internal:
            return "/".join(["tracegrad", *os.path.relpath(self.filename, _PACKAGE_DIR).split(os.sep)])
        cell = notebook_cell(self.filename)
        return f"{cell}, line {self.lineno}" if cell else f"{os.path.basename(self.filename)}:{self.lineno}"

    @property
    def internal(self) -> bool:
        """Whether the line is in tracegrad's own code."""
        return os.path.abspath(self.filename).startswith(_PACKAGE_DIR + os.sep)

    def __str__(self) -> str:
        cell = notebook_cell(self.filename)
        where = f"{cell}, line {self.lineno}" if cell else f"{self.filename}:{self.lineno}"
        return f"{where}: {self.line}" if self.line else where


_CELLS: dict = {}  # the file IPython compiled a cell to -> "In [n]", n as when tracegrad first met it


def notebook_cell(filename: str) -> str | None:
    """``"In [3]"`` when ``filename`` is the file IPython compiled the notebook cell ``In [3]`` to, else None.

    IPython names a cell's file by a hash of the cell's text, so a cell run again unchanged has the same
    file: it keeps the number it had when tracegrad first saw it, so that the generated code (whose
    comments say where each line comes from, and which is cached by its text) stays the same.
    """
    if filename in _CELLS:
        return _CELLS[filename]
    label = None
    shell_module = sys.modules.get("IPython")  # (not imported: not a notebook, and nothing to import)
    if shell_module is not None:
        try:
            shell = shell_module.get_ipython()
            named = shell.compile.format_code_name(filename) if shell is not None else None
        except Exception:  # an IPython without it: the file's own name will do
            named = None
        if named and isinstance(named[1], str) and named[1].startswith("In[") and named[1].endswith("]"):
            label = f"In [{named[1][3:-1].strip()}]"
    _CELLS[filename] = label
    return label


def _is_internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep) or _is_library(path)


def _is_library(path: str) -> bool:
    """Inside NumPy or SciPy (SciPy only when imported: its directory is read from ``sys.modules``)."""
    global _NUMPY_DIR, _LIBRARY_DIRS
    if _LIBRARY_DIRS is None or "scipy" in sys.modules and len(_LIBRARY_DIRS) == 1:
        import numpy

        _NUMPY_DIR = os.path.dirname(os.path.abspath(numpy.__file__))
        dirs = [_NUMPY_DIR + os.sep]
        if "scipy" in sys.modules and getattr(sys.modules["scipy"], "__file__", None):
            dirs.append(os.path.dirname(os.path.abspath(sys.modules["scipy"].__file__)) + os.sep)
        _LIBRARY_DIRS = tuple(dirs)
    return path.startswith(_LIBRARY_DIRS)


def library_function() -> str | None:
    """The public name (``scipy.linalg.expm``, ``np.polyval``) of the NumPy or SciPy function the user's
    code called and that is running now (the outermost of their frames on the stack), or None."""
    frame, found = sys._getframe(1), None
    while frame is not None:
        filename = frame.f_code.co_filename
        if _is_library(os.path.abspath(filename)):
            found = frame
        elif not filename.startswith("<frozen") and not os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
            break
        frame = frame.f_back
    if found is None:
        return None
    module = found.f_globals.get("__name__", "")
    parts = module.split(".")
    public = ".".join(parts[:next((i for i, p in enumerate(parts) if p.startswith("_")), len(parts))])
    qualname = getattr(found.f_code, "co_qualname", found.f_code.co_name)
    public = "np" + public[len("numpy"):] if public.split(".")[0] == "numpy" else public
    return f"{public}.{qualname}"


# user_source runs for every node a trace records (80,000 for an unrolled loop of 10,000 steps), so it
# decides once per file whether the file is the user's, and reads each line's text once: the text is kept
# with linecache's own entry for the file and read again when that entry changes (linecache.checkcache
# after the file was edited, as IPython does), so it is what linecache.getline would say now.
_SKIPPED: dict = {}  # filename -> a frame in it is tracegrad's, NumPy's or frozen: not the user's
_SOURCES: dict = {}  # filename -> (linecache's entry for the file, {lineno: SourceInfo})
_MAX_FILES = 1000  # forgotten all at once past this many files
# frame.f_lineno reads the code's line table from its start on every call: in a function of 10,000
# lines, tracing each of its operations that way takes time quadratic in its length. Each function's
# table is read once instead, into {bytecode offset: line}, and the frame's offset looked up.
_LINE_TABLES: dict = {}  # code object -> {offset: line}
_MAX_TABLES = 256  # forgotten all at once past this many functions


def _skipped(filename: str) -> bool:
    skipped = _SKIPPED.get(filename)
    if skipped is None:
        skipped = _SKIPPED[filename] = filename.startswith("<frozen") or _is_internal(filename)
    return skipped


def _source_at(filename: str, lineno: int) -> SourceInfo:
    """The SourceInfo of a line, the same object each time the line is asked for again."""
    known = _SOURCES.get(filename)
    if known is not None and known[0] is linecache.cache.get(filename):
        source = known[1].get(lineno)
        if source is not None:
            return source
    source = SourceInfo(filename, lineno, linecache.getline(filename, lineno).strip())
    entry = linecache.cache.get(filename)  # (getline may have read the file just now)
    if known is None or known[0] is not entry:
        if len(_SOURCES) >= _MAX_FILES:
            _SOURCES.clear()
        known = _SOURCES[filename] = (entry, {})
    known[1][lineno] = source
    return source


def _line_of(frame) -> int:
    """``frame.f_lineno``, in time independent of the function's length."""
    if frame.f_trace is not None:  # a debugger's trace function sets the line itself
        return frame.f_lineno
    code = frame.f_code
    table = _LINE_TABLES.get(code)
    if table is None:
        if len(_LINE_TABLES) >= _MAX_TABLES:
            _LINE_TABLES.clear()
        table = _LINE_TABLES[code] = {offset: line for start, end, line in code.co_lines()
                                      for offset in range(start, end, 2) if line is not None}
    line = table.get(frame.f_lasti)
    return line if line is not None else frame.f_lineno


def user_frame():
    """The innermost frame on the stack that is neither tracegrad's nor NumPy's: the user's code."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        skipped = _SKIPPED.get(filename)
        if skipped is None:
            skipped = _skipped(filename)
        if not skipped:
            return frame
        frame = frame.f_back
    return None


def frame_source(frame) -> SourceInfo:
    """The line ``frame`` is at."""
    return _source_at(frame.f_code.co_filename, _line_of(frame))


def user_source() -> SourceInfo | None:
    """The user's line: where the innermost frame that is neither tracegrad's nor NumPy's is."""
    frame = user_frame()
    return frame_source(frame) if frame is not None else None


def raised_at(exc: BaseException) -> SourceInfo | None:
    """The user's line an exception was raised from: the innermost frame of its traceback that is neither
    tracegrad's nor NumPy's."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not _skipped(filename):
            found = _source_at(filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


class TracegradError(Exception):
    """Base class of every error tracegrad raises on purpose.

    The message names what went wrong, where in the user's code (when known) and what to do instead.
    """

    def __init__(self, message: str, source: SourceInfo | None = None, hint: str | None = None):
        self.message = message
        self.source = source
        self.hint = hint
        text = message
        if source is not None:
            text += f"\n  at {source}"
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


class TracingError(TracegradError):
    """A traced value was used where a concrete Python value is needed (if/while/bool/float/int)."""


class UnsupportedError(TracegradError, NotImplementedError):
    """A NumPy function, argument or indexing form that tracegrad cannot trace."""


class ShapeError(TracegradError, ValueError):
    """Shapes that do not fit together, found at trace time."""


class GradTypeError(TracegradError, TypeError):
    """A gradient asked of something that has none (integer/bool argument, non-scalar output, bad argnums)."""


class NonFiniteError(TracegradError, FloatingPointError):
    """A NaN or inf appeared while ``debug_nans`` was on; the message names the value and the user's line."""


class IndexOutOfBoundsError(TracegradError, IndexError):
    """An index computed when the function ran (``x[i]`` with a traced ``i``, ``y[i] = v``, ``x[t + 1]`` in a
    loop) fell outside its array. The message names the indexing and the user's line, in either tier: a
    failure in the compiled code is located by running the call again on NumPy."""


def out_of_bounds(exc: IndexError, source: SourceInfo | None) -> IndexOutOfBoundsError:
    """``exc``, raised by a node's reference or kernel, as an ``IndexOutOfBoundsError`` at the node's line."""
    text = str(exc)
    return IndexOutOfBoundsError(text[len("tracegrad: "):] if text.startswith("tracegrad: ") else text, source)


class GradCheckError(TracegradError, AssertionError):
    """``check_grad`` found a gradient that disagrees with finite differences; ``report`` holds the
    comparison (the worst entries or directions, the tolerances used)."""

    def __init__(self, message: str, report=None, hint: str | None = None):
        super().__init__(message, None, hint)
        self.report = report


class CompileError(TracegradError):
    """Generated code that the backend could not compile: always a tracegrad bug, please report it."""


class CacheError(TracegradError):
    """The cache of compiled code could not be read or written even after discarding it; the message
    says which file and what to do."""


class CacheWarning(UserWarning):
    """The cache directory could not be used as configured (other users could write it, it cannot be
    written, a cache file was corrupt): tracegrad used a private temporary directory, compiled in memory,
    or discarded the file and compiled again."""


class DataError(TracegradError, ValueError):
    """Data or settings that do not fit: training data of different lengths, a bad batch size, labels out
    of range, a ``check_grad`` mode or a ``draw`` layout that does not exist."""


class TrainingError(TracegradError):
    """``fit`` stopped before its last epoch. It carries what you need to keep going.

    ``params``, ``state`` and ``history`` are what ``fit`` would have returned after the last epoch it
    completed (a stop at a non-finite loss: the parameters of the last complete update instead);
    ``epoch`` (from 1) names the epoch it stopped in, ``step`` (from 1) the failing step of a non-finite
    stop (None otherwise). After an interrupt or an error in a metric,
    ``fit(loss, err.params, data, ..., state=err.state, seed=err.history.seed, epochs=remaining)``
    continues exactly as the uninterrupted run would have (bit for bit). The error a metric or the
    validation loss raised is ``err.__cause__``.
    """

    def __init__(self, message, *, epoch: int, step: int | None, params=None, state=None, history=None, hint=None):
        super().__init__(message, hint=hint)
        self.epoch, self.step = epoch, step
        self.params, self.state, self.history = params, state, history


class NonFiniteTrainingError(TrainingError, NonFiniteError):
    """``fit`` stopped at a non-finite loss or gradient; no part of the failing update was applied."""


class TrainingInterrupted(TrainingError, KeyboardInterrupt):
    """``fit`` was interrupted (Ctrl-C). A ``KeyboardInterrupt`` too, so code that handles Ctrl-C still
    does; ``params``, ``state`` and ``history`` are those of the last complete epoch."""


class CompileWarning(UserWarning):
    """Numba could not compile a function in the background; it keeps running on NumPy (``compile=``)."""


class SeparabilityError(TracegradError, ValueError):
    """``tracegrad.distributed`` with ``check_separable=True``: the per-batch loss evaluated on chunks of rows
    and combined as ``reduction=`` says does not give its value on the whole (a penalty counted once per
    chunk, a statistic of the whole batch)."""
