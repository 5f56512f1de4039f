"""Run configuration: nested dataclasses, YAML recipes and ``key=value`` overrides.

Every option has a default here; a recipe only states what differs. Unknown keys and
values of the wrong type are rejected with an error naming the key, before work starts.
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
from ..data.readers import CIFAR100_LABELS
from ..data.signals import SignalOptions
from ..errors import ConfigError
from ..methods import METHODS
from ..models import ENCODERS, check_backbone, is_vit, modality
from ..models.external import is_external
from ..models.vit import POOLS
from ..models.vit import SIZES as VIT_SIZES
from ..samplers.boxes import MODES as SAMPLING
from ..samplers.patches import PLACEMENTS
from .optim import OPTIMIZERS, SCHEDULES


@dataclass
class DataConfig:
    path: Optional[str] = None
    dataset: Optional[str] = None  # cifar10 | cifar100 | stl10: what --download fetches, and the data set
    # data.mean/std belong to: on other data they are measured instead (None: given statistics always apply)
    split: str = "train"  # what pretraining reads; e.g. "train+unlabeled" for STL-10
    test_split: str = "test"
    labels: str = "fine"  # CIFAR-100: fine (100) or coarse (the 20 super-classes)
    image_size: Optional[int] = None  # resize at decode time (once); None keeps files' size
    resize: str = "short_side"  # to image_size: short side scaled, long one centre-cropped | squash (both scaled)
    channels: Optional[int] = None  # 1 (grey), 3 (RGB) or an array's own count; None: RGB, or an array's own
    mean: Optional[list] = None  # None: measured on the training images
    std: Optional[list] = None
    cache: bool = True
    stream: bool = False  # image folders too large for memory: decode batches in DataLoader workers
    workers: Optional[int] = None  # decoding processes when streaming; None: all cores


@dataclass
class ModelConfig:
    backbone: str = "resnet32"  # resnet8/20/32/56/18/34, vit_tiny/small/base, vit1d_tiny/small (signals),
    # timm/<name> or torchvision/<name> (e.g. timm/vit_small_patch16_224, torchvision/resnet50) when installed
    pretrained: bool = False  # timm/ and torchvision/ backbones: start from the library's pretrained weights (downloads)
    cifar_stem: bool = False  # ResNet-18/34 only: 3x3 stride-1 stem, no max-pool
    patch_size: int = 4  # ViT token size P (4 at 32 px, 16 at 224 px; samples per window for 1-D)
    pos_embed: bool = False  # ViT: learnable position embedding (off for PART pretraining)
    class_token: bool = False  # ViT: a [CLS] token
    global_pool: str = "avg"  # ViT: avg (mean of patch tokens) or token ([CLS])
    drop_path: float = 0.0  # ViT: stochastic depth rate
    depth: Optional[int] = None  # ViT: number of blocks; None: the size's (12)
    input_size: Optional[list] = None  # [H, W] (or [T] for signals) the model sees; filled in from the data
    in_chans: Optional[int] = None  # input channels; filled in from the data
    num_tokens: Optional[int] = None  # 1-D: position-embedding length; None: T / patch_size
    init_from: Optional[str] = None  # start from a checkpoint's backbone (finetuning)


@dataclass
class AugmentConfig:
    scale: list = field(default_factory=lambda: [0.08, 1.0])
    ratio: list = field(default_factory=lambda: [3 / 4, 4 / 3])
    flip_p: float = 0.5
    jitter: list = field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])  # b, c, s, h
    jitter_p: float = 0.8
    gray_p: float = 0.2


@dataclass
class MethodConfig:
    name: str = "sr"  # rr | sr | part | supervised | finetune | random; baselines and combinations:
    # simclr | rotation | sr_simclr | part_contrastive
    augmentations: int = 4  # K
    num_patches: int = 2  # N (SR)
    patch_size: int = 16
    additive: bool = False  # SR additive-patch-use
    additive_placement: str = "random"  # additive: paste at a random position (the paper's) | same (where cut)
    position_weight: float = 1.0  # SR: weight of each axis's MSE (paper eq. 3); 0.5 = the official code's one MSE
    non_overlapping: bool = True  # first two patches never overlap
    focal: Optional[bool] = None  # None: focal for RR, plain BCE for SR (as published)
    head_hidden: int = 256  # hidden width of the relation head and of SimCLR's projection MLP


@dataclass
class PartConfig:
    """PART (Ayoughi et al.): relative translation of off-grid patches."""
    sampling: str = "offgrid"  # offgrid (fixed D x D, the paper's) | scale (PART + scale: w, h in box_scale * P) | grid | stratified
    box_size: Optional[int] = None  # offgrid: side D of the cut boxes; None: the token size P
    box_scale: list = field(default_factory=lambda: [0.5, 2.0])  # scale: w, h range in units of P
    num_tokens: Optional[int] = None  # patches per image; None: (H / P) * (W / P)
    num_pairs: int = 2048  # random ordered pairs per image whose translation is regressed
    encoder: str = "cross_attention"  # cross_attention (as published) | cross_attention_block | pairwise_mlp | mlp
    encoder_heads: int = 1  # cross_attention only: attention heads (the official code's 1); the block variant uses the ViT's
    predict_scale: Optional[bool] = None  # also regress dw, dh; None: in the scale sampling mode
    log_scale: bool = False  # dw, dh as log-ratios
    mlp_hidden: int = 512  # full-MLP encoder bottleneck; 0: the paper's single linear map
    pos_embed_mask: float = 0.0  # 1-D: share of position embeddings dropped (windows sorted by time)


# --- Baselines on ViTs (PART's Tables 6-7) and ResNets (the SR paper's Table 1) ---
@dataclass
class MaeConfig:
    """MAE (He et al. 2022): the pixels of masked tokens regressed from the visible ones (model.pos_embed=true)."""
    mask_ratio: float = 0.75  # share of each image's tokens masked (MAE's 75%)
    decoder_dim: int = 128  # light decoder for CIFAR-scale ViTs (MAE's ImageNet decoder: 512 wide, 8 deep)
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # targets normalised per patch (its mean and variance), as MAE's best setting


@dataclass
class Mp3Config:
    """MP3 (Zhai et al. 2022): every token classifies its grid position; no position embedding."""
    mask_ratio: float = 0.75  # share of tokens no token may attend to (their keys and values left out); 0: none


@dataclass
class DropPosConfig:
    """DropPos (Wang et al. 2023): tokens masked as MAE's, positions dropped from most visible ones and
    classified back (model.pos_embed=true, model.class_token=true with attentive reconstruction)."""
    mask_ratio: float = 0.75  # share of each image's tokens masked (hidden from the encoder)
    position_mask_ratio: float = 0.75  # share of the visible tokens whose position embedding is dropped
    sigma: float = 1.0  # position smoothing at the first epoch (grid cells), decaying linearly to 0; 0: off
    attentive: bool = True  # weight each token's loss by its similarity to [CLS] (attentive reconstruction)
    decoder_dim: int = 128  # light decoder for CIFAR-scale ViTs (DropPos's ImageNet decoder: 512 wide, 2 deep)
    decoder_depth: int = 2
    decoder_heads: int = 4


@dataclass
class DeepClusterConfig:
    """DeepCluster (Caron et al. 2018): k-means of the features at each epoch's start gives the labels."""
    clusters: Optional[int] = None  # None: 10x the data's classes (the RR code's; 100 for unlabelled data)
    kmeans_iterations: int = 20  # Lloyd iterations (DeepCluster's faiss setting)
    pca_dim: int = 256  # PCA-whitening to this many components before l2-normalising (DeepCluster's); 0: none
    balance: bool = True  # weight the loss by inverse cluster size (the paper samples uniformly over clusters)
