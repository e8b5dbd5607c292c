"""Tables: raw numbers to CSV, a formatted copy to Markdown (no extra dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import glue as glue_mod
from analysis import stats
from analysis.figures import order_variants
from symattn import keys
from symattn.convergence import step_text
from symattn.markdown import markdown_table
from symattn.model.config import SIZES


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.2f}"
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    body = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    return markdown_table([str(c) for c in frame.columns], body, text_columns=frame.shape[1]) + "\n"


def write_table(
    frame: pd.DataFrame, out_dir, name: str, formatted: pd.DataFrame | None = None, note: str = ""
) -> list[Path]:
    """`<name>.csv` holds `frame` at full precision; `<name>.md` holds `formatted` (or `frame`),
    and `note` below it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text(
        to_markdown(frame if formatted is None else formatted) + (f"\n{note.strip()}\n" if note else "")
    )
    return [csv, md]


def mean_std(mean, std, digits: int = 2) -> str:
    if mean is None or pd.isna(mean):
        return ""
    if std is None or pd.isna(std):
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def _sorted(frame: pd.DataFrame, keys=("size",)) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order_variants(frame["variant"]))}
    size_rank = {s: i for i, s in enumerate(SIZES)}
    order = frame.assign(
        _v=frame["variant"].map(rank), _s=frame["size"].map(size_rank).fillna(99) if "size" in frame else 0
    )
    # Other keys keep the order in which they first appear (definitions as computed).
    extra = [k for k in keys if k in frame and k != "size"]
    for k in extra:
        order[f"_{k}"] = order[k].map({v: i for i, v in enumerate(dict.fromkeys(order[k]))})
    hidden = ["_s", *[f"_{k}" for k in extra], "_v"]
    return order.sort_values(hidden, kind="stable").drop(columns=hidden).reset_index(drop=True)


def glue_formatted(table: pd.DataFrame, suite: glue_mod.Suite = glue_mod.GLUE) -> pd.DataFrame:
    """`glue.glue_table` as `mean ± std` per column; WNLI shown, marked as outside the GLUE score;
    an offline task's column names its metric. `runs` appears where a cell pools several
    pre-training runs."""
    out = table[[c for c in ("size", "setting", "variant") if c in table]].copy()
    for column in list(suite.columns) + [glue_mod.SCORE]:
        out[_column_header(suite, column)] = [
            mean_std(m, s) for m, s in zip(table[column], table[f"{column}_std"])
        ]
    out["seeds"] = table["n_seeds"]
    if "n_runs" in table and (table["n_runs"] > 1).any():
        out["runs"] = table["n_runs"]
    return _sorted(out, keys=("size", "setting"))


def _column_header(suite: glue_mod.Suite, column: str) -> str:
    if column == glue_mod.SCORE:
        return suite.short
    if suite.name == "glue":
        return "wnli (not in score)" if column == "wnli" else column
    return suite.describe(column)


