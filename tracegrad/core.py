"""Compatibility: the names that lived here before ``core.py`` was split by job into ``registry`` (primitive
records and the registry), ``notation`` (how code spells an operation), ``builder`` (the graph builder and
``bind``) and ``traced`` (``TracedArray``). Import from those; this module only re-exports them."""
from .notation import Block, Conditional, Infix, Prefix, broadcast_subscripts  # noqa: F401
from .registry import (MATH_FUNCTIONS, MODULE_FUNCTIONS, NUMPY_FUNCTIONS, PRIMITIVES, Primitive,  # noqa: F401
                       module_function, numpy_function, primitive)
from .builder import (COMPLEX_HINT, ENTERED, Builder, _State, _WeakLiteral, _cast, _is_ancestor, _is_python_scalar, _state,  # noqa: F401
                      _to_atom, _wrap, bind, current_builder)
from .traced import (_ARRAY_HINT, _BRANCH_HINT, _NUMBER_HINT, TracedArray, _check_fresh, _concrete_error)  # noqa: F401
