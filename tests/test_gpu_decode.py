"""data.decode=gpu on the CPU: the stream's path with nvJPEG stood in for by Pillow (torchvision's compiled image
operations do not load on this CPU torch; the real decoder runs in tests/test_cuda.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from spatialssl.canvas import Canvases
from spatialssl.data import gpu_decode
from spatialssl.data.stream import stream_images
from spatialssl.errors import DataError

SIZES = [(48, 36), (36, 52), (60, 40), (40, 40), (90, 60)]  # (width, height)


def stand_in_nvjpeg(encoded: list, grey: bool) -> list:
    """torchvision.io.decode_jpeg's contract (a list of uint8 byte tensors in, C x H x W uint8 out, RuntimeError
    for what it cannot decode), by Pillow; CMYK refused as nvJPEG may."""
    out = []
    for data in encoded:
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
                if img.mode == "CMYK":
                    raise RuntimeError("unsupported colour space")
                pixels = np.asarray(img.convert("L" if grey else "RGB"))
        except OSError as err:
            raise RuntimeError(f"decode failed: {err}") from None
        out.append(torch.from_numpy(pixels.copy()).reshape(*pixels.shape[:2], -1).permute(2, 0, 1))
    return out


def write_mixed(folder, count: int = 10) -> None:
    """JPEGs of five shapes, a PNG and a CMYK JPEG: what a real folder holds."""
    rng = np.random.default_rng(0)
    (folder / "a").mkdir(parents=True)
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        coarse = Image.fromarray(rng.integers(0, 255, (5, 5, 3)).astype(np.uint8))  # a smooth, photo-like image
        coarse.resize((width, height), Image.BICUBIC).save(folder / "a" / f"{i}.jpg", quality=95)
    Image.fromarray(np.full((30, 50, 3), 90, np.uint8)).save(folder / "a" / "png.png")
    Image.fromarray(np.full((40, 30, 3), 160, np.uint8)).convert("CMYK").save(folder / "a" / "cmyk.jpg")


def streams(folder, resize: str, channels=None):
    pillow = stream_images(folder, "train", 16, resize, channels, workers=0, source_size=48)
    gpu = stream_images(folder, "train", 16, resize, channels, workers=0, source_size=48)
    gpu.decoder = stand_in_nvjpeg
    return pillow, gpu


@pytest.mark.parametrize("resize", ["short_side", "squash", "whole"])
def test_gpu_decoding_gives_pillows_images_up_to_resampling(tmp_path, resize):
    write_mixed(tmp_path)
    pillow, gpu = streams(tmp_path, resize)
    (ours, index), = gpu.batches(range(len(gpu)), len(gpu), False)
    (theirs, their_index), = pillow.batches(range(len(pillow)), len(pillow), False)
    assert torch.equal(index, their_index)
    if resize == "whole":
        assert isinstance(ours, Canvases) and torch.equal(ours.extent, theirs.extent)
        ours, theirs = ours.pixels, theirs.pixels
    assert ours.shape == theirs.shape == (len(pillow), 3, *ours.shape[-2:]) and ours.dtype == torch.uint8
    difference = (ours.float() - theirs.float()).abs()
    assert difference.mean() < 3  # antialiased bilinear both, Pillow's after reduced-size decoding
    names = [pillow.files.describe(i) for i in range(len(pillow))]
    for i, name in enumerate(names):
        if name.endswith(("png.png", "cmyk.jpg")):  # Pillow decodes both in either path: the same pixels
            assert torch.equal(ours[i], theirs[i]), name


def test_gpu_decoding_makes_grey_images_with_one_channel(tmp_path):
    write_mixed(tmp_path)
    pillow, gpu = streams(tmp_path, "short_side", channels=1)
    (ours, _), = gpu.batches(range(len(gpu)), len(gpu), False)
    (theirs, _), = pillow.batches(range(len(pillow)), len(pillow), False)
    assert ours.shape == theirs.shape and ours.shape[1] == 1
    assert (ours.float() - theirs.float()).abs().mean() < 3


def test_a_corrupt_jpeg_is_named_or_skipped_with_gpu_decoding(tmp_path):
    write_mixed(tmp_path, count=4)
    (tmp_path / "a" / "broken.jpg").write_bytes((tmp_path / "a" / "0.jpg").read_bytes()[:200])
    _, gpu = streams(tmp_path, "short_side")
    with pytest.raises(DataError, match="broken.jpg"):
        list(gpu.batches(range(len(gpu)), len(gpu), False))
    gpu.skip_corrupt = True
    with pytest.warns(UserWarning, match="broken.jpg"):
        (images, index), = gpu.batches(range(len(gpu)), len(gpu), False)
    assert len(images) == len(gpu) and gpu.take_skipped() == 1


def test_workers_hand_over_jpeg_bytes_and_decode_the_rest(tmp_path):
    write_mixed(tmp_path, count=1)
    pillow, _ = streams(tmp_path, "short_side")
    items = gpu_decode.Encoded(pillow.files, pillow.resize)
    kinds = {pillow.files.describe(i).rsplit("/", 1)[-1]: items[i] for i in range(len(items))}
    data, _, extent = kinds["0.jpg"]
    assert extent is None and data.dtype == torch.uint8 and data.ndim == 1
    assert bytes(data[:3].tolist()) == gpu_decode.JPEG_MAGIC
    pixels, _, extent = kinds["png.png"]
    assert pixels.shape == (3, 16, 16) and extent == (16, 16)


def test_without_a_gpu_decoder_the_run_decodes_with_pillow_saying_so_once(tmp_path):
    gpu_decode.device_decoder.cache_clear()
    with pytest.warns(UserWarning) as caught:
        assert gpu_decode.device_decoder() is None
        assert gpu_decode.device_decoder() is None
    assert len(caught) == 1 and "decoding with Pillow" in str(caught[0].message)
