"""The `setting(...)` machinery: one environment variable declared as a `Settings` field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, dataclass, field, replace
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """One environment variable as declared on `Settings`: default, parser and documentation."""

    name: str
    default: str | None
    description: str
    parse: Callable[[str], Any]
    section: str
    secret: bool = False
    # For a setting with no default: where to find its value when a command needs it.
    missing_help: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


SETTING_KEY = "stablehand.setting"

# Headings of `.env.example`, in the order the settings are declared under them.
REQUIRED = "Required to run the bot"
RUNPOD = "RunPod and storage"
MODEL = "Model, prompts and logging"
SCHEDULING = "Scheduling and deadlines"
QUOTAS = "Quotas and budgets (dollar figures are estimates: set your real price)"
CONTENT = "Content policy and limits (server defaults; moderators can narrow them)"


def setting(
    section: str,
    default: str,
    description: str,
    parse: Callable[[str], T] = str,
    *,
    secret: bool = False,
) -> Any:
    """Declare one setting as a `Settings` field; its name is the field's name in capitals.

    A secret one is read as a `Secret` (None when empty) and never quoted in an error.
    """
    declared = Setting("", default, description, parse, section, secret)
    return field(metadata={SETTING_KEY: declared})


def required_setting(
    description: str, missing_help: str, parse: Callable[[str], T], *, secret: bool = False
) -> Any:
    """A setting with no default that some commands need; a secret one is read as a `Secret`."""
    declared = Setting("", None, description, parse, REQUIRED, secret, missing_help)
    return field(metadata={SETTING_KEY: declared})


def declared_setting(attribute: Field[Any]) -> Setting:
    """The `Setting` a `Settings` field declares, named after the field in capitals."""
    if SETTING_KEY not in attribute.metadata:
        raise TypeError(f"Settings.{attribute.name} must be declared with setting()")
    return replace(attribute.metadata[SETTING_KEY], name=attribute.name.upper())
