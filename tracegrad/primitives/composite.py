"""NumPy and ``math`` functions built from primitives: they need no rules of their own."""
import math

import numpy as np

from ..core import numpy_function
from ..errors import UnsupportedError, user_source
from .elementwise import maximum, minimum, sigmoid  # noqa: F401  (sigmoid is re-exported)


@numpy_function(np.square)
def square(x):
    return x * x


@numpy_function(np.reciprocal)
def reciprocal(x):
    return 1.0 / x


@numpy_function(np.clip)
def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    """min(max(x, a_min), a_max): at a bound the gradient is split evenly, like any tie."""
    a_min, a_max = kwargs.pop("min", a_min), kwargs.pop("max", a_max)
    if out is not None or kwargs:
        raise UnsupportedError(f"np.clip: unsupported argument(s) {sorted(kwargs) or ['out']}", user_source())
    if a_min is not None:
        x = maximum(x, a_min)
    if a_max is not None:
        x = minimum(x, a_max)
    return x


@numpy_function(math=[math.log])
def math_log(x, base=None):
    log = np.log(x)
    return log if base is None else log / math.log(base)


@numpy_function(np.deg2rad, np.radians, math=[math.radians])
def deg2rad(x):
    """Degrees to radians: x * (pi / 180)."""
    return x * (math.pi / 180)


@numpy_function(np.rad2deg, np.degrees, math=[math.degrees])
def rad2deg(x):
    """Radians to degrees: x * (180 / pi)."""
    return x * (180 / math.pi)
