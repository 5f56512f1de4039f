"""DeepCluster (Caron et al. 2018), the baseline of the RR and SR papers (SR Table 1): at each epoch's start
the backbone's features of every training image (eval mode, un-augmented) are PCA-whitened,
l2-normalised and clustered by k-means; the clusters are the epoch's labels, which a classifier learns on
one augmented view per image. The k-means may wait for the device (once an epoch); the steps never do."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..evaluate import extract_features
from ..models import embed
from ..samplers import ViewSampler
from .base import Method
from .relational import view_sampler

SPLIT = 1 / 1024  # faiss's relative perturbation of the two halves of a split cluster


def whiten(features: torch.Tensor, dims: int, eps: float = 1e-5) -> torch.Tensor:
    """PCA to the ``dims`` leading components (all of them when there are fewer), each scaled to unit
    variance (DeepCluster: 256). Exact (eigh of the covariance): torch.pca_lowrank draws from the global
    generator, which a resumed run does not restore."""
    centred = (features - features.mean(0)).double()
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(1, len(features) - 1))  # ascending
    keep = min(dims, features.shape[1])
    values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
    return (centred @ vectors / (values.clamp_min(0) + eps).sqrt()).float()


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """The index of each point's nearest centroid (squared L2), in chunks of points to bound memory."""
    norms = centroids.pow(2).sum(1)
    return torch.cat([(norms - 2 * part @ centroids.T).argmin(1) for part in points.split(chunk)])


def reseed_empty(centroids: torch.Tensor, counts: torch.Tensor) -> None:
    """Give every empty cluster a centroid, in place: a copy of the largest cluster's, the two pushed apart by
    faiss's symmetric relative perturbation (DeepCluster's k-means is faiss's); the largest cluster's count is
    then shared between them. The paper splits a randomly chosen non-empty cluster; the largest needs no draw."""
    sign = torch.ones(centroids.shape[1], device=centroids.device)
    sign[1::2] = -1  # alternate directions per dimension
    for empty in (counts == 0).nonzero().flatten().tolist():  # a host read, at the epoch's start only
        largest = counts.argmax()
        centroids[empty] = centroids[largest] * (1 + SPLIT * sign)
        centroids[largest] = centroids[largest] * (1 - SPLIT * sign)
        counts[empty] = counts[largest] // 2
        counts[largest] -= counts[empty]


def kmeans_plus_plus(points: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), the init of the RR code's k-means (whose runs gave the
    SR paper's DeepCluster numbers; DeepCluster's faiss picks random points, which on well-separated clusters
    often starts two centroids in one): the first centroid a uniformly drawn point, each next one a point
    drawn with probability proportional to its squared distance to the nearest centroid so far."""
    norms = points.pow(2).sum(1)

    def squared_distance_to(index: torch.Tensor) -> torch.Tensor:  # every point's to the point ``index`` (1,)
        return (norms + norms[index] - 2 * points @ points[index][0]).clamp_min(0)

    picks = [torch.randint(len(points), (1,), generator=generator, device=points.device)]
    nearest_squared = squared_distance_to(picks[0])
    for _ in range(clusters - 1):
        # + the smallest float: a draw stays possible when every point already sits on a centroid
        picks.append(torch.multinomial(nearest_squared + torch.finfo(points.dtype).tiny, 1, generator=generator))
        nearest_squared = torch.minimum(nearest_squared, squared_distance_to(picks[-1]))
    return points[torch.cat(picks)]


def kmeans(points: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator) -> tuple:
    """Lloyd's k-means on ``points``' device from k-means++ seeds drawn with ``generator``; each iteration
    assigns, averages and re-seeds empty clusters (faiss's order). Returns (each point's cluster, the centroids)."""
    if not 1 <= clusters <= len(points):
        raise ValueError(f"clusters must be in 1..{len(points)} (the points), got {clusters}")
    centroids = kmeans_plus_plus(points, clusters, generator)
    for _ in range(iterations):
        assigned = nearest(points, centroids)
        counts = torch.bincount(assigned, minlength=clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assigned, points)
        centroids = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
        reseed_empty(centroids, counts)
    return nearest(points, centroids), centroids


def balanced_weights(labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """Per-cluster loss weights inversely proportional to the cluster's size, 1 on average over the images
    (0 for an empty cluster): in expectation the paper's uniform sampling of images over pseudo-labels."""
    counts = torch.bincount(labels, minlength=clusters).float()
    filled = (counts > 0).sum()
    return torch.where(counts > 0, len(labels) / (counts.clamp_min(1) * filled), 0.0)


