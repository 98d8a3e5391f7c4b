"""Every public function, given bad input, raises a tracegrad error that names the problem.

The rule (README, "Errors are part of the interface"):
- anything wrong with the values given (arguments of your function, data, settings, a non-function where a
  function belongs) raises a ``tg.TracegradError`` subclass; those about types are ``TypeError``s too
  (``GradTypeError``), those about values ``ValueError``s (``ShapeError``, ``DataError``);
- calling your transformed function with the wrong number of arguments or an unknown keyword is a
  ``GradTypeError`` naming your function;
- calling tracegrad's own functions with a keyword they do not have is Python's own ``TypeError``.
"""
import re
import warnings

import numpy as np
import pytest

import tracegrad as tg


def f(x, y):
    return np.sum(x * y)


GOOD = np.ones(2)

BAD_ARGUMENTS = {
    "None": (None, r"None"),
    "a string": ("abc", r"type str"),
    "a list of strings": (["a", "b"], r"type str"),
    "an object array": (np.array([1.0, None], dtype=object), r"dtype object"),
    "a complex array": (np.array([1 + 2j, 3j]), r"complex numbers are not supported yet.*complex128"),
    "a complex number": (1 + 2j, r"complex numbers are not supported yet.*type complex"),
    "a complex64 scalar": (np.complex64(1j), r"complex numbers are not supported yet.*complex64"),
    "a float16 array": (np.ones(2, np.float16), r"float16"),
    "a set": ({1.0}, r"type set"),
    "a function": (len, r"builtin_function_or_method"),
}

CALLS = {
    "grad": lambda a: tg.grad(f)(a, GOOD),
    "grad argnums=1": lambda a: tg.grad(f, argnums=1)(GOOD, a),
    "value_and_grad": lambda a: tg.value_and_grad(f)(a, GOOD),
    "jit": lambda a: tg.jit(f)(a, GOOD),
    "source": lambda a: tg.source(f, a, GOOD),
    "make_graph": lambda a: tg.make_graph(f, a, GOOD),
    "check_grad": lambda a: tg.check_grad(f, a, GOOD),
    "numeric_grad": lambda a: tg.numeric_grad(f, a, GOOD),
    "draw": lambda a: tg.draw(f, a, GOOD).dot,
}