def glue_score_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The score only: one row per size (and setting), one column per variant (`mean ± std`)."""
    keys = [k for k in ("size", "setting") if k in table]
    table = _sorted(table, keys=keys)
    cells = table.assign(cell=[mean_std(m, s) for m, s in zip(table["score"], table["score_std"])])
    wide = cells.pivot(index=keys if len(keys) > 1 else "size", columns="variant", values="cell")
    rows = dict.fromkeys(zip(*(table[k] for k in keys)) if len(keys) > 1 else table["size"])
    wide = wide.reindex(index=list(rows), columns=order_variants(table["variant"]))
    return wide.reset_index().rename_axis(columns=None)


def params_table(runs: pd.DataFrame, baseline: str = "vanilla") -> pd.DataFrame:
    """Parameter counts (and FLOPs per token when logged) per size and variant, with the change
    of the total against the baseline variant of the same size."""
    counts = [
        c
        for c in ["params_total", "params_non_embedding", "params_attention", "flops_per_token"]
        if c in runs and runs[c].notna().any()
    ]
    table = runs.groupby(["size", "variant"], sort=False)[counts].first().reset_index()
    if "params_total" not in table:  # runs that logged no counts
        return _sorted(table)
    base = table[table["variant"] == baseline].set_index("size")["params_total"]
    table["change_vs_" + baseline + "_pct"] = (
        (table["params_total"] / table["size"].map(base) - 1) * 100
    ).round(2)
    return _sorted(table)


def convergence_formatted(summary: pd.DataFrame, paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """`stats.summarize` (and `stats.paired_vs_baseline`) as a readable table: every interval and
    p-value with its method and n, or the reason there is none."""
    rows = []
    for r in summary.itertuples(index=False):
        inexact = [
            f"{n} {what}"
            for n, what in (
                (r.n_not_reached, "not reached"),
                (r.n_at_or_before, "at or before 1st eval"),
                (r.n_provisional, "provisional"),
            )
            if n
        ]
        row = {
            "size": getattr(r, "size", ""),
            **({"setting": r.setting} if "setting" in summary else {}),
            "definition": r.definition,
            "variant": r.variant,
            "exact": f"{r.n_exact}/{r.n}" + (f" ({', '.join(inexact)})" if inexact else ""),
            "mean ± std of exact": (mean_std(r.mean, r.std, 0) if not pd.isna(r.mean) else "none exact"),
            f"{stats.LEVEL:.0%} interval of the mean": (
                stats.interval_text(r.ci_low, r.ci_high, r.ci_method, r.ci_n) if r.n_exact else ""
            ),
            "median": stats.median_text(r.median_low, r.median_high),
        }
        if paired is not None and len(paired):
            match = paired[
                (paired["definition"] == r.definition)
                & (paired["variant"] == r.variant)
                & ((paired["size"] == row["size"]) if "size" in paired else True)
                & ((paired["setting"] == r.setting) if "setting" in paired else True)
            ]
            if len(match):
                p = match.iloc[0]
                ratio = (
                    ""
                    if pd.isna(p["ratio"])
                    else f"{p['ratio']:.2f} "
                    + (
                        stats.interval_text(
                            p["ratio_ci_low"],
                            p["ratio_ci_high"],
                            p["ratio_ci_method"],
                            int(p["ratio_ci_n"]),
                            "{:.2f}",
                        )
                        if p["ratio_ci_method"]
                        else f"(n={int(p['ratio_ci_n'])}, no interval)"
                    )
                )
                row[f"ratio vs {p['baseline']}, {stats.LEVEL:.0%} interval"] = ratio
                row["faster/slower/undecided"] = f"{p['n_faster']}/{p['n_slower']}/{p['n_undecided']}"
                row["sign test p"] = stats.p_text(p["sign_p"], int(p["sign_n"]))
                row["wilcoxon p"] = stats.p_text(p["wilcoxon_p"], int(p["wilcoxon_n"]))
        rows.append(row)
    return _sorted(pd.DataFrame(rows), keys=("size", "setting", "definition")).fillna("")


def crossings_formatted(crossings: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the threshold, the first crossing (interpolated between checkpoints) or
    `not reached (>last checkpoint)`, and, where `glue.crossing_brackets` added them, the two
    checkpoints around the crossing: all that the checkpoints themselves can tell."""
    crossings = crossings.sort_values("seed", kind="stable")  # within a variant, by seed
    out = crossings[[c for c in ("size", "setting", "variant", "seed") if c in crossings]].copy()
    out["threshold"] = crossings["threshold"].map(lambda t: f"{t:.2f}")
    out["step"] = [
        step_text(s, b, st) for s, b, st in zip(crossings["step"], crossings["bound"], crossings["status"])
    ]
    if "below_step" in crossings:
        out["last checkpoint below"] = [
            "none: across at the first" if pd.isna(b) else f"{b:,.0f}" + (" (its last)" if pd.isna(a) else "")
            for b, a in zip(crossings["below_step"], crossings["above_step"])
        ]
        out["first checkpoint at or above"] = [
            "none" if pd.isna(a) else f"{a:,.0f}" for a in crossings["above_step"]
        ]
    return _sorted(out, keys=("size", "setting"))


def noise_formatted(summary: pd.DataFrame, suite: glue_mod.Suite = glue_mod.GLUE) -> pd.DataFrame:
    """`glue.noise_summary` as one row per column (task, then the score), one column per variant:
    `median std (n=seeds; k checkpoints x r runs)`, in percent points."""
    variants = order_variants(summary["variant"])
    columns = list(suite.columns) + [glue_mod.SCORE]
    keys = [k for k in ("size", "setting") if k in summary]
    rows = []
    for key, part in summary.groupby(keys, sort=False):
        cells = part.set_index(["column", "variant"])
        for column in [c for c in columns if c in set(part["column"])]:
            row = {**dict(zip(keys, key)), "task": _column_header(suite, column)}
            for variant in variants:
                row[variant] = (
                    _noise_cell(cells.loc[(column, variant)]) if (column, variant) in cells.index else ""
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "task", *variants])


