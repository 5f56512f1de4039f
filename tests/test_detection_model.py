"""The detection model's parts on their own: ViTDet's windowed attention and simple feature pyramid, and the
batched large-scale jitter that moves boxes and masks with the pixels."""
import pytest
import torch

from spatialssl.detection import DetectionTargets
from spatialssl.detection.jitter import _grid, jitter, move_boxes
from spatialssl.detection.pyramid import SimpleFeaturePyramid, vit_feature_map, windowed_block
from spatialssl.models import create_backbone


def small_vit(pos_embed=True):
    torch.manual_seed(0)
    return create_backbone("vit_tiny", input_size=(64, 64), patch_size=8, depth=2, pos_embed=pos_embed).eval()


def test_one_window_over_the_whole_map_is_the_plain_block():
    vit = small_vit()
    tokens = torch.randn(2, 64, 192)
    assert torch.allclose(windowed_block(vit.blocks[0], tokens, (8, 8), 8), vit.blocks[0](tokens), atol=1e-5)


def test_windowed_attention_sees_only_its_own_window():
    vit = small_vit()
    tokens = torch.randn(1, 64, 192)
    changed = tokens.clone()
    changed.view(1, 8, 8, 192)[0, 5:, 5:] += 1.0  # inside the bottom-right 4 x 4 window (windows of 4 from 0)
    before, after = (windowed_block(vit.blocks[0], t, (8, 8), 4).view(8, 8, 192) for t in (tokens, changed))
    moved = (after - before).abs().amax(-1) > 1e-6
    assert moved[4:, 4:].any() and not moved[:4].any() and not moved[:, :4].any()
    # an uneven grid is padded to whole windows and cropped back
    assert windowed_block(vit.blocks[0], torch.randn(2, 6 * 10, 192), (6, 10), 4).shape == (2, 60, 192)


def test_the_simple_pyramid_has_strides_p_over_4_to_4p():
    vit = small_vit()
    pyramid = SimpleFeaturePyramid(192, 8, out_channels=32, window=4, global_blocks=[1])
    features = pyramid(vit, torch.randn(2, 3, 64, 64))
    assert pyramid.strides == [2, 4, 8, 16, 32]
    assert {name: tuple(x.shape) for name, x in features.items()} == {
        "p2": (2, 32, 32, 32), "p3": (2, 32, 16, 16), "p4": (2, 32, 8, 8), "p5": (2, 32, 4, 4), "p6": (2, 32, 2, 2)}
    # the map under the pyramid is the ViT's last block, unnormed, one token per patch
    map_ = vit_feature_map(small_vit(pos_embed=False), torch.randn(1, 3, 64, 48))
    assert map_.shape == (1, 192, 8, 6)


def square_image_and_box(size=32):
    images = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    images[..., 8:16, 4:12] = 255  # rows 8..15, columns 4..11
    box = torch.tensor([[[4.0, 8.0, 12.0, 16.0], [0.0, 0.0, 0.0, 0.0]]])
    return images, DetectionTargets(box, torch.tensor([[0, -1]]))


def test_jitter_moves_the_box_with_the_pixels():
    images, targets = square_image_and_box()
    for scale, offset, flip in ((1.0, (0.0, 0.0), False), (1.0, (0.0, 0.0), True), (0.5, (0.0, 0.0), False),
                                (2.0, (6.0, 10.0), False), (2.0, (30.0, 10.0), True)):
        scales, offsets, flips = torch.tensor([scale]), torch.tensor([offset]), torch.tensor([flip])
        grid = _grid(scales, offsets, flips, 32)
        x = torch.nn.functional.grid_sample(images.float() / 255, grid, align_corners=False)
        boxes, classes = move_boxes(targets, scales, offsets, flips, 32)
        rows, cols = torch.nonzero(x[0, 0] > 0.5, as_tuple=True)  # the bright pixels' extent, edges exclusive
        bright = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()
        assert torch.allclose(boxes[0, 0], bright, atol=1.0), (scale, offset, flip, boxes[0, 0], bright)
        assert classes.tolist() == [[0, -1]]  # the empty slot stays empty


def test_a_box_cropped_away_becomes_an_empty_slot():
    images, targets = square_image_and_box()
    # scale 2 and an offset past the object's right and bottom edges: it leaves the canvas
    boxes, classes = move_boxes(targets, torch.tensor([2.0]), torch.tensor([[30.0, 32.0]]), torch.tensor([False]), 32)
    assert classes.tolist() == [[-1, -1]]


def test_jitter_draws_per_image_and_keeps_masks_aligned():
    images, targets = square_image_and_box()
    masks = (images[:, :1] > 0).to(torch.uint8).expand(1, 2, 32, 32).clone()
    masks[:, 1] = 0
    batch = DetectionTargets(targets.boxes.expand(4, 2, 4).clone(), targets.classes.expand(4, 2).clone(),
                             masks.expand(4, 2, 32, 32).clone())
    x, moved = jitter(images.expand(4, 3, 32, 32), batch, (0.5, 1.5), 0.5, torch.Generator().manual_seed(3))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert len({tuple(b) for b in moved.boxes[:, 0].tolist()}) == 4  # each image its own scale / flip
    bright = (x[:, 0] > 0.5)
    assert (bright == moved.masks[:, 0].bool()).float().mean() > 0.97  # the mask follows the pixels


def test_targets_leave_out_empty_slots_wherever_they_are():
    boxes = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    classes = torch.tensor([[-1, 2, 0], [1, -1, -1]])
    masks = torch.arange(2 * 3, dtype=torch.uint8).view(2, 3, 1, 1).expand(2, 3, 2, 2).clone()
    first, second = DetectionTargets(boxes, classes, masks).as_torchvision()
    assert first["labels"].tolist() == [3, 1] and torch.equal(first["boxes"], boxes[0, 1:])  # 0 is the background
    assert first["masks"][:, 0, 0].tolist() == [1, 2]
    assert second["labels"].tolist() == [2] and torch.equal(second["boxes"], boxes[1, :1])


