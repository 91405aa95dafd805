"""Steps replayed from one capture (CUDA graphs) train exactly as the eager loop; checked on CPU with a stand-in capture.

The stand-in calls the captured step function on the same input buffers at every replay,
so every part of :class:`den.train._graphs.GraphedSteps` but CUDA's own capture runs here;
``tests/test_gpu.py`` compares real CUDA graphs with eager steps on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from den._pairs import PairSampler
from den.nn import MLPEncoder
from den.train import EmbeddingPlan, Runner, TensorSource, _graphs


def _plan(*, n: int = 300, batch_size: int = 64, noise: float = 0.1, **kwargs) -> EmbeddingPlan:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 10)).astype(np.float32)
    near = (np.arange(n), (np.arange(n) + 1) % n)  # 300 pairs: 4 full batches and one of 44 per epoch
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    body = MLPEncoder(10, 2, (16,), None).body
    sampler = PairSampler(near, batch_size=batch_size, n_far=8, far_rule="shared", generator=gen)
    options = {
        "loss": "contrastive",
        "dof": 1.0,
        "min_dist": 0.0,
        "ignore": 1.0,
        "noise": noise,
        "generator": gen,
    } | kwargs
    return EmbeddingPlan(body, TensorSource(data, torch.device("cpu")), sampler, **options)


class _Replays:
    """A stand-in capture: the replay calls the step function; counts captures and replays."""

    def __init__(self):
        self.captures = self.replays = 0

    def __call__(self, step):
        self.captures += 1

        def replay():
            self.replays += 1
            return step()

        return replay


def _train(plan: EmbeddingPlan, capture, n_epochs: int = 3) -> tuple[list[float], list[torch.Tensor]]:
    runner = Runner(n_epochs=n_epochs, learning_rate=0.05, device=torch.device("cpu"), progress_bar=False, desc="t")
    runner.capture = capture
    history = runner.run(plan)
    return history, [p.detach().clone() for p in plan.body.parameters()]


@pytest.mark.parametrize("noise", [0.1, 0.0])
def test_replayed_steps_train_exactly_as_eager_steps(noise):
    eager_history, eager_weights = _train(_plan(noise=noise), None)
    replays = _Replays()
    history, weights = _train(_plan(noise=noise), replays)
    assert replays.captures == 1
    assert replays.replays == 3 * 4 - _graphs.WARMUP_STEPS  # every full batch after the warm-up; last ones eager
    assert history == eager_history
    assert all(torch.equal(a, b) for a, b in zip(weights, eager_weights, strict=True))
    assert not torch.equal(weights[0], _plan().body[0].weight)  # it trained


def test_a_failed_capture_warns_and_trains_eagerly():
    def failing(step):
        raise RuntimeError("operation not permitted when stream is capturing")

    eager_history, eager_weights = _train(_plan(), None)
    with pytest.warns(UserWarning, match="Training eagerly: the CUDA graph capture of a step failed"):
        history, weights = _train(_plan(), failing)
    assert history == eager_history
    assert all(torch.equal(a, b) for a, b in zip(weights, eager_weights, strict=True))


@pytest.mark.parametrize(
    "change", [{"loss": "paper", "ignore": 1.0}, {"label_head": torch.nn.Linear(2, 3), "labels": np.zeros(300)}]
)
def test_plans_that_read_the_device_are_not_captured(change):
    plan = _plan(**change)
    assert not plan.capture_safe
    replays = _Replays()
    _train(plan, replays, n_epochs=1)
    assert replays.captures == 0


def test_only_mlp_bodies_are_captured():
    plan = _plan()
    assert plan.capture_safe
    plan.body = torch.nn.Sequential(plan.body, torch.nn.BatchNorm1d(2))  # layers not checked on a GPU
    assert not plan.capture_safe


def test_cpu_runs_are_never_captured_by_default():
    runner = Runner(n_epochs=1, learning_rate=0.05, device=torch.device("cpu"), progress_bar=False, desc="t")
    assert runner.capture == "cuda"
    assert runner._capture(_plan(), world=1) is None


def test_a_tensor_learning_rate_is_filled_in_place():
    rate = torch.tensor(0.5)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=rate, fused=True)
    _graphs.set_learning_rate(opt, 0.25)
    assert opt.param_groups[0]["lr"] is rate and float(rate) == 0.25
