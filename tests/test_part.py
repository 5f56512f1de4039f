"""PART: box samplers, targets, relative encoders, the loss, a tiny pretraining, figures."""
import math

import pytest
import torch
import torch.nn.functional as F

from spatialssl.commands.analysis import (Sample, antisymmetry_error, matrix_orders, paste_boxes, placed_boxes,
                                         spread_map, uncertainty)
from spatialssl.data import ImageSet
from spatialssl.engine.config import load_config
from spatialssl.engine.runlog import read_metrics
from spatialssl.engine.train import pretrain
from spatialssl.errors import ConfigError
from spatialssl.losses import RelativePositionLoss
from spatialssl.models import CrossAttentionEncoder, FullMLPEncoder, PairwiseMLPEncoder, build_encoder
from spatialssl.samplers.boxes import (
    all_pairs,
    check_box_geometry,
    cut_boxes,
    grid_boxes,
    relative_targets,
    sample_boxes,
    sample_pairs,
)


def boxes_of(*rows):
    return torch.tensor([rows], dtype=torch.float)


def test_targets_on_hand_made_boxes_sign_and_normalisation():
    # centres (2, 2) and (10, 6); reference width and height 4
    boxes = boxes_of((0, 0, 4, 4), (8, 4, 4, 4))
    targets = relative_targets(boxes, torch.tensor([[[0, 1], [1, 0], [0, 0]]]))
    assert targets.tolist() == [[[2.0, 1.0], [-2.0, -1.0], [0.0, 0.0]]]


def test_targets_in_scale_mode_normalise_by_the_reference_box():
    # reference 4 wide, 8 high, centre (2, 4); target 8 x 4, centre (14, 2)
    boxes = boxes_of((0, 0, 4, 8), (10, 0, 8, 4))
    pairs = torch.tensor([[[0, 1], [1, 0]]])
    ratio = relative_targets(boxes, pairs, predict_scale=True)
    assert ratio[0, 0].tolist() == [3.0, -0.25, 2.0, 0.5]
    assert ratio[0, 1].tolist() == [-1.5, 0.5, 0.5, 2.0]  # the other way round: normalised by the 8 x 4 box
    logs = relative_targets(boxes, pairs, predict_scale=True, log_scale=True)
    assert torch.allclose(logs[0, 0, 2:], torch.tensor([math.log(2), math.log(0.5)]))


@pytest.mark.parametrize("mode", ["offgrid", "scale", "grid", "stratified"])
def test_boxes_lie_inside_the_image_within_their_size_bounds(mode):
    height, width, patch = 32, 24, 4
    num = (height // patch) * (width // patch)
    boxes = sample_boxes(64, num, height, width, mode, patch, torch.Generator().manual_seed(0), "cpu")
    x0, y0, w, h = boxes.unbind(-1)
    assert boxes.shape == (64, num, 4)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width + 1e-4).all() and (y0 + h <= height + 1e-4).all()
    if mode == "scale":
        assert (w >= patch / 2).all() and (w <= 2 * patch).all() and (h >= patch / 2).all() and (h <= 2 * patch).all()
        assert w.std() > 1 and (w != h).any()  # sizes and aspect ratios vary
    else:
        assert (w == patch).all() and (h == patch).all()
    if mode == "offgrid":
        assert (x0 == x0.floor()).all() and (x0 % patch != 0).any()  # integer but off the grid
    assert not torch.equal(boxes[0], boxes[1]) or mode == "grid"  # per-image randomness


def test_grid_mode_covers_the_image_exactly_once():
    boxes = sample_boxes(2, 48, 32, 24, "grid", 4, torch.Generator().manual_seed(0), "cpu")
    cover = torch.zeros(32, 24)
    for x0, y0, w, h in boxes[0].int().tolist():
        cover[y0:y0 + h, x0:x0 + w] += 1
    assert (cover == 1).all()
    assert not torch.equal(boxes[0], boxes[1])  # each image's cells in its own order, not raster order


def test_stratified_mode_keeps_one_box_per_cell():
    boxes = sample_boxes(16, 64, 32, 32, "stratified", 4, torch.Generator().manual_seed(0), "cpu")
    cells = ((boxes[..., :2] + 2) / 4).floor()  # the cell each box was jittered from, by at most half a cell
    shift = (boxes[..., :2] - cells * 4).abs()
    assert (shift <= 2 + 1e-5).all() and shift.max() > 1
    for image in cells:
        assert len({tuple(c) for c in image.tolist()}) == 64  # one box per cell, in a shuffled order
    assert not torch.equal(cells[0], cells[1])


