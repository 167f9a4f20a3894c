"""/imagine: turn a prompt into a job, answer at once, and let the job's message show the rest."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.loras import LoraInfo
from bot.prompt import Options
from bot.samplers import A1111_SAMPLERS, SAMPLERS
from bot.workflows import Template
from cogs.common import acknowledge, render
from cogs.common.batch import BatchButton, PendingBatches, offer
from cogs.common.buttons import EDIT_MODAL, ResultButton, on_edit_submit
from cogs.common.launch import channel_is_nsfw, launch, read_image, requester

if TYPE_CHECKING:
    from bot.app import Stablehand

ASPECTS = ["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"]
# Discord integer options stop at 2^53; bigger seeds (up to 2^64-1) go in the text as --seed.
MAX_OPTION_SEED = 2**53 - 1


class Imagine(commands.Cog):
    """Image requests: /imagine, its batches, its result buttons and the Edit form."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot
        self.batches = PendingBatches()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ResultButton, BatchButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ResultButton, BatchButton)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Stablehand]) -> None:
        """Edit-modal submits: handled here so they work even after the bot restarted."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        match = EDIT_MODAL.fullmatch((interaction.data or {}).get("custom_id", ""))
        if match:
            await on_edit_submit(interaction, int(match["job"]))

    @app_commands.command(name="imagine", description="Make an image from a prompt.")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text; {red, blue} makes both",
        negative="What to keep out of the image",
        aspect="Shape of the image",
        count="How many images (1-4)",
        seed=f"0 to {MAX_OPTION_SEED}; for bigger seeds write --seed in the prompt",
        steps="Sampling steps (more is slower)",
        cfg="How closely to follow the prompt (5-8 suits Pony)",
        sampler="ComfyUI or A1111 sampler name, e.g. DPM++ 2M Karras",
        workflow="Which workflow to run",
        image="Start from this image (img2img)",
        style="A style preset: words, negative, LoRAs and defaults around your prompt",
        lora="Add a LoRA from the endpoint's list, with its trigger words",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction[Stablehand],
        prompt: app_commands.Range[str, 1, 4000],
        negative: app_commands.Range[str, 1, 2000] | None = None,
        aspect: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        seed: app_commands.Range[int, 0, MAX_OPTION_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: str | None = None,
        workflow: str | None = None,
        image: discord.Attachment | None = None,
        style: str | None = None,
        lora: str | None = None,
    ) -> None:
        services = self.bot.services
        # Deferred publicly: a single job's progress message takes the "thinking..." place.
        policy, preferences = await acknowledge.in_time(
            interaction,
            asyncio.gather(
                services.policy_for(interaction.guild_id),
                services.preferences.get(interaction.user.id),
            ),
            ephemeral=False,
        )
        chosen_style, prompt = await acknowledge.in_time(
            interaction,
            services.style_for(interaction.guild_id, prompt, style, preferred=preferences.style),
            ephemeral=False,
        )
        verified = None
        if image is not None:
            # Downloading may take longer than Discord's three seconds: acknowledge first.
            await acknowledge.defer(interaction, ephemeral=False)
            verified = await read_image(image, max_pixels=policy.max_pixels)
        options = Options(
            negative=negative,
            aspect=aspect,
            count=count,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            workflow=workflow,
        )
        jobs = services.prepare_batch(
            prompt,
            options=options,
            policy=policy,
            image=verified,
            style=chosen_style,
            lora=lora,
            preferences=preferences,
            **requester(interaction),
        )
        if len(jobs) == 1:
            await launch(interaction, jobs[0])
        else:
            await offer(interaction, jobs)

    @imagine.autocomplete("sampler")
    async def sampler_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        wanted = current.strip().lower()
        names = [*A1111_SAMPLERS, *SAMPLERS]
        found = [n for n in names if wanted in n.lower()] if wanted else list(A1111_SAMPLERS)
        return [app_commands.Choice(name=n, value=n) for n in found[:25]]

    @imagine.autocomplete("workflow")
    async def workflow_choices(
        self, interaction: discord.Interaction[Stablehand], current: str
    ) -> list[app_commands.Choice[str]]:
        library = self.bot.services.templates
        wanted = current.strip().lower()
        server = await self.bot.services.guild_settings.get(interaction.guild_id)
        choices = []
        for name in library.names():
            template = library.get(name)
            if template is None or not server.allows_workflow(name):
                continue
            if wanted in name or wanted in template.model.label.lower():
                label = workflow_label(template)
                choices.append(app_commands.Choice(name=render.choice_label(label), value=name))
        return choices[:25]

    @imagine.autocomplete("style")
    async def style_choices(
        self, interaction: discord.Interaction[Stablehand], current: str
    ) -> list[app_commands.Choice[str]]:
        wanted = current.strip().lower()
        styles = await self.bot.services.styles.all(interaction.guild_id)
        return [
            app_commands.Choice(name=render.choice_label(f"{s.name} — {s.summary()}"), value=s.name)
            for s in styles
            if wanted in s.name or wanted in s.description.lower()
        ][:25]

    @imagine.autocomplete("lora")
    async def lora_choices(
        self, interaction: discord.Interaction[Stablehand], current: str
    ) -> list[app_commands.Choice[str]]:
        catalogue = self.bot.services.loras
        if catalogue is None:
            return []
        policy = await self.bot.services.policy_for(interaction.guild_id)
        nsfw_allowed = channel_is_nsfw(interaction.channel) or policy.nsfw_policy == "off"
        wanted = current.strip().lower()
        return [
            app_commands.Choice(name=render.choice_label(lora_label(info)), value=info.short_name)
            for info in catalogue.offered(nsfw_allowed=nsfw_allowed)
            if wanted in info.name.lower() or any(wanted in t.lower() for t in info.triggers)
        ][:25]


def lora_label(info: LoraInfo) -> str:
    """`name — triggers (weight)`, as /loras and the autocomplete show a LoRA."""
    triggers = ", ".join(info.triggers) or "no trigger words"
    nsfw = " · NSFW" if info.nsfw else ""
    about = f" — {info.description}" if info.description else ""
    return f"{info.short_name} — {triggers} (weight {info.weight:g}){nsfw}{about}"


def workflow_label(template: Template) -> str:
    """`name · model — description`, without the model named twice."""
    model = template.model.label
    about = template.description
    if about.lower().startswith(model.lower()):
        about = about[len(model) :].lstrip(" ,:")
    return f"{template.name} · {model} — {about}" if about else f"{template.name} · {model}"


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Imagine(bot))
