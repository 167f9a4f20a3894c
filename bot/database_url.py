"""`DATABASE_URL`: which PostgreSQL server the bot keeps its state in, with its password kept out of
every log line, error, repr and check line (the URL and its password are `Secret`s)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from bot.config import Secret

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://stablehand:password@db.example.com:5432/stablehand"


def parse_database_url(text: str) -> str | None:
    """The URL if it names a PostgreSQL server, None when empty (SQLite); errors never quote it."""
    value = text.strip()
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (reading it checks it)
    except ValueError:
        raise ValueError(f"is not a URL like {EXAMPLE}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"must start with postgresql:// (like {EXAMPLE}); leave it empty to use SQLite"
        )
    if not parts.hostname and "host" not in parse_qs(parts.query):
        raise ValueError(f"must name the server, like {EXAMPLE}")
    return value


def shown(url: Secret) -> str:
    """Where the URL points, safe to print: scheme, user, host, port and database, no password."""
    parts = urlsplit(url.reveal())
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ",".join(parse_qs(parts.query).get("host", []))
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def secrets(url: Secret | None) -> list[Secret]:
    """The URL and the password inside it (in the authority or as `?password=`), for masking."""
    if url is None:
        return []
    parts = urlsplit(url.reveal())
    passwords = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    return [url, *(Secret(p) for p in passwords if p)]


def scrubbed(text: str, url: Secret) -> str:
    """`text` (a driver's error, say) with the URL and its password masked."""
    for secret in secrets(url):
        if secret.reveal():
            text = text.replace(secret.reveal(), "********")
    return text
