"""Optimisers that update parameter arrays in place, with compiled code, and learning-rate schedules.

An optimiser is its hyperparameters plus one plain Python function that updates one parameter array
(flattened) from its gradient and its state arrays, written in the subset of Python Numba compiles.
That function is the whole algorithm: ``Optimizer.update`` runs it compiled, once per parameter array,
and ``tg.fit`` traces it, on whole arrays, into its compiled epoch (so it must be elementwise: element
``i`` of each array computed from element ``i`` of the others).

>>> import numpy as np, tracegrad as tg
>>> params = {"w": np.array([1.0, 2.0])}
>>> opt = tg.optim.SGD(lr=0.1, momentum=0.9)
>>> state = opt.init(params)
>>> opt.update(params, {"w": np.array([1.0, -1.0])}, state)   # in place
>>> params["w"], state["step"]
(array([0.9, 2.1]), 1)

State is a pytree: ``{"step": 0, "velocity": <zeros shaped like params>}`` for SGD, ``m`` and ``v`` for
Adam, ``square_avg`` and ``momentum_buffer`` for RMSProp. Learning rates are floats or schedules,
plain functions of the step (the number of updates made so far): ``SGD(lr=cosine_lr(0.1, 1000))``.
"""
from __future__ import annotations

import functools
import inspect
import math
import textwrap
from typing import Callable

import numpy as np

from . import __version__, backend
from .codegen import Module, comment_text
from .errors import DataError, GradTypeError
from .guards import GuardWriter, Mismatch
from .pytree import flatten, leaf_paths, unflatten

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "step_lr", "cosine_lr"]


# ------------------------------------------------------------------------- the update of one array
# Each runs compiled (Numba), on flat arrays; t counts updates from 1.


def sgd_update(param, grad, velocity, lr, t, momentum, weight_decay, nesterov):
    """SGD: g = grad + wd p (only when wd is not 0, as in PyTorch); v = momentum v + g;
    p -= lr (g + momentum v if nesterov else v)."""
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i] if weight_decay != 0.0 else grad[i]
        if momentum != 0.0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov != 0.0 else v
        param[i] -= lr * g


def adam_update(param, grad, m, v, lr, t, beta1, beta2, eps, weight_decay, decoupled):
    """Adam (L2 weight decay added to the gradient) or, with decoupled, AdamW (p -= lr wd p)."""
    correction1 = 1.0 - beta1 ** t
    correction2 = 1.0 - beta2 ** t
    for i in range(param.shape[0]):
        g = grad[i]
        if decoupled != 0.0:
            param[i] -= lr * weight_decay * param[i]
        else:
            g = g + weight_decay * param[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] -= lr * (m[i] / correction1) / (np.sqrt(v[i] / correction2) + eps)


def rmsprop_update(param, grad, square_avg, momentum_buffer, lr, t, alpha, eps, weight_decay, momentum):
    """RMSProp: s = alpha s + (1 - alpha) g^2; step = g / (sqrt(s) + eps), with optional momentum."""
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        s = alpha * square_avg[i] + (1.0 - alpha) * g * g
        square_avg[i] = s
        step = g / (np.sqrt(s) + eps)
        if momentum != 0.0:
            step = momentum * momentum_buffer[i] + step
            momentum_buffer[i] = step
        param[i] -= lr * step


# ------------------------------------------------------------------------- optimisers


@functools.lru_cache(maxsize=None)
def _hyperparameter_names(update_function, n_slots: int) -> tuple:
    names = list(inspect.signature(update_function).parameters)
    return tuple(names[4 + n_slots:])


@functools.lru_cache(maxsize=None)
def _source_of(function) -> str:
    return textwrap.dedent(inspect.getsource(function))


