"""torchvision for detection on any torch. Its detection models call two compiled operators, ``torchvision::nms``
(through batched_nms) and ``torchvision::roi_align`` (MultiScaleRoIAlign, mask targets). A torchvision built for
another torch cannot load them, and then cannot even be imported; ``import_torchvision`` defines them under
torchvision's own schemas with pure-torch kernels, so torchvision's models run unchanged (slower)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Optional

import torch

from ..errors import MissingPackage, first_line, warn

# The schemas of torchvision 0.28's compiled operators (torchvision/csrc/ops/*.cpp) for every op its
# _meta_registrations.py registers a fake kernel for: it fails to import while any of them is undefined.
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
    "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) "
    "-> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

_fallback: Optional[torch.library.Library] = None  # held: the definitions vanish when the Library is collected


def import_torchvision():
    """The torchvision module, with working ``nms`` and ``roi_align`` whether or not its compiled kernels load."""
    if importlib.util.find_spec("torchvision") is None:
        raise MissingPackage('detection needs torchvision: pip install "spatialssl[detection]" '
                             "(or a torchvision matching your torch)")
    try:
        torchvision, reason = importlib.import_module("torchvision"), "torch.ops.torchvision.nms does not exist"
    except Exception as err:
        if _defined("nms"):
            raise  # the compiled kernels loaded: the failure is something else
        torchvision, reason = None, first_line(err)
    if _defined("nms"):
        return torchvision
    _define_fallback()
    if torchvision is None:  # the failed import left some submodules behind; import them again over our ops
        for name in [name for name in sys.modules if name.partition(".")[0] == "torchvision"]:
            del sys.modules[name]
        torchvision = importlib.import_module("torchvision")
    # torchvision's wrappers refuse to call an op unless its _C loaded; let through the two we provide, so the
    # others keep torchvision's own message.
    boxes, align = sys.modules["torchvision.ops.boxes"], sys.modules["torchvision.ops.roi_align"]
    boxes._assert_has_ops = align._assert_has_ops = align._has_ops = _provided
    warn(f"torchvision's compiled kernels could not load ({reason}); spatialssl's pure-torch nms and roi_align "
         f"stand in: correct but slower (install a torchvision built for torch {torch.__version__} for speed)")
    return torchvision


def _defined(op: str) -> bool:
    return hasattr(torch.ops.torchvision, op)


def _provided() -> bool:
    return True


def _define_fallback() -> None:
    global _fallback
    _fallback = torch.library.Library("torchvision", "FRAGMENT")
    for schema in SCHEMAS:
        _fallback.define(schema)
    _fallback.impl("nms", nms, "CompositeExplicitAutograd")
    # Written in differentiable torch ops, so autograd needs no backward of its own.
    _fallback.impl("roi_align", roi_align, "CompositeImplicitAutograd")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression as torchvision's: the indices of the kept boxes (x1, y1, x2, y2) by decreasing
    score (ties: the lower index first), each suppressing the later boxes it overlaps with IoU > ``iou_threshold``."""
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: f"boxes must be N x 4, got {tuple(boxes.shape)}")
    torch._check(scores.dim() == 1 and len(scores) == len(boxes),
                 lambda: f"scores must be {len(boxes)} long, got {tuple(scores.shape)}")
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order].to(torch.promote_types(boxes.dtype, torch.float32))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    low = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    overlap = (high - low).clamp(min=0).prod(dim=2)
    suppresses = (overlap / (area[:, None] + area[None, :] - overlap) > iou_threshold).cpu()
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    kept = []
    for i in range(len(boxes)):  # greedy: whether box i survives depends on the boxes kept before it
        if not removed[i]:
            kept.append(i)
            removed |= suppresses[i]
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def roi_align(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
              sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """torchvision's RoIAlign: K x C x pooled_height x pooled_width, each bin the average of a grid of bilinear
    samples of ``input`` (N x C x H x W) in roi k (``rois`` K x 5: batch index, x1, y1, x2, y2)."""
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "rois must have shape as Tensor[K, 5]")
    torch._check(input.dtype == rois.dtype, lambda: f"input is {input.dtype} but rois {rois.dtype}; they must match")
    # Half precision would put sample positions pixels off; compute in float32 as torchvision's autocast does.
    work = input.to(torch.promote_types(input.dtype, torch.float32))
    rois = rois.detach().to(work.dtype)
    batch, channels, height, width = work.shape
    box = rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)  # x1, y1, x2, y2 in input pixels
    rows, row_weights = _taps(box[:, 1], box[:, 3], height, pooled_height, sampling_ratio, aligned)
    cols, col_weights = _taps(box[:, 0], box[:, 2], width, pooled_width, sampling_ratio, aligned)
    pixels = (rois[:, 0].long() * height)[:, None, None, None, None] + rows[:, :, None, :, None]
    pixels = pixels * width + cols[:, None, :, None, :]  # K x PH x PW x row taps x column taps
    weights = row_weights[:, :, None, :, None] * col_weights[:, None, :, None, :]
    # Each bin is a weighted sum of pixel rows of the channels-last map: embedding_bag sums them without
    # materialising the K x PH x PW x taps x C samples.
    pooled = torch.nn.functional.embedding_bag(
        pixels.flatten(3).flatten(0, 2), work.permute(0, 2, 3, 1).reshape(batch * height * width, channels),
        per_sample_weights=weights.flatten(3).flatten(0, 2), mode="sum")
    pooled = pooled.view(len(rois), pooled_height, pooled_width, channels).permute(0, 3, 1, 2)
    return pooled.to(input.dtype)


def _taps(start: torch.Tensor, end: torch.Tensor, size: int, bins: int, sampling_ratio: int, aligned: bool):
    """Along one axis of K rois: the pixels (K x bins x taps, long) that the bilinear samples of each bin read and
    their weights, which hold the interpolation, torchvision's border rule and the average over the bin's samples.
    An adaptive grid (sampling_ratio <= 0: ceil(bin size) samples) varies by roi: taps past a roi's grid weigh 0."""
    length = end - start
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / bins
    grid = torch.full_like(start, sampling_ratio) if sampling_ratio > 0 else torch.ceil(bin_size).clamp(min=0)
    samples = sampling_ratio if sampling_ratio > 0 else max(int(grid.max()) if len(grid) else 0, 1)
    index = torch.arange(samples, device=start.device, dtype=start.dtype)
    position = (start[:, None, None] + torch.arange(bins, device=start.device, dtype=start.dtype)[:, None]
                * bin_size[:, None, None] + (index + 0.5) * bin_size[:, None, None] / grid.clamp(min=1)[:, None, None])
    # torchvision: a sample beyond a pixel past the border reads 0; nearer ones read the border pixel.
    inside = (position >= -1.0) & (position <= size)
    weight = (inside & (index < grid[:, None, None])) / grid.clamp(min=1)[:, None, None]
    position = position.clamp(0, size - 1)
    low = position.long()
    high = (low + 1).clamp(max=size - 1)
    fraction = position - low
    return torch.cat([low, high], dim=2), torch.cat([weight * (1 - fraction), weight * fraction], dim=2)
