"""torchvision's region proposal network and Faster / Mask R-CNN box and mask heads, sized for a feature
pyramid: ViTDet's choices (two-convolution RPN head, four-convolution box and mask heads with LayerNorm)
with the head widths and sample counts as options, so a CPU budget can shrink them."""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from .pyramid import LayerNorm2d

ASPECT_RATIOS = (0.5, 1.0, 2.0)


def build_heads(torchvision, pyramid, num_classes: int, masks: bool, options) -> tuple:
    """(rpn, roi_heads) over ``pyramid``'s levels (their ``names``, ``strides``, ``out_channels``) for
    ``num_classes`` object classes; ``options`` a DetectConfig."""
    detection, ops = torchvision.models.detection, torchvision.ops
    channels, names = pyramid.out_channels, pyramid.names
    anchors = detection.anchor_utils.AnchorGenerator(
        tuple((options.anchor_scale * stride,) for stride in pyramid.strides), (ASPECT_RATIOS,) * len(names))
    rpn_class, roi_class = (l1_box_losses(torchvision) if options.box_loss == "l1" else
                            (detection.rpn.RegionProposalNetwork, detection.roi_heads.RoIHeads))
    rpn = rpn_class(
        anchors, detection.rpn.RPNHead(channels, len(ASPECT_RATIOS), conv_depth=2),
        fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=options.rpn_batch_size_per_image,
        positive_fraction=0.5, nms_thresh=0.7,
        pre_nms_top_n={"training": options.proposals_train, "testing": options.proposals_test},
        post_nms_top_n={"training": options.proposals_train, "testing": options.proposals_test})
    pooled = names[:-1]  # RoIs are pooled from all levels but the subsampled top one (FPN's rule)
    pooler = aligned_pooler(torchvision) if options.aligned_roi else ops.MultiScaleRoIAlign
    box_head = detection.faster_rcnn.FastRCNNConvFCHead(
        (channels, 7, 7), [channels] * options.box_head_convs, [options.representation_size], norm_layer=LayerNorm2d)
    mask_parts = {}
    if masks:
        mask_parts = {"mask_roi_pool": pooler(pooled, 14, sampling_ratio=0),
                      "mask_head": detection.mask_rcnn.MaskRCNNHeads(channels, [channels] * 4, 1,
                                                                     norm_layer=LayerNorm2d),
                      "mask_predictor": detection.mask_rcnn.MaskRCNNPredictor(channels, channels, num_classes + 1)}
    roi_heads = roi_class(
        pooler(pooled, 7, sampling_ratio=0), box_head,
        detection.faster_rcnn.FastRCNNPredictor(options.representation_size, num_classes + 1),
        fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=options.box_batch_size_per_image,
        positive_fraction=0.25, bbox_reg_weights=None, score_thresh=options.score_threshold, nms_thresh=0.5,
        detections_per_img=options.detections_per_image, **mask_parts)
    for coder in (rpn.box_coder, roi_heads.box_coder):
        coder.__class__ = float32_box_coder(torchvision)
    return rpn, roi_heads


def l1_box_losses(torchvision) -> tuple:
    """torchvision's RegionProposalNetwork and RoIHeads with L1 box-regression losses, as detectron2's
    (smooth_l1_beta 0) that ViTDet trains with; torchvision's are smooth-L1 with beta 1/9. The RoIHeads' forward is
    torchvision's own, reading ``fastrcnn_l1_loss`` where it reads its module's ``fastrcnn_loss``: nothing of
    torchvision is changed for anyone else."""
    detection = torchvision.models.detection

    class L1RegionProposalNetwork(detection.rpn.RegionProposalNetwork):
        def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
            positive, negative = (torch.where(torch.cat(chosen))[0] for chosen in self.fg_bg_sampler(labels))
            sampled, labels = torch.cat([positive, negative]), torch.cat(labels)
            box_loss = F.l1_loss(pred_bbox_deltas[positive], torch.cat(regression_targets)[positive],
                                 reduction="sum") / sampled.numel()
            return F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled]), box_loss

    forward = detection.roi_heads.RoIHeads.forward
    names = {**vars(detection.roi_heads), "fastrcnn_loss": fastrcnn_l1_loss}

    class L1RoIHeads(detection.roi_heads.RoIHeads):
        pass

    L1RoIHeads.forward = types.FunctionType(forward.__code__, names, forward.__name__, forward.__defaults__,
                                            forward.__closure__)
    return L1RegionProposalNetwork, L1RoIHeads


def fastrcnn_l1_loss(class_logits, box_regression, labels: list, regression_targets: list) -> tuple:
    """torchvision's fastrcnn_loss with an L1 box loss: (cross-entropy over the sampled RoIs, the L1 distance of
    each foreground RoI's deltas for its class to its targets, summed, over the number of sampled RoIs)."""
    labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
    foreground = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(len(class_logits), -1, 4)[foreground, labels[foreground]]
    box_loss = F.l1_loss(deltas, regression_targets[foreground], reduction="sum") / labels.numel()
    return F.cross_entropy(class_logits, labels), box_loss


def aligned_pooler(torchvision) -> type:
    """torchvision's MultiScaleRoIAlign (FPN's level of each box) with ``aligned=True``: a box's pixel centres at
    half-integers, as detectron2's ROIAlignV2 that ViTDet pools with (torchvision's pooler fixes aligned=False)."""
    poolers, roi_align = torchvision.ops.poolers, torchvision.ops.roi_align

    class AlignedMultiScaleRoIAlign(poolers.MultiScaleRoIAlign):
        def forward(self, x, boxes, image_shapes):
            features = poolers._filter_input(x, self.featmap_names)
            if self.scales is None or self.map_levels is None:
                self.scales, self.map_levels = poolers._setup_scales(features, image_shapes, self.canonical_scale,
                                                                     self.canonical_level)
            rois, levels = poolers._convert_to_roi_format(boxes), self.map_levels(boxes)
            pooled = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
            for level, (feature, scale) in enumerate(zip(features, self.scales)):
                chosen = torch.where(levels == level)[0]
                pooled[chosen] = roi_align(feature, rois[chosen], self.output_size, scale, self.sampling_ratio,
                                           aligned=True).to(pooled.dtype)
            return pooled

    return AlignedMultiScaleRoIAlign


def float32_box_coder(torchvision) -> type:
    """torchvision's BoxCoder decoding in float32: under bf16 autocast it decodes in the deltas' dtype, which
    rounds a box corner near 1024 px to 4 px (detectron2 casts to float32 for the same reason)."""
    base = torchvision.models.detection._utils.BoxCoder

    class Float32BoxCoder(base):
        def decode_single(self, rel_codes, boxes):
            return super().decode_single(rel_codes.float(), boxes.float())

    return Float32BoxCoder
