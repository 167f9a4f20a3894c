"""Server settings that contradict each other: a combination under which every job would fail.

`/settings` refuses such a change and names the conflict, rather than leaving members with an
error about a flag they never typed.
"""

from __future__ import annotations

from dataclasses import replace

from bot.guild_settings import GuildSettings
from bot.prompt import HIRES_RANGE, ContentPolicy, PromptError, parse
from bot.workflows import TemplateLibrary

# Words a trial prompt is made of: plain, so only the settings can make it fail.
TRIAL_PROMPT = "a pony"


def allowed_templates(settings: GuildSettings, library: TemplateLibrary) -> frozenset[str] | None:
    """Every workflow but those the server turned off; None when it turned none off."""
    if not settings.disabled_workflows:
        return None
    return frozenset(t.name for t in library if settings.allows_workflow(t.name))


def server_policy(
    settings: GuildSettings, base: ContentPolicy, library: TemplateLibrary
) -> ContentPolicy:
    """The policy a server's members run under: the operator's, narrowed by the server."""
    policy = settings.policy(base)
    allowed = allowed_templates(settings, library)
    if allowed is None:
        return policy
    if base.allowed_templates is not None:
        allowed &= base.allowed_templates
    return replace(policy, allowed_templates=allowed)


def conflict(settings: GuildSettings, base: ContentPolicy, library: TemplateLibrary) -> str | None:
    """Why these settings would make every /imagine fail, naming the settings; or None."""
    policy = server_policy(settings, base, library)
    default = policy.default_template
    if not settings.allows_workflow(default):
        return (
            f"`{default}` is this server's default workflow: turning it off would refuse every "
            "prompt that names no workflow. Choose another default first "
            "(`/settings defaults workflow:`)."
        )
    template = library.get(default)
    if template is None:
        return None
    unlimited = replace(policy, max_pixels=2**62)
    try:
        request = parse(TRIAL_PROMPT, library=library, policy=unlimited, channel_nsfw=True)
    except PromptError as error:
        return f"With these settings every /imagine would fail: {error}"
    scale = HIRES_RANGE[0] if request.hires_scale else 1.0
    width, height = round(request.width * scale), round(request.height * scale)
    if width * height > policy.max_pixels:
        least = "at least " if request.hires_scale else ""
        return (
            f"The default workflow `{default}` makes images of {least}{width}x{height} "
            f"({width * height / 2**20:.2f} MP), more than the cap of "
            f"{policy.max_pixels / 2**20:.2f} MP, so every /imagine would fail. Raise the cap "
            "(`/settings caps max_megapixels:`) or choose another default workflow "
            "(`/settings defaults workflow:`) first."
        )
    try:
        parse(TRIAL_PROMPT, library=library, policy=policy, channel_nsfw=True)
    except PromptError as error:
        return f"With these settings every /imagine would fail: {error}"
    return None
