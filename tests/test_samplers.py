import pytest
import torch

from spatialssl.samplers import (
    GRID_ORDER,
    BoxSampler,
    PatchSampler,
    ViewSampler,
    grid_patches,
    patch_pairs,
    relation_pairs,
    sample_positions,
)
from spatialssl.samplers.patches import draw_by_weight, grid_positions, resize_patches

IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=0.0, gray_p=0.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def overlap(ax, ay, bx, by, size):
    return ((ax - bx).abs() < size) & ((ay - by).abs() < size)


@pytest.mark.parametrize("size, patch", [(32, 16), (32, 12), (64, 24), (32, 5)])
def test_first_two_patches_never_overlap_and_all_lie_inside(size, patch):
    x0, y0 = sample_positions(3000, 4, patch, size, size, True, gen(), "cpu")
    assert not overlap(x0[0], y0[0], x0[1], y0[1], patch).any()
    assert x0.min() >= 0 and y0.min() >= 0 and x0.max() <= size - patch and y0.max() <= size - patch
    # the others are free to overlap: over 3000 images some do
    assert overlap(x0[2], y0[2], x0[3], y0[3], patch).any()


def test_non_overlapping_pairs_are_uniform_over_all_valid_pairs():
    """In 6x6 images with 3px patches, enumerate every valid ordered pair and compare frequencies."""
    size, patch = 6, 3
    span = size - patch + 1
    pairs = [(a, b, c, d) for a in range(span) for b in range(span) for c in range(span) for d in range(span)
             if not (abs(a - c) < patch and abs(b - d) < patch)]
    x0, y0 = sample_positions(40000, 2, patch, size, size, True, gen(1), "cpu")
    codes = ((x0[0] * span + y0[0]) * span + x0[1]) * span + y0[1]
    counts = torch.bincount(codes, minlength=span ** 4).float()
    valid = torch.tensor([((a * span + b) * span + c) * span + d for a, b, c, d in pairs])
    assert counts.sum() == counts[valid].sum()  # nothing outside the valid set
    expected = 40000 / len(pairs)
    assert (counts[valid] - expected).abs().max() < 5 * expected ** 0.5


def test_draws_follow_integer_weights_and_never_pick_a_zero():
    weights = torch.tensor([[0, 1, 0, 3], [5, 0, 0, 0]]).repeat(20000, 1)
    drawn = draw_by_weight(weights, gen()).view(-1, 2)
    assert (drawn[:, 1] == 0).all()
    counts = torch.bincount(drawn[:, 0], minlength=4)
    assert counts[0] == counts[2] == 0 and abs(counts[3] / counts[1] - 3) < 0.15


def test_patch_content_and_centre_targets():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    sampler = PatchSampler(2, 8, **IDENTITY)
    patches, centres = sampler(images, gen())
    assert patches.shape == (6, 3, 32, 32) and centres.shape == (2, 3, 2)
    for i in range(2):
        for b in range(3):
            cx, cy = centres[i, b]
            x0, y0 = int(cx * 32 - 4), int(cy * 32 - 4)
            assert cx * 32 - 4 == x0 and cy * 32 - 4 == y0  # centre = (top-left + size/2) / width
            crop = images[b:b + 1, :, y0:y0 + 8, x0:x0 + 8].float() / 255
            assert torch.allclose(patches[i * 3 + b], resize_patches(crop, 32, 32)[0], atol=1e-6)


def test_additive_patch_same_placement_is_pasted_on_black_at_its_position():
    images = torch.randint(1, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.2, 0.2)
    sampler = PatchSampler(2, 10, additive=True, additive_placement="same", **{**IDENTITY, "mean": mean, "std": std})
    canvases, centres = sampler(images, gen())
    black = (torch.zeros(3) - torch.tensor(mean)) / torch.tensor(std)  # true black, normalised
    for i in range(2):
        for b in range(2):
            x0, y0 = (centres[i, b] * 32 - 5).round().long().tolist()
            canvas = canvases[i * 2 + b] * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
            assert torch.allclose(canvas[:, y0:y0 + 10, x0:x0 + 10], images[b, :, y0:y0 + 10, x0:x0 + 10].float() / 255, atol=1e-5)
            outside = torch.ones(32, 32, dtype=torch.bool)
            outside[y0:y0 + 10, x0:x0 + 10] = False
            assert torch.allclose(canvases[i * 2 + b][:, outside], black.view(3, 1).expand(3, int(outside.sum())), atol=1e-5)


