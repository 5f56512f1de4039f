"""Run configuration: nested dataclasses, YAML recipes and ``key=value`` overrides.

Every option has a default here; a recipe only states what differs. Unknown keys and
values of the wrong type are rejected with an error naming the key, before work starts.
Each field is declared with ``options.option``: its meaning and its range, length or choices,
which ``validate`` enforces and ``spatialssl options`` lists, from the one declaration.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from ..data.decode import RESIZE_MODES
from ..data.readers import ARRAY_LAYOUTS, CIFAR100_LABELS
from ..data.signals import SignalOptions
from ..errors import ConfigError, shown
from ..methods import METHODS
from ..models import ENCODERS, check_backbone, is_vit, modality
from ..models.external import is_external
from ..models.vit import POOLS
from ..models.vit import SIZES as VIT_SIZES
from ..options import Option, declared, option
from .distributed import GRAD_COMPRESSIONS
from .precision import PRECISIONS
from .strict_yaml import load_yaml

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
from ..samplers.boxes import MODES as SAMPLING
from ..samplers.patches import PLACEMENTS
from .optim import OPTIMIZERS, SCHEDULES

LOGGERS = ("tensorboard", "wandb")
EVAL_PATCH_COUNTS = (0, 1, 3, 5, 7, 9)  # the paper's: the image alone, then 1, 3, ... of the 3x3 grid's patches


@dataclass
class DataConfig:
    """The data set a run reads and how its images are decoded."""
    path: Optional[str] = option(None, "the data set, a folder or an .npz file, WebDataset shards (a folder, a .tar or "
                                       "a brace pattern) or a saved Hugging Face dataset (--data sets it)")
    dataset: Optional[str] = option(None, "the recipe's data set, cifar10 | cifar100 | stl10: what --download "
                                          "fetches, and whose statistics a recipe's data.mean/std are")
    split: str = option("train", "the split pretraining reads, e.g. train+unlabeled for STL-10")
    test_split: str = option("test", "the split evaluated on (linear probe, kNN monitor, finetuning's test)")
    labels: str = option("fine", "CIFAR-100: fine (100 classes) or coarse (the 20 super-classes)",
                         choices=CIFAR100_LABELS)
    image_size: Optional[int] = option(None, "resize images to this size once, at decoding; null keeps the files' "
                                             "size", range="[1, 16384]")
    resize: str = option("short_side", "to data.image_size: short_side (scaled, the long side centre-cropped) | "
                                       "squash (both sides scaled) | whole (streams: the whole image, aspect kept, "
                                       "long side at most data.source_size; training crops are drawn relative to it "
                                       "as torchvision's and timm's, evaluation sees its centre, data.crop_pct)",
                         choices=RESIZE_MODES)
    source_size: Optional[int] = option(None, "data.resize=whole: the long side (px) whole images are decoded to at "
                                              "most, never enlarged; what crops are cut from; null: 2 x "
                                              "data.image_size", range="[1, 65536]")
    crop_pct: float = option(1.0, "data.resize=whole: what evaluation and the samplers that do not crop see, the "
                                  "central square of this share of the short side resized to data.image_size "
                                  "(timm's crop_pct: 0.875 for ImageNet)", range="(0, 1]")
    channels: Optional[int] = option(None, "1 (grey), 3 (RGB) or an array's own count; null: RGB, or an array's own",
                                     range=">= 1")
    layout: Optional[str] = option(None, "where an .npz keeps its images' channels: nhwc (last) | nchw (second); "
                                         "null: read from the shape where only one reading is plausible (1, 3 or 4 "
                                         "channels, or square images), else refused", choices=(None, *ARRAY_LAYOUTS))
    mean: Optional[list] = option(None, "per-channel mean the images are normalised with; null: measured on the "
                                        "training images")
    std: Optional[list] = option(None, "per-channel standard deviation the images are divided by; null: measured on "
                                       "the training images", range="> 0")
    statistics_of: Optional[str] = option(None, "the data set data.mean/std are of (set from data.dataset by the "
                                                "layer that gives them): on other data they are measured anew; "
                                                "null: they apply to any data")
    cache: bool = option(True, "cache decoded image folders and shards' indexes in .spatialssl-cache/ beside the data")
    stream: bool = option(False, "decode batches in DataLoader workers instead of all at once (image folders too "
                                 "large for memory; array formats are read whole; shards and Hugging Face "
                                 "datasets always stream)")
    workers: Optional[int] = option(None, "decoding processes when streaming; null: the CPUs this process may use, "
                                          "shared among a machine's torchrun processes", range="[0, 512]")
    decode: str = option("cpu", "streams: cpu (Pillow in the DataLoader workers) | gpu (JPEGs decoded on the "
                                "training GPU by nvJPEG through torchvision, the workers reading bytes; Pillow, "
                                "with one line, where that is unavailable)", choices=("cpu", "gpu"))
    skip_corrupt: bool = option(False, "streams: an image that cannot be read or decoded is skipped (warned, counted "
                                       "in metrics.csv's 'skipped', its place in the batch taken by another of the "
                                       "batch) instead of stopping the run")


@dataclass
class ModelConfig:
    """The backbone and its architecture."""
    backbone: str = option("resnet32", "resnet8/20/32/56/18/34, vit_tiny/small/base, vit1d_tiny/small (signals), or "
                                       "timm/<name>, torchvision/<name> when installed (e.g. torchvision/resnet50)")
    pretrained: bool = option(False, "timm/ and torchvision/ backbones: start from the library's pretrained weights "
                                     "(downloads)")
    cifar_stem: bool = option(False, "ResNet-18/34 only: a 3x3 stride-1 stem without max-pool")
    patch_size: int = option(4, "ViT token size P (4 at 32 px, 16 at 224 px; samples per window for 1-D)",
                             range="[1, 4096]")
    pos_embed: bool = option(False, "ViT: a learnable position embedding (off for PART pretraining)")
    class_token: bool = option(False, "ViT: a [CLS] token")
    global_pool: str = option("avg", "ViT: avg (mean of the patch tokens) or token (the [CLS] token)", choices=POOLS)
    drop_path: float = option(0.0, "ViT: stochastic depth rate", range="[0, 1)")
    depth: Optional[int] = option(None, "ViT: number of blocks; null: the size's (12)", range="[1, 1024]")
    input_size: Optional[list] = option(None, "[H, W] (or [T] for signals) the model sees, positive ints; null: "
                                              "taken from the data")
    in_chans: Optional[int] = option(None, "input channels; null: taken from the data", range=">= 1")
    num_tokens: Optional[int] = option(None, "1-D ViT: position-embedding length; null: T / model.patch_size",
                                       range=">= 1")
    init_from: Optional[str] = option(None, "start from this checkpoint's backbone (finetuning sets it)")


@dataclass
class AugmentConfig:
    """The augmented views: random resized crop, flip, colour jitter and grayscale."""
    scale: list = option([0.08, 1.0], "random resized crop: [min, max] share of the image's area, "
                                      "0 < min <= max <= 1", length=2)
    ratio: list = option([3 / 4, 4 / 3], "random resized crop: [min, max] aspect ratio", length=2)
    flip_p: float = option(0.5, "probability of a horizontal flip", range="[0, 1]")
    jitter: list = option([0.8, 0.8, 0.8, 0.2], "colour jitter's brightness, contrast, saturation and hue", length=4)
    jitter_p: float = option(0.8, "probability of colour jitter", range="[0, 1]")
    gray_p: float = option(0.2, "probability of grayscale", range="[0, 1]")


@dataclass
class MethodConfig:
    """The method, and the settings of RR's and SR's views and patches."""
    name: str = option("sr", "what pretraining learns: ours, a baseline or a combination (README: Baselines)",
                       choices=METHODS)
    augmentations: int = option(4, "K augmented views per image (RR and SR pair them: at least 2)", range="[1, 256]")
    num_patches: int = option(2, "N patches cut per view (SR and sr_simclr pair them: at least 2)",
                              range="[1, 1024]")
    patch_size: int = option(16, "side of SR's patches, in pixels", range="[1, 4096]")
    additive: bool = option(False, "SR's additive-patch use: each patch pasted on a black canvas of the image's size")
    additive_placement: str = option("random", "additive: paste at a random position (the paper's) | same (where "
                                               "it was cut)", choices=PLACEMENTS)
    position_weight: float = option(1.0, "SR: weight of each axis's MSE (paper eq. 3); 0.5 = the official code's one "
                                         "MSE", range=">= 0")
    non_overlapping: bool = option(True, "the first two patches never overlap")
    focal: Optional[bool] = option(None, "focal loss for the relation head; null: focal for RR, plain BCE for SR "
                                         "(as published)")
    head_hidden: int = option(256, "hidden width of the relation head and of SimCLR's projection MLP", range=">= 1")


@dataclass
class PartConfig:
    """PART (Ayoughi et al.): relative translation of off-grid patches."""
    sampling: str = option("offgrid", "offgrid (fixed D x D boxes, the paper's) | scale (PART + scale: w, h in "
                                      "part.box_scale x P) | grid | stratified", choices=SAMPLING)
    box_size: Optional[int] = option(None, "offgrid: side D of the cut boxes; null: the token size P", range=">= 1")
    box_scale: list = option([0.5, 2.0], "scale: [min, max] of w and h in units of P, 0 < min <= max", length=2)
    num_tokens: Optional[int] = option(None, "patches per image; null: (H / P) * (W / P)", range=">= 1")
    num_pairs: int = option(2048, "random ordered pairs per image whose translation is regressed",
                            range="[1, 1000000]")
    encoder: str = option("cross_attention", "cross_attention (as published) | cross_attention_block | pairwise_mlp "
                                             "| mlp", choices=ENCODERS)
    encoder_heads: int = option(1, "cross_attention: attention heads, a divisor of the ViT's width (the official "
                                   "code's 1); the block variant uses the ViT's", range=">= 1")
    predict_scale: Optional[bool] = option(None, "also regress dw, dh; null: in the scale sampling mode")
    log_scale: bool = option(False, "dw, dh as log-ratios")
    mlp_hidden: int = option(512, "full-MLP encoder bottleneck; 0: the paper's single linear map", range=">= 0")
    pos_embed_mask: float = option(0.0, "1-D: share of position embeddings dropped (windows sorted by time)",
                                   range="[0, 1)")


# --- Baselines on ViTs (PART's Tables 6-7) and ResNets (the SR paper's Table 1) ---
@dataclass
class MaeConfig:
    """MAE (He et al. 2022): the pixels of masked tokens regressed from the visible ones (model.pos_embed=true)."""
    mask_ratio: float = option(0.75, "share of each image's tokens masked (MAE's 75%; the loss is over them)",
                               range="(0, 1)")
    decoder_dim: int = option(128, "light decoder's width, a multiple of 4 (MAE's ImageNet decoder: 512 wide, "
                                   "8 deep)", range=">= 4")
    decoder_depth: int = option(2, "decoder blocks", range=">= 1")
    decoder_heads: int = option(4, "decoder attention heads, a divisor of mae.decoder_dim", range=">= 1")
    norm_pix_loss: bool = option(True, "targets normalised per patch (its mean and variance), as MAE's best setting")


@dataclass
class Mp3Config:
    """MP3 (Zhai et al. 2022): every token classifies its grid position; no position embedding."""
    mask_ratio: float = option(0.75, "share of tokens no token may attend to (their keys and values left out); "
                                     "0: none", range="[0, 1)")


@dataclass
class DropPosConfig:
    """DropPos (Wang et al. 2023): tokens masked as MAE's, positions dropped from most visible ones and
    classified back (model.pos_embed=true, model.class_token=true with attentive reconstruction)."""
    mask_ratio: float = option(0.75, "share of each image's tokens masked (hidden from the encoder)", range="(0, 1)")
    position_mask_ratio: float = option(0.75, "share of the visible tokens whose position embedding is dropped (the "
                                              "loss is over them)", range="(0, 1)")
    sigma: float = option(1.0, "position smoothing at the first epoch (grid cells), decaying linearly to 0; 0: off",
                          range=">= 0")
    attentive: bool = option(True, "weight each token's loss by its similarity to [CLS] (attentive reconstruction)")
    decoder_dim: int = option(128, "light decoder's width (DropPos's ImageNet decoder: 512 wide, 2 deep)",
                              range=">= 1")
    decoder_depth: int = option(2, "decoder blocks", range=">= 1")
    decoder_heads: int = option(4, "decoder attention heads, a divisor of droppos.decoder_dim", range=">= 1")


@dataclass
class DeepClusterConfig:
    """DeepCluster (Caron et al. 2018): k-means of the features at each epoch's start gives the labels."""
    clusters: Optional[int] = option(None, "k-means clusters; null: 10x the data's classes (the RR code's; 100 for "
                                           "unlabelled data)", range=">= 2")
    kmeans_iterations: int = option(20, "Lloyd iterations (DeepCluster's faiss setting)", range=">= 1")
    pca_dim: int = option(256, "PCA-whitening to this many components before l2-normalising (DeepCluster's); "
                               "0: none", range=">= 0")
    balance: bool = option(True, "weight the loss by inverse cluster size (the paper samples uniformly over "
                                 "clusters)")
