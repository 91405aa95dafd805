"""Training loops: the Siamese embedding and the cluster classifier."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._loss import pair_loss
from ._pairs import far_pairs
from ._utils import progress


def train_embedding(
    net: nn.Module,
    inputs,
    rep: np.ndarray,
    near: tuple[np.ndarray, np.ndarray],
    *,
    n_far: int,
    uniform_far: float,
    n_components: int,
    n_epochs: int,
    batch_size: int,
    learning_rate: float,
    ignore: float,
    min_dist: float,
    log_pull: float,
    input_noise: float,
    rng: np.random.Generator,
    device: torch.device,
    progress_bar: bool,
) -> list[float]:
    """Train ``net`` on near and far pairs; return the mean loss of each epoch.

    ``inputs`` is either a float32 tensor already on ``device`` (rows are
    gathered directly) or a callable mapping row indices to such a tensor (used
    for gene-level input, densified per mini-batch). An epoch is one pass over
    all near pairs plus ``n_far`` freshly drawn far pairs per cell (a share
    ``uniform_far`` of them drawn uniformly, the rest weighted by distance).
    The learning rate follows a cosine decay from ``learning_rate`` to 0 over
    all steps. In the first ``log_pull`` share of the epochs near pairs are pulled by
    ``-log(1 - p)``, afterwards by the paper's ``p`` (see :func:`den._loss.pair_loss`).
    Gaussian noise of ``input_noise`` times the typical near-pair spacing (see
    :func:`noise_scale`) is added to every input row in training.
    """
    gather = (lambda idx: inputs[torch.from_numpy(idx).to(device)]) if torch.is_tensor(inputs) else inputs
    sigma, noise = 0.0, None
    if input_noise > 0:  # draws from rng only when used: input_noise=0 trains exactly as before it existed
        sigma = noise_scale(gather, near, rng) * input_noise
        noise = torch.Generator(device=device).manual_seed(int(rng.integers(2**63)))
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=learning_rate)
    near_i, near_j = near
    n_cells = rep.shape[0]
    total_steps = n_epochs * math.ceil((len(near_i) + n_far * n_cells) / batch_size)
    step = 0
    history: list[float] = []
    net.train()
    bar = progress(range(n_epochs), desc="DEN embedding", enabled=progress_bar)
    n_log = log_pull_epochs(log_pull, n_epochs)
    for epoch in bar:
        near_loss = "log" if epoch < n_log else "linear"
        far_i, far_j = far_pairs(rep, n_far, rng)
        uniform = rng.random(len(far_i)) < uniform_far
        partner = rng.integers(0, n_cells - 1, size=int(uniform.sum()))
        far_j[uniform] = partner + (partner >= far_i[uniform])  # never the cell itself
        i = np.concatenate([near_i, far_i])
        j = np.concatenate([near_j, far_j])
        is_near = np.concatenate([np.ones(len(near_i), bool), np.zeros(len(far_i), bool)])
        order = rng.permutation(len(i))
        total, n_batches = 0.0, math.ceil(len(order) / batch_size)
        for b in range(n_batches):
            sel = order[b * batch_size : (b + 1) * batch_size]
            x = gather(np.concatenate([i[sel], j[sel]]))
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=noise, device=device, dtype=x.dtype)
            out = net(x)
            a, c = out[: len(sel)], out[len(sel) :]
            d2 = ((a - c) ** 2).sum(1)
            near_mask = torch.from_numpy(is_near[sel]).to(device)
            loss, _ = pair_loss(
                d2, near_mask, n_components=n_components, ignore=ignore, min_dist=min_dist, near_loss=near_loss
            )
            if not torch.isfinite(loss):
                msg = (
                    "The DEN loss became non-finite. Check the input for extreme values "
                    "(log-normalise counts) or lower `learning_rate`."
                )
                raise FloatingPointError(msg)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            step += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append(total / n_batches)
        if progress_bar:
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    net.eval()
    return history


def log_pull_epochs(log_pull: float, n_epochs: int) -> int:
    """How many epochs, from the first, pull near pairs by ``-log(1 - p)``."""
    return min(n_epochs, math.ceil(log_pull * n_epochs))


def noise_scale(gather, near: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, n_sample: int = 2048) -> float:
    """Median input distance of near pairs per input dimension (``median / sqrt(n_dims)``).

    Noise of this standard deviation in every dimension moves a row about as far as
    its typical near partner lies away, so ``input_noise`` is relative to the data's own
    neighbour spacing whatever its units. Estimated on ``n_sample`` random near pairs.
    """
    near_i, near_j = near
    pick = rng.choice(len(near_i), size=min(n_sample, len(near_i)), replace=False)
    a, b = gather(near_i[pick]), gather(near_j[pick])
    return float(torch.linalg.vector_norm(a - b, dim=1).median()) / math.sqrt(a.shape[1])


def train_classifier(
    net: nn.Module,
    inputs: torch.Tensor,
    labels: np.ndarray,
    *,
    n_epochs: int,
    batch_size: int,
    learning_rate: float,
    rng: np.random.Generator,
    device: torch.device,
    progress_bar: bool,
    desc: str,
) -> list[float]:
    """Fit ``net`` to integer ``labels`` with class-balanced cross-entropy.

    ``inputs`` is a tensor on ``device`` or a callable mapping row indices to one.
    """
    gather = (lambda idx: inputs[torch.from_numpy(idx).to(device)]) if torch.is_tensor(inputs) else inputs
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weight = torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=learning_rate)
    history: list[float] = []
    net.train()
    for _ in progress(range(n_epochs), desc=desc, enabled=progress_bar):
        order = rng.permutation(len(labels))
        total, n_batches = 0.0, math.ceil(len(order) / batch_size)
        for b in range(n_batches):
            sel = order[b * batch_size : (b + 1) * batch_size]
            loss = criterion(net(gather(sel)), y[torch.from_numpy(sel).to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append(total / n_batches)
    net.eval()
    return history


@torch.inference_mode()
def predict(net: nn.Module, inputs, *, device: torch.device, batch_size: int = 16384) -> np.ndarray:
    """Apply ``net`` row-block by row-block; ``inputs`` is a tensor or an iterator of numpy blocks."""
    net.eval()
    blocks = inputs.split(batch_size) if torch.is_tensor(inputs) else inputs
    out = [net(torch.as_tensor(b, device=device)).float().cpu().numpy() for b in blocks]
    return np.concatenate(out).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)
