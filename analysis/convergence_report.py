"""The steps-to-convergence section of a report: per run and definition, the summary per arm and
the paired comparison against the baseline (tables), the steps per arm and, for our runs, the
paired ratios as a forest plot (figures); a grid's settings apart, never pooled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import convergence_figures, figures, stats, tables


def section(
    conv: pd.DataFrame,
    out: Path,
    colors: dict,
    written: list,
    baseline: str = "vanilla",
    level_note: str = "",
    arms: pd.DataFrame | None = None,
    name: str = "",
) -> str:
    """Tables and figures of steps to convergence; a grid's settings (a `setting` column) are
    summarised, compared and drawn apart, never pooled. With `arms` (the runs: size, setting,
    variant), also the paired-ratio forest plot of each size (and setting), every arm a row."""
    if conv.empty:
        return ""
    keys = ["size", "setting"] if "setting" in conv else ["size"]
    summary = stats.summarize(conv, by=(*keys, "definition", "variant"))
    paired = stats.paired_vs_baseline(conv, baseline=baseline, by=(*keys, "definition"))
    formatted = tables.convergence_formatted(summary, paired)
    written += tables.write_table(conv, out, "convergence_runs")
    written += tables.write_table(summary, out, "convergence_summary", formatted)
    written += tables.write_table(paired, out, "convergence_paired")
    parts = list(conv.groupby(keys, sort=False))
    for i, (key, part) in enumerate(parts):
        size, setting = (key[0], key[1] if len(keys) > 1 else "")
        mine = summary[(summary[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)]
        fig = convergence_figures.convergence_plot(
            part,
            mine,
            colors=colors,
            title=f"Steps to convergence ({size})" + (f"\n{setting}" if setting else ""),
        )
        written += figures.save(fig, out, f"convergence_{size}" + (f"_{i + 1}" if len(keys) > 1 else ""))
    forest = (
        _forest_section(conv, paired, arms, keys, out, colors, written, baseline, name)
        if arms is not None
        else ""
    )
    return (
        "Steps to convergence (a mean is over runs with an exact step; ratio = geometric mean "
        f"over matched pairs with exact steps vs {baseline}; sign test over decided pairs):\n"
        + level_note
        + tables.to_markdown(formatted)
        + forest
    )


def _forest_section(conv, paired, arms, keys, out, colors, written, baseline, name) -> str:
    """`convergence_forest_<size>[_k]`: per escape margin, each arm's paired ratio against the
    baseline, or why it has none."""
    settings = list(dict.fromkeys(arms["setting"])) if "setting" in arms else [""]
    drawn = []
    for key, part in arms.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        size, setting = key[0], (key[1] if len(keys) > 1 else "")
        mine = conv[(conv[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)]
        pairs = (
            paired[(paired[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)] if len(paired) else paired
        )
        if baseline not in set(part["variant"]) or part["variant"].nunique() < 2 or mine.empty:
            continue
        rows = tables.forest_rows(mine, pairs, part["variant"], baseline)
        if rows.empty:
            continue
        title = f"{name}: {size}, steps to escape vs {baseline} in matched groups" + (
            f"\n{setting}" if setting else ""
        )
        figure = f"convergence_forest_{size}" + (
            f"_{settings.index(setting) + 1}" if len(settings) > 1 else ""
        )
        written += figures.save(
            convergence_figures.forest_plot(rows, title=title, colors=colors), out, figure
        )
        drawn.append(figure)
    if not drawn:
        return ""
    return (
        f"{', '.join(drawn)}: per escape margin, each arm's geometric-mean ratio of steps vs {baseline} "
        "over pairs both exact, with its interval, pairs and sign test (or why it has none).\n"
    )
