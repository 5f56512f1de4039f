"""LARS: two steps worked by hand (trust ratio, weight decay, momentum), the groups SimCLR keeps out of the
adaptation, optim.name=lars through the config, and a resumed run that equals an uninterrupted one."""
import math

import pytest
import torch

from spatialssl.engine.config import load_config
from spatialssl.engine.optim import build_optimizer
from spatialssl.lars import LARS


def test_two_steps_equal_the_hand_worked_ones():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS([{"params": [weight]}, {"params": [bias], "weight_decay": 0.0, "adapt": False}], lr=0.1,
                     momentum=0.9, weight_decay=0.5, trust_coefficient=0.01)
    weight.grad, bias.grad = torch.tensor([0.5, -2.0]), torch.tensor([2.0])
    optimizer.step()
    # g + wd * w = [2, 0], ||.|| = 2; ratio = 0.01 * 5 / 2 = 0.025; v = 0.1 * 0.025 * [2, 0] = [0.005, 0]
    assert torch.allclose(weight, torch.tensor([2.995, 4.0]))
    assert torch.allclose(bias, torch.tensor([0.8]))  # plain SGD: 1 - 0.1 * 2
    weight.grad, bias.grad = torch.tensor([0.0, 0.0]), torch.tensor([0.0])
    optimizer.step()
    # g + wd * w = [1.4975, 2], ||.|| = 2.49850; ||w|| = 4.99700; ratio = 0.0199980
    ratio = 0.01 * math.hypot(2.995, 4.0) / math.hypot(1.4975, 2.0)
    velocity = [0.9 * 0.005 + 0.1 * ratio * 1.4975, 0.1 * ratio * 2.0]
    assert torch.allclose(weight, torch.tensor([2.995 - velocity[0], 4.0 - velocity[1]]))
    assert torch.allclose(bias, torch.tensor([0.8 - 0.9 * 0.2]))  # momentum alone carries it


def test_a_zero_weight_or_gradient_steps_as_sgd_and_bad_settings_are_refused():
    weight = torch.nn.Parameter(torch.zeros(3))  # ||w|| = 0: the ratio is 1, not 0
    optimizer = LARS([weight], lr=0.5, momentum=0.0)
    weight.grad = torch.tensor([1.0, 0.0, -1.0])
    optimizer.step()
    assert torch.equal(weight.detach(), torch.tensor([-0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="momentum"):
        LARS([weight], lr=0.1, momentum=1.0)


def test_optim_lars_keeps_biases_and_norms_out_as_simclr_does():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    cfg = load_config(overrides=["optim.name=lars", "optim.lr=0.3", "optim.weight_decay=1e-6",
                                 "optim.trust_coefficient=0.002", "optim.momentum=0.8"])
    optimizer = build_optimizer(cfg.optim, model)
    assert isinstance(optimizer, LARS)
    adapted, plain = optimizer.param_groups
    assert [p.shape for p in adapted["params"]] == [(3, 4)] and adapted["adapt"] and adapted["weight_decay"] == 1e-6
    assert len(plain["params"]) == 3 and not plain["adapt"] and plain["weight_decay"] == 0.0
    assert adapted["trust_coefficient"] == 0.002 and adapted["momentum"] == plain["momentum"] == 0.8


def test_a_lars_run_resumes_exactly(tmp_path):
    from test_gpu_paths import TINY, assert_same_run

    from spatialssl.data import make_demo_images
    from spatialssl.engine.train import pretrain

    images = make_demo_images(64, seed=5)
    cfg = load_config(base=TINY, overrides=["optim.name=lars", "optim.lr=0.5", "optim.weight_decay=1e-6",
                                            "method.name=simclr", "train.batch_size=16"])
    pretrain(cfg, tmp_path / "whole", train_set=images, progress=False)
    pretrain(cfg, tmp_path / "split", train_set=images, progress=False, stop_after_epoch=1)
    pretrain(cfg, tmp_path / "split", resume=True, train_set=images, progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "split")


def test_momentum_and_trust_coefficient_are_refused_where_they_do_nothing():
    from spatialssl.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.momentum must be left at its default with optim.name=adam"):
        load_config(overrides=["optim.momentum=0.5"])
    with pytest.raises(ConfigError, match="optim.trust_coefficient must be left at its default unless optim.name=lars"):
        load_config(overrides=["optim.name=sgd", "optim.trust_coefficient=0.01"])
    sgd = build_optimizer(load_config(overrides=["optim.name=sgd", "optim.momentum=0.5"]).optim, torch.nn.Linear(2, 2))
    assert sgd.param_groups[0]["momentum"] == 0.5
