"""The runner's loop: the learning-rate schedule, the loss history and the non-finite check."""

from __future__ import annotations

import math

import pytest
import torch

from den.train import Runner, _runner


class _Plan:
    """A linear model fitted to a fixed target in ``n_batches`` batches per epoch; ``poison`` makes step N's loss NaN."""

    data_parallel = False

    def __init__(self, n_batches: int = 3, poison: int | None = None):
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        self.x, self.y = torch.randn(32, 4), torch.randn(32, 1)
        self.n_batches, self.poison, self.calls = n_batches, poison, 0

    def modules(self):
        return [self.net]

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return self.n_batches

    def batches(self):
        return iter(torch.arange(32).chunk(self.n_batches))

    def loss(self, rows):
        self.calls += 1
        loss = ((self.net(self.x[rows]) - self.y[rows]) ** 2).mean()
        return loss * math.nan if self.calls == self.poison else loss


def _runner_for(n_epochs: int, lr: float = 0.1) -> Runner:
    return Runner(n_epochs=n_epochs, learning_rate=lr, device=torch.device("cpu"), progress_bar=False, desc="test")


def test_cosine_schedule_spans_every_step(monkeypatch):
    seen = []
    make = _runner.adam

    def recording_adam(params, learning_rate, device, **kwargs):
        opt = make(params, learning_rate, device, **kwargs)
        step = opt.step
        opt.step = lambda: (seen.append(float(opt.param_groups[0]["lr"])), step())[1]
        return opt

    monkeypatch.setattr(_runner, "adam", recording_adam)
    history = _runner_for(4).run(_Plan(n_batches=3))
    total = 12
    assert seen == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    assert len(history) == 4
    assert history[-1] < history[0]  # it learns


def test_history_is_the_mean_loss_of_each_epoch():
    plan = _Plan(n_batches=4)
    history = _runner_for(1, lr=0.0).run(plan)  # no step moves the weights: the mean of four fixed losses
    with torch.no_grad():
        losses = [float(plan.loss(rows)) for rows in plan.batches()]
    assert history == pytest.approx([sum(losses) / 4], rel=1e-6)


def test_non_finite_loss_stops_training_with_advice():
    plan = _Plan(n_batches=3, poison=5)
    with pytest.raises(FloatingPointError, match=r"test loss became non-finite in epoch 2.*lower `learning_rate`"):
        _runner_for(3).run(plan)
    assert plan.calls == 6  # read at the end of the epoch (no host sync per step), not later
