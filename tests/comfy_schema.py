"""Validates API-format workflows against ComfyUI 0.8.0's node definitions (/object_info extract)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

OBJECT_INFO = Path(__file__).parent / "data" / "comfyui-object-info.json"
# Enums that list one deployment's files: any value is plausible.
FILE_ENUMS = {
    ("CheckpointLoaderSimple", "ckpt_name"),
    ("LoraLoader", "lora_name"),
    ("LoadImage", "image"),
}


@cache
def node_definitions() -> dict[str, Any]:
    return json.loads(OBJECT_INFO.read_text())["nodes"]


def validate(workflow: dict[str, Any]) -> list[str]:
    """Every problem ComfyUI's validation would report (or silently ignore), as sentences."""
    problems: list[str] = []
    defs = node_definitions()
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        spec = defs.get(class_type)
        if spec is None:
            problems.append(f"node {node_id}: class {class_type} has no definition in the extract")
            continue
        declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        inputs = node.get("inputs", {})
        for name in spec["input"].get("required", {}):
            if name not in inputs:
                problems.append(f"node {node_id} ({class_type}): required input {name} missing")
        for name, value in inputs.items():
            if name not in declared:
                problems.append(
                    f"node {node_id} ({class_type}): undeclared input {name} would be ignored"
                )
                continue
            problems += _check_value(workflow, node_id, class_type, name, value, declared[name])
    return problems


def _check_value(workflow, node_id, class_type, name, value, spec) -> list[str]:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    where = f"node {node_id} ({class_type}) input {name}"
    if isinstance(value, list):
        if len(value) != 2 or str(value[0]) not in workflow:
            return [f"{where}: link to missing node {value}"]
        source = workflow[str(value[0])]
        outputs = node_definitions().get(source["class_type"], {}).get("output", [])
        if value[1] >= len(outputs):
            return [f"{where}: link to missing output {value[1]} of {source['class_type']}"]
        expected = kind if isinstance(kind, str) else None
        if expected and outputs[value[1]] != expected:
            return [f"{where}: expects {expected}, linked to {outputs[value[1]]}"]
        return []
    if isinstance(kind, list):
        if (class_type, name) in FILE_ENUMS:
            return [] if isinstance(value, str) and value else [f"{where}: empty file name"]
        return [] if value in kind else [f"{where}: {value!r} not in the allowed values"]
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: {value!r} is not an INT"]
    elif kind == "FLOAT":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return [f"{where}: {value!r} is not a FLOAT"]
    elif kind == "STRING":
        if not isinstance(value, str):
            return [f"{where}: {value!r} is not a STRING"]
        return []
    else:
        return [f"{where}: a {kind} input needs a link, got {value!r}"]
    if "min" in options and value < options["min"]:
        return [f"{where}: {value} below min {options['min']}"]
    if "max" in options and value > options["max"]:
        return [f"{where}: {value} above max {options['max']}"]
    return []


def text_encoder_clip_paths(workflow: dict[str, Any]) -> list[list[str]]:
    """For each CLIPTextEncode, the chain of class types its `clip` input passes through."""
    paths = []
    for node in workflow.values():
        if node["class_type"] != "CLIPTextEncode":
            continue
        chain, link = [], node["inputs"]["clip"]
        while isinstance(link, list):
            source = workflow[str(link[0])]
            chain.append(source["class_type"])
            link = source["inputs"].get("clip")
        paths.append(chain)
    return paths
