"""Detection data: the generated shapes set read back pixel for pixel, letterboxing of a non-square image,
one DataError naming the culprit for each kind of bad COCO file, COCO AP, and results mapped back to the
original images."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from spatialssl.detection import coco
from spatialssl.detection.coco import read_coco
from spatialssl.detection.coco_eval import coco_scores, to_coco_results
from spatialssl.detection.generated import MIN_VISIBLE, write_shapes
from spatialssl.detection.rasterise import fill_polygons
from spatialssl.errors import DataError, MissingPackage

RED = (220, 20, 20)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes"), train=2, val=12, size=64, seed=0)


def ground_truth(folder, split="val") -> dict:
    return json.loads((folder / "annotations" / f"instances_{split}.json").read_text())


def write_coco(root, annotations: list, images=None, folder="val", width=80, height=40):
    """One ``width`` x ``height`` grey image with a red 20 x 20 square at (20, 10), and ``annotations``."""
    pixels = np.full((height, width, 3), 90, dtype=np.uint8)
    pixels[10:30, 20:40] = RED
    (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / folder / "a.png")
    data = {"images": images or [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
            "annotations": annotations, "categories": [{"id": 7, "name": "square"}, {"id": 3, "name": "other"}]}
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root


SQUARE = {"id": 5, "image_id": 1, "category_id": 7, "bbox": [20, 10, 20, 20], "area": 400, "iscrowd": 0,
          "segmentation": [[20, 10, 40, 10, 40, 30, 20, 30]]}


def test_generated_boxes_and_masks_cover_the_drawn_shapes(shapes):
    data = read_coco(shapes, "val", image_size=64, masks=True)  # scale 1: the pixels as written
    truth = ground_truth(shapes)
    assert data.classes == ["rectangle", "ellipse", "triangle"] and data.category_ids == [1, 2, 3]
    assert data.scales.tolist() == [1.0] * 12 and data.image_ids.tolist() == list(range(1, 13))
    targets = data.labels
    for i, image_id in enumerate(data.image_ids.tolist()):
        objects = [a for a in truth["annotations"] if a["image_id"] == image_id]
        assert 1 <= len(objects) == int(targets.present[i].sum())
        pixels = data.images[i].permute(1, 2, 0).numpy()
        covered = np.zeros((64, 64), dtype=bool)
        for j in reversed(range(len(objects))):  # the last drawn shape is on top
            x, y, w, h = objects[j]["bbox"]
            assert targets.boxes[i, j].tolist() == [x, y, x + w, y + h]
            assert data.category_ids[int(targets.classes[i, j])] == objects[j]["category_id"]
            mask = targets.masks[i, j].numpy().astype(bool)
            rows, cols = np.nonzero(mask)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)  # tight box
            visible = mask & ~covered
            assert visible.sum() >= MIN_VISIBLE * mask.sum()
            assert len(np.unique(pixels[visible], axis=0)) == 1  # one solid colour: the shape drawn there
            covered |= mask
        assert len(np.unique(pixels[~covered], axis=0)) > 10  # the background is noise, not a shape's colour
    assert not targets.masks[~targets.present].any()


def test_generated_files_are_the_same_for_the_same_seed(tmp_path):
    first, second, other = (write_shapes(tmp_path / name, 3, 2, size=32, seed=seed)
                            for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert ground_truth(first, "train") == ground_truth(second, "train") != ground_truth(other, "train")
    assert (first / "val" / "000002.png").read_bytes() == (second / "val" / "000002.png").read_bytes()


@pytest.mark.parametrize("folder", ["val", "val2017"])
def test_a_non_square_image_is_letterboxed_top_left(tmp_path, folder):
    data = read_coco(write_coco(tmp_path, [SQUARE], folder=folder), "val", image_size=40, masks=True)
    assert data.scales.tolist() == [0.5] and data.sizes.tolist() == [[40, 80]]
    assert data.labels.boxes[0, 0].tolist() == [10, 5, 20, 15]
    assert data.labels.classes[0].tolist() == [1] and data.category_ids == [3, 7]  # contiguous in id order
    assert data.classes == ["other", "square"]
    canvas = data.images[0]
    assert canvas[:, 7:13, 12:18].permute(1, 2, 0).reshape(-1, 3).tolist() == [list(RED)] * 36
    assert not canvas[:, 20:].any() and canvas[:, :20].all()  # the image's 40 x 20 on top, zeros below
    mask = data.labels.masks[0, 0]
    assert mask[5:15, 10:20].all() and mask.sum() == 100


def test_crowd_regions_are_left_out_and_images_without_objects_kept(tmp_path):
    crowd = {**SQUARE, "id": 6, "iscrowd": 1, "segmentation": {"size": [40, 80], "counts": [1000, 200, 2000]}}
    images = [{"id": 1, "file_name": "a.png", "width": 80, "height": 40},
              {"id": 2, "file_name": "a.png", "width": 80, "height": 40}]
    data = read_coco(write_coco(tmp_path, [SQUARE, crowd], images=images), "val", image_size=40)
    assert data.labels.present.sum(dim=1).tolist() == [1, 0] and data.labels.masks is None


def test_with_masks_objects_without_a_segmentation_are_left_out_and_a_file_without_any_refused(tmp_path):
    bare = {key: value for key, value in SQUARE.items() if key != "segmentation"}
    with pytest.warns(UserWarning, match=r"1 annotations \(ids \[6\]\) have no segmentation"):
        data = read_coco(write_coco(tmp_path, [SQUARE, {**bare, "id": 6}]), "val", image_size=40, masks=True)
    assert data.labels.present.sum().item() == 1
    with pytest.raises(DataError, match="holds no segmentations; read it with masks off"):
        read_coco(write_coco(tmp_path, [bare]), "val", image_size=40, masks=True)
    assert read_coco(tmp_path, "val", image_size=40).labels.present.sum().item() == 1


def test_rle_segmentations_decode_as_pycocotools_encodes_them(tmp_path):
    drawn = np.zeros((40, 80), dtype=np.uint8)
    drawn[12:25, 22:37] = 1
    drawn[14, 30] = 0
    encoded = mask_utils.encode(np.asfortranarray(drawn))
    rle = {"size": [40, 80], "counts": encoded["counts"].decode()}
    data = read_coco(write_coco(tmp_path, [{**SQUARE, "segmentation": rle}]), "val", image_size=80, masks=True)
    assert np.array_equal(data.labels.masks[0, 0, :40].numpy(), drawn)


def test_polygon_masks_are_pycocotools_own_and_far_reaching_ones_are_filled_by_ours(tmp_path):
    slanted = [5.3, 5.7, 40.2, 5.1, 52.4, 31.8, 12.0, 25.5, 20.0, 15.0]
    square = {**SQUARE, "segmentation": [slanted]}
    data = read_coco(write_coco(tmp_path, [square]), "val", image_size=80, masks=True)  # scale 1
    theirs = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([slanted], 40, 80)))
    assert np.array_equal(data.labels.masks[0, 0, :40].numpy(), theirs)
    halved = read_coco(tmp_path, "val", image_size=40, masks=True)  # the polygon scaled, filled at 20 x 40
    scaled = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[v / 2 for v in slanted]], 20, 40)))
    assert np.array_equal(halved.labels.masks[0, 0, :20].numpy(), scaled)
    far = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 1e8, 30.0]  # one vertex 1e8 px away: ours, not pycocotools' alloc
    data = read_coco(write_coco(tmp_path, [{**SQUARE, "segmentation": [far]}]), "val", image_size=80, masks=True)
    assert np.array_equal(data.labels.masks[0, 0, :40].numpy(), fill_polygons([far], 40, 80).astype(np.uint8))


def test_our_polygon_filling_is_close_to_pycocotools():
    polygon = [5.3, 5.7, 40.2, 5.1, 52.4, 31.8, 12.0, 25.5, 20.0, 15.0]
    ours = fill_polygons([polygon], 40, 60)
    theirs = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon], 40, 60))).astype(bool)
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.97 and ours.sum() > 300


def without(key):
    return lambda data: data.pop(key)


def annotate(**changes):
    return lambda data: data["annotations"][0].update(changes)


@pytest.mark.parametrize("damage, culprit", [
    (annotate(category_id=99), "annotation 5 (image 1) has category 99"),
    (annotate(image_id=42), "annotation 5 points at image 42"),
    (annotate(bbox=[20, 10, 0, 20]), "annotation 5 (image 1) has bbox [20, 10, 0, 20]"),
    (annotate(bbox=[20, 10, 20]), "annotation 5 (image 1) has bbox [20, 10, 20]"),
    (annotate(bbox=[20, 10, float("nan"), 20]), "annotation 5 (image 1) has bbox [20, 10, NaN, 20]"),
    (annotate(bbox=[70, 10, 20, 20]), "annotation 5 (image 1) has bbox [70, 10, 20, 20], outside"),
    (annotate(segmentation=[[20, 10, 40, 10, 40]]), "annotation 5 (image 1) has a polygon"),
    (annotate(segmentation={"size": [40, 80], "counts": [5, 5]}), "annotation 5 (image 1) has a malformed RLE"),
    (annotate(iscrowd=2), "annotation 5 (image 1) has iscrowd 2"),
    (lambda data: data["annotations"].append(dict(SQUARE)), "annotation id 5 twice"),
    (lambda data: data["images"].append(dict(data["images"][0])), "image id 1 twice"),
    (lambda data: data["images"][0].update(file_name="../a.png"), "image 1 has file_name \"../a.png\""),
    (lambda data: data["images"][0].update(file_name="b.png"), "missing image file"),
    (lambda data: data["images"][0].update(width=81), "(id 1) is 80 x 40 but"),
    (without("annotations"), "has no 'annotations' list"),
    (lambda data: data.update(categories=[]), "lists no categories"),
])
def test_a_bad_coco_file_gives_one_data_error_naming_the_culprit(tmp_path, damage, culprit):
    root = write_coco(tmp_path, [SQUARE])
    path = root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        read_coco(root, "val", image_size=40, masks=True)
    message = str(info.value)
    assert culprit in message and "\n" not in message
    assert str(path) in message or "image file" in message or "a.png" in message


@pytest.mark.parametrize("content, culprit", [(b"[1, 2]", "holds a JSON list"), (b"{'images':", "not valid JSON"),
                                              (b"\xff\xfe", "not UTF-8")])
def test_a_json_that_is_no_coco_file_is_refused(tmp_path, content, culprit):
    root = write_coco(tmp_path, [SQUARE])
    (root / "annotations" / "instances_val.json").write_bytes(content)
    with pytest.raises(DataError, match=culprit):
        read_coco(root, "val", image_size=40)


def test_an_undecodable_image_and_a_missing_folder_are_named(tmp_path):
    root = write_coco(tmp_path, [SQUARE])
    (root / "val" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode image .*a\.png"):
        read_coco(root, "val", image_size=40)
    with pytest.raises(DataError, match=r"no .*instances_train\.json or .*instances_train2017\.json"):
        read_coco(root, "train", image_size=40)


def test_a_set_too_large_to_hold_is_refused_before_decoding_counting_every_copy(tmp_path, monkeypatch):
    root = write_coco(tmp_path, [SQUARE])
    needed = coco.coco_split(root, "val", image_size=40, masks=True).in_memory_bytes(batch=2)
    assert needed == 3 * 1600 + (1 + 4 * 2) * 1600  # the canvas, its mask, and the jitter's float copy of a batch
    monkeypatch.setattr(coco, "MAX_IN_MEMORY_BYTES", needed - 1)
    with pytest.raises(DataError, match=r"would take .* GiB \(1 images of 3 x 40 x 40 bytes, 1 masks .*data.stream=true"):
        read_coco(root, "val", image_size=40, masks=True, batch_size=2)
    monkeypatch.setattr(coco, "MAX_IN_MEMORY_BYTES", needed)
    assert len(read_coco(root, "val", image_size=40, masks=True, batch_size=2)) == 1


def test_ground_truth_as_predictions_scores_100_and_shifted_boxes_less(shapes):
    truth, annotation_file = ground_truth(shapes), shapes / "annotations" / "instances_val.json"
    exact = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
              "segmentation": a["segmentation"]} for a in truth["annotations"]]
    scores = coco_scores(exact, annotation_file, iou_types=("bbox", "segm"))
    assert scores["AP"] == scores["AP50"] == scores["mask_AP"] == 100.0
    shifted = [{**p, "bbox": [p["bbox"][0] + 0.3 * p["bbox"][2], *p["bbox"][1:]]} for p in exact]
    worse = coco_scores(shifted, annotation_file)
    assert worse["AP"] < 60 and worse["AP50"] == 100.0  # IoU 0.54: a hit at 0.5, a miss from 0.55 on
    assert coco_scores([], annotation_file, iou_types=("bbox", "segm")) == dict.fromkeys(
        ["AP", "AP50", "AP75", "APs", "APm", "APl", "mask_AP", "mask_AP50", "mask_AP75"], 0.0)


def test_read_targets_as_detections_score_100_through_to_coco_results(shapes):
    data = read_coco(shapes, "val", image_size=96, masks=True)  # upscaled 1.5x: the maths must invert it
    detections = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                   "masks": t["masks"][:, None].float()} for t in data.labels.as_torchvision()]
    results = to_coco_results(detections, data.image_ids, data.scales, data.category_ids, sizes=data.sizes)
    scores = coco_scores(results, data.annotations, iou_types=("bbox", "segm"))
    assert scores["AP"] == 100.0 and scores["mask_AP"] > 95


def test_to_coco_results_inverts_the_letterbox(tmp_path):
    data = read_coco(write_coco(tmp_path, [SQUARE]), "val", image_size=40, masks=True)
    masks = torch.zeros(1, 1, 40, 40)
    masks[0, 0, 5:15, 10:20] = 0.9
    masks[0, 0, 20:] = 1.0  # the padding below the image: no pixel of it
    detection = {"boxes": torch.tensor([[10.0, 5.0, 20.0, 15.0]]), "labels": torch.tensor([2]),
                 "scores": torch.tensor([0.8]), "masks": masks}
    [result] = to_coco_results([detection], data.image_ids, data.scales, data.category_ids, sizes=data.sizes)
    assert result["image_id"] == 1 and result["category_id"] == 7 and result["bbox"] == SQUARE["bbox"]
    back = mask_utils.decode({**result["segmentation"], "counts": result["segmentation"]["counts"].encode()})
    assert back.shape == (40, 80) and back[10:30, 20:40].all() and back.sum() == 400
    with pytest.raises(ValueError, match="pass sizes"):
        to_coco_results([detection], data.image_ids, data.scales, data.category_ids)


def test_scoring_without_pycocotools_says_which_extra_installs_it(shapes, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)  # import now raises ImportError
    with pytest.raises(MissingPackage, match=r"spatialssl\[detection\]"):
        coco_scores([], shapes / "annotations" / "instances_val.json")


STREAM_PEAK = r"""
import resource, sys
from spatialssl.detection.coco import coco_split
from spatialssl.detection.coco_stream import CocoStream

