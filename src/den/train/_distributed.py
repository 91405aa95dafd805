"""Training on several devices: data parallelism over torch.distributed (DDP).

Two ways in, one engine:

``devices=N`` in one Python process (a notebook, a script)
    :func:`run_on_devices` starts ``N`` ranks with :func:`torch.multiprocessing.start_processes`
    (the spawn launcher PyTorch and Lightning's ``ddp_spawn`` use), each joins a process
    group (gloo on CPUs, NCCL on GPUs, one GPU per rank), trains its share of every
    epoch, and rank 0 copies the trained weights back into the caller's modules.
A script launched by ``torchrun``
    the process group exists already: every rank runs the same den call, so the same
    seed gives every rank the same PCA, kNN graph and pairs, and :class:`~den.train.Runner`
    trains each rank's share (:func:`rank_world`).

Either way the ranks draw the same order of batches from a generator in the same state
and each takes its own ``batch_size`` of every step's ``world x batch_size`` pairs
(:func:`den._pairs.rank_slice`), so an epoch takes ``1 / world`` of one process's steps (at
``world`` times the learning rate, :func:`den._embedding.fit_embedding`). Noise and far
partners come from a generator seeded by ``(seed, rank)`` (:func:`rank_generator`), so a
run is reproducible for a given seed and number of ranks. On GPUs
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients of every step, so the
ranks take the steps one process would take with ``world`` times the batch; CPU ranks do the
same for the first epoch, then train alone and average their weights every
:data:`LOCAL_STEPS` steps (:func:`local_sgd`). The ranks' weights are averaged once more at the
end, so every rank holds the same model.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import warnings

import numpy as np
import torch
import torch.distributed as dist

from den._utils import progress

#: seconds between the parent's looks at the spawned ranks (progress bar, failures)
POLL_SECONDS = 0.5


def rank_world() -> tuple[int, int]:
    """The rank of this process and the number of ranks (``(0, 1)`` outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_generator(seed: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` for rank ``rank``'s own draws, seeded by ``(seed, rank)``."""
    state = np.random.SeedSequence([seed, rank]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def data_parallel(device: torch.device):
    """A function wrapping a module in :class:`~torch.nn.parallel.DistributedDataParallel` on ``device``."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(module, device_ids=ids, gradient_as_bucket_view=True)

    return wrap


#: CPU ranks (gloo): steps each rank takes alone between two averagings of the ranks' weights
LOCAL_STEPS = 4


def every_step(step: int) -> contextlib.AbstractContextManager:
    """The step context of training in one process, or of DDP averaging every step's gradients."""
    return contextlib.nullcontext()


def local_sgd(modules: list, optimizer, *, device: torch.device, warmup: int):
    """The optimiser of a data-parallel run, and the context of its step ``step``.

    On CPU ranks (gloo) post-local SGD, from torch.distributed's own parts: DDP averages the
    gradients for the first ``warmup`` steps, then every rank steps alone on its own batches
    (:meth:`~torch.nn.parallel.DistributedDataParallel.no_sync`) and
    :class:`~torch.distributed.optim.PostLocalSGDOptimizer` averages the ranks' weights every
    :data:`LOCAL_STEPS` steps. One gloo all-reduce costs about half a training step here,
    whatever its size (docs' benchmarks page), so three steps in four go without one. On GPUs
    (NCCL, all-reduce in microseconds) DDP averages the gradients of every step.

    ``modules`` are already wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`.
    Returns ``(optimizer, context)``; run step ``step``'s forward and backward pass inside
    ``context(step)``.
    """
    if device.type == "cuda":
        return optimizer, every_step
    from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
    from torch.distributed.optim import PostLocalSGDOptimizer

    def context(step: int):
        stack = contextlib.ExitStack()
        if step >= warmup:
            for m in modules:
                stack.enter_context(m.no_sync())
        return stack

    return PostLocalSGDOptimizer(optimizer, PeriodicModelAverager(period=LOCAL_STEPS, warmup_steps=warmup)), context


def average_weights(params: list[torch.Tensor]) -> None:
    """Average ``params`` over the ranks (the end of a data-parallel run: every rank holds the same weights)."""
    from torch.distributed.algorithms.model_averaging.utils import average_parameters

    average_parameters(iter(params), dist.group.WORLD)


def mean_over_ranks(total: float, count: int) -> float:
    """The mean of every rank's values from each rank's sum and count (one all-reduce)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / max(float(t[1]), 1.0))


def check_devices(devices: int, device: torch.device) -> None:
    """Raise before any work when ``devices`` ranks cannot run on ``device``."""
    if devices == 1:
        return
    if not dist.is_available():
        msg = "devices > 1 needs torch.distributed, which this torch build lacks; pass devices=1."
        raise RuntimeError(msg)
    if rank_world()[1] > 1:
        msg = (
            f"devices={devices} was passed inside a torch.distributed process group (torchrun): den already "
            "trains on every rank of it; pass devices=1."
        )
        raise ValueError(msg)
    if device.type == "cuda":
        if device.index not in (None, 0):
            msg = f"devices={devices} uses GPUs 0 to {devices - 1}; pass device='cuda' (not {str(device)!r})."
            raise ValueError(msg)
        if torch.cuda.device_count() < devices:
            msg = f"devices={devices} needs {devices} GPUs but {torch.cuda.device_count()} are visible; pass devices<={torch.cuda.device_count()}."
            raise ValueError(msg)
    elif devices > (os.cpu_count() or 1):
        warnings.warn(
            f"devices={devices} CPU ranks on {os.cpu_count()} cores: ranks will share cores and run slower than "
            "fewer ranks.",
            UserWarning,
            stacklevel=3,
        )


def run_on_devices(runner, plan, *, devices: int, seed: int) -> list[float]:
    """Train ``plan`` with ``runner`` on ``devices`` spawned ranks; returns the loss history.

    The plan's modules, sources and labels are on the CPU; each rank moves its copies
    to its device. The caller's modules hold rank 0's trained weights afterwards, and
    ``runner.seconds`` rank 0's epoch times.
    """
    modules = plan.modules()
    for m in modules:
        m.share_memory()  # rank 0 writes the trained weights into these
    # row 0: epochs done; row 1: loss, row 2: seconds of each epoch
    status = torch.zeros(3, runner.n_epochs + 1, dtype=torch.float64).share_memory_()
    bar = progress(None, total=runner.n_epochs, desc=runner.desc, enabled=runner.progress_bar)
    finished = torch.zeros(1, dtype=torch.bool).share_memory_()  # set by rank 0 once every rank is done
    rank_runner = copy.copy(runner)
    rank_runner.progress_bar = False
    args = (devices, _free_port(), rank_runner, plan, seed, status, finished)
    context = torch.multiprocessing.start_processes(
        _rank_main, args=args, nprocs=devices, join=False, start_method="spawn"
    )
    done = 0
    try:
        while not context.join(timeout=POLL_SECONDS):
            done = _advance(bar, status, done)
    except torch.multiprocessing.ProcessExitedException:
        # seen in CI: rank 0 aborted (SIGABRT) at exit with rank 1 alive, most likely a DDP wrapper
        # freed after the group ended (now freed before it: _runner.release_data_parallel). After
        # the final barrier such a death loses nothing: the weights are already written back
        if not bool(finished[0]):
            raise
    _advance(bar, status, done)
    bar.close()
    runner.seconds = status[2, 1:].tolist()
    return status[1, 1:].tolist()


def _advance(bar, status: torch.Tensor, done: int) -> int:
    now = int(status[0, 0])
    if now > done:
        bar.set_postfix(loss=f"{float(status[1, now]):.4f}", refresh=False)  # shown by the update
        bar.update(now - done)
    return now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int, world: int, port: int, runner, plan, seed: int, status: torch.Tensor, finished: torch.Tensor
) -> None:
    """One spawned rank: join the group, train a private copy of the modules, rank 0 reports back."""
    cuda = runner.device.type == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        shared = plan.modules()
        plan.wrap(lambda m: copy.deepcopy(m).to(device))  # own storage: the shared copy is written once, at the end
        plan.to(device)
        plan.reseed(rank_generator(seed, rank))
        runner.device = device
        if rank == 0:
            runner.on_epoch = lambda epoch, loss, seconds: _report(status, epoch, loss, seconds)
        own = plan.modules()
        runner.run(plan)
        if rank == 0:
            with torch.no_grad():
                for target, trained in zip(shared, own, strict=True):
                    for a, b in zip(target.state_dict().values(), trained.state_dict().values(), strict=True):
                        a.copy_(b.cpu())
        dist.barrier()  # every rank has finished training
        if rank == 0:
            finished[0] = True
    finally:
        dist.destroy_process_group()


def _report(status: torch.Tensor, epoch: int, loss: float, seconds: float) -> None:
    status[1, epoch + 1], status[2, epoch + 1] = loss, seconds
    status[0, 0] = epoch + 1
