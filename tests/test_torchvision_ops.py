"""torchvision's nms and roi_align after import_torchvision: its compiled kernels where they load, spatialssl's
pure-torch ones where they cannot (a torchvision built for another torch, as on the CPU test machine). Each case
runs through torchvision's public functions and through spatialssl's kernels called directly, against numbers
worked out by hand, so on a machine with the compiled kernels the two are held to the same numbers."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from spatialssl.detection import torchvision_ops
from spatialssl.errors import MissingPackage


def ramp(height: int, width: int) -> torch.Tensor:
    """1 x 1 x H x W, f(y, x) = 10 y + x. Bilinear interpolation reproduces it exactly, so a bin's average over
    its symmetric grid of samples is f at the bin's centre, whatever the sampling ratio."""
    return (10 * torch.arange(height, dtype=torch.float32)[:, None] + torch.arange(width))[None, None]


def squares(width: int) -> torch.Tensor:
    """1 x 1 x 2 x W, f(y, x) = x^2 on both rows: interpolating between pixels k and k+1 gives k^2 + t (2k + 1),
    so the sampling grid shows in the average."""
    return (torch.arange(width, dtype=torch.float32) ** 2).expand(1, 1, 2, width).contiguous()


@pytest.fixture(params=["torchvision", "spatialssl"])
def roi_align(request, torchvision):
    """roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)."""
    if request.param == "torchvision":
        return torchvision.ops.roi_align

    def ours(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        return torchvision_ops.roi_align(input, rois, spatial_scale, *output_size, sampling_ratio, aligned)
    return ours


@pytest.fixture(params=["torchvision", "spatialssl"])
def nms(request, torchvision):
    return torchvision.ops.nms if request.param == "torchvision" else torchvision_ops.nms


def rois(*boxes) -> torch.Tensor:
    return torch.tensor(boxes, dtype=torch.float32)


def assert_values(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
def test_roi_align_of_a_ramp_is_its_value_at_the_bin_centres(roi_align, sampling_ratio):
    image = ramp(8, 8)
    # roi x 1..5, y 2..4 in 2 x 2 bins: centres x 2, 4 and y 2.5, 3.5.
    plain = roi_align(image, rois([0, 1, 2, 5, 4]), (2, 2), 1.0, sampling_ratio, False)
    assert_values(plain[0, 0], [[27, 29], [37, 39]])
    # The same roi given in pixels of an image twice the size.
    scaled = roi_align(image, rois([0, 2, 4, 10, 8]), (2, 2), 0.5, sampling_ratio, False)
    assert_values(scaled[0, 0], [[27, 29], [37, 39]])
    # aligned: the roi shifts by -0.5 px, the centres to x 1.5, 3.5 and y 2, 3.
    shifted = roi_align(image, rois([0, 1, 2, 5, 4]), (2, 2), 1.0, sampling_ratio, True)
    assert_values(shifted[0, 0], [[21.5, 23.5], [31.5, 33.5]])


def test_aligned_keeps_a_roi_under_a_pixel_where_the_legacy_mode_widens_it_to_one(roi_align):
    box = rois([0, 1, 1, 1.5, 1.5])
    # Legacy: the roi grows to 1 px from (1, 1), one sample at its centre (1.5, 1.5): 15 + 1.5.
    assert roi_align(ramp(8, 8), box, (1, 1), 1.0, -1, False).item() == pytest.approx(16.5)
    # aligned: (0.5, 0.5) to (1, 1), one sample at (0.75, 0.75): 7.5 + 0.75.
    assert roi_align(ramp(8, 8), box, (1, 1), 1.0, -1, True).item() == pytest.approx(8.25)


def test_sampling_ratio_fixed_and_adaptive_per_roi(roi_align):
    image, box = squares(8), rois([0, 0, 0, 4, 1])  # one bin over x 0..4
    assert roi_align(image, box, (1, 1), 1.0, 1, False).item() == pytest.approx(4.0)  # x = 2
    assert roi_align(image, box, (1, 1), 1.0, 2, False).item() == pytest.approx(5.0)  # x = 1, 3: (1 + 9) / 2
    # Adaptive: ceil(4 / 1) = 4 samples, x = 0.5, 1.5, 2.5, 3.5: (0.5 + 2.5 + 6.5 + 12.5) / 4.
    for adaptive in (0, -1):
        assert roi_align(image, box, (1, 1), 1.0, adaptive, False).item() == pytest.approx(5.5)
    # Rois of 4, 2, 1 and 2 px in one call: 4, 2, 1 and 2 samples each.
    several = rois([0, 0, 0, 4, 1], [0, 0, 0, 2, 1], [0, 0, 0, 1, 1], [0, 1, 0, 3, 1])
    pooled = roi_align(image, several, (1, 1), 1.0, -1, False)
    assert pooled.flatten().tolist() == pytest.approx([5.5, (0.5 + 2.5) / 2, 0.5, (2.5 + 6.5) / 2])


def test_samples_past_the_border(roi_align):
    """A sample more than a pixel outside the 4 x 4 image reads 0 (and still counts in the average); one within a
    pixel reads the border. All rois span y 0..1 with 2 samples, y = 0.25, 0.75, adding 10 y = 2.5, 7.5."""
    image = ramp(4, 4)
    outside = roi_align(image, rois([0, 3, 0, 5, 1], [0, -2, 0, 0, 1]), (1, 1), 1.0, 2, False).flatten()
    # x 3.5 reads x = 3, x 4.5 reads 0: (2.5 + 3 + 7.5 + 3) / 4. x -1.5 reads 0, x -0.5 reads x = 0: (2.5 + 7.5) / 4.
    assert outside.tolist() == pytest.approx([4.0, 2.5])
    # Two bins over x 2..6: x 2.5 and 3.5 (reads 3); then x 4.5 and 5.5, all 0.
    two_bins = roi_align(image, rois([0, 2, 0, 6, 1]), (1, 2), 1.0, 2, False)
    assert two_bins.flatten().tolist() == pytest.approx([7.75, 0])
    # Exactly a pixel out (x = -1, x = 4) still reads the border: 10 * 0.5 + 0 and 10 * 0.5 + 3.
    edges = roi_align(image, rois([0, -1.5, 0, -0.5, 1], [0, 3.5, 0, 4.5, 1]), (1, 1), 1.0, 1, False).flatten()
    assert edges.tolist() == pytest.approx([5.0, 8.0])


def test_rois_read_their_own_image_and_every_channel(roi_align):
    image = ramp(8, 8).expand(2, 2, 8, 8) + 100 * torch.arange(2.)[:, None, None, None] \
        + 1000 * torch.arange(2.)[None, :, None, None]
    pooled = roi_align(image, rois([1, 1, 2, 5, 4], [0, 1, 2, 5, 4]), (2, 2), 1.0, 2, False)
    centres = torch.tensor([[27., 29], [37, 39]])
    expected = torch.stack([torch.stack([centres + 100, centres + 1100]), torch.stack([centres, centres + 1000])])
    torch.testing.assert_close(pooled, expected)
    assert roi_align(image, torch.zeros(0, 5), (2, 2), 1.0, 2, False).shape == (0, 2, 2, 2)


def test_roi_align_gradient(roi_align):
    # One sample at (y 2.5, x 1.5) spreads the gradient a quarter to each of its four pixels.
    image = torch.zeros(1, 1, 5, 5, requires_grad=True)
    roi_align(image, rois([0, 1, 2, 2, 3]), (1, 1), 1.0, 1, False).sum().backward()
    expected = torch.zeros(5, 5)
    expected[2:4, 1:3] = 0.25
    torch.testing.assert_close(image.grad[0, 0], expected)

    boxes = torch.tensor([[0, 0.5, 1.0, 4.5, 3.0], [1, -1.5, 2.0, 3.0, 6.5], [0, 2.2, 0.3, 2.9, 4.1]],
                         dtype=torch.float64)
    features = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for sampling_ratio, aligned in [(-1, False), (2, True), (0, True)]:
        assert torch.autograd.gradcheck(
            lambda x: roi_align(x, boxes, (2, 3), 1.0, sampling_ratio, aligned), (features,))


def test_reduced_precision_input_is_pooled_in_float32():
    image = ramp(8, 8).bfloat16()
    pooled = torchvision_ops.roi_align(image, rois([0, 1, 2, 5, 4]).bfloat16(), 1.0, 2, 2, 2, False)
    assert pooled.dtype == torch.bfloat16
    assert pooled[0, 0].tolist() == [[27, 29], [37, 39]]  # integers below 256: exact in bfloat16


def test_multi_scale_roi_align_finds_the_level_and_its_scale(torchvision):
    # A 16 x 16 image with maps at 1/2 and 1/4: small boxes go to the finer one, at scale 1/2.
    features = {"fine": ramp(8, 8), "coarse": torch.zeros(1, 1, 4, 4)}
    pooler = torchvision.ops.MultiScaleRoIAlign(["fine", "coarse"], output_size=2, sampling_ratio=2)
    pooled = pooler(features, [torch.tensor([[2., 4, 10, 8]])], [(16, 16)])
    assert_values(pooled[0, 0], [[27, 29], [37, 39]])


# D overlaps A with IoU 50 / 150 = 1/3 and B with 25 / 125 = 0.2; A and B overlap with IoU 50 / 100 = 0.5; C alone.
BOXES = torch.tensor([[0., 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [5, 0, 15, 10]])  # A, B, C, D
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.95])


@pytest.mark.parametrize("threshold, kept", [
    (0.5, [3, 0, 1, 2]),  # IoU must exceed the threshold: A keeps B at exactly 0.5
    (0.4, [3, 0, 2]),  # A suppresses B
    (0.3, [3, 1, 2]),  # D suppresses A, and a suppressed A no longer suppresses B
    (0.1, [3, 2]),  # D suppresses A and B
])
def test_nms_is_greedy_by_score(nms, threshold, kept):
    result = nms(BOXES, SCORES, threshold)
    assert result.dtype == torch.long and result.tolist() == kept


def test_nms_ties_and_empty_input(nms):
    twins = torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]])
    kept = nms(twins, torch.tensor([0.5, 0.5, 0.4]), 0.5).tolist()
    assert len(kept) == 2 and kept[0] in (0, 1) and kept[1] == 2  # one twin; which one is not specified
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.shape == (0,)


