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

FORBIDDEN = ("no effect", "cannot be told apart", "does not explain", "no difference.", "same as")


def _num(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.3g}"


def p_text(p: float, adjusted: float | None, correction: str, m: int) -> str:
    if adjusted is None or correction == "none" or m == 1:
        return f"p = {p:.3g}"
    return f"p = {p:.3g}, {correction}-adjusted over {m} comparisons {adjusted:.3g}"


def escape_verdict(c, adjusted: float, alpha: float, correction: str, m: int, equivalence=None) -> str:
    """The sentence for an escape comparison (`analysis.survival.Comparison`): its verdict, the
    hazard ratio with its interval and method, the decided groups, the test and the p-values."""
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
    return f"{c.arm} vs {c.reference}: no difference detected at level {alpha:g}: {numbers}"


def loss_verdict(
    arm: str,
    reference: str,
    step: int,
    lower: int,
    higher: int,
    ties: int,
    pairs: int,
    p: float,
    adjusted: float,
    alpha: float,
    correction: str,
    m: int,
) -> str:
    """The sentence for a paired loss comparison at a stated step (sign test)."""
    if lower + higher == 0:
        return f"{arm} vs {reference} at step {step:,}: not tested - no pair decided ({pairs} pairs, {ties} tied)"
    numbers = (
        f"lower in {lower}, higher in {higher} of {lower + higher} pairs ({ties} tied, of {pairs}); "
        f"exact sign test, {p_text(p, adjusted, correction, m)}"
    )
    if adjusted < alpha:
        way = "lower" if lower > higher else "higher"
        return f"{arm}'s loss at step {step:,} is {way} than {reference}'s: {numbers}"
    return (
        f"{arm} vs {reference}, loss at step {step:,}: no difference detected at level {alpha:g}: {numbers}"
    )
