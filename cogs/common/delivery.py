"""Showing jobs in Discord: paced progress edits and restart-safe delivery with the bot token."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.images import ImageFile, prepare_uploads
from bot.jobs import DeliveryError, Job, JobUpdate, UpdateKind
from bot.metadata import with_generation_data
from bot.ratelimit import TokenBucket
from bot.supervisor import Loop
from cogs.common import outgoing, progress, render
from cogs.common.buttons import NOT_PRICED, Offers, price_offers, result_view

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

# What an unboosted server takes, for jobs stored before the interaction's limit was recorded.
DEFAULT_UPLOAD_LIMIT = 10 * 2**20
UPLOAD_ATTEMPTS = 5
ENDED_MEMORY = 10_000
# Failures below HTTP: the connection dropped or timed out. Worth another try later.
UNREACHABLE = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class ChannelPacer:
    """A token bucket per channel, so many jobs in one channel never hit Discord's edit limit."""

    def __init__(self, *, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._buckets: dict[int, TokenBucket] = {}

    def ready(self, channel_id: int) -> bool:
        return self._bucket(channel_id).ready()

    async def acquire(self, channel_id: int) -> None:
        await self._bucket(channel_id).acquire()

    def _bucket(self, channel_id: int) -> TokenBucket:
        bucket = self._buckets.get(channel_id)
        if bucket is None:
            bucket = TokenBucket(per_second=self.per_second, burst=self.burst)
            self._buckets[channel_id] = bucket
        return bucket


@dataclass
class _Pending:
    channel_id: int
    message_id: int
    text: str


class ProgressBoard:
    """Coalesces progress updates: only the latest text per message, edited when its channel allows."""

    def __init__(
        self,
        bot: Stablehand,
        pacer: ChannelPacer,
        *,
        message_interval: float,
        edit_timeout: float,
        tick: float,
    ) -> None:
        self._bot = bot
        self._pacer = pacer
        self._interval = message_interval
        self._edit_timeout = edit_timeout
        self._tick_interval = tick
        # Running jobs, their last update and when it came: the bar moves between polls too.
        self._running: dict[int, tuple[JobUpdate, float]] = {}
        self._last_tick = 0.0
        self._pending: dict[int, _Pending] = {}
        self._last_edit: dict[int, float] = {}
        self._shown: dict[int, str] = {}
        self._ended: dict[int, None] = {}  # insertion-ordered: the oldest are dropped first
        self._wake = asyncio.Event()
        self._loop: Loop | None = None
        self._deliveries = 0

    def start(self) -> None:
        if self._loop is None:
            self._loop = self._bot.supervisor.start("progress-board", self._run)

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None

    def update(self, update: JobUpdate) -> None:
        """Job-manager subscriber: remember the newest progress text of each job's message."""
        job = update.job
        if update.kind.ended:
            self.forget(job.id)
            self._ended[job.id] = None
            while len(self._ended) > ENDED_MEMORY:
                self._ended.pop(next(iter(self._ended)))
            return
        if job.id in self._ended or job.channel_id is None or job.message_id is None:
            return  # a late update must not overwrite how the job ended
        if update.kind is UpdateKind.RUNNING:
            self._running[job.id] = (update, time.monotonic())
        else:
            self._running.pop(job.id, None)
        self._show_later(update)

    def _show_later(self, update: JobUpdate) -> None:
        job = update.job
        assert job.channel_id is not None and job.message_id is not None
        text = self._text(update)
        if self._shown.get(job.id) == text:
            return
        self._pending[job.id] = _Pending(job.channel_id, job.message_id, text)
        self._wake.set()

    def _tick(self) -> None:
        """Move each running job's bar on by the time since its last update."""
        now = self._last_tick = time.monotonic()
        for update, received in list(self._running.values()):
            elapsed = (update.elapsed or 0.0) + (now - received)
            self._show_later(replace(update, elapsed=elapsed))

    def _text(self, update: JobUpdate) -> str:
        """The progress text, with the learned duration of a running job."""
        estimate = None
        if update.kind is UpdateKind.RUNNING and self._bot.has_services:
            estimate = self._bot.services.jobs.durations.expect(update.job.request)
        return progress.progress_text(update, estimate=estimate)

    def forget(self, job_id: int) -> None:
        self._running.pop(job_id, None)
        self._pending.pop(job_id, None)
        self._last_edit.pop(job_id, None)
        self._shown.pop(job_id, None)

    def delivery_started(self) -> None:
        self._deliveries += 1

    def delivery_ended(self) -> None:
        self._deliveries -= 1

    async def _run(self, loop: Loop) -> None:
        while True:
            loop.beat()
            next_tick = self._last_tick + self._tick_interval - time.monotonic()
            await loop.idle(self._wake, max(0.0, next_tick) if self._running else None)
            self._wake.clear()
            if time.monotonic() - self._last_tick >= self._tick_interval:
                self._tick()
            while self._pending:
                loop.beat()
                job_id = self._next_due()
                if job_id is None:
                    await asyncio.sleep(0.05)
                    continue
                pending = self._pending.pop(job_id)
                await self._pacer.acquire(pending.channel_id)
                await self._edit(job_id, pending)

    def _next_due(self) -> int | None:
        """The oldest-edited pending message whose channel has room and no delivery waiting."""
        if self._deliveries:
            return None
        now = time.monotonic()
        due = [
            job_id
            for job_id, p in self._pending.items()
            if now - self._last_edit.get(job_id, 0.0) >= self._interval
            and self._pacer.ready(p.channel_id)
        ]
        return min(due, key=lambda j: self._last_edit.get(j, 0.0)) if due else None

    async def _edit(self, job_id: int, pending: _Pending) -> None:
        message = self._bot.get_partial_messageable(pending.channel_id).get_partial_message(
            pending.message_id
        )
        self._last_edit[job_id] = time.monotonic()
        try:
            async with asyncio.timeout(self._edit_timeout):
                await outgoing.edit(message, content=pending.text)
            self._shown[job_id] = pending.text
        except (*UNREACHABLE, discord.DiscordServerError) as exc:
            # Discord is away for a moment: show this text (unless a newer one came) next time.
            log.info(
                "job %d: progress edit failed (%s); trying again later", job_id, type(exc).__name__
            )
            if job_id not in self._ended:
                self._pending.setdefault(job_id, pending)
        except discord.HTTPException as exc:
            # Progress is best effort: delivery has its own fallbacks if the message is gone.
            log.info("job %d: progress edit failed (%s)", job_id, exc.status)


@dataclass(frozen=True)
class Outcome:
    """What a job's message becomes: text, an embed, files and buttons."""

    content: str
    embed: discord.Embed | None = None
    images: tuple[ImageFile, ...] = ()
    spoiler: bool = False
    view: discord.ui.View | None = None

    def files(self, job_id: int) -> list[discord.File]:
        return [
            discord.File(
                io.BytesIO(image.data),
                filename=f"stablehand-{job_id}-{n}.{image.filename.rsplit('.', 1)[-1]}",
                spoiler=self.spoiler,
            )
            for n, image in enumerate(self.images, start=1)
        ]


class DiscordDelivery:
    """Edits a job's own message into its outcome with the bot token, or posts a fresh one."""

    def __init__(
        self,
        bot: Stablehand,
        pacer: ChannelPacer,
        board: ProgressBoard,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bot = bot
        self._pacer = pacer
        self._board = board
        self._clock = clock

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        services = self._bot.services
        balance = await services.quotas.balance(job.guild_id, job.user_id, job.role_ids)
        embed = render.result_embed(
            job, remaining=balance.remaining, this_period=services.quotas.this_period
        )
        policy = await services.policy_for(job.guild_id)
        try:
            offers = price_offers(services, job, policy)
        except Exception:
            # A bug in pricing must not keep the images from their member: no buttons that start jobs.
            log.exception("job %d: its buttons could not be priced", job.id)
            offers = NOT_PRICED
        preferences = await services.preferences.get(job.user_id)
        limit = job.filesize_limit or DEFAULT_UPLOAD_LIMIT
        # Every PNG carries A1111's parameters and the ComfyUI workflow that made it.
        images = with_generation_data(images, job.request, job.workflow_json)
        # A 413 means the limit the interaction reported was too high: halve what was refused.
        for _ in range(UPLOAD_ATTEMPTS):
            upload = prepare_uploads(images, limit=limit)
            outcome = Outcome(
                render.result_content(job, (*upload.notes, *_offer_notes(offers))),
                embed,
                upload.files,
                spoiler=job.request.spoiler,
                view=result_view(job, len(upload.files), offers),
            )
            try:
                in_dm = await self._show(job, outcome, by_dm=preferences.by_dm)
            except UNREACHABLE as exc:
                raise DeliveryError(
                    f"Discord could not be reached ({type(exc).__name__})"
                ) from None
            except discord.HTTPException as exc:
                if exc.status != 413:
                    raise DeliveryError(f"Discord answered {exc.status}") from None
                limit = max(len(f.data) for f in upload.files) // 2
                log.info(
                    "job %d: Discord refused the upload as too large; retrying under %d bytes",
                    job.id,
                    limit,
                )
            else:
                if preferences.pings and not in_dm:  # a DM notifies by itself
                    await self._ping_after_wait(job)
                return
        raise DeliveryError(
            "the images are too large for this server even when shrunk", permanent=True
        )

    async def notify(self, job: Job) -> None:
        try:
            await self._show(job, Outcome(render.ended_text(job)))
        except UNREACHABLE as exc:
            raise DeliveryError(f"Discord could not be reached ({type(exc).__name__})") from None
        except discord.HTTPException as exc:
            raise DeliveryError(f"Discord answered {exc.status}") from None

    async def _ping_after_wait(self, job: Job) -> None:
        """A result that took a while gets a reply pinging its member: an edit notifies nobody."""
        services = self._bot.services
        if job.guild_id is None:
            return
        settings = await services.guild_settings.get(job.guild_id)
        if self._clock() - job.created_at < settings.ping_after_seconds:
            return
        shown = await services.jobs.get(job.id)
        if shown is None or shown.channel_id is None or shown.message_id is None:
            return
        channel = self._bot.get_partial_messageable(shown.channel_id)
        link = render.job_link(shown)
        try:
            await self._pacer.acquire(shown.channel_id)
            await outgoing.ping(
                channel,
                job.user_id,
                render.ready_text(job, link),
                reply_to=channel.get_partial_message(shown.message_id),
            )
        except (*UNREACHABLE, discord.HTTPException) as exc:
            # The images are shown; a missed ping is not worth a failed delivery.
            log.info("job %d: could not ping its member (%s)", job.id, type(exc).__name__)

    async def _show(self, job: Job, outcome: Outcome, *, by_dm: bool = False) -> bool:
        """Show the outcome; True if it went to the member's DMs."""
        self._board.forget(job.id)
        self._board.delivery_started()
        try:
            if by_dm and await self._sent_by_dm(job, outcome):
                return True
            return await self._edit_or_post(job, outcome)
        finally:
            self._board.delivery_ended()

    async def _sent_by_dm(self, job: Job, outcome: Outcome) -> bool:
        """The member asked for results by DM: send them there, and say so where the job was.

        False if their DMs are closed: the result then goes where it would have.
        """
        try:
            user = await self._bot.fetch_user(job.user_id)
            dm = await user.create_dm()
            if job.channel_id == dm.id and job.message_id is not None:
                # Sent there before the bot could record the delivery: show it again in place.
                await outgoing.edit(
                    dm.get_partial_message(job.message_id),
                    content=outcome.content,
                    embed=outcome.embed,
                    attachments=outcome.files(job.id),
                )
                return True
            # Buttons stay in the server: a DM holds only the images and their details.
            message = await outgoing.send(
                dm, outcome.content, embed=outcome.embed, files=outcome.files(job.id)
            )
        except (discord.NotFound, discord.Forbidden):
            log.info("job %d: the member's DMs are closed; delivering in the channel", job.id)
            return False
        await self._bot.services.jobs.relocate(job.id, message.channel.id, message.id)
        if job.channel_id is not None and job.message_id is not None:
            channel = self._bot.get_partial_messageable(job.channel_id)
            await self._pacer.acquire(job.channel_id)
            try:
                await outgoing.edit(
                    channel.get_partial_message(job.message_id),
                    content=render.sent_by_dm_text(job),
                    view=None,
                )
            except (*UNREACHABLE, discord.HTTPException) as exc:
                # The DM is what counts: a channel message gone or out of reach stays as it was.
                log.info(
                    "job %d: could not say in the channel that it went by DM (%s)", job.id, exc
                )
        return True

    async def _edit_or_post(self, job: Job, outcome: Outcome) -> bool:
        """Edit the job's message into the outcome, or post it anew; True if that was by DM."""
        if job.channel_id is not None and job.message_id is not None:
            channel = self._bot.get_partial_messageable(job.channel_id)
            await self._pacer.acquire(job.channel_id)
            try:
                await outgoing.edit(
                    channel.get_partial_message(job.message_id),
                    content=outcome.content,
                    embed=outcome.embed,
                    attachments=outcome.files(job.id),
                    view=outcome.view,
                )
                return False
            except (discord.NotFound, discord.Forbidden) as exc:
                log.info(
                    "job %d: cannot edit its message (%s); posting a fresh one", job.id, exc.status
                )
        return await self._post_fresh(job, outcome)

    async def _post_fresh(self, job: Job, outcome: Outcome) -> bool:
        """Post where the job's message was; if the channel is gone too, DM the member."""
        if job.channel_id is not None:
            channel = self._bot.get_partial_messageable(job.channel_id)
            await self._pacer.acquire(job.channel_id)
            try:
                message = await outgoing.send(
                    channel,
                    outcome.content,
                    embed=outcome.embed,
                    files=outcome.files(job.id),
                    view=outcome.view,
                )
            except (discord.NotFound, discord.Forbidden):
                log.info(
                    "job %d: cannot post in channel %s; sending it by DM", job.id, job.channel_id
                )
            else:
                await self._bot.services.jobs.relocate(job.id, message.channel.id, message.id)
                return False
        try:
            user = await self._bot.fetch_user(job.user_id)
            # Buttons stay in the server: a DM holds only the images and their details.
            message = await outgoing.send(
                user, outcome.content, embed=outcome.embed, files=outcome.files(job.id)
            )
        except (discord.NotFound, discord.Forbidden):
            raise DeliveryError(
                "neither the channel nor the member's DMs accept messages", permanent=True
            ) from None
        await self._bot.services.jobs.relocate(job.id, message.channel.id, message.id)
        return True


def _offer_notes(offers: Offers) -> tuple[str, ...]:
    return (offers.no_upscale,) if offers.no_upscale else ()
