"""check_grad passes right gradients and fails wrong ones (both modes, float32, second order); near a kink
it warns, naming the user's line, instead of failing; bad input gets a clear error. The second half tests
every claim of docs/conventions.md: the derivative each primitive uses at its kinks, and the np.where trap.

Compiling costs about a second per new function and signature, so the functions below are shared."""
import inspect
import math
import re
import warnings

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.core import NUMPY_FUNCTIONS, PRIMITIVES, primitive
from tracegrad.primitives import shapes
from tracegrad.testing import DEFAULTS
from tracegrad import KinkWarning  # exported at the top level for warning filters

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3))
Y = RNG.normal(size=(1, 3))


def line_of(fn, text):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def smooth(x, y):
    return np.sum(np.tanh(x) * y + np.exp(x) / (1.0 + y ** 2))


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------------- right gradients pass


def test_right_gradient_passes_and_returns_a_readable_report(no_warnings):
    report = tg.check_grad(smooth, X, Y)
    assert report.passed and report.mode == "directional" and len(report.rows) == 3
    assert all(row.status == "ok" for row in report.rows)
    assert all(row.abs_error < 1e-8 for row in report.rows)
    text = str(report)
    assert text.startswith("check_grad(smooth) w.r.t. x, mode='directional', order=1: passed")
    assert "direction" in text and "analytic" in text and "numeric" in text and "rel error" in text
    assert len(text.splitlines()) == 3 + 1 + 3  # title, dtypes, tolerances, header, one line per direction


def test_directions_and_seed_choose_the_directions(no_warnings):
    five = tg.check_grad(smooth, X, Y, directions=5)
    again = tg.check_grad(smooth, X, Y, directions=5)
    other = tg.check_grad(smooth, X, Y, directions=5, seed=1)
    assert len(five.rows) == 5
    assert [r.analytic for r in five.rows] == [r.analytic for r in again.rows]
    assert [r.analytic for r in five.rows] != [r.analytic for r in other.rows]


def test_full_mode_checks_every_entry_of_every_argument(no_warnings):
    report = tg.check_grad(smooth, X, Y, argnums=(0, 1), mode="full")
    assert report.passed and len(report.rows) == X.size + Y.size
    assert {row.label for row in report.rows} == {"x", "y"}
    assert {row.index for row in report.rows if row.label == "y"} == {(0, 0), (0, 1), (0, 2)}
    expected = tg.grad(smooth, argnums=(0, 1))(X, Y)
    analytic = {(row.label, row.index): row.analytic for row in report.rows}
    assert analytic[("x", (1, 2))] == expected[0][1, 2] and analytic[("y", (0, 1))] == expected[1][0, 1]
    text = str(report)
    assert "w.r.t. x, y" in text and "9 entries checked; the worst 5:" in text
    assert "argument  index" in text and "(0, 1)" in text
    reversed_order = tg.check_grad(smooth, X, Y, argnums=(1, 0), mode="full")
    assert [row.label for row in reversed_order.rows] == ["y"] * Y.size + ["x"] * X.size
    assert "w.r.t. y, x" in str(reversed_order)
    assert {(r.label, r.index): r.analytic for r in reversed_order.rows} == analytic


def test_float32_works_out_of_the_box_with_float64_differences(no_warnings):
    x32, y32 = X.astype(np.float32), Y.astype(np.float32)
    for mode in ("directional", "full"):
        report = tg.check_grad(smooth, x32, y32, mode=mode)
        assert report.passed
        assert report.dtype == np.float32 and report.fd_dtype == np.float64
        assert (report.eps, report.rtol) == (DEFAULTS[np.dtype(np.float64)].eps, DEFAULTS[np.dtype(np.float32)].rtol)
    assert "float32 gradient vs central differences in float64" in str(report)


def test_a_function_that_rounds_to_float32_gets_float32_steps(no_warnings):
    def rounded(x):
        return np.sum(np.sin(x.astype(np.float32)) ** 2)

    report = tg.check_grad(rounded, X, mode="full")
    assert report.fd_dtype == np.float32 and report.eps == DEFAULTS[np.dtype(np.float32)].eps
    assert report.rtol == DEFAULTS[np.dtype(np.float32)].rtol


