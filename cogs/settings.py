"""/settings: a server's own policy (Manage Server, checked when the command runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import AGE_RESTRICTED_ONLY, NSFW_POLICIES, RENAMED_NSFW_POLICIES
from bot.guild_settings import GuildSettings
from bot.styles import StyleError, parse_style
from cogs.common import acknowledge, outgoing
from cogs.common.errors import MemberError
from cogs.common.permissions import moderators_only

if TYPE_CHECKING:
    from bot.app import Stablehand

NSFW_CHOICES = {
    "safe_tags": "Add safe tags outside age-restricted channels",
    "spoiler": "Safe tags and spoilered images outside age-restricted channels",
    AGE_RESTRICTED_ONLY: "Only make images in age-restricted channels",
    "off": "No tags, no spoilers",
}
# /settings shows the whole channel list up to this many; longer lists are summarised.
SHOWN_CHANNELS = 50
NOT_MANAGER = "Only members with the Manage Server permission can change this server's settings."
# A server's own blocked words: how many, and how long each may be.
MAX_BLOCKED_WORDS = 200
MAX_WORD_LENGTH = 50


def managers_only():
    async def predicate(interaction: discord.Interaction) -> bool:
        if not interaction.permissions.manage_guild:
            raise app_commands.CheckFailure(NOT_MANAGER)
        return True

    return app_commands.check(predicate)


def describe(settings: GuildSettings, *, bot: Stablehand) -> discord.Embed:
    """Every server setting and what it currently is, defaults included."""
    policy = settings.policy(bot.services.policy())
    channels = (
        outgoing.summarise([f"<#{c}>" for c in settings.allowed_channels], most=SHOWN_CHANNELS)
        if settings.allowed_channels is not None
        else "every channel"
    )
    role = (
        f"<@&{settings.moderator_role_id}>"
        if settings.moderator_role_id
        else "none (Manage Server only)"
    )
    lines = [
        f"**Channels:** {channels}",
        f"**NSFW policy:** `{policy.nsfw_policy}` — {NSFW_CHOICES[policy.nsfw_policy]}",
        f"**Default workflow:** {policy.default_template}",
        f"**Default steps:** {policy.default_steps or 'the workflow default'}",
        f"**Default CFG:** {policy.default_cfg if policy.default_cfg is not None else 'the workflow default'}",
        f"**Caps:** {policy.max_steps} steps, {policy.max_count} images, {policy.max_pixels / 1e6:.2f} MP per image",
        f"**Moderator role:** {role}",
        f"**Ping when a result took:** {settings.ping_after_seconds} s or more",
        f"**Gallery:** {f'<#{settings.gallery_channel_id}>' if settings.gallery_channel_id else 'none'}",
        f"**Blocked words of this server:** {len(settings.blocked_words or ())} "
        "(`/settings words list`)",
        "**Workflows turned off:** "
        + (", ".join(f"`{w}`" for w in settings.disabled_workflows or ()) or "none"),
    ]
    return discord.Embed(title="Server settings", description="\n".join(lines))


class Settings(commands.Cog):
    """A server's choices, stored per server and audited."""

    settings = app_commands.Group(
        name="settings",
        description="This server's image policy (Manage Server).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    async def _update(self, interaction: discord.Interaction, said: str, **changes) -> None:
        updated = await acknowledge.in_time(
            interaction,
            self.bot.services.guild_settings.update(
                interaction.guild_id, interaction.user.id, **changes
            ),
        )
        await self._show(interaction, said, updated)

    async def _show(
        self, interaction: discord.Interaction, said: str, settings: GuildSettings
    ) -> None:
        await outgoing.answer(interaction, said, embed=describe(settings, bot=self.bot))

    @settings.command(name="show", description="Every setting of this server.")
    @managers_only()
    async def show(self, interaction: discord.Interaction) -> None:
        current = await acknowledge.in_time(
            interaction, self.bot.services.guild_settings.get(interaction.guild_id)
        )
        await outgoing.answer(interaction, embed=describe(current, bot=self.bot))

    @settings.command(
        name="channels", description="Where /imagine works: add or remove a channel, or allow all."
    )
    @app_commands.choices(
        action=[app_commands.Choice(name=n, value=n) for n in ("add", "remove", "allow everywhere")]
    )
    @app_commands.describe(
        action="add or remove a channel, or allow every channel",
        channel="the channel to add or remove",
    )
    @managers_only()
    async def channels(
        self,
        interaction: discord.Interaction,
        action: str,
        channel: app_commands.AppCommandChannel | None = None,
    ) -> None:
        store = self.bot.services.guild_settings
        if action == "allow everywhere":
            await self._update(
                interaction, "/imagine now works in every channel.", allowed_channels=None
            )
            return
        if channel is None:
            raise MemberError(f"Name the channel to {action}.")
        edit = store.add_channel if action == "add" else store.remove_channel
        change = await acknowledge.in_time(
            interaction, edit(interaction.guild_id, interaction.user.id, channel.id)
        )
        said = f"{'Added' if action == 'add' else 'Removed'} {channel.mention}."
        if change.after.allowed_channels == ():
            said += " No channel is left, so /imagine works nowhere until you add one or allow everywhere."
        await self._show(interaction, said, change.after)

    @settings.command(name="nsfw", description="What happens outside age-restricted channels.")
    @app_commands.choices(
        policy=[app_commands.Choice(name=text, value=key) for key, text in NSFW_CHOICES.items()]
    )
    @app_commands.describe(policy="what to do outside age-restricted channels")
    @managers_only()
    async def nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        policy = RENAMED_NSFW_POLICIES.get(policy, policy)
        if policy not in NSFW_POLICIES:
            raise MemberError(f"Choose one of: {', '.join(NSFW_POLICIES)}.")
        await self._update(
            interaction, f"NSFW policy set: {NSFW_CHOICES[policy]}.", nsfw_policy=policy
        )

    @settings.command(
        name="defaults",
        description="Defaults for prompts that do not say (leave all out to reset).",
    )
    @app_commands.describe(
        workflow="the workflow prompts use unless they say",
        steps="sampling steps unless a prompt says",
        cfg="CFG unless a prompt says",
    )
    @managers_only()
    async def defaults(
        self,
        interaction: discord.Interaction,
        workflow: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
    ) -> None:
        services = self.bot.services
        if workflow is not None and services.templates.get(workflow) is None:
            names = [f"`{name}`" for name in services.templates.names()]
            raise MemberError(
                f"There is no workflow `{workflow[:40]}`. Workflows: {outgoing.summarise(names)}."
            )
        if workflow is None and steps is None and cfg is None:
            await self._update(
                interaction,
                "Defaults reset to the bot's.",
                default_workflow=None,
                default_steps=None,
                default_cfg=None,
            )
            return
        changes = {
            k: v
            for k, v in (
                ("default_workflow", workflow),
                ("default_steps", steps),
                ("default_cfg", cfg),
            )
            if v is not None
        }

        def within_the_cap(current: GuildSettings) -> dict[str, Any]:
            # Read in the same transaction as the write: a cap lowered meanwhile is seen.
            cap = current.policy(services.policy()).max_steps
            if steps is not None and steps > cap:
                raise MemberError(
                    f"{steps} steps is above this server's cap of {cap}; raise the cap first."
                )
            return changes

        change = await acknowledge.in_time(
            interaction,
            services.guild_settings.change(
                interaction.guild_id, interaction.user.id, within_the_cap
            ),
        )
        await self._show(interaction, "Defaults updated.", change.after)

    @defaults.autocomplete("workflow")
    async def workflow_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = [n for n in self.bot.services.templates.names() if current.lower() in n]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @settings.command(
        name="words", description="This server's blocked words: add, remove or list them."
    )
    @app_commands.choices(
        action=[app_commands.Choice(name=n, value=n) for n in ("add", "remove", "list")]
    )
    @app_commands.describe(
        action="add or remove a word, or list them",
        word="a word or phrase prompts may not contain (not needed to list)",
    )
    @moderators_only()
    async def words(
        self, interaction: discord.Interaction, action: str, word: str | None = None
    ) -> None:
        store = self.bot.services.guild_settings
        if action == "list":
            current = await acknowledge.in_time(interaction, store.get(interaction.guild_id))
            words = current.blocked_words or ()
            shown = outgoing.summarise([f"`{w}`" for w in words], most=MAX_BLOCKED_WORDS)
            operator = len(self.bot.services.policy().blocked_words)
            also = f" The bot's own list has {operator} more." if operator else ""
            said = (
                f"This server blocks: {shown}.{also}"
                if words
                else f"This server blocks no words of its own.{also}"
            )
            await outgoing.answer(interaction, said)
            return
        cleaned = " ".join((word or "").lower().split())
        if not cleaned:
            raise MemberError(f"Name the word to {action}.")
        if len(cleaned) > MAX_WORD_LENGTH or "`" in cleaned:
            raise MemberError(
                f"A blocked word is at most {MAX_WORD_LENGTH} characters, without backticks."
            )
        if action == "add":
            current = await acknowledge.in_time(interaction, store.get(interaction.guild_id))
            if len(current.blocked_words or ()) >= MAX_BLOCKED_WORDS:
                raise MemberError(
                    f"This server already blocks {MAX_BLOCKED_WORDS} words; remove one first."
                )
            change = await acknowledge.in_time(
                interaction, store.add_word(interaction.guild_id, interaction.user.id, cleaned)
            )
            said = (
                f"Prompts containing `{cleaned}` are now refused here."
                if change.before != change.after
                else f"`{cleaned}` was already blocked here."
            )
        else:
            change = await acknowledge.in_time(
                interaction, store.remove_word(interaction.guild_id, interaction.user.id, cleaned)
            )
            said = (
                f"`{cleaned}` is no longer blocked here."
                if change.before != change.after
                else f"`{cleaned}` was not on this server's list."
            )
            if cleaned in self.bot.services.policy().blocked_words:
                said += " The bot's own list still blocks it."
        await outgoing.answer(interaction, said)

    @settings.command(
        name="workflows", description="Turn a workflow off (or back on) for this server."
    )
    @app_commands.choices(
        action=[app_commands.Choice(name=n, value=n) for n in ("turn off", "turn on")]
    )
    @app_commands.describe(action="turn the workflow off or on", workflow="the workflow")
    @moderators_only()
    async def workflows(self, interaction: discord.Interaction, action: str, workflow: str) -> None:
        services = self.bot.services
        template = services.templates.get(workflow)
        if template is None:
            names = [f"`{name}`" for name in services.templates.names()]
            raise MemberError(
                f"There is no workflow `{workflow[:40]}`. Workflows: {outgoing.summarise(names)}."
            )
        enabled = action == "turn on"
        change = await acknowledge.in_time(
            interaction,
            services.guild_settings.set_workflow(
                interaction.guild_id, interaction.user.id, template.name, enabled=enabled
            ),
        )
        said = (
            f"Members can use `{template.name}` again."
            if enabled
            else f"`{template.name}` is turned off here: it is hidden from /imagine and refused when named."
        )
        await self._show(interaction, said, change.after)

    @workflows.autocomplete("workflow")
    async def any_workflow_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = [t.name for t in self.bot.services.templates if current.lower() in t.name]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    styles = app_commands.Group(
        name="styles", description="This server's own styles.", parent=settings
    )

    @styles.command(name="add", description="Add a style members can pick with style: or --style.")
    @app_commands.describe(
        name="lowercase name, e.g. watercolor",
        prompt="the words around the member's, with {prompt} where theirs go",
        negative="words added to the negative prompt",
        workflow="the workflow it runs (a member's own choice still wins)",
        loras="LoRAs, e.g. detail:0.8, film_grain:0.5",
        aspect="default shape, e.g. 16:9",
        steps="default sampling steps",
        cfg="default CFG",
        sampler="default sampler, e.g. DPM++ 2M Karras",
        description="one line saying what it looks like",
    )
    @moderators_only()
    async def style_add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        prompt: app_commands.Range[str, 1, 500] = "{prompt}",
        negative: app_commands.Range[str, 1, 500] | None = None,
        workflow: str | None = None,
        loras: app_commands.Range[str, 1, 200] | None = None,
        aspect: str | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: str | None = None,
        description: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        services = self.bot.services
        defaults = {"aspect": aspect, "steps": steps, "cfg": cfg, "sampler": sampler}
        definition = {
            "prompt": prompt,
            "negative": negative or "",
            "workflow": workflow,
            "loras": [part.strip() for part in (loras or "").split(",") if part.strip()],
            "defaults": {k: v for k, v in defaults.items() if v is not None},
            "description": description or "",
        }
        try:
            style = parse_style(
                name, {k: v for k, v in definition.items() if v is not None}, services.templates
            )
            await acknowledge.in_time(
                interaction, services.styles.add(interaction.guild_id, interaction.user.id, style)
            )
        except StyleError as exc:
            raise MemberError(f"That style cannot be added: {exc}.") from None
        await outgoing.answer(
            interaction,
            f"Added the style `{style.name}`: {style.summary()}. Members can use it with "
            f"`style:{style.name}` or `--style {style.name}`.",
        )

    @styles.command(name="remove", description="Remove one of this server's styles.")
    @app_commands.describe(name="the style")
    @moderators_only()
    async def style_remove(self, interaction: discord.Interaction, name: str) -> None:
        services = self.bot.services
        wanted = name.strip().lower()
        if wanted in services.styles.shipped:
            raise MemberError(
                f"`{wanted[:32]}` is one of the bot's own styles; only the operator can remove it."
            )
        removed = await acknowledge.in_time(
            interaction, services.styles.remove(interaction.guild_id, interaction.user.id, wanted)
        )
        said = (
            f"Removed the style `{wanted}`."
            if removed
            else f"This server has no style `{wanted[:32]}`."
        )
        await outgoing.answer(interaction, said)

    @styles.command(name="list", description="Every style members can use here.")
    @moderators_only()
    async def style_list(self, interaction: discord.Interaction) -> None:
        styles = await acknowledge.in_time(
            interaction, self.bot.services.styles.all(interaction.guild_id)
        )
        lines = [
            f"`{s.name}` ({'the bot' if s.shipped else 'this server'}) — {s.summary()}"
            for s in styles
        ]
        description = outgoing.lines_within(lines, outgoing.DESCRIPTION_LIMIT) or "No styles yet."
        await outgoing.answer(
            interaction, embed=discord.Embed(title="Styles", description=description)
        )

    @style_remove.autocomplete("name")
    async def own_style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        styles = await self.bot.services.styles.all(interaction.guild_id)
        names = [s.name for s in styles if not s.shipped and current.lower() in s.name]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    @style_add.autocomplete("workflow")
    async def style_workflow_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await self.workflow_choices(interaction, current)

    @settings.command(
        name="caps", description="Limits members cannot go past (leave all out to reset)."
    )
    @app_commands.describe(
        max_steps="most sampling steps a prompt may ask for",
        max_count="most images in one job",
        max_megapixels="largest image, in megapixels (1.0 is 1024x1024)",
    )
    @managers_only()
    async def caps(
        self,
        interaction: discord.Interaction,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        max_count: app_commands.Range[int, 1, 10] | None = None,
        max_megapixels: app_commands.Range[float, 0.25, 16.0] | None = None,
    ) -> None:
        if max_steps is None and max_count is None and max_megapixels is None:
            await self._update(
                interaction,
                "Caps reset to the bot's.",
                max_steps=None,
                max_count=None,
                max_pixels=None,
            )
            return
        changes = {
            "max_steps": max_steps,
            "max_count": max_count,
            "max_pixels": round(max_megapixels * 1024 * 1024)
            if max_megapixels is not None
            else None,
        }
        operator = self.bot.services.policy()
        note = (
            " The bot's own limits still apply where they are lower."
            if ((max_steps or 0) > operator.max_steps or (max_count or 0) > operator.max_count)
            else ""
        )
        await self._update(
            interaction,
            f"Caps updated.{note}",
            **{k: v for k, v in changes.items() if v is not None},
        )

    @settings.command(
        name="moderators",
        description="The role whose members may moderate: quotas, stats, words, workflows, styles.",
    )
    @app_commands.describe(role="members with this role count as moderators")
    @managers_only()
    async def moderators(
        self, interaction: discord.Interaction, role: discord.Role | None = None
    ) -> None:
        said = (
            f"Members with {role.mention} are now moderators: they may use `/quota`, `/stats` and "
            "`/settings words`, `workflows` and `styles`. Discord shows them these commands only "
            f"once the server allows {role.mention} for `/quota`, `/stats` and `/settings` under "
            f"Server Settings → Integrations → {self.bot.user.name if self.bot.user else 'the bot'}."
            if role
            else "Only members with Manage Server are moderators now."
        )
        await self._update(interaction, said, moderator_role_id=role.id if role else None)

    @settings.command(
        name="ping",
        description="After how long a finished job pings its member (leave out to reset).",
    )
    @app_commands.describe(seconds="a result that took at least this long pings its member")
    @managers_only()
    async def ping(
        self,
        interaction: discord.Interaction,
        seconds: app_commands.Range[int, 0, 86_400] | None = None,
    ) -> None:
        said = (
            f"Results that take {seconds} s or more now ping their member."
            if seconds is not None
            else "Ping delay reset to the bot's."
        )
        await self._update(interaction, said, ping_after=seconds)

    @settings.command(
        name="gallery", description="The channel results can be shared to (leave out for none)."
    )
    @app_commands.describe(channel="where the Share button posts images")
    @managers_only()
    async def gallery(
        self,
        interaction: discord.Interaction,
        channel: app_commands.AppCommandChannel | None = None,
    ) -> None:
        if channel is not None and channel.type not in (
            discord.ChannelType.text,
            discord.ChannelType.news,
        ):
            raise MemberError("The gallery must be a text channel.")
        said = (
            f"Results can now be shared to {channel.mention}."
            + ("" if channel.nsfw else " Images made in age-restricted channels cannot go there.")
            if channel
            else "This server has no gallery now; the Share button says so."
        )
        await self._update(interaction, said, gallery_channel_id=channel.id if channel else None)


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Settings(bot))
