"""Training steps replayed as a CUDA graph: one launch per step instead of about a hundred.

den's networks are small, so on a GPU a step's time is the launching of its kernels, not their
arithmetic (an H200: 3.4 ms per eager step whatever the batch size, 0.32 ms replayed; docs: benchmarks, "GPU").
A plan whose step is *capture-safe* (no host synchronisation, fixed shapes) splits it into
``stage(batch)``, the random draws and indices, made eagerly in the same order as an eager step, and
``compute(*staged)``, the loss from those tensors alone. :class:`GraphedSteps` runs the first
full-size steps eagerly (CUDA's warm-up), then captures ``compute`` + backward + the optimiser's step
once and replays it with each batch copied into the captured inputs. A batch of another shape (an
epoch's last, smaller one) runs eagerly on the same gradients. The steps and random draws are those
of the eager loop, so a seed trains as the eager loop does, up to floating-point order (``tests/test_gpu.py``:
the same map to rtol 1e-4). ``den.train.Runner.capture = None`` turns the graphs off for a session.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

#: eager full-size steps before the capture (on a side stream, as CUDA graphs ask)
WARMUP_STEPS = 3


def cuda_capture(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Capture ``step`` as a CUDA graph; returns a function that replays it and returns its loss tensor."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss

    return replay


class GraphedSteps:
    """The steps of ``plan`` with ``optimizer``: eager, then replayed from one capture.

    Parameters
    ----------
    plan
        A plan with ``stage(batch) -> tuple`` and ``compute(*staged) -> loss`` (see the module).
    optimizer
        Its optimiser; on CUDA made with ``capturable=True`` and a tensor learning rate.
    capture
        Turns a step function into a replay function: :func:`cuda_capture`, or in tests a
        function that calls the step each time (the same buffers, no graph).
    """

    def __init__(self, plan, optimizer: torch.optim.Optimizer, *, capture=cuda_capture):
        self.plan, self.optimizer, self.capture = plan, optimizer, capture
        self.inputs: tuple | None = None  # the captured step's input buffers
        self.replay = None
        self.warm = 0

    def step(self, batch) -> torch.Tensor:
        """One optimisation step on ``batch``; returns its loss (a tensor on the device)."""
        staged = self.plan.stage(batch)
        if self.replay is None and self.warm < WARMUP_STEPS:
            self.warm += _is_full(staged, self.plan)
            return self._side_stream(staged)
        if self.replay is None and self.capture is not None and _is_full(staged, self.plan):
            self._try_capture(staged)
        if self.replay is None or not _same_shapes(staged, self.inputs):
            return self._eager(staged)
        for buffer, t in zip(self.inputs, staged, strict=True):
            if buffer is not None:
                buffer.copy_(t)
        return self.replay()

    def _try_capture(self, staged: tuple) -> None:
        self.inputs = tuple(None if t is None else t.clone() for t in staged)
        self.optimizer.zero_grad(set_to_none=True)  # the capture allocates the gradients it writes
        try:
            self.replay = self.capture(lambda: self._eager(self.inputs))  # recorded now, replayed from here on
        except RuntimeError as err:  # e.g. an operation this torch cannot capture: train on, eagerly
            self.capture, self.inputs = None, None
            warnings.warn(f"Training eagerly: the CUDA graph capture of a step failed ({err}).", stacklevel=4)

    def _eager(self, staged: tuple) -> torch.Tensor:
        # after the capture the gradients are the graph's buffers: zero them in place, never drop them (at the
        # capture itself they are None, so the captured step writes them; a test's stand-in replay zeroes them)
        self.optimizer.zero_grad(set_to_none=self.replay is None)
        loss = self.plan.compute(*staged)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _side_stream(self, staged: tuple) -> torch.Tensor:
        device = staged[0].device
        if device.type != "cuda":
            return self._eager(staged)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            loss = self._eager(staged)
        torch.cuda.current_stream(device).wait_stream(side)
        return loss


def _is_full(staged: tuple, plan) -> bool:
    return staged[0].shape[0] == plan.full_rows


def _same_shapes(a: tuple, b: tuple) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.shape == y.shape)
        for x, y in zip(a, b, strict=True)
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's rate; a tensor rate (read by a captured step) is filled in place."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
