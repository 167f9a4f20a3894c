"""Everything the bot runs on, built from settings in one place and closed in one place."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bot import conflicts
from bot.config import DEFAULT_ENDPOINT, ConfigError, Settings
from bot.db import Database
from bot.engine import open_database
from bot.estimates import DurationModel
from bot.gallery import Gallery
from bot.guild_settings import GuildSettings, GuildSettingsStore
from bot.images import VerifiedImage
from bot.jobs import FreeAccounting, JobManager, Limits, NewJob
from bot.jobs.leases import process_name
from bot.loras import LoraCatalogue, LoraListError, load_loras
from bot.model_files import ModelNameError, model_file_name
from bot.polling import Timing
from bot.preferences import Preferences, PreferenceStore
from bot.prompt import (
    MAX_SEED,
    ContentPolicy,
    GenerationRequest,
    ImageInput,
    Options,
    PromptError,
    flags_in,
    parse,
)
from bot.prompt.midjourney import expand
from bot.quotas import QuotaConfig, QuotaLedger, credit_cost
from bot.runpod import RequestBudget, RunPodClient
from bot.runpod_backend import RunPodBackend, webhook_receiver
from bot.stats import Figures
from bot.store import stores_for
from bot.styles import (
    Style,
    StyleBook,
    StyleError,
    apply_style,
    load_styles,
    style_flag,
    with_words,
)
from bot.workflows import Lora, TemplateLibrary, load_library

if TYPE_CHECKING:
    from bot.postgres import PostgresDatabase

log = logging.getLogger(__name__)


def runpod_client(
    settings: Settings, *, endpoint: str = DEFAULT_ENDPOINT, http: httpx.AsyncClient | None = None
) -> RunPodClient:
    """The RunPod client of one endpoint the settings name; `http` replaces its connection pool.

    Each endpoint has its own request budget: RunPod's rate limits are per endpoint.
    """
    assert settings.runpod_api_key is not None and endpoint in settings.endpoints
    return RunPodClient(
        api_base=settings.runpod_api_base,
        endpoint_id=settings.endpoints[endpoint],
        api_key=settings.runpod_api_key,
        http=http,
        budget=RequestBudget(settings.runpod_requests_per_second),
        output_http_hosts=settings.worker_output_http_hosts,
    )


@dataclass
class Services:
    """The database, the RunPod client, the templates and the job manager, wired together."""

    settings: Settings
    db: Database | PostgresDatabase
    runpod: RunPodClient
    templates: TemplateLibrary
    jobs: JobManager
    quotas: QuotaLedger
    guild_settings: GuildSettingsStore
    preferences: PreferenceStore
    figures: Figures
    gallery: Gallery
    styles: StyleBook
    # The operator's list of the endpoint's LoRAs; None when LORAS_FILE is not set.
    loras: LoraCatalogue | None
    # Every endpoint's client by name, `runpod` (the default endpoint's) included.
    clients: Mapping[str, RunPodClient] = field(default_factory=dict)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        database_path: Path | None = None,
        timing: Timing | None = None,
        runpod: RunPodClient | None = None,
        charge: bool = True,
    ) -> Services:
        """Open everything; `charge=False` runs jobs without touching anyone's credits."""
        templates = load_library(settings.workflows_dir, endpoints=settings.endpoint_names)
        if templates.get(settings.default_workflow) is None:
            raise ConfigError(
                [
                    f"DEFAULT_WORKFLOW={settings.default_workflow!r} is not a workflow: "
                    f"use one of {', '.join(templates.names())}."
                ]
            )
        try:
            shipped_styles = load_styles(settings.styles_dir, templates)
        except StyleError as exc:
            raise ConfigError([f"STYLES_DIR={str(settings.styles_dir)!r}: {exc}."]) from None
        try:
            loras = load_loras(settings.loras_file)
        except LoraListError as exc:
            raise ConfigError([f"LORAS_FILE={str(settings.loras_file)!r}: {exc}."]) from None
        process = process_name()
        db = await open_database(settings, database_path, process=process)
        runpod = runpod or runpod_client(settings)
        clients = {DEFAULT_ENDPOINT: runpod} | {
            name: runpod_client(settings, endpoint=name) for name in settings.runpod_endpoints
        }
        durations = DurationModel()
        quotas = QuotaLedger(db, QuotaConfig.from_settings(settings), durations)
        timing = timing or Timing(
            queue_timeout=float(settings.queue_timeout),
            execution_timeout=float(settings.execution_timeout),
        )
        limits = Limits(
            max_in_flight=settings.max_jobs_in_flight,
            member_max_in_flight=settings.member_max_in_flight,
            member_max_queued=settings.member_max_queued,
            endpoint_max_in_flight=settings.endpoint_max_jobs_in_flight,
        )
        webhooks = (
            webhook_receiver(settings.webhook_public_url, settings.webhook_listen)
            if settings.webhook_public_url
            else None
        )
        jobs = JobManager(
            db,
            {
                name: RunPodBackend(client, endpoint=name, webhooks=webhooks)
                for name, client in clients.items()
            },
            accounting=quotas if charge else FreeAccounting(),
            timing=timing,
            limits=limits,
            durations=durations,
            long_polls=settings.runpod_long_polls,
            webhooks=webhooks,
            process=process,
            budgets=[client.budget for client in clients.values() if client.budget is not None],
        )
        figures = Figures(stores_for(db).stats, quotas, clock=time.time)
        operator = ContentPolicy.from_settings(settings)

        def contradiction(server: GuildSettings) -> str | None:
            return conflicts.conflict(server, operator, templates)

        return cls(
            settings,
            db,
            runpod,
            templates,
            jobs,
            quotas,
            GuildSettingsStore(db, check=contradiction),
            PreferenceStore(db),
            figures,
            Gallery(db),
            StyleBook(db, shipped_styles, templates),
            loras,
            clients,
        )

    def policy(self) -> ContentPolicy:
        """The operator's policy from settings, before any server's choices."""
        return ContentPolicy.from_settings(self.settings)

    async def policy_for(self, guild_id: int | None) -> ContentPolicy:
        if guild_id is None:
            return self.policy()
        server = await self.guild_settings.get(guild_id)
        return conflicts.server_policy(server, self.policy(), self.templates)

    async def style_for(
        self, guild_id: int | None, text: str, typed: str | None, preferred: str | None = None
    ) -> tuple[Style | None, str]:
        """The style a request asks for (typed option, then `--style`, then the member's
        preference) and the prompt without its `--style`; raises `PromptError` for an unknown
        style named in the request. A preferred style removed since is left out."""
        flagged = style_flag(text)
        if flagged is not None:
            name, rest = flagged
            # Midjourney's `--style raw` is not a style here, unless a server made one of that name.
            if name != "raw" or await self.styles.exists(guild_id, name):
                text = rest
                typed = typed or name
        if typed:
            return await self.styles.find(guild_id, typed), text
        if preferred and await self.styles.exists(guild_id, preferred):
            return await self.styles.find(guild_id, preferred), text
        return None, text

    def prepare(
        self,
        text: str,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool = False,
        options: Options | None = None,
        policy: ContentPolicy | None = None,
        image: VerifiedImage | None = None,
        filesize_limit: int | None = None,
        seed: int | None = None,
        role_ids: tuple[int, ...] = (),
        preferences: Preferences | None = None,
        style: Style | None = None,
        lora: str | None = None,
    ) -> NewJob:
        """Parse, render and cost a request in memory; raises `PromptError` with nothing stored.

        The member's `preferences` fill in what neither a typed option nor a flag says; a
        `style` (resolved by `style_for`) wraps the words and fills what the member left unsaid;
        `lora` adds a LoRA from the operator's list with its trigger words.
        """
        policy = policy or self.policy()
        options = options or Options()
        if lora:
            text = with_words(text, self.lora_words(lora))
        if style is not None:
            text, options, policy = apply_style(style, text, options, policy, self.templates)
            options = replace(options, style=style.name)
        if preferences is not None:
            # `style_for` chose the style (the preferred one included): it is applied above.
            preferences = replace(preferences, style=None)

        def parsed(options: Options, seed: int | None) -> GenerationRequest:
            return parse(
                text,
                library=self.templates,
                policy=policy,
                options=options,
                channel_nsfw=channel_nsfw,
                image=image_input(image),
                seed=seed,
            )

        request = parsed(options, seed)
        template = self.templates.get(request.template)
        if preferences is not None and template is not None:
            preferred, applied = preferences.fill(
                options,
                parsed=request,
                template=template,
                text_flags=flags_in(text),
                max_count=policy.max_count,
            )
            if applied:
                request = replace(parsed(preferred, request.seed), from_preferences=applied)
        if self.loras is not None:
            nsfw_allowed = channel_nsfw or policy.nsfw_policy == "off"
            self.loras.check(request.loras, nsfw_allowed=nsfw_allowed)
        return self.job_for(
            request,
            image=image,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            filesize_limit=filesize_limit,
            role_ids=role_ids,
        )

    def prepare_batch(
        self,
        text: str,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        channel_nsfw: bool = False,
        options: Options | None = None,
        policy: ContentPolicy | None = None,
        image: VerifiedImage | None = None,
        filesize_limit: int | None = None,
        role_ids: tuple[int, ...] = (),
        preferences: Preferences | None = None,
        style: Style | None = None,
        lora: str | None = None,
    ) -> list[NewJob]:
        """Every job `{…}` permutations and `--repeat` make of `text`, each checked, none stored.

        A repeat is its prompt again on the next seed: different images, each reproducible.
        """
        texts, repeat = expand(text)
        jobs = []
        for each in texts:
            first = self.prepare(
                each,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                channel_nsfw=channel_nsfw,
                options=options,
                policy=policy,
                image=image,
                filesize_limit=filesize_limit,
                role_ids=role_ids,
                preferences=preferences,
                style=style,
                lora=lora,
            )
            jobs.append(first)
            for offset in range(1, repeat):
                seed = (first.request.seed + offset) % (MAX_SEED + 1)
                jobs.append(
                    self.job_for(
                        first.request.with_seed(seed),
                        image=image,
                        user_id=user_id,
                        guild_id=guild_id,
                        channel_id=channel_id,
                        filesize_limit=filesize_limit,
                        role_ids=role_ids,
                    )
                )
        return jobs

    def job_for(
        self,
        request: GenerationRequest,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        image: VerifiedImage | None = None,
        filesize_limit: int | None = None,
        role_ids: tuple[int, ...] = (),
    ) -> NewJob:
        """A parsed request rendered into its workflow and costed; a LoRA the operator's list
        does not have is refused here, before anything is stored, sent or charged."""
        if self.loras is not None:
            self.loras.check(request.loras, nsfw_allowed=True)
        template = self.templates.get(request.template)
        assert template is not None
        return NewJob(
            endpoint=template.endpoint,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            request=request,
            workflow=template.render(request.values(), request.loras),
            cost=credit_cost(request, template),
            filesize_limit=filesize_limit,
            input_images=((image.name, image.data),) if image is not None and request.image else (),
            role_ids=role_ids,
        )

    def lora_words(self, name: str) -> str:
        """The `<lora:…>` tag (and trigger words) the `lora` option adds to a prompt."""
        try:
            file_name = model_file_name(name)
        except ModelNameError as exc:
            raise PromptError(f"`{name[:60]}` is not a LoRA name: {exc}.") from None
        if self.loras is None:
            return f"<lora:{file_name}:1>"
        self.loras.check([Lora(file_name)], nsfw_allowed=True)
        known = self.loras.find(file_name)
        assert known is not None
        return known.tag()

    async def close(self) -> None:
        """Stop the jobs, then close the HTTP client and the database; safe to call twice."""
        await self.jobs.stop()
        for client in self.clients.values() or (self.runpod,):
            await client.aclose()
        await self.db.close()


def image_input(image: VerifiedImage | None) -> ImageInput | None:
    """How a workflow refers to an image sent along in `input.images`."""
    if image is None:
        return None
    return ImageInput(image.name, image.width, image.height, image.source_url)
