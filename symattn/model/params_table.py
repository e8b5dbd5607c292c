"""Parameter counts and FLOPs of every variant and coefficient scheme at a size, and the
parameter-matched vanilla controls (a query/key width per head, `model.attention.qk_dim`)."""

from __future__ import annotations

import math

import torch

from symattn.model.attention import ATTENTIONS, COEFFICIENT_SCHEMES, AttentionConfig
from symattn.model.bert import BertForMaskedLM, ModelConfig, count_parameters, flops_per_token
from symattn.model.variants import VARIANTS


def attention_configs() -> list[AttentionConfig]:
    """Every variant, and every coefficient scheme of the variants that have coefficients."""
    out = []
    for name, cls in ATTENTIONS.items():
        schemes = COEFFICIENT_SCHEMES if cls.has_coefficients else [None]
        out += [AttentionConfig(variant=name, scheme=s) for s in schemes]
    return out


def _counts(model: ModelConfig) -> dict[str, int]:
    with torch.device("meta"):  # shapes only: counting a base model allocates nothing
        return count_parameters(BertForMaskedLM(model))


def matched_qk_dim(model: ModelConfig, target: int) -> tuple[int, int]:
    """(width, total): the query/key width per head that brings vanilla's total parameter count
    nearest to `target`, and the total it gives. Exact when that total equals `target`."""
    vanilla = model.model_copy(update={"attention": AttentionConfig(variant="vanilla")})
    full = vanilla.n_hidden // vanilla.n_heads

    def total(width: int) -> int:
        return _counts(vanilla.model_copy(update={"attention": AttentionConfig(qk_dim=width)}))["total"]

    per_width = total(full) - total(full - 1)  # the count is linear in the width
    guess = full - (total(full) - target) / per_width
    candidates = {max(1, math.floor(guess)), max(1, math.ceil(guess))}
    return min(((w, total(w)) for w in candidates), key=lambda wt: (abs(wt[1] - target), wt[0]))


def parameter_rows(
    size: str, vocab_size: int = 30522, max_positions: int = 512, seq_len: int = 128
) -> list[dict]:
    """One row per variant and scheme, then one per parameter-matched vanilla (`matches` names the
    row whose count it takes, `exact` whether it takes it exactly)."""
    rows = []

    def row(att: AttentionConfig, **extra) -> dict:
        cfg = ModelConfig(size=size, attention=att, vocab_size=vocab_size, max_positions=max_positions)
        return {
            "variant": att.variant,
            "label": att.label,
            "scheme": att.resolved_scheme,
            **_counts(cfg),
            "train_gflops_per_token": flops_per_token(cfg, seq_len) / 1e9,
            **extra,
        }

    for att in attention_configs():
        rows.append(row(att))
    model = ModelConfig(size=size, vocab_size=vocab_size, max_positions=max_positions)
    vanilla_total = next(r["total"] for r in rows if r["variant"] == "vanilla")
    # Variants with a value projection of their own: below them, the widths would go to nothing.
    targets = [r for r in rows if r["total"] < vanilla_total and r["scheme"] in ("none", "full")]
    for target in [r for r in targets if VARIANTS[r["variant"]].has_value]:
        width, total = matched_qk_dim(model, target["total"])
        name = target["label"]
        rows.append(row(AttentionConfig(qk_dim=width), matches=name, exact=total == target["total"]))
    for r in rows:
        r["vs_vanilla_pct"] = 100.0 * (r["total"] - vanilla_total) / vanilla_total
    return rows


def format_rows(rows: list[dict], seq_len: int) -> str:
    head = f"{'variant':<20} {'scheme':<10} {'total':>12} {'vs vanilla':>10} {'non-embedding':>14} {'attention':>11} {'GFLOP/token':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (
            f"{r['label']:<20} {r['scheme']:<10} {r['total']:>12,} {r['vs_vanilla_pct']:>+9.2f}% "
            f"{r['non_embedding']:>14,} {r['attention']:>11,} {r['train_gflops_per_token']:>12.4f}"
        )
        if r.get("matches"):
            line += f"  {'=' if r['exact'] else '~'} {r['matches']}" + (
                "" if r["exact"] else " (nearest width)"
            )
        lines.append(line)
    lines.append(
        f"(GFLOP/token: one training step, forward + backward, at sequence length {seq_len}, MLM head on 15%;\n"
        " vanilla-qkN: vanilla with query/key width N per head, model.attention.qk_dim=N, matched to the\n"
        " variant named after it, = exactly or ~ nearest)"
    )
    return "\n".join(lines)
