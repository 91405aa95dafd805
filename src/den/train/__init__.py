"""Training: data sources, training plans and the runner that executes them.

A *source* hands the runner rows of network inputs on the training device; a
*plan* owns the trainable modules and turns a batch into a loss (the embedding
plan reads pairs from :class:`den._pairs.PairSampler`; the classifier plan reads
labelled cells); the :class:`Runner` owns everything else: the optimiser, the
learning-rate schedule, epochs and progress bar, the device and threads.
:func:`train` runs a plan in this process, or on several data-parallel ranks
(:mod:`den.train._distributed`).
"""

from ._distributed import check_devices, rank_generator, rank_world, run_on_devices
from ._plans import ClassifierPlan, EmbeddingPlan, fit_classifier
from ._runner import Runner, training_threads
from ._sources import MatrixSource, TensorSource


def train(runner: Runner, plan, *, devices: int = 1, seed: int = 0) -> list[float]:
    """Run ``plan``: here, on ``devices`` spawned ranks, or on this rank's share inside a torchrun group."""
    if devices > 1:
        return run_on_devices(runner, plan, devices=devices, seed=seed)
    rank, world = rank_world()
    if world > 1:
        plan.reseed(rank_generator(seed, rank, runner.device))  # far partners and noise drawn on the device
    return runner.run(plan)


__all__ = [
    "ClassifierPlan",
    "EmbeddingPlan",
    "fit_classifier",
    "MatrixSource",
    "Runner",
    "TensorSource",
    "check_devices",
    "rank_world",
    "train",
    "training_threads",
]
