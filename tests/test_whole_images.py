"""data.resize=whole: the standard random resized crop, drawn relative to each whole image (its own size and aspect),
through streams, every sampler and the commands; JPEGs decoded at reduced size where the crop allows."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spatialssl import augment
from spatialssl.canvas import Canvases, cut, plain, random_resized_crops
from spatialssl.cli import main
from spatialssl.data.decode import Resize, decode_sized, reduced_decode
from spatialssl.data.stream import stream_images
from spatialssl.errors import ConfigError
from spatialssl.samplers import BoxSampler, PatchSampler, ViewSampler

SIZES = [(48, 36), (36, 52), (60, 40), (40, 40), (90, 60)]  # (width, height): landscape, portrait, square, larger


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def striped(width: int, height: int, red_share: float = 0.1) -> np.ndarray:
    """Blue, with its left ``red_share`` of columns red: what a centre crop of a landscape image never shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 2] = 255
    pixels[:, :max(1, round(width * red_share))] = (255, 0, 0)
    return pixels


def write_whole_splits(root: Path) -> Path:
    """train/ and test/ class folders of JPEGs of five shapes (the demo's shapes, resized)."""
    from spatialssl.data import make_demo_images

    demo = make_demo_images(60, seed=4)
    pixels, labels = demo.images.permute(0, 2, 3, 1).numpy(), demo.labels.numpy() % 3
    for i, (image, label) in enumerate(zip(pixels, labels)):
        folder = root / ("train" if i < 40 else "test") / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize(SIZES[i % len(SIZES)], Image.BILINEAR).save(folder / f"{i}.jpg")
    return root


def test_crop_boxes_of_whole_images_lie_in_each_image_and_follow_torchvision_areas():
    generator = torch.Generator().manual_seed(0)
    height = torch.tensor([30.0, 60.0, 45.0, 20.0]).repeat(500)
    width = torch.tensor([40.0, 20.0, 45.0, 90.0]).repeat(500)
    boxes = augment.sample_crop_boxes(len(height), height, width, (0.2, 1.0), (3 / 4, 4 / 3), generator, "cpu")
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= width + 1e-4).all() and (y0 + h <= height + 1e-4).all()
    share = w * h / (width * height)
    assert share.min() >= 0.2 - 1e-4 and share.max() <= 1 + 1e-4
    aspect = w / h  # in the ratio range, but for the fallback's clamp of an image too narrow or wide for it
    assert ((aspect >= 3 / 4 - 1e-4) & (aspect <= 4 / 3 + 1e-4)).float().mean() > 0.95
    # One image shape: exactly the boxes of that shape given as ints (the same draws).
    same = augment.sample_crop_boxes(8, torch.full((8,), 30.0), torch.full((8,), 40.0), (0.08, 1), (0.5, 2),
                                     torch.Generator().manual_seed(3), "cpu")
    ints = augment.sample_crop_boxes(8, 30, 40, (0.08, 1), (0.5, 2), torch.Generator().manual_seed(3), "cpu")
    torch.testing.assert_close(same, ints)


def test_a_crop_of_a_canvas_is_the_crop_of_the_image_alone():
    image = torch.rand(1, 3, 30, 44)
    canvas = torch.nn.functional.pad(image, (0, 20, 0, 34), mode="replicate")  # 64 x 64, the edge repeated
    boxes = torch.tensor([[0.0, 0.0, 44.0, 30.0], [10.5, 3.25, 20.0, 17.0], [24.0, 10.0, 20.0, 20.0]])
    flip = torch.tensor([False, True, False])
    ours = cut(canvas, boxes, 16, flip, repeats=3)
    alone = augment.crop_resize(image.expand(3, -1, -1, -1), boxes, (16, 16), flip)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=0)


def test_whole_images_decode_with_their_aspect_in_a_canvas_with_their_edge_repeated():
    pixels = (np.random.default_rng(0).random((30, 80, 3)) * 255).astype(np.uint8)
    canvas, extent = decode_sized("a.png", _png(pixels), Resize(16, "whole", 40))
    assert canvas.shape == (40, 40, 3) and extent == (15, 40)  # long side 80 -> 40, never past the canvas
    assert (canvas[15:] == canvas[14:15]).all()  # rows past the image repeat its last row
    small, extent = decode_sized("b.png", _png(pixels[:10, :20]), Resize(16, "whole", 40))
    assert extent == (10, 20) and (small[:10, :20] == pixels[:10, :20]).all()  # never enlarged: pixels as stored


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_large_jpegs_decode_at_reduced_size_where_the_crop_keeps_enough_pixels():
    data = jpeg(striped(2000, 1500))
    with Image.open(io.BytesIO(data)) as img:
        reduced_decode(img, Resize(224, "whole", 448))
        assert img.size == (500, 375)  # 1/4: the smallest DCT scale with a long side >= 448
    with Image.open(io.BytesIO(data)) as img:
        reduced_decode(img, Resize(224))  # short side 224: 1/4 keeps 375 rows, 1/8 would keep 188
        assert img.size == (500, 375)
    with Image.open(io.BytesIO(jpeg(striped(500, 375)))) as img:
        reduced_decode(img, Resize(224, "whole", 448))
        assert img.size == (500, 375)  # no reduction would keep 448
    canvas, extent = decode_sized("big.jpg", data, Resize(224, "whole", 448))
    assert extent == (336, 448) and canvas.shape == (448, 448, 3)
    assert abs(canvas[:336, :448, 0].astype(float).mean() / 255 - 0.1) < 0.02  # still 10% red


