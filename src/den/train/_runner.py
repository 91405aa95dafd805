"""The runner: one optimisation loop for every training plan."""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Iterator

import torch

from den._utils import progress

from ._graphs import GraphedSteps, cuda_capture, set_learning_rate

#: torch threads used by training loops on CPU (see :func:`training_threads`)
TRAINING_THREADS = 1


@contextlib.contextmanager
def training_threads(device: torch.device) -> Iterator[None]:
    """Run a CPU training loop on :data:`TRAINING_THREADS` torch threads, then restore the setting.

    den's networks are small, so each step is many small operations; with several
    threads every operation waits for all of them, and when other work holds a core
    those waits dominate (measured on 2 cores: two concurrent trainings took 303 s
    each with 2 threads, 5.3 s each with 1). One thread also makes results
    independent of the machine's core count.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic_cudnn(device: torch.device) -> Iterator[None]:
    """On a CUDA device, train with cuDNN's deterministic convolutions (a seed repeats a run), then restore."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def adam(params, learning_rate: float, device: torch.device, *, capturable: bool = False) -> torch.optim.Adam:
    """Adam in one fused kernel per step where torch has one (CPU, CUDA), else over parameter lists.

    den's networks are small, so a step of the per-parameter optimiser is mostly call
    overhead: fused, a training step on digits took about 10 % less time. ``capturable``
    (CUDA): the step can be captured in a CUDA graph, and the rate is a tensor on the device.
    """
    if capturable:
        rate = torch.tensor(learning_rate, dtype=torch.float32, device=device)
        return torch.optim.Adam(params, lr=rate, fused=True, capturable=True)
    if device.type in ("cpu", "cuda"):
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    return torch.optim.Adam(params, lr=learning_rate, foreach=True)


class Runner:
    """Adam with a cosine learning-rate decay from ``learning_rate`` to 0 over all steps.

    Inside a torch.distributed process group (:mod:`den.train._distributed`) a plan with
    ``data_parallel = True`` (the embedding) is trained data-parallel: every rank computes
    its share of every step and the modules are wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients (on CPU
    ranks for the first epoch, then the ranks' weights every few steps:
    :func:`~den.train._distributed.local_sgd`). Other
    plans (the small heads) train whole on every rank, deterministically, so the ranks agree.

    Parameters
    ----------
    n_epochs
        Passes over the plan's batches.
    learning_rate
        Initial learning rate.
    device
        Training device (the plan's modules and sources are already on it).
    progress_bar
        Show a tqdm bar over epochs, with the epoch's mean loss.
    desc
        Label of the bar.
    """

    #: how a capture-safe plan's steps run in one process: ``"cuda"`` (a CUDA graph on a CUDA device,
    #: :mod:`den.train._graphs`), ``None`` (eager; ``den.train.Runner.capture = None`` for every run), or a
    #: capture function (tests)
    capture = "cuda"

    def __init__(self, *, n_epochs: int, learning_rate: float, device: torch.device, progress_bar: bool, desc: str):
        self.n_epochs, self.learning_rate, self.device = n_epochs, learning_rate, device
        self.progress_bar, self.desc = progress_bar, desc
        #: called as ``on_epoch(epoch, mean_loss, seconds)`` after every epoch (the progress of spawned ranks)
        self.on_epoch = None
        #: wall seconds of each epoch of the last :meth:`run`
        self.seconds: list[float] = []

    def run(self, plan) -> list[float]:
        """Train ``plan``; returns the mean loss of each epoch (over all ranks)."""
        from ._distributed import average_weights, data_parallel, every_step, local_sgd, rank_world

        rank, world = rank_world() if plan.data_parallel else (0, 1)
        modules = plan.modules()
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        capture = self._capture(plan, world)
        optimizer = adam(params, self.learning_rate, self.device, capturable=capture is cuda_capture)
        graphed = None if capture is None else GraphedSteps(plan, optimizer, capture=capture)
        for m in modules:
            m.train()
        sync = every_step
        if world > 1:
            plan.wrap(data_parallel(self.device))
            optimizer, sync = local_sgd(
                plan.modules(), optimizer, device=self.device, warmup=plan.steps_per_epoch(world)
            )
        try:
            history = self._epochs(plan, optimizer, sync, graphed, rank=rank, world=world)
            if world > 1:
                average_weights(params)  # the ranks end with the same weights
        finally:
            if world > 1:
                optimizer = sync = None  # they hold the wrappers too
                release_data_parallel(plan)
        for m in modules:
            m.eval()
        return history

    def _epochs(self, plan, optimizer, sync, graphed, *, rank: int, world: int) -> list[float]:
        """The epochs of :meth:`run`: the mean loss of each (over all ranks)."""
        from ._distributed import mean_over_ranks

        history: list[float] = []
        step, total = 0, max(1, self.n_epochs * plan.steps_per_epoch(world))
        bar = progress(range(self.n_epochs), desc=self.desc, enabled=self.progress_bar and rank == 0)
        self.seconds = []
        with training_threads(self.device), deterministic_cudnn(self.device):
            for epoch in bar:
                # the loss stays on the device until the epoch ends: no host sync per step
                running, n_batches, start = (
                    torch.zeros((), dtype=torch.float64, device=self.device),
                    0,
                    time.perf_counter(),
                )
                for batch in plan.batches(rank, world) if world > 1 else plan.batches():
                    rate = self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
                    set_learning_rate(optimizer, rate)
                    if graphed is not None:
                        loss = graphed.step(batch)
                    else:
                        optimizer.zero_grad(set_to_none=True)
                        with sync(step):
                            loss = plan.loss(batch)
                            loss.backward()
                        optimizer.step()
                    running += loss.detach()
                    n_batches += 1
                    step += 1
                summed = float(running)  # a NaN on one rank makes every rank's mean NaN: all of them stop
                history.append(mean_over_ranks(summed, n_batches) if world > 1 else summed / max(n_batches, 1))
                self._check(history[-1], epoch)
                self.seconds.append(time.perf_counter() - start)
                if self.progress_bar and rank == 0:
                    bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)  # shown at tqdm's own pace
                if self.on_epoch is not None:
                    self.on_epoch(epoch, history[-1], self.seconds[-1])
        return history

    def _capture(self, plan, world: int):
        """The capture function for ``plan``'s steps, or ``None`` for the eager loop."""
        if world > 1 or not getattr(plan, "capture_safe", False) or self.capture is None:
            return None
        if self.capture == "cuda":
            return cuda_capture if self.device.type == "cuda" else None
        return self.capture

    def _check(self, mean_loss: float, epoch: int) -> None:
        """An error if any step's loss in the epoch was not finite (NaN or inf: then so is the mean)."""
        if not math.isfinite(mean_loss):
            msg = (
                f"The {self.desc} loss became non-finite in epoch {epoch + 1}. Check the input for extreme "
                "values (log-normalise counts) or lower `learning_rate`."
            )
            raise FloatingPointError(msg)


def release_data_parallel(plan) -> None:
    """Unwrap ``plan``'s data-parallel modules and free the wrappers while the process group lives.

    A :class:`~torch.nn.parallel.DistributedDataParallel` wrapper sits in a reference cycle; left
    to the garbage collector it may be freed at interpreter exit, after the group is destroyed,
    and gloo's threads then abort the process (SIGABRT, "terminate called without an active
    exception", seen in CI on a torchrun script that had finished its work).
    """
    plan.wrap(lambda m: m.module)
    gc.collect()