# --- end of the baselines ---


# --- Contrastive baseline and combinations (simclr, sr_simclr, part_contrastive) -----------------
@dataclass
class SimCLRConfig:
    """SimCLR's contrastive term (Chen et al. 2020): NT-Xent on two views, after a projection MLP."""
    temperature: float = option(0.5, "NT-Xent's temperature: RR's SimCLR baseline (SR's Table 1), SimCLR's CIFAR-10 "
                                     "command (0.1 on ImageNet)", range="> 0")
    projection_dim: int = option(128, "the projection MLP's outputs, as SimCLR (its hidden width: "
                                      "method.head_hidden)", range=">= 1")


@dataclass
class CombinedConfig:
    """Weights of the two loss terms of sr_simclr and part_contrastive (0 turns a term off)."""
    contrastive_weight: float = option(1.0, "weight of SimCLR's NT-Xent", range=">= 0")
    spatial_weight: float = option(1.0, "weight of sr_simclr's SR patch-position MSE_x + MSE_y, or "
                                        "part_contrastive's PART MSE", range=">= 0")


@dataclass
class OptimConfig:
    """The optimiser and its step-wise learning-rate schedule."""
    name: str = option("adam", "the optimiser; sgd and lars (SimCLR's large-batch SGD) with optim.momentum",
                       choices=OPTIMIZERS)
    lr: float = option(1e-3, "the learning rate after the warm-up (the cosine schedule's start)", range="> 0")
    weight_decay: float = option(0.0, "weight decay (adamw: decoupled; never on biases and norms)", range=">= 0")
    schedule: str = option("constant", "the learning rate after the warm-up: constant, a cosine down to "
                                       "optim.min_lr, or step (x optim.gamma at each of optim.milestones)",
                           choices=SCHEDULES)
    milestones: list = option([], "step schedule: where the learning rate drops, as ascending fractions of the run "
                                  "(ViTDet's: [0.889, 0.963])", range="(0, 1)")
    gamma: float = option(0.1, "step schedule: the factor at each milestone", range="(0, 1]")
    warmup_epochs: float = option(0.0, "linear warm-up from 0 over this many epochs (fractions allowed)",
                                  range=">= 0")
    warmup_steps: int = option(0, "linear warm-up over this many optimiser steps instead (ViTDet: 250); 0: "
                                  "optim.warmup_epochs", range=">= 0")
    layer_decay: float = option(1.0, "ViTs: layer-wise learning-rate decay, block i of d at lr x layer_decay^(d - i), "
                                     "the embeddings at x layer_decay^(d + 1); 1: off (ViTDet-B: 0.7)",
                                range="(0, 1]")
    min_lr: float = option(0.0, "the cosine schedule's floor", range=">= 0")
    betas: list = option([0.9, 0.999], "adam/adamw's (beta1, beta2); MAE: [0.9, 0.95]; left at the default with sgd",
                         range="[0, 1)", length=2)
    momentum: float = option(0.9, "sgd's and lars' momentum", range="[0, 1)")
    trust_coefficient: float = option(0.001, "lars: each weight tensor's step is scaled by this times ||w|| / "
                                             "||g + weight_decay * w|| (SimCLR's 0.001)", range="> 0")


