"""A deep snapshot of an AnnData, to assert that a failed call left it exactly as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse


def _freeze(value):
    if sparse.issparse(value):
        return ("sparse", value.format, value.shape, value.toarray().tobytes())
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, pd.DataFrame):
        return ("frame", value.to_csv(), tuple(map(str, value.dtypes)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(_freeze(v) for v in value))
    return ("value", repr(value))


def snapshot(adata) -> tuple:
    """Everything an AnnData holds, as a comparable value."""
    return (
        _freeze(adata.X) if adata.X is not None else None,
        _freeze(adata.obs),  # values and column dtypes (a categorical turned into text would show)
        _freeze(adata.var),
        tuple(adata.obs_names),
        tuple(adata.var_names),
        _freeze(dict(adata.obsm)),
        _freeze(dict(adata.layers)),
        _freeze(dict(adata.obsp)),
        _freeze(dict(adata.varm)),
        _freeze(adata.raw.to_adata().X) if adata.raw is not None else None,
        _freeze(dict(adata.uns)),
        adata.is_view,
    )
