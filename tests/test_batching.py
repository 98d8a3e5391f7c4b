"""vmap's batching over the whole primitive suite: every primitive's case, mapped over three examples,
equals the case run on each example (by the reference interpreter, so nothing is compiled)."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad.interpret import evaluate
from tracegrad.tracer import trace

from test_primitives import PARAMS, make_case


def batched_values(fn, examples, axes):
    """vmap(fn) traced into a plain graph and evaluated: (its result, whether a loop over the batch was left)."""
    args = [np.stack([ex[k] for ex in examples]) if axis == 0 else examples[0][k] for k, axis in enumerate(axes)]
    traced = trace(lambda *xs: tg.vmap(fn, in_axes=tuple(axes))(*xs), tuple(args))
    with np.errstate(all="ignore"):
        return evaluate(traced.graph, *args, *[c.current() for c in traced.captures])[0]


@pytest.mark.parametrize("name,i", PARAMS)
@pytest.mark.parametrize("mapped", ["all", "first"])
def test_vmap_of_each_primitive_equals_a_loop_over_the_examples(name, i, mapped):
    _, args, fn = make_case(name, i)
    examples = [make_case(name, i, seed=seed)[1] for seed in range(3)]
    axes = [0 if mapped == "all" or k == 0 else None for k in range(len(args))]
    if mapped == "first":  # the other arguments are the same for every example
        examples = [[ex[0]] + list(examples[0][1:]) for ex in examples]
    with np.errstate(all="ignore"):
        expected = np.stack([np.asarray(fn(*ex)) for ex in examples])
    got = batched_values(fn, examples, axes)
    assert np.shape(got) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13, equal_nan=True)