@dataclass
class FinetuneConfig:
    """Supervised finetuning of a pretrained backbone (DeiT-style recipe, batched on device)."""
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", range="[0, 1)")
    mixup: float = option(0.8, "mixup's Beta(alpha, alpha); 0 turns it off", range=">= 0")
    cutmix: float = option(1.0, "cutmix's Beta(alpha, alpha); 0 turns it off", range=">= 0")
    mix_prob: float = option(1.0, "share of batches mixed", range="[0, 1]")
    switch_prob: float = option(0.5, "with both on: share of mixed batches that use cutmix", range="[0, 1]")
    randaugment_ops: int = option(2, "RandAugment ops per image; 0 turns RandAugment off", range=">= 0")
    randaugment_magnitude: int = option(9, "RandAugment's magnitude", range="[0, 10]")
    random_erasing: float = option(0.25, "probability of random erasing per image", range="[0, 1]")
    subjects: Optional[int] = option(None, "signals, low-label: finetune on this many training subjects; null: all",
                                     range=">= 1")
    scratch: bool = option(False, "from random weights (no model.init_from): the baseline at the same budget")


@dataclass
class DetectConfig:
    """Detection finetuning (``spatialssl detect``; PART Sec. 4 with ViTDet's recipe): the letterboxed canvas,
    the feature pyramid and the torchvision heads on it, the batch's jitter. Defaults are ViTDet-B's."""
    image_size: int = option(1024, "images letterboxed into S x S canvases (longer side scaled to S, zero-padded)",
                             range="[1, 16384]")
    masks: Optional[bool] = option(None, "true: Mask R-CNN | false: Faster R-CNN | null: masks when the annotations "
                                         "have them")
    pyramid_channels: int = option(256, "width of every pyramid level and of the heads' convolutions", range=">= 1")
    window_size: int = option(0, "ViT: attention within windows of this many tokens a side (ViTDet: 14); 0: global",
                              range=">= 0")
    global_blocks: Optional[list] = option(None, "ViT blocks (indices >= 0) kept global with windows on; null: the "
                                                 "last of each quarter of the depth (ViTDet's: 2, 5, 8, 11 of 12)")
    scale_range: list = option([0.1, 2.0], "large-scale jitter of the canvas: [min, max] scale, 0 < min <= max",
                               length=2)
    flip_p: float = option(0.5, "probability of a horizontal flip", range="[0, 1]")
    anchor_scale: float = option(8.0, "anchor side = anchor_scale x its pyramid level's stride (3 aspect ratios)",
                                 range="> 0")
    rpn_batch_size_per_image: int = option(256, "anchors sampled per image for the RPN's loss", range=">= 1")
    proposals_train: int = option(1000, "RPN proposals kept per image (pre- and post-NMS) in training (detectron2's)",
                                  range=">= 1")
    proposals_test: int = option(1000, "RPN proposals kept per image (pre- and post-NMS) in evaluation",
                                 range=">= 1")
    box_batch_size_per_image: int = option(512, "RoIs sampled per image for the box head's loss", range=">= 1")
    rel_pos: bool = option(True, "ViT: decomposed relative position bias in every block, zero at the start "
                                 "(ViTDet's use_rel_pos)")
    box_loss: str = option("l1", "box-regression loss of the RPN and the box head: l1 (detectron2's, ViTDet's) | "
                                 "smooth_l1 (torchvision's, beta 1/9)", choices=("l1", "smooth_l1"))
    aligned_roi: bool = option(True, "RoIAlign with pixel centres at half-integers (detectron2's ROIAlignV2, "
                                     "ViTDet's); false: torchvision's default")
    box_head_convs: int = option(4, "convolutions of the box head (ViTDet's 4conv1fc); 0: fully connected only",
                                 range=">= 0")
    representation_size: int = option(1024, "the box head's fully connected width", range=">= 1")
    score_threshold: float = option(0.05, "detections below this score are dropped before scoring", range="[0, 1)")
    detections_per_image: int = option(100, "detections kept per image", range=">= 1")
    eval_batch_size: int = option(8, "images per batch in evaluation", range=">= 1")
    category_ids: Optional[list] = option(None, "the COCO ids of the classes, recorded from the training "
                                                "annotations")


