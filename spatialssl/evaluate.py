"""Evaluation of a frozen backbone: features extracted once, a linear probe on the image
feature concatenated with 0-9 patch features, and a kNN monitor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import augment
from .data.stream import in_batches
from .metrics import classification_report
from .models import embed
from .samplers import grid_patches


@torch.no_grad()
def extract_features(backbone: nn.Module, images, mean: Sequence[float], std: Sequence[float],
                     num_patches: int = 0, patch_size: int = 16, batch_size: int = 256,
                     device: str = "cpu", augment_generator: Optional[torch.Generator] = None,
                     shard: bool = False) -> torch.Tensor:
    """N x (1 + num_patches) x D features of ``images`` (a uint8 tensor, or a data set: an ImageSet, a
    SignalSet or an ImageStream, read a batch at a time): the whole image, then the evaluation patches in
    the paper's grid order. The backbone runs in eval mode. With ``augment_generator`` each
    image is randomly affine-transformed first (the paper's Fig. 4 evaluation). With ``shard``, called by
    every process of a torch.distributed group, each extracts (and reads) its contiguous share and all
    receive the whole, in order."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if shard else (1, 0)
    if len(images) < world:  # shares that could be empty: too few to be worth dividing
        world, rank = 1, 0
    start, stop = rank * len(images) // world, (rank + 1) * len(images) // world
    was_training = backbone.training
    backbone.eval()
    out = []
    for x in in_batches(images, batch_size, torch.device(device).type == "cuda", start, stop):
        x = x.to(device, non_blocking=True)
        if x.ndim == 3:  # signals (B x C x T): already normalised epochs, no patches
            out.append(embed(backbone, x)[:, None].float().cpu())
            continue
        augment.require_uint8(x, "extract_features")
        x = x.float().div_(255)
        if augment_generator is not None:
            x = augment.random_affine(x, augment_generator)
        parts = [embed(backbone, augment.normalize(x, mean, std))]
        if num_patches:
            patches = grid_patches(x, patch_size, num_patches, mean, std)
            parts += list(embed(backbone, patches.flatten(0, 1)).view(num_patches, len(x), -1))
        out.append(torch.stack(parts, dim=1).float().cpu())
    backbone.train(was_training)
    features = torch.cat(out)
    return features if world == 1 else gathered(features, len(images), world, device)


def gathered(share: torch.Tensor, total: int, world: int, device: str) -> torch.Tensor:
    """The contiguous shares of ``total`` rows (``extract_features``'s) of all ``world`` processes, in rank
    order: padded to the largest share for all_gather, on ``device`` (NCCL gathers GPU tensors)."""
    sizes = [(r + 1) * total // world - r * total // world for r in range(world)]
    padded = share.new_zeros(max(sizes), *share.shape[1:]).to(device)
    padded[:len(share)] = share.to(device)
    shares = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shares, padded)
    return torch.cat([part[:size] for part, size in zip(shares, sizes)]).cpu()


def knn_neighbours(train_size: int, k: Optional[int] = None) -> int:
    """``k`` when given, else sqrt(train_size) (the usual rule of thumb) capped at Wu et al.'s 200,
    which it reaches at CIFAR's 50,000 images; a fixed 200 would vote with most of a small set."""
    if k is None:
        k = min(200, max(1, round(train_size ** 0.5)))
    return min(k, train_size)


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: Optional[int] = None, temperature: float = 0.07) -> float:
    """Weighted kNN on cosine similarity (Wu et al. 2018): a quick monitor of a representation.
    ``k`` None: knn_neighbours of the training set's size."""
    train_n = F.normalize(train_features, dim=1)
    test_n = F.normalize(test_features, dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = knn_neighbours(len(train_n), k)
    correct = 0
    for start in range(0, len(test_n), 1024):
        sims, index = (test_n[start:start + 1024] @ train_n.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), classes).scatter_add_(1, train_labels[index], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_labels[start:start + 1024]).sum().item()
    return correct / len(test_n)


@dataclass
class ProbeResult:
    test_acc: float
    train_acc: float
    macro_f1: float = 0.0
    kappa: float = 0.0


