"""spatialssl: self-supervised pretraining of image encoders by spatial reasoning.

The building blocks work on their own in any training loop::

    from spatialssl import ViewSampler, PatchSampler, RelationHead, SpatialRelationLoss, resnet32
"""
from .augment import color_jitter, crop_resize, normalize, random_grayscale, sample_crop_boxes
from .config import Config, load_config
from .data import ImageSet, demo_splits, load_images
from .errors import ConfigError, DataError, SpatialSSLError, TrainingDiverged
from .evaluate import extract_features, knn_accuracy, linear_evaluation, train_linear_probe
from .losses import FocalBCELoss, SpatialRelationLoss, focal_bce_with_logits
from .methods import Method, RelationalReasoning, SpatialReasoning, Supervised, build_method, spatial_targets
from .models import RelationHead, ResNet, create_backbone, embed, resnet8, resnet18, resnet20, resnet32, resnet34, resnet56
from .samplers import GRID_ORDER, PatchSampler, ViewSampler, grid_patches, patch_pairs, relation_pairs
from .train import pretrain

__version__ = "0.1.0"
