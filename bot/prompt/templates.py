"""Which workflow runs: the named or default one, its image and hires variants, what it accepts."""

from __future__ import annotations

import difflib

from bot.prompt.flags import Draft, clip
from bot.prompt.request import ContentPolicy, ImageInput, Options, PromptError
from bot.workflows import Template, TemplateLibrary


def choose_template(
    draft: Draft,
    options: Options,
    library: TemplateLibrary,
    policy: ContentPolicy,
    image: ImageInput | None,
) -> Template:
    typed = (options.workflow or "").strip()
    template = _named_template(
        typed or draft.flags.get("workflow") or policy.default_template, library
    )
    hires_asked = "hires" in draft.flags or options.hires is not None
    reason = None
    if image is not None and not template.needs_image and "image" in template.variants:
        template, reason = _variant(template, "image", library), "An attached image"
    elif hires_asked and not template.accepts("scale") and "hires" in template.variants:
        template, reason = _variant(template, "hires", library), "`--hires`"
    if policy.allowed_templates is not None and template.name not in policy.allowed_templates:
        allowed = ", ".join(f"`{n}`" for n in sorted(policy.allowed_templates)) or "none"
        if reason:
            raise PromptError(
                f"{reason} uses the `{template.name}` workflow, which this server does not allow. "
                f"Allowed: {allowed}."
            )
        raise PromptError(
            f"This server does not allow the `{template.name}` workflow. Allowed: {allowed}."
        )
    _check_image(template, image, library)
    if hires_asked and not template.accepts("scale"):
        upscalers = _workflows_taking(library, "scale", image=True)
        hint = f" (to enlarge an image, use {upscalers})" if image and upscalers else ""
        raise PromptError(
            f"The `{template.name}` workflow has no hires pass; drop `--hires`{hint}."
        )
    return template


def _named_template(name: str, library: TemplateLibrary) -> Template:
    template = library.get(name)
    if template is None or template.hidden:
        close = difflib.get_close_matches(name.lower(), library.names(), n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise PromptError(
            f"There is no workflow called `{clip(name, 40)}`.{hint} "
            f"Workflows: {', '.join(library.names())}."
        )
    return template


def _variant(template: Template, kind: str, library: TemplateLibrary) -> Template:
    # The loader checks that variants exist; a library built by hand may still lack one.
    return library.get(template.variants[kind]) or template


def _check_image(template: Template, image: ImageInput | None, library: TemplateLibrary) -> None:
    if template.needs_image and image is None:
        raise PromptError(
            f"The `{template.name}` workflow starts from an image: attach one with the `image` option."
        )
    if image is not None and not template.needs_image:
        takers = _workflows_taking(library, "image", image=True)
        hint = f", or use a workflow that does: {takers}" if takers else ""
        raise PromptError(
            f"The `{template.name}` workflow does not use an attached image; remove it{hint}."
        )


def _workflows_taking(library: TemplateLibrary, parameter: str, *, image: bool) -> str:
    """Up to three workflows that take `parameter`, among those that (do not) start from an image."""
    names = [
        f"`{t.name}`"
        for t in library
        if t.accepts(parameter) and not t.hidden and t.needs_image == image
    ]
    return ", ".join(names[:3])


_FLAG_PARAMETER = {
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler": "sampler",
    "scheduler": "scheduler",
    "no": "negative",
    "count": "count",
    "ar": "width",
    "size": "width",
    "denoise": "denoise",
    "hires": "scale",
}

_OPTION_PARAMETER = {
    "negative": "negative",
    "aspect": "width",
    "count": "count",
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler": "sampler",
    "denoise": "denoise",
    "hires": "scale",
}


def check_applies(
    draft: Draft,
    options: Options,
    template: Template,
    library: TemplateLibrary,
    *,
    has_image: bool,
) -> None:
    """Refuse what the member asked for that this workflow would silently ignore."""
    for flag in draft.flags:
        parameter = _FLAG_PARAMETER.get(flag)
        if parameter is not None and not template.accepts(parameter):
            takers = _workflows_taking(library, parameter, image=has_image)
            hint = f", or pick a workflow that takes it: {takers}" if takers else ""
            raise PromptError(
                f"`--{flag}` has no effect on the `{template.name}` workflow; drop it{hint}."
            )
        if flag == "raw" and not template.model.adds_tags:
            raise PromptError(f"The `{template.name}` workflow adds no quality tags; drop `--raw`.")
    for option, parameter in _OPTION_PARAMETER.items():
        if getattr(options, option) is not None and not template.accepts(parameter):
            raise PromptError(
                f"The `{option}` option has no effect on the `{template.name}` workflow; leave it out."
            )