def standardizer(train_features: Sequence[torch.Tensor], eps: float = 1e-6):
    """Per-dimension (x - mean) / sqrt(var + eps) with the training features' statistics:
    BatchNorm without affine parameters, frozen, as MAE's linear probe."""
    reference = torch.cat(list(train_features))
    mean, var = reference.mean(0), reference.var(0, unbiased=False)
    scale = torch.where(var > 0, (var + eps).rsqrt(), 0.0)  # a constant (e.g. dead) dimension carries nothing
    return lambda features: (features - mean) * scale


def train_linear_probe(train_features: Sequence[torch.Tensor], train_labels: torch.Tensor,
                       test_features: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                       epochs: int = 100, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                       device: str = "cpu", standardize: bool = True) -> ProbeResult:
    """Linear(D' -> classes) with Adam on fixed features; accuracy after the last epoch.

    ``train_features`` is a list of N x D' tensors: epoch e trains on entry e mod len (one
    entry without augmentation, several augmented copies with it). With ``standardize``
    every feature dimension is standardised with the training features' mean and std first
    (raw features of different scales leave a 100-epoch probe underfitting)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = nn.Linear(train_features[0].shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    labels = train_labels.to(device)
    copies = [f.to(device) for f in train_features]
    test_features = test_features.to(device)
    if standardize:
        scale = standardizer(copies)
        copies, test_features = [scale(f) for f in copies], scale(test_features)
    for epoch in range(epochs):
        features = copies[epoch % len(copies)]
        order = torch.randperm(len(features), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(probe(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        report = classification_report(probe(test_features).argmax(1).cpu(), test_labels, num_classes)
        train_acc = (probe(copies[0]).argmax(1) == labels).float().mean().item()
    return ProbeResult(report["accuracy"], train_acc, report["macro_f1"], report["kappa"])


def linear_evaluation(backbone: nn.Module, train_images, train_labels: torch.Tensor,
                      test_images, test_labels: torch.Tensor, num_classes: int,
                      mean: Sequence[float], std: Sequence[float], patch_size: int,
                      patch_counts: Sequence[int] = (0, 1, 3, 5, 7, 9), epochs: int = 100, lr: float = 1e-3,
                      batch_size: int = 128, affine_augment: bool = False, augment_copies: int = 10,
                      knn_k: Optional[int] = None, seed: int = 0, device: str = "cpu",
                      standardize: bool = True, shard: bool = False) -> dict:
    """The paper's protocol on ``train_images``/``test_images`` (uint8 tensors or data sets, as
    ``extract_features`` reads them): features extracted once (patch features for the largest count,
    so smaller counts are prefixes), one linear probe per patch count (on standardised
    features unless ``standardize`` is off), top-1 on the test split.
    ``shard``: every process of a torch.distributed group extracts its share (``extract_features``); all
    then train the same probes. Returns {"knn": acc, "knn_k": k, "linear": {n: ProbeResult}}."""
    most = max(patch_counts)
    backbone = backbone.to(device)
    extract = dict(mean=mean, std=std, num_patches=most, patch_size=patch_size, device=device, shard=shard)
    train = extract_features(backbone, train_images, **extract)
    test = extract_features(backbone, test_images, **extract)
    augmented = []
    if affine_augment:
        generator = torch.Generator(device=device).manual_seed(seed)
        augmented = [extract_features(backbone, train_images, augment_generator=generator, **extract)
                     for _ in range(augment_copies)]
    knn_k = knn_neighbours(len(train), knn_k)
    results = {"knn": knn_accuracy(train[:, 0], train_labels, test[:, 0], test_labels, knn_k), "knn_k": knn_k,
               "linear": {}}
    for n in patch_counts:
        sets = augmented or [train]
        results["linear"][n] = train_linear_probe(
            [f[:, : n + 1].flatten(1) for f in sets], train_labels, test[:, : n + 1].flatten(1), test_labels,
            num_classes, epochs, lr, batch_size, seed, device, standardize)
    return results