# --- end of the baselines ---


# --- Contrastive baseline and combinations (simclr, sr_simclr, part_contrastive) -----------------
@dataclass
class SimCLRConfig:
    """SimCLR's contrastive term (Chen et al. 2020): NT-Xent on two views, after a projection MLP."""
    temperature: float = 0.5  # RR's SimCLR baseline (SR's Table 1), SimCLR's CIFAR-10 command (0.1 on ImageNet)
    projection_dim: int = 128  # the projection MLP's outputs, as SimCLR (its hidden width: method.head_hidden)


@dataclass
class CombinedConfig:
    """Weights of the two loss terms of sr_simclr and part_contrastive (0 turns a term off)."""
    contrastive_weight: float = 1.0  # SimCLR's NT-Xent
    spatial_weight: float = 1.0  # sr_simclr: SR's patch-position MSE_x + MSE_y; part_contrastive: PART's MSE


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup_epochs: float = 0.0  # linear warm-up from 0 (cosine and constant)
    min_lr: float = 0.0  # cosine floor
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw's (beta1, beta2); MAE: [0.9, 0.95]


@dataclass
class FinetuneConfig:
    """Supervised finetuning of a pretrained backbone (DeiT-style recipe, batched on device)."""
    label_smoothing: float = 0.1
    mixup: float = 0.8  # Beta(alpha, alpha); 0 turns it off
    cutmix: float = 1.0  # Beta(alpha, alpha); 0 turns it off
    mix_prob: float = 1.0  # share of batches mixed
    switch_prob: float = 0.5  # with both on: share of mixed batches that use cutmix
    randaugment_ops: int = 2  # ops per image; 0 turns RandAugment off
    randaugment_magnitude: int = 9  # 0..10
    random_erasing: float = 0.25  # probability per image
    subjects: Optional[int] = None  # signals, low-label: finetune on this many training subjects
    scratch: bool = False  # from random weights (no model.init_from): the baseline at the same budget


