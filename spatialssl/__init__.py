"""spatialssl: self-supervised pretraining of image encoders by spatial reasoning.

The building blocks work on their own in any training loop::

    from spatialssl import ViewSampler, PatchSampler, RelationHead, SpatialRelationLoss, resnet32
    from spatialssl import BoxSampler, sample_pairs, relative_targets, CrossAttentionEncoder, RelativePositionLoss

A trained backbone comes back with ``backbone, cfg = spatialssl.load_backbone(path)`` from a run's ``last.ckpt``
or from what ``spatialssl export`` wrote (a folder, or a ``.safetensors`` with its ``.json``).
"""
from .augment import color_jitter, crop_resize, normalize, random_grayscale, sample_crop_boxes
from .data import ImageSet, SignalSet, demo_splits, load_images, load_signals
from .ema import WeightEMA
from .lars import LARS
from .engine.build import build_method, load_backbone
from .engine.config import Config, load_config
from .engine.train import pretrain
from .errors import ConfigError, DataError, SpatialSSLError, TrainingDiverged
from .evaluate import extract_features, knn_accuracy, linear_evaluation, train_linear_probe
from .losses import FocalBCELoss, RelativePositionLoss, SpatialRelationLoss, focal_bce_with_logits
from .methods import PART, Finetune, Method, RelationalReasoning, SpatialReasoning, Supervised, spatial_targets
from .models import (
                      CrossAttentionBlockEncoder,
                      CrossAttentionEncoder,
                      FullMLPEncoder,
                      PairwiseMLPEncoder,
                      RelationHead,
                      ResNet,
                      VisionTransformer,
                      VisionTransformer1D,
                      create_backbone,
                      embed,
                      resnet8,
                      resnet18,
                      resnet20,
                      resnet32,
                      resnet34,
                      resnet56,
)
from .samplers import (
                      GRID_ORDER,
                      BoxSampler,
                      PatchSampler,
                      ViewSampler,
                      cut_boxes,
                      grid_patches,
                      patch_pairs,
                      relation_pairs,
                      relative_targets,
                      sample_boxes,
                      sample_pairs,
)
from .samplers.windows import WindowSampler, cut_windows, sample_windows

# Baselines and combinations: SimCLR, RotationNet, SR + SimCLR, PART + contrastive.
from .losses import NTXentLoss
from .methods import PARTContrastive, RotationNet, SimCLR, SpatialSimCLR
from .models import ProjectionHead
from .samplers.rotations import RotationSampler

__version__ = "0.1.0"
