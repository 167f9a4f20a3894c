"""The webhook receiver: RunPod POSTs a job's status here when it ends, in the bot's own process.

Nothing signs RunPod's calls, so each job's URL carries its own unguessable token, checked in
constant time. Whatever a call holds, the answer gives nothing away: an unknown job, a wrong
token, a duplicate and a late call are all answered 200 and ignored.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from bot.config import ConfigError

log = logging.getLogger(__name__)

S = TypeVar("S")
# Bounds what one call may send: RunPod bounds a result at 20 MB, so twice that is garbage.
MAX_BODY_BYTES = 40 * 2**20
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
PATH_PREFIX = "/runpod"
# Compared against when the key is unknown, so a miss costs the same as a wrong token.
_DUMMY_TOKEN = secrets.token_urlsafe(32)

Parse = Callable[[Any, str | None], S]
OnStatus = Callable[[str, S], Awaitable[None]]


@dataclass
class _Armed:
    token: str
    backend_id: str | None = None


@dataclass
class WebhookStats:
    """What the receiver did with the calls it got: figures for benchmarks and the log."""

    accepted: int = 0
    ignored: int = 0
    refused: int = 0


class WebhookReceiver(Generic[S]):
    """Serves `{public_url}/runpod/{key}/{token}`; a valid ending goes to `on_status(key, status)`.

    `parse(body, backend_id)` validates a body as a status answer (raising `ValueError` or the
    backend's own error); `ended(status)` says whether it is an ending worth handing over.
    """

    def __init__(
        self,
        *,
        public_url: str | None,
        host: str,
        port: int,
        parse: Parse[S],
        ended: Callable[[S], bool],
        on_status: OnStatus[S] | None = None,
        invalid: tuple[type[Exception], ...] = (ValueError,),
    ) -> None:
        # None: the listen address itself (RunPod and the bot on one network, or a test).
        self._public_url = public_url.rstrip("/") if public_url else None
        self._host = host
        self._port = port
        self._parse = parse
        self._ended = ended
        # Settable later: whoever follows the jobs may be built after the receiver.
        self.on_status = on_status
        self._invalid = invalid
        self._armed: dict[str, _Armed] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.stats = WebhookStats()

    def __repr__(self) -> str:
        return f"WebhookReceiver(public_url={self._public_url!r}, armed={len(self._armed)})"

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH_PREFIX + "/{key}/{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(
                [
                    f"WEBHOOK_LISTEN={self._host}:{self._port} cannot be listened on "
                    f"({exc.strerror or exc}): choose a free port, or stop what listens there."
                ]
            ) from None
        log.info("serving RunPod webhooks on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening; hand-overs under way finish first."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await asyncio.gather(*self._handling, return_exceptions=True)

    async def __aenter__(self) -> WebhookReceiver[S]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def arm(self, key: str) -> str:
        """A fresh URL for job `key` with its own token; give it to the backend with the job."""
        if not KEY.fullmatch(key):
            raise ValueError(f"{key!r} cannot name a job in a webhook URL")
        token = secrets.token_urlsafe(32)
        self._armed[key] = _Armed(token)
        base = self._public_url or f"http://{self._host}:{self.port}"
        return f"{base}{PATH_PREFIX}/{key}/{token}"

    def expect(self, key: str, backend_id: str) -> None:
        """The backend's id for job `key`: a call about another job is refused."""
        armed = self._armed.get(key)
        if armed is not None:
            armed.backend_id = backend_id

    def disarm(self, key: str) -> None:
        """Job `key` ended another way: a call for it is now late, and ignored."""
        self._armed.pop(key, None)

    def armed(self, key: str) -> bool:
        return key in self._armed

    async def _handle(self, request: web.Request) -> web.Response:
        key, token = request.match_info["key"], request.match_info["token"]
        armed = self._armed.get(key)
        expected = armed.token if armed is not None else _DUMMY_TOKEN
        if not hmac.compare_digest(token.encode(), expected.encode()) or armed is None:
            self.stats.ignored += 1
            log.debug("webhook call for no waiting job (unknown, late, duplicate or wrong token)")
            return web.Response(status=200)
        try:
            status = self._parse(json.loads(await request.read()), armed.backend_id)
        except (*self._invalid, ValueError, RecursionError) as exc:
            # Not answered 200: RunPod retries, and the job is still polled meanwhile.
            self.stats.refused += 1
            log.warning("job %s: webhook call refused: %s", key, exc)
            return web.Response(status=400)
        if not self._ended(status):
            self.stats.ignored += 1
            log.info("job %s: webhook call about a job that has not ended; ignored", key)
            return web.Response(status=200)
        if self._armed.get(key) is not armed:
            self.stats.ignored += 1  # a duplicate that arrived while the first was read
            return web.Response(status=200)
        del self._armed[key]
        self.stats.accepted += 1
        task = asyncio.create_task(self._hand_over(key, status), name=f"webhook-{key}")
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        return web.Response(status=200)

    async def _hand_over(self, key: str, status: S) -> None:
        if self.on_status is None:
            log.warning("job %s: a webhook call came with no one to hand it to", key)
            return
        try:
            await self.on_status(key, status)
        except Exception:
            log.exception("job %s: handling its webhook call failed; it is polled instead", key)
