"""One template file's text -> a validated `Template`, or `TemplateError` naming what is wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.comfy_nodes import check_workflow, comfyui_version, output_types
from bot.model_family import ModelFamily, ModelSectionError, parse_endpoint, parse_model
from bot.samplers import SAMPLERS, SCHEDULERS
from bot.workflows.graph import check_graph, check_link, check_ref, check_required
from bot.workflows.template import InputRef, Template, TemplateError, Workflow

# Parameters a template may map, with the Python type their values take.
PARAMETER_TYPES: dict[str, type] = {
    "prompt": str,
    "negative": str,
    "seed": int,
    "steps": int,
    "cfg": float,
    "sampler": str,
    "scheduler": str,
    "width": int,
    "height": int,
    "count": int,
    "checkpoint": str,
    "denoise": float,
    "image": str,
    "scale": float,
    "color": int,
}

_TYPE_NAMES = {int: "whole number", float: "number", str: "string"}

TEMPLATE_FIELDS = frozenset(
    {
        "name",
        "description",
        "base_resolution",
        "cost_multiplier",
        "pony_tags",
        "model",
        "endpoint",
        "hidden",
        "defaults",
        "parameters",
        "lora_anchor",
        "variants",
        "requires_nodes",
        "workflow",
    }
)
# What each kind of variant must be able to do.
VARIANT_NEEDS = {"hires": "scale", "image": "image"}


def parse_template(text: str, *, source: str, bundled: bool = False) -> Template:
    """Parse and validate one template file's text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: the file must hold one JSON object")
    _check_format(data, source)
    try:
        return _build_template(data, source, bundled)
    except TemplateError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TemplateError(f"{source}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


def _check_format(data: dict[str, Any], source: str) -> None:
    """Recognise the two common mistakes: a UI export, and a bare workflow without a template."""
    if "nodes" in data and "links" in data:
        raise TemplateError(
            f"{source}: this is ComfyUI's UI format; use 'Export (API)' and put the result "
            "under 'workflow'"
        )
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise TemplateError(
            f"{source}: this is a bare API workflow; wrap it as "
            '{"name": ..., "parameters": {...}, "workflow": <it>}'
        )
    unknown = sorted(k for k in data if k not in TEMPLATE_FIELDS and not k.startswith("_"))
    if unknown:
        raise TemplateError(
            f"{source}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(TEMPLATE_FIELDS))})"
        )


def _build_template(data: dict[str, Any], source: str, bundled: bool) -> Template:
    name = data["name"]
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"name {name!r} must be lower-case with no spaces, like 'my-workflow'")
    workflow = data["workflow"]
    check_graph(workflow, source)
    parameters = _parameters(data["parameters"], workflow, source)
    defaults = _defaults(data.get("defaults", {}), parameters, source)
    check_required(workflow, parameters, source)
    lora_model, lora_clip = _lora_anchor(data.get("lora_anchor"), workflow, source)
    base_width, base_height = _base_resolution(data.get("base_resolution", [1024, 1024]), source)
    template = Template(
        name=name,
        description=str(data.get("description", "")),
        workflow=workflow,
        parameters=parameters,
        defaults=defaults,
        base_width=base_width,
        base_height=base_height,
        cost_multiplier=_cost_multiplier(data.get("cost_multiplier", 1.0), source),
        model=_model(data, source),
        endpoint=_endpoint(data.get("endpoint"), source),
        needs_image="image" in parameters,
        lora_model=lora_model,
        lora_clip=lora_clip,
        source=source,
        bundled=bundled,
        hidden=bool(data.get("hidden", False)),
        variants=_variants(data.get("variants", {}), source),
        requires_nodes=_requires_nodes(data.get("requires_nodes", []), source),
    )
    _check_model_fits(template)
    _check_against_comfyui(template)
    return template


def _model(data: dict[str, Any], source: str) -> ModelFamily:
    try:
        return parse_model(data.get("model"), legacy_pony_tags=data.get("pony_tags"))
    except ModelSectionError as exc:
        raise TemplateError(f"{source}: {exc}") from None


def _endpoint(value: Any, source: str) -> str:
    try:
        return parse_endpoint(value)
    except ModelSectionError as exc:
        raise TemplateError(f"{source}: {exc}") from None


def _check_model_fits(template: Template) -> None:
    """Negative terms need a negative input: without one they would silently vanish."""
    model = template.model
    if template.accepts("negative"):
        return
    for key in ("default_negative", "safe_negative"):
        if getattr(model, key):
            raise TemplateError(
                f"{template.source}: model.{key} is set but the workflow maps no 'negative' "
                "parameter; map it, or remove the negative terms"
            )


