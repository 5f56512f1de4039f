"""RESULTS.md's PNG plots: every seed as a dot, mean ± std beside it, ticks at the measured values,
one colour-blind-safe colour and marker per series, and y ranges wide enough that seed noise does
not read as a trend."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import optional_import
from ..files import save_figure
from ..metrics import mean_std
from .results import ERROR, FINETUNED, IMAGE, NINE, Measure, num_pairs

PLOTS = ("sr_patch_features.png", "sr_patch_size.png", "part_variants.png", "part_pairs.png")
# Okabe & Ito's palette (distinct under the common colour-vision deficiencies), with a marker each.
STYLES = [("#0072B2", "o"), ("#E69F00", "s"), ("#009E73", "^"), ("#CC79A7", "D"), ("#56B4E9", "v"),
          ("#D55E00", "P"), ("#000000", "X")]
MIN_ACCURACY_SPAN = 10.0  # percentage points shown at least
MIN_ERROR_SPAN = 0.5  # reference-patch units shown at least


def padded_limits(values: Sequence[float], minimum_span: float, floor: Optional[float] = None) -> tuple:
    """(low, high) around ``values`` spanning at least ``minimum_span`` (centred on the data), with a 10%
    margin, never below ``floor``."""
    low, high = min(values), max(values)
    span = max(high - low, minimum_span)
    centre = (low + high) / 2
    low, high = centre - 0.55 * span, centre + 0.55 * span
    if floor is not None and low < floor:
        low, high = floor, floor + 1.1 * span
    return low, high


class Panel:
    """One axis: series drawn as seeds + mean ± std, their values kept to set the y range."""

    def __init__(self, axis, xs: Sequence[float], tick_labels: Optional[Sequence[str]] = None):
        self.axis, self.xs, self.values, self.series = axis, list(xs), [], 0
        axis.set_xticks(self.xs, tick_labels if tick_labels is not None else [str(x) for x in self.xs])
        axis.minorticks_off()

    def add(self, per_x: list, label: str, line: bool = True, offset: float = 0.0) -> None:
        """``per_x``: the seeds' values at each x (an empty list where nothing was measured)."""
        colour, marker = STYLES[self.series % len(STYLES)]
        self.series += 1
        drawn = [(x, values) for x, values in zip(self.xs, per_x) if values]
        if not drawn:
            return
        shift = (lambda x: x * (1 + offset)) if self.axis.get_xscale() == "log" else (lambda x: x + offset)
        xs = [shift(x) for x, _ in drawn]
        means, stds = zip(*(mean_std(values) for _, values in drawn))
        self.axis.errorbar(xs, means, yerr=stds, color=colour, marker=marker, capsize=3, markersize=6,
                           linestyle="-" if line else "none", label=f"{label} (mean ± std)")
        seeds_x = [x for x, (_, values) in zip(xs, drawn) for _ in values]
        seeds_y = [v for _, values in drawn for v in values]
        self.axis.scatter(seeds_x, seeds_y, color=colour, marker=marker, s=12, alpha=0.45, linewidths=0)
        self.values += [*seeds_y, *(m - s for m, s in zip(means, stds)), *(m + s for m, s in zip(means, stds))]

    def finish(self, ylabel: str, minimum_span: float, floor: Optional[float] = None, xlabel: str = "") -> None:
        if self.values:
            self.axis.set_ylim(*padded_limits(self.values, minimum_span, floor))
        self.axis.set(xlabel=xlabel, ylabel=ylabel)
        self.axis.grid(axis="y", alpha=0.3)
        self.axis.set_xlim(*self.x_limits())
        self.axis.legend(fontsize=7, title="small dots: one per seed", title_fontsize=7)

    def x_limits(self) -> tuple:
        """Every tick shown, measured or not (a category without a value stays in its place)."""
        if self.axis.get_xscale() == "log":
            return min(self.xs) / 1.3, max(self.xs) * 1.3
        return min(self.xs) - 0.5, max(self.xs) + 0.5


