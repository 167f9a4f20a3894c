"""A workflow template as data (the API workflow plus where each parameter goes) and its render."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.model_family import DEFAULT_ENDPOINT, PONY_FAMILY, ModelFamily

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
    model: ModelFamily = field(default_factory=ModelFamily)
    endpoint: str = DEFAULT_ENDPOINT
    needs_image: bool = False
    lora_model: tuple[str, int] | None = None
    lora_clip: tuple[str, int] | None = None
    source: str = "<bundled>"
    bundled: bool = False
    hidden: bool = False
    variants: Mapping[str, str] = field(default_factory=dict)
    requires_nodes: tuple[str, ...] = ()

    @property
    def pony_tags(self) -> bool:
        """A Pony template: the bundled Vary and Upscale workflows suit its results."""
        return self.model.family == PONY_FAMILY

    @property
    def cfg_is_guidance(self) -> bool:
        """Whether a member's cfg sets a guidance-distilled model's guidance (Flux), not CFG."""
        return cfg_sets_guidance(self.workflow, self.parameters)

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


def cfg_sets_guidance(workflow: Workflow, parameters: Mapping[str, tuple[InputRef, ...]]) -> bool:
    return any(
        workflow[ref.node]["class_type"] == "FluxGuidance" for ref in parameters.get("cfg", ())
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
