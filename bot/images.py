"""Image bytes: sniff, verify, embed generation data, fit the upload limit."""

from __future__ import annotations

import hashlib
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
# What a member (or `generate --image`) may give: RunPod takes 10 MB per request, base64 adds a third.
MAX_INPUT_BYTES = 20 * 2**20
# Far above the default MAX_PIXELS (hires included); decoding costs up to 4 bytes a pixel.
MAX_OUTPUT_PIXELS = 4096 * 4096
# RunPod takes 10 MB per /run body, base64 included: inputs above this go as JPEG instead.
INPUT_PNG_LIMIT = 6 * 2**20


class ImageError(ValueError):
    """Bytes that are not a usable image, with a sentence saying why."""


class PixelLimitError(ImageError):
    """An image whose header declares more pixels than allowed; nothing was decoded."""

    def __init__(self, size: str, max_pixels: int) -> None:
        super().__init__(f"is {size} pixels, over the cap of {max_pixels:,} pixels")
        self.size = size


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
    """An input image that decoded completely, sized for the model, ready for `input.images`."""

    mime: str
    width: int
    height: int
    data: bytes
    # Where the member's image can be downloaded again (a Discord attachment), for Edit.
    source_url: str | None = None

    @property
    def name(self) -> str:
        """A content-derived name, so equal inputs share one file on the worker."""
        extension = EXTENSIONS[self.mime]
        return f"stablehand-{hashlib.sha256(self.data).hexdigest()[:16]}.{extension}"


def input_size(width: int, height: int, *, max_pixels: int) -> tuple[int, int]:
    """The size an input image of `width`x`height` is given: within `max_pixels`, sides a multiple of 8."""
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def prepare_input_image(data: bytes, *, max_pixels: int, max_bytes: int) -> VerifiedImage:
    """Check that `data` is a whole still image, then fit it within `max_pixels` (sides a multiple of 8)."""
    if len(data) > max_bytes:
        raise ImageError(
            f"That image is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB."
        )
    mime = sniff_mime(data)
    if mime not in STILL_IMAGES:
        raise ImageError("That file is not a PNG, JPEG, WebP or GIF image.")
    try:
        with _decoded(data, MAX_INPUT_PIXELS) as probe:
            picture = probe.convert("RGB")
    except PixelLimitError as exc:
        raise ImageError(f"That image is {exc.size}; the limit is 4096x4096.") from None
    except ImageError:
        raise ImageError("That image is damaged or incomplete; it could not be read.") from None
    size = input_size(picture.width, picture.height, max_pixels=max_pixels)
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "PNG")
    if out.tell() > INPUT_PNG_LIMIT:
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=95)
        return VerifiedImage("image/jpeg", *size, out.getvalue())
    return VerifiedImage("image/png", *size, out.getvalue())


def verify_output_image(data: bytes, *, max_pixels: int = MAX_OUTPUT_PIXELS) -> str:
    """The sniffed type of a worker's output; a still image must be within `max_pixels` and whole."""
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError("is not an image file")
    if mime in STILL_IMAGES:
        _decoded(data, max_pixels).close()
    return mime


def _decoded(data: bytes, max_pixels: int) -> Image.Image:
    """`data` opened, refused from its header alone when over `max_pixels`, then decoded whole."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check fires in open(); ours is stricter and names the size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise PixelLimitError(f"more than {2 * Image.MAX_IMAGE_PIXELS:,}", max_pixels) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("is damaged or incomplete") from exc
    if image.width * image.height > max_pixels:
        image.close()
        raise PixelLimitError(f"{image.width}x{image.height}", max_pixels)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        image.close()
        raise ImageError("is damaged or incomplete") from exc
    return image


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


MAX_FILES_PER_MESSAGE = 10
MESSAGE_CAP = 25 * 2**20
MIN_SIDE = 256


@dataclass(frozen=True)
class Upload:
    """Files ready for one Discord message, and what had to change to make them fit."""

    files: tuple[ImageFile, ...]
    notes: tuple[str, ...] = ()


def prepare_uploads(
    images: Sequence[ImageFile], *, limit: int, parameters: str | None = None
) -> Upload:
    """Make images fit Discord: PNG with generation data, then WebP, then JPEG, then smaller."""
    notes: list[str] = []
    if len(images) > MAX_FILES_PER_MESSAGE:
        notes.append(
            f"Showing {MAX_FILES_PER_MESSAGE} of {len(images)} images (Discord's limit per message)."
        )
        images = images[:MAX_FILES_PER_MESSAGE]
    per_file = limit
    total = max(limit, min(MESSAGE_CAP, limit * len(images)))
    with_data = [_with_parameters(i, parameters) for i in images]
    if _fits(with_data, per_file, total):
        return Upload(tuple(with_data), tuple(notes))
    for mime, label in (("image/webp", "WebP"), ("image/jpeg", "JPEG")):
        converted = [_convert(i, mime) if i.mime in STILL_IMAGES else i for i in images]
        if _fits(converted, per_file, total):
            notes.append(f"Converted to high-quality {label} to fit this server's upload limit.")
            return Upload(tuple(converted), tuple(notes))
    scale = 0.75
    while True:
        shrunk = [
            _convert(i, "image/jpeg", scale=scale) if i.mime in STILL_IMAGES else i for i in images
        ]
        size = _size_of(shrunk[0]) if shrunk and shrunk[0].mime in STILL_IMAGES else None
        if _fits(shrunk, per_file, total) or (size and min(size) <= MIN_SIDE):
            shown = f" to {size[0]}x{size[1]}" if size else ""
            notes.append(f"Scaled down{shown} as JPEG to fit this server's upload limit.")
            return Upload(tuple(shrunk), tuple(notes))
        scale *= 0.75


def _fits(files: Sequence[ImageFile], per_file: int, total: int) -> bool:
    return all(len(f.data) <= per_file for f in files) and total_size(files) <= total


def _with_parameters(image: ImageFile, parameters: str | None) -> ImageFile:
    if parameters is None or image.mime != "image/png":
        return image
    return ImageFile(image.filename, image.mime, png_with_parameters(image.data, parameters))


def _convert(image: ImageFile, mime: str, *, scale: float = 1.0) -> ImageFile:
    with Image.open(io.BytesIO(image.data)) as source:
        picture = source.convert("RGB")
    if scale != 1.0:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if mime == "image/webp":
        picture.save(out, "WEBP", quality=92, method=4)
    else:
        picture.save(out, "JPEG", quality=90, optimize=True)
    stem = image.filename.rsplit(".", 1)[0]
    return ImageFile(f"{stem}.{EXTENSIONS[mime]}", mime, out.getvalue())


def _size_of(image: ImageFile) -> tuple[int, int]:
    with Image.open(io.BytesIO(image.data)) as picture:
        return picture.size
