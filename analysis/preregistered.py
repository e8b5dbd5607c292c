"""The analyses a study stated before it ran (`symattn.sweep.analysis_plan`), computed exactly as
stated, first in its report; everything else the report prints is exploratory.

For each stated analysis: every run's endpoints (`endpoints`: its escape step or the step it was
censored at, and its loss at each stated step), the primary comparisons (escape as a time to
event, `analysis.survival`) with their p-values adjusted over the comparisons by the stated
correction (statsmodels `multipletests`), the secondary endpoints likewise within each endpoint,
and a sentence per comparison worded by `analysis.wording`. An analysis stated after some of its
cells had started is computed the same way and labelled exploratory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import survival, wording
from analysis.frames import curve
from symattn import keys
from symattn.convergence import AT_OR_BEFORE, PATIENCE, PROVISIONAL, REACHED, WINDOW, plateau_escape

LOSS_TIE = 0.0005  # nats: losses closer than this (printed alike) are tied


@dataclass
class Result:
    name: str
    registration: dict
    endpoints: pd.DataFrame  # one row per run
    primary: pd.DataFrame  # one row per comparison
    secondary: pd.DataFrame  # one row per (step, comparison)
    arms: dict[str, survival.Arm] = field(default_factory=dict)
    comparisons: list[survival.Comparison] = field(default_factory=list)

    notes: list[str] = field(default_factory=list)  # runs left out, and why
    departures: list[str] = field(default_factory=list)  # how the runs depart from what was stated

    @property
    def pre_registered(self) -> bool:
        """Stated before any cell ran, and the runs analysed are those it was stated for."""
        return self.registration["cells_started"] == 0 and not self.departures

    @property
    def plan(self) -> dict:
        return self.registration["plan"]


def _event(esc, last: float) -> tuple[float, bool]:
    """(time, escaped) of a run from its escape measure: exact where it escaped; at the first
    evaluation where it was across already; where it crossed, censored, while that crossing was
    not yet confirmed (its escape, if confirmed, comes no earlier); else at its last evaluation."""
    if esc.status in (REACHED, AT_OR_BEFORE):
        return float(esc.step), True
    if esc.status == PROVISIONAL:
        return float(esc.low), False
    return last, False


def endpoints(curves: pd.DataFrame, runs: pd.DataFrame, floors: pd.Series, plan: dict) -> pd.DataFrame:
    """Per run: its arm, matched group, seed and state; `time`, the step it escaped at (`escaped`)
    or the step it is censored at (`_event`); and `loss_at_<N>` for each stated step N (NaN where
    the run did not evaluate N, e.g. it stopped before). A run without a curve or a floor is
    listed with no time."""
    margin = plan["endpoint"]["margin"]
    steps_wanted = [s["step"] for s in plan.get("secondary", []) if s["measure"] == "loss_at_step"]
    rows = []
    for run in runs.itertuples(index=False):
        steps, loss = curve(curves, run.run_id)
        floor = floors.get(run.run_id, math.nan)
        row = {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "arm": run.variant,
            "group": run.group,
            "seed": run.seed,
            "state": run.state,
            "floor": floor,
            "time": math.nan,
            "escaped": False,
            "escape_status": "no curve" if len(steps) == 0 else "no floor",
            "last_step": float(steps[-1]) if len(steps) else math.nan,
        }
        if len(steps) == 0 or not np.isfinite(floor):
            rows.append(row)
            continue
        esc = plateau_escape(steps, loss, floor, margin, WINDOW, PATIENCE)
        row["time"], row["escaped"] = _event(esc, float(steps[-1]))
        row["escape_status"] = esc.status
        at = dict(zip(steps.tolist(), loss.tolist()))
        for n in steps_wanted:
            row[f"loss_at_{n}"] = at.get(float(n), math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _adjust(pvalues: list[float], correction: str) -> list[float]:
    """Adjusted p-values over the family; an untestable comparison (NaN) counts as p = 1."""
    from statsmodels.stats.multitest import multipletests

    filled = [1.0 if math.isnan(p) else p for p in pvalues]
    if correction == "none" or not filled:
        return filled
    return [float(p) for p in multipletests(filled, method=correction)[1]]


def _loss_pairs(table: pd.DataFrame, arm: str, reference: str, column: str) -> tuple[pd.Series, int]:
    """The paired differences (arm - reference) at the stated step, and how many groups holding
    both arms have no loss there for one of them (a run stopped before it): left out, and said."""
    both = table[table["arm"].isin([arm, reference])] if len(table) else table
    if not len(both) or both["arm"].nunique() < 2:
        return pd.Series([], dtype=float), 0
    counts = both.groupby(["group", "arm"]).size().unstack()
    paired = counts.index[counts.notna().all(axis=1)]
    wide = both.set_index(["group", "arm"])[column].unstack().reindex(index=paired, columns=[arm, reference])
    measured = wide.notna().all(axis=1)
    return (wide[arm] - wide[reference])[measured], int((~measured).sum())


def departures(registration: dict, runs: pd.DataFrame) -> list[str]:
    """How the analysed runs depart from the design the analysis was stated for: runs that
    started before it was stated, runs of cells it was not stated for (added, or changed: a cell's
    id is its config's hash), runs extended past their stated budget. Any makes it exploratory."""
    out = []
    stated_at = pd.Timestamp(registration["registered_at"], unit="s", tz="UTC")
    if "start_time" in runs and (early := int((runs["start_time"] < stated_at).sum())):
        out.append(f"{early} runs started before it was stated")
    cells = set(registration.get("cells", []))
    if cells and keys.CELL in runs and (other := int((~runs[keys.CELL].isin(cells)).sum())):
        out.append(f"{other} runs are of cells it was not stated for (added or changed since)")
    if keys.EXTENDED_TO in runs and (extended := int(runs[keys.EXTENDED_TO].notna().sum())):
        out.append(f"{extended} runs were extended past the budget it was stated for")
    return out


def smallest_adjusted_p(groups: int, m: int, correction: str) -> float:
    """The smallest p-value, after correction over m comparisons, that `groups` decided groups can
    give (exact two-sided sign test: 2 / 2^n)."""
    smallest = 2.0 / 2.0**groups if groups else 1.0
    return min(1.0, smallest * (m if correction in ("holm", "bonferroni") else 1))


def _left_out(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs the comparisons use, and why any other is left out: a FAILED run diverged, so when
    it would have escaped is unknown and its pairs decide nothing; a run without a curve or floor
    has no time."""
    if not len(table):
        return table, []
    failed = table[table["state"] == "FAILED"]
    missing = table[table["time"].isna() & (table["state"] != "FAILED")]
    notes = [f"left out, FAILED: {', '.join(failed['run_name'])}"] if len(failed) else []
    notes += (
        [f"left out, no validation curve or floor: {', '.join(missing['run_name'])}"] if len(missing) else []
    )
    return table[table["time"].notna() & (table["state"] != "FAILED")], notes


def _primary(name: str, plan: dict, usable: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    alpha, correction = plan["alpha"], plan["correction"]
    equivalence = (plan.get("equivalence") or {}).get("hazard_ratio")
    comparisons = [survival.compare(usable, a, r) for a, r in plan["comparisons"]] if len(usable) else []
    adjusted = _adjust([c.p for c in comparisons], correction)
    m = len(comparisons)
    rows = []
    for c, p_adj in zip(comparisons, adjusted):
        smallest = smallest_adjusted_p(c.decided, m, correction)
        rows.append(
            {
                "analysis": name,
                "endpoint": f"escape_{plan['endpoint']['margin']:g}",
                "arm": c.arm,
                "reference": c.reference,
                "groups": c.groups,
                "decided": c.decided,
                "arm_first": c.won,
                "reference_first": c.lost,
                "hazard_ratio": c.hazard_ratio,
                "hr_low": c.low,
                "hr_high": c.high,
                "interval": c.interval,
                "test": c.test_method,
                "p": c.p,
                "p_adjusted": p_adj,
                "smallest_possible_p_adjusted": smallest,
                "correction": f"{correction} over {m}",
                "verdict": wording.escape_verdict(c, p_adj, alpha, correction, m, equivalence, smallest),
            }
        )
    return pd.DataFrame(rows), comparisons


def _secondary(name: str, plan: dict, usable: pd.DataFrame) -> pd.DataFrame:
    alpha, correction = plan["alpha"], plan["correction"]
    rows = []
    for s in plan.get("secondary", []):
        family = []
        for arm, reference in plan["comparisons"]:
            diffs, unmeasured = _loss_pairs(usable, arm, reference, f"loss_at_{s['step']}")
            lower, higher = int((diffs < -LOSS_TIE).sum()), int((diffs > LOSS_TIE).sum())
            n = lower + higher
            p = float(scipy_stats.binomtest(lower, n, 0.5).pvalue) if n else math.nan
            family.append(
                wording.LossPairs(
                    arm, reference, s["step"], lower, higher, len(diffs) - n, len(diffs), unmeasured, p
                )
            )
        m = len(family)
        for pairs, p_adj in zip(family, _adjust([f.p for f in family], correction)):
            smallest = smallest_adjusted_p(pairs.lower + pairs.higher, m, correction)
            rows.append(
                {
                    "analysis": name,
                    "endpoint": f"loss at step {s['step']}",
                    "arm": pairs.arm,
                    "reference": pairs.reference,
                    "pairs": pairs.pairs,
                    "groups_without_the_step": pairs.unmeasured,
                    "lower": pairs.lower,
                    "higher": pairs.higher,
                    "tied": pairs.tied,
                    "test": f"exact sign test over {pairs.lower + pairs.higher} untied pairs (ties: |difference| < {LOSS_TIE})",
                    "p": pairs.p,
                    "p_adjusted": p_adj,
                    "smallest_possible_p_adjusted": smallest,
                    "correction": f"{correction} over {m}",
                    "verdict": wording.loss_verdict(pairs, p_adj, alpha, correction, m, smallest),
                }
            )
    return pd.DataFrame(rows)


def compute(name: str, registration: dict, curves, runs, floors) -> Result:
    plan = registration["plan"]
    table = endpoints(curves, runs, floors, plan)
    usable, notes = _left_out(table)
    primary, comparisons = _primary(name, plan, usable)
    arms = (
        {label: survival.kaplan_meier(p["time"], p["escaped"]) for label, p in usable.groupby("arm")}
        if len(usable)
        else {}
    )
    result = Result(name, registration, table, primary, _secondary(name, plan, usable), arms, comparisons)
    result.notes, result.departures = notes, departures(registration, runs)
    return result


def ordered(analyses: dict[str, dict]) -> list[tuple[str, dict]]:
    """Pre-registered analyses first, then the others, each in the order they were stated."""
    return sorted(analyses.items(), key=lambda kv: (kv[1]["cells_started"] > 0, kv[1]["registered_at"]))


def header(result: Result) -> str:
    plan, reg = result.plan, result.registration
    if result.pre_registered:
        when = "stated before any cell ran: pre-registered"
    elif reg["cells_started"]:
        when = f"stated after {reg['cells_started']} cells had started: exploratory"
    else:
        when = f"stated before any cell ran, but {'; '.join(result.departures)}: exploratory"
    secondary = ", ".join(f"loss at step {s['step']:,}" for s in plan.get("secondary", [])) or "none"
    return (
        f"Analysis '{result.name}' ({when}). Primary endpoint: escape {plan['endpoint']['margin']:g} "
        f"below the floor, a time to event (censored at the last evaluation); {len(plan['comparisons'])} "
        f"comparisons, {plan['correction']} correction, level {plan['alpha']:g}. Secondary: {secondary}."
    )


def text(result: Result) -> str:
    lines = [header(result), *(f"({note})" for note in result.notes)]
    lines += [f"- {v}" for v in result.primary.get("verdict", [])]
    if len(result.secondary):
        lines.append("Secondary:")
        lines += [f"- {v}" for v in result.secondary["verdict"]]
    return "\n".join(lines)


def _download(client, run_id: str, name: str, folder: str):
    """One small artifact of a run, without MLflow's progress bar in the report's output."""
    import os

    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    was = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    try:
        return client.download_artifacts(run_id, name, folder)
    finally:
        if was is None:
            del os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name]
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = was


def read_registrations(client, study_run_id: str) -> dict[str, dict]:
    """The stated analyses logged with a study's MLflow run (empty if none)."""
    import tempfile

    names = {a.path for a in client.list_artifacts(study_run_id)}
    if keys.ANALYSES_ARTIFACT not in names:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        with open(_download(client, study_run_id, keys.ANALYSES_ARTIFACT, tmp)) as f:
            return json.load(f)


def study_registrations(client, experiment_ids, study: str) -> dict[str, dict]:
    """The analyses stated for `study`: as its Optuna study holds them (where that store is here:
    the study run's copy is only as new as the last worker's start), else as its study run logged
    them; empty for an experiment without one."""
    runs = client.search_runs(
        list(experiment_ids),
        f"tags.{keys.KIND} = '{keys.STUDY_RUN}' and tags.{keys.STUDY} = '{study}'",
    )
    if not runs:
        return {}
    return _from_optuna(client, runs[0].info.run_id, study) or read_registrations(client, runs[0].info.run_id)


def _from_optuna(client, study_run_id: str, study: str) -> dict[str, dict]:
    """The analyses recorded in the study's Optuna store (named by its spec.yaml, else the default
    one), if that store is here."""
    import tempfile

    import optuna
    import yaml

    from symattn.sweep.analysis_plan import registered
    from symattn.sweep.storage import default_storage, open_storage

    with tempfile.TemporaryDirectory() as tmp:
        try:
            spec = yaml.safe_load(open(_download(client, study_run_id, keys.SPEC_ARTIFACT, tmp)))
        except Exception:  # noqa: BLE001  no spec logged: the default store
            spec = {}
    url = (spec.get("stores") or {}).get("optuna") or default_storage()
    if "://" not in url and not Path(url).is_file():
        return {}
    try:
        return registered(optuna.load_study(study_name=study, storage=open_storage(url)))
    except (KeyError, ValueError):  # not in that store
        return {}


COUNTS = (
    "groups",
    "decided",
    "arm_first",
    "reference_first",
    "pairs",
    "groups_without_the_step",
    "lower",
    "higher",
    "tied",
)


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparisons' table as read in Markdown: counts as integers, p-values and hazard ratios
    to 3 significant digits, each verdict below the table rather than in a cell."""

    def fmt(value, spec):
        return "" if pd.isna(value) else format(value, spec)

    shown = frame.drop(columns=["verdict", "analysis"], errors="ignore").copy()
    for column in shown:
        if column in COUNTS:
            shown[column] = [fmt(v, ".0f") for v in shown[column]]
        elif pd.api.types.is_float_dtype(shown[column]):
            shown[column] = [fmt(v, ".3g") for v in shown[column]]
    return shown


def write(result: Result, out, colors: dict) -> tuple[str, list]:
    """The analysis's files: its table of comparisons and its per-run values (CSV and Markdown),
    the survival curves and the hazard ratios; and its text."""
    from analysis import figures, survival_figures, tables

    slug = result.name
    frame = pd.concat([result.primary, result.secondary], ignore_index=True)
    written = tables.write_table(
        frame,
        out,
        f"analysis_{slug}",
        _readable(frame),
        "\n".join(f"- {v}" for v in frame.get("verdict", [])),
    )
    written += tables.write_table(result.endpoints, out, f"analysis_{slug}_runs")
    if result.arms:
        title = f"{result.name}: escape {result.plan['endpoint']['margin']:g} below the floor"
        written += figures.save(
            survival_figures.survival_plot(result.arms, title, colors), out, f"survival_{slug}"
        )
    if result.comparisons:
        written += figures.save(
            survival_figures.hazard_forest(
                result.comparisons,
                list(result.primary["p_adjusted"]),
                f"{result.name}: hazard ratios of escaping",
            ),
            out,
            f"hazard_ratios_{slug}",
        )
    return text(result), written


def section(registrations: dict, runs: pd.DataFrame, curves, floors, out, colors) -> tuple[str, list]:
    """Every stated analysis, pre-registered first: its text and files; ("", []) when the study
    stated none."""
    parts, written = [], []
    for name, registration in ordered(registrations):
        text_, files = write(compute(name, registration, curves, runs, floors), out, colors)
        parts.append(text_)
        written += files
    if not parts:
        return "", []
    return "\n\n".join(parts) + "\n\nExploratory (not stated in advance): everything below.\n\n", written
