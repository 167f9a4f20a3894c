"""Checks of a template's API workflow graph: links, parameter targets, inputs that must follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.comfy_nodes import output_types
from bot.workflows.template import InputRef, TemplateError, Workflow, cfg_sets_guidance

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
    "EmptySD3LatentImage": {"width": ("width",), "height": ("height",), "batch_size": ("count",)},
    "FluxGuidance": {"guidance": ("cfg",)},
    "EmptyImage": {"width": ("width",), "height": ("height",), "batch_size": ("count",)},
    "LoadImage": {"image": ("image",)},
}


def check_graph(workflow: Any, source: str) -> None:
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
                check_link(value, workflow, source, f"node {node_id} input {input_name!r}")


def check_link(value: Any, workflow: Workflow, source: str, where: str) -> tuple[str, int]:
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


def check_ref(workflow: Workflow, ref: InputRef, source: str, what: str) -> None:
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


def check_required(
    workflow: Workflow, parameters: Mapping[str, tuple[InputRef, ...]], source: str
) -> None:
    """Every input that must follow the request is mapped, or it would silently stay fixed."""
    mapped = {ref: param for param, refs in parameters.items() for ref in refs}
    for node_id, node in workflow.items():
        for input_name, wanted in REQUIRED_INPUTS.get(node["class_type"], {}).items():
            if input_name not in node["inputs"] or isinstance(node["inputs"][input_name], list):
                continue
            if mapped.get(InputRef(node_id, input_name)) not in wanted:
                if _cfg_left_to_guidance(workflow, node, input_name, parameters):
                    continue
                raise TemplateError(
                    f"{source}: node {node_id} ({node['class_type']}) input {input_name!r} is "
                    f"not set by any parameter; map {' or '.join(map(repr, wanted))} to "
                    f'"{node_id}.{input_name}"'
                )


def _cfg_left_to_guidance(
    workflow: Workflow,
    node: dict[str, Any],
    input_name: str,
    parameters: Mapping[str, tuple[InputRef, ...]],
) -> bool:
    """Flux: the sampler's cfg stays 1.0 and the member's cfg sets a FluxGuidance node instead."""
    return (
        input_name == "cfg"
        and node["inputs"]["cfg"] == 1.0
        and cfg_sets_guidance(workflow, parameters)
    )
