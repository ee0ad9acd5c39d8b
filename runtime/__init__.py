"""kdlang's runtime: executor, cache, teachers, stages, training, losses and kernels.

Installed as ``kdlang.runtime``. Everything here may import torch, transformers, datasets and
triton; the language side (``kdlang.syntax``, ``kdlang.ir``, ``kdlang.check``, ``kdlang.plan``)
never imports this package at module level.
"""
