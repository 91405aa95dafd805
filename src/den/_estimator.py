"""`den.DEN`: the Differentiating Embedding Network as a scikit-learn estimator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._clustering import check_cluster_count, fit_clusters
from ._config import ClusterConfig, EmbedConfig, Int
from ._data import Features, as_features, check_feature_names, check_query_scale, feature_names, missing_label_texts
from ._embedding import fit_embedding, warn_if_collapsed
from ._model import CONFIG_FILE, DENModel
from ._utils import check_flags, check_random_state


class DEN(ClusterMixin, TransformerMixin, BaseEstimator):
    """Differentiating Embedding Network :cite:p:`Robinson2020`: a parametric map with clusters found without k.

    A Siamese network reads each sample's features and is trained so that pairs of
    k-nearest neighbours land close on the map and pairs drawn at random land far
    apart, under a loss built on the F distribution of squared map distances. The
    trained network places new samples (:meth:`transform`); a clustering network
    trained on top assigns them to the clusters found without being told how many
    (:meth:`predict`). Works on arrays, sparse matrices, torch tensors and images;
    :func:`den.tl.embed` and :func:`den.tl.cluster` do the same on an AnnData.

    Parameters
    ----------
    n_components
        Dimension of the map.
    n_neighbors
        Neighbours per sample in the kNN graph that defines near pairs; the clustering
        works on the same graph.
    n_pcs
        Width of the frozen PCA layer at the input of the MLP encoder (features -> PCs),
        so training is fast and attributions still land on features. ``None`` feeds the
        features straight into a trainable first layer.
    encoder
        ``"mlp"`` (vectors; images are flattened), ``"conv"`` (images: 3x3 conv blocks, global
        average pooling, dense layers) or ``"auto"``: today the MLP for every input, as the
        Fashion-MNIST benchmark (``benchmarks/images.py``) found the conv encoder below it in
        accuracy and 6.6x slower on CPU within a 30-minute budget.
    hidden
        Widths of the hidden (dense) layers.
    loss
        ``"contrastive"``: for each near pair, ``-log(w_near / (w_near + sum of w_far))``
        against far partners drawn among the batch, with ``w = 1 - F_cdf(d^2; 2, dof)``
        (a Student-t kernel, as t-SNE's); ``"paper"``: the paper's terms ``F_cdf(d^2; 1,
        n_components)`` for near and ``1 - F_cdf`` for far pairs, mutual-neighbour near
        pairs and distance-weighted far partners. See the docs' method page.
    dof
        Degrees of freedom of the F distribution's denominator: the kernel's tail (smaller:
        heavier); contrastive loss only. ``None``: 3 (2 would be t-SNE's Cauchy kernel); the paper's
        loss always reads F(1, ``n_components``) and takes only ``None``.
    n_far
        Far partners per batch (contrastive: shared by every row) or per pair (paper).
    n_epochs
        Passes over all near pairs. ``None``: 250 pair visits per sample (at most 60 million in
        all, at least 300 steps).
    batch_size
        Near pairs per optimisation step.
    learning_rate
        Initial Adam learning rate; it decays to 0 on a cosine schedule.
    min_dist
        Map distance below which near pairs are no longer pulled together.
    input_noise
        Gaussian noise added to the network's inputs in training, in units of the typical
        distance between near partners (per input dimension), so the network learns to
        place samples it has not seen. ``0`` turns it off.
    ignore
        Paper's loss only: drop terms at or above this value; ``1.0`` keeps all.
    label_weight
        Semi-supervised (``fit(X, y)``): weight of the label head's cross-entropy.
    label_head
        Semi-supervised: train a head from the map to the labels (:meth:`predict_labels`).
    cluster
        Find and learn clusters in :meth:`fit` (``labels_``, :meth:`predict`).
    n_clusters
        Force this many clusters instead of discovering k.
    resolution
        Clusters merge while their share of data kNN edges exceeds ``resolution`` times
        what a random graph predicts (as Leiden's resolution); higher keeps more clusters.
    gamma
        Scale of map distances in the clustering affinity; larger joins nearby islands.
    max_clusters
        Largest k the clustering considers.
    min_cluster_size
        Smallest cluster kept; ``None``: ``n_neighbors`` (at most ``n_samples // 20`` but at
        least 3 for small data, at least ``n_samples // 1000`` for large).
    device
        ``"auto"`` (one CUDA GPU if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    devices
        Train the map data-parallel on this many processes (torch.distributed DDP: gloo on
        CPUs, NCCL on GPUs 0 to ``devices - 1``); each rank takes ``batch_size`` pairs a step,
        so an epoch takes ``1 / devices`` of the steps, at ``learning_rate x devices``; CPU ranks
        average their weights every 4 steps after the first epoch (post-local SGD).
        Results are reproducible for a given seed and ``devices``, but differ from
        ``devices=1``. In a script, call den under ``if __name__ == "__main__":`` (the
        processes are spawned). Inside a ``torchrun`` group keep ``devices=1``: den trains
        on every rank of it. See the docs' method page.
    random_state
        Seed of everything random (PCA, pairs, weights, batches, clustering); ``None`` draws one.
    progress_bar
        Show progress bars while training.

    Attributes
    ----------
    model_
        The trained :class:`den.DENModel` (encoder, clustering network, label head).
    embedding_
        Map coordinates of the training samples.
    labels_
        Cluster of each training sample (with ``cluster=True``).
    n_clusters_
        Number of clusters found.
    classes_
        Labels of the semi-supervised head (after ``fit(X, y)``).
    history_
        Mean training loss per epoch.
    n_features_in_
        Number of input features (pixels for images).
    feature_names_in_
        Column names of ``X`` when it was a data frame with string column names; ``transform``,
        ``predict`` and ``explain`` then refuse a data frame whose columns differ.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> import den
    >>> X = load_digits().data / 16
    >>> est = den.DEN(random_state=0).fit(X)
    >>> est.transform(X[:5]).shape
    (5, 2)
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        n_neighbors: int = 15,
        n_pcs: int | None = 50,
        encoder: str = "auto",
        hidden=(128, 128),
        loss: str = "contrastive",
        dof: float | None = None,
        n_far: int = 128,
        n_epochs: int | None = None,
        batch_size: int = 512,
        learning_rate: float = 2e-2,
        min_dist: float = 0.0,
        input_noise: float = 0.15,
        ignore: float = 1.0,
        label_weight: float = 1.0,
        label_head: bool = True,
        cluster: bool = True,
        n_clusters: int | None = None,
        resolution: float = 1.0,
        gamma: float = 1.5,
        max_clusters: int = 40,
        min_cluster_size: int | None = None,
        device: str = "auto",
        devices: int = 1,
        random_state: int | None = 0,
        progress_bar: bool = False,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_pcs = n_pcs
        self.encoder = encoder
        self.hidden = hidden
        self.loss = loss
        self.dof = dof
        self.n_far = n_far
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.min_dist = min_dist
        self.input_noise = input_noise
        self.ignore = ignore
        self.label_weight = label_weight
        self.label_head = label_head
        self.cluster = cluster
        self.n_clusters = n_clusters
        self.resolution = resolution
        self.gamma = gamma
        self.max_clusters = max_clusters
        self.min_cluster_size = min_cluster_size
        self.device = device
        self.devices = devices
        self.random_state = random_state
        self.progress_bar = progress_bar

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        # den computes in float32 whatever the input dtype
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def configs(self) -> tuple[EmbedConfig, ClusterConfig]:
        """The validated training configurations of the current parameters."""
        embed = EmbedConfig.from_kwargs(**{k: getattr(self, k) for k in EmbedConfig.names()})
        cluster = ClusterConfig(
            n_neighbors=self.n_neighbors,
            min_cluster_size=self.min_cluster_size,
            n_clusters=self.n_clusters,
            resolution=self.resolution,
            gamma=self.gamma,
            max_clusters=self.max_clusters,
            device=self.device,
            random_state=self.random_state,
        )
        return embed, cluster

    def fit(self, X, y=None):
        """Train the map (and, with ``cluster=True``, the clustering network) on ``X``.

        Parameters
        ----------
        X
            Samples x features (numpy, scipy sparse, torch, lists), or images ``(n, H, W)`` /
            ``(n, C, H, W)``.
        y
            Optional labels for the semi-supervised mode: ``-1``, ``NaN`` or ``None`` mark
            unlabelled samples. Labelled samples add same-label near pairs, near pairs with
            different labels are dropped, and (``label_head=True``) a label head is trained.
        """
        embed, cluster = self.configs()
        check_flags(cluster=self.cluster, progress_bar=self.progress_bar)
        features = named(as_features(X), feature_names(X))
        if self.cluster:
            check_cluster_count(cluster.n_clusters, features.n, "samples")
        codes, classes = (None, None) if y is None else encode_labels(y, features.n)
        seed = check_random_state(self.random_state)
        for stale in ("labels_", "n_clusters_", "classes_"):  # a refit must not keep the last fit's results
            self.__dict__.pop(stale, None)
        fit = fit_embedding(
            features, embed, seed=seed, labels=codes, label_categories=classes, progress_bar=self.progress_bar
        )
        self.model_ = fit.model
        self.history_ = fit.history
        self.n_features_in_ = features.X.shape[1]
        self._set_feature_names(X)
        self.image_shape_ = features.image_shape
        self.embedding_ = fit.model.embed(features.X, features.var_names, device=self.device, check=False)
        warn_if_collapsed(self.embedding_)
        if classes is not None:
            self.classes_ = np.asarray(classes, dtype=object if isinstance(classes[0], str) else None)
        if self.cluster:
            result = fit_clusters(
                self.model_,
                features,
                self.embedding_,
                cluster,
                seed=seed,
                rep=fit.rep,
                progress_bar=self.progress_bar,
                graph=fit.graph,
            )
            self.labels_ = result.proba.argmax(1).astype(np.int64)
            self.n_clusters_ = len(result.categories)
        return self

    def fit_predict(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit and return the cluster of each sample (needs ``cluster=True``).

        Parameters
        ----------
        X, y
            As in :meth:`fit`.
        """
        _no_fit_params(fit_params)
        if self.cluster is False:
            msg = "fit_predict returns the clusters found in fit: set cluster=True (the default)."
            raise ValueError(msg)
        return self.fit(X, y).labels_

    def fit_transform(self, X, y=None, **fit_params):
        """Fit and return the map of ``X`` (the same as ``fit(X).transform(X)``)."""
        _no_fit_params(fit_params)
        return self.fit(X, y).embedding_

    def _set_feature_names(self, X) -> None:
        names = feature_names(X)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _features(self, X):
        check_is_fitted(self, "model_")
        check_feature_names(getattr(self, "feature_names_in_", None), X)
        features = as_features(X, min_samples=1)
        if features.X.shape[1] != self.n_features_in_:
            msg = f"X has {features.X.shape[1]} features, but DEN is expecting {self.n_features_in_} features as input."
            raise ValueError(msg)
        fitted_shape = getattr(self, "image_shape_", None)
        if features.image_shape is not None and fitted_shape is None:
            msg = (
                f"X has {np.ndim(X)} dimensions, but DEN was fitted on samples x features (2-D); pass "
                "X.reshape(len(X), -1) to read each sample's values in order."
            )
            raise ValueError(msg)
        if features.image_shape is not None and fitted_shape is not None and features.image_shape != fitted_shape:
            msg = (
                f"X holds images of shape {features.image_shape} (channels, height, width), but DEN was fitted on "
                f"{tuple(fitted_shape)}; reshape them, or pass them flattened to read the pixels in order."
            )
            raise ValueError(msg)
        check_query_scale(self.model_.config.get("input_stats"), features.X, "X")
        # columns are read by position (scikit-learn's contract): they take the model's feature names
        return Features(features.X, self.model_.var_names, features.image_shape)

    def transform(self, X) -> np.ndarray:
        """Map coordinates of new samples (each placed on its own by the trained network).

        Parameters
        ----------
        X
            Samples shaped as in :meth:`fit`: the same features (or image shape).

        Returns
        -------
        ``(n, n_components)`` float32 coordinates.
        """
        features = self._features(X)
        return self.model_.embed(features.X, features.var_names, device=self.device, check=False)

    def predict_proba(self, X) -> np.ndarray:
        """Cluster probabilities of samples.

        Parameters
        ----------
        X
            Samples shaped as in :meth:`fit`.

        Returns
        -------
        ``(n, n_clusters_)`` probabilities (calibrated; rows sum to 1).
        """
        features = self._features(X)
        return self.model_.predict_proba(features.X, features.var_names, device=self.device, check=False)

    def predict(self, X) -> np.ndarray:
        """Cluster of each sample: the most probable of :meth:`predict_proba`.

        Parameters
        ----------
        X
            Samples shaped as in :meth:`fit`.
        """
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def predict_labels_proba(self, X) -> np.ndarray:
        """Probabilities of the semi-supervised labels, from the label head.

        Parameters
        ----------
        X
            Samples shaped as in :meth:`fit`.

        Returns
        -------
        ``(n, len(classes_))`` probabilities, columns in the order of ``classes_``.
        """
        features = self._features(X)
        return self.model_.predict_label_proba(features.X, features.var_names, device=self.device, check=False)

    def predict_labels(self, X) -> np.ndarray:
        """The semi-supervised label of each sample, from the label head.

        Parameters
        ----------
        X
            Samples shaped as in :meth:`fit`.
        """
        proba = self.predict_labels_proba(X)  # first: it says why when the fit had no labels
        return self.classes_[proba.argmax(1)]

    def explain(self, X, *, n_background: int = 200, random_state: int = 0) -> np.ndarray:
        """SHAP values of each sample's own cluster logit, feature by feature (pixels for images).

        The background is a sample of ``X`` stratified by predicted cluster; values add up to
        the sample's logit minus the background's mean logit (checked; see
        :func:`den.tl.marker_features` for the explainers). Plot images with
        :func:`den.pl.image_attributions`.

        Parameters
        ----------
        X
            Samples to explain, as accepted by :meth:`fit`.
        n_background
            Background samples (drawn from ``X``, stratified by predicted cluster).
        random_state
            Seed of the background sample and of the explainer.

        Returns
        -------
        ``(n_samples, n_features)`` float32 SHAP values.
        """
        from ._explain import explain
        from .tl._groups import stratified_background

        Int(1).check("n_background", n_background)
        random_state = check_random_state(random_state)
        features = self._features(X)
        rows = features.X if not hasattr(features.X, "toarray") else features.X.toarray()
        rows = np.asarray(rows, dtype=np.float32)
        proba = self.model_.predict_proba(features.X, features.var_names, device=self.device, check=False)
        clusters = proba.argmax(1)  # from the features (a flattened copy would lose images' pixel names)
        rng = np.random.default_rng(random_state)
        background = rows[stratified_background(pd.Categorical(clusters), n_background, rng)]
        values = np.zeros_like(rows)
        for c in np.unique(clusters):
            sel = clusters == c
            readout = np.eye(self.model_.cluster_config["n_clusters"], dtype=np.float32)[c]
            values[sel] = explain(
                self.model_.cluster_net, readout, rows[sel], background, random_state=random_state
            ).values
        return values

    def save(self, dir_path: str | Path, *, overwrite: bool = False) -> None:
        """Write the trained networks and the parameters into a folder (JSON + ``.npz``; no pickle).

        Parameters
        ----------
        dir_path
            Folder to write (created if missing).
        overwrite
            Write into ``dir_path`` even when it exists and is not empty (otherwise an error).
        """
        check_is_fitted(self, "model_")
        record = self._record()  # refused before anything is written
        self.model_.save(dir_path, overwrite=overwrite)
        path = Path(dir_path).expanduser() / CONFIG_FILE
        meta = json.loads(path.read_text())
        meta["estimator"] = record
        path.write_text(json.dumps(meta, indent=1))

    def _record(self) -> dict:
        """Parameters, feature names and classes as JSON values (numpy scalars as numbers, a device as text)."""
        record = {"params": {k: json_value(v, k) for k, v in self.get_params().items()}}
        record["n_features_in"] = int(self.n_features_in_)
        if hasattr(self, "feature_names_in_"):
            record["feature_names_in"] = self.feature_names_in_.tolist()
        if hasattr(self, "classes_"):
            record["classes"] = [json_value(c, "classes_") for c in self.classes_]
        return record

    @classmethod
    def load(cls, dir_path: str | Path) -> DEN:
        """Read an estimator written by :meth:`save` (a folder from :meth:`den.DENModel.save` loads too).

        Parameters
        ----------
        dir_path
            The folder :meth:`save` wrote (a JSON config and an ``.npz`` of weights; no pickle is read).
        """
        model = DENModel.load(dir_path)
        meta = json.loads((Path(dir_path).expanduser() / CONFIG_FILE).read_text())
        info = meta.get("estimator", {})
        params = dict(info.get("params", {}))
        if "params" not in info:  # a DENModel folder: the architecture is known from the model
            c = model.config
            params = {"n_components": c["n_components"], "hidden": c["hidden"], "n_pcs": c.get("n_pcs")}
        if "hidden" in params:
            params["hidden"] = tuple(params["hidden"])  # JSON has no tuples
        est = cls(**params)
        est.model_ = model
        est.n_features_in_ = int(info.get("n_features_in", model.config["n_genes"]))
        if "feature_names_in" in info:
            est.feature_names_in_ = np.asarray(info["feature_names_in"], dtype=object)
        shape = model.config.get("input_shape")
        est.image_shape_ = tuple(shape) if shape is not None else None
        classes = info.get("classes", model.label_config.get("categories") if model.has_labels else None)
        if classes is not None:  # a DENModel folder trained with labels: its label head's categories
            est.classes_ = np.asarray(classes, dtype=object if isinstance(classes[0], str) else None)
        if model.has_clusters:
            est.n_clusters_ = int(model.cluster_config["n_clusters"])
        return est


def json_value(value, name: str):
    """``value`` as JSON can hold it (numpy scalars and arrays, tuples, a torch device), or a clear error."""
    if isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray | tuple):
        value = [json_value(v, name) for v in value]
    elif type(value).__name__ == "device":  # torch.device
        value = str(value)
    if value is None or isinstance(value, bool | int | float | str | list):
        return value
    msg = f"{name} holds {value!r} ({type(value).__name__}), which a model folder cannot store (JSON); use numbers or text."
    raise TypeError(msg)


def named(features: Features, names: np.ndarray | None) -> Features:
    """``features`` with a data frame's column names as feature names (when they are unique)."""
    if names is None or len(set(names)) != len(names):
        return features
    return Features(features.X, pd.Index(names), features.image_shape)


def unlabelled(values: pd.Series) -> np.ndarray:
    """Which of ``values`` mark an unlabelled sample: missing (NaN, None) or the number ``-1``."""
    minus_one = [isinstance(v, int | float | np.number) and not isinstance(v, bool) and v == -1 for v in values]
    return values.isna().to_numpy() | np.asarray(minus_one, dtype=bool)


def _class_order(value) -> tuple:
    """Numbers by value (2 before 2.5 before 10, ints and floats together), other labels by kind, then value."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_):
        return (0, "", float(value))
    return (1, str(type(value)), value)


def encode_labels(y, n: int, name: str = "y") -> tuple[np.ndarray, list]:
    """Integer codes (``-1`` for unlabelled: ``-1``, ``NaN``, ``None``) and the sorted classes of ``y``.

    Refuses labels that cannot be meant as classes (:func:`check_classes`); ``name`` is what the
    messages call them (``"y"``, ``"adata.obs['cell_type']"``).
    """
    raw = y.to_numpy() if isinstance(y, pd.Series) else np.asarray(y, dtype=object)
    if raw.ndim > 2 or (raw.ndim == 2 and raw.shape[1] != 1):
        msg = f"{name} must be 1-D, one label per sample; got shape {raw.shape}."
        raise ValueError(msg)
    values = pd.Series(raw.ravel())
    if len(values) != n:
        msg = (
            f"{name} has {len(values)} labels but X has {n} samples; pass one label per sample (-1 or NaN: unlabelled)."
        )
        raise ValueError(msg)
    missing = unlabelled(values)
    known = values[~missing]
    if known.empty:
        msg = (
            f"{name} has no labelled sample (every value is -1, NaN or None); pass no labels for unsupervised training."
        )
        raise ValueError(msg)
    if 0 < int(known.map(lambda v: isinstance(v, str)).sum()) < len(known):
        msg = f"{name} mixes text and numbers as labels (e.g. 0 and 'a'); pass labels of one kind."
        raise TypeError(msg)
    if infinite := [v for v in set(known.tolist()) if isinstance(v, float | np.floating) and not np.isfinite(v)]:
        msg = f"{name} holds {infinite[0]!r} as a label; mark unknown labels as NaN or -1."
        raise ValueError(msg)
    classes = sorted(set(known.tolist()), key=_class_order)
    check_classes(known, classes, n, name)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.full(n, -1, dtype=np.int64)
    codes[np.flatnonzero(~missing)] = [index[v] for v in known]
    return codes, classes


def check_classes(known: pd.Series, classes: list, n: int, name: str) -> None:
    """Errors for labels that are not classes: "nan" as text, one class, a measurement, an ID per sample."""
    texts = missing_label_texts(classes)
    if texts:
        count = int(known.isin(texts).sum())
        msg = (
            f"{name} holds {texts[0]!r} as the label of {count} samples: missing values turned into text (e.g. by "
            "astype(str))? Mark unknown labels as NaN, e.g. column.replace(['nan', ''], np.nan), or -1."
        )
        raise ValueError(msg)
    if len(classes) == 1:
        msg = (
            f"{name} holds one label ({classes[0]!r}) for every labelled sample: labels teach the map nothing. Pass "
            "labels with at least two classes, or none for unsupervised training."
        )
        raise ValueError(msg)
    counts = known.value_counts()
    alone = int(counts[counts == 1].sum())  # samples whose label no other sample has
    if alone > n / 2:
        msg = (
            f"{name} looks like a measurement or an ID, not classes: {alone} of {n} samples carry a label no other "
            f"sample has ({len(classes)} labels). Pass categorical labels (e.g. cell types; NaN or -1 where unknown)."
        )
        raise ValueError(msg)


def _no_fit_params(fit_params: dict) -> None:
    """Refuse keyword arguments to ``fit_*`` (scikit-learn's signature has them; ``fit`` takes none)."""
    if fit_params:
        msg = (
            f"DEN.fit takes no fit parameters (got {sorted(fit_params)}); set options on the estimator instead, "
            "e.g. DEN(progress_bar=True) or est.set_params(...)."
        )
        raise TypeError(msg)