@pytest.mark.parametrize("mode", ["grid", "stratified"])
def test_a_token_slot_alone_says_nothing_of_where_its_box_is(mode):
    """The published code's --shuffle_patches: in raster order a constant per (i, j) slot pair would predict the
    translation exactly, without looking at the image. Shuffled, the best such predictor (each slot pair's mean
    target) does no better than predicting the overall mean."""
    boxes = sample_boxes(4000, 16, 16, 16, mode, 4, torch.Generator().manual_seed(0), "cpu")
    pairs = all_pairs(16).expand(len(boxes), -1, -1)
    targets = relative_targets(boxes, pairs)  # B x 240 x 2
    per_slot = ((targets - targets.mean(0)) ** 2).mean()
    overall = ((targets - targets.mean((0, 1))) ** 2).mean()
    assert per_slot / overall > 0.98


def test_grid_subset_draws_distinct_cells():
    boxes = sample_boxes(8, 20, 32, 32, "grid", 4, torch.Generator().manual_seed(0), "cpu")
    for image in boxes:
        assert len({tuple(b) for b in image.tolist()}) == 20


def test_cut_boxes_copies_integer_boxes_and_averages_double_ones():
    images = torch.rand(3, 3, 16, 16)
    boxes = torch.tensor([[[5, 2, 4, 4], [0, 8, 8, 8]]] * 3, dtype=torch.float)
    patches = cut_boxes(images, boxes, 4)
    assert patches.shape == (3, 2, 3, 4, 4)
    assert torch.allclose(patches[:, 0], images[:, :, 2:6, 5:9], atol=1e-6)
    assert torch.allclose(patches[:, 1], F.avg_pool2d(images[:, :, 8:16, 0:8], 2), atol=1e-6)


def test_pairs_are_distinct_ordered_and_never_self():
    pairs = sample_pairs(16, 8, 56, torch.Generator().manual_seed(0), "cpu")
    assert pairs.shape == (16, 56, 2)
    assert (pairs[..., 0] != pairs[..., 1]).all() and pairs.min() >= 0 and pairs.max() < 8
    for image in pairs:
        assert len({tuple(p) for p in image.tolist()}) == 56  # all 8 * 7 ordered pairs, once each
    with pytest.raises(ValueError, match="num_pairs 57 exceeds the 56 ordered pairs"):
        sample_pairs(1, 8, 57, torch.Generator(), "cpu")


@pytest.mark.parametrize("name", ["cross_attention", "cross_attention_block", "pairwise_mlp", "mlp"])
@pytest.mark.parametrize("outputs", [2, 4])
def test_encoder_output_shapes(name, outputs):
    encoder = build_encoder(name, 24, outputs, num_heads=3, num_tokens=10, mlp_hidden=16)
    tokens = torch.randn(5, 10, 24)
    pairs = sample_pairs(5, 10, 30, torch.Generator().manual_seed(0), "cpu")
    assert encoder(tokens, pairs).shape == (5, 30, outputs)


def test_cross_attention_sees_every_patch_and_the_pairwise_mlp_only_its_pair():
    tokens = torch.randn(1, 6, 24)
    pairs = torch.tensor([[[0, 1]]])
    other = tokens.clone()
    other[0, 5] = torch.randn(24)  # a different patch outside the pair
    attention, pairwise = CrossAttentionEncoder(24, 2, 3), PairwiseMLPEncoder(24, 2)
    assert not torch.allclose(attention(tokens, pairs), attention(other, pairs))
    assert torch.equal(pairwise(tokens, pairs), pairwise(other, pairs))
    assert pairwise.out.in_features == 48 and sum(p.numel() for p in pairwise.parameters()) == 48 * 2 + 2


def test_cross_attention_equals_the_published_head_built_on_multihead_attention():
    """The official head: Linear(2D -> D) on cat(z_ref, z_tgt) as the query, one
    nn.MultiheadAttention (sequence-first) over all patch embeddings, Linear(D -> C); no norm,
    no residual. Ours, with the same weights, must agree."""
    dim, heads = 24, 2
    ours = CrossAttentionEncoder(dim, 4, heads)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in ours.modules())
    query, attention, out = torch.nn.Linear(2 * dim, dim), torch.nn.MultiheadAttention(dim, heads), torch.nn.Linear(dim, 4)
    query.load_state_dict(ours.query.state_dict())
    attention.load_state_dict(ours.attention.state_dict())
    out.load_state_dict(ours.out.state_dict())
    tokens = torch.randn(3, 7, dim)
    pairs = sample_pairs(3, 7, 11, torch.Generator().manual_seed(1), "cpu")
    z_ref = torch.stack([tokens[b, pairs[b, :, 0]] for b in range(3)])
    z_tgt = torch.stack([tokens[b, pairs[b, :, 1]] for b in range(3)])
    q = query(torch.cat([z_ref, z_tgt], dim=-1)).transpose(0, 1)  # M x B x D
    kv = tokens.transpose(0, 1)
    expected = out(attention(q, kv, kv)[0].transpose(0, 1))
    torch.testing.assert_close(ours(tokens, pairs), expected, atol=1e-6, rtol=0)
    assert CrossAttentionEncoder(dim).attention.num_heads == 1


