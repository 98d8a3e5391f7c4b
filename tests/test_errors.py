"""Bad input gets a clear tracegrad error naming the problem and the user's own line."""
import numpy as np
import pytest

import tracegrad as tg


def this_line_of(fn, text):
    import inspect
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_python_if_on_a_traced_value_names_the_line_and_suggests_where():
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(tg.TracingError) as info:
        tg.grad(f)(1.0)
    message = str(info.value)
    assert f"test_errors.py:{this_line_of(f, 'if x > 0')}" in message
    assert "np.where" in message and "if x > 0:" in message


@pytest.mark.parametrize("convert", [float, int, bool])
def test_concrete_conversions_are_refused(convert):
    with pytest.raises(tg.TracingError, match=convert.__name__):
        tg.grad(lambda x: convert(x) * x)(1.0)


def test_while_loop_on_traced_value():
    def f(x):
        while x < 10:
            x = x * 2
        return x

    with pytest.raises(tg.TracingError, match="while"):
        tg.grad(f)(1.0)


def test_static_python_loops_unroll():
    def f(x):
        for _ in range(3):
            x = x * x
        return x

    assert tg.grad(f)(1.5) == pytest.approx(8 * 1.5 ** 7)


@pytest.mark.parametrize("call,name", [
    (lambda x: np.fft.fft(x).real, "np.fft.fft"),
    (lambda x: np.linalg.eig(x)[0], "np.linalg.eig"),
    (lambda x: np.polyval(x, 2.0), "np.polyval"),
    (lambda x: np.add.accumulate(x), "np.add.accumulate"),
    (lambda x: np.sum(x, dtype=np.float32), "dtype"),
])
def test_unsupported_functions_and_arguments_are_named(call, name):
    with pytest.raises(tg.UnsupportedError, match=name.replace(".", r"\.")):
        tg.grad(lambda x: np.sum(call(x)))(np.ones((2, 2)))


def test_shape_mismatch_names_both_shapes_and_the_line():
    def f(A, B):
        return np.sum(A @ B)

    with pytest.raises(tg.ShapeError) as info:
        tg.grad(f)(np.ones((3, 4)), np.ones((5, 2)))
    message = str(info.value)
    assert "(3, 4)" in message and "(5, 2)" in message
    assert f"test_errors.py:{this_line_of(f, 'A @ B')}" in message


def test_broadcast_mismatch_names_the_operation():
    with pytest.raises(tg.ShapeError, match=r"mul .*\(2, 3\) and \(4,\)"):
        tg.jit(lambda x, y: x * y)(np.ones((2, 3)), np.ones(4))


def test_grad_of_non_scalar_output():
    with pytest.raises(tg.GradTypeError, match="scalar"):
        tg.grad(lambda x: x * 2)(np.ones(3))


def test_grad_with_respect_to_an_integer_argument():
    with pytest.raises(tg.GradTypeError, match="'n'.*int64"):
        tg.grad(lambda x, n: x * n, argnums=1)(1.0, 3)
    with pytest.raises(tg.GradTypeError, match="dtype int64"):
        tg.grad(lambda x: np.sum(x * 1.0))(np.arange(3))


@pytest.mark.parametrize("argnums", [2, -3, (0, 5)])
def test_argnums_out_of_range(argnums):
    with pytest.raises(tg.GradTypeError, match="out of range"):
        tg.grad(lambda x, y: x * y, argnums=argnums)(1.0, 2.0)


@pytest.mark.parametrize("argnums", [1.0, (), "0", True])
def test_argnums_of_the_wrong_type(argnums):
    with pytest.raises(tg.GradTypeError, match="argnums"):
        tg.grad(lambda x: x, argnums=argnums)


def test_string_arguments_are_refused():
    with pytest.raises(tg.GradTypeError, match="str"):
        tg.grad(lambda x, s: x)(1.0, "hello")


def test_has_aux_without_a_pair():
    with pytest.raises(tg.GradTypeError, match="pair"):
        tg.grad(lambda x: x * 2, has_aux=True)(1.0)


def test_assignment_into_a_traced_array_is_functional():
    def f(x):
        x[0] = 1.0
        return np.sum(x * x)

    x = np.full(3, 2.0)
    np.testing.assert_allclose(tg.grad(f)(x), [0.0, 4.0, 4.0])  # x[0] no longer depends on x
    assert np.array_equal(x, np.full(3, 2.0))  # the caller's array is not written


def test_assignment_through_a_stale_view_is_refused():
    def f(x):
        head = x[:2]
        x[0] = 1.0
        return np.sum(head)

    with pytest.raises(tg.TracingError, match="assigned into"):
        tg.grad(f)(np.ones(3))


def test_boolean_mask_indexing_is_refused_with_a_suggestion():
    with pytest.raises(tg.UnsupportedError, match="np.where"):
        tg.grad(lambda x: np.sum(x[x > 0]))(np.ones(3))


