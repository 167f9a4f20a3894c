"""Contributor-only: point discord.py at a fake Discord, for running the bot as a subprocess.

When ``STABLEHAND_FAKE_DISCORD_URL`` (e.g. ``http://127.0.0.1:PORT``) is set, Python imports this
module at start-up (tests/sandbox puts this directory on ``PYTHONPATH``) and redirects discord.py's
REST base and gateway to that server. ``STABLEHAND_FAKE_TIMING`` and ``STABLEHAND_FAKE_PACING``
(``field=seconds,...``) shrink the job manager's and the Discord side's intervals. Without the
variables it does nothing, not even import discord. Never set them in production.
"""

import os


def _redirect_discord(url: str) -> None:
    """Set discord.py's private REST base and default gateway to the fake at ``url``."""
    import discord.gateway
    import discord.http
    import yarl

    base = yarl.URL(url.rstrip("/"))
    discord.http.Route.BASE = str(base / "api" / "v10")
    ws_scheme = "wss" if base.scheme == "https" else "ws"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base.with_scheme(ws_scheme) / "gateway"


def _connect_at_once() -> None:
    """Drop discord.py's waits for real Discord's pace, which the fake does not keep: 5 s between
    two shards' IDENTIFYs, and 2 s after the last GUILD_CREATE for more (the fake sends every
    guild right after READY)."""
    import discord

    init = discord.Client.__init__

    def __init__(self, *args, **options):
        options.setdefault("guild_ready_timeout", 0.1)
        init(self, *args, **options)

    async def before_identify_hook(self, shard_id, *, initial=False):
        return None

    discord.Client.__init__ = __init__
    discord.Client.before_identify_hook = before_identify_hook


def _quicken(cls: type, spec: str) -> None:
    """Make `field=seconds,...` the defaults of the dataclass `cls`, so a test's bot process runs
    on the test's clock rather than production's."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    defaults = list(cls.__init__.__defaults__)
    for item in spec.split(","):
        name, value = item.split("=", 1)
        index = names.index(name)
        defaults[index] = type(defaults[index])(float(value))
    cls.__init__.__defaults__ = tuple(defaults)


if os.environ.get("STABLEHAND_FAKE_DISCORD_URL"):
    _redirect_discord(os.environ["STABLEHAND_FAKE_DISCORD_URL"])
    _connect_at_once()
if os.environ.get("STABLEHAND_FAKE_TIMING"):
    # The job manager's intervals: polls, lease renewals, reconciles.
    from bot.polling import Timing

    _quicken(Timing, os.environ["STABLEHAND_FAKE_TIMING"])
if os.environ.get("STABLEHAND_FAKE_PACING"):
    # The Discord side's: how often a message may be edited, each channel's sending rate.
    from bot.app import Pacing

    _quicken(Pacing, os.environ["STABLEHAND_FAKE_PACING"])
