"""Generation data in delivered PNGs: A1111's `parameters` (Civitai) and ComfyUI's `prompt`."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from bot.images import ImageFile
from bot.prompt import GenerationRequest
from bot.samplers import A1111_BASE_NAMES, A1111_SCHEDULE_LABELS


def a1111_parameters(
    request: GenerationRequest, *, model: str | None = None, batch_pos: int = 0
) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: Euler a, ...` as A1111 writes it.

    ComfyUI draws a batch's noise from one generator seeded once (comfy.sample.prepare_noise),
    so image `batch_pos` is "this seed, that place in a batch of `count`", not seed + index:
    written as A1111's own `Batch size` and `Batch pos` fields.
    """
    width, height = request.output_size
    fields = []
    if request.steps is not None:
        fields.append(f"Steps: {request.steps}")
    if request.sampler is not None and request.scheduler is not None:
        fields.append(f"Sampler: {A1111_BASE_NAMES.get(request.sampler, request.sampler)}")
        label = A1111_SCHEDULE_LABELS.get(request.scheduler, request.scheduler)
        fields.append(f"Schedule type: {label}")
    if request.cfg is not None:
        fields.append(f"CFG scale: {request.cfg:g}")
    fields.append(f"Seed: {request.seed}")
    fields.append(f"Size: {width}x{height}")
    if request.count > 1:
        fields += [f"Batch size: {request.count}", f"Batch pos: {batch_pos}"]
    checkpoint = model or request.checkpoint
    if checkpoint:
        fields.append(f"Model: {checkpoint.rsplit('.', 1)[0]}")
    if request.template.startswith("pony"):
        fields.append("Clip skip: 2")
    if request.denoise is not None and request.denoise < 1:
        fields.append(f"Denoising strength: {request.denoise:g}")
    if request.hires_scale:
        fields.append(f"Hires upscale: {request.hires_scale:g}")
    # A1111 keeps LoRAs as tags in the prompt; that is where Civitai looks for them.
    tags = "".join(
        f" <lora:{lora.name.rsplit('.', 1)[0]}:{lora.strength:g}>" for lora in request.loras
    )
    # A1111 leaves the negative line out when there is none.
    negative = f"Negative prompt: {request.negative_text}\n" if request.negative_text else ""
    return f"{request.positive_text}{tags}\n{negative}{', '.join(fields)}"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = {b"tEXt", b"iTXt", b"zTXt"}
GENERATION_KEYS = {"parameters", "prompt", "workflow"}


def comfyui_prompt(workflow: Mapping[str, Any] | str) -> str:
    """The API workflow as ComfyUI's SaveImage writes it: `json.dumps(prompt)`, plain ASCII."""
    data = json.loads(workflow) if isinstance(workflow, str) else workflow
    return json.dumps(data)


def png_with_generation_data(
    data: bytes, *, parameters: str, workflow: Mapping[str, Any] | str
) -> bytes:
    """Add A1111 `parameters` (iTXt, UTF-8) and ComfyUI `prompt` (tEXt, as ComfyUI writes it).

    The chunks go right after IHDR, where readers look before the pixels; the pixels are not
    re-encoded. Any generation chunks the worker already wrote are replaced, not doubled.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks = _chunks(data)
    if chunks[0][0] != b"IHDR":
        raise ValueError("a PNG must start with IHDR")
    kept = [c for c in chunks[1:] if not _is_generation_text(*c)]
    ours = [
        (b"iTXt", b"parameters\x00\x00\x00\x00\x00" + parameters.encode("utf-8")),
        (b"tEXt", b"prompt\x00" + comfyui_prompt(workflow).encode("latin-1")),
    ]
    return PNG_SIGNATURE + b"".join(_chunk(kind, body) for kind, body in [chunks[0], *ours, *kept])


def with_generation_data(
    images: Sequence[ImageFile], request: GenerationRequest, workflow: Mapping[str, Any] | str
) -> list[ImageFile]:
    """Each PNG with the `parameters` and `prompt` that make exactly that image; others as they are."""
    graph = json.loads(workflow) if isinstance(workflow, str) else workflow
    marked = []
    for index, image in enumerate(images):
        if image.mime == "image/png":
            parameters = a1111_parameters(request, batch_pos=index)
            prompt = comfyui_prompt(one_of_batch(graph, index, request.count))
            try:
                data = png_with_generation_data(image.data, parameters=parameters, workflow=prompt)
            except ValueError:
                # A PNG whose chunks cannot be walked is delivered as it came, never dropped.
                data = image.data
            image = ImageFile(image.filename, image.mime, data)
        marked.append(image)
    return marked


def one_of_batch(workflow: Mapping[str, Any], index: int, count: int) -> Mapping[str, Any]:
    """The workflow that remakes image `index` of a batch alone, with the same noise.

    ComfyUI's LatentFromBatch picks that image's latent and records its batch index, and
    prepare_noise then draws the noise it had in the batch. Without a batch, the workflow as is.
    """
    batches = [
        node_id
        for node_id, node in workflow.items()
        if node.get("class_type") == "EmptyLatentImage"
        and node.get("inputs", {}).get("batch_size") == count
    ]
    if count <= 1 or len(batches) != 1:
        return workflow
    [source] = batches
    picker = str(max((int(k) for k in workflow if str(k).isdigit()), default=0) + 1)
    remade: dict[str, Any] = {}
    for node_id, node in workflow.items():
        inputs = {
            name: [picker, 0] if value == [source, 0] else value
            for name, value in node.get("inputs", {}).items()
        }
        remade[node_id] = {**node, "inputs": inputs}
    remade[picker] = {
        "class_type": "LatentFromBatch",
        "inputs": {"samples": [source, 0], "batch_index": index, "length": 1},
    }
    return remade


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if len(body) != length:
            raise ValueError("the PNG is truncated")
        chunks.append((kind, body))
        offset += 12 + length
        if kind == b"IEND":
            return chunks
    raise ValueError("the PNG ends before its IEND chunk")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _is_generation_text(kind: bytes, body: bytes) -> bool:
    if kind not in TEXT_CHUNKS:
        return False
    return body.split(b"\x00", 1)[0].decode("latin-1") in GENERATION_KEYS
