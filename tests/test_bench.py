"""The conventional comparison path: same layouts as our samplers, and the bench runs."""
import torch

from spatialssl.data import make_demo_images
from spatialssl.samplers import BoxSampler, PatchSampler, ViewSampler
from spatialssl.studies.bench import bench, format_rows
from spatialssl.studies.conventional import ConventionalDataset, collate

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_conventional_batches_have_our_samplers_layouts():
    images = make_demo_images(6, seed=0).images
    g = torch.Generator().manual_seed(0)
    sr = collate([ConventionalDataset(images, "sr", MEAN, STD, views=4, patches=2, patch_size=16)[i] for i in range(6)])
    patches, centres = PatchSampler(2, 16, MEAN, STD)(images, g)
    assert sr["views"].shape == ViewSampler(4, MEAN, STD)(images, g).shape == (24, 3, 32, 32)
    assert sr["patches"].shape == patches.shape and sr["centres"].shape == centres.shape == (2, 6, 2)
    first, second = sr["centres"][0] * 32, sr["centres"][1] * 32
    assert ((first - second).abs().max(1).values >= 16).all()  # the first two patches never overlap
    part = collate([ConventionalDataset(images, "part", MEAN, STD, part_patch=4, part_tokens=64)[i] for i in range(6)])
    ours, boxes = BoxSampler("scale", 4, 64, MEAN, STD)(images, g)
    assert part["patches"].shape == ours.shape and part["boxes"].shape == boxes.shape
    w, h = part["boxes"][..., 2], part["boxes"][..., 3]
    assert (w >= 2).all() and (w <= 8).all() and (h >= 2).all() and (h <= 8).all()
    assert torch.equal(sr["images"], images)


def test_bench_times_both_paths_on_the_same_model():
    rows = bench(make_demo_images(16, seed=1).images, ["rr"], steps=1, warmup=1, workers=0, batch=8, device="cpu")
    row = rows[0]
    assert row["ours"]["images_per_s"] > 0 and row["conventional"]["images_per_s"] > 0
    assert row["ratio"] == row["ours"]["images_per_s"] / row["conventional"]["images_per_s"]
    assert 0 <= row["ours"]["outside_share"] < 1 and 0 < row["conventional"]["outside_share"] < 1
    assert "RR, K=4" in format_rows(rows)


def test_bench_reads_shards_and_streamed_folders_as_their_first_images(tmp_path):
    from conftest import write_shape_splits

    from spatialssl.cli import main
    from spatialssl.data.stream import stream_images
    from spatialssl.studies.bench import bench_images

    folder = write_shape_splits(tmp_path / "shapes")
    assert main(["shard", "--data", str(folder), "--out", str(tmp_path / "shards"), "--no-progress"]) == 0
    streamed = stream_images(folder, "train", 32, workers=0).images_at(range(20))
    assert torch.equal(bench_images(str(tmp_path / "shards"), None, 20), streamed)
    assert torch.equal(bench_images(str(folder), 32, 20), streamed)
    assert bench_images(str(folder), None, 20).shape == (56, 3, 32, 32)  # read whole at its own size
