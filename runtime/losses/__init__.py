"""The losses of a ``train`` block, one module per kind of loss.

- ``distill_loss`` (``distill.py``) takes student and teacher logits (or a cached top-k
  teacher); ``fused_linear_distill_loss`` (``fused_linear.py``) takes hidden states and lm_head
  weights and never holds the full logits. Both run the fused Triton kernels on CUDA and the
  torch reference elsewhere (``reference.py``, registry ``DIVERGENCES`` keyed by the loss's
  ``kernel_mode``, the one list of the divergences in the runtime);
- what a training step adds up, each loss as a sum over what it counts:
  ``divergence_sums.py`` (the token-level divergences), ``sft.py``, ``hidden.py``
  (``hidden_mse``, ``hidden_cosine``), ``dpo.py``, and ``head.py`` (losses through the lm_head
  in checkpointed chunks, on the fused-linear path).

Importing this package does not import triton.
"""

from .distill import distill_loss
from .fused_linear import fused_linear_distill_loss
from .reference import DIVERGENCES

__all__ = ["DIVERGENCES", "distill_loss", "fused_linear_distill_loss"]
