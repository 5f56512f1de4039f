import math

import pytest
import torch

from spatialssl import augment
from spatialssl.samplers import ViewSampler


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """The reference: torchvision's hexcone HSV (hue from the channel that is the maximum, red first, then green)."""
    r, g, b = images.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    s = chroma / torch.where(maxc > 0, maxc, 1.0)
    safe = torch.where(chroma > 0, chroma, 1.0)
    sixths = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    return torch.stack([torch.remainder(sixths / 6.0, 1.0), s, maxc], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """torchvision's inverse: v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6 with n = 5, 3, 1 for r, g, b."""
    h, s, v = images.split(1, dim=1)
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + 6 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_boxes_lie_inside_and_respect_scale_and_ratio():
    boxes = augment.sample_crop_boxes(4000, 32, 48, (0.08, 1.0), (3 / 4, 4 / 3), gen(), "cpu")
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 48 + 1e-4).all() and (y0 + h <= 32 + 1e-4).all()
    area = w * h / (32 * 48)
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    assert (w / h).min() >= 3 / 4 - 1e-4 and (w / h).max() <= 4 / 3 + 1e-4
    assert area.std() > 0.1  # per-sample draws, not one box for the batch


def test_crop_resize_full_box_is_identity_and_flip_mirrors():
    images = torch.rand(2, 3, 8, 8)
    full = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    assert torch.allclose(augment.crop_resize(images, full, (8, 8)), images, atol=1e-5)
    flipped = augment.crop_resize(images, full, (8, 8), torch.tensor([True, False]))
    assert torch.allclose(flipped[0], images[0].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[1], images[1], atol=1e-5)


def test_crop_resize_cuts_the_box():
    images = torch.rand(1, 3, 16, 16)
    box = torch.tensor([[4.0, 2.0, 8.0, 8.0]])  # x0, y0, w, h: exact pixels at size 8
    assert torch.allclose(augment.crop_resize(images, box, (8, 8)), images[:, :, 2:10, 4:12], atol=1e-5)


def test_hsv_round_trip_and_hue_shift_of_pure_red():
    images = torch.rand(4, 3, 5, 5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1
    green = augment.adjust_hue(red, torch.tensor([1 / 3]))
    assert torch.allclose(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)


def test_hue_rotation_is_the_hsv_round_trip_with_the_hue_turned():
    images = torch.rand(6, 3, 4, 50, generator=gen(4))
    images[:, :, 0, :4] = torch.tensor([[0.5, 0.5, 0.2], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0], [0.2, 0.7, 0.7]]).T
    shift = torch.tensor([0.0, 0.1, -0.2, 0.5, 0.45, -0.5])  # ties for the maximum and greys in the first column
    h, s, v = rgb_to_hsv(images).split(1, dim=1)
    expected = hsv_to_rgb(torch.cat([torch.remainder(h + shift.view(-1, 1, 1, 1), 1.0), s, v], 1))
    assert torch.allclose(augment.adjust_hue(images, shift), expected, atol=1e-5)


def test_jitter_with_probability_zero_is_identity_and_factors_are_per_sample():
    images = torch.rand(64, 3, 8, 8)
    assert torch.equal(augment.color_jitter(images, (0.8, 0.8, 0.8, 0.2), 0.0, gen()), images)
    out = augment.color_jitter(images, (0.8, 0.0, 0.0, 0.0), 1.0, gen())  # brightness only
    ratio = (out / images.clamp_min(1e-3)).flatten(1).median(1).values
    assert ratio.std() > 0.1


def test_brightness_contrast_saturation_match_their_definitions():
    images = torch.rand(2, 3, 4, 4) * 0.5
    factor = torch.tensor([0.5, 1.5])
    assert torch.allclose(augment.adjust_brightness(images, factor), (images * factor.view(-1, 1, 1, 1)).clamp(0, 1))
    mean = augment.grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    expected = (factor.view(-1, 1, 1, 1) * images + (1 - factor.view(-1, 1, 1, 1)) * mean).clamp(0, 1)
    assert torch.allclose(augment.adjust_contrast(images, factor), expected)
    assert torch.allclose(augment.adjust_saturation(images, torch.zeros(2)), augment.grayscale(images).expand_as(images))


def test_grayscale_probability_and_equal_channels():
    images = torch.rand(2000, 3, 2, 2)
    out = augment.random_grayscale(images, 0.2, gen())
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.16 < gray.float().mean() < 0.24


def test_view_sampler_layout_and_normalisation():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    sampler = ViewSampler(3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    views = sampler(images, gen())
    assert views.shape == (15, 3, 16, 16)
    assert views.min() >= -2 - 1e-5 and views.max() <= 2 + 1e-5
    assert not torch.allclose(views[0], views[5])  # view 0 and 1 of image 0 differ
    assert torch.equal(sampler(images, gen(3)), sampler(images, gen(3)))  # reproducible


def test_random_affine_keeps_shape_and_blacks_outside():
    images = torch.ones(8, 3, 16, 16)
    out = augment.random_affine(images, gen(), degrees=30, translate=0.2)
    assert out.shape == images.shape
    assert (out < 0.5).any()  # rotated/translated content leaves black borders
    assert math.isclose(augment.random_affine(images, gen(), 0, 0, (1, 1), 0).mean().item(), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("op", [augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation])
def test_identity_factor_changes_nothing(op):
    images = torch.rand(3, 3, 4, 4)
    assert torch.allclose(op(images, torch.ones(3)), images, atol=1e-6)


@pytest.mark.parametrize("strength", [(0.8, 0.8, 0.8, 0.2), (0.4, 0.0, 0.9, 0.0), (0.0, 0.0, 0.0, 0.5)])
def test_jitter_applies_each_samples_operations_in_its_own_order(strength):
    """The batched passes equal torchvision's ColorJitter sample by sample: the four operations (those that are
    on) in the sample's random order, each at its factor, where the sample is jittered at all."""
    images, draws, p = torch.rand(64, 3, 5, 5), torch.rand(64, 9, generator=gen(1)), 0.8
    out = augment.apply_jitter(images, draws, strength, p)
    operations = [augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation, augment.adjust_hue]
    for i in range(len(images)):
        expected = images[i:i + 1]
        if draws[i, 0] < p:
            for op in draws[i, 5:].argsort().tolist():  # the permutation torchvision draws with randperm
                if not strength[op]:
                    continue
                if op == augment.HUE:
                    amount = strength[op] * (2 * draws[i, 4] - 1)
                else:
                    low = max(0.0, 1 - strength[op])
                    amount = low + draws[i, 1 + op] * (1 + strength[op] - low)
                expected = operations[op](expected, amount.view(1))
        assert torch.allclose(out[i], expected[0], atol=1e-5), i


def test_hsv_is_the_hexcone_model_of_colorsys():
    import colorsys

    images = torch.rand(1, 3, 1, 200, generator=gen(2))
    images[0, :, 0, :3] = torch.tensor([[0.5, 0.2, 0.5], [0.5, 0.5, 0.2], [0.0, 0.5, 0.5]])  # ties for the maximum
    hsv = rgb_to_hsv(images)[0, :, 0].T
    for pixel, ours in zip(images[0, :, 0].T.tolist(), hsv.tolist()):
        assert ours == pytest.approx(colorsys.rgb_to_hsv(*pixel), abs=1e-6)
