"""Training plans: what is trained, on which batches, with which loss."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from den._loss import batch_contrastive_loss, pair_loss
from den._utils import PicklableGenerators

from ._sources import TensorSource


class EmbeddingPlan(PicklableGenerators):
    """The Siamese embedding: near pairs pulled, far pairs pushed, optional label head.

    Parameters
    ----------
    body
        The trainable network (frozen front excluded); it maps source rows to the map.
    source
        Rows of network inputs (:mod:`den.train._sources`).
    sampler
        :class:`den._pairs.PairSampler`.
    loss
        ``"contrastive"`` (every row is an anchor; its near partner against the batch's
        shared far partners) or ``"paper"`` (the paper's: near term ``p``, far term ``1 - p``).
    dof
        Degrees of freedom: F(2, dof) for the contrastive loss, F(1, dof) for the paper's.
    min_dist, ignore
        See :func:`den._loss.contrastive_loss` and :func:`den._loss.pair_loss`.
    noise
        Standard deviation of Gaussian noise added to every input row in training.
    label_head, labels, label_weight
        A head from the map to label logits and each cell's label code (``-1`` unknown):
        adds ``label_weight x (labelled share) x`` cross-entropy on the batch's labelled rows.
    generator
        Seeded torch generator for the noise.
    """

    #: trained data-parallel inside a process group (:class:`den.train.Runner`)
    data_parallel = True

    def __init__(
        self,
        body: nn.Module,
        source,
        sampler,
        *,
        loss: str,
        dof: float,
        min_dist: float,
        ignore: float,
        noise: float,
        generator: torch.Generator,
        label_head: nn.Module | None = None,
        labels: np.ndarray | None = None,
        label_weight: float = 1.0,
    ):
        self.body, self.source, self.sampler = body, source, sampler
        self.kind, self.dof, self.min_dist, self.ignore, self.noise = loss, dof, min_dist, ignore, noise
        self.generator, self.label_head, self.label_weight = generator, label_head, label_weight
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64, device=source.device)
        self.labelled_share = 0.0 if labels is None else float((np.asarray(labels) >= 0).mean())

    def modules(self) -> list[nn.Module]:
        return [self.body] + ([self.label_head] if self.label_head is not None else [])

    def wrap(self, fn) -> None:
        """Replace each trained module ``m`` by ``fn(m)`` (the data-parallel wrapper)."""
        self.body = fn(self.body)
        if self.label_head is not None:
            self.label_head = fn(self.label_head)

    def reseed(self, generator: torch.Generator) -> None:
        """Draw noise and far partners from ``generator`` (each rank its own)."""
        self.generator = generator
        self.sampler.reseed(generator)

    def to(self, device: torch.device) -> None:
        """Move the plan's modules, source and labels to ``device``."""
        self.wrap(lambda m: m.to(device))
        self.source.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Steps per epoch on each of ``world_size`` ranks (each takes its own ``batch_size`` pairs a step)."""
        return self.sampler.steps_per_epoch(world_size)

    def batches(self, rank: int = 0, world_size: int = 1):
        return self.sampler.epoch(rank, world_size)

    @property
    def capture_safe(self) -> bool:
        """Whether :meth:`compute` can be captured as a CUDA graph (:mod:`den.train._graphs`).

        The contrastive loss of an MLP body (the layers checked on a GPU) on rows held on the
        device, without a label head (its unlabelled-batch check reads the device).
        """
        mlp = all(isinstance(m, (nn.Sequential, nn.Linear, nn.ReLU)) for m in self.body.modules())
        return mlp and self.kind == "contrastive" and self.label_head is None and isinstance(self.source, TensorSource)

    @property
    def full_rows(self) -> int:
        """Rows of a full batch (both ends of ``batch_size`` near pairs)."""
        return 2 * self.sampler.batch_size

    def stage(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A batch's rows, far partners and input noise (drawn here, after the sampler's far partners)."""
        eps = None
        if self.noise > 0:
            gen = self.generator
            shape = (len(batch.rows), *self.source.row_shape)
            eps = torch.randn(shape, generator=gen, dtype=torch.float32, device=gen.device)  # sources are float32
        return batch.rows, batch.far, eps

    def inputs(self, rows: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """The network inputs of ``rows``, with the staged noise ``eps`` (scaled by ``noise``) added."""
        x = self.source.gather(rows)
        if eps is not None:
            x = x.add_(eps.to(x.device), alpha=self.noise)  # gather returned a copy
        return x

    def compute(self, rows: torch.Tensor, far: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """The loss of staged rows, far partners and noise."""
        out = self.body(self.inputs(rows, eps))
        if self.kind == "contrastive":
            loss = batch_contrastive_loss(out, far.to(out.device), dof=self.dof, min_dist=self.min_dist)
        else:
            b = len(rows) // 2
            d2_near = ((out[:b] - out[b:]) ** 2).sum(1)
            far = far.to(out.device)
            d2_far = ((out[:b, None, :] - out[far]) ** 2).sum(2).reshape(-1)
            is_near = torch.arange(b + len(d2_far), device=out.device) < b
            loss, _ = pair_loss(
                torch.cat([d2_near, d2_far]),
                is_near,
                n_components=int(self.dof),
                ignore=self.ignore,
                min_dist=self.min_dist,
            )
        if self.label_head is not None:
            loss = loss + self._label_loss(out, rows)
        return loss

    def loss(self, batch) -> torch.Tensor:
        return self.compute(*self.stage(batch))

    def _label_loss(self, out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        y = self.labels[rows.to(self.labels.device)]
        known = y >= 0
        if not bool(known.any()):  # a zero that still reaches the head (data-parallel ranks must agree)
            return self.label_head(out[:1]).sum() * 0
        ce = nn.functional.cross_entropy(self.label_head(out[known]), y[known])
        return self.label_weight * self.labelled_share * ce


class ClassifierPlan:
    """Class-balanced cross-entropy of ``net`` on labelled rows (cluster head, fine-tuning, label head).

    Parameters
    ----------
    net
        Network from source rows to logits.
    source
        Rows of network inputs.
    labels
        Integer class of every row (``0 .. n_classes - 1``).
    batch_size
        Rows per step.
    generator
        Seeded torch generator for the batch order.
    """

    #: small: every rank trains it whole (:class:`den.train.Runner`)
    data_parallel = False

    def __init__(self, net: nn.Module, source, labels: np.ndarray, *, batch_size: int, generator: torch.Generator):
        self.net, self.source, self.batch_size, self.generator = net, source, batch_size, generator
        labels = np.asarray(labels, dtype=np.int64)
        n_classes = int(labels.max()) + 1
        counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        weight = len(labels) / (n_classes * np.maximum(counts, 1))
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32, device=source.device))
        self.y = torch.as_tensor(labels, device=source.device)

    def modules(self) -> list[nn.Module]:
        return [self.net]

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Steps per epoch (trained whole on every rank, whatever ``world_size``)."""
        return math.ceil(len(self.y) / self.batch_size)

    def batches(self):
        order = torch.randperm(len(self.y), generator=self.generator)
        return order.split(self.batch_size)

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.net(self.source.gather(idx)), self.y[idx.to(self.y.device)])


def fit_classifier(
    net: nn.Module,
    inputs,
    labels: np.ndarray,
    *,
    n_epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
    progress_bar: bool = False,
    desc: str = "DEN head",
) -> list[float]:
    """Train ``net`` on ``inputs`` (array or tensor, one row per cell) to predict ``labels``; returns the history."""
    from ._runner import Runner
    from ._sources import TensorSource

    net.to(device)
    generator = torch.Generator().manual_seed(seed)
    plan = ClassifierPlan(net, TensorSource(inputs, device), labels, batch_size=batch_size, generator=generator)
    runner = Runner(n_epochs=n_epochs, learning_rate=learning_rate, device=device, progress_bar=progress_bar, desc=desc)
    return runner.run(plan)
