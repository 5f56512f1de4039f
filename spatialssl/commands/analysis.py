"""What a PART model learned, as figures: reconstruction from predicted translations (paper
Fig. 4), the antisymmetry of the N x N prediction matrices (Fig. 6) and per-patch
uncertainty across references (Fig. 5)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .. import augment
from ..data.load import load_data
from ..engine import checkpoint
from ..engine.build import build_method
from ..engine.config import load_config
from ..engine.distributed import resolve_device
from ..errors import ConfigError, MissingSplit, optional_import
from ..files import refuse_to_replace, save_figure
from ..models import modality
from ..samplers.boxes import all_pairs, cut_boxes, relative_targets, sample_boxes


def load_part(path, device: Optional[str] = None):
    """(PART method with the checkpoint's evaluated weights (their EMA when kept), in eval mode on ``device``
    (default: a GPU when there is one); its Config)."""
    tensors, info = checkpoint.read_checkpoint(path)
    cfg = load_config(base=info["config"])
    if cfg.method.name != "part":
        raise ConfigError(f"{path} was trained with method '{cfg.method.name}'; these figures need a PART checkpoint")
    if modality(cfg.model.backbone) == "signals":
        raise ConfigError(f"{path} is a 1-D (signal) PART checkpoint; these figures are drawn for images")
    method = build_method(cfg, cfg.data.mean, cfg.data.std)
    state = checkpoint.evaluated_state(tensors)
    checkpoint.check_finite(state, path)
    checkpoint.load_exactly(method, state, path)
    return method.eval().to(resolve_device(device or "auto")), cfg


def paste_boxes(patches: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> tuple:
    """Paint P x P patches (N x C x P x P) into boxes (N x 4, pixels) on an H x W canvas, later
    patches over earlier ones. Returns (canvas C x H x W, coverage H x W). A patch cut from an
    integer P x P box lands on exactly its pixels."""
    canvas = patches.new_zeros(patches.shape[1], height, width)
    covered = patches.new_zeros(height, width, dtype=torch.bool)
    ys = torch.arange(height, device=patches.device, dtype=patches.dtype) + 0.5
    xs = torch.arange(width, device=patches.device, dtype=patches.dtype) + 0.5
    for patch, (x0, y0, w, h) in zip(patches, boxes.tolist()):
        u = (xs - x0) / w * 2 - 1  # canvas pixel centre in the patch's normalised coordinates
        v = (ys - y0) / h * 2 - 1
        inside = (v.abs() <= 1)[:, None] & (u.abs() <= 1)[None, :]
        grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], dim=-1)[None]
        sampled = F.grid_sample(patch[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        canvas = torch.where(inside, sampled, canvas)
        covered |= inside
    return canvas, covered


def placed_boxes(boxes: torch.Tensor, predictions: torch.Tensor, reference: int, log_scale: bool = False) -> torch.Tensor:
    """Boxes where the model puts every patch relative to the true ``reference`` box: centre
    c_ref + (dx * w_ref, dy * h_ref); size from dw, dh when predicted, else the reference's.
    ``boxes`` N x 4, ``predictions`` N x N x C (row = reference)."""
    ref = boxes[reference]
    pred = predictions[reference]
    size = ref[2:].expand(len(boxes), 2)
    if pred.shape[-1] == 4:
        size = ref[2:] * (pred[:, 2:].exp() if log_scale else pred[:, 2:].clamp_min(0.05))
    centre = ref[:2] + ref[2:] / 2 + pred[:, :2] * ref[2:]
    return torch.cat([centre - size / 2, size], dim=-1)


@dataclasses.dataclass
class Sample:
    """One image's patches, boxes and the model's predictions for every ordered pair."""
    image: torch.Tensor  # C x H x W in [0, 1]
    patches: torch.Tensor  # N x C x P x P in [0, 1]
    boxes: torch.Tensor  # N x 4
    predictions: torch.Tensor  # N x N x C
    targets: torch.Tensor  # N x N x C


@torch.no_grad()
def analyse(method, cfg, images: torch.Tensor, seed: int = 0, sampling: Optional[str] = None) -> list:
    """Sample boxes on un-augmented images (the checkpoint's mode, or ``sampling``) and predict all pairs,
    on the method's device; the samples come back on the CPU, for figures."""
    device = next(method.parameters()).device
    found = predict_pairs(method, images.to(device), torch.Generator(device=device).manual_seed(seed), sampling)
    return [Sample(*(t[i].cpu() for t in found)) for i in range(len(images))]


def predict_pairs(method, images: torch.Tensor, generator: torch.Generator, sampling: Optional[str] = None) -> tuple:
    """(images in [0, 1], patches, boxes, predictions and targets of every ordered pair), batched, on the
    images' device."""
    sampler = method.boxes
    x = images.float().div(255)
    batch, _, height, width = x.shape
    boxes = sample_boxes(batch, sampler.num_tokens, height, width, sampling or sampler.mode, sampler.patch_size,
                         generator, x.device, sampler.box_size, sampler.box_scale)
    raw = cut_boxes(x, boxes, sampler.patch_size)
    predictions = method.predict_all(augment.normalize(raw.flatten(0, 1), sampler.mean, sampler.std).view_as(raw))
    num = boxes.shape[1]
    pairs = all_pairs(num, x.device).expand(batch, -1, -1)
    targets = relative_targets(boxes, pairs, method.predict_scale, method.log_scale).view(batch, num, num, -1)
    return x, raw, boxes, predictions, targets


@torch.no_grad()
def position_error(method, cfg, images: torch.Tensor, sampling: Optional[str] = None, chunk: int = 100) -> tuple:
    """(model error, mean-predictor error): the mean Euclidean distance, in reference-patch
    units, between predicted and true (dx, dy) over every ordered pair i != j of patches of
    ``images`` (boxes of the checkpoint's mode, or ``sampling``). The mean predictor always
    answers the mean true translation."""
    samples = []
    for start in range(0, len(images), chunk):
        samples += analyse(method, cfg, images[start:start + chunk], seed=start, sampling=sampling)
    predicted = torch.stack([s.predictions[..., :2] for s in samples])
    truth = torch.stack([s.targets[..., :2] for s in samples])
    off = ~torch.eye(truth.shape[1], dtype=torch.bool)
    predicted, truth = predicted[:, off], truth[:, off]
    model = (predicted - truth).norm(dim=-1).mean().item()
    mean = (truth.mean((0, 1)) - truth).norm(dim=-1).mean().item()
    return model, mean

def _show(axis, picture: torch.Tensor, title: str) -> None:
    axis.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
    axis.set_title(title, fontsize=8)
    axis.axis("off")


def reconstruction_figure(samples: list, out, log_scale: bool = False, seed: int = 0):
    """Per image: the image, patches at their true places, and patches where the model puts
    them relative to one random reference patch (outlined). Canvases have a margin of half
    the image on every side, so misplaced patches stay visible."""
    import matplotlib.pyplot as plt

    generator = torch.Generator().manual_seed(seed)
    figure, axes = plt.subplots(len(samples), 3, figsize=(7.5, 2.6 * len(samples)), squeeze=False)
    errors = []
    for row, s in zip(axes, samples):
        _, height, width = s.image.shape
        margin = torch.tensor([width / 2, height / 2, 0, 0])
        reference = int(torch.randint(len(s.boxes), (1,), generator=generator))
        truth, _ = paste_boxes(s.patches, s.boxes + margin, 2 * height, 2 * width)
        placed = placed_boxes(s.boxes, s.predictions, reference, log_scale)
        predicted, _ = paste_boxes(s.patches, placed + margin, 2 * height, 2 * width)
        error = (s.predictions[reference, :, :2] - s.targets[reference, :, :2]).norm(dim=-1).mean().item()
        errors.append(error)
        _show(row[0], s.image, "image")
        _show(row[1], truth, "patches at true positions")
        _show(row[2], predicted, f"predicted from reference (error {error:.2f})")
        x0, y0, w, h = (s.boxes[reference] + margin).tolist()
        for axis in row[1:]:
            axis.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="#E69F00", linewidth=1.4))
    figure.suptitle("PART reconstruction (orange: reference patch; error in reference-patch units)", fontsize=9)
    return _save(figure, out), errors


