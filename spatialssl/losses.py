"""Losses of the relation and contrastive methods; each usable on its own."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def focal_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                          alpha: float = 0.5) -> torch.Tensor:
    """Focal loss on BCE-with-logits (Lin et al.), mean over elements.
    ``alpha`` weighs positives, ``1 - alpha`` negatives; gamma = 0, alpha = 0.5 is BCE / 2."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * (1 - p_true).pow(gamma) * bce).mean()


class FocalBCELoss(nn.Module):
    """Relational Reasoning's loss: focal BCE (gamma 2, alpha 0.5) on same/different logits."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_bce_with_logits(logits, targets, self.gamma, self.alpha)


def axis_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each column of P x 2 positions: (MSE_x, MSE_y), Spatial Reasoning's position terms."""
    return (outputs - targets).pow(2).mean(0)


class SpatialRelationLoss(nn.Module):
    """Spatial Reasoning's loss (paper eq. 3): BCE on column 0 + MSE on column 1 (x) +
    MSE on column 2 (y). ``outputs`` and ``targets`` are P x 3. With ``focal`` the BCE term
    is RR's focal loss instead. ``position_weight`` multiplies each MSE: 1 is the paper's
    eq. 3; the official code takes one MSE over both axes, i.e. 0.5.
    Returns (total, {"bce", "mse_x", "mse_y"})."""

    def __init__(self, focal: bool = False, position_weight: float = 1.0):
        super().__init__()
        if position_weight < 0:
            raise ValueError(f"position_weight must be >= 0, got {position_weight}")
        self.focal, self.position_weight = focal, position_weight

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        if self.focal:
            bce = focal_bce_with_logits(outputs[:, 0], targets[:, 0])
        else:
            bce = F.binary_cross_entropy_with_logits(outputs[:, 0], targets[:, 0])
        mse_x, mse_y = axis_mse(outputs[:, 1:], targets[:, 1:])
        total = bce + self.position_weight * (mse_x + mse_y)
        return total, {"bce": bce.detach(), "mse_x": mse_x.detach(), "mse_y": mse_y.detach()}


class RelativePositionLoss(nn.Module):
    """PART's loss (eq. 4): mean squared error over the chosen pairs and all channels
    (dx, dy and, in the scale mode, dw, dh). Returns (total, per-channel MSE and the mean
    Euclidean position error in reference-patch units)."""

    CHANNELS = ("dx", "dy", "dw", "dh")

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        squared = (outputs - targets).pow(2)
        per_channel = squared.flatten(0, -2).mean(0).detach()
        parts = {f"mse_{name}": per_channel[i] for i, name in enumerate(self.CHANNELS[: outputs.shape[-1]])}
        parts["position_error"] = squared[..., :2].sum(-1).sqrt().mean().detach()
        return squared.mean(), parts


def normalized_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's normalised-pixel targets: each patch (the last dim) minus its mean, over the square root of
    its variance (unbiased, as MAE's ``var``) + ``eps``."""
    return (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + eps).sqrt()


class MaskedPixelLoss(nn.Module):
    """MAE's loss: the mean squared error of each patch's predicted pixels, averaged over the masked patches
    only. ``forward(predicted, patches, masked)``: B x N x K, B x N x K true pixels, B x N bool. With
    ``norm_pix`` the targets are ``normalized_patches``. Returns (loss, {})."""

    def __init__(self, norm_pix: bool = True):
        super().__init__()
        self.norm_pix = norm_pix

    def forward(self, predicted: torch.Tensor, patches: torch.Tensor, masked: torch.Tensor) -> tuple:
        targets = normalized_patches(patches) if self.norm_pix else patches
        per_patch = (predicted - targets).pow(2).mean(-1)
        weights = masked.to(per_patch.dtype)
        return (per_patch * weights).sum() / weights.sum(), {}


# --- Contrastive (SimCLR) -------------------------------------------------------------------------


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1): every one of the 2B L2-normalised projections must
    pick its other view among the 2B - 1 others by cosine similarity / ``temperature`` (softmax
    cross-entropy), averaged over all 2B. ``z`` is view-major: rows b and B + b are the two views of
    image b. Returns (loss, {"contrastive_acc": share of rows whose other view ranks first})."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> tuple:
        rows = len(z)
        if rows < 2 or rows % 2:
            raise ValueError(f"z must hold two views of every image (an even number of rows >= 2), got {rows}")
        z = F.normalize(z, dim=1)
        itself = torch.eye(rows, dtype=torch.bool, device=z.device)
        logits = (z @ z.t() / self.temperature).masked_fill(itself, float("-inf"))
        other_view = torch.arange(rows, device=z.device).roll(rows // 2)
        accuracy = (logits.argmax(1) == other_view).float().mean()
        return F.cross_entropy(logits, other_view), {"contrastive_acc": accuracy.detach()}
