"""The attention variants and their coefficient options, by name: the one place that names them.

Torch-free, so that configs validate without importing torch. Each variant's computation is the
`SelfAttention` subclass registered under its name in `symattn.model.attention`; everything else (the
config, the model, parameter counts, FLOPs, labels in tables and plots) asks the variant here.
Adding a variant = one `Variant` here and one registered subclass there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    has_key: bool  # a key projection of its own (else K := Q)
    has_coefficients: bool  # a learned bilinear form S_h per head (scheme and init apply)
    logits: str  # per head, for documentation and tables
    has_value: bool = True  # a value projection of its own (else V comes from the shared one)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vanilla", has_key=True, has_coefficients=False, logits="Q_h K_h^T / sqrt(d_h)"),
        Variant("symmetric", has_key=False, has_coefficients=False, logits="Q_h Q_h^T / sqrt(d_h)"),
        Variant("pairwise", has_key=False, has_coefficients=True, logits="Q_h S_h Q_h^T / sqrt(d_h)"),
        # Kowsher et al.: one projection P = X W + b for all three roles, each role scaled by its own
        # learned diagonal: Q = P diag(a_q), K = P diag(a_k), V = P diag(a_v).
        Variant(
            "shared",
            has_key=False,
            has_coefficients=False,
            has_value=False,
            logits="P_h diag(a_q,h a_k,h) P_h^T / sqrt(d_h)",
        ),
    )
}

# How S_h is parametrised (the first is the paper's), and how it starts (the first is the paper's).
COEFFICIENT_SCHEMES = ("full", "diagonal", "symmetric")
COEFFICIENT_INITS = ("normal", "scaled", "identity")


def variant(name: str) -> Variant:
    """The variant `name`, or a one-line error listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {', '.join(VARIANTS)}") from None


def variant_label(name: str, scheme=None, init=None, qk_dim=None, qk_gain=None) -> str:
    """Short name for tables and plots: the variant, plus `-<scheme>` and `-<init>` where they are
    not the paper's (full S, normal init), `-qk<width>` for a query/key width per head of its own
    and `-gain<g>` for a query/key initial gain, so ablation cells stay apart:
    `pairwise-diagonal-scaled`, `vanilla-qk32`. Missing values (None, "", "none", NaN: a variant
    without coefficients, a default width or gain) add nothing."""
    parts = [str(name)]
    for value, paper in ((scheme, COEFFICIENT_SCHEMES[0]), (init, COEFFICIENT_INITS[0])):
        if _given(value) and value != paper:
            parts.append(str(value))
    if _given(qk_dim):
        parts.append(f"qk{int(float(qk_dim))}")
    if _given(qk_gain) and float(qk_gain) != 1.0:
        parts.append(f"gain{float(qk_gain):g}")
    return "-".join(parts)


def _given(value) -> bool:
    """Not None, NaN (`value != value`), or a text that stands for nothing."""
    return (
        value is not None
        and value == value
        and str(value).strip().lower() not in {"", "none", "nan", "null", "<na>"}
    )
