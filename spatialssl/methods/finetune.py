"""Supervised finetuning of a pretrained backbone (PART Sec. 3.4, DeiT's recipe): on-grid
images, the backbone's own linear head (after the [CLS] token for a ViT), RandAugment,
random erasing, mixup / cutmix and label smoothing, all batched on the device. Signal
epochs (float) skip the image augmentations; mixup and label smoothing still apply."""
from __future__ import annotations

import torch

from .. import augment, canvas, regularize
from ..samplers import ViewSampler
from .base import Method
from .relational import view_sampler


class Finetune(Method):
    needs_labels = True
    classifies = True  # the backbone is built with its classification head

    def __init__(self, backbone, views: ViewSampler, num_classes: int, options):
        super().__init__(backbone)
        self.views = views
        self.num_classes = num_classes
        self.options = options  # a FinetuneConfig

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        return cls(backbone, view_sampler(cfg, mean, std, 1), num_classes, cfg.finetune)

    def augment(self, images: canvas.Images, generator: torch.Generator) -> torch.Tensor:
        """Crop, flip and colour (the views' settings), RandAugment, normalise, erase."""
        o, v = self.options, self.views
        augment.require_uint8(images, "Finetune.augment")
        with augment.without_autocast(images):
            x = canvas.random_resized_crops(images, 1, v.scale, v.ratio, v.flip_p, generator)
            x = augment.color_jitter(x, v.jitter, v.jitter_p, generator)
            if o.randaugment_ops:
                x = regularize.rand_augment(x, o.randaugment_ops, o.randaugment_magnitude, generator)
            x = augment.normalize(x, v.mean, v.std)
            return regularize.random_erasing(x, o.random_erasing, generator) if o.random_erasing else x

    def training_step(self, images, labels, generator):
        o = self.options
        x = self.augment(images, generator) if images.ndim == 4 else images  # signals (B x C x T): as read
        x, targets = regularize.mix_batch(x, labels, self.num_classes, generator,
                                          o.mixup, o.cutmix, o.mix_prob, o.switch_prob, o.label_smoothing)
        logits = self.backbone(x)
        loss = torch.sum(-targets * logits.log_softmax(1), dim=1).mean()
        return loss, {"train_acc": (logits.argmax(1) == labels).float().mean().detach()}
