"""The three ways the bot learns a job has ended, as settings for tests that run in each."""

from __future__ import annotations

import socket

MODES = ("poll", "long_poll", "webhook")


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on now (the webhook receiver's, in a test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mode_settings(mode: str) -> dict[str, str]:
    """Environment for `make_settings`: adaptive polls only, long-polls, or webhooks."""
    if mode == "poll":
        return {"RUNPOD_LONG_POLLS": "0"}
    if mode == "long_poll":
        return {"RUNPOD_LONG_POLLS": "4"}
    if mode == "webhook":
        port = free_port()
        return {
            "RUNPOD_LONG_POLLS": "0",
            "WEBHOOK_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        }
    raise ValueError(f"unknown mode {mode!r}")