def test_a_function_that_refuses_float64_is_differenced_in_its_own_dtype(no_warnings):
    def picky(x):
        if x.dtype != np.float32:
            raise TypeError("float32 only")
        return np.sum(np.sin(x) * x)

    report = tg.check_grad(picky, X.astype(np.float32), mode="full")
    assert report.passed and report.fd_dtype == np.float32 and report.eps == DEFAULTS[np.dtype(np.float32)].eps


def test_pytrees_python_floats_and_named_leaves(no_warnings):
    def loss(params, scale):
        return np.sum(np.tanh(X @ params["W"].T + params["b"]) ** 2) * scale

    params = {"W": RNG.normal(size=(4, 3)), "b": RNG.normal(size=4)}
    report = tg.check_grad(loss, params, 1.5, argnums=(0, 1), mode="full")
    assert {row.label for row in report.rows} == {"params_W", "params_b", "scale"}
    assert [row.index for row in report.rows if row.label == "scale"] == [()]


def test_second_order_checks_the_gradient_of_the_gradient(no_warnings):
    report = tg.check_grad(smooth, X, Y, order=2)
    assert report.passed and report.order == 2
    assert "second derivative" in str(report)
    assert tg.check_grad(smooth, X, Y, order=2, mode="full").passed


def test_compiled_value_is_compared_too(no_warnings):
    report = tg.check_grad(smooth, X, Y)
    assert report.value == pytest.approx(smooth(X, Y), rel=1e-12) and report.value_numeric == smooth(X, Y)


# ---------------------------------------------------------------------- wrong gradients fail

TEST_PRIMITIVES = ("test_cube_wrong", "test_square_wrong", "test_cube_wrong_second")


@pytest.fixture(scope="module")
def wrong():
    """Test-only primitives with deliberately wrong VJPs, removed from the registry afterwards (so the
    registry-driven suite, which wants test cases for every primitive, does not see them)."""

    @primitive
    class test_cube_wrong:
        """x ** 3 whose VJP is off by a factor of 1.1"""
        shape = shapes.unary_float
        emit = "{x} * {x} * {x}"

        def ref(x):
            return x * x * x

        def vjp(g, out, x):
            return [g * 3.3 * x * x]

    @primitive
    class test_square_wrong:
        """x ** 2 whose VJP says 3x"""
        shape = shapes.unary_float
        emit = "{x} * {x}"

        def ref(x):
            return x * x

        def vjp(g, out, x):
            return [g * 3.0 * x]

    @primitive
    class test_cube_wrong_second:
        """x ** 3 with a right VJP (3 x**2) whose own derivative is wrong (9x instead of 6x)"""
        shape = shapes.unary_float
        emit = "{x} * {x} * {x}"

        def ref(x):
            return x * x * x

        def vjp(g, out, x):
            return [g * 3.0 * test_square_wrong(x)]

    yield test_cube_wrong, test_cube_wrong_second
    for name in TEST_PRIMITIVES:
        prim = PRIMITIVES.pop(name)
        for alias in [k for k, v in NUMPY_FUNCTIONS.items() if v is prim]:
            del NUMPY_FUNCTIONS[alias]


def cubic_loss(x):
    return np.sum(PRIMITIVES["test_cube_wrong"](x) * 0.5 + x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["directional", "full"])
def test_a_wrong_vjp_fails(wrong, mode, dtype):
    x = X.astype(dtype)
    with pytest.raises(tg.GradCheckError) as info:
        tg.check_grad(cubic_loss, x, mode=mode)
    error = info.value
    assert isinstance(error, AssertionError) and isinstance(error, tg.TracegradError)
    report = error.report
    assert not report.passed and report.failures
    assert str(report) in str(error) and "FAILED" in str(error)
    assert "hint: away from kinks a disagreement means a wrong derivative rule" in str(error)
    if mode == "full":  # every entry is off: analytic - 1 = 1.1 * (numeric - 1)
        for row in report.rows:
            assert row.analytic - 1 == pytest.approx(1.1 * (row.numeric - 1), rel=1e-3)


