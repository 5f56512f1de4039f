"""No layout is guessed (issue 26): folder readers know theirs (an image 3 px high stays N x C x H x W), an .npz
whose channel axis its shape cannot tell is refused unless data.layout says, and EXIF orientation is applied
when decoding, by Pillow and on the GPU path's fallback alike."""
import io

import numpy as np
import pytest
from PIL import Image

from spatialssl.cli import main
from spatialssl.data.decode import decode_sized
from spatialssl.data.gpu_decode import upright_as_stored
from spatialssl.data.readers import load_images
from spatialssl.errors import DataError


def test_a_folder_of_images_narrower_than_three_pixels_keeps_its_layout(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((7, 2, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = load_images(tmp_path).images
    assert images.shape == (2, 3, 7, 2)  # N x C x H x W: 3 channels of 7 x 2, not 2 channels of 3 x 7


@pytest.mark.parametrize("shape, layout, expected", [
    ((4, 9, 9, 20), None, (4, 20, 9, 9)),  # 20 bands, channels last: only the last axis leaves a square image
    ((4, 20, 9, 9), None, (4, 20, 9, 9)),
    ((4, 32, 32, 3), None, (4, 3, 32, 32)),
    ((4, 3, 32, 32), None, (4, 3, 32, 32)),
    ((4, 3, 5, 3), "nchw", (4, 3, 5, 3)),
    ((4, 3, 5, 3), "nhwc", (4, 3, 3, 5)),
])
def test_an_npz_is_read_as_its_shape_or_data_layout_says(shape, layout, expected, tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros(shape, dtype=np.uint8))
    assert load_images(tmp_path / "x.npz", array_layout=layout).images.shape == expected


def test_an_ambiguous_npz_is_refused_in_one_line(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 3, 5, 3), dtype=np.uint8))  # 3 of 5x3, or 3 of 3x5?
    assert main(["pretrain", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is 4 x 3 x 5 x 3: its channel axis could be the second or the last" in err[0]
    assert "data.layout=nhwc" in err[0]
    with pytest.raises(DataError, match="could be the second or the last"):
        load_images(tmp_path / "x.npz")


def portrait_jpeg() -> bytes:
    """What a phone writes: the pixels stored landscape (8 wide, 4 high, left half white) and EXIF orientation 6
    (turn 90 degrees clockwise to view)."""
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=100)
    return buffer.getvalue()


def test_exif_orientation_is_applied_when_decoding():
    pixels, extent = decode_sized("phone.jpg", portrait_jpeg(), None)
    assert pixels.shape == (8, 4, 3) and extent == (8, 4)  # stands up: 4 wide, 8 high
    top, bottom = pixels[:4].mean(), pixels[4:].mean()
    assert top > 200 and bottom < 50  # the stored left half is on top once turned clockwise
    assert not upright_as_stored(portrait_jpeg())  # so the GPU path hands it to Pillow


def test_an_image_without_orientation_decodes_as_stored():
    buffer = io.BytesIO()
    Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3)).save(buffer, "PNG")
    pixels, _ = decode_sized("plain.png", buffer.getvalue(), None)
    assert np.array_equal(pixels, np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