class Optimizer:
    """Base class. A subclass names its state ``slots`` and its ``update_function``, whose arguments are
    ``(param, grad, *slots, lr, t, *hyperparameters)``; each hyperparameter is an attribute of the same name."""

    slots: tuple = ()
    update_function: Callable = None
    _kernels: dict = {}  # update_function -> its compiled version, shared by all instances

    def __init__(self, lr):
        if not callable(lr):
            lr = _check("lr", lr, low=0.0, low_open=True)
        self.lr = lr

    def __repr__(self):
        """The constructor call, with the arguments that differ from their defaults."""
        defaults = inspect.signature(type(self).__init__).parameters
        shown = [name for name, p in defaults.items() if name != "self" and (
            name == "lr" or getattr(self, name, p.default) != p.default)]
        return f"{type(self).__name__}({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"

    # -- what fit and the compiled updates need
    @classmethod
    def hyperparameter_names(cls) -> tuple:
        return _hyperparameter_names(cls.update_function, len(cls.slots))

    def hyperparameters(self) -> tuple:
        """The hyperparameters, as floats in the order ``update_function`` takes them."""
        return tuple(float(getattr(self, name)) for name in self.hyperparameter_names())

    def learning_rate(self, step: int) -> float:
        """The learning rate for update number ``step`` (from 0)."""
        return float(self.lr(step)) if callable(self.lr) else self.lr

    @classmethod
    def update_source(cls) -> str:
        return _source_of(cls.update_function)

    @property
    def kernel(self):
        """The compiled ``update_function`` (a Numba function), to call from your own ``@numba.njit`` code
        on flat arrays: ``kernel(param.reshape(-1), grad.ravel(), *slots, lr, t, *hyperparameters())``."""
        kernel = Optimizer._kernels.get(self.update_function)
        if kernel is None:
            kernel = Optimizer._kernels[self.update_function] = backend.load(self.kernel_module())
        return kernel

    def kernel_module(self) -> Module:
        """The generated module that ``kernel`` compiles: ``update_function``'s own source."""
        function = self.update_function
        origin = comment_text(f"{function.__module__}.{function.__name__}")
        source = (f"# Generated by tracegrad {__version__}: the update of one parameter array, from {origin}.\n"
                  f"# Do not edit: the file is named by the hash of this text.\nimport numpy as np\n\n\n"
                  f"{self.update_source()}")
        return Module(source, function.__name__, ())

    # -- the Python interface
    def init(self, params) -> dict:
        """Fresh state for ``params``: the step count and zero arrays shaped like the parameters."""
        leaves, tree = flatten(params)
        _check_params(leaves, params)
        state = {"step": 0}
        for slot in self.slots:
            state[slot] = unflatten(tree, [np.zeros_like(leaf, order="C") for leaf in leaves])
        return state

    def update(self, params, grads, state) -> None:
        """Apply one update to ``params`` and ``state`` in place (every array is checked first, so a bad
        argument changes nothing). Raises ``GradTypeError`` for parameters that are not float arrays and
        ``DataError`` for structures or shapes that do not match.

        The first call for a structure of parameters writes a check for it (containers, keys, dtypes,
        shapes, contiguity, with ``is``/``==``) and one compiled function updating all the arrays; later
        calls like it run the check and that one function, so a step's set-up does not grow with the data."""
        fast = self.__dict__.get("_fast")
        if fast is not None and fast(self, params, grads, state):
            return
        self._update_checked(params, grads, state)

    def __getstate__(self):  # the generated fast path is rebuilt, not pickled
        return {k: v for k, v in self.__dict__.items() if k not in ("_fast", "_fast_paths")}

    def _update_checked(self, params, grads, state) -> None:
        leaves, tree = flatten(params)
        _check_params(leaves, params, writable=True)
        grad_leaves, grad_tree = flatten(grads)
        if grad_tree != tree:
            raise DataError(f"gradients have structure {grad_tree} but parameters {tree}")
        names = leaf_paths(params, "params")
        slot_leaves = []
        for slot in self.slots:
            if slot not in state:
                raise DataError(f"optimizer state has no {slot!r}: make it with {type(self).__name__}.init(params)")
            values, slot_tree = flatten(state[slot])
            if slot_tree != tree or any(np.shape(v) != p.shape for v, p in zip(values, leaves)):
                raise DataError(f"optimizer state {slot!r} does not match the parameters' structure and shapes")
            slot_leaves.append(values)
        flat_grads = []
        for name, param, grad in zip(names, leaves, grad_leaves):
            if np.shape(grad) != param.shape:
                raise DataError(f"gradient of {name} has shape {np.shape(grad)}, the parameter {param.shape}")
            flat_grads.append(np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1))
        fast = self._fast_path(tree, leaves, grad_leaves, slot_leaves)
        if fast is not None and fast(self, params, grads, state):
            self._fast = fast  # calls like this one take it first
            return
        step = int(state["step"])
        lr, hyper, kernel = self.learning_rate(step), self.hyperparameters(), self.kernel
        for i, param in enumerate(leaves):
            slots = [values[i].reshape(-1) for values in slot_leaves]
            args = (param.reshape(-1), flat_grads[i], *slots, lr, step + 1, *hyper)
            try:
                kernel(*args)
            except Exception as exc:  # a Numba error (CompileError), or its disk cache's (recovered from)
                backend.call_failed(exc, self.kernel_module(), kernel, args)
        state["step"] = step + 1

    def _fast_path(self, tree, leaves, grad_leaves, slot_leaves) -> Callable | None:
        """The generated update for parameters of structure ``tree`` (None if the gradients or state are
        not the C-contiguous arrays of the parameters' dtypes it takes); one per structure, kept."""
        plain = all(type(a) is np.ndarray and a.dtype == p.dtype and a.flags.c_contiguous
                    for values in [grad_leaves, *slot_leaves] for a, p in zip(values, leaves))
        if not plain:
            return None
        paths = self.__dict__.setdefault("_fast_paths", {})
        fast = paths.get(tree)
        if fast is None:
            if len(paths) >= 8:  # a few structures at most: forget the oldest
                del paths[next(iter(paths))]
            fast = paths[tree] = _make_fast_update(self, tree, len(leaves))
        return fast


