"""Small helpers shared by the tools: devices, seeds, AnnData views, progress, batched inference."""

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
    except (RuntimeError, TypeError) as e:
        msg = f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        raise ValueError(msg) from e
    if dev.type not in ("cpu", "cuda"):
        msg = f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (den runs on CPUs and CUDA GPUs)."
        raise ValueError(msg)
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


def check_random_state(random_state: int | None) -> int:
    """An integer seed; ``None`` draws a fresh one (then results are not reproducible)."""
    from den._config import Seed

    if Seed().check("random_state", random_state) is None:  # the rule den's configurations apply
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(random_state)


def check_fit_cells(fit_cells: int | None, n_cells: int | None) -> int | None:
    """Check ``fit_cells`` (``None`` or an integer >= 3); how many of ``n_cells`` a fit trains on (``None``: not known)."""
    from den._config import Int, Optional

    fit_cells = Optional(Int(3)).check("fit_cells", fit_cells)
    if n_cells is None:
        return None
    return n_cells if fit_cells is None else min(fit_cells, n_cells)


#: with batches, a ``fit_cells`` sample keeps at least this many cells of each batch (all of a smaller one)
MIN_SAMPLE_PER_BATCH = 50


def training_rows(n_cells: int, fit_cells: int | None, seed: int, batches=None) -> np.ndarray | None:
    """The sorted rows a ``fit_cells`` sample trains on (``numpy.random.default_rng(seed)``), or ``None``: every cell.

    The same rows for the same ``n_cells``, ``fit_cells``, ``seed`` and ``batches``, so
    ``den.tl.embed`` and ``den.tl.cluster`` with one seed train on one sample. With
    ``batches`` (one name per cell) the sample is stratified: each batch gives its share of
    ``fit_cells`` (the shares sum to ``fit_cells``), and at least :data:`MIN_SAMPLE_PER_BATCH` cells (all of a smaller batch),
    so no batch is missing and each batch's mean rests on enough cells. ``fit_cells`` was
    checked by :func:`check_fit_cells`.
    """
    if fit_cells is None or fit_cells >= n_cells:
        return None
    rng = np.random.default_rng(seed)
    if batches is None:
        return np.sort(rng.choice(n_cells, fit_cells, replace=False))
    from den._mapping import batch_codes

    codes = batch_codes(batches)
    counts = np.bincount(codes)
    exact = fit_cells * counts / n_cells
    share = np.floor(exact).astype(int)
    largest = np.argsort(share - exact, kind="stable")  # largest remainders first: the shares sum to fit_cells
    share[largest[: fit_cells - share.sum()]] += 1
    take = np.minimum(counts, np.maximum(share, MIN_SAMPLE_PER_BATCH))
    if take.sum() >= n_cells:
        return None
    order = np.argsort(codes, kind="stable")  # the rows of each batch, in row order
    starts = np.concatenate([[0], np.cumsum(counts)])
    parts = [rng.choice(order[starts[b] : starts[b + 1]], take[b], replace=False) for b in range(len(counts))]
    return np.sort(np.concatenate(parts))


def make_actual(adata: AnnData) -> None:
    """Turn a view into an actual AnnData in place, silently (as scanpy's tools do)."""
    if adata.is_view:
        adata._init_as_actual(adata.copy())


def check_flags(**flags) -> None:
    """Refuse a switch (``copy``, ``progress_bar``, ...) that is not ``True`` or ``False``: ``"no"`` would read as true."""
    from den._config import Bool

    for name, value in flags.items():
        Bool().check(name, value)


def check_adata(adata) -> None:
    """Refuse what is not an AnnData, pointing arrays to :class:`den.DEN`."""
    if not (hasattr(adata, "obs") and hasattr(adata, "uns") and hasattr(adata, "var_names")):
        msg = f"den's tools take an AnnData, not {type(adata).__name__}; for arrays use den.DEN."
        raise TypeError(msg)


def check_copy(adata: AnnData, copy: bool) -> None:
    """Refuse, before any work, what is not an AnnData and a bad ``copy``.

    ``copy`` must be a bool, and ``copy=True`` is refused on an AnnData opened backed (anndata
    copies it only to a file).
    """
    check_adata(adata)
    check_flags(copy=copy)
    if copy and getattr(adata, "isbacked", False):
        msg = (
            "copy=True on an AnnData opened with backed='r': anndata copies it only to a file. Pass copy=False "
            "(den writes its results into adata), or load it with `adata.to_memory()`."
        )
        raise ValueError(msg)


