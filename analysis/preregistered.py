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
from analysis.convergence import PATIENCE, REACHED, WINDOW, plateau_escape
from analysis.frames import curve
from symattn import keys

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

    @property
    def pre_registered(self) -> bool:
        return self.registration["cells_started"] == 0

    @property
    def plan(self) -> dict:
        return self.registration["plan"]


def endpoints(curves: pd.DataFrame, runs: pd.DataFrame, floors: pd.Series, plan: dict) -> pd.DataFrame:
    """Per run: its arm, matched group and seed; `time`, the step it escaped at (`escaped`) or the
    last evaluation it was censored at; and `loss_at_<N>` for each stated step N (NaN where the
    run did not evaluate N, e.g. it stopped before)."""
    margin = plan["endpoint"]["margin"]
    steps_wanted = [s["step"] for s in plan.get("secondary", []) if s["measure"] == "loss_at_step"]
    rows = []
    for run in runs.itertuples(index=False):
        steps, loss = curve(curves, run.run_id)
        floor = floors.get(run.run_id, math.nan)
        if len(steps) == 0 or not np.isfinite(floor):
            continue
        esc = plateau_escape(steps, loss, floor, margin, WINDOW, PATIENCE)
        escaped = esc.status == REACHED
        row = {
            "run_id": run.run_id,
            "run_name": run.run_name,
            "arm": run.variant,
            "group": run.group,
            "seed": run.seed,
            "floor": floor,
            "time": float(esc.step) if escaped else float(steps[-1]),
            "escaped": escaped,
            "escape_status": esc.status,
            "last_step": float(steps[-1]),
        }
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


def _loss_pairs(table: pd.DataFrame, arm: str, reference: str, column: str) -> pd.DataFrame:
    wide = table.pivot_table(index="group", columns="arm", values=column, aggfunc="first")
    if arm not in wide or reference not in wide:
        return pd.DataFrame(columns=["diff"])
    both = wide[[arm, reference]].dropna()
    return pd.DataFrame({"diff": both[arm] - both[reference]})


def compute(name: str, registration: dict, curves, runs, floors) -> Result:
    plan = registration["plan"]
    table = endpoints(curves, runs, floors, plan)
    alpha, correction = plan["alpha"], plan["correction"]
    equivalence = (plan.get("equivalence") or {}).get("hazard_ratio")
    comparisons = [survival.compare(table, a, r) for a, r in plan["comparisons"]] if len(table) else []
    adjusted = _adjust([c.p for c in comparisons], correction)
    m = len(comparisons)
    primary = pd.DataFrame(
        [
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
                "correction": f"{correction} over {m}",
                "verdict": wording.escape_verdict(c, p_adj, alpha, correction, m, equivalence),
            }
            for c, p_adj in zip(comparisons, adjusted)
        ]
    )
    secondary_rows = []
    for s in plan.get("secondary", []):
        column = f"loss_at_{s['step']}"
        family = []
        for arm, reference in plan["comparisons"]:
            diffs = _loss_pairs(table, arm, reference, column)["diff"] if len(table) else pd.Series([], float)
            lower, higher = int((diffs < -LOSS_TIE).sum()), int((diffs > LOSS_TIE).sum())
            ties, n = int(len(diffs) - lower - higher), lower + higher
            p = float(scipy_stats.binomtest(lower, n, 0.5).pvalue) if n else math.nan
            family.append((arm, reference, lower, higher, ties, len(diffs), p))
        for (arm, reference, lower, higher, ties, pairs, p), p_adj in zip(
            family, _adjust([f[-1] for f in family], correction)
        ):
            secondary_rows.append(
                {
                    "analysis": name,
                    "endpoint": f"loss at step {s['step']}",
                    "arm": arm,
                    "reference": reference,
                    "pairs": pairs,
                    "lower": lower,
                    "higher": higher,
                    "tied": ties,
                    "test": f"exact sign test over {lower + higher} untied pairs (ties: |difference| < {LOSS_TIE})",
                    "p": p,
                    "p_adjusted": p_adj,
                    "correction": f"{correction} over {len(family)}",
                    "verdict": wording.loss_verdict(
                        arm,
                        reference,
                        s["step"],
                        lower,
                        higher,
                        ties,
                        pairs,
                        p,
                        p_adj,
                        alpha,
                        correction,
                        len(family),
                    ),
                }
            )
    arms = (
        {label: survival.kaplan_meier(part["time"], part["escaped"]) for label, part in table.groupby("arm")}
        if len(table)
        else {}
    )
    return Result(name, registration, table, primary, pd.DataFrame(secondary_rows), arms, comparisons)


def ordered(analyses: dict[str, dict]) -> list[tuple[str, dict]]:
    """Pre-registered analyses first, then the others, each in the order they were stated."""
    return sorted(analyses.items(), key=lambda kv: (kv[1]["cells_started"] > 0, kv[1]["registered_at"]))


def header(result: Result) -> str:
    plan, reg = result.plan, result.registration
    when = (
        "stated before any cell ran: pre-registered"
        if result.pre_registered
        else f"stated after {reg['cells_started']} cells had started: exploratory"
    )
    secondary = ", ".join(f"loss at step {s['step']:,}" for s in plan.get("secondary", [])) or "none"
    return (
        f"Analysis '{result.name}' ({when}). Primary endpoint: escape {plan['endpoint']['margin']:g} "
        f"below the floor, a time to event (censored at the last evaluation); {len(plan['comparisons'])} "
        f"comparisons, {plan['correction']} correction, level {plan['alpha']:g}. Secondary: {secondary}."
    )


def text(result: Result) -> str:
    lines = [header(result)]
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
    """The analyses stated for `study`: as its study run logged them, else as its Optuna study
    holds them (a study run opened before runs logged them); empty for an experiment without one."""
    runs = client.search_runs(
        list(experiment_ids),
        f"tags.{keys.KIND} = '{keys.STUDY_RUN}' and tags.{keys.STUDY} = '{study}'",
    )
    if not runs:
        return {}
    return read_registrations(client, runs[0].info.run_id) or _from_optuna(client, runs[0].info.run_id, study)


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


def write(result: Result, out, colors: dict) -> tuple[str, list]:
    """The analysis's files: its table of comparisons and its per-run values (CSV and Markdown),
    the survival curves and the hazard ratios; and its text."""
    from analysis import figures, survival_figures, tables

    slug = result.name
    written = tables.write_table(
        pd.concat([result.primary, result.secondary], ignore_index=True), out, f"analysis_{slug}"
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
