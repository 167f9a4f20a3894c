"""Generation data in the A1111 `parameters` format that Civitai and other tools read."""

from __future__ import annotations

from bot.prompt import GenerationRequest
from bot.samplers import A1111_BASE_NAMES, A1111_SCHEDULE_LABELS


def a1111_parameters(request: GenerationRequest, *, model: str | None = None) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: Euler a, ...` as A1111 writes it."""
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