def test_gather_index_out_of_bounds_raises():
    with pytest.raises(IndexError, match="out of bounds"):
        tg.grad(lambda x, i: np.sum(x[i]))(np.ones(3), np.array([0, 5]))


def _read_at(x, i):
    return np.sum(x[i] * 2.0)  # the line an index out of bounds names


def _read_in_a_loop(x):
    return tg.fori_loop(0, 3, lambda t, s: s + x[t + 1], 0.0)  # x[3] in the last step


@pytest.mark.parametrize("mode", ["never", "wait"])
@pytest.mark.parametrize("case", ["scalar index", "index array", "gradient", "loop"])
def test_an_index_out_of_bounds_names_the_users_line_in_every_tier(mode, case):
    # The compiled kernels raise without a line (they know none): the call runs again on NumPy to find it.
    # The second call goes through the specialisation's fast path, the first through the general one.
    x = np.arange(3.0)
    fn, args, good = {
        "scalar index": (tg.jit(_read_at, compile=mode), (x, 5), (x, 2)),
        "index array": (tg.jit(_read_at, compile=mode), (x, np.array([0, -4])), (x, np.array([0, -3]))),
        "gradient": (tg.grad(_read_at, compile=mode), (x, np.array([1, 3])), (x, np.array([1, 2]))),
        "loop": (tg.jit(_read_in_a_loop, compile=mode), (x,), (np.arange(4.0),)),
    }[case]
    fn(*good)  # compiled (or evaluated) for these shapes
    line = "x[t + 1]" if case == "loop" else "np.sum(x[i] * 2.0)"
    for _ in range(2):
        with pytest.raises(tg.IndexOutOfBoundsError, match="out of bounds") as info:
            fn(*args)
        assert isinstance(info.value, IndexError)
        assert info.value.source is not None and line in info.value.source.line
        assert info.value.__context__ is None or info.value.__suppress_context__  # no Numba traceback above it


def test_errors_are_one_family():
    for cls in (tg.TracingError, tg.UnsupportedError, tg.ShapeError, tg.GradTypeError, tg.CompileError):
        assert issubclass(cls, tg.TracegradError)


def test_dict_keys_that_cannot_be_sorted_get_a_clear_error():
    params = {"w": np.ones(2), 1: np.ones(2)}
    with pytest.raises(tg.GradTypeError, match=r"cannot be sorted together \(int, str\)"):
        tg.grad(lambda p: np.sum(p["w"] * p[1]))(params)


def test_the_users_line_is_read_again_after_the_file_changes(tmp_path):
    """user_source reads each line's text once per version of the file linecache holds: after the file is
    edited and linecache checks it (as IPython does before each cell), the new text is reported."""
    import importlib.util
    import linecache

    path = tmp_path / "edited_module.py"

    def load(body):
        path.write_text(f"import numpy as np\n\n\ndef f(x):\n{body}\n")
        spec = importlib.util.spec_from_file_location("edited_module", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        linecache.checkcache(str(path))
        return module.f

    def sources(fn):
        return {(n.source.lineno, n.source.line) for n in tg.make_graph(fn, 1.0).nodes}

    assert sources(load("    return np.sin(x) * x")) == {(5, "return np.sin(x) * x")}
    assert sources(load("    return np.cos(x) + x  # edited")) == {(5, "return np.cos(x) + x  # edited")}
    with pytest.raises(tg.TracingError) as info:
        tg.grad(load("    return x if x > 0 else -x"))(1.0)
    assert f"{path}:5: return x if x > 0 else -x" in str(info.value)


def test_every_node_of_a_long_function_names_its_own_line(tmp_path):
    """user_source reads a function's line table once (frame.f_lineno reads it from the start on every call,
    quadratic in a long function): the lines found must still be each operation's own, comprehensions and
    statements on several lines included."""
    import importlib.util

    lines, expected = ["import numpy as np", "", "", "def f(x):"], {}
    for i in range(1, 1500):
        factor = 1 + i / 10_000
        if i % 3 == 0:
            lines.append(f"    x = x * sum([{factor} for _ in range(1)])")
        elif i % 3 == 1:  # a product over two lines is at the line it starts on (as in a traceback)
            lines.append(f"    x = (x")
            lines.append(f"         * {factor})")
            expected[factor] = len(lines) - 1
            continue
        else:
            lines.append(f"    x = np.sin(x) * {factor}")
        expected[factor] = len(lines)
    lines.append("    return x")
    path = tmp_path / "long_function.py"
    path.write_text("\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location("long_function", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    graph = tg.make_graph(module.f, 1.0)
    found = {a.value: node.source.lineno for node in graph.nodes for a in node.inputs
             if node.primitive.name == "mul" and not hasattr(a, "hint")}
    assert found == expected
    assert all(node.source.filename == str(path) for node in graph.nodes)
