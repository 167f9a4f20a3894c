"""What every store interface shares: the transaction handle it is given, never looked into."""

from __future__ import annotations

from typing import Protocol


class Transaction(Protocol):
    """An open write transaction of the engine a store belongs to.

    The domain opens it (`transaction()` or `write()` of `bot.db.Database` or
    `bot.postgres.PostgresDatabase`: the same calls) so that a rule, the rows it writes and its
    audit row commit together; only a store of the same engine reads inside it.
    """
