"""Workflow templates: ComfyUI API JSON plus a parameter map, validated on load, rendered as data."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

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
    "hires_denoise": float,
    "color": int,
}

# Outputs of the node classes the bundled templates use (from ComfyUI's /object_info); links
# into other classes are checked for the node's existence only.
NODE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "CheckpointLoaderSimple": ("MODEL", "CLIP", "VAE"),
    "CLIPSetLastLayer": ("CLIP",),
    "LoraLoader": ("MODEL", "CLIP"),
    "CLIPTextEncode": ("CONDITIONING",),
    "EmptyLatentImage": ("LATENT",),
    "KSampler": ("LATENT",),
    "VAEDecode": ("IMAGE",),
    "VAEEncode": ("LATENT",),
    "SaveImage": (),
    "LatentUpscaleBy": ("LATENT",),
    "LoadImage": ("IMAGE", "MASK"),
    "EmptyImage": ("IMAGE",),
    "ImageScaleBy": ("IMAGE",),
}

OUTPUT_NODE_CLASSES = frozenset({"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveWEBM"})

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

    @property
    def accepts_loras(self) -> bool:
        return self.lora_model is not None

    def accepts(self, parameter: str) -> bool:
        return parameter in self.parameters

    def render(self, values: Mapping[str, Any], loras: Iterable[Lora] = ()) -> Workflow:
        """A fresh workflow dict with `values` set on the mapped inputs and `loras` chained in."""
        workflow = copy.deepcopy(self.workflow)
        for name, value in values.items():
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

    def __iter__(self):
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
        for path in sorted(Path(extra_dir).glob("*.json")):
            template = parse_template(path.read_text("utf-8"), source=str(path))
            if template.name in library.templates:
                log.info("workflow %s from %s replaces the bundled one", template.name, path)
            library.templates[template.name] = template
    return library


def _add(library: TemplateLibrary, template: Template) -> None:
    if template.name in library.templates:
        raise TemplateError(f"{template.source}: a workflow named {template.name!r} exists twice")
    library.templates[template.name] = template


def parse_template(text: str, *, source: str) -> Template:
    """Parse and validate one template file's text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: the file must hold one JSON object")
    try:
        return _build_template(data, source)
    except TemplateError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"{source}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


def _build_template(data: dict[str, Any], source: str) -> Template:
    name = data["name"]
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
        raise ValueError(f"name {name!r} must be lower-case with no spaces, like 'my-workflow'")
    workflow = data["workflow"]
    _check_graph(workflow, source)
    parameters = {}
    for param, targets in data["parameters"].items():
        if param not in PARAMETER_TYPES:
            known = ", ".join(PARAMETER_TYPES)
            raise TemplateError(f"{source}: unknown parameter {param!r} (known: {known})")
        if isinstance(targets, str):
            targets = [targets]
        refs = tuple(InputRef.parse(t) for t in targets)
        for ref in refs:
            _check_ref(workflow, ref, source, f"parameter {param!r}")
        parameters[param] = refs
    defaults = dict(data.get("defaults", {}))
    for param, value in defaults.items():
        if param not in parameters:
            raise TemplateError(f"{source}: default for {param!r}, which the template does not map")
        expected = PARAMETER_TYPES[param]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            defaults[param] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool):
            raise TemplateError(f"{source}: default {param}={value!r} is not a {expected.__name__}")
    _check_required(workflow, parameters, source)
    base = data.get("base_resolution", [1024, 1024])
    anchors = data.get("lora_anchor")
    lora_model = lora_clip = None
    if anchors is not None:
        lora_model = _link(anchors["model"], workflow, source, "lora_anchor.model")
        lora_clip = _link(anchors["clip"], workflow, source, "lora_anchor.clip")
    multiplier = float(data.get("cost_multiplier", 1.0))
    if not 0 < multiplier <= 100:
        raise TemplateError(f"{source}: cost_multiplier must be above 0 and at most 100")
    return Template(
        name=name,
        description=str(data.get("description", "")),
        workflow=workflow,
        parameters=parameters,
        defaults=defaults,
        base_width=int(base[0]),
        base_height=int(base[1]),
        cost_multiplier=multiplier,
        pony_tags=bool(data.get("pony_tags", False)),
        needs_image="image" in parameters,
        lora_model=lora_model,
        lora_clip=lora_clip,
        source=source,
        hidden=bool(data.get("hidden", False)),
        variants=_variants(data.get("variants", {}), source),
    )


def _variants(data: Any, source: str) -> dict[str, str]:
    """Which template to switch to when a member asks for a hires pass or attaches an image."""
    if not isinstance(data, dict) or not set(data) <= {"hires", "image"}:
        raise TemplateError(f"{source}: 'variants' may only name 'hires' and 'image' templates")
    return {kind: str(name) for kind, name in data.items()}


def _check_graph(workflow: Any, source: str) -> None:
    if not isinstance(workflow, dict) or not workflow:
        raise TemplateError(f"{source}: 'workflow' must be a non-empty API-format object")
    if "nodes" in workflow and "links" in workflow:
        raise TemplateError(
            f"{source}: this is ComfyUI's UI format; export it with 'Export (API)' instead"
        )
    outputs = 0
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise TemplateError(f"{source}: node {node_id} has no class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise TemplateError(f"{source}: node {node_id} has no inputs object")
        for input_name, value in inputs.items():
            if isinstance(value, list):
                _link(value, workflow, source, f"node {node_id} input {input_name!r}")
        outputs += node["class_type"] in OUTPUT_NODE_CLASSES
    if not outputs:
        raise TemplateError(f"{source}: the workflow has no output node (SaveImage)")


def _link(value: Any, workflow: Workflow, source: str, where: str) -> tuple[str, int]:
    """Check that `value` is a link to an existing node output; return it as a tuple."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[1], int)
        or isinstance(value[1], bool)
    ):
        raise TemplateError(f'{source}: {where} must be a link ["<node id>", <slot>]')
    target, slot = str(value[0]), value[1]
    if target not in workflow:
        raise TemplateError(f"{source}: {where} links to node {target}, which does not exist")
    outputs = NODE_OUTPUTS.get(workflow[target]["class_type"])
    if slot < 0 or (outputs is not None and slot >= len(outputs)):
        raise TemplateError(
            f"{source}: {where} links to output {slot} of node {target}, which has no such output"
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
        raise TemplateError(f"{source}: {what} would overwrite the link {ref} with a value")


def _check_required(workflow: Workflow, parameters: Mapping[str, Any], source: str) -> None:
    """Whatever the graph needs from a member must be mapped, or it would silently be ignored."""
    classes = {node["class_type"] for node in workflow.values()}
    required = set()
    if "KSampler" in classes:
        required |= {"seed", "steps", "cfg", "sampler", "scheduler"}
    if "CLIPTextEncode" in classes:
        required |= {"prompt", "negative"}
    if classes & {"EmptyLatentImage", "EmptyImage"}:
        required |= {"width", "height", "count"}
    if "LoadImage" in classes:
        required.add("image")
    missing = sorted(required - set(parameters))
    if missing:
        raise TemplateError(f"{source}: required parameters not mapped: {', '.join(missing)}")


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
                replacement = anchors.get((str(value[0]), value[1]))
                if replacement is not None:
                    inputs[name] = list(replacement)
