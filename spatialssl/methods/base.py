"""What the training loop needs of a method, and nothing more."""
from __future__ import annotations

import torch
from torch import nn


class Method(nn.Module):
    """A pretraining method: a sampler, a backbone, a head and a loss.

    The loop hands ``training_step`` a uint8 image batch (B x 3 x H x W, on the training
    device), its labels (or None) and the run's generator, and gets back the loss and a dict
    of scalar tensors to log. ``backbone`` is what evaluation and export keep.
    """

    trains = True  # False: the untrained backbone is the result (random-weights baseline)
    needs_labels = False
    classifies = False  # True: the backbone is built with a classification head of num_classes
    min_classes = 2  # with needs_labels: the fewest classes the labels may have

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def training_step(self, images: torch.Tensor, labels, generator: torch.Generator) -> tuple:
        raise NotImplementedError

    def epoch_labels(self, images, generator: torch.Generator):
        """Labels this method makes for the whole training set at the start of each epoch (e.g.
        DeepCluster's clusters of the current features), which the epoch's steps then receive instead
        of the data's; None (the default): the data's own labels. ``images``: the uint8 tensor where it
        stays, or the stream (``evaluate.extract_features`` reads both); ``generator`` is on the training
        device."""
        return None

    def restore_epoch_labels(self, labels: torch.Tensor) -> None:
        """A run resumed mid-epoch brings back the labels ``epoch_labels`` made for the epoch (saved with the
        checkpoint): rebuild what it derived from them that the weights do not hold (e.g. DeepCluster's
        class weights)."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called at each epoch's start (0-based ``epoch`` of ``epochs``), before ``epoch_labels``: for a
        schedule of the method's own (e.g. DropPos's position smoothing). A function of the epoch alone,
        so a resumed run continues exactly."""

    def reinitialised_parameters(self) -> list:
        """Parameters that ``epoch_labels`` re-initialised (e.g. DeepCluster's classifier): the loop forgets
        their optimiser state, as a new optimiser for them would."""
        return []

    def no_weight_decay(self) -> set:
        """Names of the parameters the backbone keeps out of weight decay (its ``no_weight_decay()``)."""
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def forward(self, images: torch.Tensor, labels, generator: torch.Generator) -> tuple:
        """``training_step``, as a forward pass so DistributedDataParallel can wrap the method."""
        return self.training_step(images, labels, generator)


class RandomWeights(Method):
    """The lower bound: the backbone as initialised, never trained."""

    trains = False

    @classmethod
    def from_config(cls, cfg, backbone, mean, std, num_classes):
        return cls(backbone)