def _update_all_module(cls, n: int) -> Module:
    """A module updating ``n`` parameter arrays in one compiled call: ``update_function`` on each, flat.
    It first checks every gradient and state array against its parameter (C-contiguous, same shape and
    dtype) and returns False, changing nothing, if one is not."""
    function = cls.update_function
    name = f"{function.__name__}_{n}"
    others = ("grad", *cls.slots)
    arguments = [f"{what}{i}" for i in range(n) for what in ("param",) + others]
    hyper = ["lr", "t", *cls.hyperparameter_names()]
    checks = [f"param{i}.flags.c_contiguous" for i in range(n)]
    checks += [f"matches(param{i}, {what}{i})" for i in range(n) for what in others]
    lines = [f"def {name}({', '.join(arguments + hyper)}):",
             "    if not (" + "\n            and ".join(checks) + "):",
             "        return False"]
    for i in range(n):
        flat = ", ".join(f"{what}{i}.reshape(-1)" for what in ("param",) + others)
        lines.append(f"    {function.__name__}({flat}, {', '.join(hyper)})")
    lines.append("    return True")
    matches = ("def matches(param, other):\n"
               "    return other.flags.c_contiguous and other.shape == param.shape and other.dtype == param.dtype\n")
    source = (f"# Generated by tracegrad {__version__}: the update of {n} parameter arrays, from "
              f"{function.__module__}.{function.__name__}.\n# Do not edit: the file is named by the hash "
              f"of this text.\nimport numpy as np\n\n\n{cls.update_source()}\n\n{matches}\n\n"
              + "\n".join(lines) + "\n")
    return Module(source, name, (), parts=(function.__name__, "matches"))


def _make_fast_update(optimizer: Optimizer, tree, n: int) -> Callable:
    """``fast(optimizer, params, grads, state)``: checks that the arguments are trees of structure
    ``tree`` holding arrays, then updates them all with one compiled call, which checks the arrays
    against the parameters (and Numba's types rule out read-only ones); True if it did, else False."""
    cls = type(optimizer)
    writer = GuardWriter()
    params = writer.unpack("params", tree)
    grads = writer.unpack("grads", tree)
    writer.check("state.__class__ is dict")
    slots = [writer.unpack(writer.bind(f"state[{writer.constant(slot)}]"), tree) for slot in cls.slots]
    arrays = [name for i in range(n) for name in (params[i], grads[i], *(s[i] for s in slots))]
    for name in arrays:
        writer.check(f"{name}.__class__ is ndarray")
    hyper = [f"float(optimizer.{name})" for name in cls.hyperparameter_names()]
    plain_lr = cls.learning_rate is Optimizer.learning_rate  # (a float lr read directly, unless overridden)
    source = (f"def update(optimizer, params, grads, state):\n"
              f"    try:\n{writer.body('        ')}"
              f"        step = int(state['step'])\n"
              + (f"        lr = optimizer.lr\n"
                 f"        if lr.__class__ is not float:  # a schedule\n"
                 f"            lr = optimizer.learning_rate(step)\n" if plain_lr else
                 f"        lr = optimizer.learning_rate(step)\n") +
              f"        done = kernel({', '.join(arrays + ['lr', 'step + 1'] + hyper)})\n"
              f"    except NOT_THESE:\n"
              f"        return False\n"
              f"    if done:\n"
              f"        state['step'] = step + 1\n"
              f"    return done\n")
    kernels = Optimizer._kernels
    key = (cls.update_function, n)
    if key not in kernels:
        kernels[key] = backend.load(_update_all_module(cls, n))
    # a read-only array is a type Numba cannot compile the update for: the general path says why
    writer.env.update(kernel=kernels[key], NOT_THESE=(Mismatch, LookupError, *backend.NUMBA_ERRORS))
    exec(compile(source, f"<tracegrad update of {n} arrays by {cls.__name__}>", "exec"), writer.env)
    update = writer.env["update"]
    update.source = source
    return update


