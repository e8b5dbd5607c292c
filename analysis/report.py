"""Reports: every figure and table of one set of runs, written to one folder.

`paper_report` regenerates the paper's GLUE tables and figures from its published results;
`runs_report` draws the same figures and tables from our MLflow runs. Both return the key table
as text for the terminal.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis import (
    artifacts,
    beside_paper,
    convergence,
    diagnostics,
    export,
    figures,
    frames,
    glue,
    loss_at_step,
    outdir,
    preregistered,
    stats,
    tables,
)
from symattn import keys
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


def crossings_as_convergence(
    crossings: pd.DataFrame, fraction: float = 0.95, reference: str = "pairwise"
) -> pd.DataFrame:
    """Score-threshold crossings (GLUE, or the offline proxy score where `crossings` has a `suite`
    column) in the schema of `convergence.convergence_table`, so that the paper's definition sits
    beside the loss-based ones."""
    out = crossings.rename(columns={"pretrain_run_id": "run_id", "threshold": "target"})
    suite = out["suite"] if "suite" in out else "glue"
    reference = out["reference"] if "reference" in out else reference
    out["definition"] = suite + f">={fraction:.0%}_" + reference
    return out[convergence.RESULT_COLUMNS + (["setting"] if "setting" in out else [])]


def reference_variant(variants, preferred: str = "pairwise", fallback: str = "vanilla") -> str | None:
    """The variant whose final score sets the convergence threshold: `preferred` (pairwise, as in
    the paper) when the runs have it, else `fallback`, else the first variant in order."""
    present = figures.order_variants(variants)
    for variant in (preferred, fallback):
        if variant in present:
            return variant
    return present[0] if present else None


def _count_text(table: pd.DataFrame) -> str:
    """`5 fine-tuning seeds`; `2 pre-training runs × 3 fine-tuning seeds (n=6)`: what a table's
    mean ± std is over."""

    def span(column) -> str:
        low, high = int(table[column].min()), int(table[column].max())
        return f"{low}" if low == high else f"{low}\u2013{high}"

    seeds = f"{span('n_seeds')} fine-tuning seeds"
    if table["n_runs"].max() <= 1:
        return seeds
    return f"{span('n_runs')} pre-training runs \u00d7 {seeds}, n={span('n')}"


def _panels(frame: pd.DataFrame) -> list[str]:
    """The keys that split figures and tables: size, and the setting where a grid has several."""
    return [k for k in ("size", "setting") if k in frame]


@dataclass
class _Sink:
    """Where a section writes, and how it titles, colours and numbers what it draws."""

    out: Path
    colors: dict
    written: list
    title: Callable = str  # size -> title prefix
    settings: tuple = ()  # a grid's settings, in the order their figures are numbered (`_k`)

    def figure_name(self, name: str, size: str, sizes: int, setting: str = "") -> str:
        suffix = f"_{size}" if sizes > 1 else ""
        return name + suffix + (f"_{self.settings.index(setting) + 1}" if len(self.settings) > 1 else "")


def _glue_section(
    frames_: frames.Frames,
    out: Path,
    colors: dict,
    written: list,
    fraction: float = 0.95,
    reference: str = "pairwise",
    title=str,
    fallback: str = "vanilla",
    settings=(),
) -> tuple[str, pd.DataFrame]:
    """Per suite of fine-tuned tasks (GLUE; the offline proxy score): score tables per size, the
    score matrix, the score-over-checkpoints figure with each run's crossing, and the
    fine-tuning-seed noise. Returns the text and the crossings (a `suite` column says whose)."""
    sink = _Sink(out, colors, written, title, tuple(settings))
    tasks = pd.concat([frames_.glue["task"], frames_.glue_checkpoints["task"]]).dropna().unique()
    texts, crossings = [], []
    for suite in glue.suites(tasks):
        text, found = _suite_section(suite, frames_, sink, fraction, reference, fallback)
        texts.append(text)
        crossings.append(found.assign(suite=suite.name))
    found = pd.concat(crossings, ignore_index=True) if crossings else pd.DataFrame()
    return "\n".join(t for t in texts if t), found


def _suite_section(suite: glue.Suite, frames_, sink: _Sink, fraction, reference, fallback) -> tuple:
    text = ""
    final = frames_.glue[frames_.glue["task"].isin(suite.tasks)]
    if len(final):
        text += _final_text(suite, final, sink)
    every = frames_.glue_checkpoints
    scores = glue.scores_over_checkpoints(every, suite=suite) if len(every) else pd.DataFrame()
    crossings = pd.DataFrame()
    if len(scores) and scores["checkpoint_step"].nunique() > 1:
        reference = reference_variant(scores["variant"], reference, fallback)
        # Per setting: a run fine-tuned with two recipes has two curves, each with its threshold.
        parts = scores.groupby("setting", sort=False) if "setting" in scores else [("", scores)]
        crossings = pd.concat(
            [
                glue.crossing_brackets(part, convergence.glue_crossings(part, reference, fraction)).assign(
                    setting=setting
                )
                for setting, part in parts
            ],
            ignore_index=True,
        )
        crossings["reference"] = reference
        if "setting" not in scores:
            crossings = crossings.drop(columns="setting")
        if len(crossings):
            text += _crossings_text(suite, scores, crossings, reference, fraction, sink)
            seed_scores = glue.task_scores(every, suite=suite)
            _draw_over_checkpoints(suite, seed_scores, scores, crossings, reference, fraction, sink)
    if len(every):
        text += _noise_text(suite, every, sink)
    return text, crossings


def _final_text(suite: glue.Suite, final: pd.DataFrame, sink: _Sink) -> str:
    """Tables of each run's last checkpoint: every column per size, and the score matrix."""
    table = glue.glue_table(final, by=(*_panels(final), "variant"), suite=suite)
    for size, part in table.groupby("size", sort=False):
        formatted = tables.glue_formatted(part, suite)
        sink.written += tables.write_table(part, sink.out, f"{suite.name}_{size}", formatted)
    matrix = tables.glue_score_matrix(table)
    sink.written += tables.write_table(matrix, sink.out, f"{suite.name}_score")
    return (
        f"{suite.label}, dev, in percent, at each run's last checkpoint "
        f"(mean \u00b1 std over {_count_text(table)}):\n" + tables.to_markdown(matrix)
    )


