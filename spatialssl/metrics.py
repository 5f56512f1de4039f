"""Classification metrics from predictions: accuracy, macro-F1 and Cohen's kappa."""
from __future__ import annotations

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
