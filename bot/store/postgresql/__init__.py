"""The stores on PostgreSQL (`bot/postgres.py`): the same interfaces as their SQLite twins.

Imported only when a PostgreSQL database is in use, so the bot without the `postgresql` extra
(asyncpg) never needs it.
"""
