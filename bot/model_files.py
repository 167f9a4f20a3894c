"""Names of model files on the endpoint's volume: safe subfolders, nothing that escapes them."""

from __future__ import annotations

import re

# One folder or file name: what ComfyUI lists and A1111 tags carry, nothing a shell or path
# parser would read specially.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.()+-]{0,99}$")
MAX_DEPTH = 4
MODEL_EXTENSIONS = (".safetensors", ".pt", ".ckpt")


class ModelNameError(ValueError):
    """A model file name that is not safe to send, with the reason as a sentence fragment."""


def model_file_name(text: str, *, default_extension: str | None = ".safetensors") -> str:
    """`pony/detail` -> `pony/detail.safetensors`, as ComfyUI lists files in subfolders.

    Raises ModelNameError for `..`, absolute paths, backslashes and empty folders.
    """
    name = text.strip()
    if not name:
        raise ModelNameError("the name is empty")
    if "\\" in name:
        raise ModelNameError("folders are separated with `/`, not `\\`")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ModelNameError("the name must be relative to the model folder, without a leading `/`")
    segments = name.split("/")
    if any(segment in ("..", ".") for segment in segments):
        raise ModelNameError("the name cannot step between folders with `..` or `.`")
    if any(not segment.strip() for segment in segments):
        raise ModelNameError("the name has an empty folder (`//` or a trailing `/`)")
    if len(segments) > MAX_DEPTH:
        raise ModelNameError(f"the name is more than {MAX_DEPTH - 1} folders deep")
    if not all(_SEGMENT.match(segment) for segment in segments):
        raise ModelNameError(
            "use letters, digits, spaces and `_ . ( ) + -` in names (each folder starting with a "
            "letter or digit)"
        )
    if default_extension and not name.lower().endswith(MODEL_EXTENSIONS):
        name += default_extension
    return name