def cluster_count(cfg, num_classes: int) -> int:
    """``deepcluster.clusters``, or the RR code's 10x the data's classes (100 for unlabelled data)."""
    return cfg.deepcluster.clusters or (10 * num_classes if num_classes else 100)


class DeepCluster(Method):
    def __init__(self, backbone, views: ViewSampler, head: nn.Sequential, mean, std, iterations: int = 20,
                 pca_dim: int = 256, balance: bool = True):
        super().__init__(backbone)
        self.views = views
        self.head = head  # its last layer is the classifier over the clusters, reset every epoch
        self.mean, self.std = mean, std
        self.iterations, self.pca_dim, self.balance = iterations, pca_dim, balance
        # Made with the labels at each epoch's start, so not saved; under torchrun rank 0's labels are everyone's,
        # and so are its weights: DistributedDataParallel broadcasts rank 0's buffers before each step.
        self.register_buffer("cluster_weights", torch.ones(head[-1].out_features), persistent=False)

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        d, clusters = cfg.deepcluster, cluster_count(cfg, num_classes)
        width, hidden = backbone.num_features, cfg.method.head_hidden
        # The RR code's head (the SR paper's DeepCluster numbers come from it): RR's relation MLP on one feature.
        head = nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(), nn.Linear(hidden, clusters))
        return cls(backbone, view_sampler(cfg, mean, std, 1), head, mean, std, d.kmeans_iterations, d.pca_dim,
                   d.balance)

    @torch.no_grad()
    def epoch_labels(self, images, generator):
        device = generator.device  # the training device; ``images`` may be a stream, read a batch at a time
        shard = dist.is_available() and dist.is_initialized()  # the loop calls this in every process: each
        # extracts its share of the features; each clusters them all (the loop keeps rank 0's clusters)
        points = extract_features(self.backbone, images, self.mean, self.std, device=str(device), shard=shard)
        points = points[:, 0].to(device)
        if self.pca_dim:
            points = whiten(points, self.pca_dim)
        labels, _ = kmeans(F.normalize(points, dim=1), self.head[-1].out_features, self.iterations, generator)
        if self.balance:
            self.cluster_weights.copy_(balanced_weights(labels, len(self.cluster_weights)))
        self.reset_classifier()
        return labels

    def restore_epoch_labels(self, labels):
        if self.balance:
            self.cluster_weights.copy_(balanced_weights(labels, len(self.cluster_weights)))

    def reset_classifier(self) -> None:
        """A fresh classifier for the new clusters, in place; the loop forgets its optimiser state
        (``reinitialised_parameters``), as DeepCluster's code does with a new layer and optimiser (the RR code
        kept the last epoch's Adam moments). Zero, not the paper's N(0, 0.01): both start from near-uniform
        predictions, and zero needs no draw, so every process under torchrun resets it alike."""
        top = self.head[-1]
        top.weight.zero_()
        top.bias.zero_()

    def reinitialised_parameters(self) -> list:
        return list(self.head[-1].parameters())

    def training_step(self, images, labels, generator):
        logits = self.head(embed(self.backbone, self.views(images, generator)))
        loss = F.cross_entropy(logits, labels, weight=self.cluster_weights if self.balance else None)
        return loss, {"cluster_acc": (logits.argmax(1) == labels).float().mean().detach()}
