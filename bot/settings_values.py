"""Parsers of settings' values (each raises `ValueError` saying what is wanted), and `Secret`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from bot.model_files import ModelNameError, model_file_name

# Outside age-restricted channels: add safe tags; make nothing at all; safe tags and spoilered
# images; nothing added.
AGE_RESTRICTED_ONLY = "age_restricted_only"
NSFW_POLICIES = ("safe_tags", AGE_RESTRICTED_ONLY, "spoiler", "off")
# Earlier names of NSFW modes, still read (with a deprecation line in the log).
RENAMED_NSFW_POLICIES = MappingProxyType({"refuse": AGE_RESTRICTED_ONLY})
T = TypeVar("T")


class Secret:
    """A string that never shows itself in a repr, str or f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _optional_positive_int(text: str) -> int | None:
    return _positive_int(text) if text else None


def _shard_ids(text: str) -> tuple[int, ...] | None:
    if not text:
        return None
    ids = tuple(_non_negative_int(part.strip()) for part in text.split(","))
    if len(set(ids)) != len(ids):
        raise ValueError("names a shard twice")
    return ids


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


def _hour(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 23:
        raise ValueError("must be an hour from 0 to 23 (UTC)")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _nsfw_policy(text: str) -> str:
    value = text.strip().lower()
    return _choice(*NSFW_POLICIES)(RENAMED_NSFW_POLICIES.get(value, value))


def _log_level(text: str) -> str:
    return _choice("debug", "info", "warning", "error")(text).upper()


def _api_base(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with https:// (or http:// for a local proxy)")
    return value


def _endpoint_id(text: str) -> str:
    value = text.strip()
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError("must be the endpoint id from the RunPod console (letters and digits)")
    return value


# RUNPOD_ENDPOINT_ID's name among the endpoints; a further endpoint may not take it.
DEFAULT_ENDPOINT = "default"
_ENDPOINT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def parse_endpoints(text: str) -> Mapping[str, str]:
    """Further endpoints as `name=endpoint-id,...` (e.g. `flux=abc123,sdxl=def456`), read-only."""
    endpoints: dict[str, str] = {}
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, equals, endpoint_id = (piece.strip() for piece in entry.partition("="))
        name = name.lower()
        if not equals:
            problems.append(f"{entry!r} is not name=endpoint-id")
        elif not _ENDPOINT_NAME.fullmatch(name):
            problems.append(
                f"{name!r} is not a name: use a letter, then letters, digits, - or _ (32 at most)"
            )
        elif name == DEFAULT_ENDPOINT:
            problems.append(f"{name!r} is RUNPOD_ENDPOINT_ID's name: choose another")
        elif name in endpoints:
            problems.append(f"names {name!r} twice: give each endpoint its own name")
        else:
            try:
                endpoints[name] = _endpoint_id(endpoint_id)
            except ValueError as exc:
                problems.append(f"{name}={endpoint_id!r}: the id {exc}")
    if problems:
        raise ValueError(
            "must list endpoints as name=endpoint-id, comma-separated, like flux=abc123,sdxl=def456: "
            + "; ".join(problems)
        )
    return MappingProxyType(endpoints)


def _per_endpoint(parse: Callable[[str], T]) -> Callable[[str], Mapping[str, T]]:
    """A parser of `name=value,...` by endpoint name (`default` included), read-only."""

    def parse_all(text: str) -> Mapping[str, T]:
        values: dict[str, T] = {}
        problems: list[str] = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            name, equals, value = (piece.strip() for piece in entry.partition("="))
            name = name.lower()
            if not equals or not _ENDPOINT_NAME.fullmatch(name):
                problems.append(f"{entry!r} is not endpoint-name=value")
            elif name in values:
                problems.append(f"names {name!r} twice")
            else:
                try:
                    values[name] = parse(value)
                except ValueError as exc:
                    problems.append(f"{name}={value!r} {_reason(exc)}")
        if problems:
            raise ValueError(
                "must list endpoint-name=value, comma-separated, like flux=2: "
                + "; ".join(problems)
            )
        return MappingProxyType(values)

    return parse_all


def _model_file(text: str) -> str:
    try:
        return model_file_name(text, default_extension=None)
    except ModelNameError as exc:
        raise ValueError(
            f"is not a file name on the volume: {exc} (a subfolder like "
            "pony/ponyDiffusionV6XL.safetensors is fine)"
        ) from None


def _pixels(text: str) -> int:
    value = int(text)
    if value < 512 * 512:
        raise ValueError("must be at least 262144 (512x512)")
    return value


def _credential(text: str) -> str:
    value = text.strip()
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("must be copied exactly as shown, with no spaces or accented letters")
    return value


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip().lower() for w in text.split(",") if w.strip())


def _hosts(text: str) -> tuple[str, ...]:
    hosts = _words(text)
    if not all(_is_host(host) for host in hosts):
        raise ValueError("must list host names like minio or localhost, with no scheme or port")
    return hosts


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return all(
            part and part.replace("-", "").replace("_", "").isalnum() for part in text.split(".")
        )
    return True


def _database_url(text: str) -> str | None:
    # Imported here: bot.database_url builds on Secret, which it takes from bot.config.
    from bot.database_url import parse_database_url

    return parse_database_url(text)


# Long-polls hold connections of the pool of 50: keep some for runs, reads and downloads.
MAX_LONG_POLLS = 40


def _long_polls(text: str) -> int:
    value = _non_negative_int(text)
    if value > MAX_LONG_POLLS:
        raise ValueError(
            f"must be at most {MAX_LONG_POLLS} (the rest of the connections serve runs)"
        )
    return value


def _public_url(text: str) -> str | None:
    value = text.strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("https://", "http://")) or any(c in value for c in "?#@ "):
        raise ValueError(
            "must be a URL like https://bot.example.org/hooks (https through a reverse proxy; "
            "no query, fragment or user name)"
        )
    return value


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, like 127.0.0.1:8080 or 0.0.0.0:8080")
    return host, int(port)


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal") or text.startswith("could not convert"):
        return "is not a number"
    return text
