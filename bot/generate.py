"""`python -m bot generate`: one prompt through the job manager, progress on the terminal, files out."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Settings
from bot.images import ImageFile
from bot.jobs import Job, JobUpdate
from bot.metadata import with_generation_data
from bot.polling import Timing
from bot.prompt import Options, PromptError
from bot.services import Services

CLI_USER = 0


class FileDelivery:
    """Saves a job's images (PNG with generation data) and reports its end on the terminal."""

    def __init__(self, out: Path, finished: asyncio.Future[Job]) -> None:
        self.out = out
        self.finished = finished
        self.saved: list[Path] = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        marked = with_generation_data(images, job.request, job.workflow_json)
        for index, image in enumerate(marked, start=1):
            extension = image.filename.rsplit(".", 1)[-1]
            # Every run is job 1 of its own scratch database: the time keeps names apart.
            path = self.out / f"stablehand-{self.stamp}-seed{job.request.seed}-{index}.{extension}"
            path.write_bytes(image.data)
            self.saved.append(path)
        if not self.finished.done():
            self.finished.set_result(job)

    async def notify(self, job: Job) -> None:
        if not self.finished.done():
            self.finished.set_result(job)


def print_progress(update: JobUpdate) -> None:
    detail = {
        "queued": f"queued (position {update.position})",
        "waiting": "waiting for a GPU worker to start"
        if update.cold
        else "waiting in RunPod's queue",
        "running": f"generating ({int(update.elapsed or 0)} s)",
        "delivering": "downloading the images",
    }.get(update.kind)
    if detail:
        print(f"  {detail}", file=sys.stderr)


async def generate(
    settings: Settings,
    prompt: str,
    *,
    workflow: str | None,
    out: Path,
    timing: Timing | None = None,
) -> int:
    """Run one job end to end on the configured endpoint; 0 when images were saved."""
    with tempfile.TemporaryDirectory(prefix="stablehand-") as scratch:
        # A scratch database: the bot's own would let this process resume the bot's jobs.
        services = await Services.open(
            settings, database_path=Path(scratch) / "generate.db", charge=False
        )
        try:
            try:
                new_job = services.prepare(
                    prompt,
                    user_id=CLI_USER,
                    guild_id=None,
                    channel_id=None,
                    options=Options(workflow=workflow),
                )
            except PromptError as exc:
                print(str(exc), file=sys.stderr)
                return 1
            finished: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
            delivery = FileDelivery(out, finished)
            services.jobs.subscribe(print_progress)
            await services.jobs.start(delivery)
            job = await services.jobs.accept(new_job)
            await services.jobs.attach_message(job.id, None, None)
            request = job.request
            print(
                f"job {job.id}: {request.template}, {request.width}x{request.height}, seed {request.seed}",
                file=sys.stderr,
            )
            ended = await finished
        finally:
            await services.close()
    if ended.failure:
        print(f"failed: {ended.failure}", file=sys.stderr)
        return 1
    for path in delivery.saved:
        print(path)
    return 0