@dataclass
class DetectConfig:
    """Detection finetuning (``spatialssl detect``; PART Sec. 4 with ViTDet's recipe): the letterboxed canvas,
    the feature pyramid and the torchvision heads on it, the batch's jitter. Defaults are ViTDet-B's."""
    image_size: int = 1024  # images letterboxed into S x S canvases (longer side scaled to S, zero-padded)
    masks: Optional[bool] = None  # true: Mask R-CNN | false: Faster R-CNN | null: masks when the annotations have them
    pyramid_channels: int = 256  # width of every pyramid level and of the heads' convolutions
    window_size: int = 0  # ViT: attention within windows of this many tokens a side (ViTDet: 14); 0: global
    global_blocks: Optional[list] = None  # ViT blocks kept global with windows on; null: the last of each
    # quarter of the depth (ViTDet's: 2, 5, 8, 11 of 12)
    scale_range: list = field(default_factory=lambda: [0.1, 2.0])  # large-scale jitter of the canvas
    flip_p: float = 0.5
    anchor_scale: float = 8.0  # anchor side = anchor_scale x its pyramid level's stride (3 aspect ratios)
    rpn_batch_size_per_image: int = 256  # anchors sampled per image for the RPN's loss
    proposals_train: int = 2000  # RPN proposals kept per image (pre- and post-NMS) in training
    proposals_test: int = 1000
    box_batch_size_per_image: int = 512  # RoIs sampled per image for the box head's loss
    box_head_convs: int = 4  # ViTDet's 4conv1fc box head; 0: fully connected only
    representation_size: int = 1024  # the box head's fully connected width
    score_threshold: float = 0.05  # detections kept for scoring
    detections_per_image: int = 100
    eval_batch_size: int = 8
    category_ids: Optional[list] = None  # recorded from the training annotations: the COCO ids of the classes


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    knn_monitor: int = 2000  # images per split for the per-epoch kNN monitor; 0 turns it off
    log_every: int = 20
    logger: str = "tensorboard"  # tensorboard (and metrics.csv, always) | wandb (Weights & Biases too; extra [wandb])
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; weights and optimiser stay fp32; fp16 with a gradient
    # scaler, for GPUs without bf16: T4, V100)
    channels_last: bool = False  # NHWC memory layout for convolutions (GPUs)
    compile: bool = False  # torch.compile the backbone
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.9999); 0 turns it off
    deterministic: bool = False  # bit-identical reruns of a seed (deterministic kernels; slower)