def test_full_mlp_reads_the_requested_pair_from_its_table():
    encoder = FullMLPEncoder(4, num_tokens=3, outputs=2, hidden=0)
    tokens = torch.randn(2, 3, 4)
    table = encoder.net(tokens.flatten(1)).view(2, 3, 3, 2)
    assert torch.equal(encoder(tokens, torch.tensor([[[2, 1]], [[0, 2]]]))[:, 0], torch.stack([table[0, 2, 1], table[1, 0, 2]]))
    assert encoder.net.weight.shape == (3 * 3 * 2, 3 * 4)  # the paper's N * d -> N^2 * 2 map


def test_loss_is_the_mean_squared_error_over_pairs_and_channels():
    outputs, targets = torch.zeros(2, 3, 2), torch.tensor([[[3.0, 4.0]] * 3] * 2)
    loss, parts = RelativePositionLoss()(outputs, targets)
    assert loss.item() == pytest.approx((9 + 16) / 2)
    assert parts["position_error"].item() == pytest.approx(5.0)
    assert parts["mse_dx"].item() == 9 and parts["mse_dy"].item() == 16


def gradient_images(count: int, seed: int) -> ImageSet:
    """Red encodes x, green y: a patch's content tells where it lies, so positions are learnable."""
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    base = torch.stack([xs * 8, ys * 8, torch.zeros_like(xs)]).float()
    shift = torch.randint(0, 60, (count, 1, 1, 1), generator=torch.Generator().manual_seed(seed))
    return ImageSet((base + shift).clamp(0, 255).to(torch.uint8), None, source="gradients")


PART_TINY = ["method.name=part", "model.backbone=vit_tiny", "model.depth=1", "part.sampling=offgrid",
             "part.num_tokens=16", "part.num_pairs=64", "augment.scale=[1.0,1.0]", "augment.flip_p=0",
             "train.batch_size=32", "train.epochs=3", "optim.name=adamw", "optim.lr=0.001", "train.knn_monitor=0"]


def test_tiny_part_pretraining_falls_well_below_predicting_the_mean(tmp_path):
    data = gradient_images(256, seed=0)
    pretrain(load_config(overrides=PART_TINY), tmp_path / "run", train_set=data, progress=False)
    losses = [float(r["loss"]) for r in read_metrics(tmp_path / "run")]
    boxes = sample_boxes(256, 16, 32, 32, "offgrid", 4, torch.Generator().manual_seed(1), "cpu")
    targets = relative_targets(boxes, sample_pairs(256, 16, 64, torch.Generator().manual_seed(2), "cpu"))
    mean_predictor = (targets - targets.mean((0, 1))).pow(2).mean().item()
    assert losses[-1] < 0.25 * mean_predictor, (losses, mean_predictor)


def test_reconstruction_from_true_boxes_is_exact():
    image = torch.rand(3, 32, 32)
    boxes = grid_boxes(32, 32, 4)
    patches = cut_boxes(image[None], boxes[None], 4)[0]
    canvas, covered = paste_boxes(patches, boxes, 32, 32)
    assert covered.all() and torch.allclose(canvas, image, atol=1e-6)
    offgrid = sample_boxes(1, 40, 32, 32, "offgrid", 4, torch.Generator().manual_seed(0), "cpu")[0]
    canvas, covered = paste_boxes(cut_boxes(image[None], offgrid[None], 4)[0], offgrid, 32, 32)
    assert covered.any() and not covered.all()
    assert torch.allclose(canvas[:, covered], image[:, covered], atol=1e-6)


