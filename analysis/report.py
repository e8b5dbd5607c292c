"""Reports: every figure and table of one set of runs, written to one folder.

`paper_report` regenerates the paper's GLUE tables and figures from its published results;
`runs_report` draws the same figures and tables from our MLflow runs. Both return the key table
as text for the terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import convergence, figures, frames, glue, stats, tables
from symattn import keys
from symattn.paths import project_root

PAPER_SEGMENTS = [(0, 65_000), (185_000, 200_000)]  # the paper's broken step axis
PAPER_LOSS_THRESHOLDS = (3.0,)


def default_out_dir(name: str) -> Path:
    """`analysis/figures/<name>/` of the project (the checkout, or $SYMATTN_HOME, else the current
    folder), never inside an installed package."""
    return project_root() / "analysis" / "figures" / re.sub(r"[^\w.-]+", "_", name)


def crossings_as_convergence(
    crossings: pd.DataFrame, fraction: float = 0.95, reference: str = "pairwise"
) -> pd.DataFrame:
    """GLUE-threshold crossings in the schema of `convergence.convergence_table`, so that the
    paper's definition sits beside the loss-based ones."""
    out = crossings.rename(columns={"pretrain_run_id": "run_id", "threshold": "target"})
    out["definition"] = f"glue>={fraction:.0%}_{reference}"
    return out[convergence.RESULT_COLUMNS]


def _glue_section(
    frames_: frames.Frames,
    out: Path,
    colors: dict,
    written: list,
    fraction: float = 0.95,
    reference: str = "pairwise",
    title=str,
) -> tuple[str, pd.DataFrame]:
    """GLUE tables per size, the score matrix, and the GLUE-over-checkpoints figure + crossings."""
    text, crossings = "", pd.DataFrame()
    if len(frames_.glue):
        table = glue.glue_table(frames_.glue)
        for size, part in table.groupby("size", sort=False):
            written += tables.write_table(part, out, f"glue_{size}", tables.glue_formatted(part))
        matrix = tables.glue_score_matrix(table)
        written += tables.write_table(matrix, out, "glue_score")
        seeds = int(table["n_seeds"].max())
        text += f"GLUE score (dev, mean ± std over {seeds} fine-tuning seeds):\n" + tables.to_markdown(matrix)
    scores = (
        glue.scores_over_checkpoints(frames_.glue_checkpoints)
        if len(frames_.glue_checkpoints)
        else pd.DataFrame()
    )
    if len(scores) and scores["checkpoint_step"].nunique() > 1:
        crossings = convergence.glue_crossings(scores, reference, fraction)
        if len(crossings):
            written += tables.write_table(
                crossings, out, "glue_crossings", tables.crossings_formatted(crossings)
            )
            sizes = list(dict.fromkeys(crossings["size"]))
            for size in sizes:
                fig = figures.glue_over_checkpoints(
                    scores[scores["size"] == size],
                    crossings[crossings["size"] == size],
                    title=f"{title(size)}: GLUE score over pre-training",
                    reference=reference,
                    fraction=fraction,
                    colors=colors,
                )
                name = "glue_over_checkpoints" + (f"_{size}" if len(sizes) > 1 else "")
                written += figures.save(fig, out, name)
            text += (
                f"\nSteps to {fraction:.0%} of the {reference} model's final GLUE score "
                "(first crossing, interpolated between checkpoints):\n"
                + tables.to_markdown(tables.crossings_formatted(crossings))
            )
    return text, crossings


DATA_FLOOR = f"param.{keys.DATA_FLOOR}"  # L*: the data's context-free floor
VAL_FLOOR = f"param.{keys.VAL_FLOOR}"  # the same for the run's validation targets


def data_floors(runs: pd.DataFrame) -> pd.Series:
    """The level each run's escape is measured from: the context-free loss of its own validation
    targets, as it logged it (runs of one data set and evaluation size share it). For a run made
    before runs logged it, it is computed again from the run's data cache entry (by its data
    fingerprint) where that is still there."""
    column = runs[VAL_FLOOR] if VAL_FLOOR in runs else pd.Series(float("nan"), index=runs.index)
    floors = pd.Series(pd.to_numeric(column, errors="coerce").to_numpy(), index=runs["run_id"])
    for i in np.flatnonzero(floors.isna().to_numpy() & runs[keys.DATA_FINGERPRINT].notna().to_numpy()):
        floors.iloc[i] = _floor_from_cache(runs.iloc[i])
    return floors


