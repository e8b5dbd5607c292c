"""What `symattn bench` measures: `BenchSpec` (model size, the shapes of the pre-training and
fine-tuning steps, variants, precisions, rounds, device and clock) with its checks, refused before
anything is built, and the precisions and phases (the two training steps) it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from symattn.model.attention import ATTENTIONS, AttentionConfig
from symattn.model.bert import SIZES, ModelConfig
from symattn.model.variants import VARIANTS

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
PHASES = {
    "pretrain": "pre-training step (MLM)",
    "finetune": "fine-tuning step (sequence classification)",
}


@dataclass
class BenchSpec:
    size: str = "mini"
    batch: int = 32
    seq_len: int = 128
    vocab: int = 30522
    phases: tuple[str, ...] = tuple(PHASES)
    ft_batch: int = 16  # the paper's fine-tuning recipe: batch 16, max length 128
    ft_seq_len: int = 128
    num_labels: int = 2
    variants: tuple[str, ...] = tuple(VARIANTS)
    precisions: tuple[str, ...] = ("fp32", "bf16")
    hf: bool = True
    rounds: int = 5
    steps: int = 2  # timed steps per model per round
    warmup: int = 2  # untimed steps per model and precision before the first round
    device: str = "cpu"
    threads: Optional[int] = None
    compile: bool = False
    memory: bool = True
    flush_denormal: bool = True
    retain_memory: bool = True
    seed: int = 0
    clock: str = "wall"  # or "cpu": process CPU time, steadier on a shared machine (see README)
    peak_size: Optional[int] = None  # n of the n x n matmul MFU is measured against (1024 CPU, 8192 GPU)
    mlm_fraction: float = 0.15

    def check(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r}; choose one of {', '.join(SIZES)}")
        for v in self.variants:
            if v not in ATTENTIONS:
                raise ValueError(f"unknown attention {v!r}; choose from {', '.join(ATTENTIONS)}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ValueError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        for phase in self.phases:
            if phase not in PHASES:
                raise ValueError(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
        for name in ("batch", "seq_len", "ft_batch", "ft_seq_len", "rounds", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.num_labels < 2:
            raise ValueError("num-labels must be at least 2 (a classification step)")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"unknown clock {self.clock!r}; choose wall or cpu")
        if self.clock == "cpu" and self.device != "cpu":
            raise ValueError("--clock cpu measures CPU time; use it with --device cpu")
        if self.warmup < 0:
            raise ValueError("warmup must be 0 or more")
        if not 0 < self.mlm_fraction <= 1:
            raise ValueError("mlm fraction must be in (0, 1]")
        for name in ("seq_len", "ft_seq_len"):
            if getattr(self, name) > 512:
                raise ValueError(
                    f"{name.replace('_', '-')} {getattr(self, name)} exceeds the 512 position embeddings"
                )
        if not self.phases or (not self.variants and not self.hf):
            raise ValueError("nothing to measure: give --phases and --variants, or drop --no-hf")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} is not available here; use --device cpu")

    def model_config(self, variant: str = "vanilla") -> ModelConfig:
        return ModelConfig(size=self.size, vocab_size=self.vocab, attention=AttentionConfig(variant=variant))

    def shape(self, phase: str) -> tuple[int, int]:
        """(batch, sequence length) of the phase's step."""
        return (self.batch, self.seq_len) if phase == "pretrain" else (self.ft_batch, self.ft_seq_len)