def uns_owner(entry) -> str | None:
    """Which den tool wrote an ``adata.uns`` entry (``"embed"``, ``"cluster"``, ...), from a field only it writes."""
    if not isinstance(entry, dict):
        return None
    if "eigenvalues" in entry:
        return "cluster"
    if "names" in entry and "scores" in entry:
        return "marker_features"
    if "values" in entry and "cells" in entry:
        return "cell_features"
    return "embed" if "model" in entry else None  # den 0.1's embedding entries have no "fit"


def check_key_name(key, param: str = "key_added") -> None:
    """Refuse a key that is not a non-empty string without '/'.

    ``write_h5ad`` fails on such a key, or writes a file ``read_h5ad`` cannot open.
    """
    if not isinstance(key, str):
        msg = f"Invalid {param}={key!r}: it must be a name (a string); leave it out for the tool's default."
        raise TypeError(msg)
    if not key or "/" in key:
        msg = f"Invalid {param}={key!r}: it must be a non-empty name without '/' (an .h5ad file cannot hold it)."
        raise ValueError(msg)


def check_key_added(adata: AnnData, key: str, tool: str) -> None:
    """Refuse to write ``tool``'s result over *another* den tool's (a model, markers, cell features) in ``adata.uns[key]``.

    Re-running a tool on its own key is fine. ``key`` must be a name an ``.h5ad`` file can hold.
    """
    check_key_name(key)
    owner = uns_owner(getattr(adata, "uns", {}).get(key))  # not an AnnData: the tool's own check names it
    if owner is not None and owner != tool:
        what = "the model" if owner in ("embed", "cluster") else "the result"
        msg = (
            f"adata.uns[{key!r}] holds {what} of den.tl.{owner}, which den.tl.{tool} would overwrite "
            f"(tools that read it would then fail); pass another key_added."
        )
        raise ValueError(msg)


def progress(iterable, *, total: int | None = None, desc: str, enabled: bool):
    """A tqdm.auto progress bar (a notebook widget in Jupyter); disabled, a hidden plain one.

    Hidden bars never import ``tqdm.auto``: in a notebook without ipywidgets it warns
    ("IProgress not found") even for a bar that is never drawn.
    """
    if enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


def import_shap():
    """The ``shap`` package, imported without tqdm's notebook warning.

    ``import shap`` imports ``tqdm.auto``, which in a notebook without ipywidgets warns
    "IProgress not found" although den's SHAP calls draw no shap progress bar.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import shap
    return shap


@contextlib.contextmanager
def on_device(device: torch.device, module: torch.nn.Module) -> Iterator[None]:
    """Run ``module`` on ``device``, then move it back: a trained model stays where it was kept (the CPU)."""
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield
    finally:
        module.to(home)


@torch.inference_mode()
def predict(net: torch.nn.Module, blocks, *, device: torch.device, batch_size: int = 8192) -> np.ndarray:
    """Apply ``net`` in eval mode to a tensor or an iterable of numpy row blocks, ``batch_size`` rows at a time."""
    net.eval()
    blocks = [blocks] if torch.is_tensor(blocks) else blocks
    out = []
    for block in blocks:
        for part in torch.as_tensor(block).split(batch_size):
            out.append(net(part.to(device)).float().cpu().numpy())
    if not out:
        msg = "predict() got no rows."
        raise ValueError(msg)
    return np.concatenate(out).astype(np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float32 (temperature scaling: :mod:`den._calibration`)."""
    logits = logits if temperature == 1.0 else np.asarray(logits) / temperature
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


class PicklableGenerators:
    """Pickle the object's :class:`torch.Generator` attributes by their state.

    torch's process-spawning pickler cannot send a generator itself; its device and state
    (bytes) travel instead, so a spawned rank resumes the draws exactly where the parent was.
    Attributes that held one generator come back holding one generator.
    """

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k, v in state.items():
            if isinstance(v, torch.Generator):
                state[k] = ("torch.Generator", str(v.device), v.get_state().numpy().tobytes(), id(v))
        return state

    def __setstate__(self, state: dict) -> None:
        rebuilt: dict[int, torch.Generator] = {}
        for k, v in state.items():
            if isinstance(v, tuple) and len(v) == 4 and v[0] == "torch.Generator":
                if v[3] not in rebuilt:
                    g = torch.Generator(device=v[1])
                    g.set_state(torch.frombuffer(bytearray(v[2]), dtype=torch.uint8))
                    rebuilt[v[3]] = g
                state[k] = rebuilt[v[3]]
        self.__dict__.update(state)
