"""Charts for the HTML reports: matplotlib's SVG backend, embedded inline.

Text stays text (`svg.fonttype: none`), so Chinese labels are drawn by the viewer's own fonts and
remain selectable and searchable; the font list names common CJK fonts after DejaVu Sans, and
matplotlib's warnings about glyphs it cannot measure on a machine without CJK fonts are
silenced (layout is then a little approximate, the page is still right). `svg.hashsalt` is
fixed so the same data gives the same bytes. Each chart returns markup that is safe to insert
(`markupsafe.Markup`): a <figure> with the <svg> (no XML prolog or DOCTYPE), its title drawn
inside and given to screen readers as `aria-label`.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("svg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from markupsafe import Markup, escape  # noqa: E402

from reports.i18n import Translator  # noqa: E402

RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "strongroom-report",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["DejaVu Sans", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
                        "PingFang SC", "Microsoft YaHei", "Arial Unicode MS"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "figure.dpi": 72,
}
STATE_COLOURS = {"verified": "#2e7d32", "repaired": "#66bb6a", "copied": "#f9a825", "pending": "#fbc02d",
                 "failed": "#c62828", "damaged": "#b71c1c", "missing": "#6a1b9a", "absent": "#9e9e9e"}
OUTCOME_COLOURS = {"success": "#2e7d32", "failure": "#c62828", "inconclusive": "#f9a825", "warning": "#ef6c00"}
LEVEL_COLOURS = ["#9e9e9e", "#c0392b", "#d68910", "#2874a6", "#1e8449"]
BAR = "#1f5fa8"
_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)


def _svg(fig, title: str) -> Markup:
    buf = io.StringIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        warnings.filterwarnings("ignore", message=r"findfont")
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = _PROLOG.sub("", buf.getvalue(), count=1)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1)
    return Markup(f'<figure class="chart">{svg}</figure>')


def _short(label: str, n: int = 38) -> str:
    return label if len(label) <= n else label[:n - 1] + "…"


def barh(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, tr: Translator,
         size_axis: bool = False) -> Markup:
    """Horizontal bars, largest on top."""
    with plt.rc_context(RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        height = 0.8 + 0.32 * max(len(labels), 1)
        fig, ax = plt.subplots(figsize=(9, height))
        ys = list(range(len(labels)))[::-1]
        ax.barh(ys, values, color=BAR, height=0.65)
        ax.set_yticks(ys)
        ax.set_yticklabels([_short(str(x)) for x in labels])
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        if not size_axis:
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ticks = ax.get_xticks()
            ax.set_xticks(ticks)
            ax.set_xticklabels([tr.size(int(t)) if t >= 0 else "" for t in ticks])
        for y, v in zip(ys, values):
            ax.text(v, y, " " + (tr.size(int(v)) if size_axis else tr.num(int(v))), va="center", fontsize=8)
        ax.margins(x=0.15)
        return _svg(fig, title)


def stacked(categories: Sequence[str], series: Dict[str, Sequence[int]], colours: Dict[str, str],
            labels: Dict[str, str], title: str, ylabel: str) -> Markup:
    """Vertical stacked bars: one bar per category, one segment per series."""
    with plt.rc_context(RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(categories) + 3), 2.6))
        xs = list(range(len(categories)))
        bottom = [0] * len(categories)
        for name, values in series.items():
            ax.bar(xs, values, bottom=bottom, color=colours.get(name, "#607d8b"), label=labels.get(name, name),
                   width=0.6)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(xs)
        ax.set_xticklabels([_short(str(c), 18) for c in categories], rotation=30 if len(categories) > 6 else 0,
                           ha="right" if len(categories) > 6 else "center")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, title)


def levels(collections: Sequence[str], areas: Sequence[str], values: List[List[int]], area_labels: Sequence[str],
           title: str, xlabel: str, tr: Translator) -> Markup:
    """Grouped horizontal bars: per collection (every one of them, top to bottom in the table's
    order), one bar per functional area, length = level reached. Horizontal so that the chart
    grows downwards with the number of collections and no collection is ever left out."""
    with plt.rc_context(RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        shown = list(collections)
        n = max(len(shown), 1)
        fig, ax = plt.subplots(figsize=(9, 1.0 + 0.55 * n))
        height = 0.8 / max(len(areas), 1)
        palette = ["#1f5fa8", "#2e7d32", "#8e44ad", "#d35400", "#16a085"]
        rows = list(range(len(shown)))[::-1]
        for i, (area, label) in enumerate(zip(areas, area_labels)):
            ys = [y + ((len(areas) - 1) / 2 - i) * height for y in rows]
            ax.barh(ys, [values[c][i] for c in range(len(shown))], height=height * 0.95, color=palette[i % 5],
                    label=label)
        ax.set_yticks(rows)
        ax.set_yticklabels([_short(c, 32) for c in shown])
        ax.set_ylim(-0.6, len(shown) - 0.4)
        ax.set_xlim(0, 4.2)
        ax.set_xticks([0, 1, 2, 3, 4])
        ax.set_xticklabels([tr.level(n) for n in range(5)])
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, title)


def top_with_other(rows: Sequence[Tuple[str, int]], n: int, other: str) -> List[Tuple[str, int]]:
    """The n largest, and the rest summed as `other` (so the bars add up to the total)."""
    rows = sorted(rows, key=lambda r: -r[1])
    head, tail = list(rows[:n]), rows[n:]
    rest = sum(v for _, v in tail)
    if rest:
        head.append((other, rest))
    return head