def _requires_nodes(data: Any, source: str) -> tuple[str, ...]:
    """Node classes the endpoint adds to ComfyUI (custom nodes): taken on trust, not checked."""
    if not isinstance(data, list) or not all(isinstance(n, str) and n for n in data):
        raise TemplateError(
            f"{source}: 'requires_nodes' must be a list of node class names, like [\"MyNode\"]"
        )
    return tuple(data)


def _check_against_comfyui(template: Template) -> None:
    """The workflow as it is sent (defaults applied) must pass ComfyUI's own validation."""
    problems = check_workflow(template.render({}), template.requires_nodes)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TemplateError(
            f"{template.source}: {problems[0]}{more} — checked against ComfyUI "
            f"{comfyui_version()}'s node definitions"
        )


def _parameters(data: Any, workflow: Workflow, source: str) -> dict[str, tuple[InputRef, ...]]:
    if not isinstance(data, dict):
        raise TemplateError(f'{source}: \'parameters\' must be an object like {{"seed": "3.seed"}}')
    parameters: dict[str, tuple[InputRef, ...]] = {}
    owners: dict[InputRef, str] = {}
    for param, targets in data.items():
        if param not in PARAMETER_TYPES:
            known = ", ".join(PARAMETER_TYPES)
            raise TemplateError(f"{source}: unknown parameter {param!r} (known: {known})")
        refs = tuple(
            InputRef.parse(t) for t in ([targets] if isinstance(targets, str) else targets)
        )
        if not refs:
            raise TemplateError(f"{source}: parameter {param!r} maps to no input")
        for ref in refs:
            check_ref(workflow, ref, source, f"parameter {param!r}")
            if ref in owners:
                raise TemplateError(
                    f"{source}: node {ref.node} input {ref.input!r} is set by both "
                    f"{owners[ref]!r} and {param!r}; map it once"
                )
            owners[ref] = param
        parameters[param] = refs
    return parameters


def _defaults(data: Any, parameters: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: 'defaults' must be an object like {{\"steps\": 25}}")
    defaults = dict(data)
    for param, value in data.items():
        if param not in parameters:
            raise TemplateError(f"{source}: default for {param!r}, which the template does not map")
        expected = PARAMETER_TYPES[param]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            defaults[param] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool):
            raise TemplateError(
                f"{source}: default {param}={value!r} must be a {_TYPE_NAMES[expected]}"
            )
    for param, names in (("sampler", SAMPLERS), ("scheduler", SCHEDULERS)):
        if param in defaults and defaults[param] not in names:
            raise TemplateError(
                f"{source}: default {param}={defaults[param]!r} is not a ComfyUI {param} name"
            )
    return defaults


def _base_resolution(value: Any, source: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 64 for v in value)
    ):
        raise TemplateError(
            f"{source}: 'base_resolution' must be [width, height], like [1024, 1024]"
        )
    return value[0], value[1]


def _cost_multiplier(value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise TemplateError(f"{source}: cost_multiplier must be a number above 0 and at most 100")
    return float(value)


def _lora_anchor(
    data: Any, workflow: Workflow, source: str
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """Where LoRAs attach: the MODEL and CLIP outputs everything downstream used."""
    if data is None:
        return None, None
    if not isinstance(data, dict) or set(data) != {"model", "clip"}:
        raise TemplateError(
            f'{source}: \'lora_anchor\' must be {{"model": ["<node>", 0], "clip": ["<node>", 0]}}'
        )
    anchors = []
    for kind in ("model", "clip"):
        where = f"lora_anchor.{kind}"
        node, slot = check_link(data[kind], workflow, source, where)
        outputs = output_types(workflow[node]["class_type"])
        if outputs is not None and outputs[slot] != kind.upper():
            raise TemplateError(
                f"{source}: {where} links to output {slot} of node {node}, which is "
                f"{outputs[slot]}, not {kind.upper()}"
            )
        anchors.append((node, slot))
    return anchors[0], anchors[1]


def _variants(data: Any, source: str) -> dict[str, str]:
    """Which template to switch to when a member asks for a hires pass or attaches an image."""
    if not isinstance(data, dict) or not set(data) <= set(VARIANT_NEEDS):
        raise TemplateError(f"{source}: 'variants' may only name 'hires' and 'image' templates")
    return {kind: str(name) for kind, name in data.items()}
