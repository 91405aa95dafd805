"""The F-distribution pair loss of DEN (METHOD.md §3)."""

from __future__ import annotations

import math

import torch

#: ``near_loss="log"`` uses ``-log(1 - (1 - LOG_FLOOR) p)``, finite for ``p = 1``
LOG_FLOOR = 1e-4


def f_cdf(x: torch.Tensor, n_components: int) -> torch.Tensor:
    """CDF of the F(1, ``n_components``) distribution at ``x >= 0``.

    F(1, v) is the square of Student's t with v degrees of freedom, so
    ``F_cdf(x; 1, v) = P(|T| < sqrt(x))``. For integer v this has a finite
    closed form in ``theta = arctan(sqrt(x / v))`` (Abramowitz & Stegun 26.7.3/4),
    computed here with ``sin(theta) = sqrt(x / (x + v))`` and
    ``cos(theta)^2 = v / (x + v)``, which is exact, differentiable and finite
    for ``x`` in ``[0, inf)``.

    Parameters
    ----------
    x
        Squared distances, any shape, non-negative.
    n_components
        Degrees of freedom of the denominator, i.e. the embedding dimension.

    Returns
    -------
    Tensor of the same shape as ``x`` with values in ``[0, 1]``.
    """
    return _FCdf.apply(x, int(n_components))


def f_pdf(x: torch.Tensor, v: int) -> torch.Tensor:
    """Density of F(1, v) at ``x`` (``x`` is clamped away from 0, where it is infinite)."""
    x = x.clamp_min(torch.finfo(x.dtype).tiny ** 0.5)
    log_beta = math.lgamma(0.5) + math.lgamma(v / 2) - math.lgamma((v + 1) / 2)
    log_pdf = -0.5 * torch.log(x) - (v + 1) / 2 * torch.log1p(x / v) - 0.5 * math.log(v) - log_beta
    return torch.exp(log_pdf)


def _f_cdf_forward(x: torch.Tensor, v: int) -> torch.Tensor:
    x = x.clamp_min(0)
    denom = x + v
    # for x = inf both ratios are well defined: sin -> 1, cos^2 -> 0
    sin = torch.where(torch.isinf(x), torch.ones_like(x), torch.sqrt(x / denom))
    cos2 = torch.where(torch.isinf(x), torch.zeros_like(x), v / denom)
    if v % 2 == 0:
        # sin(theta) * [1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(v-2)]
        term = torch.ones_like(x)
        total = torch.ones_like(x)
        for j in range(1, v // 2):
            term = term * cos2 * (2 * j - 1) / (2 * j)
            total = total + term
        return (sin * total).clamp(0, 1)
    # odd v: 2/pi * [theta + sin(theta) (cos + 2/3 cos^3 + ... up to cos^(v-2))]
    theta = torch.atan2(sin, torch.sqrt(cos2))
    if v == 1:
        return (2 / math.pi * theta).clamp(0, 1)
    cos = torch.sqrt(cos2)
    term = cos
    total = cos.clone()
    for j in range(1, (v - 1) // 2):
        term = term * cos2 * (2 * j) / (2 * j + 1)
        total = total + term
    return (2 / math.pi * (theta + sin * total)).clamp(0, 1)


class _FCdf(torch.autograd.Function):
    """Closed-form forward, density as gradient (finite at 0 once chained with d x / d f)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, v: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.v = v
        return _f_cdf_forward(x, v)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad = f_pdf(x, ctx.v)
        grad = torch.where(torch.isinf(x), torch.zeros_like(grad), grad)
        return grad_out * grad, None


def pair_loss(
    d2: torch.Tensor,
    is_near: torch.Tensor,
    *,
    n_components: int,
    ignore: float = 1.0,
    min_dist: float = 0.0,
    near_loss: str = "linear",
) -> tuple[torch.Tensor, dict[str, int]]:
    """Balanced F-distribution loss over a batch of pairs.

    With ``p = F_cdf(d2)``, far pairs contribute ``1 - p``; near pairs contribute ``p``
    (``near_loss="linear"``, the paper's loss) or ``-log(1 - p)`` (``"log"``). The
    linear pull fades as ``d ** -(n_components + 1)`` once a near pair is far apart on
    the map, so a cell placed between populations stays there; the log pull fades as ``1 / d``.
    Pairs whose ``p`` (near) or ``1 - p`` (far) is at or above ``ignore`` are dropped
    (``ignore >= 1`` keeps all). A near pair closer than ``min_dist`` counts as that far
    apart, so it is not pulled closer. Near and far terms are balanced so that each
    kind weighs the same whatever their counts::

        loss = (n_near * sum(far) + n_far * sum(near)) / (batch_size * n_kept)

    Parameters
    ----------
    d2
        Squared embedding distances of the pairs, shape ``(batch_size,)``.
    is_near
        Boolean mask, ``True`` for near pairs.
    n_components
        Embedding dimension (degrees of freedom of the F distribution).
    ignore
        Threshold above which a term is dropped.
    min_dist
        Embedding distance below which near pairs are no longer pulled together.
    near_loss
        ``"linear"`` or ``"log"``: the near-pair term, as above.

    Returns
    -------
    The scalar loss and the counts of kept near and far terms.
    """
    if min_dist > 0:
        d2 = torch.where(is_near, d2.clamp(min=min_dist**2), d2)
    p = f_cdf(d2, n_components)
    if near_loss not in ("linear", "log"):
        msg = f"near_loss must be 'linear' or 'log', not {near_loss!r}."
        raise ValueError(msg)
    paper_terms = torch.where(is_near, p, 1 - p)
    terms = paper_terms
    if near_loss == "log":  # capped at -log(LOG_FLOOR) where p = 1 (a near pair infinitely far apart)
        terms = torch.where(is_near, -torch.log1p(-(1 - LOG_FLOOR) * p), paper_terms)
    keep = paper_terms < ignore if ignore < 1 else torch.ones_like(is_near)
    near = keep & is_near
    far = keep & ~is_near
    n_near = int(near.sum())
    n_far = int(far.sum())
    n_kept = n_near + n_far
    if n_kept == 0:
        return (terms * 0).sum(), {"near": 0, "far": 0}
    zero = terms.new_zeros(())
    sum_near = torch.where(near, terms, zero).sum()
    sum_far = torch.where(far, terms, zero).sum()
    loss = (n_near * sum_far + n_far * sum_near) / (d2.shape[0] * n_kept)
    return loss, {"near": n_near, "far": n_far}
