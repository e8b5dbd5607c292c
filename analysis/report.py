"""Reports: every figure and table of one set of runs, written to one folder.

`paper_report` regenerates the paper's GLUE tables and figures from its published results;
`runs_report` draws the same figures and tables from our MLflow runs. Both return the key table
as text for the terminal. Each section of a report has its own module: fine-tuning scores
(`glue_report`), steps to convergence (`convergence_report`), the per-arm tables and diagnostics of
our runs (`arms_report`), a study's stated analysis (`preregistered`); this one draws the loss
figures and the parameter table, and finds each run's floor.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import (
    arms_report,
    artifacts,
    beside_paper,
    convergence,
    convergence_report,
    diagnostics,
    export,
    figures,
    frames,
    glue,
    glue_report,
    loss_figures,
    mlflow_runs,
    outdir,
    paper_results,
    preregistered,
    tables,
)
from symattn import keys
from symattn.convergence import CURVE_FLOOR, MARGINS
from symattn.paths import project_root

PAPER_SEGMENTS = [(0, 65_000), (185_000, 200_000)]  # the paper's broken step axis
PAPER_LOSS_THRESHOLDS = (3.0,)


def default_out_dir(name: str) -> Path:
    """`analysis/figures/<name>/` of the project (the checkout, or $SYMATTN_HOME, else the current
    folder), never inside an installed package."""
    return project_root() / "analysis" / "figures" / re.sub(r"[^\w.-]+", "_", name)


def shown_path(path) -> str:
    """A written folder as a user reads it: relative to the current folder, else to the project,
    when it is under one (so that printed reports and notebook outputs name no machine's paths)."""
    path = Path(path).resolve()
    for base in (Path.cwd().resolve(), project_root()):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


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


def paper_report(out_dir=None, tracking_uri: str | None = None, log_artifacts: bool = True) -> str:
    """The paper's GLUE tables (base, small), loss figures and GLUE-over-checkpoints figure with
    each variant's crossing of 95% of the pairwise model's final score, from its raw results; with
    `tracking_uri`, from its runs imported into that store (`symattn import acl2024`), where the
    files are then logged too (`artifacts`). The files replace the folder's earlier set (`outdir`)."""
    final = Path(out_dir) if out_dir else default_out_dir(frames.PAPER_NAME)
    data = (
        paper_results.paper_frames()
        if tracking_uri is None
        else paper_results.imported_paper_frames(tracking_uri)
    )
    with outdir.Staged(final) as stage:
        text, written = _paper_files(data, stage.path)
        written = stage.commit(written)
    source = "" if tracking_uri is None else f" (imported runs in {tracking_uri})"
    logged = ""
    if tracking_uri is not None and log_artifacts:
        logged = artifacts.log_figures(tracking_uri, frames.PAPER_NAME, written, data.runs["experiment_id"])
    return (
        f"ACL 2024 published results{source} -> {shown_path(final)}\n\n{text}"
        f"\n{len(written)} files written.\n{stage.kept_text()}{logged}"
    )


def _paper_files(data: frames.Frames, out: Path) -> tuple[str, list]:
    colors = figures.variant_colors(data.runs["variant"])
    written: list[Path] = []
    glue_text, crossings = glue_report.section(data, out, colors, written, title=lambda size: f"BERT-{size}")
    floors = convergence.curve_floors(data.curves, data.runs)
    for size in ("base", "small"):
        marks = dict(
            floors=floors[data.runs.loc[data.runs["size"] == size, "run_id"]].unique(),
            margin=MARGINS[0],
            colors=colors,
            title=f"BERT-{size}",
            floor_label=CURVE_FLOOR,
        )
        fig = loss_figures.loss_curves(
            data.curves, data.runs, size=size, segments=PAPER_SEGMENTS, ylim=(0, 8), **marks
        )
        written += figures.save(fig, out, f"loss_{size}")
        fig = loss_figures.loss_curves(data.curves, data.runs, size=size, log_steps=True, **marks)
        written += figures.save(fig, out, f"loss_{size}_log")
    written += tables.write_table(tables.params_table(data.runs), out, "params")
    conv = convergence.convergence_table(data.curves, data.runs, floors, thresholds=PAPER_LOSS_THRESHOLDS)
    conv = pd.concat([conv, glue_report.crossings_as_convergence(crossings)], ignore_index=True)
    levels = ", ".join(
        f"{size} {level:.2f}"
        for size, level in floors.groupby(data.runs.set_index("run_id")["size"]).first().items()
    )
    note = (
        "The paper's data is not available, so its floor L* cannot be computed: the escape "
        f"is measured from the median of the three runs' own plateau levels ({levels}).\n"
    )
    conv_text = convergence_report.section(conv, out, colors, written, level_note=note)
    reached = crossings[~crossings["censored"]].set_index("variant")["step"]
    ratio = ""
    if {"vanilla", "pairwise"} <= set(reached.index):
        ratio = f"vanilla / pairwise crossing steps: {reached['vanilla'] / reached['pairwise']:.2f}\n"
    return f"{glue_text}{ratio}\n{conv_text}", written


def runs_report(
    name: str,
    tracking_uri: str | None = None,
    out_dir=None,
    thresholds=(),
    baseline: str = "vanilla",
    log_artifacts: bool = True,
    exports=(),
    until: int | None = None,
) -> str:
    """The same figures and tables from the MLflow runs of the experiment or study `name`, also
    logged as artifacts of its study run (or report run: `artifacts`) unless `log_artifacts` is off;
    or from `exports` (`analysis.export`: folders written by earlier reports), merged, without a
    store. The study's runs are exported beside them (export/). The files replace the folder's
    earlier set (`outdir`). `until`: the runs as they stood at that step (`frames.as_at`), e.g. an
    extended study at its first budget."""
    final = Path(out_dir) if out_dir else default_out_dir(name)
    if exports:
        data, registrations = export.read(exports, name)
        where, log_artifacts = "in the export" + "s" * (len(exports) > 1), False
    else:
        data = mlflow_runs.load_runs(name, tracking_uri, metrics=(keys.VAL_LOSS, *diagnostics.METRICS))
        where, experiments = "in the store", data.runs.get("experiment_id", pd.Series(dtype=str)).unique()
        client = mlflow_runs.client(tracking_uri)
        registrations = (
            preregistered.study_registrations(client, experiments, name) if len(experiments) else {}
        )
    if data.runs.empty:
        raise LookupError(f"no pre-training runs in {name!r}")
    everything = data
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
    if until is not None:
        data = frames.as_at(data, until)
    with outdir.Staged(final) as stage:
        text, written = _runs_files(name, data, stage.path, thresholds, baseline, registrations)
        if until is not None:
            text = f"As the runs stood at step {until:,}: every curve cut there (exploratory).\n\n{text}"
        beside = None if exports else beside_paper.table(client, name, runs["run_id"])
        if beside is not None:
            written += tables.write_table(beside, stage.path, "beside_the_paper", note=beside_paper.NOTE)
            text += (
                "\nThe paper's runs and these in one list by escape step (exploratory): beside_the_paper.md\n"
            )
        exported = export.write(everything, registrations, stage.path / "export")
        written = [p for p in stage.commit([*written, *exported]) if p.parent == final.resolve()]
    state_text = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    logged = (
        artifacts.log_figures(tracking_uri, name, written, runs["experiment_id"]) if log_artifacts else ""
    )
    return (
        f"{name}: {len(runs)} pre-training runs used ({state_text} {where}) -> {shown_path(final)}\n\n"
        f"{text}\n{len(written)} files written, and the runs exported to export/.\n{stage.kept_text()}{logged}"
    )


def _runs_files(
    name: str, data: frames.Frames, out: Path, thresholds, baseline: str, registrations: dict
) -> tuple[str, list]:
    runs = data.runs
    colors = figures.variant_colors(runs["variant"])
    floors = data_floors(runs)
    # The analyses the study stated before it ran come first; the rest is exploratory.
    stated, written = preregistered.section(registrations, runs, data.curves, floors, out, colors)
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
                fig = loss_figures.loss_curves(
                    data.curves,
                    these,
                    size=size,
                    log_steps=log_steps,
                    title=title,
                    colors=colors,
                    floors=floors[these["run_id"]].dropna().unique(),
                    margin=MARGINS[0],
                    expected_floors=expected_floors(these),
                )
                written += figures.save(fig, out, f"loss_{size}{suffix}" + ("_log" if log_steps else ""))
    written += tables.write_table(tables.params_table(runs), out, "params")
    # Fine-tuning results of different settings, or of different recipes, are never pooled either.
    tuned = settings
    if len(settings) > 1 or data.glue_checkpoints.get("recipe", pd.Series()).nunique() > 1:
        by_run = runs.set_index("run_id")["setting"]
        data.glue, data.glue_checkpoints = (
            glue.with_settings(f, by_run, settings) for f in (data.glue, data.glue_checkpoints)
        )
        tuned = list(dict.fromkeys(data.glue_checkpoints["setting"]))
    glue_text, crossings = glue_report.section(
        data, out, colors, written, title=lambda size: f"{name}: {size}", fallback=baseline, settings=tuned
    )
    conv = convergence.convergence_table(data.curves, runs, floors, baseline=baseline, thresholds=thresholds)
    if len(settings) > 1:
        conv["setting"] = conv["run_id"].map(runs.set_index("run_id")["setting"])
    if len(crossings):  # each crossing keeps its own setting (with its recipe)
        conv = pd.concat([conv, glue_report.crossings_as_convergence(crossings)], ignore_index=True)
    if "setting" in conv:
        conv["setting"] = conv["setting"].fillna("")
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
    conv_text = convergence_report.section(conv, out, colors, written, baseline, note, arms=runs, name=name)
    stopped = pd.to_numeric(runs.set_index("run_id")[keys.STOPPED_EARLY_AT], errors="coerce").dropna()
    arms_text = arms_report.section(name, data, runs, out, colors, written, stopped.to_dict())
    arms_text += arms_report.loss_section(
        data.curves, runs[runs["state"] == "FINISHED"], out, written, baseline
    )
    design = _settings_text(settings, "settings, each drawn and compared on its own (figure suffix _k)")
    if tuned != settings:
        design += _settings_text(
            tuned, "fine-tuning settings (pre-training setting; recipe), each scored on its own (suffix _k)"
        )
    return f"{stated}{design}{conv_text}\n{arms_text}\n{glue_text}", written


def _settings_text(settings: list, what: str) -> str:
    lines = "".join(f"  setting {k + 1}: {s or '(the rest)'}\n" for k, s in enumerate(settings))
    return f"{len(settings)} {what}:\n{lines}\n" if len(settings) > 1 else ""
