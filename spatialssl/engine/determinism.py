"""``train.deterministic``: the same seed gives bit-identical weights on the same machine,
torch and device.

Without it the seed fixes the data order and every augmentation draw, but weights can still
differ in the last bits: measured here (torch 2.13, CPU, 2 threads), the backward of the
pair gathers (advanced indexing -> index_put_ with accumulate) adds floats atomically from
several threads, in whatever order they arrive. Deterministic algorithms take a sorted path
for it, which was enough for bit-identical RR, SR and PART runs on 2 threads; no need for
one thread. On CUDA, cuDNN must also stop autotuning and cuBLAS needs a fixed workspace."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = ":4096:8"  # what CUDA documents for reproducible cuBLAS results


@contextmanager
def algorithms(deterministic: bool):
    """Within: deterministic kernels when asked, else cuDNN autotuning (fixed input shapes).
    Afterwards the process's previous settings are back (pretrain may run several times)."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_workspace = deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_workspace:  # read when cuBLAS starts, so before any CUDA work of the run
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if set_workspace:
            del os.environ["CUBLAS_WORKSPACE_CONFIG"]