def expected_floors(runs: pd.DataFrame) -> list[float]:
    """The data's L* of these runs, as they logged it (runs made before it was logged: none)."""
    if DATA_FLOOR not in runs:
        return []
    return sorted(pd.to_numeric(runs[DATA_FLOOR], errors="coerce").dropna().unique())


def _floor_from_cache(run: pd.Series) -> float:
    from symattn.data import DataError, load_prepared, val_batches  # torch: only for such runs

    def param(key, default, cast):
        value = run.get(f"param.{key}")
        return default if value is None or pd.isna(value) or value in ("", "None") else cast(value)

    try:
        data = load_prepared(run[keys.DATA_FINGERPRINT], param("data.cache_dir", None, str))
    except DataError:
        return float("nan")
    batch = param("optim.batch_size", 32, int)
    # Such runs drew their validation masks with their own data seed.
    batches = val_batches(
        data,
        batch,
        param("data.seed", 0, int),
        param("data.mlm_probability", 0.15, float),
        limit=param("eval.batches", 8, int) * batch,
    )
    return data.evaluated_floor(batches)


def curve_floors(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """One plateau level per data set (size) for runs whose data's floor cannot be computed (the
    paper's): the median of the runs' own plateau levels (`convergence.plateau_level`)."""
    levels = {}
    for run_id in runs["run_id"]:
        steps, loss = frames.curve(curves, run_id)
        levels[run_id] = convergence.plateau_level(steps, loss) if len(steps) else float("nan")
    levels = pd.Series(levels)
    by_size = runs.set_index("run_id")["size"]
    return levels.groupby(by_size).transform("median")


def _convergence_section(
    conv: pd.DataFrame,
    out: Path,
    colors: dict,
    written: list,
    baseline: str = "vanilla",
    level_note: str = "",
) -> str:
    """Tables and figures of steps to convergence; a grid's settings (a `setting` column) are
    summarised, compared and drawn apart, never pooled."""
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
        fig = figures.convergence_plot(
            part,
            mine,
            colors=colors,
            title=f"Steps to convergence ({size})" + (f"\n{setting}" if setting else ""),
        )
        written += figures.save(fig, out, f"convergence_{size}" + (f"_{i + 1}" if len(keys) > 1 else ""))
    return (
        "Steps to convergence (a mean is over runs with an exact step; ratio = geometric mean "
        f"over matched pairs with exact steps vs {baseline}; sign test over decided pairs):\n"
        + level_note
        + tables.to_markdown(formatted)
    )


def paper_report(out_dir=None) -> str:
    """The paper's GLUE tables (base, small), loss figures and GLUE-over-checkpoints figure with
    each variant's crossing of 95% of the pairwise model's final score, from its raw results."""
    out = Path(out_dir) if out_dir else default_out_dir(frames.PAPER_NAME)
    data = frames.paper_frames()
    colors = figures.variant_colors(data.runs["variant"])
    written: list[Path] = []
    glue_text, crossings = _glue_section(data, out, colors, written, title=lambda size: f"BERT-{size}")
    floors = curve_floors(data.curves, data.runs)
    for size in ("base", "small"):
        marks = dict(
            floors=floors[data.runs.loc[data.runs["size"] == size, "run_id"]].unique(),
            margin=convergence.MARGINS[0],
            colors=colors,
            title=f"BERT-{size}",
            floor_label="plateau level (median of the runs' own)",
        )
        fig = figures.loss_curves(
            data.curves, data.runs, size=size, segments=PAPER_SEGMENTS, ylim=(0, 8), **marks
        )
        written += figures.save(fig, out, f"loss_{size}")
        fig = figures.loss_curves(data.curves, data.runs, size=size, log_steps=True, **marks)
        written += figures.save(fig, out, f"loss_{size}_log")
    written += tables.write_table(tables.params_table(data.runs), out, "params")
    conv = convergence.convergence_table(data.curves, data.runs, floors, thresholds=PAPER_LOSS_THRESHOLDS)
    conv = pd.concat([conv, crossings_as_convergence(crossings)], ignore_index=True)
    levels = ", ".join(
        f"{size} {level:.2f}"
        for size, level in floors.groupby(data.runs.set_index("run_id")["size"]).first().items()
    )
    note = (
        "The paper's data is not available, so its floor L* cannot be computed: the escape "
        f"is measured from the median of the three runs' own plateau levels ({levels}).\n"
    )
    conv_text = _convergence_section(conv, out, colors, written, level_note=note)
    reached = crossings[~crossings["censored"]].set_index("variant")["step"]
    ratio = ""
    if {"vanilla", "pairwise"} <= set(reached.index):
        ratio = f"vanilla / pairwise crossing steps: {reached['vanilla'] / reached['pairwise']:.2f}\n"
    return (
        f"ACL 2024 published results -> {out}\n\n{glue_text}{ratio}\n{conv_text}"
        f"\n{len(written)} files written.\n"
    )


def runs_report(
    name: str, tracking_uri: str | None = None, out_dir=None, thresholds=(), baseline: str = "vanilla"
) -> str:
    """The same figures and tables from the MLflow runs of the experiment or study `name`."""
    out = Path(out_dir) if out_dir else default_out_dir(name)
    data = frames.load_runs(name, tracking_uri)
    if data.runs.empty:
        raise LookupError(f"no pre-training runs in {name!r}")
    states = data.runs["state"].value_counts().to_dict()
    runs = frames.one_run_per_cell(data.runs)
    kept = set(runs["run_id"])
    data = frames.Frames(
        runs=runs,
        curves=data.curves[data.curves["run_id"].isin(kept)],
        glue=data.glue[data.glue["pretrain_run_id"].isin(kept)],
        glue_checkpoints=data.glue_checkpoints[data.glue_checkpoints["pretrain_run_id"].isin(kept)],
        source=name,
    )
    colors = figures.variant_colors(runs["variant"])
    written: list[Path] = []
    floors = data_floors(runs)
    # Runs in the order they started: the design's order, as the sweep queued it.
    runs = runs.sort_values("start_time", kind="stable").reset_index(drop=True)
    runs = runs.assign(setting=frames.setting_labels(runs).to_numpy())
    settings = list(dict.fromkeys(runs["setting"]))
    for size in runs["size"].dropna().unique():
        for k, setting in enumerate(settings):
            these = runs[(runs["size"] == size) & (runs["setting"] == setting)]
            if these.empty:
                continue
            suffix = f"_{k + 1}" if len(settings) > 1 else ""
            title = f"{name}: {size}" + (f"\n{setting}" if setting else "")
            for log_steps in (False, True):
                fig = figures.loss_curves(
                    data.curves,
                    these,
                    size=size,
                    log_steps=log_steps,
                    title=title,
                    colors=colors,
                    floors=floors[these["run_id"]].dropna().unique(),
                    margin=convergence.MARGINS[0],
                    expected_floors=expected_floors(these),
                )
                written += figures.save(fig, out, f"loss_{size}{suffix}" + ("_log" if log_steps else ""))
    written += tables.write_table(tables.params_table(runs), out, "params")
    glue_text, crossings = _glue_section(data, out, colors, written, title=lambda size: f"{name}: {size}")
    conv = convergence.convergence_table(data.curves, runs, floors, baseline=baseline, thresholds=thresholds)
    if len(crossings):
        conv = pd.concat([conv, crossings_as_convergence(crossings)], ignore_index=True)
    if len(settings) > 1:
        conv["setting"] = conv["run_id"].map(runs.set_index("run_id")["setting"])
        settings_text = "".join(f"  setting {k + 1}: {s}\n" for k, s in enumerate(settings))
    else:
        settings_text = ""
    unknown = int(floors.isna().sum())
    data_floor = expected_floors(runs)
    note = (
        "Escape levels are relative to the context-free loss of the runs' validation targets: "
        + ", ".join(
            f"{floor:.3f} nats ({n} runs)"
            for floor, n in floors.dropna().round(3).value_counts(sort=False).items()
        )
        + (
            f" (the data's expected floor L*: {', '.join(f'{f:.3f}' for f in data_floor)})"
            if len(data_floor)
            else ""
        )
        + ".\n"
    )
    if unknown:
        note += (
            f"{unknown} runs have no recorded floor and their data cache entry is gone: "
            "no escape step for them.\n"
        )
    conv_text = _convergence_section(conv, out, colors, written, baseline, note)
    state_text = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    design = (
        (
            f"{len(settings)} settings, each drawn and compared on its own (figure suffix _k):\n"
            + settings_text
            + "\n"
        )
        if settings_text
        else ""
    )
    return (
        f"{name}: {len(runs)} pre-training runs used ({state_text} in the store) -> {out}\n\n"
        f"{design}{conv_text}\n{glue_text}\n{len(written)} files written.\n"
    )
