"""Small helpers shared by the tools: devices, seeds, AnnData views, progress."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anndata import AnnData


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to one CUDA device when available, else the CPU (never MPS)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        msg = f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'."
        raise ValueError(msg) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={device!r} was requested but CUDA is not available; use device='cpu' or 'auto'."
        raise ValueError(msg)
    return dev


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Seed torch's global generators inside the block and restore them afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


#: torch threads used by the training loops on CPU (see :func:`training_threads`)
TRAINING_THREADS = 1


@contextlib.contextmanager
def training_threads(device: torch.device) -> Iterator[None]:
    """Run a CPU training loop on :data:`TRAINING_THREADS` torch threads, then restore the setting.

    den's networks are small (tens of thousands of weights), so each step is
    many tiny operations. With several threads, every operation waits for all
    of them; when other work holds a core, those waits dominate. Measured on
    2 cores (digits, 30 epochs): alone, 2 threads 5.5 s vs 1 thread 6.3 s; two
    such trainings at once, 303 s each with 2 threads vs 5.3 s each with 1.
    A single thread also makes results independent of the machine's core count.
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


def check_random_state(random_state: int | None) -> int:
    """An integer seed; ``None`` draws a fresh one (then results are not reproducible)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, np.random.Generator | np.random.RandomState):
        msg = "den takes an integer `random_state` (or None), not a numpy generator."
        raise TypeError(msg)
    return int(random_state)


def make_actual(adata: AnnData) -> None:
    """Turn a view into an actual AnnData in place, silently (as scanpy's tools do)."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def progress(iterable, *, total: int | None = None, desc: str, enabled: bool):
    """A tqdm.auto progress bar, or the bare iterable when disabled."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)