def _noise_cell(r) -> str:
    seeds = f"{r.seeds_min}" if r.seeds_min == r.seeds_max else f"{r.seeds_min}\u2013{r.seeds_max}"
    where = f"{r.n_checkpoints} checkpoint" + ("s" if r.n_checkpoints > 1 else "")
    runs = f" \u00d7 {r.n_runs} runs" if r.n_runs > 1 else ""
    return f"{r.median_std:.2f} (n={seeds} seeds; {where}{runs})"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def forest_rows(
    conv: pd.DataFrame, paired: pd.DataFrame, arms, baseline: str = "vanilla", definitions=None
) -> pd.DataFrame:
    """The rows of a paired-ratio forest plot (`convergence_figures.forest_plot`), one per definition (every
    `escape_*` one of `conv` unless given) and arm of `arms` other than the baseline, in order:
    the geometric-mean ratio of steps (arm / baseline) over matched pairs where both are exact,
    with its interval, from `stats.paired_vs_baseline` (`paired`, of the same runs); `why` says
    why there is none (no pair with both steps exact, no matched run), so that an arm is never
    dropped unseen; `text` is the row's label: the ratio and its interval, or `why`, and what it
    rests on (pairs, faster/slower/undecided, the sign test with its n). Inexact steps are never
    put in a ratio."""
    if definitions is None:
        definitions = [d for d in dict.fromkeys(conv["definition"]) if str(d).startswith("escape_")]
    rows = []
    for definition in definitions:
        part = conv[conv["definition"] == definition]
        exact = part[~part["censored"].astype(bool)]
        base_groups = set(part.loc[part["variant"] == baseline, "group"].dropna())
        for arm in [a for a in order_variants(arms) if a != baseline]:
            row = {"definition": definition, "variant": arm, "baseline": baseline}
            row.update(ratio=math.nan, ci_low=math.nan, ci_high=math.nan, ci_method="", n_both_exact=0)
            row.update(n_pairs=0, why="", text="")
            mine = part[part["variant"] == arm]
            match = (
                paired[(paired["definition"] == definition) & (paired["variant"] == arm)]
                if len(paired)
                else paired
            )
            if mine.empty:
                row["why"] = f"no {arm} run with a step: no curve, or no floor, yet"
            elif not base_groups:
                row["why"] = f"no {baseline} run with a step to pair with"
            elif match.empty:
                row["why"] = f"no {baseline} run in the matched groups of its {_count(len(mine), 'run')}"
            else:
                p = match.iloc[0]
                n_both, n_pairs = int(p["n_both_exact"]), int(p["n_pairs"])
                row.update(n_both_exact=n_both, n_pairs=n_pairs)
                counts = (
                    f"faster/slower/undecided {p['n_faster']}/{p['n_slower']}/{p['n_undecided']}; "
                    "sign test p: " + stats.p_text(p["sign_p"], int(p["sign_n"]))
                )
                if n_both == 0:
                    groups = set(mine["group"].dropna()) & base_groups
                    escaped = exact[exact["group"].isin(groups)]
                    n, mine_exact = len(groups), (escaped["variant"] == arm).sum()
                    row["why"] = (
                        f"no exact pairs: {arm} exact in {mine_exact} of {n}, "
                        f"{baseline} in {(escaped['variant'] == baseline).sum()} of {n}"
                    )
                    row["text"] = f"{row['why']}\n{counts}"
                else:
                    row.update(ratio=p["ratio"], ci_low=p["ratio_ci_low"], ci_high=p["ratio_ci_high"])
                    row["ci_method"] = p["ratio_ci_method"]
                    interval = (
                        stats.interval_text(
                            p["ratio_ci_low"], p["ratio_ci_high"], p["ratio_ci_method"], n_both, "{:.2f}"
                        )
                        if n_both > 1
                        else "(no interval: n=1)"
                    )
                    row["text"] = (
                        f"{p['ratio']:.2f} {interval}; {n_both} of {_count(n_pairs, 'pair')} both exact\n{counts}"
                    )
            row["text"] = row["text"] or row["why"]
            rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "definition",
            "variant",
            "baseline",
            "ratio",
            "ci_low",
            "ci_high",
            "ci_method",
            "n_both_exact",
            "n_pairs",
            "why",
            "text",
        ],
    )


