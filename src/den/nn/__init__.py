"""PyTorch modules of den. They know nothing about AnnData.

Every network is an :class:`torch.nn.Sequential` of :class:`~torch.nn.Linear`
and :class:`~torch.nn.ReLU` modules, each used once and never in place, which
is what shap's PyTorch DeepExplainer handles exactly.
"""

from ._modules import ClusterHead, Encoder, input_projection, select_output, set_pca

__all__ = ["ClusterHead", "Encoder", "input_projection", "select_output", "set_pca"]
