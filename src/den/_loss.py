"""The F-distribution pair losses of DEN: the paper's and its contrastive form.

Both read a pair's squared map distance ``d2`` through the F distribution:
``p = F_cdf(d2; d1, d2_dof)`` is the network's belief that the pair is *far*,
``1 - p`` that it is near. The paper uses F(1, n_components) and the terms
``p`` (near pairs) and ``1 - p`` (far pairs). The contrastive loss uses
F(2, dof), whose survival function ``(1 + 2 d2 / dof) ** (-dof / 2)`` is the
Student-t kernel of t-SNE (dof = 2 gives Cauchy's ``1 / (1 + d2)``; smaller
dof, heavier tails), and for each near pair ``(i, j)`` with far partners ``k``
the term ``-log(w_ij / (w_ij + sum_k w_ik))`` with ``w = 1 - p``.
"""

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


#: the contrastive loss's default F(2, dof) tail, chosen on the benchmark panel (dof = 2 is Cauchy's kernel)
CONTRASTIVE_DOF = 3.0


def kernel_dof(loss: str, n_components: int, dof: float | None) -> tuple[int, float]:
    """Degrees of freedom ``(d1, d2)`` of the F distribution a loss reads distances with.

    The paper's loss: ``(1, n_components)``; the contrastive loss: ``(2, dof)``, by default
    ``(2, CONTRASTIVE_DOF)``.
    """
    if loss == "paper":
        return 1, float(n_components)
    return 2, float(CONTRASTIVE_DOF if dof is None else dof)


def log_near_belief(d2: torch.Tensor, dof: float) -> torch.Tensor:
    """``log(1 - F_cdf(d2; 2, dof)) = -(dof / 2) * log1p(2 d2 / dof)``, exact and smooth at 0."""
    return -(dof / 2) * torch.log1p((2 / dof) * d2)


def contrastive_loss(d2_near: torch.Tensor, d2_far: torch.Tensor, *, dof: float, min_dist: float = 0.0) -> torch.Tensor:
    """The contrastive form of the F-distribution loss, averaged over near pairs.

    For near pair ``a`` with squared distance ``d2_near[a]`` and its far partners
    ``d2_far[a, :]``: ``-log(w_near / (w_near + sum w_far))`` with ``w = 1 - F_cdf(d2; 2, dof)``.
    The near-pair part is the log pull ``-log(1 - p)``; the far pairs push through the
    normaliser, strongest for far partners that landed close (t-SNE's repulsion,
    sampled). ``min_dist`` floors near-pair distances (no pull below it).

    Parameters
    ----------
    d2_near
        Squared map distances of the near pairs, shape ``(n,)``.
    d2_far
        Squared map distances from each near pair's anchor to its far partners, ``(n, m)``.
    dof
        Denominator degrees of freedom of F(2, dof): the kernel's tail.
    min_dist
        Map distance below which near pairs are no longer pulled together.
    """
    if min_dist > 0:
        d2_near = d2_near.clamp(min=min_dist**2)
    s_near = log_near_belief(d2_near, dof)
    s_far = log_near_belief(d2_far, dof)
    return (torch.logaddexp(s_near, torch.logsumexp(s_far, 1)) - s_near).mean()


def batch_contrastive_loss(out: torch.Tensor, far: torch.Tensor, *, dof: float, min_dist: float = 0.0) -> torch.Tensor:
    """:func:`contrastive_loss` of one batch from the map coordinates, with a hand-written gradient.

    ``out`` holds the map positions of ``2 b`` rows, ``out[i]`` and ``out[i + b]`` a near
    pair; every row is an anchor against its near partner and the shared far partners
    ``out[far]`` (a row is never its own far partner). The same value and gradient as
    :func:`contrastive_loss` on those distances, in about a third of the operations: the
    belief ``w = q ** (dof / 2)`` with ``q = 1 / (1 + 2 d2 / dof)`` needs no logarithm,
    and ``d w / d d2 = -w q``.
    """
    return _BatchContrastive.apply(out, far, float(dof), float(min_dist))


def _power(q: torch.Tensor, half: float) -> torch.Tensor:
    """``q ** half``, through cheaper operations for the common exponents."""
    if half == 1:
        return q
    if half == 1.5:
        return q.sqrt().mul_(q)
    return q.pow(half)


def add_rows(target: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> None:
    """``target[index[i]] += rows[i]`` in place, summing repeated indices in a fixed order.

    On CPU this is ``index_add_``. CUDA's ``index_add_`` sums repeated indices with atomic
    additions in a varying order, so two runs with one seed would drift apart; there a
    one-hot matrix product does the same sum in a fixed order.
    """
    if target.is_cuda:
        one_hot = torch.nn.functional.one_hot(index, target.shape[0]).to(target.dtype)
        target.addmm_(one_hot.T, rows)
    else:
        target.index_add_(0, index, rows)


class _BatchContrastive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: torch.Tensor, far: torch.Tensor, dof: float, min_dist: float) -> torch.Tensor:
        _n, b = out.shape[0], out.shape[0] // 2
        c, half = 2.0 / dof, dof / 2.0
        partner = torch.cat([out[b:], out[:b]])
        diff_near = out - partner
        d2_near = (diff_near * diff_near).sum(1)
        floored = d2_near < min_dist**2
        q_near = (1 + c * d2_near.clamp_min(min_dist**2)).reciprocal_()
        neg = out[far]
        # 1 + c d2 = (1 + c |o|^2) + c |n|^2 - 2 c o.n, built in one matrix
        base = (1 + c * (out * out).sum(1))[:, None] + (c * (neg * neg).sum(1))[None, :]
        t = torch.addmm(base, out, neg.T, alpha=-2 * c).clamp_min_(1)
        # a row is never its own far partner; index_fill_ takes the value as a kernel argument, where
        # t[far, j] = inf would copy it from the host (a sync per step, and no CUDA graph capture)
        m = len(far)
        t.view(-1).index_fill_(0, far * m + torch.arange(m, device=out.device), math.inf)
        q = t.reciprocal_()
        w, w_near = _power(q, half), _power(q_near, half)
        z = w_near + w.sum(1)
        ctx.save_for_backward(out, neg, far, diff_near, q_near, w_near, floored, q, w, z)
        return (torch.log(z) - torch.log(w_near)).mean()

    @staticmethod
    def backward(ctx, grad):
        out, neg, far, diff_near, q_near, w_near, floored, q, w, z = ctx.saved_tensors
        n, b = out.shape[0], out.shape[0] // 2
        scale = grad / n
        coef = (w * q).mul_((-2 * scale / z)[:, None])  # 2 dL / d d2(row, far partner)
        g_near = torch.where(floored, torch.zeros_like(q_near), scale * q_near * (1 - w_near / z))
        g_pair = g_near[:b] + g_near[b:]  # each near pair's distance serves both of its rows
        g_out = torch.addmm(coef.sum(1)[:, None] * out, coef, neg, alpha=-1)
        g_neg = torch.addmm(coef.sum(0)[:, None] * neg, coef.T, out, alpha=-1)
        add_rows(g_out, far, g_neg)
        pull = 2 * g_pair[:, None] * diff_near[:b]
        g_out[:b] += pull
        g_out[b:] -= pull
        return g_out, None, None, None
