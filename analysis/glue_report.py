"""The fine-tuning section of a report, per suite of tasks (GLUE; the offline proxy score): score
tables at each run's last checkpoint, the score over pre-training checkpoints with each run's
crossing of the convergence threshold, and the fine-tuning-seed noise. Its crossings join the
convergence table (`crossings_as_convergence`) as the paper's definition."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from analysis import convergence, figures, glue, glue_figures, tables
from analysis.frames import Frames


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


def section(
    data: Frames,
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
    tasks = pd.concat([data.glue["task"], data.glue_checkpoints["task"]]).dropna().unique()
    texts, crossings = [], []
    for suite in glue.suites(tasks):
        text, found = _suite_section(suite, data, sink, fraction, reference, fallback)
        texts.append(text)
        crossings.append(found.assign(suite=suite.name))
    found = pd.concat(crossings, ignore_index=True) if crossings else pd.DataFrame()
    return "\n".join(t for t in texts if t), found


def _suite_section(suite: glue.Suite, data, sink: _Sink, fraction, reference, fallback) -> tuple:
    text = ""
    final = data.glue[data.glue["task"].isin(suite.tasks)]
    if len(final):
        text += _final_text(suite, final, sink)
    every = data.glue_checkpoints
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
        fig = glue_figures.glue_over_checkpoints(
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