def _crossings_text(suite, scores, crossings, reference, fraction, sink: _Sink) -> str:
    formatted = tables.crossings_formatted(crossings)
    sink.written += tables.write_table(crossings, sink.out, f"{suite.name}_crossings", formatted)
    unmatched = scores.loc[~scores["pretrain_run_id"].isin(crossings["pretrain_run_id"]), "pretrain_run_id"]
    note = (
        f"{unmatched.nunique()} runs have no crossing: their matched group has no {reference} run.\n"
        if unmatched.nunique()
        else ""
    )
    note += _flat_reference_note(scores, reference, suite)
    return (
        f"\nSteps to {fraction:.0%} of the {reference} model's final {suite.short} in its matched group "
        f"({_reference_note(reference)}), per pre-training run: the first crossing, interpolated "
        "between the two checkpoints around it (shown); a run that never crosses is known only to lie "
        "past its last checkpoint:\n" + note + tables.to_markdown(formatted)
    )


def _flat_reference_note(scores, reference: str, suite) -> str:
    """The paper's threshold presumes that pre-training raised the reference's score: where its
    final score is not above its first checkpoint's, every run can cross without pre-training."""
    lines = []
    by = ["group", "setting"] if "setting" in scores else ["group"]
    for (group, *_), part in scores[scores["variant"] == reference].groupby(by, sort=False):
        part = part.sort_values("checkpoint_step")
        first, final = part.iloc[0], part.iloc[-1]
        if len(part) > 1 and final["score"] <= first["score"]:
            lines.append(
                f"Group {group}: the {reference} run's final {suite.short} ({final['score']:.2f} at step "
                f"{int(final['checkpoint_step']):,}) is not above its score at step "
                f"{int(first['checkpoint_step']):,} ({first['score']:.2f}): its threshold is met without "
                "pre-training, so these crossings do not measure convergence.\n"
            )
    return "".join(lines)


