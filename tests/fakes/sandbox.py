"""Contributor sandbox: both fakes and the real bot process; send /imagine, see what members see.

    python -m tests.fakes.sandbox "a pony astronaut --ar 16:9 --seed 42"

The bot runs exactly as `python -m bot` (its own process, full gateway), pointed at the fakes
through `tests/fakes/sitecustomize`. Every message the bot posts or edits is printed as a member
would read it, and the bot's own log lines are shown as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, FakeMessage
from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.real_worker import Stack, comfyui_running, fake_cloud, stack_argument

ROOT = Path(__file__).resolve().parents[2]
SITECUSTOMIZE = Path(__file__).resolve().parent / "sitecustomize"
# `--quick`: the bot polls and paces on test intervals, under a fake Discord limit to match
# (5 edits per 0.05 s per channel instead of Discord's 5 per 5 s).
QUICK_TIMING = (
    "first_poll=0.05,queue_interval=0.05,queue_max_interval=0.2,dense_interval=0.05,"
    "running_interval=0.05,running_max_interval=0.2,retry_delay=0.05,submit_retry_delay=0.1,"
    "delivery_retry_delay=0.1,position_interval=0.2"
)
QUICK_PACING = "message_interval=0.05,progress_tick=0.2,channel_burst=4,channel_per_second=20"
QUICK_CHANNEL_RATE = (5, 0.05)


def _option_text(value: Any) -> str:
    if isinstance(value, dict):
        if "type" in value and "name" in value and "permissions" not in value:
            return f"#{value['name']}"
        who = value.get("user", value)
        return "@" + str(who.get("username") or who.get("name") or who.get("id"))
    return str(value)


def render_message(message: FakeMessage) -> str:
    """A message the way a member reads it: content, embeds, files and buttons."""
    lines = [f"┌ message {message.id}" + (" (only you can see this)" if message.ephemeral else "")]
    lines += [f"│ {line}" for line in (message.content or "").splitlines()]
    for embed in message.embeds:
        if embed.get("title"):
            lines.append(f"│ ▌ {embed['title']}")
        lines += [f"│ ▌ {line}" for line in (embed.get("description") or "").splitlines()]
        for embed_field in embed.get("fields", []):
            lines.append(f"│ ▌ {embed_field['name']}: {embed_field['value']}")
        if embed.get("footer"):
            lines.append(f"│ ▌ {embed['footer'].get('text', '')}")
    for attachment in message.attachments:
        size = f"{attachment.width}x{attachment.height}" if attachment.width else "file"
        spoiler = " (spoiler)" if attachment.spoiler else ""
        lines.append(
            f"│ 📎 {attachment.filename} {size}, {attachment.size / 1024:.1f} KiB{spoiler}"
        )
    buttons = [
        c.get("label") or c.get("emoji", {}).get("name", "?")
        for row in message.components
        for c in row.get("components", [])
    ]
    if buttons:
        lines.append("│ [" + "] [".join(buttons) + "]")
    lines.append("└")
    return "\n".join(lines)


@dataclass
class Sandbox:
    """Both fakes plus the bot process; prints what changes in Discord."""

    discord: FakeDiscord
    runpod: FakeRunPod
    workdir: Path
    show: Callable[[str], None] = print
    process: asyncio.subprocess.Process | None = None
    bot_env: dict[str, str] = field(default_factory=dict)
    _seen: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    _relays: list[asyncio.Task[None]] = field(default_factory=list)

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNPOD_"))}
        env.update(
            DISCORD_TOKEN=self.discord.token,
            RUNPOD_API_KEY=self.runpod.api_key,
            RUNPOD_ENDPOINT_ID=self.runpod.endpoint_id,
            RUNPOD_API_BASE=self.runpod.api_base,
            DATABASE_PATH=str(self.workdir / "sandbox.db"),
            STABLEHAND_FAKE_DISCORD_URL=self.discord.url,
            PYTHONPATH=os.pathsep.join([str(SITECUSTOMIZE), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.bot_env)
        env.update(extra)
        return env

    async def start_bot(self, *args: str, **env: str) -> None:
        self.discord.connected.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=self.workdir,
            env=self.environment(**env),
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._relays = [
            asyncio.create_task(self._relay(self.process.stderr)),
            asyncio.create_task(self._relay(self.process.stdout)),
        ]
        await asyncio.wait_for(self.discord.connected.wait(), 30)

    async def stop_bot(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), 30)
        self.show(f"(bot exited with status {code})")
        return code

    async def _relay(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (line := await stream.readline()):
            self.show(f"  bot │ {line.decode(errors='replace').rstrip()}")

    async def send(self, payload: dict[str, Any]) -> None:
        await self.discord.dispatch("INTERACTION_CREATE", payload)

    async def imagine(self, prompt: str, **options: Any) -> dict[str, Any]:
        return await self.command("imagine", {"prompt": prompt, **options})

    async def command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send a slash command as the member (or `user`) and wait for the bot's answer."""
        options = options or {}
        who = {str(payloads.MODERATOR_ID): "moderator", str(payloads.OWNER_ID): "server owner"}.get(
            (user or {}).get("user", {}).get("id", ""), "member"
        )
        shown = " ".join(f"{k}:{_option_text(v)}" for k, v in options.items())
        self.show(
            f"\n> {who} types: /{name}{' ' + subcommand if subcommand else ''} {shown}".rstrip()
        )
        payload = payloads.slash_command(name, options, subcommand=subcommand, user=user)
        await self.send(payload)
        await self.discord.wait_for_callback(payload, timeout=30)
        self.print_changes()
        return payload

    async def click(
        self, message_id: int, label: str, *, user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Click the button labelled `label` on a message, as the member (or `user`)."""
        message = self.discord.message_payload(message_id)
        buttons = {
            c.get("label"): c["custom_id"]
            for row in message["components"]
            for c in row["components"]
        }
        self.show(
            f"\n> {'moderator' if user else 'member'} clicks [{label}] on message {message_id}"
        )
        payload = payloads.button_click(buttons[label], message, user=user)
        await self.send(payload)
        await self.discord.wait_for_callback(payload, timeout=30)
        self.print_changes()
        return payload

    async def submit(
        self, modal: dict[str, Any], fields: dict[str, str], message_id: int
    ) -> dict[str, Any]:
        """Fill in and submit a modal the bot opened."""
        self.show(f"\n> member submits the '{modal['title']}' form: {fields}")
        payload = payloads.modal_submit(
            modal["custom_id"], fields, message=self.discord.message_payload(message_id)
        )
        await self.send(payload)
        await self.discord.wait_for_callback(payload, timeout=30)
        self.print_changes()
        return payload

    def latest_result(self) -> FakeMessage | None:
        with_images = [m for m in self.discord.messages.values() if m.attachments and not m.deleted]
        return max(with_images, key=lambda m: m.id, default=None)

    async def until_results(self, count: int, timeout: float = 60.0) -> FakeMessage:
        """Wait until `count` messages carry images; return the newest."""
        await self.watch_until(
            lambda: sum(1 for m in self.discord.messages.values() if m.attachments) >= count,
            timeout,
        )
        result = self.latest_result()
        assert result is not None
        return result

    def print_changes(self) -> bool:
        """Print every message that appeared or changed since last time; True if any did."""
        changed = False
        for message in sorted(self.discord.messages.values(), key=lambda m: m.id):
            state = (
                message.content,
                message.edits,
                len(message.attachments),
                message.deleted,
                str(message.embeds),
            )
            if self._seen.get(message.id) == state:
                continue
            self._seen[message.id] = state
            changed = True
            self.show(
                "(deleted) " + str(message.id) if message.deleted else render_message(message)
            )
        return changed

    async def watch_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self.print_changes()
                if done():
                    return
                await asyncio.sleep(0.05)


@asynccontextmanager
async def sandbox(
    *,
    queue_delay: float = 0.5,
    run_delay: float = 2.0,
    ack_deadline: float = 3.0,
    show=print,
    real_stack: Stack | None = None,
    quick: bool = False,
) -> AsyncIterator[Sandbox]:
    """With `real_stack`, jobs run on its real worker (its ComfyUI must be up) instead of the
    delays; with `quick`, on test intervals and rates instead of production's and Discord's."""
    limits = {"channel_rate": QUICK_CHANNEL_RATE} if quick else {}
    with tempfile.TemporaryDirectory(prefix="stablehand-sandbox-") as workdir:
        async with (
            FakeDiscord(ack_deadline=ack_deadline, **limits) as discord,
            fake_cloud(real_stack, queue_delay=queue_delay, run_delay=run_delay) as runpod,
        ):
            box = Sandbox(discord, runpod, Path(workdir), show=show)
            if quick:
                box.bot_env.update(
                    STABLEHAND_FAKE_TIMING=QUICK_TIMING, STABLEHAND_FAKE_PACING=QUICK_PACING
                )
            try:
                yield box
            finally:
                if box.process is not None and box.process.returncode is None:
                    box.process.kill()
                    await box.process.wait()


def _finished(box: Sandbox, jobs: int = 1) -> bool:
    """Whether `jobs` messages show images or a failure."""
    ended = [m for m in box.discord.messages.values() if m.attachments or "Failed" in m.content]
    return len(ended) >= jobs


BATCH_START = "sh:batch:run:"


async def press_start(box: Sandbox) -> int:
    """Press Start on a batch's confirmation, as the member would; how many jobs it holds (1 if none)."""
    for message in box.discord.messages.values():
        for row in box.discord.message_payload(message.id).get("components", ()):
            for button in row["components"]:
                if button.get("custom_id", "").startswith(BATCH_START):
                    box.show("\n(the sandbox presses Start for you)")
                    await box.click(message.id, button["label"])
                    counted = re.search(r"\d+", button.get("label", ""))
                    return int(counted[0]) if counted else 1
    return 1


async def walkthrough(box: Sandbox) -> None:
    """A member's and a moderator's session: everything they touch, in order."""
    moderator = payloads.moderator_member()
    owner = payloads.member(
        payloads.user(payloads.OWNER_ID, "owner"), permissions=payloads.PERM_MANAGE_GUILD
    )
    await box.imagine("a pony astronaut on the moon, @everyone --ar 16:9 --seed 42 --no text")
    first = await box.until_results(1)
    await box.click(first.id, "Reroll")
    await box.until_results(2)
    edit = await box.click(first.id, "Edit")
    modal = box.discord.interactions[edit["token"]].payload and next(
        r.json["data"]
        for r in box.discord.requests
        if r.path.endswith(f"/{edit['token']}/callback")
    )
    await box.submit(
        modal, {"prompt": "a pony astronaut on mars --ar 16:9", "negative": "text"}, first.id
    )
    await box.until_results(3)
    await box.click(first.id, "Details")
    await box.command("jobs")
    await box.command("usage")
    await box.click(first.id, "Delete")
    await box.command("settings", subcommand="show", user=owner)
    await box.command("settings", {"max_steps": 30}, subcommand="caps", user=owner)
    await box.imagine("a pony --steps 40")
    await box.command("quota", {"user": payloads.member()}, subcommand="show", user=moderator)
    await box.command(
        "quota",
        {"user": payloads.member(), "credits": 5, "reason": "contest winner"},
        subcommand="grant",
        user=moderator,
    )
    await box.command("quota", subcommand="top", user=moderator)
    await box.command("quota", subcommand="log", user=moderator)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "prompt", nargs="?", default="a pony astronaut on the moon --ar 16:9 --seed 42"
    )
    parser.add_argument(
        "--queue-delay", type=float, default=0.5, help="seconds the fake job waits for a GPU"
    )
    parser.add_argument(
        "--run-delay", type=float, default=2.0, help="seconds the fake job generates"
    )
    parser.add_argument(
        "--walkthrough", action="store_true", help="a whole member and moderator session"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="poll and pace on the test suite's intervals, not production's and Discord's",
    )
    parser.add_argument(
        "--real-stack",
        type=stack_argument,
        help="run jobs on real ComfyUI and worker-comfyui (a folder from tests.realstack.prepare)",
    )
    args = parser.parse_args(argv)
    async with (
        comfyui_running(args.real_stack),
        sandbox(
            queue_delay=args.queue_delay,
            run_delay=args.run_delay,
            real_stack=args.real_stack,
            quick=args.quick,
        ) as box,
    ):
        print(f"fake Discord at {box.discord.url}, fake RunPod at {box.runpod.api_base}")
        print("starting the bot: python -m bot")
        await box.start_bot()
        if args.walkthrough:
            await walkthrough(box)
        else:
            await box.imagine(args.prompt)
            started = await press_start(box)
            await box.watch_until(lambda: _finished(box, jobs=started))
        box.print_changes()
        return 0 if await box.stop_bot() == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
