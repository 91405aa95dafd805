"""Training: data sources, training plans and the runner that executes them.

A *source* hands the runner rows of network inputs on the training device; a
*plan* owns the trainable modules and turns a batch into a loss (the embedding
plan reads pairs from :class:`den._pairs.PairSampler`; the classifier plan reads
labelled cells); the :class:`Runner` owns everything else: the optimiser, the
learning-rate schedule, epochs and progress bar, the device and threads. A new
data source (on-disk rows) or a distributed runner plugs in at these seams.
"""

from ._plans import ClassifierPlan, EmbeddingPlan, fit_classifier
from ._runner import Runner, training_threads
from ._sources import MatrixSource, TensorSource

__all__ = [
    "ClassifierPlan",
    "EmbeddingPlan",
    "fit_classifier",
    "MatrixSource",
    "Runner",
    "TensorSource",
    "training_threads",
]
