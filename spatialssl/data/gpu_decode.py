"""data.decode=gpu: a stream's JPEGs decoded on the training GPU by nvJPEG (torchvision.io.decode_jpeg, a batch at
a time), its DataLoader workers only reading bytes. Decoding is what bounds an ImageNet run's data path (about
220 JPEGs/s per CPU core with Pillow), and a GPU decodes thousands a second.

Every image is then sized on the device as Pillow's path sizes it (``decode.Resize``: short side and centre crop,
squash, or whole images in their canvases), resized with antialiasing as Pillow's reducing resize. What the GPU
does not decode is decoded by Pillow, so the pixels differ from the Pillow path's by resampling only: a file
that is not a JPEG (decoded by Pillow in the worker), and a JPEG nvJPEG refuses (CMYK, some progressive ones,
a corrupt one, found by decoding its batch one by one), decoded by Pillow in this process, which names the
file if it cannot either. nvJPEG decodes at full size: Pillow's reduced-size decoding (``reduced_decode``) has
no GPU counterpart here.

torchvision is imported only here, when a run asks for it; without it, a CUDA device, or its image operations
(a torchvision build for another torch), the stream decodes with Pillow, saying so in one line."""
from __future__ import annotations

import io
from functools import lru_cache
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError, first_line, warn
from .decode import Resize, Unreadable, as_tensor, decode_sized, orientation
from .readers import to_channels

JPEG_MAGIC = b"\xff\xd8\xff"

Decoder = Callable[[list, bool], list]  # (encoded uint8 tensors, grey) -> C x H x W uint8 tensors on the device


@lru_cache(maxsize=None)
def device_decoder() -> Optional[Decoder]:
    """nvJPEG on this process's CUDA device, through torchvision, or None (with one warning saying why: asked
    once per process, for all its streams)."""
    if not torch.cuda.is_available():
        warn("data.decode=gpu needs a CUDA device; decoding with Pillow in the DataLoader workers")
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
        device = torch.device("cuda", torch.cuda.current_device())
        decode_jpeg([_tiny_jpeg()], device=device)  # loads its compiled operations, or shows they cannot load
    except Exception as err:  # ImportError, or a torchvision whose compiled image ops do not load
        warn(f"data.decode=gpu needs torchvision's nvJPEG decoding ({type(err).__name__}: {first_line(err)}); "
             "decoding with Pillow in the DataLoader workers (pip install torchvision for your torch)")
        return None

    def decode(encoded: list, grey: bool) -> list:
        return decode_jpeg(encoded, mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB, device=device)
    return decode


def _tiny_jpeg() -> torch.Tensor:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


class Encoded(torch.utils.data.Dataset):
    """What a worker hands over with GPU decoding: a JPEG's bytes (uint8), or any other image decoded by Pillow
    as ``decode.Resize`` says, with its index; ``Unreadable`` for what cannot be read (or, not a JPEG, decoded)."""

    def __init__(self, files, size: Resize):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            data = self.files.read(index)
            if data.startswith(JPEG_MAGIC) and upright_as_stored(data):  # nvJPEG ignores EXIF orientation
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), index, None
            pixels, extent = decode_sized(self.files.describe(index), data, self.size)
        except DataError as err:
            return Unreadable(str(err))
        return as_tensor(pixels), index, extent


def upright_as_stored(data: bytes) -> bool:
    """Whether a JPEG's EXIF says its pixels are seen as stored (most files); a turned one goes to Pillow, which
    turns it (``decode.upright``). Reads the header only."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return orientation(img) == 1
    except Exception:  # not readable by Pillow either: nvJPEG may still say why, as for any JPEG
        return True


def as_list(items: list) -> list:
    """The workers' items as they are: they are decoded together in the training process (``decode_items``)."""
    return items


def decode_items(items: list, decoder: Decoder, size: Resize, channels: int, files) -> list:
    """The items with their JPEGs decoded by ``decoder`` in one batch and sized on its device: (C x S x S uint8,
    index, extent tensor) each, or ``Unreadable``."""
    encoded = [i for i, item in enumerate(items) if not isinstance(item, Unreadable) and item[2] is None]
    decoded = _decode_each(decoder, [items[i][0] for i in encoded], channels == 1)
    device = next((image.device for image in decoded if image is not None), None)
    out = list(items)
    for position, image in zip(encoded, decoded):
        index = items[position][1]
        try:
            if image is None:  # refused by nvJPEG: Pillow decodes it or names it
                pixels, extent = decode_sized(files.describe(index), items[position][0].numpy().tobytes(), size)
                image = as_tensor(pixels)
            else:
                image, extent = fit(image, size)
            out[position] = (image, index, extent)
        except DataError as err:
            out[position] = Unreadable(str(err))
    return [item if isinstance(item, Unreadable) else _placed(item, channels, device) for item in out]


def _decode_each(decoder: Decoder, encoded: list, grey: bool) -> list:
    """The batch decoded at once, or, where nvJPEG refuses it, one image at a time (None for each it refuses)."""
    if not encoded:
        return []
    try:
        return list(decoder(encoded, grey))
    except RuntimeError:
        pass
    decoded = []
    for data in encoded:
        try:
            decoded.append(decoder([data], grey)[0])
        except RuntimeError:
            decoded.append(None)
    return decoded


def _placed(item: tuple, channels: int, device) -> tuple:
    """An item on the decoding device with ``channels`` channels (Pillow's items came from the CPU as RGB)."""
    image, index, extent = item
    if device is not None:
        image = image.to(device)
    image = to_channels(image[None], channels, "a decoded image")[0]
    return image, index, torch.tensor(extent, dtype=torch.float32)


def fit(image: torch.Tensor, size: Resize) -> tuple:
    """A decoded C x H x W image sized as ``decode.fit`` sizes it, on its device: (image, (height, width) it
    fills)."""
    height, width = image.shape[-2:]
    new_width, new_height = size.scaled(width, height)
    if (new_height, new_width) != (height, width):
        image = _resized(image, new_height, new_width)
    if size.mode == "whole":  # the canvas, its edge repeated past the image (as np.pad's "edge")
        rows = torch.arange(size.canvas, device=image.device).clamp_(max=new_height - 1)
        cols = torch.arange(size.canvas, device=image.device).clamp_(max=new_width - 1)
        return image[:, rows][:, :, cols], (new_height, new_width)
    left, top = size.crop_box(new_width, new_height)
    image = image[:, top:top + size.size, left:left + size.size]
    return image, (size.size, size.size)


def _resized(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear, antialiased when shrinking (as Pillow's resize), rounded back to uint8."""
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                        antialias=True)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8)