@pytest.mark.parametrize("predict_scale, log_scale", [(False, False), (True, False), (True, True)])
def test_placing_patches_by_true_translations_recovers_their_boxes(predict_scale, log_scale):
    boxes = sample_boxes(1, 12, 32, 32, "scale" if predict_scale else "offgrid", 4,
                         torch.Generator().manual_seed(0), "cpu")
    targets = relative_targets(boxes, all_pairs(12)[None], predict_scale, log_scale).view(12, 12, -1)
    for reference in (0, 7):
        assert torch.allclose(placed_boxes(boxes[0], targets, reference, log_scale), boxes[0], atol=1e-4)


def test_symmetry_and_uncertainty_measures():
    assert antisymmetry_error(torch.tensor([[0.0, 2.0], [-2.0, 0.0]])) == 0
    assert antisymmetry_error(torch.tensor([[0.0, 2.0], [2.0, 0.0]])) == 4
    scaled = sample_boxes(1, 10, 32, 32, "scale", 4, torch.Generator().manual_seed(0), "cpu")[0]
    dx = relative_targets(scaled[None], all_pairs(10)[None]).view(10, 10, 2)[..., 0]
    assert antisymmetry_error(dx) > 0.1  # per-reference units hide the symmetry...
    assert antisymmetry_error(dx, scaled[:, 2] / 4) < 1e-5  # ...which reference sizes restore
    boxes = sample_boxes(1, 10, 32, 32, "offgrid", 4, torch.Generator().manual_seed(0), "cpu")[0]
    targets = relative_targets(boxes[None], all_pairs(10)[None]).view(10, 10, 2)
    exact = Sample(torch.zeros(3, 32, 32), torch.zeros(10, 3, 4, 4), boxes, targets, targets)
    assert torch.allclose(uncertainty(exact), torch.zeros(10), atol=1e-4)  # every reference agrees
    noisy = targets.clone()
    noisy[:, 3] += torch.randn(10, 2)  # patch 3 placed inconsistently
    spread = uncertainty(Sample(exact.image, exact.patches, boxes, noisy, targets))
    assert spread.argmax() == 3 and spread[3] > 1


def test_the_spread_map_tells_uncovered_pixels_from_zero_spread():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0]])
    shown = spread_map(boxes, torch.tensor([0.0, 2.0]), 8, 8)
    assert shown[0, 0] == 0 and shown[5, 5] == 2 and shown[3, 3] == 1  # overlap: the mean of both
    assert shown[7, 7].isnan() and shown[0, 7].isnan()  # no box: NaN, drawn grey, never 0
    assert shown.isnan().sum() == 64 - 16 - 16 + 4


def test_symmetry_rows_are_not_shown_twice_when_the_orders_agree():
    assert [label for label, _ in matrix_orders(grid_boxes(32, 32, 4), 4)] == ["raster order"]  # already so
    grid = sample_boxes(1, 64, 32, 32, "grid", 4, torch.Generator().manual_seed(0), "cpu")[0]
    assert len(matrix_orders(grid, 4)) == 2  # grid tokens come shuffled: the sampled order differs
    offgrid = sample_boxes(1, 16, 32, 32, "offgrid", 4, torch.Generator().manual_seed(0), "cpu")[0]
    (_, raster), (_, sampled) = matrix_orders(offgrid, 4)
    assert not torch.equal(raster, sampled) and sorted(raster.tolist()) == sampled.tolist()


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone=resnet8"], "ViT backbone"),
    (["part.sampling=diagonal"], "part.sampling"),
    (["part.encoder=lstm"], "part.encoder"),
    (["model.pos_embed=true"], "without a position embedding"),
])
def test_part_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=["method.name=part", "model.backbone=vit_tiny", *overrides])


def test_impossible_geometry_is_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="mode=grid tiles the 30x30 image with patch_size 4, which does not divide"):
        check_box_geometry("grid", 30, 30, 4, 49)
    with pytest.raises(ValueError, match="box_scale max 9.0 x patch_size 4 exceeds"):
        check_box_geometry("scale", 32, 32, 4, 64, box_scale=(0.5, 9.0))
    images = gradient_images(64, 0)  # the loop names the options that set those arguments
    with pytest.raises(ConfigError, match=r"^part.box_scale max 9.0 x model.patch_size 4 exceeds the 32x32 image$"):
        pretrain(load_config(overrides=[*PART_TINY, "part.sampling=scale", "part.box_scale=[0.5, 9.0]"]),
                 tmp_path / "y", train_set=images, progress=False)
    with pytest.raises(ConfigError, match="part.num_pairs"):
        pretrain(load_config(overrides=[*PART_TINY, "part.num_pairs=500"]), tmp_path / "x",
                 train_set=images, progress=False)
