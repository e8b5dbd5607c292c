"""When one curve converged, under several definitions: a run records its escape from its floor
with it (`headline_escape`) when it ends, an escape search ranks its trials by it, and `analysis`
tabulates it over a set of runs (`analysis.convergence`).

Every definition returns a `Convergence`: the (interpolated) step at which the criterion was met
when that step is known exactly, else what is known of it: not reached (after the last
evaluation), at or before the first evaluation, or provisional (crossed too near the end to be
confirmed). Reporting any of these as if it were an exact step would bias every comparison.

The headline definition is the escape from the data's context-free floor L* (`plateau_escape`):
one level for every run of a data set, computed from the data, not read off each curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from symattn import keys

# How a run's step relates to the criterion: the interval the true step lies in differs.
REACHED = "reached"  # crossed and stayed across for `patience` evaluations: exact
NOT_REACHED = "not reached"  # never crossed: the step lies after the last evaluation
AT_OR_BEFORE = "at or before"  # already across at the first evaluation: at or before it
PROVISIONAL = "provisional"  # crossed in the last `patience - 1` evaluations: not yet confirmed


@dataclass(frozen=True)
class Convergence:
    """When a curve met a criterion, with what is known about it.

    `step` is the crossing (interpolated), the first evaluation for `AT_OR_BEFORE`, NaN when not
    reached. `low` and `high` bound the true step: equal when exact, (last evaluation, inf) when
    not reached, (0, first evaluation) when at or before it, (crossing, inf) when provisional.
    Only an exact step may be averaged, put into a ratio or a test as a number; the others can
    still decide which of two runs was faster.
    """

    step: float
    bound: float  # last evaluated step
    target: float = math.nan  # the value the curve had to cross
    status: str = REACHED
    low: float = math.nan
    high: float = math.nan

    @property
    def censored(self) -> bool:
        """Not an exact step (not reached, at or before the first evaluation, or provisional)."""
        return self.status != REACHED

    @classmethod
    def reached(cls, step, last, target=math.nan) -> "Convergence":
        return cls(float(step), float(last), float(target), REACHED, float(step), float(step))

    @classmethod
    def not_reached(cls, last, target=math.nan) -> "Convergence":
        return cls(math.nan, float(last), float(target), NOT_REACHED, float(last), math.inf)

    @classmethod
    def at_or_before(cls, first, last, target=math.nan) -> "Convergence":
        return cls(float(first), float(last), float(target), AT_OR_BEFORE, 0.0, float(first))

    @classmethod
    def provisional(cls, step, last, target=math.nan, low=None) -> "Convergence":
        return cls(
            float(step),
            float(last),
            float(target),
            PROVISIONAL,
            float(step if low is None else low),
            math.inf,
        )

    def __str__(self) -> str:
        return step_text(self.step, self.bound, self.status)


def step_text(step, bound=math.nan, status: str = REACHED) -> str:
    """`32,799`; `not reached (>200,000)`; `≤ 100 (across at the first evaluation)`;
    `5,430 (provisional)`: never a bound printed as if it were a step."""
    if status == NOT_REACHED or (status == REACHED and (step is None or np.isnan(step))):
        return "not reached" if bound is None or np.isnan(bound) else f"not reached (>{bound:,.0f})"
    if status == AT_OR_BEFORE:
        return f"\u2264 {step:,.0f} (across at the first evaluation)"
    if status == PROVISIONAL:
        return f"{step:,.0f} (provisional)"
    return f"{step:,.0f}"


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


def threshold_crossing(
    steps, values, threshold: float, direction: str = "down", window: int | None = None, patience: int = 1
) -> Convergence:
    """First step at which the curve crosses `threshold` (downwards for a loss, `direction="up"`
    for a score) and stays across for `patience` evaluations, linearly interpolated between the two
    evaluations around that crossing.

    `window` smooths the curve first (centred rolling median). A crossing needs its full
    `patience` window: one in the last `patience - 1` evaluations is `PROVISIONAL` (the true step is
    at or after it). A curve already across at its first evaluation is `AT_OR_BEFORE` that
    evaluation, not an exact step.
    """
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
    if patience < 1:
        raise ValueError(f"patience must be at least 1 evaluation, not {patience}")
    steps, values = _clean(steps, values)
    y = smooth(values, window)
    across = y <= threshold if direction == "down" else y >= threshold
    for i in np.flatnonzero(across):
        if not across[i : i + patience].all():
            continue
        confirmed = i + patience <= len(steps)
        if i == 0:
            return (
                Convergence.at_or_before(steps[0], steps[-1], threshold)
                if confirmed
                else Convergence.provisional(steps[0], steps[-1], threshold, low=0.0)
            )
        s0, s1, y0, y1 = steps[i - 1], steps[i], y[i - 1], y[i]
        step = s0 + (threshold - y0) * (s1 - s0) / (y1 - y0)
        return (
            Convergence.reached(step, steps[-1], threshold)
            if confirmed
            else Convergence.provisional(step, steps[-1], threshold)
        )
    return Convergence.not_reached(steps[-1], threshold)


def plateau_level(
    steps, loss, window: int = 5, grid: float = 0.05, span: float = 0.3, flatness: float = 0.1
) -> float:
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
    slope[half:-half] = (yg[2 * half :] - yg[: -2 * half]) / (2 * half * grid)
    steepest = int(np.nanargmin(slope))
    before = np.abs(slope[:steepest])
    if np.isnan(before).all():
        return math.nan
    flattest = int(np.nanargmin(before))
    if before[flattest] > flatness * abs(slope[steepest]):
        return math.nan
    return float(yg[flattest])


def plateau_escape(
    steps, loss, floor, margin: float = 0.25, window: int = 5, patience: int = 3
) -> Convergence:
    """Step at which the loss leaves the early MLM plateau: first falls `margin` below `floor` and
    stays below for `patience` evaluations (smoothed; see `threshold_crossing`).

    `floor` is one level for every run of a data set: the data's context-free loss L*
    (`symattn.data.floor`, logged by every run as `data.context_free_loss`), so a run that only
    reaches the plateau never counts as escaped, and one that goes straight through it does.
    `floor="curve"` uses the curve's own plateau (`plateau_level`) instead: only for data whose
    floor is unknown, since each curve then answers to a different level."""
    if isinstance(floor, str):
        if floor != "curve":
            raise ValueError(f"floor must be a loss level or 'curve', not {floor!r}")
        steps, loss = _clean(steps, loss)
        floor = plateau_level(steps, loss, window)
        if math.isnan(floor):
            return Convergence.not_reached(steps[-1])
    return threshold_crossing(steps, loss, float(floor) - margin, "down", window, patience)


def baseline_target(steps, loss, fraction: float = 1.0, tail: int = 5) -> float:
    """Loss a run must reach to match `fraction` of the baseline's improvement, from its first
    evaluation to its final loss (mean of its last `tail` evaluations, which damps noise).
    `fraction=1` is the baseline's final loss."""
    steps, loss = _clean(steps, loss)
    initial, final = loss[0], float(np.mean(loss[-tail:]))
    return float(initial - fraction * (initial - final))


