"""A style's JSON definition -> a checked `Style`; the operator's styles from `STYLES_DIR`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.model_files import ModelNameError, model_file_name
from bot.prompt import PromptError, aspect_to_size, resolve_sampler
from bot.workflows import Lora, TemplateLibrary

PLACEHOLDER = "{prompt}"
STYLE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_STYLE_TEXT = 500
MAX_STYLE_LORAS = 3
STEPS_RANGE = (1, 150)
CFG_RANGE = (1.0, 30.0)
FIELDS = ("description", "prompt", "negative", "loras", "workflow", "defaults")
DEFAULTS = ("aspect", "steps", "cfg", "sampler", "count")


class StyleError(ValueError):
    """A style definition that cannot be used; the message names the field and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"`{field}` {problem}")


@dataclass(frozen=True)
class Style:
    """One preset; every part but the name may be empty."""

    name: str
    description: str = ""
    prompt: str = PLACEHOLDER
    negative: str = ""
    loras: tuple[Lora, ...] = ()
    workflow: str | None = None
    aspect: str | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    count: int | None = None
    # True for the operator's (from STYLES_DIR), False for a server's own.
    shipped: bool = False

    def definition(self) -> dict[str, Any]:
        """The style as the JSON an operator writes (and a server's row stores)."""
        defaults = {k: getattr(self, k) for k in DEFAULTS if getattr(self, k) is not None}
        data: dict[str, Any] = {
            "description": self.description,
            "prompt": self.prompt,
            "negative": self.negative,
            "loras": [{"name": lora.name, "weight": lora.strength} for lora in self.loras],
            "workflow": self.workflow,
            "defaults": defaults,
        }
        return {k: v for k, v in data.items() if v not in ("", None, [], {})}

    def summary(self) -> str:
        """One line: what the style adds, for lists and autocomplete."""
        parts = [self.description] if self.description else []
        if self.prompt != PLACEHOLDER:
            parts.append(self.prompt)
        if self.workflow:
            parts.append(f"workflow {self.workflow}")
        return " · ".join(parts) or "no changes"


def parse_style(name: str, data: Any, library: TemplateLibrary, *, shipped: bool = False) -> Style:
    """A style from its JSON definition, every field checked; raises `StyleError`."""
    name = name.strip().lower()
    if not STYLE_NAME.fullmatch(name):
        raise StyleError(
            "name",
            "must be 1-32 lowercase letters, digits, `-` or `_`, starting with a letter or digit",
        )
    if not isinstance(data, dict):
        raise StyleError("style", "must be a JSON object with prompt, negative, loras, ...")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise StyleError(unknown[0], f"is not a style field; use {', '.join(FIELDS)}")
    prompt = _text(data, "prompt", PLACEHOLDER)
    if PLACEHOLDER not in prompt:
        raise StyleError("prompt", f"must contain {PLACEHOLDER} where the member's words go")
    workflow = data.get("workflow")
    template = None
    if workflow is not None:
        if not isinstance(workflow, str) or library.get(workflow) is None:
            raise StyleError(
                "workflow", f"names no workflow; use one of {', '.join(library.names())}"
            )
        template = library.get(workflow)
        workflow = template.name if template else workflow
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise StyleError("defaults", f"must be an object with any of {', '.join(DEFAULTS)}")
    unknown = sorted(set(defaults) - set(DEFAULTS))
    if unknown:
        raise StyleError(f"defaults.{unknown[0]}", f"is not a default; use {', '.join(DEFAULTS)}")
    style = Style(
        name=name,
        description=_text(data, "description", ""),
        prompt=prompt,
        negative=_text(data, "negative", ""),
        loras=_loras(data.get("loras", [])),
        workflow=workflow,
        aspect=_aspect(defaults.get("aspect"), library),
        steps=_number(defaults, "steps", int, STEPS_RANGE),
        cfg=_number(defaults, "cfg", float, CFG_RANGE),
        sampler=_sampler(defaults.get("sampler")),
        count=_number(defaults, "count", int, (1, 10)),
        shipped=shipped,
    )
    if template is not None:
        needs = {"aspect": "width", "steps": "steps", "cfg": "cfg", "sampler": "sampler"}
        for default, parameter in {**needs, "count": "count"}.items():
            if getattr(style, default) is not None and not template.accepts(parameter):
                raise StyleError(
                    f"defaults.{default}", f"has no effect on the `{template.name}` workflow"
                )
        if style.loras and not template.accepts_loras:
            raise StyleError("loras", f"cannot be used: `{template.name}` takes no LoRAs")
    return style


