"""Image bytes: inputs verified and sized for the model; outputs made to fit Discord's limits."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from bot.images import (
    ImageError,
    ImageFile,
    prepare_input_image,
    prepare_uploads,
    sniff_mime,
)

MB = 2**20


def _encoded(size: tuple[int, int], fmt: str = "PNG", *, noise: bool = False) -> bytes:
    image = (
        Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        if noise
        else Image.new("RGB", size, "teal")
    )
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_magic_bytes_decide_the_type_not_the_name() -> None:
    assert sniff_mime(_encoded((8, 8))) == "image/png"
    assert sniff_mime(_encoded((8, 8), "JPEG")) == "image/jpeg"
    assert sniff_mime(_encoded((8, 8), "WEBP")) == "image/webp"
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_mime(b"hello, I am a text file named cat.png") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just text, named .png", "not a PNG, JPEG, WebP or GIF"),
        (_encoded((64, 64))[:60], "damaged or incomplete"),
        (_encoded((64, 64), "JPEG")[:200], "damaged or incomplete"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "damaged or incomplete"),
        (b"\x00" * (21 * MB), "the limit is 20 MB"),
    ],
    ids=["text-file", "truncated-png", "truncated-jpeg", "png-magic-only", "50mb-class"],
)
def test_broken_inputs_are_refused_in_plain_words(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare_input_image(data, max_pixels=1024 * 1024, max_bytes=20 * MB)


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _encoded((5000, 5000))  # tiny as a PNG, 75 MB of pixels once decoded
    with pytest.raises(ImageError, match="5000x5000; the limit is 4096x4096"):
        prepare_input_image(bomb, max_pixels=1024 * 1024, max_bytes=20 * MB)


def test_inputs_are_fitted_to_the_pixel_limit_with_sides_a_multiple_of_8() -> None:
    image = prepare_input_image(
        _encoded((3000, 2000), "JPEG"), max_pixels=1024 * 1024, max_bytes=20 * MB
    )
    assert image.width * image.height <= 1024 * 1024
    assert image.width % 8 == 0 and image.height % 8 == 0
    assert abs(image.width / image.height - 1.5) < 0.02
    assert image.name.startswith("stablehand-") and image.name.endswith(".png")
    assert Image.open(io.BytesIO(image.data)).size == (image.width, image.height)


def test_png_results_that_fit_keep_their_generation_data() -> None:
    upload = prepare_uploads(
        [ImageFile("a.png", "image/png", _encoded((64, 64)))],
        limit=MB,
        parameters="a pony\nSteps: 25",
    )
    assert upload.notes == ()
    assert Image.open(io.BytesIO(upload.files[0].data)).text["parameters"] == "a pony\nSteps: 25"


def test_results_too_big_for_the_limit_degrade_step_by_step() -> None:
    noise = [ImageFile(f"{n}.png", "image/png", _encoded((512, 512), noise=True)) for n in range(2)]
    as_webp = prepare_uploads(noise, limit=700 * 1024)
    assert {f.mime for f in as_webp.files} == {"image/webp"} and "WebP" in as_webp.notes[0]
    shrunk = prepare_uploads(noise, limit=60 * 1024)
    assert all(len(f.data) <= 60 * 1024 for f in shrunk.files)
    assert "Scaled down to" in shrunk.notes[0]
    assert Image.open(io.BytesIO(shrunk.files[0].data)).size[0] < 512


def test_at_most_ten_files_go_in_one_message() -> None:
    many = [ImageFile(f"{n}.png", "image/png", _encoded((16, 16))) for n in range(12)]
    upload = prepare_uploads(many, limit=MB)
    assert len(upload.files) == 10 and "Showing 10 of 12 images" in upload.notes[0]