@dataclass
class EvalConfig:
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 128
    patches: list = field(default_factory=lambda: [0, 1, 3, 5, 7, 9])
    affine_augment: bool = False
    augment_copies: int = 10  # augmented feature sets cycled through when affine_augment
    knn_k: Optional[int] = None  # kNN neighbours; None: min(200, sqrt(training images)) (evaluate.knn_neighbours)
    standardize: bool = True  # linear probe on per-dimension standardised features (MAE's probe); false: raw


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
        raise ConfigError(f"config key '{key}' expects {getattr(expected, '__name__', expected)}, got {value!r}")
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
        return yaml.safe_load(raw)
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
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
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
    if base:
        _apply(cfg, base, "")
    if path is not None:
        _apply(cfg, read_recipe(path), "")
    _apply(cfg, parse_overrides(overrides or []), "")
    validate(cfg)
    return cfg


PRECISIONS = ("fp32", "bf16", "fp16")
SR_PATCH_METHODS = ("sr", "sr_simclr")  # cut SR's patches (method.num_patches, method.patch_size)
PART_BOX_METHODS = ("part", "part_contrastive")  # cut PART's boxes with a ViT (part.*)
LOGGERS = ("tensorboard", "wandb")
EVAL_PATCH_COUNTS = (0, 1, 3, 5, 7, 9)  # the paper's: the image alone, then 1, 3, ... of the 3x3 grid's patches


def _choice(value: str, options: tuple, key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key} '{value}' is unknown; choose one of {', '.join(options)}")


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _require(holds: bool, key: str, rule: str, value: Any) -> None:
    if not holds:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _check_lengths(cfg: Config) -> None:
    """Before any check that unpacks these lists: a wrong length would be a traceback there."""
    for key, values, length in (("augment.scale", cfg.augment.scale, 2), ("augment.ratio", cfg.augment.ratio, 2),
                                ("part.box_scale", cfg.part.box_scale, 2), ("augment.jitter", cfg.augment.jitter, 4),
                                ("optim.betas", cfg.optim.betas, 2)):
        _require(len(values) == length and all(_is_number(v) for v in values), key, f"a list of {length} numbers",
                 values)


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN passes no comparison, so it must be refused here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_or_none(value: Any) -> bool:
    return value is None or (_is_number(value) and value > 0)


def _check_data_and_signal(cfg: Config) -> None:
    d, s = cfg.data, cfg.signal
    _require(_positive_or_none(d.image_size), "data.image_size", "a size in pixels >= 1 (or null to keep the files')",
             d.image_size)
    _require(d.workers is None or d.workers >= 0, "data.workers", ">= 0 (or null for all cores)", d.workers)
    _require(d.channels is None or d.channels >= 1, "data.channels", ">= 1 (or null)", d.channels)
    for name, value in (("mean", d.mean), ("std", d.std)):
        _require(value is None or all(_is_number(v) for v in value), f"data.{name}", "a list of finite numbers", value)
    _require(d.std is None or all(v > 0 for v in d.std), "data.std", "positive per channel (it divides)", d.std)
    _require(_positive_or_none(s.sampling_rate), "signal.sampling_rate", "in Hz > 0 (or null to keep the files')",
             s.sampling_rate)
    _require(_positive_or_none(s.expected_rate), "signal.expected_rate", "in Hz > 0 (or null)", s.expected_rate)
    _require(_is_number(s.epoch_seconds) and s.epoch_seconds > 0, "signal.epoch_seconds", "> 0", s.epoch_seconds)
    _require(0 < s.test_fraction < 1, "signal.test_fraction", "in (0, 1)", s.test_fraction)
    _require(s.channels is None or (len(s.channels) > 0 and all(isinstance(c, str) for c in s.channels)),
             "signal.channels", "a non-empty list of channel names (or null for all)", s.channels)
    band = s.bandpass
    _require(band is None or (len(band) == 2 and all(_is_number(v) for v in band) and 0 <= band[0] < band[1]),
             "signal.bandpass", "[low, high] in Hz with 0 <= low < high (or null to turn it off)", band)


