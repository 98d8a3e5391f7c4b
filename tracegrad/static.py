"""Static arguments: ``static_argnums`` / ``static_argnames`` of ``grad``, ``value_and_grad`` and ``jit``.

A static argument is a Python value the trace uses as it is (a loop count, a size, a flag, a string), not
a traced input: ``range(n)`` with a static ``n`` runs while tracing, and each new value traces again. As in
JAX, static values must be hashable; they are part of the specialisation's key. The function is split at
the first call with each set of static values into a function of the other arguments, with its own
specialisations and fast path.
"""
from __future__ import annotations

import functools
import inspect

from .errors import GradTypeError
from .rows import OverRows


class StaticArgs:
    """A transformed function some of whose arguments are static. Called like the function itself."""

    def __init__(self, fun, make, argnums, static_argnums=(), static_argnames=(), parallel=None):
        self.fun, self._make, self._subs = fun, make, {}
        try:
            self._signature = inspect.signature(fun)
        except (TypeError, ValueError):
            raise GradTypeError(f"static arguments need a function with a signature, not {fun!r}") from None
        params = list(self._signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            raise GradTypeError("static arguments need a function without *args")
        static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        names = [p.name for p in positional]
        static = set()
        for i in static_argnums:
            if not -len(names) <= i < len(names):
                raise GradTypeError(f"static_argnums={i} is out of range for {len(names)} parameter(s)")
            static.add(i % len(names))
        for name in static_argnames:
            if name not in names:
                raise GradTypeError(f"static_argnames: the function has no parameter {name!r}")
            static.add(names.index(name))
        self.static = tuple(sorted(static))
        self._names = names
        self.argnums = self._remap(argnums)
        if isinstance(parallel, OverRows):  # its data's positions, counted as argnums are
            if any(i >= len(names) for i in parallel.data):
                raise GradTypeError(f"parallel={parallel!r}: the function has {len(names)} parameter(s), "
                                    "numbered from 0 (static ones included)")
            parallel = OverRows(self._remap(parallel.data, "split by rows", "over_rows"), parallel.reduction,
                                written=parallel.data)
        self.parallel = parallel
        functools.update_wrapper(self, fun)

    def _remap(self, argnums, use="differentiated", what="argnums"):
        """``argnums`` among the arguments that are left once the static ones are taken out."""
        if argnums is None:
            return None
        picked = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        out = []
        for i in picked:
            i %= len(self._names) if -len(self._names) <= i < len(self._names) else 10 ** 9
            if i in self.static:
                raise GradTypeError(f"argument {self._names[i]!r} is static: it cannot also be {use} "
                                    f"({what}={argnums})")
            out.append(i - sum(1 for s in self.static if s < i))
        return out[0] if isinstance(argnums, int) else tuple(out)

    def _split(self, args, kwargs):
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise GradTypeError(f"{getattr(self.fun, '__name__', 'the function')}: {exc}") from None
        bound.apply_defaults()
        values = [bound.arguments[name] for name in self._names if name in bound.arguments]
        statics = tuple(values[i] for i in self.static)
        dynamic = [v for i, v in enumerate(values) if i not in self.static]
        return statics, dynamic

    def _sub(self, statics):
        try:
            sub = self._subs.get(statics)
        except TypeError:
            raise GradTypeError(f"static arguments must be hashable (they key the compiled code), got "
                                f"{', '.join(type(v).__name__ for v in statics)}",
                                hint="pass arrays as ordinary (traced) arguments") from None
        if sub is None:
            sub = self._make(self._bound(statics), self.argnums, self.parallel)
            self._subs[statics] = sub
        return sub

    def _bound(self, statics):
        """The function of the other arguments, with these static values in place."""
        fun, static, n = self.fun, self.static, len(self._names)

        @functools.wraps(fun)
        def with_statics(*dynamic):
            it, values = iter(dynamic), dict(zip(static, statics))
            return fun(*[values[i] if i in values else next(it) for i in range(n)])

        params = [p for i, p in enumerate(self._signature.parameters.values()) if i not in static]
        with_statics.__signature__ = self._signature.replace(parameters=params)
        return with_statics

    def __call__(self, *args, **kwargs):
        statics, dynamic = self._split(args, kwargs)
        return self._sub(statics)(*dynamic)

    def specialize(self, *args, **kwargs):
        statics, dynamic = self._split(args, kwargs)
        return self._sub(statics).specialize(*dynamic)

    def graph(self, *args):
        return self.specialize(*args).graph

    def source(self, *args):
        return self.specialize(*args).source
