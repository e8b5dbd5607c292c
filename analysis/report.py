"""Reports: every figure and table of one set of runs, written to one folder.

`paper_report` regenerates the paper's GLUE tables and figures from its published results;
`runs_report` draws the same figures and tables from our MLflow runs. Both return the key table
as text for the terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis import convergence, figures, frames, glue, stats, tables
from analysis.paths import FIGURES_DIR

PAPER_SEGMENTS = [(0, 65_000), (185_000, 200_000)]   # the paper's broken step axis
PAPER_LOSS_THRESHOLDS = (3.0,)


def default_out_dir(name: str) -> Path:
    """`analysis/figures/<name>/` of the project (the checkout, or $SYMATTN_HOME, else the current
    folder), never inside an installed package."""
    try:
        from symattn.paths import project_root
    except ImportError:   # analysis used without the training package
        root = FIGURES_DIR.parents[1] if (FIGURES_DIR.parents[1] / "pyproject.toml").is_file() \
            else Path.cwd()
    else:
        root = project_root()
    return root / "analysis" / "figures" / re.sub(r"[^\w.-]+", "_", name)


def crossings_as_convergence(crossings: pd.DataFrame, fraction: float = 0.95,
                             reference: str = "pairwise") -> pd.DataFrame:
    """GLUE-threshold crossings in the schema of `convergence.convergence_table`, so that the
    paper's definition sits beside the loss-based ones."""
    out = crossings.rename(columns={"pretrain_run_id": "run_id", "threshold": "target"})
    out["definition"] = f"glue>={fraction:.0%}_{reference}"
    return out[convergence.RESULT_COLUMNS]


