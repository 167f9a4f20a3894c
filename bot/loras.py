"""The operator's list of the LoRAs on the endpoint (`LORAS_FILE`): names, trigger words, default
weights and which are NSFW. When the list exists, a LoRA not on it is refused before anything runs.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.model_files import ModelNameError, model_file_name
from bot.prompt import PromptError
from bot.workflows import Lora

FIELDS = ("name", "triggers", "weight", "nsfw", "description")
MAX_DESCRIPTION = 200


class LoraListError(ValueError):
    """A `LORAS_FILE` that cannot be used; the message names the entry and field."""


@dataclass(frozen=True)
class LoraInfo:
    """One LoRA on the endpoint, as the operator describes it."""

    name: str
    triggers: tuple[str, ...] = ()
    weight: float = 1.0
    nsfw: bool = False
    description: str = ""

    @property
    def short_name(self) -> str:
        """The name without `.safetensors`, as members write it in `<lora:…>`."""
        return self.name.removesuffix(".safetensors")

    def tag(self) -> str:
        """The words that use it: its `<lora:…>` tag at its default weight, then its triggers."""
        return " ".join([f"<lora:{self.short_name}:{self.weight:g}>", ", ".join(self.triggers)])


@dataclass(frozen=True)
class LoraCatalogue:
    """The LoRAs on the list, by file name."""

    loras: tuple[LoraInfo, ...]

    def find(self, name: str) -> LoraInfo | None:
        try:
            wanted = model_file_name(name)
        except ModelNameError:
            return None
        return next((lora for lora in self.loras if lora.name.lower() == wanted.lower()), None)

    def offered(self, *, nsfw_allowed: bool) -> list[LoraInfo]:
        """The LoRAs a member may use where they are, by name."""
        return sorted(
            (lora for lora in self.loras if nsfw_allowed or not lora.nsfw), key=lambda x: x.name
        )

    def check(self, loras: Iterable[Lora], *, nsfw_allowed: bool) -> None:
        """Refuse a LoRA the list does not have, or an NSFW one where NSFW is not allowed."""
        for lora in loras:
            known = self.find(lora.name)
            if known is None:
                names = [info.short_name for info in self.loras]
                close = difflib.get_close_matches(
                    lora.name.removesuffix(".safetensors"), names, n=1, cutoff=0.6
                )
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise PromptError(
                    f"There is no LoRA `{lora.name[:60]}` on the image endpoint.{hint} "
                    "`/loras` lists the ones you can use."
                )
            if known.nsfw and not nsfw_allowed:
                raise PromptError(
                    f"The LoRA `{known.short_name}` is for age-restricted channels only on this "
                    "server; use it in one of those, or leave it out."
                )


def load_loras(path: Path | None) -> LoraCatalogue | None:
    """The list in `path`, every entry checked; None when no list is set."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise LoraListError(
            f"{Path(path).name} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise LoraListError(f'{Path(path).name} must be a JSON list of {{"name": ...}} entries')
    loras: list[LoraInfo] = []
    for index, entry in enumerate(data):
        info = _entry(entry, f"{Path(path).name}: entry {index + 1}")
        if any(lora.name.lower() == info.name.lower() for lora in loras):
            raise LoraListError(f"{Path(path).name}: `{info.name}` is listed twice")
        loras.append(info)
    return LoraCatalogue(tuple(loras))


def _entry(entry: Any, where: str) -> LoraInfo:
    if not isinstance(entry, dict):
        raise LoraListError(f"{where} must be an object with {', '.join(FIELDS)}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise LoraListError(f"{where}: `{unknown[0]}` is not a field; use {', '.join(FIELDS)}")
    if not isinstance(entry.get("name"), str):
        raise LoraListError(f"{where}: `name` must be the LoRA's file name")
    try:
        name = model_file_name(entry["name"])
    except ModelNameError as exc:
        raise LoraListError(f"{where}: `name` is not a file name on the volume: {exc}") from None
    where = f"{where} ({name})"
    triggers = entry.get("triggers", [])
    if isinstance(triggers, str):
        triggers = [t for t in (part.strip() for part in triggers.split(",")) if t]
    if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
        raise LoraListError(f"{where}: `triggers` must be a list of words")
    weight = entry.get("weight", 1.0)
    if (
        not isinstance(weight, int | float)
        or isinstance(weight, bool)
        or not math.isfinite(weight)
        or not -2.0 <= weight <= 2.0
    ):
        raise LoraListError(f"{where}: `weight` must be a number from -2 to 2")
    nsfw = entry.get("nsfw", False)
    if not isinstance(nsfw, bool):
        raise LoraListError(f"{where}: `nsfw` must be true or false")
    description = entry.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise LoraListError(
            f"{where}: `description` must be text of {MAX_DESCRIPTION} characters at most"
        )
    return LoraInfo(
        name=name,
        triggers=tuple(" ".join(t.split()) for t in triggers if t.strip()),
        weight=float(weight),
        nsfw=nsfw,
        description=" ".join(description.split()),
    )
