"""PART (Ayoughi et al.): a ViT without position embedding sees N patches cut anywhere in
the image; a relative encoder regresses the translation (and scale) between random pairs."""
from __future__ import annotations

import torch

from ..losses import RelativePositionLoss
from ..models import VisionTransformer1D, build_encoder
from ..samplers.boxes import BoxSampler, all_pairs, relative_targets, sample_pairs
from ..samplers.windows import WindowSampler
from .base import Method


def part_tokens(cfg, input_size) -> int:
    """N: ``part.num_tokens`` or, as the paper, (H / P) * (W / P) (T / P for signals)."""
    count = 1
    for side in input_size:
        count *= side // cfg.model.patch_size
    return cfg.part.num_tokens or count


class PART(Method):
    """``boxes`` is a BoxSampler for images or a WindowSampler for signals (1-D boxes)."""

    def __init__(self, backbone, boxes, encoder: torch.nn.Module, num_pairs: int, predict_scale: bool = False,
                 log_scale: bool = False, loss=None, pos_embed_mask: float = 0.0):
        super().__init__(backbone)
        self.boxes = boxes
        self.encoder = encoder
        self.num_pairs = num_pairs
        self.predict_scale, self.log_scale = predict_scale, log_scale
        self.loss = loss if loss is not None else RelativePositionLoss()
        self.pos_embed_mask = pos_embed_mask

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        return cls(backbone, **cls.options_from(cfg, backbone, mean, std))

    @staticmethod
    def options_from(cfg, backbone, mean, std) -> dict:
        """PART's sampler, encoder and settings from ``cfg``: the keyword arguments of ``__init__``."""
        p, a = cfg.part, cfg.augment
        num_tokens = part_tokens(cfg, cfg.model.input_size)
        predict_scale = p.sampling == "scale" if p.predict_scale is None else p.predict_scale
        if isinstance(backbone, VisionTransformer1D):
            boxes = WindowSampler(p.sampling, cfg.model.patch_size, num_tokens, p.box_scale,
                                  sort=backbone.pos_embed is not None)
            outputs = 2 if predict_scale else 1
        else:
            boxes = BoxSampler(p.sampling, cfg.model.patch_size, num_tokens, mean, std, p.box_size, p.box_scale,
                               a.scale, a.flip_p)
            outputs = 4 if predict_scale else 2
        heads = backbone.num_heads if p.encoder == "cross_attention_block" else p.encoder_heads
        encoder = build_encoder(p.encoder, backbone.num_features, outputs, heads, num_tokens, p.mlp_hidden)
        return dict(boxes=boxes, encoder=encoder, num_pairs=p.num_pairs, predict_scale=predict_scale,
                    log_scale=p.log_scale, pos_embed_mask=p.pos_embed_mask)

    def tokens(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.pos_embed_mask > 0 and self.training:  # the 1-D setting: hide some tokens' positions
            drop = torch.rand(patches.shape[:2], generator=generator, device=patches.device) < self.pos_embed_mask
            return self.backbone.patch_tokens(patches, drop)
        return self.backbone.patch_tokens(patches)

    def training_step(self, images, labels, generator):
        patches, boxes = self.boxes(images, generator)
        pairs = sample_pairs(len(images), boxes.shape[1], self.num_pairs, generator, images.device)
        outputs = self.encoder(self.tokens(patches, generator), pairs)
        targets = relative_targets(boxes, pairs, self.predict_scale, self.log_scale)
        return self.loss(outputs, targets)

    @torch.no_grad()
    def predict_all(self, patches: torch.Tensor) -> torch.Tensor:
        """Predictions for every ordered pair of the given patches: B x N x N x C (analysis)."""
        tokens = self.backbone.patch_tokens(patches)
        batch, num = tokens.shape[:2]
        pairs = all_pairs(num, tokens.device).expand(batch, -1, -1)
        return self.encoder(tokens, pairs).view(batch, num, num, -1)
