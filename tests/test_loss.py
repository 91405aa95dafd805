from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from den._loss import LOG_FLOOR, batch_contrastive_loss, contrastive_loss, f_cdf, log_near_belief, pair_loss

X = np.concatenate([[0.0], np.logspace(-10, 10, 400), [1e30]])


@pytest.mark.parametrize("v", [1, 2, 3, 4, 5, 7, 10, 20, 33])
def test_f_cdf_matches_scipy(v):
    x = torch.tensor(X, dtype=torch.float64)
    np.testing.assert_allclose(f_cdf(x, v).numpy(), stats.f.cdf(X, 1, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("v", [1, 2, 3])
def test_f_cdf_float32_matches_scipy(v):
    x = torch.tensor(X, dtype=torch.float32)
    np.testing.assert_allclose(f_cdf(x, v).numpy(), stats.f.cdf(X.astype(np.float32), 1, v), atol=1e-6, rtol=0)


def test_v2_closed_form():
    x = torch.linspace(0, 50, 101, dtype=torch.float64)
    torch.testing.assert_close(f_cdf(x, 2), torch.sqrt(x / (x + 2)))


@pytest.mark.parametrize("v", [1, 2, 3, 6])
def test_gradient_is_density(v):
    x = torch.tensor([1e-3, 0.1, 1.0, 5.0, 100.0], dtype=torch.float64, requires_grad=True)
    f_cdf(x, v).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), stats.f.pdf(x.detach().numpy(), 1, v), rtol=1e-6)


@pytest.mark.parametrize("v", [1, 2, 5])
def test_finite_gradients_at_extremes(v):
    # through the squared distance of embedded points, as in training
    a = torch.tensor([[0.0, 0.0], [1e15, -1e15], [3.0, 4.0]], requires_grad=True)
    b = torch.tensor([[0.0, 0.0], [-1e15, 1e15], [3.0, 4.0 + 1e-20]])
    d2 = ((a - b) ** 2).sum(1)
    p = f_cdf(d2, v)
    assert torch.isfinite(p).all()
    p.sum().backward()
    assert torch.isfinite(a.grad).all()
    x = torch.tensor([float("inf")], requires_grad=True)
    out = f_cdf(x, v)
    assert out.item() == 1.0
    out.backward()
    assert torch.isfinite(x.grad).all()


def test_pair_loss_balances_near_and_far():
    d2 = torch.tensor([0.5, 0.5, 0.5, 9.0])
    near = torch.tensor([True, True, True, False])
    loss, counts = pair_loss(d2, near, n_components=2)
    p = torch.sqrt(d2 / (d2 + 2))
    expected = (3 * (1 - p[3]) + 1 * p[:3].sum()) / (4 * 4)
    torch.testing.assert_close(loss, expected)
    assert counts == {"near": 3, "far": 1}


def test_pair_loss_ignore_drops_terms():
    d2 = torch.tensor([0.01, 1e6, 4.0])  # close near pair, very distant near pair, far pair
    near = torch.tensor([True, True, False])
    loss, counts = pair_loss(d2, near, n_components=2, ignore=0.9)
    assert counts == {"near": 1, "far": 1}
    p = torch.sqrt(d2 / (d2 + 2))
    torch.testing.assert_close(loss, (1 * (1 - p[2]) + 1 * p[0]) / (3 * 2))


def test_pair_loss_min_dist_stops_pulling_close_near_pairs():
    d2 = torch.tensor([0.01, 4.0, 0.01], requires_grad=True)  # close near pair, distant near pair, close far pair
    near = torch.tensor([True, True, False])
    loss, _ = pair_loss(d2, near, n_components=2, min_dist=0.5)
    loss.backward()
    assert d2.grad[0] == 0  # closer than min_dist: no pull
    assert d2.grad[1] > 0  # farther: still pulled together
    assert d2.grad[2] < 0  # far pairs are pushed apart as before
    plain, _ = pair_loss(d2.detach(), near, n_components=2)
    floored, _ = pair_loss(d2.detach(), near, n_components=2, min_dist=0.5)
    assert floored > plain  # the close near pair counts as 0.5 apart


def test_pair_loss_nothing_kept_is_zero():
    loss, counts = pair_loss(torch.tensor([1e8]), torch.tensor([True]), n_components=2, ignore=0.5)
    assert loss.item() == 0 and counts == {"near": 0, "far": 0}


def test_pair_loss_log_near_term():
    d2 = torch.tensor([0.5, 3.0, 9.0])
    near = torch.tensor([True, True, False])
    loss, counts = pair_loss(d2, near, n_components=2, near_loss="log")
    p = torch.sqrt(d2 / (d2 + 2))
    near_terms = -torch.log1p(-(1 - LOG_FLOOR) * p[:2])
    torch.testing.assert_close(loss, (2 * (1 - p[2]) + 1 * near_terms.sum()) / (3 * 3))
    assert counts == {"near": 2, "far": 1}


