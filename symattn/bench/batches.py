"""The synthetic batches of `symattn bench`, the same for every model of a step: packed MLM blocks
for pre-training (random ids, a fixed share of each row masked and labelled, no padding) and padded
text-pair task batches with random labels for fine-tuning."""

from __future__ import annotations

import torch

from symattn.bench.spec import BenchSpec
from symattn.tokens import IGNORE_INDEX, MASK_TOKEN_ID, NUM_SPECIAL_TOKENS, PAD_TOKEN_ID


def synthetic_batch(
    batch: int, seq_len: int, vocab: int, mlm_fraction: float = 0.15, seed: int = 0, device="cpu"
) -> dict[str, torch.Tensor]:
    """Random ids; round(mlm_fraction * seq_len) positions per row masked: input [MASK], label the
    original id; -100 elsewhere. No padding (all-ones attention mask), as packed pre-training blocks."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL_TOKENS, vocab, (batch, seq_len), generator=g)
    n_masked = max(1, round(mlm_fraction * seq_len))
    positions = torch.rand(batch, seq_len, generator=g).argsort(dim=1)[:, :n_masked]
    selected = torch.zeros(batch, seq_len, dtype=torch.bool).scatter_(1, positions, True)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    inputs = torch.where(selected, torch.full_like(ids, MASK_TOKEN_ID), ids)
    out = {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device) for k, v in out.items()}


def classification_batch(
    batch: int, seq_len: int, vocab: int, num_labels: int = 2, seed: int = 0, device="cpu"
) -> dict[str, torch.Tensor]:
    """Random ids padded as a task batch: row lengths drawn from [seq_len / 2, seq_len], the first row
    full (so the batch is seq_len wide), [PAD] and mask 0 after each row's end; segment 1 from the
    middle of each row (a text pair); random labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL_TOKENS, vocab, (batch, seq_len), generator=g)
    lengths = torch.randint((seq_len + 1) // 2, seq_len + 1, (batch,), generator=g)
    lengths[0] = seq_len
    positions = torch.arange(seq_len)
    mask = positions < lengths[:, None]
    out = {
        "input_ids": torch.where(mask, ids, PAD_TOKEN_ID),
        "attention_mask": mask.long(),
        "token_type_ids": (mask & (positions >= lengths[:, None] // 2)).long(),
        "labels": torch.randint(num_labels, (batch,), generator=g),
    }
    return {k: v.to(device) for k, v in out.items()}


def phase_batch(spec: BenchSpec, phase: str, device) -> dict[str, torch.Tensor]:
    batch, seq_len = spec.shape(phase)
    if phase == "pretrain":
        return synthetic_batch(batch, seq_len, spec.vocab, spec.mlm_fraction, spec.seed, device)
    return classification_batch(batch, seq_len, spec.vocab, spec.num_labels, spec.seed, device)
