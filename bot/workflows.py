"""Workflow templates: ComfyUI API JSON plus a parameter map, validated on load, rendered as data."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bot.comfy_nodes import check_workflow, comfyui_version, output_types
from bot.samplers import SAMPLERS, SCHEDULERS

log = logging.getLogger(__name__)

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

# Node inputs that must follow the request: left as literals they would silently ignore what a
# member asked for (a second KSampler with a fixed seed makes every reroll identical).
REQUIRED_INPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "KSampler": {
        "seed": ("seed",),
        "steps": ("steps",),
        "cfg": ("cfg",),
        "sampler_name": ("sampler",),
        "scheduler": ("scheduler",),
    },
    "CLIPTextEncode": {"text": ("prompt", "negative")},
    "EmptyLatentImage": {"width": ("width",), "height": ("height",), "batch_size": ("count",)},
    "EmptyImage": {"width": ("width",), "height": ("height",), "batch_size": ("count",)},
    "LoadImage": {"image": ("image",)},
}

TEMPLATE_FIELDS = frozenset(
    {
        "name",
        "description",
        "base_resolution",
        "cost_multiplier",
        "pony_tags",
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

Workflow = dict[str, dict[str, Any]]


class TemplateError(Exception):
    """A template file that cannot be used, with the file, node and input named."""


@dataclass(frozen=True)
class InputRef:
    """One node input a parameter sets."""

    node: str
    input: str

    @classmethod
    def parse(cls, text: str) -> InputRef:
        node, sep, name = str(text).rpartition(".")
        if not sep or not node or not name:
            raise ValueError(f"{text!r} is not of the form 'node.input'")
        return cls(node, name)

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


@dataclass(frozen=True)
class Lora:
    """A LoRA file and the strength it is applied with (A1111's `<lora:name:0.8>`)."""

    name: str
    strength: float = 1.0


@dataclass(frozen=True)
class Template:
    """A workflow template: what it is, its defaults, and where each parameter goes."""

    name: str
    description: str
    workflow: Workflow
    parameters: Mapping[str, tuple[InputRef, ...]]
    defaults: Mapping[str, Any]
    base_width: int = 1024
    base_height: int = 1024
    cost_multiplier: float = 1.0
    pony_tags: bool = True
    needs_image: bool = False
    lora_model: tuple[str, int] | None = None
    lora_clip: tuple[str, int] | None = None
    source: str = "<bundled>"
    hidden: bool = False
    variants: Mapping[str, str] = field(default_factory=dict)
    requires_nodes: tuple[str, ...] = ()

    @property
    def accepts_loras(self) -> bool:
        return self.lora_model is not None

    def accepts(self, parameter: str) -> bool:
        return parameter in self.parameters

    def render(self, values: Mapping[str, Any], loras: Iterable[Lora] = ()) -> Workflow:
        """A fresh workflow dict with defaults, then `values`, set on the mapped inputs."""
        workflow = copy.deepcopy(self.workflow)
        for name, value in {**self.defaults, **values}.items():
            for ref in self.parameters.get(name, ()):
                workflow[ref.node]["inputs"][ref.input] = value
        loras = list(loras)
        if loras:
            if not self.accepts_loras:
                raise TemplateError(f"the {self.name} workflow does not take LoRAs")
            _chain_loras(workflow, self, loras)
        return workflow


@dataclass
class TemplateLibrary:
    """All templates by name: the bundled ones, then the operator's (which may replace them)."""

    templates: dict[str, Template] = field(default_factory=dict)

    def get(self, name: str) -> Template | None:
        return self.templates.get(name.strip().lower())

    def names(self, *, include_hidden: bool = False) -> list[str]:
        return sorted(n for n, t in self.templates.items() if include_hidden or not t.hidden)

    def __iter__(self) -> Iterator[Template]:
        return iter(self.templates[n] for n in self.names(include_hidden=True))

    def __len__(self) -> int:
        return len(self.templates)


def load_library(extra_dir: Path | None = None) -> TemplateLibrary:
    """Load the bundled templates and those in `extra_dir`; a broken file raises `TemplateError`."""
    library = TemplateLibrary()
    bundled = resources.files("bot.templates")
    for entry in sorted(bundled.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            _add(library, parse_template(entry.read_text("utf-8"), source=entry.name))
    if extra_dir is not None:
        _add_operator_templates(library, Path(extra_dir))
    check_variants(library)
    return library


def _add(library: TemplateLibrary, template: Template) -> None:
    existing = library.templates.get(template.name)
    if existing is not None:
        raise TemplateError(
            f"{template.source}: the name {template.name!r} is already used by "
            f"{existing.source}; give one of them another name"
        )
    library.templates[template.name] = template


def _add_operator_templates(library: TemplateLibrary, directory: Path) -> None:
    """The operator's files; each may replace a bundled template, but not another of theirs."""
    if not directory.is_dir():
        raise TemplateError(f"WORKFLOWS_DIR {directory} is not a directory")
    bundled = dict(library.templates)
    for path in sorted(directory.glob("*.json")):
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
        template = parse_template(text, source=str(path))
        if template.name in bundled and library.templates[template.name] is bundled[template.name]:
            log.info("workflow %s from %s replaces the bundled one", template.name, path)
            del library.templates[template.name]
        _add(library, template)


def check_variants(library: TemplateLibrary) -> None:
    """Every variant must name a loaded template that can do what the variant is for."""
    for template in library:
        for kind, target_name in template.variants.items():
            target = library.get(target_name)
            if target is None:
                raise TemplateError(
                    f"{template.source}: variant {kind!r} names the workflow {target_name!r}, "
                    "which does not exist"
                )
            needed = VARIANT_NEEDS[kind]
            if not target.accepts(needed):
                raise TemplateError(
                    f"{template.source}: variant {kind!r} names {target_name!r} "
                    f"({target.source}), which does not map the {needed!r} parameter"
                )


def parse_template(text: str, *, source: str) -> Template:
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
        return _build_template(data, source)
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


def _build_template(data: dict[str, Any], source: str) -> Template:
    name = data["name"]
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"name {name!r} must be lower-case with no spaces, like 'my-workflow'")
    workflow = data["workflow"]
    _check_graph(workflow, source)
    parameters = _parameters(data["parameters"], workflow, source)
    defaults = _defaults(data.get("defaults", {}), parameters, source)
    _check_required(workflow, parameters, source)
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
        pony_tags=bool(data.get("pony_tags", False)),
        needs_image="image" in parameters,
        lora_model=lora_model,
        lora_clip=lora_clip,
        source=source,
        hidden=bool(data.get("hidden", False)),
        variants=_variants(data.get("variants", {}), source),
        requires_nodes=_requires_nodes(data.get("requires_nodes", []), source),
    )
    _check_against_comfyui(template)
    return template


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
            _check_ref(workflow, ref, source, f"parameter {param!r}")
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
        node, slot = _link(data[kind], workflow, source, where)
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