def _text(data: Mapping[str, Any], field: str, default: str) -> str:
    value = data.get(field, default)
    if not isinstance(value, str):
        raise StyleError(field, "must be text")
    value = " ".join(value.split())
    if len(value) > MAX_STYLE_TEXT:
        raise StyleError(field, f"is longer than {MAX_STYLE_TEXT} characters")
    return value


def _loras(value: Any) -> tuple[Lora, ...]:
    if not isinstance(value, list):
        raise StyleError("loras", 'must be a list like [{"name": "detail", "weight": 0.8}]')
    if len(value) > MAX_STYLE_LORAS:
        raise StyleError("loras", f"may name at most {MAX_STYLE_LORAS} LoRAs")
    loras = []
    for index, entry in enumerate(value):
        where = f"loras[{index}]"
        if isinstance(entry, str):
            entry = _lora_text(entry, where)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise StyleError(where, 'must be {"name": "...", "weight": 0.8} or "name:0.8"')
        try:
            name = model_file_name(entry["name"])
        except ModelNameError as exc:
            raise StyleError(f"{where}.name", f"is not a LoRA file name: {exc}") from None
        weight = entry.get("weight", 1.0)
        if not isinstance(weight, int | float) or not -2.0 <= weight <= 2.0:
            raise StyleError(f"{where}.weight", "must be a number from -2 to 2")
        loras.append(Lora(name, float(weight)))
    return tuple(loras)


def _lora_text(text: str, where: str) -> dict[str, Any]:
    """`name:0.8` (or a bare name, at 1.0) as the object form."""
    name, _, weight_text = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        weight = float(weight_text) if weight_text.strip() else 1.0
    except ValueError:
        raise StyleError(f"{where}.weight", f"`{weight_text[:20]}` is not a number") from None
    return {"name": name, "weight": weight}


def _aspect(value: Any, library: TemplateLibrary) -> str | None:
    if value is None:
        return None
    template = next(iter(library), None)
    try:
        if not isinstance(value, str) or template is None:
            raise PromptError("")
        aspect_to_size(value, template)
    except PromptError:
        raise StyleError(
            "defaults.aspect", "must be a ratio like 16:9 (from 21:9 to 9:21)"
        ) from None
    return value.strip()


def _number(
    defaults: Mapping[str, Any], field: str, kind: type, bounds: tuple[float, float]
) -> Any:
    value = defaults.get(field)
    if value is None:
        return None
    low, high = bounds
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (kind is int and value != int(value)) or not math.isfinite(value):
        raise StyleError(f"defaults.{field}", f"must be a {'whole ' if kind is int else ''}number")
    if not low <= value <= high:
        raise StyleError(f"defaults.{field}", f"must be from {low:g} to {high:g}")
    return kind(value)


def _sampler(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise StyleError("defaults.sampler", "must be a sampler name")
    try:
        resolve_sampler(value)
    except PromptError as exc:
        raise StyleError("defaults.sampler", f"is not usable: {exc}") from None
    return value.strip()


def load_styles(folder: Path | None, library: TemplateLibrary) -> dict[str, Style]:
    """The operator's styles, one `*.json` file each; raises `StyleError` naming file and field."""
    if folder is None:
        return {}
    styles = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text("utf-8"))
            style = parse_style(path.stem, data, library, shipped=True)
        except json.JSONDecodeError as exc:
            raise StyleError(
                path.name, f"is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        except StyleError as exc:
            raise StyleError(f"{path.name}: {exc.field}", exc.problem) from None
        styles[style.name] = style
    return styles
