"""Steps to convergence under several definitions, each a function of one curve.

Every definition returns a `Convergence`: the (interpolated) step at which the criterion was met,
or a censored observation when it never was. A censored run has no step, only a lower bound (its
last evaluated step); reporting that bound as if it were the step would bias every comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.frames import curve


@dataclass(frozen=True)
class Convergence:
    step: float                 # NaN when censored
    bound: float                # last evaluated step: a lower bound on the step when censored
    target: float = math.nan    # the value the curve had to cross

    @property
    def censored(self) -> bool:
        return math.isnan(self.step)

    @classmethod
    def reached(cls, step, last, target=math.nan) -> "Convergence":
        return cls(float(step), float(last), float(target))

    @classmethod
    def not_reached(cls, last, target=math.nan) -> "Convergence":
        return cls(math.nan, float(last), float(target))

    def __str__(self) -> str:
        if self.censored:
            return f"not reached (>{self.bound:,.0f})"
        return f"{self.step:,.0f}"


def _clean(steps, values) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(steps) & np.isfinite(values)
    order = np.argsort(steps[ok], kind="stable")
    steps, values = steps[ok][order], values[ok][order]
    if len(steps) == 0:
        raise ValueError("empty curve")
    return steps, values


def smooth(values, window: int | None = None, method: str = "median") -> np.ndarray:
    """Centred rolling median (robust to isolated spikes; leaves a monotone curve unchanged) or mean.
    Centred, so smoothing does not delay a crossing the way a trailing window would."""
    values = np.asarray(values, dtype=float)
    if not window or window <= 1:
        return values
    rolling = pd.Series(values).rolling(int(window), center=True, min_periods=1)
    return (rolling.median() if method == "median" else rolling.mean()).to_numpy()


def threshold_crossing(steps, values, threshold: float, direction: str = "down",
                       window: int | None = None, patience: int = 1) -> Convergence:
    """First step at which the curve crosses `threshold` (downwards for a loss, `direction="up"`
    for a score), linearly interpolated between the two evaluations around that first crossing.

    `window` smooths the curve first (centred rolling median). `patience` asks the curve to stay
    across for that many evaluations (or until its end) so that one noisy dip does not count.
    A curve already across at its first evaluation crosses there (at or before that step).
    """
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
    steps, values = _clean(steps, values)
    y = smooth(values, window)
    across = y <= threshold if direction == "down" else y >= threshold
    for i in np.flatnonzero(across):
        if across[i:i + patience].all():
            if i == 0:
                return Convergence.reached(steps[0], steps[-1], threshold)
            s0, s1, y0, y1 = steps[i - 1], steps[i], y[i - 1], y[i]
            return Convergence.reached(s0 + (threshold - y0) * (s1 - s0) / (y1 - y0),
                                       steps[-1], threshold)
    return Convergence.not_reached(steps[-1], threshold)


def plateau_level(steps, loss, window: int = 5, grid: float = 0.05, span: float = 0.3,
                  flatness: float = 0.1) -> float:
    """Loss level of the early plateau (MLM's unigram plateau near 6): the flattest point of the
    smoothed curve, on a log-step axis, before its steepest descent (the escape).

    On a log-step axis an escape is far steeper than the initial transient. Slopes are taken on a
    uniform grid (`grid` log-steps apart) over `span` log-steps, so that neither dense late
    evaluations (noise over tiny intervals) nor sparse early ones (kinks) pass for slopes.
    NaN when no plateau precedes the steepest descent, or when the flattest point before it is not
    flat: steeper than `flatness` times the descent (a transient, not a plateau).
    """
    steps, loss = _clean(steps, loss)
    keep = steps > 0
    x, y = np.log(steps[keep]), smooth(loss[keep], window)
    half = max(1, int(round(span / grid / 2)))
    g = np.arange(x[0], x[-1] + grid / 2, grid) if len(x) > 1 else np.array([])
    if len(g) < 2 * half + 3:
        return math.nan
    yg = np.interp(g, x, y)
    slope = np.full(len(g), np.nan)
    slope[half:-half] = (yg[2 * half:] - yg[:-2 * half]) / (2 * half * grid)
    steepest = int(np.nanargmin(slope))
    before = np.abs(slope[:steepest])
    if np.isnan(before).all():
        return math.nan
    flattest = int(np.nanargmin(before))
    if before[flattest] > flatness * abs(slope[steepest]):
        return math.nan
    return float(yg[flattest])


def plateau_escape(steps, loss, margin: float = 0.5, level: float | None = None,
                   window: int = 5, patience: int = 3) -> Convergence:
    """Step at which the loss leaves its early plateau: first falls `margin` below the plateau level
    (smoothed, and staying below for `patience` evaluations). `level` defaults to `plateau_level`;
    pass a common level (e.g. the unigram entropy of the data) to compare runs on one footing.
    Censored when the curve never leaves its plateau, or shows none (no flat stretch before its
    steepest descent)."""
    steps, loss = _clean(steps, loss)
    level = plateau_level(steps, loss, window) if level is None else level
    if math.isnan(level):
        return Convergence.not_reached(steps[-1])
    return threshold_crossing(steps, loss, level - margin, "down", window, patience)


def baseline_target(steps, loss, fraction: float = 1.0, tail: int = 5) -> float:
    """Loss a run must reach to match `fraction` of the baseline's improvement, from its first
    evaluation to its final loss (mean of its last `tail` evaluations, which damps noise).
    `fraction=1` is the baseline's final loss."""
    steps, loss = _clean(steps, loss)
    initial, final = loss[0], float(np.mean(loss[-tail:]))
    return float(initial - fraction * (initial - final))


def steps_to_target(steps, loss, target: float, window: int | None = None,
                    patience: int = 1) -> Convergence:
    """Step at which a loss first reaches `target` (see `threshold_crossing`)."""
    return threshold_crossing(steps, loss, target, "down", window, patience)


# ---------------------------------------------------------------- over a set of runs

def describe_definition(name: str) -> str:
    """A title for a definition id of `convergence_table` / `report.crossings_as_convergence`."""
    if name == "plateau_escape":
        return "plateau escape"
    if name == "baseline_final":
        return "baseline's final loss"
    if match := re.fullmatch(r"baseline_([\d.]+)pct", name):
        return f"{match[1]}% of baseline's improvement"
    if match := re.fullmatch(r"loss<=([\d.]+)", name):
        return f"loss \u2264 {match[1]}"
    if match := re.fullmatch(r"glue>=([\d.]+)%_(\S+)", name):
        return f"GLUE \u2265 {match[1]}% of {match[2]}'s final"
    return name


RESULT_COLUMNS = ["run_id", "size", "variant", "seed", "group", "definition", "step", "bound",
                  "censored", "target"]


def _row(run, definition: str, result: Convergence) -> dict:
    return {"run_id": run.run_id, "size": run.size, "variant": run.variant, "seed": run.seed,
            "group": run.group, "definition": definition, "step": result.step,
            "bound": result.bound, "censored": result.censored, "target": result.target}


def convergence_table(curves: pd.DataFrame, runs: pd.DataFrame, metric: str = "val/loss",
                      baseline: str = "vanilla", margin: float = 0.5, plateau: float | None = None,
                      thresholds=(), fractions=(1.0, 0.9), window: int = 5,
                      patience: int = 3) -> pd.DataFrame:
    """Steps to convergence of every run under every loss-based definition, one row per run x
    definition: `plateau_escape`, `loss<=T` for each threshold T, and `baseline_final` /
    `baseline_<p>pct` (the matched baseline run's final loss, or p% of its improvement). The
    baseline is the `baseline` variant of the same matched group; groups without one are skipped
    for those definitions."""
    rows = []
    columns = ["run_id", "size", "variant", "seed", "group"]
    table = runs[columns].astype(object).where(runs[columns].notna(), None)
    for run in table.itertuples(index=False):
        steps, loss = curve(curves, run.run_id, metric)
        if len(steps) == 0:
            continue
        rows.append(_row(run, "plateau_escape",
                         plateau_escape(steps, loss, margin, plateau, window, patience)))
        for threshold in thresholds:
            rows.append(_row(run, f"loss<={threshold:g}",
                             steps_to_target(steps, loss, threshold, window, patience)))
        base = table[(table["group"] == run.group) & (table["variant"] == baseline)]
        if run.group is None or base.empty:
            continue
        base_steps, base_loss = curve(curves, base.iloc[0]["run_id"], metric)
        if len(base_steps) == 0:
            continue
        for fraction in fractions:
            name = "baseline_final" if fraction == 1 else f"baseline_{fraction * 100:g}pct"
            target = baseline_target(base_steps, base_loss, fraction)
            rows.append(_row(run, name, steps_to_target(steps, loss, target, window, patience)))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def glue_crossings(scores: pd.DataFrame, reference: str = "pairwise", fraction: float = 0.95
                   ) -> pd.DataFrame:
    """The paper's measure: per pre-training run, the first checkpoint step at which its GLUE score
    crosses `fraction` of the final score of the `reference` variant of its matched group,
    interpolated between checkpoints. `scores` has one row per run x checkpoint (`glue.
    scores_over_checkpoints`). Columns: run and group keys, threshold, step, bound, censored."""
    rows = []
    for group, part in scores.groupby("group", sort=False, dropna=False):
        ref = part[part["variant"] == reference].sort_values("checkpoint_step")
        if ref.empty:
            continue
        threshold = fraction * float(ref["score"].iloc[-1])
        for run_id, run in part.groupby("pretrain_run_id", sort=False):
            result = threshold_crossing(run["checkpoint_step"], run["score"], threshold, "up")
            first = run.iloc[0]
            rows.append({"pretrain_run_id": run_id, "size": first["size"],
                         "variant": first["variant"], "seed": first["seed"], "group": group,
                         "threshold": threshold, "step": result.step, "bound": result.bound,
                         "censored": result.censored})
    return pd.DataFrame(rows, columns=["pretrain_run_id", "size", "variant", "seed", "group",
                                       "threshold", "step", "bound", "censored"])
