"""The discord.py bot: opens the services, loads the cogs, resumes jobs when it runs."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass

import discord
from discord.ext import commands

from bot import heartbeat
from bot.config import Settings
from bot.polling import Timing
from bot.services import Services
from bot.supervisor import Loop, Supervisor
from cogs.common.delivery import ChannelPacer, DiscordDelivery, ProgressBoard
from cogs.common.errors import handle_interaction_error

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.jobs",
    "cogs.loras",
    "cogs.prefer",
    "cogs.quota",
    "cogs.settings",
    "cogs.stats",
    "cogs.gallery",
)


@dataclass(frozen=True)
class Pacing:
    """Discord-side intervals (tests shrink them): how often progress may edit a message."""

    message_interval: float = 3.0
    # How often a running job's bar moves on by itself, between the job manager's updates.
    progress_tick: float = 5.0
    channel_burst: int = 5
    channel_per_second: float = 0.9
    # A progress edit that hangs longer is given up and tried again later.
    edit_timeout: float = 30.0
    ack_deadline: float = 2.0  # database work still running by then is deferred (3 s limit)
    # With more commands than this waiting for their first answer, a new one is deferred at once.
    ack_crowd: int = 4


class Stablehand(commands.AutoShardedBot):
    """Stablehand's bot. `setup_hook` wires everything; `start` also resumes unfinished jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        open_services: bool = True,
        timing: Timing | None = None,
        pacing: Pacing | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        # Stablehand never joins voice: skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            # Jobs keep their own message ids; a cache of sent messages would only grow.
            max_messages=None,
            # Unset: one shard, as an unsharded client; set: the shards this process serves.
            shard_count=settings.discord_shard_count or 1,
            shard_ids=list(settings.discord_shard_ids) if settings.discord_shard_ids else None,
        )
        self.settings = settings
        self.pacing = pacing or Pacing()
        # Every background loop of this process runs under this one supervisor.
        self.supervisor = supervisor or Supervisor()
        self._open_services = open_services
        self._timing = timing
        self._services: Services | None = None
        # Built by `setup_hook`: how jobs reach Discord, and the board that edits their progress.
        self.deliverer: DiscordDelivery | None = None
        self.progress_board: ProgressBoard | None = None
        self._heartbeat: Loop | None = None

    @property
    def has_services(self) -> bool:
        return self._services is not None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("services are not open (this bot was built for `sync` only)")
        return self._services

    async def setup_hook(self) -> None:
        """The one place the bot is wired: services, delivery to Discord, errors, extensions."""
        if self._open_services:
            self._services = await Services.open(self.settings, timing=self._timing)
        pacing = self.pacing
        pacer = ChannelPacer(burst=pacing.channel_burst, per_second=pacing.channel_per_second)
        self.progress_board = ProgressBoard(
            self,
            pacer,
            message_interval=pacing.message_interval,
            edit_timeout=pacing.edit_timeout,
            tick=pacing.progress_tick,
        )
        self.deliverer = DiscordDelivery(self, pacer, self.progress_board)
        if self.has_services:
            self.services.jobs.subscribe(self.progress_board.update)
            self.progress_board.start()
        self.tree.on_error = handle_interaction_error
        for extension in EXTENSIONS:
            await self.load_extension(extension)

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        await self.login(token)
        await self.start_jobs()
        self.start_heartbeat()
        await self.connect(reconnect=reconnect)

    def start_heartbeat(self) -> None:
        """Write the heartbeat file every HEARTBEAT_INTERVAL, as a supervised loop."""
        if self._heartbeat is not None:
            return
        path = heartbeat.heartbeat_path(self.settings.database_path)
        interval = float(self.settings.heartbeat_interval)
        self._heartbeat = self.supervisor.start(
            "heartbeat", functools.partial(heartbeat.beat_forever, path, interval, self._beat)
        )

    def _beat(self) -> heartbeat.Beat:
        at = time.time()
        leases = self.services.jobs.leases
        return heartbeat.Beat(
            at=at,
            interval=float(self.settings.heartbeat_interval),
            connected=self.is_ready() and not self.is_closed(),
            tasks=len(asyncio.all_tasks()),
            rss_mb=round(heartbeat.rss_mb(), 1),
            active_jobs=self.services.jobs.in_progress,
            pid=os.getpid(),
            slots_in_use=self.services.jobs.slots_in_use,
            stuck_after=self.supervisor.supervision.stuck_after,
            loops=tuple(heartbeat.LoopBeat.of(s, at) for s in self.supervisor.statuses()),
            leases_held=leases.held if leases.shared else None,
            last_claim=leases.last_claim,
        )

    async def on_ready(self) -> None:
        log.info(
            "ready as %s (id %s) in %d servers",
            self.user,
            self.user.id if self.user else "?",
            len(self.guilds),
        )

    async def start_jobs(self) -> None:
        """Resume unfinished jobs and start scheduling: only when the bot really runs."""
        if self.deliverer is None:
            raise RuntimeError("setup_hook has not run: log in first")
        await self.services.jobs.start(self.deliverer, supervisor=self.supervisor)

    async def close(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            self._heartbeat = None
        if self._services is not None:
            services = self._services
            log.info(
                "shutting down; %d unfinished job(s) stay in the database for the next start",
                services.jobs.in_progress,
            )
            # Deliveries still finishing during the shutdown grace need the services.
            await services.close()
            self._services = None
        if self.progress_board is not None:
            await self.progress_board.stop()
        await super().close()