class SGD(Optimizer):
    """Minibatch SGD with optional momentum (v = momentum v + g; p -= lr v), Nesterov momentum and L2
    weight decay (added to the gradient), as in PyTorch."""

    slots = ("velocity",)
    update_function = staticmethod(sgd_update)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check("momentum", momentum, 0.0, 1.0, high_open=True)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        if nesterov and not self.momentum:
            raise DataError("SGD(nesterov=True) needs momentum > 0")
        self.nesterov = bool(nesterov)


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is added to the gradient (L2), as in PyTorch's Adam."""

    slots = ("m", "v")
    update_function = staticmethod(adam_update)
    decoupled = False

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.beta1 = _check("beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = _check("beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = _check("eps", eps, 0.0, low_open=True)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr wd p, then the Adam step on the plain gradient."""

    decoupled = True

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)


class RMSProp(Optimizer):
    """RMSProp (PyTorch's defaults), with optional momentum and L2 weight decay."""

    slots = ("square_avg", "momentum_buffer")
    update_function = staticmethod(rmsprop_update)

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
        super().__init__(lr)
        self.alpha = _check("alpha", alpha, 0.0, 1.0)
        self.eps = _check("eps", eps, 0.0, low_open=True)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.momentum = _check("momentum", momentum, 0.0, 1.0, high_open=True)


# ------------------------------------------------------------------------- schedules


def step_lr(lr: float, every: int, gamma: float = 0.1) -> Callable[[int], float]:
    """lr, multiplied by ``gamma`` every ``every`` steps.

    >>> schedule = step_lr(0.1, every=100, gamma=0.5)
    >>> schedule(0), schedule(99), schedule(100), schedule(250)
    (0.1, 0.1, 0.05, 0.025)
    """
    lr, gamma = _check("lr", lr, 0.0, low_open=True), _check("gamma", gamma, 0.0, low_open=True)
    if int(every) != every or every < 1:
        raise DataError(f"step_lr: every must be a positive int, got {every!r}")

    def schedule(step: int) -> float:
        return lr * gamma ** (step // every)
    return _Schedule(schedule, f"step_lr({lr!r}, every={every!r}, gamma={gamma!r})")


def cosine_lr(lr: float, total_steps: int, final_lr: float = 0.0, warmup_steps: int = 0) -> Callable[[int], float]:
    """Linear warm-up from 0 over ``warmup_steps``, then a half cosine from ``lr`` down to ``final_lr`` at
    ``total_steps`` (and ``final_lr`` after).

    >>> schedule = cosine_lr(0.1, total_steps=100)
    >>> schedule(0), round(schedule(50), 10), schedule(100), schedule(1000)
    (0.1, 0.05, 0.0, 0.0)
    """
    lr, final_lr = _check("lr", lr, 0.0, low_open=True), _check("final_lr", final_lr, 0.0)
    if int(total_steps) != total_steps or not 0 <= warmup_steps < total_steps:
        raise DataError(f"cosine_lr: need 0 <= warmup_steps < total_steps, got {warmup_steps!r} and {total_steps!r}")

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return _Schedule(schedule, f"cosine_lr({lr!r}, total_steps={total_steps!r}, final_lr={final_lr!r}, "
                               f"warmup_steps={warmup_steps!r})")


class _Schedule:
    """A learning-rate schedule: called with the step, it gives the rate; printed, the call that made it."""

    def __init__(self, function, text):
        self.function, self.text = function, text

    def __call__(self, step: int) -> float:
        return self.function(step)

    def __repr__(self):
        return self.text


# ------------------------------------------------------------------------- checks


def _check(name, value, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{name} must be a number, got {value!r}")
    value = float(value)
    bad = (not math.isfinite(value) or low is not None and (value < low or low_open and value == low)
           or high is not None and (value > high or high_open and value == high))
    if bad:
        opening, closing = "(" if low_open else "[", ")" if high_open or high is None else "]"
        interval = f"{opening}{low}, {high if high is not None else 'inf'}{closing}"
        raise DataError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_params(leaves, params, writable=False):
    """Parameters must be float arrays: they are updated in place."""
    for name, leaf in zip(leaf_paths(params, "params"), leaves):
        if not isinstance(leaf, np.ndarray):
            raise GradTypeError(f"parameter {name} is a {type(leaf).__name__}, not a NumPy array: parameters "
                                "are updated in place", hint="use np.array(value) (0-d for a scalar)")
        if leaf.dtype.kind != "f":
            raise GradTypeError(f"parameter {name} has dtype {leaf.dtype}: parameters must be float arrays",
                                hint=f"use {name}.astype(np.float64)")
        if writable and not (leaf.flags.c_contiguous and leaf.flags.writeable):
            raise DataError(f"parameter {name} is not a writable C-contiguous array, so it cannot be updated "
                            "in place", hint="use np.array(value) to make one")
