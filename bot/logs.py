"""Logging: one line per event, and any secret that slips into a message is masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from bot.config import Secret

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replaces each secret's text with asterisks in every record, arguments and tracebacks included."""

    def __init__(self, secrets: Iterable[Secret | None]) -> None:
        super().__init__()
        self._values = [s.reveal() for s in secrets if s and len(s.reveal()) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: let logging report it as usual
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for value in self._values:
            message = message.replace(value, "********")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(value, "********")
        record.msg, record.args = message, ()
        return True


def configure(level: str, secrets: Iterable[Secret | None] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # discord.py's gateway chatter is noise at INFO.
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("httpx").setLevel(logging.WARNING)