def steps_to_target(steps, loss, target: float, window: int | None = None, patience: int = 1) -> Convergence:
    """Step at which a loss first reaches `target` (see `threshold_crossing`)."""
    return threshold_crossing(steps, loss, target, "down", window, patience)


# What an escape is measured from, as tables and the tag `escape_floor` name it: a run's own
# validation targets' context-free loss, or where the data cannot say (`curve_floors`) a plateau.
TARGETS_FLOOR = "context-free floor of the validation targets"
CURVE_FLOOR = "plateau level (median of the runs' own)"


def floor_tag(name: str, level: float) -> str:
    """The tag `escape_floor`: what the escape was measured from, and its level."""
    return f"{name} = {level:.3f}"


MARGINS = (0.25, 0.5)  # below the floor; the first is the headline definition
WINDOW, PATIENCE = 5, 3  # evaluations: the smoothing and the confirmation of every loss-based definition


def escape_definition(margin: float) -> str:
    return f"escape_{margin:g}"


def headline_escape(steps, loss, floor) -> Convergence:
    """The headline measure of one curve, exactly as `convergence_table` computes its first
    definition (`escape_<MARGINS[0]>`) with its default window and patience: what a pre-training
    run records as its escape when it ends (`symattn.run.pretrain`)."""
    return plateau_escape(steps, loss, floor, MARGINS[0], WINDOW, PATIENCE)


def escape_metrics(escape: Convergence) -> dict:
    """The escape as a run records it (`symattn.keys`): `escape/step` only when exact."""
    metrics = {keys.ESCAPE_LOW: escape.low, keys.ESCAPE_CENSORED: float(escape.censored)}
    return metrics if escape.censored else {**metrics, keys.ESCAPE_STEP: escape.step}
