"""Validates API-format workflows against ComfyUI 0.8.0's node definitions (the bot's own table)."""

from __future__ import annotations

from typing import Any

from bot.comfy_nodes import check_workflow


def validate(workflow: dict[str, Any]) -> list[str]:
    """Every problem ComfyUI's validation would report (or silently ignore), as sentences."""
    return check_workflow(workflow)


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