def test_views_of_whole_images_see_the_sides_a_centre_crop_drops(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(4):
        Image.fromarray(striped(80, 40)).save(tmp_path / "a" / f"{i}.png")  # 2:1, its left tenth red
    generator = torch.Generator().manual_seed(0)
    sampler = ViewSampler(8, [0.0] * 3, [1.0] * 3, jitter_p=0.0, gray_p=0.0)
    red = {}
    for resize in ("short_side", "whole"):
        stream = stream_images(tmp_path, "train", 32, resize, workers=0, source_size=80)
        (batch, _), = stream.batches(range(4), 4, False)
        views = sampler(batch, generator)
        assert views.shape == (32, 3, 32, 32)
        red[resize] = ((views[:, 0] > 0.5) & (views[:, 2] < 0.5)).float().mean().item()
    assert red["short_side"] == 0  # a centre square of a 2:1 image never shows its left quarter
    assert 0.03 < red["whole"] < 0.2  # crops of the whole image: about a tenth of what they show is red


def test_samplers_that_do_not_crop_and_evaluation_see_the_centre_of_each_whole_image():
    pixels = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    pixels[0, :, 10:30, 0:40] = 200  # image 0: 20 x 40 (height x width) at the top... of rows 10-29
    canvases = Canvases(pixels, torch.tensor([[40.0, 40.0], [20.0, 40.0]]), 10, crop_pct=0.5)
    centre = canvases.centre()
    assert centre.shape == (2, 3, 10, 10) and centre.dtype == torch.uint8
    assert (centre[0] == 200).all()  # the central 20 x 20 of a 40 x 40 image: rows 10-29, all 200
    assert (centre[1] == 0).all()
    assert torch.equal(plain(canvases), centre) and plain(pixels) is pixels
    patches, _ = PatchSampler(2, 4, [0.0] * 3, [1.0] * 3)(canvases, torch.Generator().manual_seed(0))
    assert patches.shape[-2:] == (10, 10)  # cut from the 10 x 10 un-augmented view
    tokens, boxes = BoxSampler("offgrid", 2, 4, [0.0] * 3, [1.0] * 3, scale=None)(canvases, torch.Generator())
    assert tokens.shape == (2, 4, 3, 2, 2) and boxes[..., :2].max() <= 8


def test_finetune_and_pretext_crops_of_whole_images_come_at_the_model_size():
    canvases = Canvases(torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8),
                        torch.tensor([[64.0, 40.0], [30.0, 64.0], [64.0, 64.0]]), 24)
    crops = random_resized_crops(canvases, 2, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 24, 24) and 0 <= crops.min() and crops.max() <= 1
    tokens, boxes = BoxSampler("offgrid", 4, 6, [0.0] * 3, [1.0] * 3)(canvases, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 6, 3, 4, 4) and (boxes[..., :2] <= 20).all()


def test_resize_whole_is_refused_where_images_are_read_whole_and_its_options_without_it(tmp_path, capsys):
    folder = write_whole_splits(tmp_path / "data")
    assert main(["pretrain", "--config", "demo", "--data", str(folder), "--out", str(tmp_path / "r"),
                 "data.resize=whole", "data.image_size=32"]) != 0
    assert "only a stream carries: set data.stream=true" in capsys.readouterr().err
    assert not (tmp_path / "r" / "last.ckpt").exists()
    from spatialssl.data.readers import load_images
    with pytest.raises(ConfigError, match="data.stream=true"):
        load_images(folder, "train", image_size=32, resize="whole")
    from spatialssl.engine.config import load_config
    with pytest.raises(ConfigError, match="data.source_size applies to data.resize=whole"):
        load_config(None, ["data.source_size=64"])
    with pytest.raises(ConfigError, match="needs data.image_size"):
        load_config(None, ["data.resize=whole"])


@pytest.mark.parametrize("recipe", ["sr_cifar10", "part_cifar10"])
def test_whole_images_go_through_pretrain_linear_eval_and_finetune(tmp_path, recipe, capsys):
    folder = write_whole_splits(tmp_path / "data")
    run = tmp_path / "run"
    common = ["data.stream=true", "data.resize=whole", "data.image_size=32", "data.source_size=64",
              "data.crop_pct=0.875", "data.workers=0", "data.mean=null", "data.std=null", "train.batch_size=8"]
    assert main(["pretrain", "--config", recipe, "--data", str(folder), "--out", str(run), "--no-progress",
                 "train.epochs=1", "train.accumulate_steps=2", *common]) == 0
    saved = json.loads((run / "last.json").read_text())["config"]["data"]
    assert saved["resize"] == "whole" and saved["source_size"] == 64
    assert main(["linear-eval", "--checkpoint", str(run), "--data", str(folder), "--epochs", "1"]) == 0
    assert main(["finetune", "--checkpoint", str(run), "--data", str(folder), "--out", str(tmp_path / "ft"),
                 "--no-progress", "--epochs", "1", "finetune.mixup=0", "finetune.cutmix=0",
                 "finetune.randaugment_ops=0", "train.batch_size=8"]) == 0
    assert 0 <= json.loads((tmp_path / "ft" / "finetune.json").read_text())["test_acc"] <= 100
