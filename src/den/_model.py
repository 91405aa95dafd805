"""The trained DEN networks with their feature contract; inference, save and load.

Weights are stored as plain arrays (``.npz`` read with ``allow_pickle=False``)
beside a JSON config, in a folder or in ``adata.uns``: nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from ._data import CHUNK_ROWS, check_finite, dense_rows, feature_names, forward_strides, tensor_values
from ._loss import kernel_dof
from ._utils import get_device, on_device, predict, softmax, uns_owner
from .nn import ClusterHead, build_encoder

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anndata import AnnData

#: 2: encoder type and loss recorded in the config, optional label head; 1: den 0.1 (MLP only)
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scden")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def state_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's state as numpy arrays (h5ad- and npz-safe)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def fingerprint(model_entry: dict[str, Any]) -> str:
    """A short hash of a stored model's weights (which embedding a clustering was made on)."""
    import hashlib

    digest = hashlib.sha1(usedforsecurity=False)
    for name in sorted(model_entry["weights"]):
        array = np.ascontiguousarray(np.asarray(model_entry["weights"][name]))
        digest.update(f"{name}{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _check_owner(entry: dict, key: str, tool: str, param: str) -> None:
    """An error naming the tool whose result ``adata.uns[key]`` is, when it is not ``tool``'s."""
    owner = uns_owner(entry)
    if owner != tool:
        msg = (
            f"uns[{key!r}] is a result of den.tl.{owner}, not of den.tl.{tool}; pass the key_added of "
            f"den.tl.{tool} as `{param}`."
        )
        raise ValueError(msg)


def column_names(X, var_names):
    """``var_names``, or a data frame's column names when none are given (features then matched by name)."""
    if var_names is None and (names := feature_names(X)) is not None:
        return pd.Index(names)
    return var_names


def load_arrays(module: nn.Module, weights: dict[str, np.ndarray], where: str = "the model") -> None:
    """Load numpy weights into ``module`` (strictly), refusing non-finite values."""
    state = {}
    for k, v in weights.items():
        arr = np.asarray(v)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            msg = f"The weights {k!r} of {where} contain NaN or infinite values: the model is damaged. Train it again."
            raise ValueError(msg)
        state[k] = torch.as_tensor(arr)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = (
            f"The weights of {where} do not fit its config (damaged or edited?): {str(e).splitlines()[0]}. Save the "
            "model again from the AnnData or estimator that trained it."
        )
        raise ValueError(msg) from None


class DENModel:
    """Trained DEN networks with the features they read.

    Made by :class:`den.DEN` (and :func:`den.tl.embed`, :func:`den.tl.cluster`); get it
    back from an AnnData with :meth:`from_adata`, save it with :meth:`save` and reload
    it with :meth:`load`.

    Parameters
    ----------
    config
        Architecture and feature contract (``encoder``, ``n_genes``, ``var_names``,
        ``n_components``, ``hidden``, ``n_pcs``, ``loss``, ``dof``, ...).
    encoder
        The Siamese encoder.
    cluster_config, cluster_net
        ``n_clusters``, ``categories``, ``head_input`` and the network from features to
        cluster logits (a copy of the encoder and a head), if clustered.
    label_config, label_head
        ``categories`` of the labels and the head from the map to label logits, if trained
        with labels.
    """

    def __init__(
        self,
        config: dict[str, Any],
        encoder: nn.Module,
        cluster_config: dict[str, Any] | None = None,
        cluster_net: nn.Sequential | None = None,
        label_config: dict[str, Any] | None = None,
        label_head: nn.Module | None = None,
    ):
        self.config = dict(config)
        self.encoder = encoder.eval()
        self.cluster_config = cluster_config
        self.cluster_net = cluster_net.eval() if cluster_net is not None else None
        self.label_config = label_config
        self.label_head = label_head.eval() if label_head is not None else None

    @classmethod
    def build(cls, config: dict[str, Any]) -> DENModel:
        """A fresh, untrained model for ``config``."""
        config = {"format_version": FORMAT_VERSION, "den_version": _version(), **config}
        return cls(config, build_encoder(config))

    # properties -----------------------------------------------------------------
    @property
    def var_names(self) -> pd.Index:
        """Features the model reads, in order."""
        return pd.Index(self.config["var_names"])

    @property
    def kernel(self) -> tuple[int, float]:
        """Degrees of freedom of the F distribution the loss read map distances with."""
        return kernel_dof(self.config.get("loss", "paper"), int(self.config["n_components"]), self.config.get("dof"))

    @property
    def hidden_width(self) -> int:
        """Width of the encoder's last hidden layer."""
        return self.encoder.hidden_width

    @property
    def has_clusters(self) -> bool:
        return self.cluster_net is not None

    @property
    def has_labels(self) -> bool:
        return self.label_head is not None

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters of the encoder."""
        return sum(p.numel() for p in self.encoder.parameters() if p.requires_grad)

    # the feature contract -------------------------------------------------------
    def gene_index(self, var_names: pd.Index, *, query: bool = True) -> np.ndarray | None:
        """Columns of a query with ``var_names`` that give the model's features in order.

        ``None`` when the query already has exactly those features in that order.
        Raises :class:`KeyError` naming the missing ones; ``query=False``: the data is the
        AnnData the model was trained on (a tool reading it after genes were dropped).
        """
        train = self.var_names
        if len(var_names) == len(train) and (var_names == train).all():
            return None
        if not var_names.is_unique:
            msg = "The query's var_names are not unique; run `adata.var_names_make_unique()` first."
            raise ValueError(msg)
        missing = train[~train.isin(var_names)]
        if len(missing):
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            fix = (
                "Add them (e.g. as zeros, after the same normalisation) or train on the shared genes."
                if query
                else "Genes were dropped since den.tl.embed: use the AnnData it ran on, or run den.tl.embed again."
            )
            who = "The query lacks" if query else "adata lacks"
            msg = f"{who} {len(missing)} of the {len(train)} genes the model was trained on: {shown}. {fix}"
            raise KeyError(msg)
        return var_names.get_indexer(train)

    def inputs(self, X, var_names: pd.Index, rows) -> np.ndarray:
        """Dense float32 network inputs for ``rows`` (a slice or indices) of ``X``: the model's features in order."""
        block = dense_rows(X, rows)
        cols = self.gene_index(var_names)
        return block if cols is None else block[:, cols]

    def iter_inputs(self, X, var_names: pd.Index, chunk: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """:meth:`inputs` for consecutive row blocks of ``X``."""
        for start in range(0, X.shape[0], chunk):
            yield self.inputs(X, var_names, slice(start, start + chunk))

    @property
    def batch_centering(self) -> bool:
        """Whether the model centres each batch in its PCA space (``den.tl.embed(batch_centering=True)``)."""
        return bool(self.config.get("batch_centering", False))

    def front_blocks(
        self, X, var_names: pd.Index | None = None, chunk: int = CHUNK_ROWS, *, batches=None
    ) -> Iterator[np.ndarray]:
        """Row blocks of the encoder's frozen front applied to ``X``: what its trainable body reads.

        For an MLP with a PCA layer, ``X @ W.T + b`` per block (a sparse ``X`` is densified one
        block at a time); features the model does not know get zero weight, so no column subset
        of ``X`` is ever made. Otherwise the model's features themselves. A batch-centring model
        centres the rows of each of ``batches`` (one name per row; ``None``: all rows one batch).
        """
        if self.batch_centering:
            from ._mapping import center_by_batch

            front = np.concatenate(list(self._front_blocks(X, var_names, chunk)))
            front = center_by_batch(front, np.zeros(len(front), int) if batches is None else batches)
            for start in range(0, len(front), chunk):
                yield front[start : start + chunk]
            return
        yield from self._front_blocks(X, var_names, chunk)

    def _front_blocks(self, X, var_names: pd.Index | None, chunk: int) -> Iterator[np.ndarray]:
        var_names = self.var_names if var_names is None else pd.Index(var_names)
        layer = self.encoder.projection
        if layer is None:
            yield from self.iter_inputs(X, var_names, chunk)
            return
        w = layer.weight.detach().cpu().float().T
        b = layer.bias.detach().cpu().float()
        cols = self.gene_index(var_names)
        if cols is not None:
            full = torch.zeros((len(var_names), w.shape[1]))
            full[torch.as_tensor(cols)] = w
            w = full
        buffer = np.empty((min(chunk, X.shape[0]), X.shape[1]), np.float32)
        with torch.inference_mode():
            for start in range(0, X.shape[0], chunk):
                # a dense block beats a sparse product here (measured: about 2x on 2,000 genes); torch, not
                # numpy, multiplies, so inference never switches between two thread pools (on 2 cores the
                # switch cost 12 ms for 200 cells, 18x the work itself)
                block = dense_rows(X, slice(start, start + chunk), out=buffer)
                block = block if block.flags.writeable else block.copy()
                yield torch.addmm(b, torch.from_numpy(block), w).numpy()

    # inference ------------------------------------------------------------------
    def checked(self, X, var_names=None):
        """``X`` as a matrix the model can read (lists, tensors, any sparse format), or a clear error.

        Without ``var_names`` the columns must be the model's features in order.
        """
        if hasattr(X, "detach"):
            X = tensor_values(X)
        if sparse.issparse(X):
            X = X.tocsr() if X.format not in ("csr", "csc") else X
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        X = forward_strides(X)
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            msg = f"X must be a numeric 2-D matrix (cells x features); got shape {X.shape}, dtype {X.dtype}."
            raise ValueError(msg)
        if var_names is None and X.shape[1] != len(self.var_names):
            msg = (
                f"X has {X.shape[1]} columns but the model reads {len(self.var_names)} features; pass "
                "`var_names=` to match genes by name."
            )
            raise ValueError(msg)
        if var_names is not None and len(var_names) != X.shape[1]:
            msg = f"var_names has {len(var_names)} names for the {X.shape[1]} columns of X."
            raise ValueError(msg)
        check_finite(X, "X")
        return X

    def embed(
        self, X, var_names: pd.Index | None = None, *, device: str = "auto", check: bool = True, batches=None
    ) -> np.ndarray:
        """Map coordinates of the rows of ``X`` (cells x features); each row is mapped on its own.

        Parameters
        ----------
        X
            Cells x features (a numpy array, a scipy sparse matrix or a torch tensor), normalised as
            the training data.
        var_names
            The names of ``X``'s columns, matched to the model's features by name (extra ones are
            ignored, missing ones raise). ``None``: a data frame's column names; otherwise the columns
            are the model's features in order.
        device
            ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
        check
            ``False`` skips the input checks (for callers that made them).
        batches
            A batch-centring model (``den.tl.embed(batch_key=..., batch_centering=True)``): each row's
            batch name; each batch is centred on its own. ``None``: all rows one batch (a mix of
            cell types, like the training batches). Ignored by other models.

        :meth:`hidden`, :meth:`predict_proba` and :meth:`predict_label_proba` take the same arguments.
        """
        var_names = column_names(X, var_names)
        if check:
            X = self.checked(X, var_names)
        dev = get_device(device)
        with on_device(dev, self.encoder):
            return predict(self.encoder.body, self.front_blocks(X, var_names, batches=batches), device=dev)

    def hidden(
        self, X, var_names: pd.Index | None = None, *, device: str = "auto", check: bool = True, batches=None
    ) -> np.ndarray:
        """The encoder's last hidden layer for the rows of ``X``."""
        var_names = column_names(X, var_names)
        if check:
            X = self.checked(X, var_names)
        dev = get_device(device)
        with on_device(dev, self.encoder):
            return predict(self.encoder.hidden_body(), self.front_blocks(X, var_names, batches=batches), device=dev)

    def cluster_body(self) -> nn.Module:
        """The clustering network without its frozen front: front outputs -> cluster logits."""
        encoder, head = self.cluster_net[0], self.cluster_net[1]
        return nn.Sequential(encoder.body, head)

    def predict_proba(
        self, X, var_names: pd.Index | None = None, *, device: str = "auto", check: bool = True, batches=None
    ) -> np.ndarray:
        """Cluster probabilities of the rows of ``X`` (needs a clustering network)."""
        if self.cluster_net is None:
            msg = "This model has no clustering network. Run `den.tl.cluster` (or fit den.DEN with cluster=True) first."
            raise ValueError(msg)
        var_names = column_names(X, var_names)
        if check:
            X = self.checked(X, var_names)
        return self.proba_of_front(self.front_blocks(X, var_names, batches=batches), device=device)

    def proba_of_front(self, blocks, *, device: str = "auto") -> np.ndarray:
        """Cluster probabilities from row blocks of the frozen front's outputs (:meth:`front_blocks`)."""
        dev = get_device(device)
        with on_device(dev, self.cluster_net):
            logits = predict(self.cluster_body(), blocks, device=dev)
        return softmax(logits, self.cluster_config.get("calibration", {}).get("temperature", 1.0))

    def predict_label_proba(
        self, X, var_names: pd.Index | None = None, *, device: str = "auto", check: bool = True, batches=None
    ) -> np.ndarray:
        """Label probabilities of the rows of ``X`` from the label head (needs a model trained with labels)."""
        if self.label_head is None:
            msg = "This model has no label head. Fit it with labels (`y=` or `labels_key=`) and label_head=True."
            raise ValueError(msg)
        var_names = column_names(X, var_names)
        if check:
            X = self.checked(X, var_names)
        dev = get_device(device)
        net = nn.Sequential(self.encoder.body, self.label_head)
        with on_device(dev, net):
            return softmax(predict(net, self.front_blocks(X, var_names, batches=batches), device=dev))

    # clustering network ---------------------------------------------------------
    def make_cluster_net(self, n_clusters: int, head_input: str = "hidden") -> nn.Sequential:
        """A clustering network whose encoder starts as a copy of the trained one.

        ``head_input="hidden"`` (the default): the copy drops its output layer and a linear
        head reads its last hidden layer. ``"embedding"``: a ``den.nn.ClusterHead``
        MLP reads the map (the paper's clustering network; kept to load clusterings saved that way).
        """
        encoder = copy.deepcopy(self.encoder)
        if head_input == "embedding":
            return nn.Sequential(encoder, ClusterHead(int(self.config["n_components"]), n_clusters))
        if head_input != "hidden":
            msg = f"Unknown cluster head input {head_input!r}; expected 'hidden' or 'embedding'."
            raise ValueError(msg)
        encoder.strip_output()  # keeps the layer names, so weights load by the same keys
        return nn.Sequential(encoder, nn.Linear(self.hidden_width, n_clusters))

    def attach_clusters(self, cluster_config: dict[str, Any], weights: dict[str, np.ndarray] | None = None) -> None:
        """Attach a clustering network described by ``cluster_config`` (and load ``weights``)."""
        net = self.make_cluster_net(int(cluster_config["n_clusters"]), cluster_config.get("head_input", "embedding"))
        if weights is not None:
            load_arrays(net, weights, "the clustering network")
        self.cluster_config = dict(cluster_config)
        self.cluster_net = net.eval()

    def attach_labels(self, label_config: dict[str, Any], head: nn.Module | dict[str, np.ndarray]) -> None:
        """Attach a label head (a module, or weights for a ``den.nn.ClusterHead``)."""
        if not isinstance(head, nn.Module):
            module = ClusterHead(int(self.config["n_components"]), len(label_config["categories"]))
            load_arrays(module, head, "the label head")
            head = module
        self.label_config = dict(label_config)
        self.label_head = head.eval()

    # serialisation --------------------------------------------------------------
    def to_uns(self) -> dict[str, Any]:
        """The encoder (and label head) as an h5ad-safe dict (JSON config + arrays)."""
        out = {"config": json.dumps(self.config), "weights": state_arrays(self.encoder)}
        if self.label_head is not None:
            out["labels"] = {"config": json.dumps(self.label_config), "weights": state_arrays(self.label_head)}
        return out

    def cluster_to_uns(self) -> dict[str, Any]:
        """The clustering network as an h5ad-safe dict."""
        return {"config": json.dumps(self.cluster_config), "weights": state_arrays(self.cluster_net)}

    @classmethod
    def from_config(cls, config: dict[str, Any], weights: dict[str, np.ndarray], where: str = "the model") -> DENModel:
        """Rebuild an encoder from its config and weights, checking the format."""
        version = int(config.get("format_version", 1))
        if version > FORMAT_VERSION:
            msg = (
                f"{where} was saved by a newer den (format {version}, den {config.get('den_version', '?')}); "
                f"this den reads formats up to {FORMAT_VERSION}. Upgrade scden."
            )
            raise ValueError(msg)
        self = cls(config, build_encoder(config))
        load_arrays(self.encoder, weights, where)
        return self

    @classmethod
    def from_uns(cls, model: dict[str, Any], cluster: dict[str, Any] | None = None) -> DENModel:
        """Rebuild from :meth:`to_uns` (and :meth:`cluster_to_uns`) output."""
        self = cls.from_config(json.loads(str(model["config"])), model["weights"], "the model in adata.uns")
        if "labels" in model:
            self.attach_labels(json.loads(str(model["labels"]["config"])), model["labels"]["weights"])
        if cluster is not None:
            self.attach_clusters(json.loads(str(cluster["config"])), cluster["weights"])
        return self

    @classmethod
    def from_adata(cls, adata: AnnData, key: str = "den", cluster_key: str | None = "den_clusters") -> DENModel:
        """The model stored by :func:`den.tl.embed` (and :func:`den.tl.cluster`) in ``adata.uns``.

        Parameters
        ----------
        adata
            An AnnData on which :func:`den.tl.embed` ran.
        key
            ``uns`` key of the embedding (its ``key_added``).
        cluster_key
            ``uns`` key of a clustering of that embedding to attach (its ``key_added``); ``None``, or a
            key that is absent: the map alone.
        """
        entry = adata.uns.get(key)
        if not isinstance(entry, dict) or "model" not in entry:
            msg = f"No den model in adata.uns[{key!r}]. Run `den.tl.embed(adata)` first (or pass the right `key`)."
            raise KeyError(msg)
        _check_owner(entry, key, "embed", "key")
        cluster = None
        if cluster_key is not None:
            centry = adata.uns.get(cluster_key)
            if isinstance(centry, dict) and "model" in centry:
                _check_owner(centry, cluster_key, "cluster", "cluster_key")
                if centry.get("params", {}).get("embedding_key", key) == key:
                    _check_not_stale(centry.get("fit", {}), entry["model"], key, cluster_key)
                    cluster = centry["model"]
        return cls.from_uns(entry["model"], cluster)

    def save(self, dir_path: str | Path, *, overwrite: bool = False) -> None:
        """Write ``config.json`` and ``weights.npz`` into the folder ``dir_path`` (made if absent).

        ``overwrite=True`` writes into a folder that holds other files; otherwise that is an error.
        """
        path = Path(dir_path).expanduser()
        if path.exists() and not path.is_dir():
            msg = f"{str(path)!r} is a file; den saves a model into a folder. Choose a folder path."
            raise FileExistsError(msg)
        if path.exists() and any(path.iterdir()) and not overwrite:
            msg = f"{str(path)!r} already exists and is not an empty folder. Choose another folder or pass `overwrite=True`."
            raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        weights = {f"encoder/{k}": v for k, v in state_arrays(self.encoder).items()}
        if self.cluster_net is not None:
            weights |= {f"cluster/{k}": v for k, v in state_arrays(self.cluster_net).items()}
        if self.label_head is not None:
            weights |= {f"labels/{k}": v for k, v in state_arrays(self.label_head).items()}
        meta = {"config": self.config, "cluster_config": self.cluster_config, "label_config": self.label_config}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
        np.savez(path / WEIGHTS_FILE, **weights)

    @classmethod
    def load(cls, dir_path: str | Path) -> DENModel:
        """Read a model written by :meth:`save` from the folder ``dir_path`` (no pickle is read).

        Every error names the folder and the file, and says whether the folder is not a
        den model, is damaged, or comes from a newer den.
        """
        path = Path(dir_path).expanduser()
        meta, weights = _read_folder(path)
        where = f"the model in {str(path)!r}"
        self = cls.from_config(meta["config"], _prefixed(weights, "encoder/"), where)
        if meta.get("label_config") is not None:
            self.attach_labels(meta["label_config"], _prefixed(weights, "labels/"))
        if meta.get("cluster_config") is not None:
            self.attach_clusters(meta["cluster_config"], _prefixed(weights, "cluster/"))
        return self

    def __repr__(self) -> str:
        c = self.config
        s = (
            f"DENModel({c.get('encoder', 'mlp')}: {c['n_genes']} features -> {c['n_components']} components, "
            f"hidden={c['hidden']}, n_pcs={c.get('n_pcs')}, {self.n_parameters:,} trainable parameters"
        )
        if self.cluster_config is not None:
            s += f", {self.cluster_config['n_clusters']} clusters"
        if self.label_config is not None:
            s += f", {len(self.label_config['categories'])} labels"
        return s + ")"


def _prefixed(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def _read_folder(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The config and weights of a saved model folder, with errors that name what is wrong."""
    config, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        msg = f"{str(path)!r} is not a folder; pass the folder written by `DENModel.save` / `DEN.save`."
        raise FileNotFoundError(msg)
    if not config.is_file() or not weights.is_file():
        msg = f"{str(path)!r} is not a den model folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE}."
        raise FileNotFoundError(msg)
    try:
        meta = json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = f"{str(config)!r} is damaged (not valid JSON: {e}); save the model again."
        raise ValueError(msg) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "n_genes" not in meta["config"]:
        msg = (
            f"{str(config)!r} is not a den model config (no 'config' with 'n_genes'); pass a folder written by "
            "den.DENModel.save or den.DEN.save."
        )
        raise ValueError(msg)
    try:
        with np.load(weights, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        msg = f"{str(weights)!r} is damaged or not a den weights file ({type(e).__name__}: {e}); save the model again."
        raise ValueError(msg) from None
    return meta, arrays


def _check_not_stale(cluster_fit: dict[str, Any], embedding: dict[str, Any], key: str, cluster_key: str) -> None:
    """Refuse a clustering made on an earlier embedding than the one now in ``uns[key]`` (when recorded)."""
    made_on = cluster_fit.get("embedding")
    if made_on is not None and str(made_on) != fingerprint(embedding):
        msg = (
            f"adata.uns[{cluster_key!r}] was made on an earlier den.tl.embed than the one now in adata.uns[{key!r}] "
            f"(the embedding was trained again since, or on a subset that carried these clusters). Run `den.tl.cluster(adata)` "
            "again (den.tl.transform also takes cluster_key=None: the map alone)."
        )
        raise ValueError(msg)