def _reference_note(reference: str) -> str:
    if reference == "pairwise":
        return "reference: pairwise, as in the paper"
    return f"reference: {reference}, as the runs have no pairwise variant"


def _draw_over_checkpoints(suite, seed_scores, scores, crossings, reference, fraction, sink: _Sink) -> None:
    keys = _panels(scores)
    for key, part in scores.groupby(keys, sort=False):
        size, setting = key[0], (key[1] if len(key) > 1 else "")
        runs = set(part["pretrain_run_id"])
        mine = crossings["pretrain_run_id"].isin(runs) & (crossings.get("setting", "") == setting)
        seeds = seed_scores["pretrain_run_id"].isin(runs) & (seed_scores.get("setting", "") == setting)
        title = f"{sink.title(size)}: {suite.short} over pre-training" + (f"\n{setting}" if setting else "")
        if suite.name != "glue":
            title += "\n" + textwrap.fill(suite.definition, 70)
        fig = figures.glue_over_checkpoints(
            part,
            crossings[mine],
            title=title,
            reference=reference,
            fraction=fraction,
            colors=sink.colors,
            seed_scores=seed_scores[seeds],
            ylabel=suite.short if suite.name == "glue" else f"{suite.short} (%)",
        )
        name = sink.figure_name(f"{suite.name}_over_checkpoints", size, scores["size"].nunique(), setting)
        sink.written += figures.save(fig, sink.out, name)


def _noise_text(suite: glue.Suite, every: pd.DataFrame, sink: _Sink) -> str:
    noise = glue.finetune_noise(every, suite)
    summary = glue.noise_summary(noise, by=(*_panels(noise), "variant"))
    if summary.empty:  # one fine-tuning seed per checkpoint: no spread to show
        return ""
    sink.written += tables.write_table(noise, sink.out, f"{suite.name}_finetune_noise")
    formatted = tables.noise_formatted(summary, suite)
    sink.written += tables.write_table(summary, sink.out, f"{suite.name}_finetune_noise_summary", formatted)
    return (
        f"\nFine-tuning-seed noise of the {suite.short} and its tasks: the std (ddof=1, percent points) "
        "across fine-tuning seeds of one run at one checkpoint, median over checkpoints (and runs); n = "
        "seeds per checkpoint. A mean over k seeds has about std/\u221ak: a crossing is resolved when "
        f"that is well below the score's distance to the threshold ({suite.name}_finetune_noise.csv "
        "has every cell):\n" + tables.to_markdown(formatted)
    )


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


