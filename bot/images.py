"""Image bytes: sniff, verify, embed generation data, fit the upload limit."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, PngImagePlugin

MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"\x1aE\xdf\xa3", 0, "video/webm"),
    (b"ftyp", 4, "video/mp4"),
)
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "video/webm": "webm",
    "video/mp4": "mp4",
}
STILL_IMAGES = {"image/png", "image/jpeg", "image/webp", "image/gif"}
MAX_INPUT_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """Bytes that are not a usable image, with a sentence saying why."""


@dataclass(frozen=True)
class ImageFile:
    """An image (or clip) as bytes, with its sniffed type and a display file name."""

    filename: str
    mime: str
    data: bytes


def sniff_mime(data: bytes) -> str | None:
    """The type the magic bytes say, whatever the file name claims."""
    for magic, offset, mime in MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if mime == "image/webp" and data[:4] != b"RIFF":
                continue
            return mime
    return None


@dataclass(frozen=True)
class VerifiedImage:
    """An input image that Pillow could fully decode."""

    mime: str
    width: int
    height: int
    data: bytes


def verify_image(data: bytes, *, max_bytes: int) -> VerifiedImage:
    """Check that `data` is a whole, decodable still image of sane size; return it as PNG."""
    if len(data) > max_bytes:
        raise ImageError(
            f"The image is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB."
        )
    mime = sniff_mime(data)
    if mime not in STILL_IMAGES:
        raise ImageError("That file is not a PNG, JPEG, WebP or GIF image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > MAX_INPUT_PIXELS:
                    raise ImageError(f"The image is {width}x{height}; the limit is 4096x4096.")
                probe.load()
                converted = probe.convert("RGB")
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning):
        raise ImageError("That image is damaged or incomplete; it could not be read.") from None
    out = io.BytesIO()
    converted.save(out, "PNG")
    return VerifiedImage("image/png", width, height, out.getvalue())


def png_with_parameters(data: bytes, parameters: str) -> bytes:
    """Add an A1111-style `parameters` text chunk so Civitai and other tools read the settings."""
    with Image.open(io.BytesIO(data)) as image:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("parameters", parameters)
        out = io.BytesIO()
        image.save(out, "PNG", pnginfo=info)
        return out.getvalue()


def total_size(files: Sequence[ImageFile]) -> int:
    return sum(len(f.data) for f in files)
