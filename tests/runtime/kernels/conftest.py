"""Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors.

Triton decides between compiling and interpreting when a kernel is decorated, so the
switch is set here, before any test module imports the kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