def arms_table(
    runs: pd.DataFrame, curves: pd.DataFrame, stopped_early: dict | None = None, metric: str = "val/loss"
) -> pd.DataFrame:
    """Per arm (size, setting where a grid has several, variant): parameter counts, runs by state,
    and over its FINISHED runs: the final `metric` (mean, std, n), how many stopped early
    (`stopped_early`: run id -> the step of the tag `stopped_early_at`) and at which steps, the
    steps run (last evaluation), and the wall-clock from MLflow start to end, in minutes, of the
    runs never stopped and resumed nor extended (n: how many)."""
    by = [k for k in ("size", "setting", "variant") if k in runs]
    stopped_early = stopped_early or {}
    losses = curves[curves["metric"] == metric].sort_values("step", kind="stable").groupby("run_id")
    final, last_step = losses["value"].last(), losses["step"].max()
    rows = []
    for key, part in runs.groupby(by, sort=False, dropna=False):
        done = part[part["state"] == "FINISHED"]
        loss = done["run_id"].map(final).dropna()
        steps = done["run_id"].map(last_step).dropna()
        early = done["run_id"].map(lambda r: stopped_early.get(r)).dropna().astype(float)
        # A run stopped and resumed, or extended, spans the pause between: its wall-clock says
        # nothing of its cost.
        uninterrupted = done
        for paused in (keys.STOPPED_AT_STEP, keys.EXTENDED_TO):
            if paused in uninterrupted:
                uninterrupted = uninterrupted[uninterrupted[paused].isna()]
        minutes = ((uninterrupted["end_time"] - uninterrupted["start_time"]).dt.total_seconds() / 60).dropna()
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for count in ("params_total", "params_non_embedding"):
            if count in part:
                row[count] = part[count].dropna().iloc[0] if part[count].notna().any() else pd.NA
        states = part["state"].value_counts()
        row.update(
            n_runs=len(part),
            n_finished=int(states.get("FINISHED", 0)),
            other_states=", ".join(f"{n} {s.lower()}" for s, n in states.items() if s != "FINISHED"),
            final_loss=loss.mean() if len(loss) else math.nan,
            final_loss_std=loss.std(ddof=1) if len(loss) > 1 else math.nan,
            final_loss_n=len(loss),
            n_stopped_early=len(early),
            stopped_early_min=early.min() if len(early) else math.nan,
            stopped_early_max=early.max() if len(early) else math.nan,
            steps_min=steps.min() if len(steps) else math.nan,
            steps_max=steps.max() if len(steps) else math.nan,
            minutes_mean=minutes.mean() if len(minutes) else math.nan,
            minutes_total=minutes.sum() if len(minutes) else math.nan,
            minutes_n=len(minutes),
        )
        rows.append(row)
    return _sorted(pd.DataFrame(rows), keys=[k for k in by if k != "variant"])


def _span(low, high) -> str:
    if pd.isna(low):
        return ""
    return f"{low:,.0f}" if low == high else f"{low:,.0f}\u2013{high:,.0f}"


def arms_formatted(table: pd.DataFrame) -> pd.DataFrame:
    """`arms_table` as read: final loss `mean ± std (n=k)`, stopped early `k of n (at a–b)`."""
    keep = [c for c in ("size", "setting", "variant") if c in table and (c != "setting" or table[c].any())]
    out = table[keep].copy()
    if "params_total" in table:
        out["params (total)"] = table["params_total"]
    if "params_non_embedding" in table:
        out["params (non-embedding)"] = table["params_non_embedding"]
    out["runs"] = [
        f"{n}" + (f" ({other})" if other else "") for n, other in zip(table["n_runs"], table["other_states"])
    ]
    out["final val/loss of finished runs"] = [
        f"{mean_std(m, s, 3)} (n={n})" if n else "none finished"
        for m, s, n in zip(table["final_loss"], table["final_loss_std"], table["final_loss_n"])
    ]
    out["stopped early"] = [
        (f"{k} of {n}" + (f" (at {_span(lo, hi)})" if k else "")) if n else ""
        for k, n, lo, hi in zip(
            table["n_stopped_early"],
            table["n_finished"],
            table["stopped_early_min"],
            table["stopped_early_max"],
        )
    ]
    out["steps run"] = [_span(lo, hi) for lo, hi in zip(table["steps_min"], table["steps_max"])]
    out["minutes per run (mean, n)"] = [
        f"{m:.1f} (n={n})" if n else "" for m, n in zip(table["minutes_mean"], table["minutes_n"])
    ]
    out["minutes (total over the same n)"] = [
        f"{t:.1f}" if n else "" for t, n in zip(table["minutes_total"], table["minutes_n"])
    ]
    return out