def _check_graph(workflow: Any, source: str) -> None:
    if not isinstance(workflow, dict) or not workflow:
        raise TemplateError(f"{source}: 'workflow' must be a non-empty API-format object")
    if "nodes" in workflow and "links" in workflow:
        raise TemplateError(
            f"{source}: this is ComfyUI's UI format; export it with 'Export (API)' instead"
        )
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise TemplateError(f"{source}: node {node_id} has no class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise TemplateError(f"{source}: node {node_id} has no inputs object")
        for input_name, value in inputs.items():
            if isinstance(value, list):
                _link(value, workflow, source, f"node {node_id} input {input_name!r}")


def _link(value: Any, workflow: Workflow, source: str, where: str) -> tuple[str, int]:
    """Check that `value` is a link to an existing node output; return it as a tuple."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or isinstance(value[1], bool)
    ):
        raise TemplateError(
            f'{source}: {where} must be a link ["<node id>", <slot>] with the id as a string'
        )
    target, slot = value[0], value[1]
    if target not in workflow:
        raise TemplateError(f"{source}: {where} links to node {target}, which does not exist")
    outputs = output_types(workflow[target]["class_type"])
    if slot < 0 or (outputs is not None and slot >= len(outputs)):
        raise TemplateError(
            f"{source}: {where} links to output {slot} of node {target} "
            f"({workflow[target]['class_type']}), which has no such output"
        )
    return target, slot


def _check_ref(workflow: Workflow, ref: InputRef, source: str, what: str) -> None:
    node = workflow.get(ref.node)
    if node is None:
        raise TemplateError(f"{source}: {what} points at node {ref.node}, which does not exist")
    if ref.input not in node["inputs"]:
        raise TemplateError(
            f"{source}: {what} points at input {ref.input!r} of node {ref.node} "
            f"({node['class_type']}), which has no such input"
        )
    if isinstance(node["inputs"][ref.input], list):
        raise TemplateError(
            f"{source}: {what} points at input {ref.input!r} of node {ref.node} "
            f"({node['class_type']}), which is a link; setting it would cut the graph"
        )


def _check_required(
    workflow: Workflow, parameters: Mapping[str, tuple[InputRef, ...]], source: str
) -> None:
    """Every input that must follow the request is mapped, or it would silently stay fixed."""
    mapped = {ref: param for param, refs in parameters.items() for ref in refs}
    for node_id, node in workflow.items():
        for input_name, wanted in REQUIRED_INPUTS.get(node["class_type"], {}).items():
            if input_name not in node["inputs"] or isinstance(node["inputs"][input_name], list):
                continue
            if mapped.get(InputRef(node_id, input_name)) not in wanted:
                raise TemplateError(
                    f"{source}: node {node_id} ({node['class_type']}) input {input_name!r} is "
                    f"not set by any parameter; map {' or '.join(map(repr, wanted))} to "
                    f'"{node_id}.{input_name}"'
                )


def _next_node_id(workflow: Workflow) -> str:
    numeric = [int(k) for k in workflow if k.isdigit()]
    return str(max(numeric, default=0) + 1)


def _chain_loras(workflow: Workflow, template: Template, loras: list[Lora]) -> None:
    """Insert a chain of LoraLoader nodes after the anchors and rewire everything that used them."""
    assert template.lora_model is not None and template.lora_clip is not None
    original = set(workflow)
    model, clip = list(template.lora_model), list(template.lora_clip)
    for lora in loras:
        node_id = _next_node_id(workflow)
        workflow[node_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora.name,
                "strength_model": lora.strength,
                "strength_clip": lora.strength,
            },
        }
        model, clip = [node_id, 0], [node_id, 1]
    anchors = {template.lora_model: model, template.lora_clip: clip}
    for node_id in original:
        inputs = workflow[node_id]["inputs"]
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2:
                replacement = anchors.get((value[0], value[1]))
                if replacement is not None:
                    inputs[name] = list(replacement)
