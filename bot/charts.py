"""PNG charts of the figures in `bot/stats.py`, in Discord's dark or light neutrals, sized for a phone.

Drawing is CPU work of a tenth of a second or more: callers run these functions in a thread
(`asyncio.to_thread`). Each builds its own `Figure` on the Agg canvas and never touches pyplot or
its global backend, so two charts can be drawn at once.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from PIL import Image

from bot.stats import OUTCOMES, ServerFigures, SpendFigures, UsageFigures, Window

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

# A phone shows an attachment about 360-400 points wide: few, large labels at 150 dpi.
WIDTH_IN, HEIGHT_IN, DPI = 7.0, 4.8, 150
FONT_SIZE = 15
MOST_MEMBERS = 15  # bars in the spend chart; the text lists every member
MOST_DAY_LABELS = 6  # dates under a day axis, counted back from today
MOST_USAGE_DAY_LABELS = 8  # the usage chart is one panel with room for a date per day


@dataclass(frozen=True)
class Theme:
    """Discord's neutral colours and its brand accents, which read on both backgrounds."""

    name: str
    background: str
    text: str
    muted: str
    grid: str
    accent: str = "#5865F2"  # blurple
    good: str = "#23A55A"
    bad: str = "#F23F43"
    warn: str = "#F0B232"
    neutral: str = "#80848E"
    second: str = "#EB459E"  # fuchsia


DARK = Theme("dark", background="#313338", text="#F2F3F5", muted="#B5BAC1", grid="#4E5058")
LIGHT = Theme("light", background="#FFFFFF", text="#060607", muted="#4E5058", grid="#E3E5E8")
THEMES = {theme.name: theme for theme in (DARK, LIGHT)}


def _figure(theme: Theme, *, height: float = HEIGHT_IN) -> Figure:
    # matplotlib is imported on the first chart, not at start: it adds about 40 MB to every
    # bot process, most of which never draws one.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, facecolor=theme.background)
    FigureCanvasAgg(figure)
    return figure


def _locator(*, nbins: int, integer: bool = False) -> MaxNLocator:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=integer, nbins=nbins)


