"""Token-level distillation losses.

``distill_loss`` takes student and teacher logits (or a cached top-k teacher);
``fused_linear_distill_loss`` takes hidden states and lm_head weights and never holds the
full logits. Both run the fused Triton kernels on CUDA and the torch reference
(``reference.py``, registry ``DIVERGENCES`` keyed by the DSL word) elsewhere. Importing
this package does not import triton.
"""

from .distill import distill_loss
from .fused_linear import fused_linear_distill_loss
from .reference import DIVERGENCES

__all__ = ["DIVERGENCES", "distill_loss", "fused_linear_distill_loss"]
