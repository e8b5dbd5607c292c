"""Parameter counts and FLOPs of every variant and coefficient scheme at a size."""

from __future__ import annotations

import torch

from symattn.attention import ATTENTIONS, COEFFICIENT_SCHEMES, AttentionConfig
from symattn.model import BertForMaskedLM, ModelConfig, count_parameters, flops_per_token


def attention_configs() -> list[AttentionConfig]:
    """Every variant, and every coefficient scheme of the variants that have coefficients."""
    out = []
    for name, cls in ATTENTIONS.items():
        schemes = COEFFICIENT_SCHEMES if cls.has_coefficients else [None]
        out += [AttentionConfig(variant=name, scheme=s) for s in schemes]
    return out


def parameter_rows(
    size: str, vocab_size: int = 30522, max_positions: int = 512, seq_len: int = 128
) -> list[dict]:
    rows = []
    for att in attention_configs():
        cfg = ModelConfig(size=size, attention=att, vocab_size=vocab_size, max_positions=max_positions)
        with torch.device("meta"):  # shapes only: counting a base model allocates nothing
            counts = count_parameters(BertForMaskedLM(cfg))
        rows.append(
            {
                "variant": att.variant,
                "scheme": att.resolved_scheme,
                **counts,
                "train_gflops_per_token": flops_per_token(cfg, seq_len) / 1e9,
            }
        )
    base = next(r["total"] for r in rows if r["variant"] == "vanilla")
    for r in rows:
        r["vs_vanilla_pct"] = 100.0 * (r["total"] - base) / base
    return rows


def format_rows(rows: list[dict], seq_len: int) -> str:
    head = f"{'variant':<10} {'scheme':<10} {'total':>12} {'vs vanilla':>10} {'non-embedding':>14} {'attention':>11} {'GFLOP/token':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:<10} {r['scheme']:<10} {r['total']:>12,} {r['vs_vanilla_pct']:>+9.2f}% "
            f"{r['non_embedding']:>14,} {r['attention']:>11,} {r['train_gflops_per_token']:>12.4f}"
        )
    lines.append(
        f"(GFLOP/token: one training step, forward + backward, at sequence length {seq_len}, MLM head on 15%)"
    )
    return "\n".join(lines)
