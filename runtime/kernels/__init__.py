"""Fused Triton kernels of the distillation losses (imported lazily by
``kdlang.runtime.losses``; see docs/kernels.md)."""