stream = CocoStream(coco_split(sys.argv[1], "train", image_size=64, masks=True))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = sum(len(images) for images, _ in stream.batches(range(len(stream)), 32, False))
assert seen == len(stream)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, stream.memory_bound(32))
"""


def test_a_coco_stream_holds_the_batches_in_flight_not_the_set(tmp_path):
    """Peak memory while reading every image with its masks grows by the batches in flight, the same for 10k
    images as for 1k; the set held whole would take (3 + 4 masks) x 64 x 64 bytes an image: 287 MB for 10k."""
    import subprocess

    base = write_shapes(tmp_path / "base", train=1000, val=1, size=32, seed=0)
    truth = ground_truth(base, "train")
    for count in (1000, 10000):  # the 1k images listed again under new ids: any number of images, written fast
        root = tmp_path / str(count)
        (root / "annotations").mkdir(parents=True)
        (root / "train").symlink_to(base / "train")
        copies = range(count // 1000)
        images = [{**image, "id": image["id"] + 1000 * c} for c in copies for image in truth["images"]]
        annotations = [{**a, "id": a["id"] + 10 ** 6 * c, "image_id": a["image_id"] + 1000 * c}
                       for c in copies for a in truth["annotations"]]
        (root / "annotations" / "instances_train.json").write_text(json.dumps({**truth, "images": images,
                                                                               "annotations": annotations}))
    grown = {}
    for count in (1000, 10000):
        run = subprocess.run([sys.executable, "-c", STREAM_PEAK, str(tmp_path / str(count))], capture_output=True,
                             text=True, check=True)
        grown[count], bound = map(int, run.stdout.split())
    assert grown[10000] < grown[1000] + 16 * 2**20, grown
    assert grown[10000] < 10000 * 7 * 64 * 64 / 4, grown
    assert bound == 2 * 32 * (3 + 4) * 64 * 64  # no workers: the batch being made and the one being used


def test_a_coco_streams_statistics_and_ids_are_those_of_the_set_held_whole(shapes):
    from spatialssl.detection.coco_stream import CocoStream

    whole = read_coco(shapes, "val", image_size=64)
    stream = CocoStream(coco.coco_split(shapes, "val", image_size=64))
    (mean, std), (whole_mean, whole_std) = stream.mean_std(), whole.mean_std()  # 12 images: the sample is all
    assert mean == pytest.approx(whole_mean, abs=1e-9) and std == pytest.approx(whole_std, abs=1e-9)
    assert torch.equal(stream.image_ids, whole.image_ids) and torch.equal(stream.sizes, whole.sizes)
    assert torch.equal(stream.scales, whole.scales)
