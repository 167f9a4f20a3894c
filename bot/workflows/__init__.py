"""Workflow templates: ComfyUI API JSON plus a parameter map, validated on load, rendered as data.

The rooms: `template` (the value and its render), `parse` (one file, validated), `graph` (checks
of the workflow graph) and `library` (loading the bundled and the operator's templates).
"""

from bot.workflows.graph import REQUIRED_INPUTS
from bot.workflows.library import (
    TemplateLibrary,
    check_endpoints,
    check_variants,
    load_library,
)
from bot.workflows.parse import PARAMETER_TYPES, TEMPLATE_FIELDS, VARIANT_NEEDS, parse_template
from bot.workflows.template import InputRef, Lora, Template, TemplateError, Workflow

__all__ = [
    "PARAMETER_TYPES",
    "REQUIRED_INPUTS",
    "TEMPLATE_FIELDS",
    "VARIANT_NEEDS",
    "InputRef",
    "Lora",
    "Template",
    "TemplateError",
    "TemplateLibrary",
    "Workflow",
    "check_endpoints",
    "check_variants",
    "load_library",
    "parse_template",
]
