import math

import pytest
import torch
import torch.nn.functional as F

from spatialssl.losses import FocalBCELoss, SpatialRelationLoss, focal_bce_with_logits
from spatialssl.methods import spatial_targets


def test_focal_loss_by_hand():
    logits, targets = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    expected = []
    for x in (2.0, -1.0):
        p = 1 / (1 + math.exp(-x))
        expected.append(0.5 * (1 - p) ** 2 * -math.log(p))
    assert math.isclose(FocalBCELoss()(logits, targets).item(), sum(expected) / 2, rel_tol=1e-5)
    negative = focal_bce_with_logits(torch.tensor([0.5]), torch.tensor([0.0]))
    p = 1 / (1 + math.exp(-0.5))
    assert math.isclose(negative.item(), 0.5 * p ** 2 * -math.log(1 - p), rel_tol=1e-5)


def test_focal_loss_reduces_to_half_bce_with_gamma_zero():
    logits, targets = torch.randn(50), torch.randint(0, 2, (50,)).float()
    assert torch.allclose(focal_bce_with_logits(logits, targets, gamma=0.0),
                          F.binary_cross_entropy_with_logits(logits, targets) / 2)


def test_spatial_loss_is_bce_plus_mse_x_plus_mse_y():
    outputs = torch.tensor([[0.0, 0.5, -0.5], [2.0, 0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    total, parts = SpatialRelationLoss()(outputs, targets)
    bce = (math.log(2) + (2 + math.log(1 + math.exp(-2)))) / 2
    mse_x = (0.25 + 1.0) / 2
    mse_y = (0.25 + 0.0) / 2
    assert math.isclose(parts["bce"].item(), bce, rel_tol=1e-5)
    assert math.isclose(parts["mse_x"].item(), mse_x, rel_tol=1e-5)
    assert math.isclose(parts["mse_y"].item(), mse_y, rel_tol=1e-5)
    assert math.isclose(total.item(), bce + mse_x + mse_y, rel_tol=1e-5)


def test_position_weight_scales_each_axis_mse_and_half_is_the_official_single_mse():
    outputs, targets = torch.randn(16, 3), torch.rand(16, 3).round()
    paper, parts = SpatialRelationLoss()(outputs, targets)
    official, _ = SpatialRelationLoss(position_weight=0.5)(outputs, targets)
    one_mse = F.mse_loss(outputs[:, 1:], targets[:, 1:])  # the published code: both axes in one MSE
    assert math.isclose(official.item(), parts["bce"].item() + one_mse.item(), rel_tol=1e-5)
    assert math.isclose(paper.item() - official.item(), one_mse.item(), rel_tol=1e-4)
    with pytest.raises(ValueError, match="position_weight"):
        SpatialRelationLoss(position_weight=-1)


def test_spatial_targets_follow_the_paper():
    # image pairs: positive -> (1, 0, 0); negative -> (0, 1, 1)
    # patch pair: the paper's example p1 = (0.2, 0.6), p2 = (0.4, 0.1) -> p1 - p2 = (-0.2, 0.5)
    centres = torch.tensor([[0.2, 0.6], [0.4, 0.1]])
    targets = spatial_targets(torch.tensor([1.0, 0.0]), centres, torch.tensor([0]), torch.tensor([1]))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, -0.2, 0.5]])
    assert torch.allclose(targets, expected)
