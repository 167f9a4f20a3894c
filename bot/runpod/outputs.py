"""worker-comfyui's output shapes -> verified images, with byte and pixel caps."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from bot.images import EXTENSIONS, ImageError, ImageFile, PixelLimitError, verify_output_image
from bot.runpod.downloads import (
    MAX_OUTPUT_IMAGE_BYTES,
    MAX_OUTPUT_TOTAL_BYTES,
    Fetch,
    megabytes,
    too_large_image,
)
from bot.runpod.errors import OutputError, clip

log = logging.getLogger(__name__)


async def decode_output(
    output: Any,
    *,
    expected: int,
    fetch: Fetch,
    max_image_bytes: int = MAX_OUTPUT_IMAGE_BYTES,
    max_total_bytes: int = MAX_OUTPUT_TOTAL_BYTES,
) -> list[ImageFile]:
    """Every worker-comfyui output shape -> a list of verified images, or `OutputError` saying why.

    At most `expected` entries are used; bytes are capped per image and in total (running), and
    each still image is refused from its header alone when it has too many pixels.
    """
    entries = _output_entries(output)
    if not entries:
        raise OutputError("the workflow finished without producing an image", kind="no_images")
    wanted = max(1, expected)
    if len(entries) > wanted:
        log.warning(
            "the worker returned %d outputs for %d images asked for; using the first %d",
            len(entries),
            wanted,
            wanted,
        )
        entries = entries[:wanted]
    images: list[ImageFile] = []
    total = 0
    for index, entry in enumerate(entries):
        left = max_total_bytes - total
        try:
            data, filename = await _entry_bytes(entry, fetch, min(max_image_bytes, left))
        except OutputError as exc:
            if exc.kind == "too_large" and left < max_image_bytes:
                raise OutputError(
                    f"the output images together are over the {megabytes(max_total_bytes)} cap",
                    kind="too_large",
                ) from None
            raise
        total += len(data)
        images.append(_verified(index, data, filename))
    if len(images) < expected:
        raise OutputError(
            f"the workflow produced {len(images)} of the {expected} images asked for",
            kind="missing_images",
        )
    return images


def _verified(index: int, data: bytes, filename: str | None) -> ImageFile:
    try:
        mime = verify_output_image(data)
    except PixelLimitError as exc:
        raise OutputError(f"output {index + 1} {exc}", kind="too_many_pixels") from None
    except ImageError as exc:
        raise OutputError(f"output {index + 1} {exc}", kind="bad_output") from None
    return ImageFile(f"{_safe_stem(filename, index)}.{EXTENSIONS[mime]}", mime, data)


def _safe_stem(filename: str | None, index: int) -> str:
    """A file name stem Discord shows as is: the worker's, cleaned, or image_N."""
    stem = (filename or "").rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]
    return stem or f"image_{index + 1}"


def _output_entries(output: Any) -> list[Any]:
    if output is None:
        return []
    if isinstance(output, list):
        return output
    if isinstance(output, str):
        return [output]
    if not isinstance(output, dict):
        raise OutputError("the worker's output has an unknown shape", kind="bad_output")
    if output.get("status") == "error":
        message = output.get("message")
        text = clip(message, 500) if message is not None else "no message"
        raise OutputError(f"the worker reported: {text}", kind="worker")
    if isinstance(output.get("images"), list):
        return output["images"]
    if "message" in output:
        return [output["message"]]
    return []


async def _entry_bytes(entry: Any, fetch: Fetch, max_bytes: int) -> tuple[bytes, str | None]:
    if isinstance(entry, dict):
        kind = entry.get("type", "base64")
        data = entry.get("data")
        filename = entry.get("filename") if isinstance(entry.get("filename"), str) else None
        if not isinstance(data, str):
            raise OutputError("an output entry has no data", kind="bad_output")
        if kind == "s3_url":
            return await fetch(data, max_bytes=max_bytes), filename
        return _b64(data, max_bytes), filename
    if isinstance(entry, str):
        if entry.startswith(("http://", "https://")):
            return await fetch(entry, max_bytes=max_bytes), None
        return _b64(entry, max_bytes), None
    raise OutputError("an output entry has an unknown shape", kind="bad_output")


def _b64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise OutputError("an output data: URI is not base64", kind="bad_output")
    # Base64 is 4 characters per 3 bytes: refuse by length before decoding anything.
    if len(text) // 4 * 3 > max_bytes + 2:
        raise too_large_image(max_bytes)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OutputError("an output image is not valid base64", kind="bad_output") from None
    if len(data) > max_bytes:
        raise too_large_image(max_bytes)
    return data
