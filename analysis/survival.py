"""Escape from the floor as a time to event. A run's time is its escape step, or, where it never
escaped, its last evaluation, censored there (it would have escaped later, or never).

- **Per arm**: the Kaplan-Meier curve of "still on the plateau" (scipy.stats.ecdf on CensoredData),
  with its pointwise 95% band (log-log), and the median escape step where the curve crosses 0.5,
  with the interval where the band's ends cross it (Brookmeyer-Crowley); "not reached" where the
  curve, or a bound, stays above 0.5.
- **An arm against a reference, paired by matched group** (a seed's group is a stratum):
  - the stratified log-rank test (statsmodels `survdiff` with strata). With one run of each arm in
    a group, a group tells which arm escaped first, or nothing (both censored, or one censored
    before the other escaped); the statistic is then the sign statistic of the decided groups,
    (W - L)^2 / (W + L), whose exact null distribution is the sign test's: its p-value is exact
    (scipy `binomtest`), where the chi-square approximation over-states significance at a few pairs;
  - the hazard ratio of escaping (above 1: the arm leaves the plateau sooner) from the stratified
    Cox model (statsmodels `PHReg` with strata). Its Wald interval holds its level from
    `MIN_DECIDED_FOR_WALD` decided groups on (95-97% in simulation, against 88-95% below); under
    that, or when every decided group went one way (the estimate is then unbounded), the interval
    is the exact conditional one (Clopper-Pearson over the decided groups, as P(arm first) =
    HR / (1 + HR)), conservative, with an infinite end when the groups all went one way.
Every result carries its method and n (the decided groups).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
MIN_DECIDED_FOR_WALD = 10  # decided groups; the simulation behind it: analysis/README.md
WALD, EXACT = "Wald (stratified Cox)", "exact conditional (Clopper-Pearson)"


@dataclass(frozen=True)
class Arm:
    """Kaplan-Meier summary of one arm."""

    n: int
    escaped: int
    times: np.ndarray  # where the curve steps (escapes and censorings)
    survival: np.ndarray  # the fraction still on the plateau just after each time
    low: np.ndarray  # pointwise 95% band (log-log)
    high: np.ndarray
    median: float  # NaN: not reached
    median_low: float  # NaN: its bound not reached either
    median_high: float  # inf: not reached
    censored: np.ndarray  # the times of the runs that never escaped


def _first_below_half(times: np.ndarray, survival: np.ndarray) -> float:
    below = np.nonzero(survival <= 0.5)[0]
    return float(times[below[0]]) if len(below) else math.nan


def kaplan_meier(time, escaped) -> Arm:
    """The arm's Kaplan-Meier curve from each run's time and whether it escaped then."""
    time, escaped = np.asarray(time, dtype=float), np.asarray(escaped, dtype=bool)
    data = stats.CensoredData(uncensored=time[escaped], right=time[~escaped])
    sf = stats.ecdf(data).sf
    times, survival = sf.quantiles, sf.probabilities
    if escaped.any():
        with warnings.catch_warnings():  # undefined where the curve is at 0 or 1: NaN there, as wanted
            warnings.simplefilter("ignore", RuntimeWarning)
            band = sf.confidence_interval(LEVEL, method="log-log")
        low, high = band.low.probabilities, band.high.probabilities
    else:  # no escape: the curve stays at 1 and no band is defined
        low, high = np.full_like(survival, np.nan), np.ones_like(survival)
    low, high = (np.where(np.isnan(b) & (survival == 0), 0.0, b) for b in (low, high))  # all escaped: 0
    median = _first_below_half(times, survival)
    upper = _first_below_half(times, high)  # the band's upper end crosses last
    return Arm(
        n=len(time),
        escaped=int(escaped.sum()),
        times=times,
        survival=survival,
        low=low,
        high=high,
        median=median,
        median_low=_first_below_half(times, low) if escaped.any() else math.nan,
        median_high=upper if not math.isnan(upper) else math.inf,
        censored=np.sort(time[~escaped]),
    )


@dataclass(frozen=True)
class Comparison:
    """An arm against a reference over their matched groups."""

    arm: str
    reference: str
    groups: int  # matched groups holding both
    won: int  # decided groups where the arm escaped first
    lost: int  # ... where the reference did
    p: float  # stratified log-rank, exact (sign test of the decided groups); NaN with none decided
    chi2: float  # the stratified log-rank statistic (statsmodels), for the record
    hazard_ratio: float  # from the stratified Cox model; inf or 0 when all went one way, NaN with none
    low: float
    high: float
    interval: str  # WALD or EXACT ("" when no group was decided)

    @property
    def decided(self) -> int:
        return self.won + self.lost

    @property
    def test_method(self) -> str:
        return f"stratified log-rank, exact (sign test over {self.decided} decided of {self.groups} groups)"


def paired_times(table: pd.DataFrame, arm: str, reference: str) -> pd.DataFrame:
    """One row per matched group holding one run of each arm: its times and events.
    `table`: columns `group`, `arm`, `time`, `escaped`, one run per (group, arm)."""
    both = table[table["arm"].isin([arm, reference])]
    counts = both.groupby("group")["arm"].agg(lambda a: tuple(sorted(a)))
    paired = counts[counts.map(lambda a: a == tuple(sorted((arm, reference))))].index
    return both[both["group"].isin(paired)].sort_values(["group", "arm"]).reset_index(drop=True)


def _decided(pairs: pd.DataFrame, arm: str) -> tuple[int, int]:
    """(won, lost): groups whose first escape was the arm's / the reference's, the other run still
    on the plateau (escaped later, or censored at or after that step)."""
    won = lost = 0
    for _, g in pairs.groupby("group"):
        a, r = g[g["arm"] == arm].iloc[0], g[g["arm"] != arm].iloc[0]
        won += _first(a, r)
        lost += _first(r, a)
    return won, lost


def _first(x: pd.Series, y: pd.Series) -> bool:
    """Whether `x` escaped while `y` was still on the plateau (a run censored at the very step of
    an escape was still at risk then, as the log-rank test counts it)."""
    return bool(x["escaped"]) and (x["time"] < y["time"] or (x["time"] == y["time"] and not y["escaped"]))


def compare(table: pd.DataFrame, arm: str, reference: str) -> Comparison:
    """`arm` against `reference` within matched groups (see the module's text)."""
    from statsmodels.duration.hazard_regression import PHReg
    from statsmodels.duration.survfunc import survdiff

    pairs = paired_times(table, arm, reference)
    groups = pairs["group"].nunique()
    won, lost = _decided(pairs, arm)
    decided = won + lost
    nan = math.nan
    if decided == 0:
        return Comparison(arm, reference, groups, 0, 0, nan, nan, nan, nan, nan, "")
    time = pairs["time"].to_numpy(float)
    event = pairs["escaped"].to_numpy(int)
    is_arm = (pairs["arm"] == arm).to_numpy(float)
    strata = pd.factorize(pairs["group"])[0]
    chi2 = float(survdiff(time, event, is_arm, strata=strata)[0])
    p = float(stats.binomtest(won, decided, 0.5).pvalue)
    if won and lost:
        fit = PHReg(time, is_arm[:, None], status=event, strata=strata).fit(disp=False)
        log_hr, se = float(fit.params[0]), float(fit.bse[0])
        hazard_ratio = math.exp(log_hr)
    else:
        log_hr, se = (math.inf if won else -math.inf), math.nan
        hazard_ratio = math.exp(log_hr)
    if decided >= MIN_DECIDED_FOR_WALD and won and lost:
        z = stats.norm.ppf(0.5 + LEVEL / 2)
        low, high, method = math.exp(log_hr - z * se), math.exp(log_hr + z * se), WALD
    else:
        ci = stats.binomtest(won, decided, 0.5).proportion_ci(LEVEL, method="exact")
        low, high, method = _odds(ci.low), _odds(ci.high), EXACT
    return Comparison(arm, reference, groups, won, lost, p, chi2, hazard_ratio, low, high, method)


def _odds(p: float) -> float:
    return math.inf if p >= 1 else p / (1 - p)
