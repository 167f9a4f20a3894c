"""How the buttons of a job's message look, and the custom_id that names their job and image.

Apart from what they do (`cogs/common/buttons.py`), so the progress message can carry its Cancel
without importing the code that starts jobs.
"""

from __future__ import annotations

import discord

from cogs.common import render

CUSTOM_ID = r"sh:(?P<action>[a-z]+):(?P<job>[0-9]+)(?::(?P<index>[0-9]))?"

# label, label on one of several images (`V1`), emoji, style, row (rows 1-4: one per action
# on several images; Share, from cogs/gallery.py, takes row 4)
SHARE_ROW = 4
# A single image's Vary, Upscale and Share fit on one row.
SINGLE_IMAGE_ROW = 1
FACES: dict[str, tuple[str, str, str, discord.ButtonStyle, int]] = {
    "reroll": ("Reroll", "Reroll", "🎲", discord.ButtonStyle.secondary, 0),
    "edit": ("Edit", "Edit", "✏️", discord.ButtonStyle.secondary, 0),
    "details": ("Details", "Details", "🔎", discord.ButtonStyle.secondary, 0),
    "delete": ("Delete", "Delete", "🗑️", discord.ButtonStyle.danger, 0),
    "cancel": ("Cancel", "Cancel", "✖️", discord.ButtonStyle.danger, 0),
    "subtle": ("Vary (subtle)", "V{n} subtle", "🔀", discord.ButtonStyle.primary, 1),
    "strong": ("Vary (strong)", "V{n} strong", "🔀", discord.ButtonStyle.primary, 2),
    "vary": ("Vary", "V{n}", "🔀", discord.ButtonStyle.primary, 1),
    "upscale": ("Upscale", "U{n}", "⬆️", discord.ButtonStyle.primary, 3),
}


def button(
    action: str, job_id: int, index: int | None = None, *, count: int = 1, cost: int | None = None
) -> discord.ui.Button:
    """The button for `action` on a job (and one of its images); its cost shown when above 1."""
    label, short, emoji, style, row = FACES[action]
    if index is not None and count > 1:
        label = short.format(n=index + 1)
    elif index is not None:
        row = SINGLE_IMAGE_ROW
    if cost is not None and cost > 1:
        label = f"{label} · {render.credit_text(cost)}"
    custom_id = f"sh:{action}:{job_id}" + (f":{index}" if index is not None else "")
    return discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row)


def progress_view(job_id: int) -> discord.ui.View:
    """The progress message's Cancel; clicks reach `ResultButton` by custom_id, restarts or not."""
    view = discord.ui.View(timeout=None)
    view.add_item(button("cancel", job_id))
    view.stop()  # nothing to keep in memory: the dynamic item answers every click
    return view
