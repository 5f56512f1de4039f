"""Detection data held as the training loop holds images: one uint8 tensor of letterboxed canvases,
and the objects of every image padded into fixed-size tensors that slice and move with it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..data.imageset import ImageSet

PADDING = -1  # the class of an empty object slot


def letterbox_extent(width: int, height: int, scale: float) -> tuple:
    """(width, height) in canvas pixels that an original ``width`` x ``height`` image fills once letterboxed
    at ``scale``: the reader resizes to it and predictions are cropped to it, so both must round alike."""
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class DetectionTargets:
    """The objects of N images, at most M each: ``boxes`` N x M x 4 (x1, y1, x2, y2 in canvas pixels,
    float32), ``classes`` N x M (int64, contiguous 0..K-1; PADDING in empty slots), ``masks`` N x M x S x S
    uint8 (0/1) or None. Indexing by images, ``to`` and ``pin_memory`` act on all of them at once, so the
    loop moves targets as it moves a label tensor."""
    boxes: torch.Tensor
    classes: torch.Tensor
    masks: Optional[torch.Tensor] = None

    def __post_init__(self):
        n, m = self.classes.shape
        if self.boxes.shape != (n, m, 4):
            raise ValueError(f"boxes must be {n} x {m} x 4 to match classes {n} x {m}, got {tuple(self.boxes.shape)}")
        if self.masks is not None and self.masks.shape[:2] != (n, m):
            raise ValueError(f"masks must start {n} x {m} to match classes, got {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, index) -> "DetectionTargets":
        return DetectionTargets(self.boxes[index], self.classes[index],
                                None if self.masks is None else self.masks[index])

    @property
    def device(self) -> torch.device:
        return self.classes.device

    def to(self, device, non_blocking: bool = False) -> "DetectionTargets":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return DetectionTargets(move(self.boxes), move(self.classes), move(self.masks))

    def pin_memory(self) -> "DetectionTargets":
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return DetectionTargets(pin(self.boxes), pin(self.classes), pin(self.masks))

    @property
    def present(self) -> torch.Tensor:
        """N x M bool: the slots that hold an object."""
        return self.classes != PADDING

    def as_torchvision(self) -> list:
        """One dict per image as torchvision's detectors take them: boxes, labels (1..K: 0 is their
        background) and masks, the empty slots left out. One wait for the device, not one per image: the
        objects are moved ahead of the empty slots (jitter empties slots anywhere), then cut by count."""
        counts = self.present.sum(1).tolist()
        order = (~self.present).to(torch.uint8).argsort(dim=1, stable=True)
        boxes = self.boxes.gather(1, order[..., None].expand(-1, -1, 4))
        labels = self.classes.gather(1, order) + 1
        masks = None if self.masks is None else self.masks[torch.arange(len(self), device=order.device)[:, None], order]
        out = []
        for i, count in enumerate(counts):
            target = {"boxes": boxes[i, :count], "labels": labels[i, :count]}
            if masks is not None:
                target["masks"] = masks[i, :count]
            out.append(target)
        return out


@dataclass
class DetectionSet(ImageSet):
    """Images letterboxed into S x S canvases (scaled so the longer side is S, padded right and bottom),
    their objects as DetectionTargets, and what maps predictions back to the annotation file: the COCO
    ``image_ids``, each image's ``scales`` (canvas pixels per original pixel) and the COCO
    ``category_ids`` of the contiguous classes. ``annotations`` is the file scores are computed against;
    ``sizes`` (N x 2: original height, width; empty when unknown) lets masks be mapped back to it."""
    image_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    scales: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    category_ids: list = field(default_factory=list)
    annotations: str = ""
    sizes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.int64))

    def __post_init__(self):
        super().__post_init__()
        if len(self.image_ids) != len(self.images) or len(self.scales) != len(self.images):
            raise ValueError(f"{len(self.image_ids)} image ids and {len(self.scales)} scales for "
                             f"{len(self.images)} images in {self.source}")
        if len(self.sizes) not in (0, len(self.images)):
            raise ValueError(f"{len(self.sizes)} original sizes for {len(self.images)} images in {self.source}")

    @property
    def has_masks(self) -> bool:
        return self.labels is not None and self.labels.masks is not None

    def subset(self, count: int, seed: int = 0) -> "DetectionSet":
        if count >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        return DetectionSet(self.images[index], None if self.labels is None else self.labels[index], self.classes,
                            f"{self.source} (subset of {count})", self.layout, self.image_ids[index],
                            self.scales[index], self.category_ids, self.annotations,
                            self.sizes[index] if len(self.sizes) else self.sizes)