def test_full_report_names_the_wrong_entry(wrong):
    def loss(x):
        return np.sum(x[0, :2] ** 2) + PRIMITIVES["test_cube_wrong"](x[1, 2]) + np.sum(x)

    with pytest.raises(tg.GradCheckError) as info:
        tg.check_grad(loss, X, mode="full")
    report = info.value.report
    assert [(row.label, row.index) for row in report.failures] == [("x", (1, 2))]
    worst = str(report).splitlines()[5]  # the first line of the table
    assert worst.split()[:3] == ["x", "(1,", "2)"] and worst.endswith("FAIL")
    assert "FAILED: 1 of 6 entries out of tolerance" in str(report)


def test_a_wrong_second_derivative_fails_only_at_order_2(wrong, no_warnings):
    def loss(x):
        return np.sum(PRIMITIVES["test_cube_wrong_second"](x))

    assert tg.check_grad(loss, X, mode="full").passed
    for mode in ("directional", "full"):
        with pytest.raises(tg.GradCheckError, match="second derivative"):
            tg.check_grad(loss, X, order=2, mode=mode)


@pytest.fixture
def wrong_jvp():
    """A test-only primitive, sin, with a right VJP and a JVP off by a factor of 1.01 (removed afterwards)."""

    @primitive
    class test_sin_wrong_jvp:
        """sin whose JVP is off by a factor of 1.01"""
        shape = shapes.unary_float
        emit = "np.sin({x})"

        def ref(x):
            return np.sin(x)

        def vjp(g, out, x):
            return [g * np.cos(x)]

        def jvp(tangents, out, x):
            return tangents[0] * np.cos(x) * 1.01

    yield test_sin_wrong_jvp
    del PRIMITIVES["test_sin_wrong_jvp"]


@pytest.mark.parametrize("mode", ["directional", "full"])
def test_a_jvp_that_disagrees_with_the_vjp_fails_the_dot_product_test(wrong_jvp, mode, no_warnings):
    def loss(x):
        return np.sum(wrong_jvp(x) * x)

    with pytest.raises(tg.GradCheckError, match="a JVP rule disagrees with its VJP") as info:
        tg.check_grad(loss, X, mode=mode)
    report = info.value.report
    assert not report.failures  # the gradient itself is right: only forward mode is off
    assert report.jvp_rows and all(not row.within for row in report.jvp_rows)
    for row in report.jvp_rows:  # x cos(x) + sin(x) from reverse mode, 1.01 x cos(x) + sin(x) from forward mode
        assert row.numeric != pytest.approx(row.analytic, rel=1e-4)
    right = tg.check_grad(smooth, X, Y)
    assert len(right.jvp_rows) == 3 and all(row.within for row in right.jvp_rows)
    assert right.jvp_rows[0].abs_error < 1e-12 * max(1.0, abs(right.jvp_rows[0].analytic))


def test_the_dot_product_test_covers_second_order_and_float32(no_warnings):
    report = tg.check_grad(smooth, X.astype(np.float32), Y.astype(np.float32), argnums=(0, 1), order=2)
    assert report.passed and len(report.jvp_rows) == 3
    for row in report.jvp_rows:
        assert row.abs_error <= 1e-3 * max(1.0, abs(row.analytic)) and row.analytic != 0.0