def pasted_corners(canvases: torch.Tensor, size: int) -> torch.Tensor:
    """(x0, y0) of the one non-black size x size square on each canvas, checking the rest is exactly black."""
    lit = canvases.ne(0).any(1)  # M x H x W
    corners = []
    for mask in lit:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        y0, x0 = int(rows.min()), int(cols.min())
        assert rows.max() - y0 == size - 1 and cols.max() - x0 == size - 1
        corners.append((x0, y0))
    return torch.tensor(corners)


def test_additive_patch_is_pasted_unchanged_on_exact_black_at_a_random_position():
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    canvases, centres = PatchSampler(2, 10, additive=True, **IDENTITY)(images, gen(3))
    corners = pasted_corners(canvases, 10)
    cut = (centres.reshape(-1, 2) * 32 - 5).round().long()
    for m, ((x0, y0), (cx, cy)) in enumerate(zip(corners.tolist(), cut.tolist())):
        b = m % 64
        expected = images[b, :, cy:cy + 10, cx:cx + 10].float() / 255
        assert torch.equal(canvases[m, :, y0:y0 + 10, x0:x0 + 10], expected)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y0:y0 + 10, x0:x0 + 10] = False
        assert canvases[m][:, outside].eq(0).all()  # black in pixel space, not approximately
    assert (corners != cut).any(1).float().mean() > 0.9  # not pasted back where it was cut


def test_additive_paste_position_is_uncorrelated_with_the_target():
    images = torch.randint(1, 256, (2000, 3, 32, 32), dtype=torch.uint8)
    canvases, centres = PatchSampler(2, 8, additive=True, **IDENTITY)(images, gen(4))
    corners = pasted_corners(canvases, 8).float()
    targets = centres.reshape(-1, 2)
    for axis in range(2):
        r = torch.corrcoef(torch.stack([corners[:, axis], targets[:, axis]]))[0, 1]
        assert abs(r) < 0.06, f"axis {axis}: paste position correlates with the target (r={r:.3f})"
    assert corners.min() >= 0 and corners.max() <= 32 - 8
    assert len(torch.unique(corners[:, 0])) == 32 - 8 + 1  # every position where it fits is used


def test_each_patch_gets_its_own_jitter():
    images = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    sampler = PatchSampler(6, 8, mean=(0, 0, 0), std=(1, 1, 1), jitter=(0.8, 0, 0, 0), jitter_p=1.0, gray_p=0.0)
    patches, _ = sampler(images, gen())
    assert patches.mean(dim=(1, 2, 3)).std() > 0.05


@pytest.mark.parametrize("patch, count, overlap_free, message", [
    (40, 2, True, "patch_size 40 does not fit"),
    (20, 2, True, "cannot avoid overlapping .* use patch_size <= 16, or non_overlapping=false"),
])
def test_impossible_geometry_is_refused_naming_the_samplers_arguments(patch, count, overlap_free, message):
    sampler = PatchSampler(count, patch, **IDENTITY, non_overlapping=overlap_free)
    with pytest.raises(ValueError, match=message):
        sampler(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), gen())


def test_overlap_allowed_when_asked():
    sampler = PatchSampler(2, 20, **IDENTITY, non_overlapping=False)
    patches, _ = sampler(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), gen())
    assert patches.shape == (4, 3, 32, 32)