@dataclass
class TrainConfig:
    """The training loop: length, batch, device, precision and logging."""
    epochs: int = option(200, "epochs to train (a larger value with --resume extends a run)", range="[0, 1000000]")
    batch_size: int = option(128, "images per step (under torchrun: the global batch)", range="[2, 1048576]")
    seed: int = option(0, "seeds the initial weights, the data order and the augmentation")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    knn_monitor: int = option(2000, "images per split for the per-epoch kNN monitor; 0 turns it off", range=">= 0")
    log_every: int = option(20, "steps between logged steps (steps.csv, TensorBoard, progress lines)", range=">= 1")
    keep_checkpoints: int = option(2, "checkpoints kept: last.ckpt and the ones before it (last-1.ckpt, ...), "
                                      "which --resume falls back to when a newer one is unreadable", range="[1, 100]")
    logger: str = option("tensorboard", "tensorboard (and metrics.csv, always) | wandb (Weights & Biases too; extra "
                                        "[wandb])", choices=LOGGERS)
    sync_bn: bool = option(False, "under torchrun: BatchNorm statistics over the global batch")
    ddp_bucket_mb: float = option(25.0, "under torchrun: MB of gradients per all-reduce bucket; each bucket is "
                                        "reduced as soon as its gradients are ready, during the backward pass "
                                        "(compiled backbones are split at the buckets)", range=">= 1")
    grad_compression: str = option("none", "under torchrun: gradients all-reduced as bf16 (CUDA, NCCL) or fp16, "
                                           "halving the bytes sent, and averaged back into fp32",
                                   choices=GRAD_COMPRESSIONS)
    precision: str = option("auto", "auto: bf16 on GPUs with it, fp16 (autocast with a gradient scaler) on CUDA GPUs "
                                    "without it (T4, V100), fp32 on the CPU and MPS; bf16 and fp16 autocast, weights "
                                    "and optimiser staying fp32; tf32: fp32 matmuls on TF32 cores (CUDA); fp32: "
                                    "strict fp32", choices=PRECISIONS)
    channels_last: bool = option(False, "NHWC memory layout for convolutions (GPUs)")
    compile: bool = option(False, "torch.compile the step's backbone, heads, encoders and losses (the samplers "
                                  "stay eager)")
    compile_mode: str = option("default", "with train.compile: torch.compile's mode; reduce-overhead replays CUDA "
                                          "graphs (for launch-bound small images with static shapes), "
                                          "max-autotune searches kernels", choices=COMPILE_MODES)
    ema: float = option(0.0, "decay of an exponential moving average of the weights (e.g. 0.9999); 0 turns it off",
                        range="[0, 1)")
    deterministic: bool = option(False, "bit-identical reruns of a seed (deterministic kernels; slower)")
    accumulate_steps: int = option(1, "micro-batches per optimiser step, their gradients summed: train.batch_size "
                                      "is split into this many (RR, SR, SimCLR and their combinations then pair "
                                      "and contrast within a micro-batch)", range=">= 1")
    activation_checkpointing: bool = option(False, "ViTs: recompute each block's activations in the backward pass "
                                                   "instead of keeping them (less memory, about a third more "
                                                   "compute)")