def test_a_float32_gradient_losing_bits_in_its_forward_values_is_not_a_wrong_jvp(wrong_jvp, no_warnings):
    # sigmoid(12.9) rounds to float32 near 1, so the VJP's (1 - s) * s keeps few bits (0.7% off) where forward
    # mode, run in float64 with the differences, does not: float32's gradient is held to the tolerance of
    # the comparison with differences, as the gradient rows are, not to float64's rounding
    weights = np.array([[0.3, -1.2, 0.8], [1.1, 0.5, -0.4]], np.float32)

    def loss(a, b):
        return np.sum(tg.sigmoid((a + 2.0) ** 3) * weights) + 0.0 * b

    report = tg.check_grad(loss, np.float32(0.34558418), np.float32(0.82161814), argnums=(0, 1))
    assert report.passed and len(report.jvp_rows) == 3
    assert max(row.abs_error / abs(row.numeric) for row in report.jvp_rows) > 1e-3  # (not float64's rounding)
    # a JVP off by 1% at a float32 point is still caught
    with pytest.raises(tg.GradCheckError, match="a JVP rule disagrees with its VJP"):
        tg.check_grad(lambda x: np.sum(wrong_jvp(x) * x), X.astype(np.float32))


def test_tolerances_can_be_overridden(wrong):
    report = tg.check_grad(cubic_loss, X, rtol=0.2, eps=1e-5, atol=0.0)
    assert report.passed and (report.rtol, report.eps, report.atol) == (0.2, 1e-5, 0.0)
    assert "eps=1e-05 (step eps*max(1, |x|)), rtol=0.2, atol=0\n" in str(report)


# ---------------------------------------------------------------------- kinks warn instead of failing


def kinks(x):
    a = np.abs(x[0])
    b = np.maximum(x[1], 0.0)
    c = np.minimum(x[2], x[3])
    d = np.clip(x[4], -1.0, 1.0)
    e = np.where(x[5] > 0, x[5], 2.0 * x[5])
    f = np.sign(x[6]) * x[6]
    g = np.max(x[7:9])
    h = np.min(x[9:11])
    return a + b + c + d + e + f + g + h


AT_KINKS = np.array([0.0, 0.0, 0.3, 0.3, 1.0, 0.0, 0.0, 0.5, 0.5, -0.2, -0.2])
NEXT_TO_KINKS = AT_KINKS + 1e-9 * np.arange(1, 12)  # within the step, and ties broken
AWAY = np.array([0.5, 0.5, 0.3, 0.8, 0.4, -0.5, 0.7, 0.5, 0.9, -0.2, 0.4])

# entry -> (the text on its line, the operation named)
KINK_SITES = {0: ("np.abs(", "abs(x) at x = 0"), 1: ("np.maximum(", "maximum(x, y) at a tie"),
              2: ("np.minimum", "minimum(x, y) at a tie"), 3: ("np.minimum", "minimum(x, y) at a tie"),
              4: ("np.clip", "minimum(x, y) at a tie"), 5: ("np.where", "np.where condition x > y flips"),
              6: ("np.sign(", "sign(x) at x = 0"), 7: ("np.max(", "np.max at tied maxima"),
              8: ("np.max(", "np.max at tied maxima"), 9: ("np.min(", "np.min at tied minima"),
              10: ("np.min(", "np.min at tied minima")}


@pytest.mark.parametrize("point", ["at", "next to"])
def test_each_kink_is_found_and_named_by_its_line(point):
    x = AT_KINKS if point == "at" else NEXT_TO_KINKS
    with pytest.warns(KinkWarning) as caught:
        report = tg.check_grad(kinks, x, mode="full")
    message = str(caught[0].message)
    for entry, (text, operation) in KINK_SITES.items():
        row = report.rows[entry]
        sites = [(k.source.lineno, k.operation) for k in row.kinks]
        assert (line_of(kinks, text), operation) in [(line, op[:len(operation)]) for line, op in sites], (entry, sites)
        site = f"test_check_grad.py:{line_of(kinks, text)}: "
        assert text in message.split(site)[1].splitlines()[0], (site, message)
        assert row.status in ("ok", "kink")
    assert caught[0].filename == __file__  # the warning points at the caller of check_grad
    if point == "next to":  # one-sided steps across the kinks: finite differences disagree, excused
        assert all(row.status == "kink" for row in report.rows)
        assert "the 11 that disagree are not counted as failures" in message


