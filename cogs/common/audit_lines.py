"""The audit trail in words: one sentence per moderator action, from the values the core recorded.

A helper, not an extension: `/quota log` shows these lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bot.audit import AuditEntry
from cogs.common.render import bonus_text, credit_text, dollars, relative

SETTING_LABELS = {
    "moderator_role_id": "the moderator role",
    "nsfw_policy": "the NSFW policy",
    "allowed_channels": "the channels /imagine works in",
    "default_workflow": "the default workflow",
    "default_steps": "the default steps",
    "default_cfg": "the default CFG",
    "max_steps": "the steps cap",
    "max_count": "the images-per-job cap",
    "max_pixels": "the pixels-per-image cap",
    "blocked_words": "the server's blocked words",
    "disabled_workflows": "the workflows turned off",
    "gallery_channel_id": "the gallery channel",
}


def said(entry: AuditEntry) -> str:
    """What the moderator did, e.g. `gave <@1> 5 credits of bonus`."""
    if entry.legacy_detail:
        return entry.legacy_detail
    if entry.action.startswith("settings."):
        name = entry.action.removeprefix("settings.")
        return _setting(name, entry.facts.get("before"), entry.facts.get("after"))
    sentence = _SENTENCES.get(entry.action)
    # An action recorded by a newer version than this one: its name is all it can say.
    return sentence(entry.target_id, entry.facts) if sentence else entry.action


def _limit(what: str) -> Callable[[int | None, Mapping[str, Any]], str]:
    def sentence(target: int | None, facts: Mapping[str, Any]) -> str:
        named = what.format(target=target)
        if facts.get("credits") is None:
            return f"removed {named}"
        per = "week" if facts.get("period") == "weekly" else "day"
        return f"set {named} to {credit_text(facts['credits'])} per {per}"

    return sentence


def _blocked(target: int | None, facts: Mapping[str, Any]) -> str:
    until = f" until {relative(facts['until'])}" if facts.get("until") else ""
    return f"blocked <@{target}>{until}"


def _budget(target: int | None, facts: Mapping[str, Any]) -> str:
    if facts.get("daily_usd") is None:
        return "removed the daily budget"
    return f"set the daily budget to {dollars(facts['daily_usd'])}"


_SENTENCES: dict[str, Callable[[int | None, Mapping[str, Any]], str]] = {
    "limit.member": _limit("<@{target}>'s own limit"),
    "limit.role": _limit("the <@&{target}> tier"),
    "limit.default": _limit("the server default"),
    "grant": lambda target, facts: f"gave <@{target}> {bonus_text(facts['credits'])}",
    "style.add": lambda target, facts: f"added the style `{facts['name']}`",
    "style.remove": lambda target, facts: f"removed the style `{facts['name']}`",
    "reset": lambda target, facts: f"reset <@{target}>'s allowance",
    "block": _blocked,
    "unblock": lambda target, facts: f"unblocked <@{target}>",
    "gallery.remove": lambda target, facts: (
        f"removed image {facts['image']} of job #{facts['job_id']} (shared by <@{target}>) from the gallery"
    ),
    "budget": _budget,
}


def _setting(name: str, before: Any, after: Any) -> str:
    """A setting changed; a channel added or removed is named on its own."""
    what = SETTING_LABELS.get(name, name)
    if after is None:
        return f"reset {what} to the bot's default"
    if name in ("allowed_channels", "blocked_words", "disabled_workflows") and before is not None:
        added = [c for c in after if c not in before]
        removed = [c for c in before if c not in after]
        if added and not removed:
            return f"added {_shown(name, added)} to {what}"
        if removed and not added:
            return f"removed {_shown(name, removed)} from {what}"
    return f"set {what} to {_shown(name, after)}"


def _shown(name: str, value: Any) -> str:
    if name == "allowed_channels":
        return ", ".join(f"<#{c}>" for c in value) or "none"
    if name == "moderator_role_id":
        return f"<@&{value}>"
    if name in ("blocked_words", "disabled_workflows"):
        return ", ".join(f"`{item}`" for item in value) or "none"
    if name == "gallery_channel_id":
        return f"<#{value}>"
    if name == "max_pixels":
        return f"{value / 2**20:.2f} MP"
    return str(value)
