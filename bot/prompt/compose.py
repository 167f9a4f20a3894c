"""Prompt text + typed options + server policy -> a `GenerationRequest`, or a `PromptError`."""

from __future__ import annotations

from bot.model_family import PONY_FAMILY
from bot.prompt.blocked import check_blocked
from bot.prompt.flags import Draft, check_text, clip, normalise, split_flags
from bot.prompt.midjourney import ignored_note, weigh
from bot.prompt.request import ContentPolicy, GenerationRequest, ImageInput, Options, PromptError
from bot.prompt.sizes import check_pixels, choose_size, fitting_scale
from bot.prompt.templates import check_applies, choose_template
from bot.prompt.values import (
    check_loras,
    choose_cfg,
    choose_count,
    choose_denoise,
    choose_hires,
    choose_sampler,
    choose_seed,
    choose_steps,
    scale_asked,
)
from bot.workflows import Template, TemplateLibrary


def parse(
    text: str,
    *,
    library: TemplateLibrary,
    policy: ContentPolicy,
    options: Options | None = None,
    channel_nsfw: bool = False,
    image: ImageInput | None = None,
    seed: int | None = None,
) -> GenerationRequest:
    """Turn what the member typed into a request, or raise `PromptError` saying what to fix."""
    options = options or Options()
    check_text(text, policy, "prompt")
    if options.negative:
        check_text(options.negative, policy, "negative prompt")
    draft = split_flags(normalise(text))
    check_blocked(draft.prompt, policy)

    template = choose_template(draft, options, library, policy, image)
    if not draft.prompt and template.accepts("prompt"):
        raise PromptError("Describe what you want to see, e.g. `a pony astronaut on the moon`.")
    check_applies(draft, options, template, library, has_image=image is not None)

    width, height = choose_size(draft, options, template, image)
    hires = choose_hires(draft, options, template)
    if hires is not None and not scale_asked(draft, options):
        hires = fitting_scale(width, height, hires, policy, pixels=template.needs_image)
    check_pixels(width, height, hires, draft, template, policy)
    loras = check_loras(draft.loras, template, policy)
    sampler, scheduler = choose_sampler(draft, options, template, policy)

    member_negative = _member_negative(draft, options)
    words, weighed_negative = weigh(draft.prompt)
    raw = "raw" in draft.flags
    safe = policy.nsfw_policy in ("safe_tags", "spoiler") and not channel_nsfw
    positive_text, negative_text = _compose(
        template,
        policy,
        words,
        ", ".join(p for p in (member_negative, weighed_negative) if p),
        raw=raw,
        safe=safe,
    )
    # A model with no terms to keep it safe for work hides its images instead.
    unsteered = safe and template.accepts("prompt") and not template.model.steers_safe
    return GenerationRequest(
        template=template.name,
        prompt=draft.prompt,
        negative=member_negative,
        positive_text=positive_text,
        negative_text=negative_text,
        seed=choose_seed(draft, options, seed),
        width=width,
        height=height,
        count=choose_count(draft, options, template, policy) or 1,
        steps=choose_steps(draft, options, template, policy),
        cfg=choose_cfg(draft, options, template, policy),
        sampler=sampler,
        scheduler=scheduler,
        checkpoint=policy.checkpoint if template.accepts("checkpoint") else None,
        loras=tuple(loras),
        raw=raw,
        hires_scale=hires,
        denoise=choose_denoise(draft, options, template),
        image=image,
        spoiler=(policy.nsfw_policy == "spoiler" and not channel_nsfw) or unsteered,
        style=options.style or draft.flags.get("style") or None,
        notes=_notes(draft, options),
    )


def as_text(request: GenerationRequest) -> str:
    """The whole request as text: words, LoRA tags and a flag for every setting, for Edit.

    It parses back into the same request (with the same negative and image alongside).
    """
    flags = [f"--workflow {request.template}"]
    if request.image is None:
        # From an image the size follows the image again (an upscale takes no size at all).
        flags.append(f"--size {request.width}x{request.height}")
    flags.append(f"--seed {request.seed}")
    if request.count != 1:
        flags.append(f"--count {request.count}")
    named = {
        "steps": request.steps,
        "cfg": request.cfg,
        "sampler": request.sampler,
        "scheduler": request.scheduler,
        "denoise": request.denoise,
        "hires": request.hires_scale,
    }
    flags += [
        f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}"
        for name, value in named.items()
        if value is not None
    ]
    return " ".join([_words(request), *flags])


