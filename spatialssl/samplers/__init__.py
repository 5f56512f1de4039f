"""Samplers turn a uint8 image batch into what a method's backbone sees, plus targets."""
from .boxes import BoxSampler, cut_boxes, relative_targets, sample_boxes, sample_pairs
from .pairs import patch_pairs, relation_pairs
from .patches import GRID_ORDER, PatchSampler, grid_patches, sample_positions
from .views import ViewSampler

__all__ = ["ViewSampler", "PatchSampler", "BoxSampler", "cut_boxes", "relative_targets", "sample_boxes", "sample_pairs", "grid_patches", "sample_positions", "GRID_ORDER",
           "relation_pairs", "patch_pairs"]
