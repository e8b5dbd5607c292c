"""The models `symattn bench` races: HF BERT of the same configuration (randomly initialised, the
reference every ratio is taken to) and ours per attention variant, each for the pre-training or the
fine-tuning step, with the FLOPs per token each performs as it computes them (for MFU)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from symattn.bench.spec import BenchSpec
from symattn.model.bert import BertForMaskedLM, BertForSequenceClassification, ModelConfig, flops_per_token


def hf_model(c: ModelConfig, phase: str = "pretrain", num_labels: int = 2) -> nn.Module:
    """HF BertForMaskedLM (pretrain) or BertForSequenceClassification (finetune) of the same
    configuration, randomly initialised (no download)."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - dev extra
        raise ValueError("transformers is not installed: install the dev extra, or pass --no-hf") from exc
    hf_cfg = transformers.BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.n_hidden,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        intermediate_size=c.n_intermediate,
        max_position_embeddings=c.max_positions,
        type_vocab_size=c.type_vocab_size,
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.attention_dropout,
        layer_norm_eps=c.layer_norm_eps,
        initializer_range=c.init_std,
        pad_token_id=c.pad_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    head = transformers.BertForMaskedLM if phase == "pretrain" else transformers.BertForSequenceClassification
    return head(hf_cfg)


def our_model(c: ModelConfig, phase: str, spec: BenchSpec) -> nn.Module:
    if phase == "pretrain":
        return BertForMaskedLM(c, seed=spec.seed)
    return BertForSequenceClassification(c, spec.num_labels, seed=spec.seed)


def step_flops_per_token(c: ModelConfig, phase: str, spec: BenchSpec, hf: bool = False) -> float:
    """FLOPs per token of the phase's training step, as the model computes it."""
    if phase == "pretrain":  # HF computes the decoder on every position: mlm_fraction 1 for its head
        return flops_per_token(c, spec.seq_len, 1.0 if hf else spec.mlm_fraction)
    # the encoder, then the pooler and the classifier once per sequence (forward + 2x backward)
    h = c.n_hidden
    head = 3 * (2 * h * h + 2 * h * spec.num_labels) / spec.ft_seq_len
    return flops_per_token(c, spec.ft_seq_len, 0.0) + head


@dataclass
class Contender:
    """One model in the race: how to build it and the FLOPs it performs per token."""

    name: str
    attention: str
    build: Callable[[], nn.Module]
    flops_per_token: float
    phase: str = "pretrain"  # whose batch it steps on: a key of PHASES
    model: Optional[nn.Module] = None
    optimizers: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # precision -> callable running one step

    @property
    def key(self) -> tuple[str, str]:
        return self.phase, self.name


def contenders(spec: BenchSpec) -> list[Contender]:
    out = []
    for phase in spec.phases:
        if spec.hf:
            c = spec.model_config("vanilla")
            build = functools.partial(hf_model, c, phase, spec.num_labels)
            out.append(
                Contender("hf-bert", "vanilla", build, step_flops_per_token(c, phase, spec, True), phase)
            )
        for v in spec.variants:
            c = spec.model_config(v)
            build = functools.partial(our_model, c, phase, spec)
            out.append(Contender(v, v, build, step_flops_per_token(c, phase, spec), phase))
    return out
