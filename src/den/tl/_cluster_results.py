"""Writing cluster assignments into an AnnData the way `sc.tl.leiden` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData


def cluster_columns(proba: np.ndarray, categories: Sequence[str]) -> dict:
    """Labels (categorical, natural order), probabilities and confidence, computed before anything is written.

    Clusters no cell is assigned to are dropped from the categories (scanpy's plots expect
    every category to have cells); ``proba`` keeps one column per network output.
    """
    categories = [str(c) for c in categories]
    if proba.shape[1] != len(categories):
        msg = (
            f"The clustering network has {proba.shape[1]} outputs but its config names {len(categories)} clusters: "
            "the model is damaged or was edited. Run `den.tl.cluster` again."
        )
        raise ValueError(msg)
    labels = np.asarray(categories)[proba.argmax(1)]
    return {
        "labels": pd.Categorical(labels, categories=categories).remove_unused_categories(),
        "proba": proba.astype(np.float32),
        "confidence": proba.max(1).astype(np.float32),
    }


def relabel(clusters: dict, network_names: Sequence[str], names: dict[str, str], order: Sequence[str]) -> dict:
    """:func:`cluster_columns`' output under the names ``names`` gives the network's clusters (renamed or merged).

    A cell's confidence becomes the summed probability of the network clusters that share its
    name; ``proba`` keeps one column per network output.
    """
    name_of = np.asarray([names[str(c)] for c in network_names])
    labels = name_of[clusters["proba"].argmax(1)]
    same = name_of[None, :] == labels[:, None]
    return {
        "labels": pd.Categorical(labels, categories=list(order)).remove_unused_categories(),
        "proba": clusters["proba"],
        "confidence": (clusters["proba"] * same).sum(1).astype(np.float32),
    }


def written_labels(adata: AnnData, key: str, network: Sequence[str]) -> np.ndarray | None:
    """The network's name for every cell, as :func:`write_clusters` wrote it, or ``None``.

    The name is that of the largest column of ``obsm[key + '_proba']``; ``None`` when those
    probabilities are missing or of another shape.
    """
    proba = adata.obsm.get(f"{key}_proba")
    if proba is None or np.shape(proba) != (adata.n_obs, len(network)):
        return None
    return np.asarray([str(c) for c in network])[np.asarray(proba).argmax(1)]


def labels_as_learnt(adata: AnnData, key: str, network: Sequence[str]) -> bool:
    """Whether every labelled cell of ``adata.obs[key]`` still carries the clustering network's name for it.

    ``False`` when the labels were edited since (renamed, merged, or names reused for other
    cells) or the network's names cannot be read back (:func:`written_labels`).
    """
    written = written_labels(adata, key, network)
    if written is None:
        return False
    current = adata.obs[key]
    known = current.notna().to_numpy()
    return bool((written[known] == current[known].astype(str).to_numpy()).all())


def write_clusters(adata: AnnData, clusters: dict, key: str) -> None:
    """Write the output of :func:`cluster_columns` under ``key``."""
    adata.obs[key] = clusters["labels"]
    adata.obsm[f"{key}_proba"] = clusters["proba"]
    adata.obs[f"{key}_confidence"] = clusters["confidence"]