@dataclass
class EvalConfig:
    """Linear evaluation and the kNN monitor."""
    epochs: int = option(100, "linear-probe epochs", range=">= 1")
    lr: float = option(1e-3, "linear-probe learning rate (Adam)", range="> 0")
    batch_size: int = option(128, "linear-probe batch size", range=">= 1")
    patches: list = option([0, 1, 3, 5, 7, 9], "patch-feature counts probed: the image alone (0), then 1, 3, ... of "
                                               "the 3x3 grid's patches", choices=EVAL_PATCH_COUNTS)
    affine_augment: bool = option(False, "random affine augmentation of the probe's training images (the paper's "
                                         "Fig. 4)")
    augment_copies: int = option(10, "augmented feature sets cycled through with eval.affine_augment", range=">= 1")
    knn_k: Optional[int] = option(None, "kNN neighbours; null: min(200, sqrt(training images))", range=">= 1")
    standardize: bool = option(True, "probe per-dimension standardised features (MAE's probe); false: raw")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    signal: SignalOptions = field(default_factory=SignalOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    part: PartConfig = field(default_factory=PartConfig)
    mae: MaeConfig = field(default_factory=MaeConfig)
    mp3: Mp3Config = field(default_factory=Mp3Config)
    droppos: DropPosConfig = field(default_factory=DropPosConfig)
    deepcluster: DeepClusterConfig = field(default_factory=DeepClusterConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    combined: CombinedConfig = field(default_factory=CombinedConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; ints are accepted for floats."""
    origin = get_origin(hint)
    if origin is Union:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = get_origin(hint)
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads "1e-4" as a string
        except ValueError:
            pass
    expected = origin or hint
    if expected is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' expects {getattr(expected, '__name__', expected)}, got {shown(value)}")
    return value


def _apply(section: Any, values: dict, prefix: str) -> None:
    hints = get_type_hints(type(section))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in hints:
            valid = ", ".join(f"{prefix}{n}" for n in hints)
            raise ConfigError(f"unknown config key '{key}'; valid keys here: {valid}")
        current = getattr(section, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section; give it a mapping")
            _apply(current, value, f"{key}.")
        else:
            setattr(section, name, _coerce(value, hints[name], key))


def parse_overrides(pairs: list[str]) -> dict:
    """``["method.num_patches=3", "train.epochs=5"]`` -> nested dict with YAML-typed values."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' is not of the form section.key=value")
        key, raw = pair.split("=", 1)
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _override_value(pair, raw)
    return nested


def _override_value(pair: str, raw: str) -> Any:
    if raw == "":
        return None
    try:
        return load_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{pair}' is not a valid YAML value ({_yaml_reason(err)}); "
                          "quote strings and close brackets, e.g. augment.scale=[0.2,1.0]") from None


def _yaml_reason(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong and where."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(err).splitlines()[0]


BUNDLED_RECIPES = Path(__file__).parents[1] / "recipes"
MAX_RECIPE_BYTES = 1 << 20  # the bundled ones are under 2 kB


def resolve_recipe(path: Union[str, Path]) -> Path:
    """The recipe file ``path`` names: the file itself, or else a bundled recipe when ``path`` is a bare
    name (``sr_cifar10``, ``sr_cifar10.yaml``) or the documented ``recipes/<name>.yaml``, which must work
    from any folder once the package is installed. Any other missing path is an error, not a quiet
    substitute: a mistyped folder must not run a different recipe."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"recipe {path} is a folder; pass a YAML file in it or a bundled recipe's name")
    if path.exists():  # a device, a FIFO, a socket: reading it could block or never end
        raise ConfigError(f"recipe {path} is not a regular file; pass a YAML file or a bundled recipe's name")
    names_a_bundled_recipe = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "recipes")
    if not names_a_bundled_recipe:
        raise ConfigError(f"recipe {path} does not exist; only a bare name (sr_cifar10) or recipes/<name>.yaml "
                          "falls back to a bundled recipe")
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    bundled = BUNDLED_RECIPES / name
    if not bundled.is_file():
        raise ConfigError(f"recipe {path} does not exist and no bundled recipe is named {name}; "
                          f"the bundled ones are in {BUNDLED_RECIPES}")
    return bundled


def read_recipe(path: Union[str, Path]) -> dict:
    """A recipe's sections as written (``resolve_recipe`` finds the file): YAML read safely, never executed."""
    path = resolve_recipe(path)
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {path.stat().st_size:,} bytes, too large for a recipe (at most "
                          f"{MAX_RECIPE_BYTES:,}); pass the YAML file of a run's options")
    try:
        recipe = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML ({_yaml_reason(err)}); fix it or name a bundled "
                          "recipe") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read recipe {path} ({getattr(err, 'strerror', None) or err}); "
                          "pass a YAML text file") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections")
    return recipe