def test_our_nms_breaks_ties_by_index():
    twins = torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1]])
    assert torchvision_ops.nms(twins, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]


def test_batched_nms_suppresses_within_a_class_only(torchvision):
    same = torch.tensor([[0., 0, 10, 10]] * 3)
    kept = torchvision.ops.batched_nms(same, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert kept.tolist() == [0, 1]
    nothing = torchvision.ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert nothing.numel() == 0


def test_import_is_idempotent_and_keeps_compiled_kernels(torchvision):
    assert torchvision_ops.import_torchvision() is torchvision
    compiled = sys.modules["torchvision.extension"]._has_ops()
    assert (torchvision_ops._fallback is None) == compiled  # ours only where torchvision's could not load


def test_a_fresh_process_warns_once_and_only_without_compiled_kernels():
    script = ("import sys, warnings\n"
              "from spatialssl.detection.torchvision_ops import import_torchvision\n"
              "from spatialssl.errors import SpatialSSLWarning\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    import_torchvision(), import_torchvision()\n"
              "ours = [w for w in caught if issubclass(w.category, SpatialSSLWarning)]\n"
              "print(sys.modules['torchvision.extension']._has_ops(), len(ours))\n")
    compiled, warnings = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                        check=True).stdout.split()
    assert int(warnings) == (0 if compiled == "True" else 1)


def test_missing_torchvision_names_the_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "torchvision" else find_spec(name, *args))
    with pytest.raises(MissingPackage, match=r'pip install "spatialssl\[detection\]"'):
        torchvision_ops.import_torchvision()
