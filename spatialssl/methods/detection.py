"""Object detection finetuning (PART Sec. 4: ViTDet's simple feature pyramid and Mask R-CNN): the pretrained
backbone under a feature pyramid and torchvision's RPN and R-CNN heads, trained by the one loop on letterboxed
canvases jittered on the device. The loop's "labels" are DetectionTargets; the loss is the heads' sum."""
from __future__ import annotations

from typing import Optional

import torch

from .. import augment
from ..detection.heads import build_heads
from ..detection.jitter import jitter
from ..detection.pyramid import ResNetPyramid, SimpleFeaturePyramid, global_blocks
from ..errors import ConfigError
from ..models.resnet import ResNet
from ..models.vit import VisionTransformer
from ..models.vit1d import VisionTransformer1D
from .base import Method


def build_pyramid(backbone, options, torchvision):
    """ViTDet's simple feature pyramid on our ViTs, torchvision's FPN on our ResNets."""
    if isinstance(backbone, VisionTransformer) and not isinstance(backbone, VisionTransformer1D):
        if backbone.patch_size % 4:
            raise ConfigError(f"detection's simple feature pyramid needs model.patch_size divisible by 4 (strides "
                              f"P/4 .. 2P), got {backbone.patch_size}")
        depth = len(backbone.blocks)
        kept = global_blocks(depth) if options.global_blocks is None else options.global_blocks
        if any(block >= depth for block in kept):
            raise ConfigError(f"detect.global_blocks {kept} names blocks past the ViT's {depth}; use indices below "
                              f"{depth} or null (ViTDet's choice for the depth: {global_blocks(depth)})")
        positions = None
        if options.rel_pos:
            heads = backbone.blocks[0].attn.num_heads
            positions = (depth, backbone.embed_dim // heads, options.image_size // backbone.patch_size)
        return SimpleFeaturePyramid(backbone.embed_dim, backbone.patch_size, options.pyramid_channels,
                                    options.window_size, kept, positions)
    if isinstance(backbone, ResNet):
        return ResNetPyramid(backbone, options.pyramid_channels, torchvision)
    raise ConfigError(f"detection takes spatialssl's image ViTs (vit_*) and ResNets, got {type(backbone).__name__}")


class Detection(Method):
    needs_labels = True
    min_classes = 1  # one object class and the background is a detection task

    def __init__(self, backbone, pyramid, rpn, roi_heads, mean, std, options, torchvision):
        super().__init__(backbone)
        self.pyramid, self.rpn, self.roi_heads = pyramid, rpn, roi_heads
        self.mean, self.std, self.options = list(mean), list(std), options  # options: a DetectConfig
        detection = torchvision.models.detection
        self.image_list = detection.image_list.ImageList  # what the RPN takes
        self.paste_masks = detection.roi_heads.paste_masks_in_image

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        if cfg.detect.masks is None:
            raise ValueError("detect.masks must be resolved to true or false from the data before the build")
        from ..detection.torchvision_ops import import_torchvision  # torchvision only when detection is asked for

        torchvision = import_torchvision()
        pyramid = build_pyramid(backbone, cfg.detect, torchvision)
        if isinstance(pyramid, SimpleFeaturePyramid):  # ViTDet reads the last block unnormed: the final norm sits
            backbone.norm.requires_grad_(False)  # idle, and DistributedDataParallel wants every trained weight used
        rpn, roi_heads = build_heads(torchvision, pyramid, num_classes, cfg.detect.masks, cfg.detect)
        return cls(backbone, pyramid, rpn, roi_heads, mean, std, cfg.detect, torchvision)

    def layer_of(self, name: str) -> Optional[int]:
        """The ViT block a parameter outside the backbone belongs to (its relative position bias): layer-wise
        learning-rate decay treats it as that block's, as ViTDet does."""
        prefix = "pyramid.positions."
        return int(name[len(prefix):].split(".")[0]) if name.startswith(prefix) else None

    def features(self, images: torch.Tensor) -> dict:
        """The pyramid's maps of normalised images."""
        return self.pyramid(self.backbone, images)

    def training_step(self, images, targets, generator):
        o = self.options
        augment.require_uint8(images, "Detection.training_step")
        with augment.without_autocast(images):
            x, targets = jitter(images, targets, o.scale_range, o.flip_p, generator)
            x = augment.normalize(x, self.mean, self.std)
        features = self.features(x)
        batch = self.image_list(x, [tuple(x.shape[-2:])] * len(x))
        wanted = targets.as_torchvision()
        proposals, rpn_losses = self.rpn(batch, features, wanted)
        _, head_losses = self.roi_heads(features, proposals, batch.image_sizes, wanted)
        losses = {**rpn_losses, **head_losses}
        return sum(losses.values()), {name: value.detach() for name, value in losses.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list:
        """Detections of uint8 canvases (B x C x S x S), one dict per image as torchvision's detectors give
        them: boxes (x1, y1, x2, y2 in canvas pixels), labels (1..K), scores, and masks (B x 1 x S x S
        probabilities) with the mask head."""
        was_training = self.training
        self.eval()
        x = augment.normalize(images.float().div(255), self.mean, self.std)
        features = self.features(x)
        batch = self.image_list(x, [tuple(x.shape[-2:])] * len(x))
        proposals, _ = self.rpn(batch, features)
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        if self.roi_heads.has_mask():  # the heads' 28 x 28 masks pasted into their boxes on the canvas
            for found in detections:
                found["masks"] = self.paste_masks(found["masks"], found["boxes"], tuple(x.shape[-2:]))
        self.train(was_training)
        return detections
