"""What a comparison's result may be said to show, decided by code from its numbers and the study's
stated analysis, never by hand:

- below the (adjusted) level: the direction, with the estimate, its interval, n and p;
- not below it: "no difference detected", with n, p and the interval; never "no effect", "cannot
  be told apart" or "does not explain" (a test that did not reject shows no such thing);
- "equivalent" only where the analysis stated an equivalence margin and the interval lies inside
  it (two one-sided tests at the level, through the interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORBIDDEN = ("no effect", "cannot be told apart", "does not explain", "no difference.", "same as")


def _num(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.3g}"


def p_text(p: float, adjusted: float | None, correction: str, m: int) -> str:
    if adjusted is None or correction == "none" or m == 1:
        return f"p = {p:.3g}"
    return f"p = {p:.3g}, {correction}-adjusted over {m} comparisons {adjusted:.3g}"


def _cannot_reach(smallest: float, alpha: float, decided: int, correction: str, m: int) -> str:
    """What a design whose n cannot give p < alpha must say beside "no difference detected"."""
    if smallest < alpha:
        return ""
    corrected = f" after {correction} over {m} comparisons" if correction != "none" and m > 1 else ""
    return (
        f"; with {decided} decided pairs this comparison could not reach p < {alpha:g}{corrected} "
        f"(smallest possible {smallest:.3g})"
    )


def escape_verdict(
    c, adjusted: float, alpha: float, correction: str, m: int, equivalence=None, smallest: float = 0.0
) -> str:
    """The sentence for an escape comparison (`analysis.survival.Comparison`): its verdict, the
    hazard ratio with its interval and method, the decided groups, the test and the p-values;
    `smallest`: the smallest adjusted p its n could give, said where it is not below alpha."""
    if c.decided == 0:
        return (
            f"{c.arm} vs {c.reference}: not tested - no matched group decided which escaped first "
            f"(0 of {c.groups} groups: both runs still on the plateau, or one stopped first)"
        )
    numbers = (
        f"hazard ratio {_num(c.hazard_ratio)} [{_num(c.low)}, {_num(c.high)}] ({c.interval}); "
        f"{c.arm} escaped first in {c.won} and {c.reference} in {c.lost} of {c.decided} decided groups "
        f"(of {c.groups}); {c.test_method}, {p_text(c.p, adjusted, correction, m)}"
    )
    if adjusted < alpha:
        way = "sooner" if c.won > c.lost else "later"
        return f"{c.arm} left the plateau {way} than {c.reference}: {numbers}"
    if equivalence is not None and 1 / equivalence < c.low and c.high < equivalence:
        return f"{c.arm} and {c.reference} are equivalent within a hazard ratio of {equivalence:g}: {numbers}"
    return (
        f"{c.arm} vs {c.reference}: no difference detected at level {alpha:g}: {numbers}"
        f"{_cannot_reach(smallest, alpha, c.decided, correction, m)}"
    )


@dataclass(frozen=True)
class LossPairs:
    """A paired loss comparison at a stated step: the pairs lower, higher and tied, the groups
    without that step (left out), and the exact sign test's p."""

    arm: str
    reference: str
    step: int
    lower: int
    higher: int
    tied: int
    pairs: int
    unmeasured: int
    p: float


def loss_verdict(
    x: LossPairs, adjusted: float, alpha: float, correction: str, m: int, smallest: float = 0.0
) -> str:
    """The sentence for a paired loss comparison at a stated step (sign test)."""
    left_out = (
        f"; {x.unmeasured} groups left out, a run stopped before step {x.step:,}" if x.unmeasured else ""
    )
    if x.lower + x.higher == 0:
        return (
            f"{x.arm} vs {x.reference} at step {x.step:,}: not tested - no pair decided "
            f"({x.pairs} pairs, {x.tied} tied{left_out})"
        )
    numbers = (
        f"lower in {x.lower}, higher in {x.higher} of {x.lower + x.higher} pairs ({x.tied} tied, of {x.pairs}"
        f"{left_out}); exact sign test, {p_text(x.p, adjusted, correction, m)}"
    )
    if adjusted < alpha:
        way = "lower" if x.lower > x.higher else "higher"
        return f"{x.arm}'s loss at step {x.step:,} is {way} than {x.reference}'s: {numbers}"
    return (
        f"{x.arm} vs {x.reference}, loss at step {x.step:,}: no difference detected at level {alpha:g}: "
        f"{numbers}{_cannot_reach(smallest, alpha, x.lower + x.higher, correction, m)}"
    )