def antisymmetry_error(matrix: torch.Tensor, scale: Optional[torch.Tensor] = None) -> float:
    """Mean |M_ij + M_ji| over i != j: 0 for a perfectly antisymmetric N x N matrix.

    PART's translations are in units of the reference box, so row i is first multiplied by
    ``scale[i]`` (reference size / P): the true matrices are then exactly antisymmetric in
    every sampling mode, and the error is in units of P."""
    if scale is not None:
        matrix = matrix * scale[:, None]
    off = ~torch.eye(len(matrix), dtype=torch.bool)
    return (matrix + matrix.T)[off].abs().mean().item()


def raster_order(boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patch indices sorted top-left to bottom-right: by row band of height P, then by x."""
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    row = (centre[:, 1] / patch_size).floor()
    return (row * 1e6 + centre[:, 0]).argsort()


def matrix_orders(boxes: torch.Tensor, patch_size: int) -> list:
    """(label, patch order) of each row of the symmetry figure: raster order, and the order the patches
    were sampled in only where it differs (boxes already in raster order: one row, not two alike)."""
    order = raster_order(boxes, patch_size)
    sampled = torch.arange(len(order))
    return [("raster order", order)] + ([("as sampled", sampled)] if not torch.equal(order, sampled) else [])


def symmetry_figure(sample: Sample, patch_size: int, out):
    """Predicted vs true dx and dy matrices, in raster order and (if it differs) in sampled order, with
    the antisymmetry error of each (in units of P, see ``antisymmetry_error``)."""
    import matplotlib.pyplot as plt

    orders = matrix_orders(sample.boxes, patch_size)
    figure, axes = plt.subplots(len(orders), 4, figsize=(12, 3.2 * len(orders)), squeeze=False)
    scores = {}
    for row, (label, index) in zip(axes, orders):
        for col, (name, channel, source) in enumerate((("predicted dx", 0, sample.predictions), ("true dx", 0, sample.targets),
                                                       ("predicted dy", 1, sample.predictions), ("true dy", 1, sample.targets))):
            matrix = source[index][:, index][..., channel]
            limit = sample.targets[..., channel].abs().max().item() or 1.0
            axes_image = row[col].imshow(matrix.numpy(), cmap="RdGy_r", vmin=-limit, vmax=limit)
            # the error does not depend on the order: given once, under the first row
            score = scores.setdefault(f"antisymmetry error, {name}",
                                      antisymmetry_error(matrix, sample.boxes[index, 2 + channel] / patch_size))
            said = f"\nantisymmetry error {score:.3f}" if index is orders[0][1] else ""
            row[col].set_title(f"{name} ({label}){said}", fontsize=8)
            row[col].set_xlabel("target patch j", fontsize=7)
            row[col].set_ylabel("reference patch i", fontsize=7)
            figure.colorbar(axes_image, ax=row[col], fraction=0.046)
    figure.suptitle("PART prediction matrices: element (i, j) is the translation from reference i to target j", fontsize=9)
    return _save(figure, out), scores


def placements(sample: Sample) -> torch.Tensor:
    """N x N x 2: centre of target j as placed from the true reference i (row i)."""
    centre = sample.boxes[:, :2] + sample.boxes[:, 2:] / 2
    return centre[:, None] + sample.predictions[..., :2] * sample.boxes[:, None, 2:]


def uncertainty(sample: Sample) -> torch.Tensor:
    """Per target patch, the spread (RMS distance to their mean, in pixels) of its centre as
    placed from each of the other patches."""
    placed = placements(sample)
    off = ~torch.eye(len(placed), dtype=torch.bool)
    spreads = []
    for j in range(len(placed)):
        points = placed[:, j][off[:, j]]
        spreads.append((points - points.mean(0)).norm(dim=-1).pow(2).mean().sqrt())
    return torch.stack(spreads)


def spread_map(boxes: torch.Tensor, spread: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """H x W: each pixel's mean spread over the boxes covering it; NaN where none does."""
    heat = torch.zeros(height, width)
    count = torch.zeros(height, width)
    for (x0, y0, w, h), s in zip(boxes.tolist(), spread.tolist()):
        rows = slice(int(y0), int(round(y0 + h)))
        cols = slice(int(x0), int(round(x0 + w)))
        heat[rows, cols] += s
        count[rows, cols] += 1
    return torch.where(count > 0, heat / count.clamp_min(1), torch.full_like(heat, float("nan")))


def uncertainty_figure(sample: Sample, out, seed: int = 0):
    """Left: the most and least certain patches placed from every reference (dots) beside
    their true centres (crosses). Right: each patch's spread painted over its box."""
    import matplotlib.pyplot as plt

    spread = uncertainty(sample)
    placed = placements(sample)
    centre = sample.boxes[:, :2] + sample.boxes[:, 2:] / 2
    _, height, width = sample.image.shape
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    axes[0].imshow(sample.image.permute(1, 2, 0).numpy(), extent=(0, width, height, 0))
    # Okabe-Ito blue and vermillion, told apart by marker shape too
    for j, colour, marker, which in ((int(spread.argmin()), "#0072B2", "o", "least"),
                                     (int(spread.argmax()), "#D55E00", "^", "most")):
        points = torch.cat([placed[:j, j], placed[j + 1:, j]])
        axes[0].scatter(points[:, 0], points[:, 1], s=12, c=colour, marker=marker, alpha=0.75,
                        label=f"patch {j} ({which} uncertain): spread {spread[j]:.1f} px")
        axes[0].scatter(centre[j, 0], centre[j, 1], s=110, c=colour, marker="X", edgecolors="white", linewidths=1)
    axes[0].set_xlim(-width / 2, 1.5 * width)
    axes[0].set_ylim(1.5 * height, -height / 2)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_title("one target placed from every reference (X: true centre)", fontsize=8)
    colours = plt.get_cmap("viridis").with_extremes(bad="#bdbdbd")  # no patch covers it: not zero spread's colour
    # from 0: a narrow range of spreads must not look like large differences
    shown = axes[1].imshow(spread_map(sample.boxes, spread, height, width).numpy(), cmap=colours, vmin=0)
    axes[1].set_title(f"per-patch spread in px (mean {spread.mean():.1f}); grey: no patch there", fontsize=8)
    axes[1].axis("off")
    figure.colorbar(shown, ax=axes[1], fraction=0.046)
    figure.suptitle("PART patch uncertainty: do all references agree where a patch goes?", fontsize=9)
    return _save(figure, out), spread


def _save(figure, out) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    save_figure(figure, out, dpi=130)
    plt.close(figure)
    return out


def figure_images(data: str, split: Optional[str], cfg):
    """The images a figure draws from, read as the run read its own (streamed with ``data.stream``: only the
    drawn ones are decoded): ``split``, or by default the test split, or, where there is none (an unlabelled
    folder), the images there are: the figures need no labels."""
    try:
        return load_data(cfg, split or "test", data)
    except MissingSplit:
        if split is not None:
            raise
        return load_data(cfg, "train", data)


def run_analysis(kind: str, path, data: str, out, split: Optional[str] = None, count: int = 4, seed: int = 0,
                 sampling: Optional[str] = None, overwrite: bool = False) -> dict:
    """The ``reconstruct`` / ``symmetry`` / ``uncertainty`` commands: figure path and numbers. An existing
    figure at ``out`` is replaced only with ``overwrite``."""
    refuse_to_replace(out, overwrite)
    optional_import("matplotlib", "plots", "drawing PART's figures").use("Agg")
    method, cfg = load_part(path)
    images = figure_images(data, split, cfg)
    if tuple(images.image_size) != tuple(cfg.model.input_size):
        raise ConfigError(f"the images of {images.source} are {images.image_size}, the model was trained on "
                          f"{tuple(cfg.model.input_size)}; set data.image_size when reading them")
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    samples = analyse(method, cfg, images.images_at(chosen), seed, sampling)
    if kind == "reconstruct":
        figure, errors = reconstruction_figure(samples, out, method.log_scale, seed)
        return {"figure": str(figure), "position_error": sum(errors) / len(errors)}
    if kind == "symmetry":
        figure, scores = symmetry_figure(samples[0], cfg.model.patch_size, out)
        return {"figure": str(figure), **scores}
    figure, spread = uncertainty_figure(samples[0], out, seed)
    return {"figure": str(figure), "mean_spread_px": spread.mean().item(), "max_spread_px": spread.max().item()}
