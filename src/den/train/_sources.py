"""Where training rows come from: a tensor in memory, or a matrix densified one batch at a time."""

from __future__ import annotations

import numpy as np
import torch

from den._data import dense_rows


class TensorSource:
    """Rows of one float32 tensor kept on the training device (e.g. the frozen PCA layer's outputs)."""

    def __init__(self, data, device: torch.device):
        self.data = torch.as_tensor(np.asarray(data, dtype=np.float32) if not torch.is_tensor(data) else data).to(
            device
        )
        self.device = device

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.data[idx.to(self.device)]

    def to(self, device: torch.device) -> None:
        self.data, self.device = self.data.to(device), device


class MatrixSource:
    """Rows of a (sparse) matrix, densified per batch; ``cols`` selects and orders the columns."""

    def __init__(self, X, device: torch.device, cols: np.ndarray | None = None):
        self.X, self.device, self.cols = X, device, cols

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (self.X.shape[1] if self.cols is None else len(self.cols),)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        block = dense_rows(self.X, idx.cpu().numpy())
        if self.cols is not None:
            block = block[:, self.cols]
        return torch.from_numpy(block).to(self.device)
