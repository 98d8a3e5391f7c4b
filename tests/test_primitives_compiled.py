"""Every primitive's compiled Numba code against the reference interpreter and the NumPy tier's evaluator,
value and gradient (float64 and float32), and forward mode: the cases of tests/test_primitives.py, in a file
of their own because they compile (most of the suite's time: the test command runs a file per process)."""
import numpy as np
import pytest

import tracegrad as tg

from test_primitives import ALL_CASES, directions, interpret_jvp, interpret_value_and_grad, make_case, traced

FIRST_CASES = [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}")
               for name in ALL_CASES for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("name,dtype", FIRST_CASES)
def test_compiled_matches_interpreter_and_evaluator(name, dtype):
    """One compile a case serves both checks: against the reference interpreter, and the NumPy tier (what a
    call runs before its compiled code is ready) against the compiled code, to the issue's rtol 1e-12."""
    loss, args, _ = make_case(name, 0, dtype)
    argnums = tuple(range(len(args)))
    value, grads = tg.value_and_grad(loss, argnums=argnums, compile="wait")(*args)
    ref_value, ref_grads = interpret_value_and_grad(loss, args)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, **tol)
    for g, r, a in zip(grads, ref_grads, args):
        assert type(g) is type(a) or np.asarray(g).dtype == np.asarray(a).dtype
        np.testing.assert_allclose(g, r, **tol)
    evaluated, evaluated_grads = tg.value_and_grad(loss, argnums=argnums, compile="never")(*args)
    assert type(evaluated) is type(value)
    np.testing.assert_allclose(evaluated, value, **tol)
    for e, g in zip(evaluated_grads, grads):
        assert type(e) is type(g) and np.asarray(e).dtype == np.asarray(g).dtype
        np.testing.assert_allclose(e, g, **tol)


# Compiled float32 code of every primitive is checked by test_compiled_matches_interpreter_and_evaluator,
# float32 tangents by test_jvp_float32_in_float32_out: their combination compiles again for little (slow: -m slow
# runs it).
JVP_FIRST_CASES = [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}",
                                marks=[pytest.mark.slow] if dtype == np.float32 else [])
                   for name in ALL_CASES for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("name,dtype", JVP_FIRST_CASES)
def test_compiled_jvp_matches_interpreter(name, dtype):
    _, args, fn = make_case(name, 0, dtype)
    v = directions(args)
    value, tangent = tg.jvp(fn, tuple(args), tuple(v))
    (ref_value,), (ref_tangent,) = interpret_jvp(*traced(fn, args), args, v)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, **tol)
    np.testing.assert_allclose(tangent, ref_tangent, **tol)
