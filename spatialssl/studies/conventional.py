"""The conventional data path, for comparison only: per-image Pillow transforms in DataLoader
workers, as the papers' code and most SSL libraries do (torchvision-style RandomResizedCrop,
flip, ColorJitter, RandomGrayscale, ToTensor, Normalize; patches cut and resized one by
one). ``spatialssl bench`` feeds its batches to the same model as our batched samplers.

Each item is one image's views / patches; ``collate`` lays a batch out as our samplers do
(augmentation-major views, patch-major patches, per-image boxes), so a method cannot tell
the two apart."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance


def random_resized_crop(image: Image.Image, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple:
    """torchvision's RandomResizedCrop box (left, top, width, height), per image."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    return 0, 0, width, height


def color_jitter(image: Image.Image, rng: random.Random, strength=(0.8, 0.8, 0.8, 0.2)) -> Image.Image:
    """ColorJitter with the four adjustments in a random order, as torchvision."""
    b, c, s, h = strength
    ops = [lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - b, 1 + b)),
           lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - c, 1 + c)),
           lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - s, 1 + s)),
           lambda im: _hue(im, rng.uniform(-h, h))]
    rng.shuffle(ops)
    for op in ops:
        image = op(image)
    return image


def _hue(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(shift * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def to_tensor(image: Image.Image, mean, std) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy((array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).permute(2, 0, 1)


class ConventionalDataset(torch.utils.data.Dataset):
    """Per-image augmentation of uint8 images (N x 3 x H x W) for ``kind`` in rr, sr,
    sr_additive, part."""

    def __init__(self, images: torch.Tensor, kind: str, mean, std, views: int = 4, patches: int = 2,
                 patch_size: int = 16, part_patch: int = 4, part_tokens: int = 64, seed: int = 0):
        self.arrays = images.permute(0, 2, 3, 1).numpy()
        self.kind, self.mean, self.std = kind, mean, std
        self.views, self.patches, self.patch_size = views, patches, patch_size
        self.part_patch, self.part_tokens, self.seed = part_patch, part_tokens, seed

    def __len__(self) -> int:
        return len(self.arrays)

    def view(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        left, top, w, h = random_resized_crop(image, rng)
        out = image.resize(image.size, Image.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.8:
            out = color_jitter(out, rng)
        if rng.random() < 0.2:
            out = out.convert("L").convert("RGB")
        return to_tensor(out, self.mean, self.std)

    def sr_patches(self, image: Image.Image, rng: random.Random, additive: bool) -> tuple:
        width, height = image.size
        size = self.patch_size
        corners = []
        while len(corners) < self.patches:  # rejection sampling: redraw both until the first two do not overlap
            x, y = rng.randint(0, width - size), rng.randint(0, height - size)
            if len(corners) == 1 and abs(x - corners[0][0]) < size and abs(y - corners[0][1]) < size:
                corners = []
                continue
            corners.append((x, y))
        out, centres = [], []
        for x, y in corners:
            patch = image.crop((x, y, x + size, y + size))
            if additive:  # pasted at an independent random position, as the official code
                canvas = Image.new("RGB", image.size)
                canvas.paste(patch, (rng.randint(0, width - size), rng.randint(0, height - size)))
                patch = canvas
            else:
                patch = patch.resize(image.size, Image.BILINEAR)
            if rng.random() < 0.8:
                patch = color_jitter(patch, rng)
            if rng.random() < 0.2:
                patch = patch.convert("L").convert("RGB")
            out.append(to_tensor(patch, self.mean, self.std))
            centres.append(((x + size / 2) / width, (y + size / 2) / height))
        return torch.stack(out), torch.tensor(centres)

    def part_boxes(self, image: Image.Image, rng: random.Random) -> tuple:
        width, height = image.size
        p = self.part_patch
        out, boxes = [], []
        for _ in range(self.part_tokens):  # each patch cut and resized on its own, as the published code
            w, h = rng.uniform(p / 2, 2 * p), rng.uniform(p / 2, 2 * p)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            out.append(to_tensor(image.resize((p, p), Image.BILINEAR, box=(x, y, x + w, y + h)), self.mean, self.std))
            boxes.append((x, y, w, h))
        return torch.stack(out), torch.tensor(boxes)

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(self.seed * 1_000_003 + index)
        image = Image.fromarray(self.arrays[index])
        if self.kind == "part":
            patches, boxes = self.part_boxes(image, rng)
            return {"patches": patches, "boxes": boxes, "image": torch.from_numpy(self.arrays[index]).permute(2, 0, 1)}
        item = {"views": torch.stack([self.view(image, rng) for _ in range(self.views)]),
                "image": torch.from_numpy(self.arrays[index]).permute(2, 0, 1)}
        if self.kind in ("sr", "sr_additive"):
            item["patches"], item["centres"] = self.sr_patches(image, rng, self.kind == "sr_additive")
        return item


def collate(items: list) -> dict:
    """Stack a batch in our samplers' layouts: views and SR patches block-major (k * B + b),
    PART patches and boxes per image."""
    batch = {"images": torch.stack([i["image"] for i in items])}
    if "views" in items[0]:
        batch["views"] = torch.stack([i["views"] for i in items], 1).flatten(0, 1)
    if "centres" in items[0]:
        batch["patches"] = torch.stack([i["patches"] for i in items], 1).flatten(0, 1)
        batch["centres"] = torch.stack([i["centres"] for i in items], 1)
    elif "boxes" in items[0]:
        batch["patches"] = torch.stack([i["patches"] for i in items])
        batch["boxes"] = torch.stack([i["boxes"] for i in items])
    return batch
