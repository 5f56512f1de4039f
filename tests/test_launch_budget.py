"""A launch budget for the samplers, counted by a dispatch mode on the CPU: on a GPU every operator that is not a
view is a kernel launch (~5 us of host time each), and for small images the samplers were launch-bound (347 and
354 dispatched operators per call before the colour jitter's passes were fused: about half of an H100 step of SR
at batch 128). Views launch nothing and are counted apart."""
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spatialssl.canvas import Canvases
from spatialssl.samplers import PatchSampler, ViewSampler

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# (launching operators, all dispatched operators) at most per call; measured 97 / 152, 96 / 149, 107 / 171 and
# 112 / 174 (before: 266 / 347 and 259 / 354 for the first two): the colour jitter's blends are channel mixes (one
# batched matrix product each), hue is turned in one formula, and grey and normalisation are one mix.
BUDGET = {"views": (100, 160), "patches": (100, 160), "additive patches": (110, 180), "whole-image views": (115, 180)}


class Dispatched(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.launching, self.views = collections.Counter(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.is_view:
            self.views += 1
        else:
            self.launching[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def samplers():
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8)
    canvases = Canvases(torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8),
                        torch.tensor([[64.0, 48.0]] * 32), 32, 0.875)
    return {"views": (ViewSampler(4, MEAN, STD), images), "patches": (PatchSampler(2, 12, MEAN, STD), images),
            "additive patches": (PatchSampler(2, 12, MEAN, STD, additive=True), images),
            "whole-image views": (ViewSampler(4, MEAN, STD), canvases)}


@pytest.mark.parametrize("name", list(BUDGET))
def test_a_sampler_call_stays_within_its_launch_budget(name):
    sampler, images = samplers()[name]
    generator = torch.Generator().manual_seed(0)
    sampler(images, generator)  # device constants are made once, at the first call
    with Dispatched() as counted:
        sampler(images, generator)
    launching = sum(counted.launching.values())
    most, most_in_all = BUDGET[name]
    assert launching <= most, counted.launching.most_common(8)
    assert launching + counted.views <= most_in_all
