"""Styles: named presets (a prompt template around `{prompt}`, a negative, LoRAs, a workflow and
defaults) shipped by the operator in `STYLES_DIR` or added by a server's moderators.

A style is applied to what the member typed before it is parsed: its words wrap the member's, its
LoRAs and negative are added, and its defaults fill only what the member left unsaid.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from bot import audit
from bot.db import Database
from bot.model_files import ModelNameError, model_file_name
from bot.prompt import ContentPolicy, Options, PromptError
from bot.store import stores_for
from bot.store.audit import AuditStore
from bot.store.styles import StyleRows
from bot.style_parse import (
    CFG_RANGE,
    DEFAULTS,
    FIELDS,
    MAX_STYLE_LORAS,
    MAX_STYLE_TEXT,
    PLACEHOLDER,
    STEPS_RANGE,
    STYLE_NAME,
    Style,
    StyleError,
    load_styles,
    parse_style,
)
from bot.workflows import TemplateLibrary

__all__ = [
    "CFG_RANGE",
    "DEFAULTS",
    "FIELDS",
    "MAX_SERVER_STYLES",
    "MAX_STYLE_LORAS",
    "MAX_STYLE_TEXT",
    "PLACEHOLDER",
    "STEPS_RANGE",
    "STYLE_NAME",
    "Style",
    "StyleBook",
    "StyleError",
    "apply_style",
    "load_styles",
    "member_flags",
    "parse_style",
    "split_words",
    "style_flag",
    "with_words",
]

log = logging.getLogger(__name__)

# A server's own styles; the operator's are not counted.
MAX_SERVER_STYLES = 50
# Where a prompt's flags start: the same rule as the parser's (`--name`, or a phone's em dash).
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:-{2,}|[—–]-*)([A-Za-z][A-Za-z0-9_-]*)")
_STYLE_FLAG = re.compile(r"(?:(?<=\s)|^)(?:-{2,}|[—–]-*)style\s+(\S+)", re.IGNORECASE)
_LORA_TAG = re.compile(r"<lora:([^>:]*)", re.IGNORECASE)
_WHOLE_LORA_TAG = re.compile(r"<lora:[^>]*>", re.IGNORECASE)
# A flag the member typed that already says what a style default would: aliases included.
_SAME_FLAG = {"aspect": "ar", "size": "ar", "n": "count", "batch": "count", "w": "workflow"}
# Style defaults given as flags, and the template parameter each needs.
_DEFAULT_FLAGS = {"aspect": ("ar", "width"), "sampler": ("sampler", "sampler")}
_DEFAULT_OPTIONS = {"aspect": "aspect", "sampler": "sampler", "count": "count"}


def style_flag(text: str) -> tuple[str, str] | None:
    """`(name, text without it)` when the prompt says `--style NAME`, else None."""
    match = _STYLE_FLAG.search(text)
    if match is None:
        return None
    rest = (text[: match.start()] + text[match.end() :]).strip()
    return match.group(1).strip(" ,;\"'").lower(), " ".join(rest.split())


def split_words(text: str) -> tuple[str, str]:
    """The member's words, and the flags after them (`a cat --ar 16:9` -> `a cat`, `--ar 16:9`)."""
    match = _FLAG.search(text)
    if match is None:
        return text.strip(), ""
    return text[: match.start()].strip(), text[match.start() :].strip()


def with_words(text: str, words: str) -> str:
    """`text` with `words` added after the member's words, before any flag."""
    before, flags = split_words(text)
    return " ".join(part for part in (before, words, flags) if part)


def member_flags(text: str) -> set[str]:
    names = {m.group(1).lower() for m in _FLAG.finditer(text)}
    return {_SAME_FLAG.get(name, name) for name in names}


def apply_style(
    style: Style,
    text: str,
    options: Options,
    policy: ContentPolicy,
    library: TemplateLibrary,
) -> tuple[str, Options, ContentPolicy]:
    """What the member typed, with the style: the member's own flags and options win."""
    words, flags = split_words(text)
    # LoRA tags may sit among the words: they stay, outside the style's words.
    own_tags = _WHOLE_LORA_TAG.findall(words)
    words = " ".join(_WHOLE_LORA_TAG.sub(" ", words).split())
    styled = words if _wrapped(style, words) else style.prompt.replace(PLACEHOLDER, words)
    styled = " ".join([styled.strip(" ,"), *own_tags])
    named = {_lora_file(m.group(1)) for m in _LORA_TAG.finditer(text)}
    tags = [
        f"<lora:{lora.name}:{lora.strength:g}>" for lora in style.loras if lora.name not in named
    ]
    given = member_flags(flags)
    workflow = options.workflow or _flag_value(flags, "workflow") or style.workflow
    template = library.get(workflow or policy.default_template)
    extra = []
    for default, (flag, parameter) in _DEFAULT_FLAGS.items():
        value = getattr(style, default)
        typed = getattr(options, _DEFAULT_OPTIONS[default]) is not None
        accepted = template is not None and template.accepts(parameter)
        if value is not None and flag not in given and not typed and accepted:
            extra.append(f"--{flag} {value}")
    count = options.count
    takes_count = template is not None and template.accepts("count")
    if style.count is not None and count is None and "count" not in given and takes_count:
        count = min(style.count, policy.max_count)
    # An Edit of a styled job brings the style's words and negative back with it: not twice.
    added_negative = "" if style.negative in (options.negative or "") else style.negative
    negative = ", ".join(p for p in (added_negative, options.negative or "") if p.strip())
    styled_text = " ".join(part for part in (styled, *tags, flags, *extra) if part)
    styled_options = replace(options, negative=negative or None, count=count)
    styled_policy = replace(
        policy,
        default_template=style.workflow or policy.default_template,
        default_steps=style.steps if style.steps is not None else policy.default_steps,
        default_cfg=style.cfg if style.cfg is not None else policy.default_cfg,
    )
    return styled_text, styled_options, styled_policy