def _check_model_and_eval(cfg: Config) -> None:
    m, e, p, f = cfg.model, cfg.eval, cfg.part, cfg.finetune
    _require(_is_number(m.drop_path) and 0 <= m.drop_path < 1, "model.drop_path", "in [0, 1)", m.drop_path)
    for key, value in (("model.depth", m.depth), ("model.in_chans", m.in_chans), ("model.num_tokens", m.num_tokens),
                       ("part.box_size", p.box_size), ("finetune.subjects", f.subjects)):
        _require(value is None or value >= 1, key, ">= 1 (or null)", value)
    _require(m.input_size is None or (len(m.input_size) in (1, 2) and all(isinstance(v, int) and v >= 1
                                                                             for v in m.input_size)),
             "model.input_size", "[H, W] (or [T]) of positive ints, or null to take it from the data", m.input_size)
    _require(p.mlp_hidden >= 0, "part.mlp_hidden", ">= 0 (0: a single linear map)", p.mlp_hidden)
    _require(_is_number(e.lr) and e.lr > 0, "eval.lr", "a finite number > 0", e.lr)
    _require(e.batch_size >= 1, "eval.batch_size", ">= 1", e.batch_size)
    _require(e.augment_copies >= 1, "eval.augment_copies", ">= 1", e.augment_copies)
    _require(0 <= f.label_smoothing < 1, "finetune.label_smoothing", "in [0, 1)", f.label_smoothing)
    _require(f.randaugment_ops >= 0, "finetune.randaugment_ops", ">= 0 (0 turns RandAugment off)", f.randaugment_ops)
    _require(_is_number(cfg.optim.min_lr) and cfg.optim.min_lr >= 0, "optim.min_lr", "a finite number >= 0",
             cfg.optim.min_lr)


