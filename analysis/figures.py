"""The one style of every figure: matplotlib settings, a colour and line style per label, step
ticks, and saving as PNG and PDF.

The figures themselves live by what they draw (`loss_figures`, `convergence_figures`,
`glue_figures`, `diagnostics`, `survival_figures`), each in this style. They are
`matplotlib.figure.Figure` objects built without pyplot: no global figure state, any backend (Agg in
scripts, inline in notebooks).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from symattn.model.variants import VARIANTS

STYLE = {
    "figure.figsize": (6.4, 4.2),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "pdf.fonttype": 42,  # embed TrueType: text stays text in the PDF
}
# The paper's variants keep the paper's colours; other variants take the rest, in order.
COLORS = {"pairwise": "#3b75af", "symmetric": "#519e3e", "vanilla": "#ef8636"}
OTHER_COLORS = [
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
    "#2f4858",
    "#b07aa1",
    "#4e9f9f",
]
VARIANT_ORDER = list(VARIANTS)  # the registry's order: vanilla, symmetric, pairwise, ...
# A label derived from a variant (`vanilla-qk32`, `pairwise-scaled`: a control or an option of it)
# takes its variant's hue, lighter or darker, and a dashed line; its k-th such label (by name) the
# k-th of these, so that every label of a report has its own colour and line.
DERIVED_SHADES = (("white", 0.45), ("black", 0.35), ("white", 0.7), ("black", 0.55))
DERIVED_LINESTYLES = ("--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))


def base_variant(label: str) -> str:
    """The variant a label derives from (`vanilla-qk32` -> `vanilla`); the label itself when it is
    not one of a registered variant."""
    head = str(label).split("-", 1)[0]
    return head if head in VARIANTS else str(label)


def order_variants(variants) -> list[str]:
    """The paper's variants first (vanilla, symmetric, pairwise), then the registry's others, each
    followed by the labels derived from it (by name); then any other label, by name."""
    unique = list(dict.fromkeys(v for v in variants if isinstance(v, str)))
    bases = [v for v in VARIANT_ORDER if any(base_variant(u) == v for u in unique)]
    ordered = []
    for base in bases:
        ordered += [base] if base in unique else []
        ordered += sorted(u for u in unique if u != base and base_variant(u) == base)
    return ordered + sorted(u for u in unique if u not in ordered)


def _derived_rank(variants) -> dict[str, int]:
    """Each derived label's place among the labels derived from its variant (0, 1, ...)."""
    rank, seen = {}, {}
    for v in order_variants(variants):
        base = base_variant(v)
        if base != v:
            rank[v] = seen.get(base, 0)
            seen[base] = rank[v] + 1
    return rank


def _shade(color: str, toward: str, amount: float) -> str:
    rgb = np.array(matplotlib.colors.to_rgb(color))
    target = np.ones(3) if toward == "white" else np.zeros(3)
    return matplotlib.colors.to_hex(rgb + (target - rgb) * amount)


def variant_colors(variants) -> dict[str, str]:
    """A colour per label: the paper's variants the paper's colours, other variants the next of
    `OTHER_COLORS`, and a label derived from a variant a shade of its variant's (`DERIVED_SHADES`)."""
    ordered = order_variants(variants)
    rank = _derived_rank(ordered)
    others = iter(OTHER_COLORS * 4)
    base_colors = {}
    for v in ordered:
        base = base_variant(v)
        if base not in base_colors:
            base_colors[base] = COLORS.get(base) or next(others)
    return {
        v: _shade(base_colors[base_variant(v)], *DERIVED_SHADES[rank[v] % len(DERIVED_SHADES)])
        if v in rank
        else base_colors[v]
        for v in ordered
    }


def variant_linestyles(variants) -> dict:
    """Solid for a variant, dashed (`DERIVED_LINESTYLES`) for a label derived from one."""
    rank = _derived_rank(variants)
    return {
        v: DERIVED_LINESTYLES[rank[v] % len(DERIVED_LINESTYLES)] if v in rank else "-"
        for v in order_variants(variants)
    }


def kilo(x, _pos=None) -> str:
    """Step ticks as the paper writes them: 25K, 200K."""
    return f"{x / 1000:g}K" if abs(x) >= 1000 else f"{x:g}"


@contextmanager
def style():
    with matplotlib.rc_context(STYLE):
        yield


def save(fig: Figure, out_dir, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with style():
        for path in paths:
            fig.savefig(path, bbox_inches="tight")
    return paths