def overlay(config: dict, recipe: dict) -> dict:
    """``config`` (a ``Config.to_dict()``) with ``recipe``'s sections written over it, key by key."""
    for section, values in recipe.items():
        config[section].update(values)
    return config


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[list[str]] = None,
                base: Optional[dict] = None) -> Config:
    """Build a validated Config from defaults, an optional base dict, a recipe and overrides."""
    cfg = Config()
    for layer in (base or {}, read_recipe(path) if path is not None else {}, parse_overrides(overrides or [])):
        _apply(cfg, layer, "")
        cfg.data.statistics_of = statistics_of(layer, cfg.data.statistics_of)
    validate(cfg)
    return cfg


def statistics_of(layer: dict, current: Optional[str]) -> Optional[str]:
    """Whose statistics data.mean/std are once ``layer`` is applied: a layer that gives them gives them for
    the data set it names (a recipe's data.dataset), or for any data when it names none (the user's own
    data.mean=... on the command line, a recipe of their own without data.dataset)."""
    data = layer.get("data") or {}
    if "statistics_of" in data:
        return data["statistics_of"]
    if "mean" in data or "std" in data:
        return data.get("dataset")
    return current


SR_PATCH_METHODS = ("sr", "sr_simclr")  # cut SR's patches (method.num_patches, method.patch_size)
PART_BOX_METHODS = ("part", "part_contrastive")  # cut PART's boxes with a ViT (part.*)


def _choice(value: Any, options: tuple, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key} {shown(value)} is unknown; choose one of {', '.join(map(str, options))}")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _require(holds: bool, key: str, rule: str, value: Any) -> None:
    if not holds:
        raise ConfigError(f"{key} must be {rule}, got {shown(value)}")


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN passes no comparison, so it must be refused here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sections(cfg: Config) -> dict:
    """Each section of ``cfg`` by its name (``optim``: the OptimConfig)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def declared_rule(declaration: Option, hint: Any) -> str:
    """What a value of a field declared with a range or a length must be, in words."""
    nullable = " (or null)" if type(None) in get_args(hint) else ""
    if _inner(hint) is list:
        count = f"{declaration.length} " if declaration.length is not None else ""
        within = f" {declaration.range.phrase}" if declaration.range else ""
        return f"a list of {count}numbers{within}{nullable}"
    finite = "a finite number " if _inner(hint) is float and declaration.range.high == math.inf else ""
    return f"{finite}{declaration.range.phrase}{nullable}"


def _inner(hint: Any) -> Any:
    """``Optional[X]``'s X; any other hint as it is."""
    return next(h for h in get_args(hint) if h is not type(None)) if get_origin(hint) is Union else hint