def _glue_section(frames_: frames.Frames, out: Path, colors: dict, written: list,
                  fraction: float = 0.95, reference: str = "pairwise", title=str
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
        text += (f"GLUE score (dev, mean ± std over {seeds} fine-tuning seeds):\n"
                 + tables.to_markdown(matrix))
    scores = glue.scores_over_checkpoints(frames_.glue_checkpoints) \
        if len(frames_.glue_checkpoints) else pd.DataFrame()
    if len(scores) and scores["checkpoint_step"].nunique() > 1:
        crossings = convergence.glue_crossings(scores, reference, fraction)
        if len(crossings):
            written += tables.write_table(crossings, out, "glue_crossings",
                                          tables.crossings_formatted(crossings))
            sizes = list(dict.fromkeys(crossings["size"]))
            for size in sizes:
                fig = figures.glue_over_checkpoints(
                    scores[scores["size"] == size], crossings[crossings["size"] == size],
                    title=f"{title(size)}: GLUE score over pre-training", reference=reference,
                    fraction=fraction, colors=colors)
                name = "glue_over_checkpoints" + (f"_{size}" if len(sizes) > 1 else "")
                written += figures.save(fig, out, name)
            text += (f"\nSteps to {fraction:.0%} of the {reference} model's final GLUE score "
                     "(first crossing, interpolated between checkpoints):\n"
                     + tables.to_markdown(tables.crossings_formatted(crossings)))
    return text, crossings


def _convergence_section(conv: pd.DataFrame, out: Path, colors: dict, written: list,
                         baseline: str = "vanilla") -> str:
    if conv.empty:
        return ""
    summary = stats.summarize(conv)
    paired = stats.paired_vs_baseline(conv, baseline=baseline)
    formatted = tables.convergence_formatted(summary, paired)
    written += tables.write_table(conv, out, "convergence_runs")
    written += tables.write_table(summary, out, "convergence_summary", formatted)
    written += tables.write_table(paired, out, "convergence_paired")
    for size, part in conv.groupby("size", sort=False):
        fig = figures.convergence_plot(part, summary[summary["size"] == size],
                                       title=f"Steps to convergence ({size})", colors=colors)
        written += figures.save(fig, out, f"convergence_{size}")
    return ("Steps to convergence (censored runs: 'not reached'; ratio = geometric mean over "
            f"matched pairs vs {baseline}):\n" + tables.to_markdown(formatted))


def paper_report(out_dir=None) -> str:
    """The paper's GLUE tables (base, small), loss figures and GLUE-over-checkpoints figure with
    each variant's crossing of 95% of the pairwise model's final score, from its raw results."""
    out = Path(out_dir) if out_dir else default_out_dir(frames.PAPER_NAME)
    data = frames.paper_frames()
    colors = figures.variant_colors(data.runs["variant"])
    written: list[Path] = []
    glue_text, crossings = _glue_section(data, out, colors, written,
                                         title=lambda size: f"BERT-{size}")
    for size in ("base", "small"):
        fig = figures.loss_curves(data.curves, data.runs, size=size, segments=PAPER_SEGMENTS,
                                  ylim=(0, 8), title=f"BERT-{size}", colors=colors)
        written += figures.save(fig, out, f"loss_{size}")
        fig = figures.loss_curves(data.curves, data.runs, size=size, log_steps=True,
                                  title=f"BERT-{size}", colors=colors)
        written += figures.save(fig, out, f"loss_{size}_log")
    written += tables.write_table(tables.params_table(data.runs), out, "params")
    conv = convergence.convergence_table(data.curves, data.runs, thresholds=PAPER_LOSS_THRESHOLDS)
    conv = pd.concat([conv, crossings_as_convergence(crossings)], ignore_index=True)
    conv_text = _convergence_section(conv, out, colors, written)
    reached = crossings[~crossings["censored"]].set_index("variant")["step"]
    ratio = ""
    if {"vanilla", "pairwise"} <= set(reached.index):
        ratio = (f"vanilla / pairwise crossing steps: {reached['vanilla'] / reached['pairwise']:.2f}"
                 "\n")
    return (f"ACL 2024 published results -> {out}\n\n{glue_text}{ratio}\n{conv_text}"
            f"\n{len(written)} files written.\n")


def runs_report(name: str, tracking_uri: str | None = None, out_dir=None, thresholds=(),
                baseline: str = "vanilla") -> str:
    """The same figures and tables from the MLflow runs of the experiment or study `name`."""
    out = Path(out_dir) if out_dir else default_out_dir(name)
    data = frames.load_runs(name, tracking_uri)
    if data.runs.empty:
        raise LookupError(f"no pre-training runs in {name!r}")
    states = data.runs["state"].value_counts().to_dict()
    runs = frames.one_run_per_cell(data.runs)
    kept = set(runs["run_id"])
    data = frames.Frames(runs=runs, curves=data.curves[data.curves["run_id"].isin(kept)],
                         glue=data.glue[data.glue["pretrain_run_id"].isin(kept)],
                         glue_checkpoints=data.glue_checkpoints[
                             data.glue_checkpoints["pretrain_run_id"].isin(kept)],
                         source=name)
    colors = figures.variant_colors(runs["variant"])
    written: list[Path] = []
    for size in runs["size"].dropna().unique():
        for log_steps in (False, True):
            fig = figures.loss_curves(data.curves, runs, size=size, log_steps=log_steps,
                                      title=f"{name}: {size}", colors=colors)
            written += figures.save(fig, out, f"loss_{size}" + ("_log" if log_steps else ""))
    written += tables.write_table(tables.params_table(runs), out, "params")
    glue_text, crossings = _glue_section(data, out, colors, written,
                                         title=lambda size: f"{name}: {size}")
    conv = convergence.convergence_table(data.curves, runs, baseline=baseline,
                                         thresholds=thresholds)
    if len(crossings):
        conv = pd.concat([conv, crossings_as_convergence(crossings)], ignore_index=True)
    conv_text = _convergence_section(conv, out, colors, written, baseline)
    state_text = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
    return (f"{name}: {len(runs)} pre-training runs used ({state_text} in the store) -> {out}\n\n"
            f"{conv_text}\n{glue_text}\n{len(written)} files written.\n")