def test_kinks_in_directional_mode_and_at_second_order():
    with pytest.warns(KinkWarning, match="np.maximum"):
        report = tg.check_grad(kinks, NEXT_TO_KINKS)
    assert report.passed and all(row.kinks for row in report.rows)

    def relu_squared(x):
        return np.sum(np.maximum(x, 0.0) ** 2)  # its second derivative jumps at 0

    with pytest.warns(KinkWarning, match="relu_squared"):
        assert tg.check_grad(relu_squared, np.array([1e-9, 1.0]), order=2, mode="full").passed


def test_no_warning_away_from_kinks(no_warnings):
    report = tg.check_grad(kinks, AWAY, mode="full")
    assert report.passed and not report.kinks
    assert tg.check_grad(kinks, AWAY).passed


# ---------------------------------------------------------------------- bad input


def test_integer_and_non_array_arguments_are_refused():
    f = lambda x: np.sum(x * 2.0)
    cases = [(2, "'x': it is a Python int"), (np.arange(3), "an integer array of dtype int64"),
             ("2.0", "a str, not a float"), ([1.0, 2], "'x_1' \\(in argument 'x'\\): it is a Python int"),
             (np.array([True]), "a bool"), (None, "no leaves")]
    for arg, message in cases:
        with pytest.raises(tg.GradTypeError, match=message):
            tg.check_grad(f, arg)
    with pytest.raises(tg.GradTypeError, match="2.0 rather than 2"):
        tg.check_grad(f, 2)


def test_non_scalar_output_is_refused_with_a_projection_hint():
    with pytest.raises(tg.GradTypeError, match=r"return a scalar, got an array of shape \(2, 3\)") as info:
        tg.check_grad(lambda x: np.tanh(x), X)
    assert "np.sum(f(x) * w)" in str(info.value)
    with pytest.raises(tg.GradTypeError, match="got a tuple"):
        tg.check_grad(lambda x: (np.sum(x), x), X)
    with pytest.raises(tg.GradTypeError, match="return a float, got bool"):
        tg.check_grad(lambda x: np.all(x > 0), X)


def test_argnums_mode_and_order_are_checked():
    with pytest.raises(tg.GradTypeError, match=r"argnums=2 is out of range for 2 argument\(s\)"):
        tg.check_grad(smooth, X, Y, argnums=2)
    with pytest.raises(tg.GradTypeError, match="argnums must be an int"):
        tg.check_grad(smooth, X, Y, argnums="x")
    with pytest.raises(tg.GradTypeError, match="twice"):
        tg.check_grad(smooth, X, Y, argnums=(0, -2))
    with pytest.raises(ValueError, match="mode must be 'directional' or 'full'"):
        tg.check_grad(smooth, X, Y, mode="sideways")
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        tg.check_grad(smooth, X, Y, order=3)
    with pytest.raises(ValueError, match="directions must be a positive int"):
        tg.check_grad(smooth, X, Y, directions=0)


def test_non_float_arguments_not_differentiated_are_fine(no_warnings):
    labels = np.array([2, 0])

    def pick(x, labels):
        return np.sum(np.tanh(x)[np.arange(2), labels] ** 2)

    assert tg.check_grad(pick, X, labels, mode="full").passed


# ---------------------------------------------------------------------- docs/conventions.md, claim by claim


@pytest.fixture(scope="module")
def at_kinks():
    """The value and gradient of ``kinks`` exactly at its kinks (compiled once, shared with check_grad)."""
    return tg.value_and_grad(kinks)(AT_KINKS)


CONVENTIONS = [  # (entry of AT_KINKS, derivative there, the convention)
    (0, 0.0, "abs'(0) = 0, the midpoint of [-1, 1]"),
    (1, 0.5, "relu np.maximum(x, 0) at x = 0: 0.5"),
    (2, 0.5, "np.minimum(x, y) at x = y: half to x"),
    (3, 0.5, "np.minimum(x, y) at x = y: half to y"),
    (4, 0.5, "np.clip(x, lo, hi) at x = hi: 0.5"),
    (5, 2.0, "np.where(x > 0, x, 2x) at 0: the branch taken (the condition is False), 2"),
    (6, 0.0, "sign'(x) = 0, so d/dx sign(x) * x = sign(x) = 0 at 0"),
    (7, 0.5, "np.max with 2 tied maxima: 1/2 each"),
    (8, 0.5, "np.max with 2 tied maxima: 1/2 each"),
    (9, 0.5, "np.min with 2 tied minima: 1/2 each"),
    (10, 0.5, "np.min with 2 tied minima: 1/2 each"),
]


