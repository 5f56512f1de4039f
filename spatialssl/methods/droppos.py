"""DropPos (Wang et al. 2023, "Pre-training vision transformers by reconstructing dropped positions"), the
position-reconstruction baseline of PART's Tables 6-7: 75% of each image's tokens masked as in MAE, and of
the visible ones 75% lose their (fixed sine-cosine) position embedding to a learnt [MASK] position; a light
decoder classifies the grid position of every token whose position was dropped. Position smoothing (soft
targets over nearby positions, sigma decaying to 0 over the run) and attentive reconstruction (each token's
loss weighted by its similarity to [CLS] in a forward of the whole image) relax the classification, as the
published recipe does."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.decoder import PositionDecoder
from ..samplers import ViewSampler
from ..samplers.masking import random_masking
from .base import Method
from .mae import fix_position_embedding
from .relational import view_sampler


def smoothed_positions(rows: int, cols: int, sigma: float, device=None) -> torch.Tensor:
    """N x N soft targets, N = rows * cols: row i is exp(-d(i, j)^2 / sigma^2) over grid distances d, each row
    summing to 1 (the published code divides by the other index's sum, equal only away from the border);
    sigma 0: one-hot."""
    y, x = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    points = torch.stack([y.flatten(), x.flatten()], dim=1).float()
    if sigma <= 0:
        return torch.eye(len(points), device=device)
    weight = torch.exp(-torch.cdist(points, points).pow(2) / sigma ** 2)
    return weight / weight.sum(dim=1, keepdim=True)


def dropped_position_loss(logits: torch.Tensor, positions: torch.Tensor, dropped: torch.Tensor,
                          targets: torch.Tensor, weights=None) -> tuple:
    """(loss, accuracy) over the tokens whose position was dropped: cross-entropy of ``logits`` (B x K x N)
    against the soft ``targets`` rows (N x N) of their true ``positions`` (B x K), weighted by ``weights``
    (B x K, attentive reconstruction) where given; accuracy: the top position right, unweighted."""
    weight = dropped.float() * (weights if weights is not None else 1.0)
    per_token = -(targets[positions] * F.log_softmax(logits, dim=-1)).sum(-1)
    hit = (logits.argmax(-1) == positions).float() * dropped
    return (per_token * weight).sum() / weight.sum(), (hit.sum() / dropped.sum()).detach()


class DropPos(Method):
    def __init__(self, backbone, views: ViewSampler, decoder: PositionDecoder, grid, mask_ratio: float = 0.75,
                 position_mask_ratio: float = 0.75, sigma: float = 1.0, attentive: bool = True):
        super().__init__(backbone)
        self.views, self.decoder, self.grid = views, decoder, tuple(grid)
        self.mask_ratio, self.position_mask_ratio = mask_ratio, position_mask_ratio
        self.start_sigma, self.attentive = sigma, attentive
        self.mask_position = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        nn.init.normal_(self.mask_position, std=0.02)
        # Rebuilt at each epoch's start from sigma's schedule, so not saved.
        self.register_buffer("targets", smoothed_positions(*self.grid, sigma), persistent=False)

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        d, patch = cfg.droppos, backbone.patch_size
        grid = [side // patch for side in cfg.model.input_size]
        fix_position_embedding(backbone, grid)
        decoder = PositionDecoder(backbone.num_features, grid[0] * grid[1], d.decoder_dim, d.decoder_depth,
                                  d.decoder_heads)
        return cls(backbone, view_sampler(cfg, mean, std, 1), decoder, grid, d.mask_ratio, d.position_mask_ratio,
                   d.sigma, d.attentive)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Position smoothing decays linearly to none: sigma (1 - epoch / epochs), as the published recipe."""
        sigma = self.start_sigma * (1 - epoch / epochs)
        self.targets = smoothed_positions(*self.grid, sigma, device=self.targets.device)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """B x K: how alike each visible token is to [CLS] in a forward of the whole image (softmax of cosine
        similarities at temperature 0.1, renormalised over the visible tokens): background matters less."""
        encoded = self.backbone.forward_features(x)
        similarity = F.cosine_similarity(encoded[:, :1], encoded[:, 1:], dim=-1)
        weights = F.softmax(similarity / 0.1, dim=-1).gather(1, visible)
        return weights / weights.sum(dim=1, keepdim=True)

    def training_step(self, images, labels, generator):
        x = self.views(images, generator)
        tokens = self.backbone.patch_embed(x)
        batch, num, dim = tokens.shape
        visible, _ = random_masking(batch, num, self.mask_ratio, generator, x.device)
        dropped = random_masking(batch, visible.shape[1], self.position_mask_ratio, generator, x.device)[1]
        index = visible[..., None].expand(-1, -1, dim)
        position = self.backbone.position_embedding(num).expand(batch, -1, -1).gather(1, index)
        kept = tokens.gather(1, index) + torch.where(dropped[..., None], self.mask_position, position)
        logits = self.decoder(self.backbone.encode(kept))[:, self.backbone.num_prefix_tokens:]
        weights = self.attention_weights(x, visible) if self.attentive else None
        loss, accuracy = dropped_position_loss(logits, visible, dropped, self.targets, weights)
        return loss, {"position_acc": accuracy}