def test_grid_patches_follow_the_papers_order():
    images = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).expand(1, 3, 32, 32) / 1024
    patches = grid_patches(images, 16, 9, (0, 0, 0), (1, 1, 1))
    assert grid_positions(32, 16) == [0, 8, 16]
    names = ["centre", "left", "right", "top", "bottom", "top-left", "bottom-right", "top-right", "bottom-left"]
    expected = {"centre": (8, 8), "left": (8, 0), "right": (8, 16), "top": (0, 8), "bottom": (16, 8),
                "top-left": (0, 0), "bottom-right": (16, 16), "top-right": (0, 16), "bottom-left": (16, 0)}
    for index, name in enumerate(names):
        y0, x0 = expected[name]
        assert GRID_ORDER[index] == (y0 // 8, x0 // 8)
        crop = resize_patches(images[:, :, y0:y0 + 16, x0:x0 + 16], 32, 32)
        assert torch.allclose(patches[index, 0], crop[0]), name
    assert torch.equal(grid_patches(images, 16, 3, (0, 0, 0), (1, 1, 1)), patches[:3])  # prefixes


@pytest.mark.parametrize("batch, views, patches", [(8, 4, 2), (16, 4, 3), (5, 2, 6), (128, 4, 2)])
def test_pair_counts_match_equation_2(batch, views, patches):
    left, right, target = relation_pairs(batch, views)
    patch_left, patch_right = patch_pairs(batch, patches)
    # A' = M(K^2 - K) + M(N^2 - N)/2
    assert len(left) + len(patch_left) == batch * (views ** 2 - views) + batch * (patches ** 2 - patches) // 2
    assert target.sum() == len(target) / 2  # as many positives as negatives


def test_relation_pairs_positives_match_and_negatives_never_do():
    batch, views = 6, 4
    left, right, target = relation_pairs(batch, views)
    same_image = (left % batch) == (right % batch)
    assert torch.equal(same_image, target.bool())
    assert ((left // batch) < (right // batch)).all()  # always two different views


def test_relation_negatives_cycle_their_shift_through_every_other_image_in_pair_order():
    batch, views = 4, 5  # 10 view pairs, shifts 1, 2, 3, 1, 2, ...
    left, right, target = relation_pairs(batch, views)
    blocks = [(left[s:s + batch], right[s:s + batch], target[s:s + batch]) for s in range(0, len(left), batch)]
    view_pairs = [(i, j) for i in range(views) for j in range(i + 1, views)]
    for p, (i, j) in enumerate(view_pairs):
        (pl, pr, pt), (nl, nr, nt) = blocks[2 * p], blocks[2 * p + 1]
        rows = torch.arange(batch)
        assert torch.equal(pl, i * batch + rows) and torch.equal(pr, j * batch + rows) and pt.all()
        assert torch.equal(nl, pl) and torch.equal(nr, j * batch + (rows - 1 - p % (batch - 1)) % batch)
        assert not nt.any()


def test_pairs_for_many_views_and_patches_are_built_at_once():
    left, right, target = relation_pairs(8, 256)  # 32,640 view pairs: one loop step each would take seconds
    assert len(left) == 8 * 256 * 255 and target.sum() == len(target) / 2
    patch_left, _ = patch_pairs(2, 1024)
    assert len(patch_left) == 2 * 1024 * 1023 // 2


def test_patch_pairs_are_unordered_pairs_within_one_image():
    batch, n = 4, 3
    left, right = patch_pairs(batch, n)
    assert ((left % batch) == (right % batch)).all()
    pairs = {(int(a) // batch, int(b) // batch) for a, b in zip(left, right)}
    assert pairs == {(0, 1), (0, 2), (1, 2)}


def test_patch_sampler_keeps_its_positional_arguments():
    sampler = PatchSampler(2, 8, (0.5,) * 3, (0.2,) * 3, False, True, (0.4, 0.4, 0.4, 0.1), 0.5, 0.1)
    assert sampler.jitter == (0.4, 0.4, 0.4, 0.1) and sampler.gray_p == 0.1 and sampler.additive_placement == "random"
    with pytest.raises(ValueError, match="additive_placement 'nowhere'"):
        PatchSampler(2, 8, (0.5,) * 3, (0.2,) * 3, additive=True, additive_placement="nowhere")


@pytest.mark.parametrize("sampler", [
    ViewSampler(2, (0.5,) * 3, (0.2,) * 3),
    PatchSampler(2, 8, **IDENTITY),
    BoxSampler("grid", 8, 16, (0.5,) * 3, (0.2,) * 3),
], ids=["ViewSampler", "PatchSampler", "BoxSampler"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_samplers_refuse_images_that_are_not_uint8(sampler, dtype):
    floats = torch.rand(2, 3, 32, 32).to(dtype)  # as ToTensor gives
    with pytest.raises(ValueError, match=rf"{type(sampler).__name__} takes uint8 images .*got {dtype}; "
                                         r"pass uint8 0-255 images"):
        sampler(floats, gen())
    sampler(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), gen())  # what they are built for still works
