"""train.precision: what ``auto`` becomes on this device, the autocast dtype, and TF32 for what stays fp32.

``auto`` (the default) is bf16 on GPUs that compute it natively (CUDA compute capability 8.0 or later: A100,
H100, RTX 30xx on; ROCm's that have it), fp16 with a gradient scaler on older CUDA GPUs (V100, T4), and fp32 on
the CPU (bf16 there is emulated and slow without AVX-512) and on MPS. The run's config, its checkpoints and
results record what ``auto`` became, not ``auto``."""
from __future__ import annotations

from typing import Optional

import torch

PRECISIONS = ("auto", "bf16", "fp16", "tf32", "fp32")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the others run without autocast


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` as it will run on ``device``: ``auto`` made concrete, the others as they are."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    if torch.version.hip is not None:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    return AUTOCAST.get(precision)


def set_matmul_precision(precision: str, device: torch.device) -> None:
    """On CUDA, fp32 matrix products and convolutions on TF32 tensor cores (10-bit mantissa, fp32 range: what
    autocast leaves in fp32, and all of a ``tf32`` run), except where ``fp32`` asks for strict fp32."""
    if device.type != "cuda":
        return
    allowed = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
