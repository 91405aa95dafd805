"""Writing cluster assignments into an AnnData the way `sc.tl.leiden` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


def write_clusters(adata: AnnData, proba: np.ndarray, categories: Sequence[str], key: str) -> None:
    """Write labels (categorical, natural order), probabilities and confidence.

    Clusters no cell is assigned to are dropped from the categories (scanpy's
    plots expect every category to have cells); ``proba`` keeps one column per
    network output.
    """
    labels = np.asarray(categories)[proba.argmax(1)]
    adata.obs[key] = pd.Categorical(labels, categories=list(categories)).remove_unused_categories()
    adata.obsm[f"{key}_proba"] = proba.astype(np.float32)
    adata.obs[f"{key}_confidence"] = proba.max(1).astype(np.float32)