def _check_ranges(cfg: Config) -> None:
    """Values the type allows but the run cannot use; each names its key."""
    o, t, f, a = cfg.optim, cfg.train, cfg.finetune, cfg.augment
    _require(math.isfinite(o.lr) and o.lr > 0, "optim.lr", "a finite number > 0", o.lr)
    _require(math.isfinite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", "a finite number >= 0",
             o.weight_decay)
    _require(math.isfinite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", ">= 0", o.warmup_epochs)
    _require(all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)", o.betas)
    _require(o.name != "sgd" or o.betas == OptimConfig().betas, "optim.betas",
             "left at its default with optim.name=sgd (betas are Adam's; SGD's momentum is 0.9)", o.betas)
    _require(t.log_every >= 1, "train.log_every", ">= 1", t.log_every)
    _require(t.knn_monitor >= 0, "train.knn_monitor", ">= 0 (0 turns it off)", t.knn_monitor)
    _require(DEVICE.fullmatch(t.device) is not None, "train.device", "auto, cpu, cuda, cuda:N or mps", t.device)
    _require(cfg.method.head_hidden >= 1, "method.head_hidden", ">= 1", cfg.method.head_hidden)
    _require(cfg.part.num_tokens is None or cfg.part.num_tokens >= 1, "part.num_tokens", ">= 1 (or null)",
             cfg.part.num_tokens)
    _require(cfg.eval.epochs >= 1, "eval.epochs", ">= 1", cfg.eval.epochs)
    _require(cfg.eval.knn_k is None or cfg.eval.knn_k >= 1, "eval.knn_k", "positive (or null to choose it from the data)",
             cfg.eval.knn_k)
    _require(cfg.method.position_weight >= 0, "method.position_weight", ">= 0", cfg.method.position_weight)
    _require(cfg.part.encoder_heads >= 1, "part.encoder_heads", ">= 1", cfg.part.encoder_heads)
    _require(0 <= t.ema < 1, "train.ema", "the decay of the weights' moving average, in [0, 1) (e.g. 0.9999; 0 turns "
             "it off)", t.ema)
    for key, value in (("finetune.mixup", f.mixup), ("finetune.cutmix", f.cutmix)):
        _require(value >= 0, key, ">= 0 (0 turns it off)", value)
    for key, value in (("augment.flip_p", a.flip_p), ("augment.jitter_p", a.jitter_p), ("augment.gray_p", a.gray_p),
                       ("finetune.mix_prob", f.mix_prob), ("finetune.switch_prob", f.switch_prob),
                       ("finetune.random_erasing", f.random_erasing)):
        _require(0 <= value <= 1, key, "a probability in [0, 1]", value)


def _check_droppos(cfg: Config) -> None:
    d = cfg.droppos
    _require(0 < d.mask_ratio < 1, "droppos.mask_ratio", "in (0, 1)", d.mask_ratio)
    _require(0 < d.position_mask_ratio < 1, "droppos.position_mask_ratio", "in (0, 1) (the loss is over dropped "
             "positions)", d.position_mask_ratio)
    _require(_is_number(d.sigma) and d.sigma >= 0, "droppos.sigma", ">= 0 (0: no position smoothing)", d.sigma)
    for key, value in (("droppos.decoder_dim", d.decoder_dim), ("droppos.decoder_depth", d.decoder_depth),
                       ("droppos.decoder_heads", d.decoder_heads)):
        _require(value >= 1, key, ">= 1", value)
    _require(d.decoder_dim % d.decoder_heads == 0, "droppos.decoder_heads",
             f"a divisor of droppos.decoder_dim {d.decoder_dim}", d.decoder_heads)
    if cfg.method.name == "droppos" and not cfg.model.pos_embed:
        raise ConfigError("DropPos drops a share of a fixed sine-cosine position embedding; set model.pos_embed=true")
    if cfg.method.name == "droppos" and d.attentive and not cfg.model.class_token:
        raise ConfigError("droppos.attentive weighs tokens by their similarity to [CLS]; set model.class_token=true "
                          "(or droppos.attentive=false)")


def _check_baselines(cfg: Config) -> None:
    """MAE, MP3 and DeepCluster: their sections' ranges and what each needs of the model and the data."""
    mae, mp3, dc, name = cfg.mae, cfg.mp3, cfg.deepcluster, cfg.method.name
    _require(0 < mae.mask_ratio < 1, "mae.mask_ratio", "in (0, 1) (the loss is over masked tokens)", mae.mask_ratio)
    _require(0 <= mp3.mask_ratio < 1, "mp3.mask_ratio", "in [0, 1)", mp3.mask_ratio)
    for key, value in (("mae.decoder_depth", mae.decoder_depth), ("mae.decoder_heads", mae.decoder_heads),
                       ("deepcluster.kmeans_iterations", dc.kmeans_iterations)):
        _require(value >= 1, key, ">= 1", value)
    _require(mae.decoder_dim >= 4 and mae.decoder_dim % 4 == 0, "mae.decoder_dim",
             "a multiple of 4 (its sine-cosine position embedding)", mae.decoder_dim)
    _require(mae.decoder_dim % mae.decoder_heads == 0, "mae.decoder_heads", f"a divisor of mae.decoder_dim "
             f"{mae.decoder_dim}", mae.decoder_heads)
    _require(dc.clusters is None or dc.clusters >= 2, "deepcluster.clusters", ">= 2 (or null: 10x the classes)",
             dc.clusters)
    _require(dc.pca_dim >= 0, "deepcluster.pca_dim", ">= 0 (0 turns PCA-whitening off)", dc.pca_dim)
    _check_droppos(cfg)
    if name in ("mae", "mp3", "droppos") and not cfg.model.backbone.startswith("vit_"):
        raise ConfigError(f"method {name} needs one of spatialssl's image ViTs (model.backbone=vit_tiny, vit_small "
                          f"or vit_base), got '{cfg.model.backbone}'")
    if name == "mae" and not cfg.model.pos_embed:
        raise ConfigError("MAE's encoder adds a position embedding (fixed sine-cosine); set model.pos_embed=true")
    if name == "mp3" and cfg.model.pos_embed:
        raise ConfigError("MP3 pretrains without a position embedding; set model.pos_embed=false")
    if name == "deepcluster" and cfg.data.stream:
        raise ConfigError("method deepcluster clusters the whole training set at each epoch's start, in memory; "
                          "set data.stream=false")


def _check_contrastive(cfg: Config) -> None:
    s, c = cfg.simclr, cfg.combined
    _require(_is_number(s.temperature) and s.temperature > 0, "simclr.temperature", "a finite number > 0",
             s.temperature)
    _require(s.projection_dim >= 1, "simclr.projection_dim", ">= 1", s.projection_dim)
    for key, value in (("combined.contrastive_weight", c.contrastive_weight),
                       ("combined.spatial_weight", c.spatial_weight)):
        _require(_is_number(value) and value >= 0, key, "a finite number >= 0 (0 turns its term off)", value)


def _check_detect(cfg: Config) -> None:
    d = cfg.detect
    for key in ("image_size", "pyramid_channels", "rpn_batch_size_per_image", "proposals_train", "proposals_test",
                "box_batch_size_per_image", "representation_size", "detections_per_image", "eval_batch_size"):
        _require(getattr(d, key) >= 1, f"detect.{key}", ">= 1", getattr(d, key))
    _require(d.window_size >= 0, "detect.window_size", ">= 0 (0: global attention)", d.window_size)
    _require(d.box_head_convs >= 0, "detect.box_head_convs", ">= 0", d.box_head_convs)
    _require(d.global_blocks is None or all(isinstance(b, int) and b >= 0 for b in d.global_blocks),
             "detect.global_blocks", "null or a list of block indices >= 0", d.global_blocks)
    if cfg.method.name == "detect" and cfg.model.class_token:
        raise ConfigError("detection reads the ViT's patch tokens as a map (ViTDet): a [CLS] token would go unused; "
                          "set model.class_token=false (and model.global_pool=avg)")
    _require(len(d.scale_range) == 2 and all(_is_number(v) for v in d.scale_range)
             and 0 < d.scale_range[0] <= d.scale_range[1], "detect.scale_range", "[min, max] with 0 < min <= max",
             d.scale_range)
    _require(_is_number(d.flip_p) and 0 <= d.flip_p <= 1, "detect.flip_p", "in [0, 1]", d.flip_p)
    _require(_is_number(d.anchor_scale) and d.anchor_scale > 0, "detect.anchor_scale", "a finite number > 0",
             d.anchor_scale)
    _require(_is_number(d.score_threshold) and 0 <= d.score_threshold < 1, "detect.score_threshold", "in [0, 1)",
             d.score_threshold)


def validate(cfg: Config) -> None:
    """Checks that need no data; geometry checks against the images happen at sampler build."""
    m, t, p, o = cfg.method, cfg.train, cfg.part, cfg.optim
    _check_lengths(cfg)
    _check_ranges(cfg)
    _check_baselines(cfg)
    _check_data_and_signal(cfg)
    _check_model_and_eval(cfg)
    _check_contrastive(cfg)
    _check_detect(cfg)
    _choice(m.name, METHODS, "method.name")
    _choice(p.sampling, SAMPLING, "part.sampling")
    _choice(p.encoder, ENCODERS, "part.encoder")
    _choice(m.additive_placement, PLACEMENTS, "method.additive_placement")
    size = cfg.model.backbone.split("_")[-1]
    if m.name in PART_BOX_METHODS and p.encoder == "cross_attention" and size in VIT_SIZES:
        width = VIT_SIZES[size][0]
        if width % p.encoder_heads:
            raise ConfigError(f"part.encoder_heads {p.encoder_heads} must divide the {width}-wide embeddings of "
                              f"{cfg.model.backbone}; choose a divisor of {width} (the published encoder uses 1)")
    check_backbone(cfg.model.backbone)
    if cfg.model.pretrained and not is_external(cfg.model.backbone):
        raise ConfigError(f"model.pretrained applies to timm/<name> and torchvision/<name> backbones; "
                          f"{cfg.model.backbone} starts from random weights (finetune a checkpoint with model.init_from)")
    _choice(cfg.model.global_pool, POOLS, "model.global_pool")
    if cfg.model.global_pool == "token" and not cfg.model.class_token:
        raise ConfigError("model.global_pool=token needs model.class_token=true")
    _choice(o.name, OPTIMIZERS, "optim.name")
    _choice(o.schedule, SCHEDULES, "optim.schedule")
    _choice(t.precision, PRECISIONS, "train.precision")
    _choice(t.logger, LOGGERS, "train.logger")
    signals = modality(cfg.model.backbone) == "signals"
    if m.name in PART_BOX_METHODS and not is_vit(cfg.model.backbone):
        raise ConfigError(f"method {m.name} needs a ViT backbone (model.backbone=vit_tiny, vit_small, vit_base, "
                          f"vit1d_tiny, vit1d_small or one of timm's ViTs, e.g. timm/vit_tiny_patch16_224), "
                          f"got '{cfg.model.backbone}'")
    if m.name in PART_BOX_METHODS and cfg.model.pos_embed and not (signals and p.pos_embed_mask > 0):
        raise ConfigError("PART pretrains without a position embedding; set model.pos_embed=false "
                          "(1-D only: a position embedding over time-sorted windows with part.pos_embed_mask > 0)")
    if not 0 <= p.pos_embed_mask < 1:
        raise ConfigError(f"part.pos_embed_mask must be in [0, 1), got {p.pos_embed_mask}")
    if m.name == "finetune" and not cfg.model.init_from and not cfg.finetune.scratch:
        raise ConfigError("method finetune needs model.init_from (a pretrained checkpoint); "
                          "use `spatialssl finetune --checkpoint RUN/last.ckpt` (or --scratch for random weights)")
    if cfg.finetune.scratch and cfg.model.init_from:
        raise ConfigError(f"finetune.scratch starts from random weights, model.init_from from "
                          f"{cfg.model.init_from}: choose one")
    lo, hi = p.box_scale
    if not 0 < lo <= hi:
        raise ConfigError(f"part.box_scale must satisfy 0 < min <= max, got {p.box_scale}")
    if p.num_pairs < 1:
        raise ConfigError(f"part.num_pairs must be positive, got {p.num_pairs}")
    if cfg.model.patch_size < 1:
        raise ConfigError(f"model.patch_size must be positive, got {cfg.model.patch_size}")
    if not 0 <= cfg.finetune.randaugment_magnitude <= 10:
        raise ConfigError(f"finetune.randaugment_magnitude must be in 0..10, got {cfg.finetune.randaugment_magnitude}")
    if m.name in ("rr", "sr") and m.augmentations < 2:
        raise ConfigError(f"method.augmentations must be >= 2 for {m.name} (it pairs views), got {m.augmentations}")
    if m.name in SR_PATCH_METHODS and m.num_patches < 2:
        raise ConfigError(f"method.num_patches must be >= 2 for {m.name} (it pairs patches), got {m.num_patches}")
    if m.patch_size < 1:
        raise ConfigError(f"method.patch_size must be positive, got {m.patch_size}")
    if t.batch_size < 2:
        raise ConfigError(f"train.batch_size must be >= 2, got {t.batch_size}")
    if t.epochs < 0:
        raise ConfigError(f"train.epochs must be >= 0, got {t.epochs}")
    _choice(cfg.data.labels, CIFAR100_LABELS, "data.labels")
    _choice(cfg.data.resize, RESIZE_MODES, "data.resize")
    lo, hi = cfg.augment.scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"augment.scale must satisfy 0 < min <= max <= 1, got {cfg.augment.scale}")
    for n in cfg.eval.patches:
        if n not in EVAL_PATCH_COUNTS:
            raise ConfigError(f"eval.patches may hold {', '.join(map(str, EVAL_PATCH_COUNTS))}, got {n}")
    channels = cfg.data.channels or 3
    for name in ("mean", "std"):
        value = getattr(cfg.data, name)
        if value is not None and cfg.data.channels is not None and len(value) != channels and not signals:
            raise ConfigError(f"data.{name} needs {channels} values (one per channel: data.channels), got {value}")
