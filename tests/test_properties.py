"""Property-based tests (hypothesis) of the loss, the pair sampler and the parameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from den._config import Float, Int, IntSeq
from den._loss import batch_contrastive_loss, contrastive_loss, f_cdf, pair_loss
from den._pairs import PairSampler

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
coords = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@SETTINGS
@given(
    out=arrays(np.float64, st.tuples(st.integers(2, 12).map(lambda b: 2 * b), st.just(2)), elements=coords),
    data=st.data(),
    dof=st.floats(0.5, 20),
)
def test_batch_contrastive_loss_is_the_formula(out, data, dof):
    """For any map positions and far partners: the fused loss equals the reference formula, >= 0, finite gradient."""
    n = out.shape[0]
    far = torch.tensor(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))
    x = torch.tensor(out, requires_grad=True)
    loss = batch_contrastive_loss(x, far, dof=dof)
    (grad,) = torch.autograd.grad(loss, x)
    b = n // 2
    d2n = ((x[:b] - x[b:]) ** 2).sum(1)
    d2f = ((x[:, None, :] - x[far][None]) ** 2).sum(2).masked_fill(far[None, :] == torch.arange(n)[:, None], math.inf)
    ref = contrastive_loss(torch.cat([d2n, d2n]), d2f, dof=dof)
    assert float(loss) >= -1e-9 and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)


@SETTINGS
@given(
    d2=arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1e12)),
    near=st.data(),
    v=st.integers(1, 6),
    ignore=st.floats(0.05, 1.0),
)
def test_pair_loss_bounded_and_finite(d2, near, v, ignore):
    """The paper's loss lies in [0, 1] with a finite gradient, whatever the distances and the threshold."""
    mask = torch.tensor(near.draw(st.lists(st.booleans(), min_size=len(d2), max_size=len(d2))))
    x = torch.tensor(d2, requires_grad=True)
    loss, counts = pair_loss(x, mask, n_components=v, ignore=ignore)
    loss.backward()
    assert 0 <= float(loss) <= 1 + 1e-9 and torch.isfinite(x.grad).all()
    assert counts["near"] + counts["far"] <= len(d2)


@SETTINGS
@given(x=arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 1e30)), v=st.integers(1, 12))
def test_f_cdf_is_a_cdf(x, v):
    p = f_cdf(torch.tensor(np.sort(x)), v).numpy()
    assert ((0 <= p) & (p <= 1)).all() and (np.diff(p) >= -1e-12).all()


@SETTINGS
@given(n_pairs=st.integers(1, 300), batch=st.integers(2, 64), n_far=st.integers(1, 16), seed=st.integers(0, 2**31))
def test_sampler_batches_are_valid(n_pairs, batch, n_far, seed):
    """Every near pair appears once per epoch, in order within its batch, and far partners index the batch."""
    rng = np.random.default_rng(seed)
    near = (rng.integers(0, 500, n_pairs), rng.integers(0, 500, n_pairs))
    sampler = PairSampler(
        near, batch_size=batch, n_far=n_far, far_rule="shared", generator=torch.Generator().manual_seed(seed)
    )
    seen = []
    for b in sampler.epoch():
        half = len(b.rows) // 2
        assert len(b.rows) == 2 * half and 1 <= half <= batch
        assert b.far.shape == (n_far,) and int(b.far.min()) >= 0 and int(b.far.max()) < len(b.rows)
        seen += list(zip(b.rows[:half].tolist(), b.rows[half:].tolist(), strict=True))
    assert sorted(seen) == sorted(zip(near[0].tolist(), near[1].tolist(), strict=True))
    assert len(list(sampler.epoch())) == sampler.steps_per_epoch()


@SETTINGS
@given(value=st.one_of(st.integers(-10, 10), st.floats(-10, 10), st.booleans(), st.text(max_size=3), st.none()))
def test_int_rule(value):
    rule = Int(1)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if ok:
        assert rule.check("p", value) == value
    else:
        with pytest.raises((TypeError, ValueError), match=r"Invalid p="):
            rule.check("p", value)


@SETTINGS
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.booleans(), st.text(max_size=2)
    )
)
def test_float_rule(value):
    rule = Float(0, 1, open_lo=True)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 < value <= 1
    if ok:
        assert rule.check("p", value) == float(value)
    else:
        with pytest.raises((TypeError, ValueError), match=r"Invalid p="):
            rule.check("p", value)


@SETTINGS
@given(value=st.lists(st.one_of(st.integers(-3, 300), st.floats(0, 10)), max_size=4))
def test_int_seq_rule(value):
    ok = all(isinstance(v, int) and v >= 1 for v in value)
    if ok:
        assert IntSeq(1).check("hidden", value) == tuple(value)
    else:
        with pytest.raises((TypeError, ValueError), match=r"Invalid hidden="):
            IntSeq(1).check("hidden", value)