def _check_declared(cfg: Config) -> None:
    """The ranges, lengths and choices the sections declare (what `spatialssl options` lists). First, so
    that the checks after it may unpack lists and compare numbers."""
    for name, section in sections(cfg).items():
        hints = get_type_hints(type(section))
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is not None:  # None passed the type check: the field is Optional
                _check_option(f"{name}.{f.name}", value, declared(f), hints[f.name])


MAX_INTEGER = 2**31 - 1  # any integer option: a count past it overflows a kernel's 32-bit index, or a day's run


def _check_option(key: str, value: Any, declaration: Option, hint: Any) -> None:
    """A list's range and choices hold for each of its items; an integer without a declared ceiling stays under
    MAX_INTEGER."""
    items = value if isinstance(value, list) else [value]
    if declaration.range is not None or declaration.length is not None:
        in_range = all(declaration.range.holds(v) if declaration.range else _is_number(v) for v in items)
        _require(in_range and declaration.length in (None, len(items)), key, declared_rule(declaration, hint), value)
    if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INTEGER for v in items):
        raise ConfigError(f"{key} must be at most {MAX_INTEGER:,} in size, got {shown(value)}")
    if declaration.choices is not None and isinstance(value, list):
        for item in value:
            if item not in declaration.choices:
                raise ConfigError(f"{key} may hold {', '.join(map(str, declaration.choices))}, got {item}")
    elif declaration.choices is not None:
        _choice(value, declaration.choices, key)


def _check_data_and_signal(cfg: Config) -> None:
    d, s = cfg.data, cfg.signal
    _require(d.mean is None or all(_is_number(v) for v in d.mean), "data.mean", "a list of finite numbers", d.mean)
    _require(s.channels is None or (len(s.channels) > 0 and all(isinstance(c, str) for c in s.channels)),
             "signal.channels", "a non-empty list of channel names (or null for all)", s.channels)
    _require(s.bandpass is None or s.bandpass[0] < s.bandpass[1], "signal.bandpass",
             "[low, high] in Hz with low < high (or null to turn it off)", s.bandpass)
    if d.resize == "whole" and d.image_size is None:
        raise ConfigError("data.resize=whole needs data.image_size: the size of the crops cut from the whole images")
    for name in ("source_size", "crop_pct"):
        if d.resize != "whole" and getattr(d, name) != getattr(DataConfig(), name):
            raise ConfigError(f"data.{name} applies to data.resize=whole (whole images streamed), not to "
                              f"data.resize={d.resize}: set data.resize=whole, or leave data.{name} at its default")


def _check_model(cfg: Config) -> None:
    m, p = cfg.model, cfg.part
    _require(m.input_size is None or (len(m.input_size) in (1, 2) and all(isinstance(v, int) and v >= 1
                                                                             for v in m.input_size)),
             "model.input_size", "[H, W] (or [T]) of positive ints, or null to take it from the data", m.input_size)
    check_backbone(m.backbone)
    if m.pretrained and not is_external(m.backbone):
        raise ConfigError(f"model.pretrained applies to timm/<name> and torchvision/<name> backbones; "
                          f"{m.backbone} starts from random weights (finetune a checkpoint with model.init_from)")
    if m.global_pool == "token" and not m.class_token:
        raise ConfigError("model.global_pool=token needs model.class_token=true")
    size = m.backbone.split("_")[-1]
    if cfg.method.name in PART_BOX_METHODS and p.encoder == "cross_attention" and size in VIT_SIZES:
        width = VIT_SIZES[size][0]
        if width % p.encoder_heads:
            raise ConfigError(f"part.encoder_heads {p.encoder_heads} must divide the {width}-wide embeddings of "
                              f"{m.backbone}; choose a divisor of {width} (the published encoder uses 1)")


def _check_droppos(cfg: Config) -> None:
    d = cfg.droppos
    _require(d.decoder_dim % d.decoder_heads == 0, "droppos.decoder_heads",
             f"a divisor of droppos.decoder_dim {d.decoder_dim}", d.decoder_heads)
    if cfg.method.name == "droppos" and not cfg.model.pos_embed:
        raise ConfigError("DropPos drops a share of a fixed sine-cosine position embedding; set model.pos_embed=true")
    if cfg.method.name == "droppos" and d.attentive and not cfg.model.class_token:
        raise ConfigError("droppos.attentive weighs tokens by their similarity to [CLS]; set model.class_token=true "
                          "(or droppos.attentive=false)")


def _check_baselines(cfg: Config) -> None:
    """MAE, MP3 and DeepCluster: what each needs of its section, the model and the data."""
    mae, name = cfg.mae, cfg.method.name
    _require(mae.decoder_dim % 4 == 0, "mae.decoder_dim", "a multiple of 4 (its sine-cosine position embedding)",
             mae.decoder_dim)
    _require(mae.decoder_dim % mae.decoder_heads == 0, "mae.decoder_heads", f"a divisor of mae.decoder_dim "
             f"{mae.decoder_dim}", mae.decoder_heads)
    _check_droppos(cfg)
    if name in ("mae", "mp3", "droppos") and not cfg.model.backbone.startswith("vit_"):
        raise ConfigError(f"method {name} needs one of spatialssl's image ViTs (model.backbone=vit_tiny, vit_small "
                          f"or vit_base), got '{cfg.model.backbone}'")
    if name == "mae" and not cfg.model.pos_embed:
        raise ConfigError("MAE's encoder adds a position embedding (fixed sine-cosine); set model.pos_embed=true")
    if name == "mp3" and cfg.model.pos_embed:
        raise ConfigError("MP3 pretrains without a position embedding; set model.pos_embed=false")