def plot(results: dict, labels: dict, folder: Path, studies: dict) -> list:
    """PNGs: patch features (SR Fig. 4), patch size (Fig. 2), PART's variants (Tables 4-5), #pairs (Fig. 8).
    Small dots are seeds, larger markers with bars their mean ± std."""
    optional_import("matplotlib", "plots", "drawing RESULTS.md's plots").use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for name in PLOTS:  # a plot this budget no longer draws must not linger beside the new ones
        (folder / name).unlink(missing_ok=True)
    written = []

    def save(figure, name):
        figure.tight_layout()
        save_figure(figure, folder / name, dpi=110)
        plt.close(figure)
        written.append(folder / name)

    counts = (0, 1, 3, 5, 9)
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    panel = Panel(axis, counts)
    for k in ("random", "rr", "sr-n2-p16", "sr-n3-p16"):
        if k in results:
            panel.add([Measure("linear", str(n)).values(results[k]) for n in counts], labels[k])
    if "sr-n2-p16" in results and "linear_affine" in results["sr-n2-p16"][0]:
        panel.add([Measure("linear_affine", str(n)).values(results["sr-n2-p16"]) for n in counts],
                  labels["sr-n2-p16"] + ", affine-augmented probe")
    panel.finish("test accuracy (%)", MIN_ACCURACY_SPAN, xlabel="patch features beside the image")
    axis.set_title("Linear evaluation with patch features (SR Fig. 4)", fontsize=10)
    save(figure, "sr_patch_features.png")

    sizes = [s for s in (12, 16, 20, 24) if f"sr-n2-p{s}" in results]
    if len(sizes) > 1:
        figure, axis = plt.subplots(figsize=(6, 4))
        panel = Panel(axis, sizes)
        for measure, name in ((IMAGE, "image only"), (NINE, "image + 9 patches")):
            panel.add([measure.values(results[f"sr-n2-p{s}"]) for s in sizes], name)
        panel.finish("test accuracy (%)", MIN_ACCURACY_SPAN, xlabel="training patch size (px, 32 px images)")
        axis.set_title("SR plain, N=2: patch size (SR Fig. 2)", fontsize=10)
        save(figure, "sr_patch_size.png")

    part_keys = [k for k in labels if k in results and studies.get(k) == "part" and not k.startswith("part-pairs")]
    if part_keys:
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
        names = [labels[k].replace(", ", "\n").replace(" (", "\n(") for k in part_keys]
        accuracy, error = Panel(left, range(len(part_keys)), names), Panel(right, range(len(part_keys)), names)
        accuracy.add([FINETUNED.values(results[k]) for k in part_keys], "finetuned", line=False, offset=-0.08)
        accuracy.add([IMAGE.values(results[k]) for k in part_keys], "linear probe", line=False, offset=0.08)
        error.add([ERROR.values(results[k]) for k in part_keys], "model", line=False, offset=-0.08)
        error.add([Measure("position_error_mean_predictor", lower_is_better=True).values(results[k])
                   for k in part_keys], "mean predictor", line=False, offset=0.08)
        accuracy.finish("test accuracy (%)", MIN_ACCURACY_SPAN)
        error.finish("position error, off-grid boxes\n(reference-patch units)", MIN_ERROR_SPAN, floor=0.0)
        for axis in (left, right):
            axis.tick_params(axis="x", labelsize=7)
        figure.suptitle("PART: sampling and relative encoders (Tables 4-5)")
        save(figure, "part_variants.png")

    points = sorted((num_pairs(results, k), k) for k in results if k == "part-offgrid" or k.startswith("part-pairs"))
    if len(points) > 1:
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        xs = [p for p, _ in points]
        for axis in (left, right):
            axis.set_xscale("log")
        accuracy, error = Panel(left, xs), Panel(right, xs)
        accuracy.add([FINETUNED.values(results[k]) for _, k in points], "finetuned")
        accuracy.add([IMAGE.values(results[k]) for _, k in points], "linear probe")
        error.add([ERROR.values(results[k]) for _, k in points], "position error")
        accuracy.finish("test accuracy (%)", MIN_ACCURACY_SPAN, xlabel="#pairs per image")
        error.finish("position error, off-grid boxes", MIN_ERROR_SPAN, floor=0.0, xlabel="#pairs per image")
        figure.suptitle("PART: number of patch pairs (Fig. 8)")
        save(figure, "part_pairs.png")
    return written