def _words(request: GenerationRequest) -> str:
    """The member's words, LoRA tags, `--raw` and `--style`: what no typed option carries."""
    parts = [request.prompt]
    parts += [f"<lora:{lora.name}:{lora.strength!r}>" for lora in request.loras]
    if request.raw:
        parts.append("--raw")
    if request.style:
        parts.append(f"--style {request.style}")
    return " ".join(p for p in parts if p)


def revise(
    original: GenerationRequest,
    *,
    library: TemplateLibrary,
    policy: ContentPolicy,
    channel_nsfw: bool = False,
    workflow: str | None = None,
    image: ImageInput | None = None,
    seed: int | None = None,
    denoise: float | None = None,
) -> GenerationRequest:
    """A finished request run again (Reroll, Vary, Upscale): its words, LoRAs and settings,
    optionally on one of its images, checked against today's policy like any new request."""
    flags = [] if original.scheduler is None else [f"--scheduler {original.scheduler}"]
    if image is None and workflow is None:
        width, height = original.width, original.height
        flags.append(f"--size {width}x{height}")
        if original.hires_scale:
            flags.append(f"--hires {original.hires_scale:g}")
    options = Options(
        negative=original.negative or None,
        seed=original.seed if seed is None else seed,
        steps=original.steps,
        count=original.count if image is None and workflow is None else None,
        denoise=denoise
        if denoise is not None
        else (original.denoise if workflow is None else None),
        cfg=original.cfg,
        sampler=original.sampler,
        workflow=workflow or original.template,
    )
    return parse(
        " ".join([_words(original), *flags]),
        library=library,
        policy=policy,
        options=options,
        channel_nsfw=channel_nsfw,
        image=image,
    )


# A typed option and the flags in the text that say the same thing.
_OVERRIDDEN_FLAGS = {
    "aspect": ("ar", "size"),
    "count": ("count",),
    "seed": ("seed",),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "sampler": ("sampler",),
    "workflow": ("workflow",),
    "denoise": ("denoise",),
    "hires": ("hires",),
    "style": ("style",),
}


def _notes(draft: Draft, options: Options) -> tuple[str, ...]:
    """Ignored Midjourney flags, in one note; and each flag a typed option replaced."""
    notes = [ignored_note(draft.ignored)] if draft.ignored else []
    for option, flags in _OVERRIDDEN_FLAGS.items():
        typed = getattr(options, option)
        for flag in flags:
            if typed is not None and flag in draft.flags:
                written = f"--{flag} {draft.flags[flag]}".strip()
                notes.append(
                    f"The `{option}: {clip(str(typed), 30)}` option replaced "
                    f"`{clip(written, 40)}` from your prompt."
                )
    return tuple(notes)


def _member_negative(draft: Draft, options: Options) -> str:
    """The typed negative and `--no`, together: both say what the member does not want."""
    parts = [normalise(options.negative or ""), draft.flags.get("no", "")]
    return ", ".join(p.strip(" ,") for p in parts if p.strip(" ,"))


def _compose(
    template: Template, policy: ContentPolicy, prompt: str, negative: str, *, raw: bool, safe: bool
) -> tuple[str, str]:
    """The texts sent to the model: its own and its safe terms around the member's words."""
    model = template.model
    positive_parts, negative_parts, suffix_parts = [], [], []
    if not raw:
        prefix, default_negative = model.prompt_prefix, model.default_negative
        if model.family == PONY_FAMILY:
            prefix = _either(policy.quality_tags, prefix)
            default_negative = _either(policy.default_negative, default_negative)
        positive_parts.append(prefix)
        negative_parts.append(default_negative)
        suffix_parts.append(model.prompt_suffix)
    if safe:
        positive_parts.append(model.safe_positive)
        negative_parts.append(model.safe_negative)
    return (
        _join_tags(positive_parts, prompt, suffix_parts),
        _join_tags(negative_parts, negative),
    )


def _either(override: str | None, own: str) -> str:
    return own if override is None else override


def _join_tags(tag_groups: list[str], text: str, after: list[str] | None = None) -> str:
    """Tags before (and `after`) the member's text, leaving out any the member already wrote."""
    seen = {tag.strip().lower() for tag in text.split(",")}

    def fresh(groups: list[str]) -> list[str]:
        tags = []
        for group in groups:
            for tag in (t.strip() for t in group.split(",")):
                if tag and tag.lower() not in seen:
                    seen.add(tag.lower())
                    tags.append(tag)
        return tags

    before = fresh(tag_groups)
    return ", ".join([*before, *([text] if text else []), *fresh(after or [])])