CONVENTION_IDS = ["abs at 0", "relu at 0", "minimum tie, x", "minimum tie, y", "clip at hi", "where at its flip",
                  "sign", "max tie, first", "max tie, second", "min tie, first", "min tie, second"]


@pytest.mark.parametrize("entry,expected,convention", CONVENTIONS, ids=CONVENTION_IDS)
def test_derivative_at_kinks(at_kinks, entry, expected, convention):
    _, g = at_kinks
    assert g[entry] == expected, convention


def test_maximum_and_minimum_ties_split_the_gradient_evenly():
    both = tg.grad(lambda x, y: np.maximum(x, y) + 3.0 * np.minimum(x, y), argnums=(0, 1))
    assert both(1.0, 1.0) == (2.0, 2.0)  # 0.5 + 3 * 0.5 to each
    assert both(2.0, 1.0) == (1.0, 3.0)


def test_clip_at_the_lower_bound_and_ties_of_reductions_along_an_axis():
    def f(x):
        clipped = np.sum(np.clip(x[:2], -1.0, 1.0))
        three_tied = np.max(x[2:5])
        pairs = np.sum(x[5:].reshape(2, 2).min(axis=1, keepdims=True))
        return clipped + three_tied + pairs

    g = tg.grad(f)(np.array([-1.0, 1.0, 0.25, 0.25, 0.25, 3.0, 3.0, 1.0, 2.0]))
    np.testing.assert_allclose(g, [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 1.0, 0.0], rtol=1e-15)


def test_abs_and_math_fabs_at_zero():
    g = tg.grad(lambda x: np.abs(x) + 2.0 * math.fabs(x))
    assert (g(0.0), g(1.0), g(-1.0)) == (0.0, 3.0, -3.0)


def test_comparisons_carry_no_gradient():
    g = tg.grad(lambda x: np.sum((x > 0).astype(np.float64) * 3.0 + x))
    np.testing.assert_array_equal(g(np.array([-1.0, 0.0, 1.0])), [1.0, 1.0, 1.0])


def test_central_differences_agree_with_the_midpoint_exactly_at_kinks_but_not_with_where():
    with pytest.warns(KinkWarning, match="the one that disagrees is not counted as a failure"):
        report = tg.check_grad(kinks, AT_KINKS, mode="full")
    assert [row.status for row in report.rows] == ["ok"] * 5 + ["kink"] + ["ok"] * 5
    assert report.rows[5].numeric == pytest.approx(1.5)  # the midpoint of the branches' slopes 1 and 2
    assert report.rows[5].analytic == 2.0  # np.where: the slope of the branch taken


def test_relu_written_with_where_has_derivative_0_at_0():
    relu_grads = tg.grad(lambda x: np.sum(np.where(x > 0, x, 0.0)) + np.sum(np.maximum(x, 0.0)) * 10.0)
    np.testing.assert_array_equal(relu_grads(np.array([0.0, 1.0, -1.0])), [5.0, 11.0, 0.0])


def trap(x):
    return np.sum(np.where(x > 0, np.sqrt(x), 0.0))


def safe(x):
    safe_x = np.where(x > 0, x, 1.0)
    return np.sum(np.where(x > 0, np.sqrt(safe_x), 0.0))