def _style(ax: Axes, theme: Theme, title: str) -> None:
    ax.set_facecolor(theme.background)
    ax.set_title(title, color=theme.text, fontsize=FONT_SIZE + 2, loc="left", pad=10)
    ax.tick_params(colors=theme.muted, labelsize=FONT_SIZE - 2, length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color(theme.grid)
    ax.grid(axis="y", color=theme.grid, linewidth=0.8)
    ax.set_axisbelow(True)


def _legend(ax: Axes, theme: Theme, **kwargs: object) -> None:
    kwargs.setdefault("ncols", 4)
    legend = ax.legend(
        frameon=False,
        fontsize=FONT_SIZE - 3,
        labelcolor=theme.muted,
        handlelength=1.2,
        columnspacing=1.2,
        **kwargs,
    )
    legend.set_in_layout(True)


def _png(figure: Figure) -> bytes:
    """One draw, encoded by Pillow (`savefig` would lay out and draw the figure twice)."""
    canvas = figure.canvas
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
    buffer = io.BytesIO()
    # Flat colours compress well at the fastest level; the picture is what costs time.
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def day_label(at: float) -> str:
    """`Mon 24`: short enough for 14 of them on a phone."""
    return datetime.fromtimestamp(at, UTC).strftime("%a %d")


def _day_axis(ax: Axes, window: Window, most: int = MOST_DAY_LABELS) -> list[int]:
    xs = list(range(window.days))
    step = max(1, -(-window.days // most))
    ax.set_xticks(xs[::-1][::step][::-1])
    ax.set_xticklabels([day_label(window.day_starts[i]) for i in xs[::-1][::step][::-1]])
    ax.set_xlim(-0.6, window.days - 0.4)
    return xs


def no_data(title: str, message: str, theme: Theme = DARK) -> bytes:
    """A card that says there is nothing to draw, instead of empty axes."""
    figure = _figure(theme, height=2.4)
    figure.text(0.05, 0.68, title, color=theme.text, fontsize=FONT_SIZE + 3, va="center")
    figure.text(0.05, 0.36, message, color=theme.muted, fontsize=FONT_SIZE, va="center", wrap=True)
    return _png(figure)


def usage_chart(figures: UsageFigures, theme: Theme = DARK) -> bytes:
    """Credits per day as bars (allowance, then bonus on top), the allowance as a dashed line."""
    title = "Your credits per day"
    if figures.empty:
        return no_data(title, "You have not used any credits in this time.", theme)
    figure = _figure(theme)
    ax = figure.add_subplot()
    _style(ax, theme, title)
    xs = _day_axis(ax, figures.window, MOST_USAGE_DAY_LABELS)
    ax.bar(xs, figures.allowance, color=theme.accent, width=0.7, label="from your allowance")
    if any(figures.bonus):
        ax.bar(
            xs,
            figures.bonus,
            bottom=figures.allowance,
            color=theme.second,
            width=0.7,
            label="bonus",
        )
    if figures.period == "weekly":
        ax.step(
            xs,
            figures.used_in_period,
            where="mid",
            color=theme.warn,
            linewidth=2.2,
            label="used this week so far",
        )
    ax.axhline(
        figures.limit,
        color=theme.bad,
        linestyle=(0, (6, 4)),
        linewidth=2,
        label=f"allowance ({figures.limit} per {'week' if figures.period == 'weekly' else 'day'})",
    )
    for start in figures.period_starts[1:] if figures.period == "weekly" else ():
        ax.axvline(figures.window.day_of(start) - 0.5, color=theme.grid, linewidth=1.2)
    ax.yaxis.set_major_locator(_locator(integer=True, nbins=5))
    ax.set_ylim(0, max(figures.limit, *figures.used_in_period, *_stacked(figures)) * 1.15 or 1)
    ax.set_ylabel("credits", color=theme.muted, fontsize=FONT_SIZE - 2)
    _legend(ax, theme, loc="upper left", bbox_to_anchor=(0, -0.1), ncols=2)
    figure.set_layout_engine("constrained")
    return _png(figure)


def _stacked(figures: UsageFigures) -> list[int]:
    return [a + b for a, b in zip(figures.allowance, figures.bonus, strict=True)]


def spend_chart(
    figures: SpendFigures, names: Mapping[int, str], period: str, theme: Theme = DARK
) -> bytes:
    """One horizontal bar per member (credits), with the estimated dollars written beside it."""
    title = f"Spend per member ({period})"
    if figures.empty:
        return no_data(title, "Nobody has spent any credits in this time.", theme)
    shown = figures.members[:MOST_MEMBERS]
    figure = _figure(theme, height=max(3.0, 1.3 + 0.42 * len(shown)))
    ax = figure.add_subplot()
    _style(ax, theme, title)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color=theme.grid, linewidth=0.8)
    ys = list(range(len(shown)))[::-1]
    credits = [m.credits for m in shown]
    ax.barh(ys, credits, color=theme.accent, height=0.65)
    ax.set_yticks(ys)
    ax.set_yticklabels([_short(names.get(m.user_id, str(m.user_id))) for m in shown])
    ax.tick_params(axis="y", labelsize=FONT_SIZE - 1, labelcolor=theme.text)
    top = max(credits)
    for y, member in zip(ys, shown, strict=True):
        ax.text(
            member.credits + top * 0.015,
            y,
            f"{member.credits} · ${member.usd:.2f}",
            va="center",
            color=theme.muted,
            fontsize=FONT_SIZE - 2,
        )
    ax.set_xlim(0, top * 1.3)
    ax.xaxis.set_major_locator(_locator(integer=True, nbins=5))
    ax.set_xlabel(
        f"credits · total {figures.total_credits} credits, ${figures.total_usd:.2f} estimated",
        color=theme.muted,
        fontsize=FONT_SIZE - 2,
    )
    if len(figures.members) > len(shown):
        ax.set_title(
            f"and {len(figures.members) - len(shown)} more",
            loc="right",
            color=theme.muted,
            fontsize=FONT_SIZE - 2,
        )
    figure.set_layout_engine("constrained")
    return _png(figure)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def server_chart(figures: ServerFigures, theme: Theme = DARK) -> bytes:
    """Four panels: outcomes per day, dollars per day against the budget, timings, failure causes."""
    if figures.empty:
        return no_data("Server activity", "No jobs in this time.", theme)
    # One panel under the other: a phone is held upright.
    figure = _figure(theme, height=14.0)
    grid = figure.add_gridspec(4, 1, height_ratios=(1.1, 1.1, 0.8, 0.8))
    _outcomes(figure.add_subplot(grid[0]), figures, theme)
    _spend(figure.add_subplot(grid[1]), figures, theme)
    _timings(figure.add_subplot(grid[2]), figures, theme)
    _causes(figure.add_subplot(grid[3]), figures, theme)
    # Fixed margins: the constrained layout would cost a third of the drawing time here.
    figure.subplots_adjust(left=0.28, right=0.88, top=0.97, bottom=0.03, hspace=0.55)
    return _png(figure)


def _outcomes(ax: Axes, figures: ServerFigures, theme: Theme) -> None:
    _style(ax, theme, "Jobs per day")
    xs = _day_axis(ax, figures.window)
    colours = dict(zip(OUTCOMES, (theme.good, theme.bad, theme.warn, theme.neutral), strict=True))
    bottom = [0] * len(xs)
    for outcome in OUTCOMES:
        counts = figures.outcomes[outcome]
        if any(counts):
            ax.bar(xs, counts, bottom=bottom, color=colours[outcome], width=0.7, label=outcome)
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.yaxis.set_major_locator(_locator(integer=True, nbins=4))
    _legend(ax, theme, loc="upper left")
    ax.set_ylim(0, max(max(bottom), 1) * 1.3)


def _spend(ax: Axes, figures: ServerFigures, theme: Theme) -> None:
    _style(ax, theme, "GPU spend per day")
    xs = _day_axis(ax, figures.window)
    ax.bar(xs, figures.usd, color=theme.accent, width=0.7, label="dollars")
    if figures.daily_budget:
        ax.axhline(
            figures.daily_budget,
            color=theme.bad,
            linestyle=(0, (6, 4)),
            linewidth=2,
            label=f"budget ${figures.daily_budget:.2f}",
        )
    ax.yaxis.set_major_formatter(lambda value, _: f"${value:.2f}")
    ax.yaxis.set_major_locator(_locator(nbins=4))
    ax.set_ylim(0, max(max(figures.usd), figures.daily_budget or 0) * 1.5 or 1)
    seconds = ax.twinx()
    (line,) = seconds.plot(
        xs, figures.gpu_seconds, color=theme.warn, linewidth=2.2, marker="o", ms=4
    )
    line.set_label("GPU seconds (right)")
    seconds.set_ylim(0, max(figures.gpu_seconds) * 1.5 or 1)
    seconds.tick_params(colors=theme.warn, labelsize=FONT_SIZE - 2, length=0)
    seconds.yaxis.set_major_locator(_locator(nbins=4))
    for side in ("top", "right", "left", "bottom"):
        seconds.spines[side].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        [*handles, line],
        [*labels, line.get_label()],
        frameon=False,
        fontsize=FONT_SIZE - 3,
        labelcolor=theme.muted,
        ncols=2,
        loc="upper left",
        handlelength=1.2,
    )


def _timings(ax: Axes, figures: ServerFigures, theme: Theme) -> None:
    _style(ax, theme, "Median seconds per workflow")
    shown = figures.templates[:5]
    if not shown:
        _empty_panel(ax, theme, "no finished jobs")
        return
    ys = list(range(len(shown)))[::-1]
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color=theme.grid, linewidth=0.8)
    wait = [t.median_wait for t in shown]
    run = [t.median_run for t in shown]
    ax.barh([y + 0.18 for y in ys], wait, 0.36, color=theme.warn, label="wait (queue + cold start)")
    ax.barh([y - 0.18 for y in ys], run, 0.36, color=theme.accent, label="run")
    ax.set_yticks(ys)
    ax.set_yticklabels([_short(t.template, 18) for t in shown])
    ax.tick_params(axis="y", labelcolor=theme.text)
    ax.set_xlim(0, max(*wait, *run) * 1.1)
    _legend(ax, theme, loc="upper left", bbox_to_anchor=(0, -0.14), ncols=2)


def _causes(ax: Axes, figures: ServerFigures, theme: Theme) -> None:
    _style(ax, theme, "Why jobs failed")
    shown = figures.causes[:5]
    if not shown:
        _empty_panel(ax, theme, "no failures")
        return
    ys = list(range(len(shown)))[::-1]
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color=theme.grid, linewidth=0.8)
    ax.barh(ys, [count for _, count in shown], 0.6, color=theme.bad)
    ax.set_yticks(ys)
    ax.set_yticklabels([_short(words, 20) for words, _ in shown])
    ax.tick_params(axis="y", labelcolor=theme.text)
    ax.xaxis.set_major_locator(_locator(integer=True, nbins=4))


def _empty_panel(ax: Axes, theme: Theme, words: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.spines["bottom"].set_visible(False)
    ax.text(0.5, 0.5, words, ha="center", va="center", color=theme.muted, fontsize=FONT_SIZE)
