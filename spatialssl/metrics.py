"""Classification metrics from predictions (accuracy, macro-F1, Cohen's kappa), and the rule that
compares two methods' scores over seeds (mean ± std, a verdict)."""
from __future__ import annotations

import statistics

import torch


def confusion_matrix(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C x C counts, rows = true class, columns = predicted class."""
    flat = truth.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def macro_f1(matrix: torch.Tensor) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    matrix = matrix.double()
    tp = matrix.diag()
    predicted, actual = matrix.sum(0), matrix.sum(1)
    present = (predicted + actual) > 0
    f1 = 2 * tp / (predicted + actual).clamp_min(1e-12)
    return f1[present].mean().item()


def cohen_kappa(matrix: torch.Tensor) -> float:
    """(p_observed - p_chance) / (1 - p_chance), chance from the marginals."""
    matrix = matrix.double()
    total = matrix.sum()
    observed = matrix.diag().sum() / total
    chance = (matrix.sum(0) * matrix.sum(1)).sum() / total ** 2
    return 1.0 if chance == 1 else ((observed - chance) / (1 - chance)).item()


def classification_report(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> dict:
    matrix = confusion_matrix(predicted, truth, num_classes)
    return {"accuracy": (matrix.diag().sum() / matrix.sum()).item(), "macro_f1": macro_f1(matrix),
            "kappa": cohen_kappa(matrix)}


def mean_std(values: list) -> tuple:
    """Mean and sample standard deviation (0 for a single value); None for no values."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(better: list, worse: list, lower_is_better: bool = False) -> str:
    """Whether ``better`` beat ``worse``: by more than the larger seed spread ("yes"), in the
    expected direction but within it, against it within it, or against it beyond it ("no")."""
    (b, b_std), (w, w_std) = mean_std(better), mean_std(worse)
    if b is None or w is None:
        return "not run"
    gain = (w - b) if lower_is_better else (b - w)
    if min(len(better), len(worse)) < 2:  # no spread to compare with: never a "yes"
        return "one seed only: " + ("expected direction" if gain > 0 else "opposite direction")
    spread = max(b_std, w_std)
    if gain > spread:
        return "yes"
    if gain > 0:
        return "direction only (within seed spread)"
    if gain >= -spread:
        return "no (opposite, within seed spread)"
    return "no"


def cell(values: list, digits: int = 1) -> str:
    mean, std = mean_std(values)
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