def test_the_where_trap_and_the_safe_pattern():
    x = np.array([0.0, 4.0])
    value, g = tg.value_and_grad(trap)(x)
    assert value == 2.0  # the value is right ...
    assert np.isnan(g[0]) and g[1] == 0.25  # ... the gradient is not: sqrt'(0) = inf, times the untaken 0
    value, g = tg.value_and_grad(safe)(x)
    assert value == 2.0
    np.testing.assert_array_equal(g, [0.0, 0.25])
    with pytest.warns(KinkWarning):
        assert tg.check_grad(safe, x, mode="full").passed
    with pytest.warns(KinkWarning), pytest.raises(tg.GradCheckError, match="nan"):
        tg.check_grad(trap, x, mode="full")


def test_the_trap_with_log_and_division():
    def f(x, y):
        return np.sum(np.where(x > 0, np.log(x), 0.0)) + np.sum(np.where(y != 0, 1.0 / y, 0.0))

    gx, gy = tg.grad(f, argnums=(0, 1))(np.array([0.0, 2.0]), np.array([0.0, 2.0]))
    assert np.isnan(gx[0]) and gx[1] == 0.5
    assert np.isnan(gy[0]) and gy[1] == -0.25


def test_debug_nans_finds_the_where_trap():
    with pytest.raises(tg.NonFiniteError) as info:
        tg.grad(trap, debug_nans=True)(np.array([0.0, 4.0]))
    message = str(info.value)
    assert "backward pass" in message
    assert f"test_check_grad.py:{line_of(trap, 'np.sqrt')}: return np.sum(np.where(x > 0, np.sqrt(x), 0.0))" in message


def test_default_tolerances_are_the_documented_ones(no_warnings):
    documented = {np.float64: (1e-6, 1e-5, 1e-7), np.float32: (1e-3, 2e-3, 1e-4)}
    for dtype, (eps, rtol, atol) in documented.items():
        assert (DEFAULTS[np.dtype(dtype)].eps, DEFAULTS[np.dtype(dtype)].rtol, DEFAULTS[np.dtype(dtype)].atol) == \
            (eps, rtol, atol)
    report = tg.check_grad(smooth, X, Y)
    assert (report.eps, report.rtol, report.atol, report.atol_given) == (1e-6, 1e-5, 1e-7, False)
    assert "atol=1e-07*max(1, |g|_2)" in str(report)


def test_every_test_named_in_docs_conventions_exists():
    import pathlib
    import re
    import sys

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "conventions.md").read_text()
    named = set(re.findall(r"`(test_\w+)(?:\[([^\]]+)\])?`", doc))
    assert len(named) > 20
    module = sys.modules[__name__]
    for name, param in named:
        assert callable(getattr(module, name, None)), f"docs/conventions.md names {name}, which does not exist"
        if param:
            ids = {"test_derivative_at_kinks": CONVENTION_IDS, "test_each_kink_is_found_and_named_by_its_line":
                   ["at", "next to"]}[name]
            assert param in ids, f"docs/conventions.md names {name}[{param}], which does not exist"


def test_the_kinks_of_floor_ceil_mod_fmax_and_fmin_are_found():
    """Each declares its kink (KinkAt): a point on it is reported, a point away from it is not."""
    cases = [(lambda x: np.sum(np.floor(x) * x), np.array([2.0, 0.3]), "floor(x) at an integer x"),
             (lambda x: np.sum(np.ceil(x) * x), np.array([-1.0, 0.3]), "ceil(x) at an integer x"),
             (lambda x: np.sum(x % 1.5), np.array([3.0, 0.4]), "x % y where x / y is an integer"),
             (lambda x: np.sum(np.fmax(x, 0.5) ** 2), np.array([0.5, 2.0]), "fmax(x, y) at a tie x = y"),
             (lambda x: np.sum(np.fmin(x, 0.5) ** 2), np.array([0.5, 2.0]), "fmin(x, y) at a tie x = y")]
    for f, at_kink, operation in cases:
        with pytest.warns(KinkWarning, match=re.escape(operation)):
            tg.check_grad(f, at_kink, mode="full")
        with warnings.catch_warnings():
            warnings.simplefilter("error", KinkWarning)
            assert tg.check_grad(f, at_kink + 0.2, mode="full").passed, operation