@pytest.mark.parametrize("call", CALLS, ids=str)
@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=str)
def test_bad_arguments(call, bad):
    value, message = BAD_ARGUMENTS[bad]
    if call == "numeric_grad" and bad == "a float16 array":
        pytest.skip("numeric_grad differentiates float16 (in float64): nothing is compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(tg.TracegradError) as info:
            CALLS[call](value)
    text = str(info.value)
    assert text.strip()
    if call in ("check_grad", "numeric_grad"):  # they say what kind of leaf it is in their own words
        assert any(word in text for word in ("None", "str", "object", "complex", "float16", "set", "builtin",
                                             "no floats", "no leaves"))
    else:
        assert re.search(message, text), text


def test_a_complex_array_in_the_closure_is_named():
    Z = np.array([1j, 2j])
    with pytest.raises(tg.UnsupportedError, match="complex128"):
        tg.jit(lambda x: x * Z)(GOOD)


@pytest.mark.parametrize("constant", [1j, np.complex128(2j), np.complex64(1 + 1j)], ids=repr)
def test_a_complex_constant_is_refused_at_the_users_line(constant):
    def f(x):
        return np.sum(x * constant)  # the line named

    with pytest.raises(tg.UnsupportedError, match=r"complex numbers \(.*\) are not supported") as info:
        tg.grad(f)(GOOD)
    assert "return np.sum(x * constant)" in str(info.value)


MISUSE = {
    "shapes that do not broadcast": (lambda: tg.grad(f)(np.ones(2), np.ones(3)), tg.ShapeError,
                                     r"shapes \(2,\) and \(3,\)"),
    "a keyword the function does not have": (lambda: tg.grad(f)(GOOD, z=GOOD), tg.GradTypeError, r"f: .*'y'"),
    "too few arguments": (lambda: tg.grad(f)(GOOD), tg.GradTypeError, r"f: missing a required argument: 'y'"),
    "too many arguments": (lambda: tg.grad(f)(GOOD, GOOD, GOOD), tg.GradTypeError, r"f: too many positional"),
    "argnums out of range": (lambda: tg.grad(f, argnums=5)(GOOD, GOOD), tg.GradTypeError, r"argnums=5 is out of"),
    "argnums a string": (lambda: tg.grad(f, argnums="x"), tg.GradTypeError, r"argnums must be"),
    "grad of a number": (lambda: tg.grad(3), tg.GradTypeError, r"grad expects a function, got int"),
    "jit of a string": (lambda: tg.jit("f"), tg.GradTypeError, r"jit expects a function, got str"),
    "source of None": (lambda: tg.source(None, 1.0), tg.GradTypeError, r"source expects a function"),
    "make_graph of None": (lambda: tg.make_graph(None, 1.0), tg.GradTypeError, r"make_graph expects a function"),
    "check_grad of None": (lambda: tg.check_grad(None, 1.0), tg.GradTypeError, r"check_grad expects a function"),
    "draw of None": (lambda: tg.draw(None, 1.0), tg.GradTypeError, r"draw expects a function or a Graph"),
    "check_grad mode": (lambda: tg.check_grad(f, GOOD, GOOD, mode="bogus"), tg.DataError, r"mode must be"),
    "check_grad order": (lambda: tg.check_grad(f, GOOD, GOOD, order=3), tg.DataError, r"order must be 1 or 2"),
    "draw by_line": (lambda: tg.draw(f, GOOD, GOOD, by_line="bogus"), tg.DataError, r"by_line must be one of"),
    "an integer argument": (lambda: tg.grad(f)(np.ones(2, int), GOOD), tg.GradTypeError, r"dtype int64"),
    "a vector output": (lambda: tg.grad(lambda x: x)(GOOD), tg.GradTypeError, r"scalar output"),
    "a string output": (lambda: tg.jit(lambda x: "s")(GOOD), tg.GradTypeError, r"returned a str"),
    "None to differentiate": (lambda: tg.grad(f)(None, GOOD), tg.GradTypeError, r"argument 'x': it is None"),
}


@pytest.mark.parametrize("case", MISUSE, ids=str)
def test_misuse(case):
    call, error, message = MISUSE[case]
    with pytest.raises(error, match=message):
        call()


def loss(p, X):
    return np.mean((X @ p) ** 2)


def fit(**overrides):
    arguments = dict(loss=loss, params=np.zeros(2), data=np.ones((4, 2)), optimizer=tg.optim.SGD(lr=0.1),
                     batch_size=2, progress=False)
    arguments.update(overrides)
    return tg.fit(arguments.pop("loss"), arguments.pop("params"), arguments.pop("data"), **arguments)


FIT = {
    "data None": (dict(data=None), tg.DataError, r"data must be an array or a tuple of arrays"),
    "data a string": (dict(data="abc"), tg.DataError, r"got str"),
    "data an object array": (dict(data=np.array([[1, None]] * 4, dtype=object)), tg.DataError, r"dtype object"),
    "data complex": (dict(data=np.ones((4, 2), complex)), tg.DataError, r"complex128"),
    "params None": (dict(params=None), tg.DataError, r"params has no arrays"),
    "params a string": (dict(params="ab"), tg.GradTypeError, r"is a str"),
    "params a list of strings": (dict(params=["a"]), tg.GradTypeError, r"params_0 is a str"),
    "params complex": (dict(params=np.ones(2, complex)), tg.GradTypeError, r"complex128"),
    "params of the wrong shape": (dict(params=np.zeros(3)), tg.DataError,
                                  r"the loss raised ValueError on the data before training"),
    "a loss taking other arguments": (dict(loss=lambda p: np.sum(p)), tg.DataError, r"raised TypeError"),
    "a vector loss": (dict(loss=lambda p, X: X @ p), tg.DataError, r"must return one number"),
    "validation of the wrong shape": (dict(validation=np.ones((3, 3))), tg.DataError, r"on the validation"),
    "no optimiser": (dict(optimizer=None), tg.DataError, r"optimizer must be"),
    "metrics a list": (dict(metrics=["accuracy"]), tg.DataError, r"metrics must be a dict"),
    "a metric that is not callable": (dict(metrics={"a": 3}), tg.DataError, r"metrics must be a dict"),
    "batch_size a string": (dict(batch_size="2"), tg.DataError, r"batch_size must be an int"),
    "epochs negative": (dict(epochs=-1), tg.DataError, r"epochs must be"),
    "a grad function as the loss": (dict(loss=tg.grad(loss)), tg.DataError, r"plain loss function"),
}


@pytest.mark.parametrize("case", FIT, ids=str)
def test_fit_bad_input(case):
    overrides, error, message = FIT[case]
    with pytest.raises(error, match=message):
        fit(**overrides)


@pytest.mark.parametrize("call", [lambda: tg.grad(f, argnum=1), lambda: tg.check_grad(f, GOOD, GOOD, bogus=1),
                                  lambda: fit(epoch=3)])
def test_an_unknown_keyword_of_tracegrad_itself_is_pythons_type_error(call):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        call()