def test_the_aligned_pooler_samples_pixel_centres_at_half_integers_on_each_boxes_level():
    """On maps whose value is the column index, a box pools to the mean of its sampled columns: its centre in the
    level's pixels less half a pixel with pixel centres at half-integers (ROIAlignV2), its centre with torchvision's
    default; each box from its FPN level."""
    from spatialssl.detection.heads import aligned_pooler
    from spatialssl.detection.torchvision_ops import import_torchvision

    torchvision = import_torchvision()
    features = {"p2": torch.arange(64.0).expand(1, 1, 64, 64), "p3": torch.arange(32.0).expand(1, 1, 32, 32)}
    boxes, shapes = [torch.tensor([[10.0, 10.0, 30.0, 20.0], [8.0, 8.0, 248.0, 248.0]])], [(256, 256)]
    aligned = aligned_pooler(torchvision)(["p2", "p3"], 7, sampling_ratio=2)
    plain = torchvision.ops.MultiScaleRoIAlign(["p2", "p3"], 7, sampling_ratio=2)
    pooled, default = aligned(features, boxes, shapes), plain(features, boxes, shapes)
    assert aligned.map_levels(boxes).flatten().tolist() == [0, 1]  # small box: fine level; large: coarse
    centres = torch.tensor([20.0 / 4, 128.0 / 8])  # each box's centre in its level's pixels
    assert torch.allclose(pooled.mean((1, 2, 3)), centres - 0.5, atol=1e-4)
    assert torch.allclose(default.mean((1, 2, 3)), centres, atol=1e-4)


def test_the_l1_box_losses_are_l1_where_torchvisions_are_smooth_l1():
    """The box head's loss is the L1 distance of each foreground RoI's deltas for its class, over the RoIs; the
    RPN's with every anchor sampled the same; torchvision's smooth-L1 (beta 1/9) is smaller on small errors."""
    import torch.nn.functional as F

    from spatialssl.detection.heads import fastrcnn_l1_loss, l1_box_losses
    from spatialssl.detection.torchvision_ops import import_torchvision

    torchvision = import_torchvision()
    generator = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(6, 3, generator=generator), torch.randn(6, 12, generator=generator) * 0.1
    labels, targets = [torch.tensor([0, 1, 2, 2, 0, 1])], [torch.randn(6, 4, generator=generator) * 0.1]
    classification, box = fastrcnn_l1_loss(logits, deltas, labels, targets)
    chosen = deltas.view(6, 3, 4)[torch.arange(6), labels[0]]
    expected = (chosen - targets[0]).abs()[labels[0] > 0].sum() / 6
    assert box.item() == pytest.approx(expected.item()) and classification.item() == pytest.approx(
        F.cross_entropy(logits, labels[0]).item())
    theirs = torchvision.models.detection.roi_heads.fastrcnn_loss(logits, deltas, labels, targets)[1]
    assert theirs < box  # errors of about 0.1, below beta = 1/9: smooth-L1 squares them
    rpn_class, _ = l1_box_losses(torchvision)
    anchors = torchvision.models.detection.anchor_utils.AnchorGenerator(((32,),), ((1.0,),))
    head = torchvision.models.detection.rpn.RPNHead(4, 1)
    rpn = rpn_class(anchors, head, 0.7, 0.3, 256, 1.0, {"training": 10}, {"training": 10}, 0.7)  # every positive
    objectness, rpn_deltas = torch.randn(8, generator=generator), torch.randn(8, 4, generator=generator)
    rpn_targets = [torch.randn(8, 4, generator=generator)]
    _, rpn_box = rpn.compute_loss(objectness, rpn_deltas, [torch.ones(8)], rpn_targets)
    assert rpn_box.item() == pytest.approx((rpn_deltas - rpn_targets[0]).abs().sum().item() / 8)


def test_relative_positions_add_each_querys_row_and_column_offset_terms():
    from spatialssl.detection.relpos import RelativePositions

    torch.manual_seed(0)
    positions, side = RelativePositions(8, 3), 3
    torch.nn.init.normal_(positions.rows)
    torch.nn.init.normal_(positions.cols)
    q = torch.randn(2, 4, side * side, 8)
    bias = positions(q, side)
    for i in range(side * side):
        for j in range(side * side):
            (ri, ci), (rj, cj) = divmod(i, side), divmod(j, side)
            expected = q[:, :, i] @ positions.rows[ri - rj + side - 1] + q[:, :, i] @ positions.cols[ci - cj + side - 1]
            assert torch.allclose(bias[:, :, i, j], expected, atol=1e-5)


def test_zero_relative_positions_leave_the_pyramid_as_without_and_learn():
    vit = small_vit()
    images = torch.rand(2, 3, 64, 64)
    head_dim = vit.embed_dim // vit.blocks[0].attn.num_heads
    torch.manual_seed(1)
    plain = SimpleFeaturePyramid(vit.embed_dim, 8, 16, window=4, global_blocks=[1])
    torch.manual_seed(1)
    biased = SimpleFeaturePyramid(vit.embed_dim, 8, 16, window=4, global_blocks=[1], relative_positions=(2, head_dim, 8))
    assert [len(p.rows) for p in biased.positions] == [7, 15]  # a 4-token window, then the whole 8 x 8 map
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain(vit, images).values(),
                                                                   biased(vit, images).values()))
    sum(level.sum() for level in biased(vit, images).values()).backward()
    assert all(p.rows.grad.abs().sum() > 0 and p.cols.grad.abs().sum() > 0 for p in biased.positions)
