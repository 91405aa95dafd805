"""Counts from expected values, and their log-normalisation (shared by the generators)."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def sample_counts(
    mu: np.ndarray, dispersion: float, rng: np.random.Generator
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Negative binomial counts with means ``mu`` (Poisson for ``dispersion=0``) and ``log1p`` of counts per 10,000."""
    if dispersion > 0:
        mu = rng.gamma(1 / dispersion, mu * dispersion)
    block = sparse.csr_matrix(rng.poisson(mu).astype(np.float32))
    size = np.asarray(block.sum(1)).ravel()
    norm = (sparse.diags(1e4 / np.maximum(size, 1)) @ block).tocsr().astype(np.float32)
    norm.data = np.log1p(norm.data)
    return block, norm
