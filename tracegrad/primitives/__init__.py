"""The primitive declarations. Importing this package registers every primitive and NumPy alias.

Each primitive is one ``@primitive`` class in one of these modules; nothing else needs to change to
add one. ``shapes`` holds the shape and dtype rules they share.
"""
from . import elementwise, reduce, structural, linalg, composite, control, constants, random  # noqa: F401  (registration)
from . import manipulation, assign, cumulative, contract, decompositions, special  # noqa: F401
from . import shuffle, nest  # noqa: F401