def _wrapped(style: Style, words: str) -> bool:
    """Whether the words already carry the style's own around them (an Edit of a styled job)."""
    before, _, after = style.prompt.partition(PLACEHOLDER)
    before, after = before.strip(" ,"), after.strip(" ,")
    if not before and not after:
        return False
    return words.startswith(before) and words.endswith(after)


def _lora_file(name: str) -> str:
    try:
        return model_file_name(name)
    except ModelNameError:
        return name


def _flag_value(flags: str, name: str) -> str | None:
    for match in _FLAG.finditer(flags):
        if _SAME_FLAG.get(match.group(1).lower(), match.group(1).lower()) == name:
            value = flags[match.end() :].split()
            return value[0] if value else None
    return None


class StyleBook:
    """The operator's styles and each server's own; a server's are changed with an audit entry."""

    def __init__(
        self,
        db: Database,
        shipped: Mapping[str, Style],
        library: TemplateLibrary,
        *,
        rows: StyleRows | None = None,
        audit_store: AuditStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.shipped = dict(shipped)
        self.library = library
        engine = stores_for(db)
        self._rows = rows or engine.styles
        self._audit_store = audit_store or engine.audit
        self._clock = clock

    async def all(self, guild_id: int | None) -> list[Style]:
        """Every style a server can use, the operator's first, each group by name."""
        own = await self._server_styles(guild_id)
        return [*sorted(self.shipped.values(), key=lambda s: s.name), *own]

    async def find(self, guild_id: int | None, name: str) -> Style:
        """The style called `name` here; raises `PromptError` suggesting the closest names."""
        wanted = name.strip().lower()
        if wanted in self.shipped:
            return self.shipped[wanted]
        styles = {s.name: s for s in await self._server_styles(guild_id)}
        if wanted in styles:
            return styles[wanted]
        known = sorted({*self.shipped, *styles})
        close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        listed = ", ".join(f"`{n}`" for n in known[:15]) if known else "none yet"
        raise PromptError(f"There is no style called `{wanted[:32]}`.{hint} Styles here: {listed}.")

    async def exists(self, guild_id: int | None, name: str) -> bool:
        try:
            await self.find(guild_id, name)
        except PromptError:
            return False
        return True

    async def add(self, guild_id: int, moderator_id: int, style: Style) -> None:
        """Store a server's style; raises `StyleError` if the name is taken or the list is full."""
        if style.name in self.shipped:
            raise StyleError(
                "name", f"`{style.name}` is already a style the bot ships; pick another name"
            )
        now = self._clock()
        async with self.db.transaction() as tx:
            if len(await self._rows.all(guild_id, tx=tx)) >= MAX_SERVER_STYLES:
                raise StyleError(
                    "name", f"cannot be added: this server has {MAX_SERVER_STYLES} styles already"
                )
            definition = style.definition()
            if not await self._rows.add(
                tx, guild_id, style.name, definition, by=moderator_id, at=now
            ):
                raise StyleError(
                    "name",
                    f"`{style.name}` is already one of this server's styles; remove it first",
                )
            await audit.record(
                self._audit_store,
                tx,
                guild_id=guild_id,
                moderator_id=moderator_id,
                action="style.add",
                at=now,
                facts={"name": style.name, **definition},
            )

    async def remove(self, guild_id: int, moderator_id: int, name: str) -> bool:
        """Delete a server's style; False if it has none of that name."""
        now = self._clock()
        wanted = name.strip().lower()
        async with self.db.transaction() as tx:
            removed = await self._rows.remove(tx, guild_id, wanted)
            if removed is None:
                return False
            await audit.record(
                self._audit_store,
                tx,
                guild_id=guild_id,
                moderator_id=moderator_id,
                action="style.remove",
                at=now,
                facts={"name": wanted},
            )
        return True

    async def _server_styles(self, guild_id: int | None) -> list[Style]:
        if guild_id is None:
            return []
        styles = []
        for name, definition in (await self._rows.all(guild_id)).items():
            try:
                styles.append(parse_style(name, definition, self.library))
            except StyleError as exc:
                # Stored when valid; a workflow the operator removed since makes it unusable.
                log.warning("guild %d: style %s is not usable any more: %s", guild_id, name, exc)
        return styles