def _convergence_section(
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
        fig = figures.convergence_plot(
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
        written += figures.save(figures.forest_plot(rows, title=title, colors=colors), out, figure)
        drawn.append(figure)
    if not drawn:
        return ""
    return (
        f"{', '.join(drawn)}: per escape margin, each arm's geometric-mean ratio of steps vs {baseline} "
        "over pairs both exact, with its interval, pairs and sign test (or why it has none).\n"
    )


def _arms_section(name: str, data: frames.Frames, runs: pd.DataFrame, out, colors, written, stopped) -> str:
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


def _loss_section(curves, finished: pd.DataFrame, out, written, baseline: str) -> str:
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


def paper_report(out_dir=None, tracking_uri: str | None = None, log_artifacts: bool = True) -> str:
    """The paper's GLUE tables (base, small), loss figures and GLUE-over-checkpoints figure with
    each variant's crossing of 95% of the pairwise model's final score, from its raw results; with
    `tracking_uri`, from its runs imported into that store (`symattn import acl2024`), where the
    files are then logged too (`artifacts`). The files replace the folder's earlier set (`outdir`)."""
    final = Path(out_dir) if out_dir else default_out_dir(frames.PAPER_NAME)
    data = frames.paper_frames() if tracking_uri is None else frames.imported_paper_frames(tracking_uri)
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
    glue_text, crossings = _glue_section(data, out, colors, written, title=lambda size: f"BERT-{size}")
    floors = convergence.curve_floors(data.curves, data.runs)
    for size in ("base", "small"):
        marks = dict(
            floors=floors[data.runs.loc[data.runs["size"] == size, "run_id"]].unique(),
            margin=convergence.MARGINS[0],
            colors=colors,
            title=f"BERT-{size}",
            floor_label=convergence.CURVE_FLOOR,
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
    return f"{glue_text}{ratio}\n{conv_text}", written


def runs_report(
    name: str,
    tracking_uri: str | None = None,
    out_dir=None,
    thresholds=(),
    baseline: str = "vanilla",
    log_artifacts: bool = True,
    exports=(),
) -> str:
    """The same figures and tables from the MLflow runs of the experiment or study `name`, also
    logged as artifacts of its study run (or report run: `artifacts`) unless `log_artifacts` is off;
    or from `exports` (`analysis.export`: folders written by earlier reports), merged, without a
    store. The study's runs are exported beside them (export/). The files replace the folder's
    earlier set (`outdir`)."""
    final = Path(out_dir) if out_dir else default_out_dir(name)
    if exports:
        data, registrations = export.read(exports, name)
        where, log_artifacts = "in the export" + "s" * (len(exports) > 1), False
    else:
        data = frames.load_runs(name, tracking_uri, metrics=(keys.VAL_LOSS, *diagnostics.METRICS))
        where, experiments = "in the store", data.runs.get("experiment_id", pd.Series(dtype=str)).unique()
        client = frames.client(tracking_uri)
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
    with outdir.Staged(final) as stage:
        text, written = _runs_files(name, data, stage.path, thresholds, baseline, registrations)
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
    # Fine-tuning results of different settings, or of different recipes, are never pooled either.
    tuned = settings
    if len(settings) > 1 or data.glue_checkpoints.get("recipe", pd.Series()).nunique() > 1:
        by_run = runs.set_index("run_id")["setting"]
        data.glue, data.glue_checkpoints = (
            glue.with_settings(f, by_run, settings) for f in (data.glue, data.glue_checkpoints)
        )
        tuned = list(dict.fromkeys(data.glue_checkpoints["setting"]))
    glue_text, crossings = _glue_section(
        data, out, colors, written, title=lambda size: f"{name}: {size}", fallback=baseline, settings=tuned
    )
    conv = convergence.convergence_table(data.curves, runs, floors, baseline=baseline, thresholds=thresholds)
    if len(settings) > 1:
        conv["setting"] = conv["run_id"].map(runs.set_index("run_id")["setting"])
    if len(crossings):  # each crossing keeps its own setting (with its recipe)
        conv = pd.concat([conv, crossings_as_convergence(crossings)], ignore_index=True)
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
    conv_text = _convergence_section(conv, out, colors, written, baseline, note, arms=runs, name=name)
    stopped = pd.to_numeric(runs.set_index("run_id")[keys.STOPPED_EARLY_AT], errors="coerce").dropna()
    arms_text = _arms_section(name, data, runs, out, colors, written, stopped.to_dict())
    arms_text += _loss_section(data.curves, runs[runs["state"] == "FINISHED"], out, written, baseline)
    design = _settings_text(settings, "settings, each drawn and compared on its own (figure suffix _k)")
    if tuned != settings:
        design += _settings_text(
            tuned, "fine-tuning settings (pre-training setting; recipe), each scored on its own (suffix _k)"
        )
    return f"{stated}{design}{conv_text}\n{arms_text}\n{glue_text}", written


def _settings_text(settings: list, what: str) -> str:
    lines = "".join(f"  setting {k + 1}: {s or '(the rest)'}\n" for k, s in enumerate(settings))
    return f"{len(settings)} {what}:\n{lines}\n" if len(settings) > 1 else ""