def test_pair_loss_log_keeps_pulling_distant_near_pairs():
    """The paper's pull on a near pair 10 apart is ~d^-3; the log pull is ~1/d, over 10x stronger there."""
    grads = {}
    for kind in ("linear", "log"):
        d = torch.tensor([0.3, 10.0, 5.0], requires_grad=True)  # two near pairs, one far pair
        loss, _ = pair_loss(d**2, torch.tensor([True, True, False]), n_components=2, near_loss=kind)
        loss.backward()
        grads[kind] = d.grad
    assert grads["log"][1] > 10 * grads["linear"][1] > 0
    assert grads["log"][0] < 2 * grads["linear"][0]  # close pairs are pulled alike
    assert grads["log"][2] == grads["linear"][2]  # far pairs are pushed as before


def test_pair_loss_log_finite_at_infinity():
    d2 = torch.tensor([float("inf"), 0.0, float("inf")], requires_grad=True)
    loss, _ = pair_loss(d2, torch.tensor([True, True, False]), n_components=2, near_loss="log")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(d2.grad).all()
    # near terms -log(LOG_FLOOR) and 0, far term 0: weight n_far = 1 over 3 pairs x 3 kept
    torch.testing.assert_close(loss, torch.tensor(-math.log(LOG_FLOOR) / 9), rtol=1e-3, atol=1e-4)


def test_pair_loss_unknown_near_loss():
    with pytest.raises(ValueError, match="near_loss"):
        pair_loss(torch.tensor([1.0]), torch.tensor([True]), n_components=2, near_loss="square")


# --- the contrastive form ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1.0, 2.0, 3.0, 7.5])
def test_log_near_belief_is_the_f2_survival_function(dof):
    d2 = np.logspace(-6, 6, 50)
    got = log_near_belief(torch.tensor(d2, dtype=torch.float64), dof).numpy()
    np.testing.assert_allclose(np.exp(got), stats.f.sf(d2, 2, dof), rtol=1e-9)


def test_dof_two_is_cauchy():
    d2 = torch.linspace(0, 20, 41, dtype=torch.float64)
    torch.testing.assert_close(torch.exp(log_near_belief(d2, 2.0)), 1 / (1 + d2))


def test_contrastive_loss_value():
    d2_near = torch.tensor([0.5, 2.0], dtype=torch.float64)
    d2_far = torch.tensor([[4.0, 9.0], [1.0, 16.0]], dtype=torch.float64)
    w = lambda d2: 1 / (1 + d2)  # dof = 2
    expected = np.mean([-np.log(w(0.5) / (w(0.5) + w(4.0) + w(9.0))), -np.log(w(2.0) / (w(2.0) + w(1.0) + w(16.0)))])
    torch.testing.assert_close(contrastive_loss(d2_near, d2_far, dof=2.0), torch.tensor(expected, dtype=torch.float64))


def test_contrastive_loss_pulls_near_and_pushes_far():
    d2_near = torch.tensor([3.0], requires_grad=True)
    d2_far = torch.tensor([[0.5, 5.0]], requires_grad=True)
    contrastive_loss(d2_near, d2_far, dof=3.0).backward()
    assert d2_near.grad[0] > 0  # descending moves the near pair closer
    assert (d2_far.grad < 0).all()  # ... and the far partners apart
    assert d2_far.grad[0, 0] < d2_far.grad[0, 1]  # the far partner that landed close is pushed hardest


def _reference(out, far, dof, min_dist):
    b = out.shape[0] // 2
    d2n = ((out[:b] - out[b:]) ** 2).sum(1)
    d2f = ((out[:, None, :] - out[far][None]) ** 2).sum(2)
    d2f = d2f.masked_fill(far[None, :] == torch.arange(2 * b)[:, None], math.inf)
    return contrastive_loss(torch.cat([d2n, d2n]), d2f, dof=dof, min_dist=min_dist)


@pytest.mark.parametrize(("dof", "min_dist"), [(2.0, 0.0), (3.0, 0.0), (1.5, 0.4)])
def test_batch_contrastive_loss_matches_autograd(dof, min_dist):
    """The hand-written gradient is the gradient of the reference formula."""
    torch.manual_seed(0)
    out = torch.randn(2 * 9, 2, dtype=torch.float64, requires_grad=True)
    far = torch.tensor([0, 3, 3, 11, 17])  # repeats and rows that are anchors too
    fast = batch_contrastive_loss(out, far, dof=dof, min_dist=min_dist)
    (g_fast,) = torch.autograd.grad(fast, out)
    ref = _reference(out, far, dof, min_dist)
    (g_ref,) = torch.autograd.grad(ref, out)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(g_fast, g_ref)


def test_batch_contrastive_loss_gradcheck():
    torch.manual_seed(1)
    out = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    far = torch.tensor([1, 6, 2])
    assert torch.autograd.gradcheck(lambda o: batch_contrastive_loss(o, far, dof=3.0), (out,))
