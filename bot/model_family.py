"""A template's model: its family, and the prompt rules that family needs (tags, safe terms)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# QUALITY_TAGS and DEFAULT_NEGATIVE are this family's settings: they override only its templates.
PONY_FAMILY = "pony"
GENERIC_FAMILY = "generic"
# The endpoint RUNPOD_ENDPOINT_ID names; further endpoints get names from the operator.
DEFAULT_ENDPOINT = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

MODEL_FIELDS = frozenset(
    {
        "family",
        "display_name",
        "prompt_prefix",
        "prompt_suffix",
        "default_negative",
        "safe_positive",
        "safe_negative",
        "recommended_cfg",
    }
)


class ModelSectionError(ValueError):
    """A `model` section or `endpoint` name that cannot be used, saying what to write instead."""


@dataclass(frozen=True)
class ModelFamily:
    """What a template's model wants around a member's words, and how it is kept safe for work."""

    family: str = GENERIC_FAMILY
    display_name: str = ""
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    default_negative: str = ""
    safe_positive: str = ""
    safe_negative: str = ""
    recommended_cfg: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        """The name members see: the display name, or the family's."""
        return self.display_name or self.family

    @property
    def adds_tags(self) -> bool:
        """Whether the model's own tags surround a prompt (what `--raw` leaves out)."""
        return bool(self.prompt_prefix or self.prompt_suffix or self.default_negative)

    @property
    def steers_safe(self) -> bool:
        """Whether the model has terms that steer it away from explicit images."""
        return bool(self.safe_positive or self.safe_negative)


# What `"pony_tags": true` meant before templates had a `model` section; the bundled Pony
# templates declare the same (a test keeps them equal).
PONY_V6 = ModelFamily(
    family=PONY_FAMILY,
    display_name="Pony Diffusion V6 XL",
    prompt_prefix="score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up",
    default_negative="score_1, score_2, score_3",
    safe_positive="rating_safe",
    safe_negative="rating_questionable, rating_explicit",
    recommended_cfg=(5.0, 8.0),
)


def parse_model(data: Any, *, legacy_pony_tags: Any = None) -> ModelFamily:
    """The `model` section of a template file; `pony_tags` alone stands for `PONY_V6`."""
    if data is None:
        return PONY_V6 if legacy_pony_tags is True else ModelFamily()
    if legacy_pony_tags is not None:
        raise ModelSectionError("'pony_tags' and 'model' both given; keep only 'model'")
    if not isinstance(data, dict):
        raise ModelSectionError(
            '\'model\' must be an object like {"family": "sdxl", "display_name": "SDXL 1.0"}'
        )
    unknown = sorted(set(data) - MODEL_FIELDS)
    if unknown:
        raise ModelSectionError(
            f"unknown model field {unknown[0]!r} (fields: {', '.join(sorted(MODEL_FIELDS))})"
        )
    texts = {}
    for key in sorted(MODEL_FIELDS - {"recommended_cfg"}):
        value = data.get(key, "")
        if not isinstance(value, str):
            raise ModelSectionError(f"model.{key} must be a string, not {value!r}")
        texts[key] = value.strip()
    family = texts.pop("family") or GENERIC_FAMILY
    if not _NAME.fullmatch(family):
        raise ModelSectionError(
            f"model.family {family!r} must be a short lower-case name like 'flux' or 'sdxl'"
        )
    return ModelFamily(
        family=family, recommended_cfg=_cfg_range(data.get("recommended_cfg")), **texts
    )


def _cfg_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1]
    ):
        return float(value[0]), float(value[1])
    raise ModelSectionError("model.recommended_cfg must be [low, high], like [5, 8]")


def parse_endpoint(value: Any) -> str:
    """The endpoint name a template runs on: a short lower-case name, `default` if not given."""
    if value is None:
        return DEFAULT_ENDPOINT
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ModelSectionError(
            f"'endpoint' {value!r} must be a short lower-case name like 'default' or 'flux' "
            "(letters, digits, '-' and '_', at most 32)"
        )
    return value
