"""The template library: bundled templates, then the operator's, kept to configured endpoints."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bot.model_family import DEFAULT_ENDPOINT
from bot.workflows.parse import VARIANT_NEEDS, parse_template
from bot.workflows.template import Template, TemplateError

log = logging.getLogger(__name__)


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


def load_library(
    extra_dir: Path | None = None, endpoints: Collection[str] = (DEFAULT_ENDPOINT,)
) -> TemplateLibrary:
    """Load the bundled templates and those in `extra_dir` that run on one of `endpoints`;
    a broken file raises `TemplateError`."""
    library = TemplateLibrary()
    bundled = resources.files("bot.templates")
    for entry in sorted(bundled.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            text = entry.read_text("utf-8")
            _add(library, parse_template(text, source=entry.name, bundled=True))
    if extra_dir is not None:
        _add_operator_templates(library, Path(extra_dir))
    for name in check_endpoints(library, endpoints):
        log.info("workflow %s is not offered: no endpoint named for it", name)
    check_variants(library)
    return library


def check_endpoints(library: TemplateLibrary, endpoints: Collection[str]) -> list[str]:
    """Drop bundled templates whose endpoint is not configured and return their names;
    an operator's template naming an unconfigured endpoint raises `TemplateError`."""
    dropped = []
    for template in list(library):
        if template.endpoint in endpoints:
            continue
        if not template.bundled:
            known = ", ".join(sorted(endpoints)) or "none"
            raise TemplateError(
                f"{template.source}: runs on the endpoint {template.endpoint!r}, which is not "
                f"configured (endpoints: {known}); name it in RUNPOD_ENDPOINTS or change "
                "'endpoint'"
            )
        del library.templates[template.name]
        dropped.append(template.name)
    return dropped


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
