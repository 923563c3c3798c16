"""Properties every built-in strategy keeps, over arbitrary finite replies."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies.base import ScalarReply
from strategies.loader import BUILT_IN, load_strategy

# no deadline: timings on a shared machine vary; 100 examples keep the file to a second or two
SETTINGS = settings(max_examples=100, deadline=None)
VALUES = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def replies(draw):
    """1..12 clients, 1..16 scalars each, values within +-1e6, 1..1000 examples each."""
    n, d = draw(st.integers(1, 12)), draw(st.integers(1, 16))
    grads = draw(arrays(np.float64, (n, d), elements=VALUES))
    counts = draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return [ScalarReply(i, grads[i], counts[i], 0.0) for i in range(n)]


@SETTINGS
@given(replies(), st.sampled_from(sorted(BUILT_IN)), st.integers(1, 10_000))
def test_every_built_in_returns_finite_float64_of_the_right_length(rs, name, server_round):
    strategy = load_strategy(name)
    strategy.configure(clients_per_round=len(rs))
    out = strategy.aggregate(server_round, rs)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == rs[0].grads.shape and np.isfinite(out).all()


@SETTINGS
@given(replies(), st.floats(0.0, 0.5, exclude_max=True))
def test_median_and_trimmed_mean_stay_within_each_coordinates_range(rs, trim):
    grads = np.stack([r.grads for r in rs])
    lo, hi = grads.min(axis=0), grads.max(axis=0)
    for out in (load_strategy("median").aggregate(1, rs),
                load_strategy("trimmed-mean", trim=trim).aggregate(1, rs)):
        assert np.all((lo <= out) & (out <= hi))


@SETTINGS
@given(replies(), st.floats(1e-3, 1e4))
def test_clipped_mean_norm_stays_within_the_clip(rs, clip):
    out = load_strategy("clipped-mean", clip=clip).aggregate(1, rs)
    # scaling to the clip and averaging may each round up by an ulp or so
    assert np.linalg.norm(out) <= clip * (1 + 1e-12)


@SETTINGS
@given(arrays(np.float64, st.integers(1, 16), elements=VALUES),
       st.lists(st.integers(1, 1000), min_size=1, max_size=12))
def test_identical_replies_come_back(grads, counts):
    rs = [ScalarReply(i, grads, c, 0.0) for i, c in enumerate(counts)]
    np.testing.assert_allclose(load_strategy("mean").aggregate(1, rs), grads, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(load_strategy("median").aggregate(1, rs), grads)
    np.testing.assert_array_equal(load_strategy("trimmed-mean").aggregate(1, rs), grads)
