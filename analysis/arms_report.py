"""The per-arm section of a report of our runs: the arms table (parameters, runs, final loss,
early stops, steps, wall-clock), the attention diagnostics at step 0 and over steps, and the loss
of the finished runs at the last step they all reached, paired against the baseline."""

from __future__ import annotations

import pandas as pd

from analysis import diagnostics, figures, loss_at_step, tables
from analysis.frames import Frames


def section(name: str, data: Frames, runs: pd.DataFrame, out, colors, written, stopped) -> str:
    """The per-arm table, the step-0 diagnostics per arm, and the diagnostics over steps."""
    lines = []
    arms = tables.arms_table(runs, data.curves, stopped)
    written += tables.write_table(arms, out, "arms", tables.arms_formatted(arms))
    lines.append(
        "arms: per arm, parameters, runs, final val/loss, early stops, steps and wall-clock of finished runs."
    )
    by = ("size", "setting", "variant") if runs["setting"].nunique() > 1 else ("size", "variant")
    initial, missing = diagnostics.initial_table(data.curves, runs, by=by)
    note = (
        f"{len(missing)} of {len(runs)} runs have no step-0 diagnostics (made before runs logged them): "
        "left out.\n"
        if missing
        else ""
    )
    if len(initial):
        formatted = diagnostics.initial_formatted(initial)
        written += tables.write_table(initial, out, "initial_diagnostics", formatted, note=note)
        lines.append(
            "initial_diagnostics: per arm, logit spread, entropy and self mass at step 0, mean \u00b1 std "
            "over runs (n), over layers and per layer."
        )
    elif missing:
        note = (
            f"initial_diagnostics: not written: none of the {len(runs)} runs logged diagnostics at step 0.\n"
        )
    if note:
        lines.append(note.strip())
    settings = list(dict.fromkeys(runs["setting"]))
    means = diagnostics.layer_means(data.curves)
    for (size, setting), these in runs.groupby(["size", "setting"], sort=False):
        if not means["run_id"].isin(these["run_id"]).any():
            continue
        suffix = f"_{settings.index(setting) + 1}" if len(settings) > 1 else ""
        title = f"{name}: {size}" + (f", {setting}" if setting else "")
        fig = diagnostics.diagnostics_plot(data.curves, these, title=title, colors=colors)
        written += figures.save(fig, out, f"diagnostics_{size}{suffix}")
        lines.append(
            f"diagnostics_{size}{suffix}: self mass, entropy and logit spread (mean over layers) by step, per arm."
        )
    return "\n".join(lines) + "\n"


def loss_section(curves, finished: pd.DataFrame, out, written, baseline: str) -> str:
    """`loss_at_step`: every finished run's validation loss at the last step all of them reached,
    paired against the baseline."""
    table = loss_at_step.loss_table(curves, finished, baseline)
    if table.empty:
        return ""
    formatted = loss_at_step.formatted(table, baseline)
    note = loss_at_step.NOTE if "n_ties" in table else ""
    written += tables.write_table(table, out, "loss_at_step", formatted, note=note)
    steps = ", ".join(f"{step:,}" for step in table["step"].unique())
    return (
        f"loss_at_step: val/loss of the finished runs at step {steps} (the last all reached), paired vs "
        f"{baseline}: mean difference, sign and Wilcoxon tests with their n (ties within "
        f"\u00b1{loss_at_step.TIE_TOLERANCE} dropped).\n"
    )