def _check_detect(cfg: Config) -> None:
    d = cfg.detect
    _require(d.global_blocks is None or all(isinstance(b, int) and b >= 0 for b in d.global_blocks),
             "detect.global_blocks", "null or a list of block indices >= 0", d.global_blocks)
    if cfg.method.name == "detect" and cfg.model.class_token:
        raise ConfigError("detection reads the ViT's patch tokens as a map (ViTDet): a [CLS] token would go unused; "
                          "set model.class_token=false (and model.global_pool=avg)")
    _require(0 < d.scale_range[0] <= d.scale_range[1], "detect.scale_range", "[min, max] with 0 < min <= max",
             d.scale_range)


def _check_methods(cfg: Config) -> None:
    """What a method needs of the other sections."""
    m, p, signals = cfg.method, cfg.part, modality(cfg.model.backbone) == "signals"
    if m.name in PART_BOX_METHODS and not is_vit(cfg.model.backbone):
        raise ConfigError(f"method {m.name} needs a ViT backbone (model.backbone=vit_tiny, vit_small, vit_base, "
                          f"vit1d_tiny, vit1d_small or one of timm's ViTs, e.g. timm/vit_tiny_patch16_224), "
                          f"got '{cfg.model.backbone}'")
    if m.name in PART_BOX_METHODS and cfg.model.pos_embed and not (signals and p.pos_embed_mask > 0):
        raise ConfigError("PART pretrains without a position embedding; set model.pos_embed=false "
                          "(1-D only: a position embedding over time-sorted windows with part.pos_embed_mask > 0)")
    if m.name == "finetune" and not cfg.model.init_from and not cfg.finetune.scratch:
        raise ConfigError("method finetune needs model.init_from (a pretrained checkpoint); "
                          "use `spatialssl finetune --checkpoint RUN/last.ckpt` (or --scratch for random weights)")
    if cfg.finetune.scratch and cfg.model.init_from:
        raise ConfigError(f"finetune.scratch starts from random weights, model.init_from from "
                          f"{cfg.model.init_from}: choose one")
    if m.name in ("rr", "sr") and m.augmentations < 2:
        raise ConfigError(f"method.augmentations must be >= 2 for {m.name} (it pairs views), got {m.augmentations}")
    if m.name in SR_PATCH_METHODS and m.num_patches < 2:
        raise ConfigError(f"method.num_patches must be >= 2 for {m.name} (it pairs patches), got {m.num_patches}")
    channels = cfg.data.channels or 3
    for name in ("mean", "std"):
        value = getattr(cfg.data, name)
        if value is not None and cfg.data.channels is not None and len(value) != channels and not signals:
            raise ConfigError(f"data.{name} needs {channels} values (one per channel: data.channels), got {shown(value)}")


def validate(cfg: Config) -> None:
    """Checks that need no data; geometry checks against the images happen at sampler build. The ranges
    and choices are the fields' declarations; what follows are the rules that join several options."""
    o = cfg.optim
    _check_declared(cfg)
    _require(o.name not in ("sgd", "lars") or o.betas == OptimConfig().betas, "optim.betas",
             f"left at its default with optim.name={o.name} (betas are Adam's; set optim.momentum)", o.betas)
    _require(o.name in ("sgd", "lars") or o.momentum == OptimConfig().momentum, "optim.momentum",
             f"left at its default with optim.name={o.name} (momentum is sgd's and lars'; set optim.betas)",
             o.momentum)
    _require(o.name == "lars" or o.trust_coefficient == OptimConfig().trust_coefficient, "optim.trust_coefficient",
             "left at its default unless optim.name=lars", o.trust_coefficient)
    _require(o.schedule == "step" or not o.milestones, "optim.milestones", "empty unless optim.schedule=step",
             o.milestones)
    _require(o.schedule != "step" or list(o.milestones) == sorted(o.milestones), "optim.milestones",
             "ascending", o.milestones)
    _require(o.schedule == "step" or o.gamma == OptimConfig().gamma, "optim.gamma",
             "left at its default unless optim.schedule=step", o.gamma)
    _require(not (o.warmup_steps and o.warmup_epochs), "optim.warmup_steps",
             "0 when optim.warmup_epochs is set (one warm-up: set the other to 0)", o.warmup_steps)
    _require(cfg.train.compile or cfg.train.compile_mode == "default", "train.compile_mode",
             "left at default unless train.compile=true", cfg.train.compile_mode)
    _require(DEVICE.fullmatch(cfg.train.device) is not None, "train.device", "auto, cpu, cuda, cuda:N or mps",
             cfg.train.device)
    lo, hi = cfg.part.box_scale
    if not 0 < lo <= hi:
        raise ConfigError(f"part.box_scale must satisfy 0 < min <= max, got {cfg.part.box_scale}")
    lo, hi = cfg.augment.scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"augment.scale must satisfy 0 < min <= max <= 1, got {cfg.augment.scale}")
    _check_data_and_signal(cfg)
    _check_model(cfg)
    _check_baselines(cfg)
    _check_detect(cfg)
    _check_methods(cfg)
