"""`symattn bench`: training-step speed of every variant, side by side with HF BERT.

Two steps are raced: pre-training (`BertForMaskedLM`, MLM loss) and fine-tuning
(`BertForSequenceClassification`, cross-entropy over the labels). For each model (HF BERT of the
same configuration, then each attention variant) and precision (fp32, bf16 autocast), a full
training step is timed: forward, loss, backward, grad-norm clip, AdamW. Models of both steps run
interleaved (round 1: HF, vanilla, ..., round 2: ...), so that the ratio to HF holds on a machine
whose speed drifts; each round also re-measures the matmul peak that MFU is taken against.

Reported per model and precision: tokens/s (median over steps), the ratio to HF (median of
per-round ratios), step time (median and half the 10-90 percentile range), peak memory (model
state + optimizer state + the step's peak allocations), MFU (FLOPs the model performs per step /
step time / matmul peak of that round, median over rounds; HF's FLOPs include its full-vocabulary
decoder, ours the masked positions only, as each computes them).

Batches are synthetic and the same for every model of a step: for pre-training, random ids with 15%
of positions per row masked and labelled (-100 elsewhere) and no padding, as packed blocks; for
fine-tuning, random ids padded as a task batch, with a second segment and random labels.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from symattn.attention import ATTENTIONS, AttentionConfig
from symattn.markdown import markdown_table
from symattn.model import SIZES, BertForMaskedLM, BertForSequenceClassification, ModelConfig, flops_per_token
from symattn.speed import apply_speed_settings, matmul_peak, peak_step_memory, spread, synchronize
from symattn.tokens import IGNORE_INDEX, MASK_TOKEN_ID, NUM_SPECIAL_TOKENS, PAD_TOKEN_ID
from symattn.variants import VARIANTS

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
PHASES = {
    "pretrain": "pre-training step (MLM)",
    "finetune": "fine-tuning step (sequence classification)",
}

COLUMNS = [
    "phase",
    "model",
    "attention",
    "precision",
    "size",
    "layers",
    "hidden",
    "heads",
    "vocab",
    "batch",
    "seq_len",
    "device",
    "threads",
    "compile",
    "clock",
    "steps",
    "tokens_per_s",
    "vs_hf",
    "step_ms_median",
    "step_ms_spread",
    "step_ms_min",
    "peak_mem_mib",
    "state_mib",
    "gflop_per_step",
    "matmul_peak_gflops",
    "mfu",
]


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


# --- batches and models --------------------------------------------------------------------------


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


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as the paper (lr 1e-4, eps 1e-12, weight decay 0.01), fused where torch has it."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-12, weight_decay=0.01, fused=True)


def make_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict,
    precision: str,
    device: torch.device,
    compiled: Optional[nn.Module] = None,
) -> Callable[[], float]:
    """One full training step (forward, loss, backward, grad-norm clip 1.0, AdamW); returns the loss."""
    fwd = compiled if compiled is not None else model
    dtype = PRECISIONS[precision]
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = fwd(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Parameters and optimizer state held between steps."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for s in opt.state.values():
        n += sum(t.numel() * t.element_size() for t in s.values() if torch.is_tensor(t))
    return n


# --- the race ------------------------------------------------------------------------------------


def run_bench(
    spec: BenchSpec, extra: Optional[list[Contender]] = None, log: Callable[[str], None] = print
) -> list[dict]:
    """Measure; returns one row (dict over COLUMNS) per phase, model and precision."""
    spec.check()
    device = torch.device(spec.device)
    clock = time.process_time if spec.clock == "cpu" else time.perf_counter
    settings = {"threads": None}
    if device.type == "cpu":
        settings = apply_speed_settings(spec.threads, spec.flush_denormal, spec.retain_memory)
    racers = contenders(spec) + list(extra or [])
    phases = list(dict.fromkeys(r.phase for r in racers))
    batches = {phase: phase_batch(spec, phase, device) for phase in phases}
    shapes = ", ".join(
        f"{phase} batch {b['input_ids'].shape[0]} x {b['input_ids'].shape[1]}" for phase, b in batches.items()
    )
    log(
        f"bench: {spec.size}, {shapes}, {device.type}, threads {settings['threads']}, "
        f"denormals flushed {settings.get('flush_denormal')}; models: {', '.join(dict.fromkeys(r.name for r in racers))}"
    )
    _build(racers, spec, batches, device)
    times, per_round, peaks = _race(racers, spec, device, clock, log)
    rows = []
    c0 = spec.model_config()
    for phase in phases:
        batch, seq_len = batches[phase]["input_ids"].shape
        for p in spec.precisions:
            hf_rounds = per_round.get((phase, "hf-bert", p)) if spec.hf else None
            for r in (r for r in racers if r.phase == phase):
                key = (*r.key, p)
                med, spr = spread(times[key])
                flops = r.flops_per_token * batch * seq_len
                mfu = statistics.median(flops / t / pk for t, pk in zip(per_round[key], peaks[p]))
                vs_hf = (
                    statistics.median(h / t for h, t in zip(hf_rounds, per_round[key]))
                    if hf_rounds
                    else math.nan
                )
                peak_mem = state = math.nan
                if spec.memory:
                    state = state_bytes(r.model, r.optimizers[p])
                    peak_mem = state + peak_step_memory(r.steps[p], device)
                rows.append(
                    {
                        "phase": phase,
                        "model": r.name,
                        "attention": r.attention,
                        "precision": p,
                        "size": spec.size,
                        "layers": c0.n_layers,
                        "hidden": c0.n_hidden,
                        "heads": c0.n_heads,
                        "vocab": spec.vocab,
                        "batch": batch,
                        "seq_len": seq_len,
                        "device": device.type,
                        "threads": settings["threads"],
                        "compile": spec.compile,
                        "clock": spec.clock,
                        "steps": len(times[key]),
                        "tokens_per_s": batch * seq_len / med,
                        "vs_hf": vs_hf,
                        "step_ms_median": med * 1e3,
                        "step_ms_spread": spr * 1e3,
                        "step_ms_min": min(times[key]) * 1e3,
                        "peak_mem_mib": peak_mem / 2**20,
                        "state_mib": state / 2**20,
                        "gflop_per_step": flops / 1e9,
                        "matmul_peak_gflops": statistics.median(peaks[p]) / 1e9,
                        "mfu": mfu,
                    }
                )
    return rows


def _build(racers: list[Contender], spec: BenchSpec, batches: dict, device: torch.device) -> None:
    """Each model, its optimizer and step per precision, then the warm-up steps."""
    for r in racers:
        r.model = r.build().to(device).train()
        compiled = torch.compile(r.model) if spec.compile else None
        for p in spec.precisions:
            r.optimizers[p] = make_optimizer(r.model, device)
            r.steps[p] = make_step(r.model, r.optimizers[p], batches[r.phase], p, device, compiled)
    # warm-up: first calls allocate, compile, pick kernels
    for p in spec.precisions:
        for r in racers:
            for _ in range(spec.warmup):
                r.steps[p]()
            synchronize(device)


def _race(
    racers: list[Contender], spec: BenchSpec, device: torch.device, clock, log
) -> tuple[dict, dict, dict]:
    """Interleaved rounds: every step time, each round's median per (phase, model, precision), and
    each round's matmul peak per precision."""
    times = {(*r.key, p): [] for r in racers for p in spec.precisions}
    per_round = {(*r.key, p): [] for r in racers for p in spec.precisions}
    peaks = {p: [] for p in spec.precisions}
    for i in range(spec.rounds):
        for p in spec.precisions:
            peaks[p].append(matmul_peak(PRECISIONS[p], device, spec.peak_size, clock=clock))
            order = racers[i % len(racers) :] + racers[: i % len(racers)]  # rotate: no fixed position
            for r in order:
                ts = []
                for _ in range(spec.steps):
                    synchronize(device)
                    t = clock()
                    r.steps[p]()
                    synchronize(device)
                    ts.append(clock() - t)
                times[(*r.key, p)] += ts
                per_round[(*r.key, p)].append(statistics.median(ts))
        log(
            f"  round {i + 1}/{spec.rounds}: "
            + ", ".join(
                f"{r.phase} {r.name} {p} {per_round[(*r.key, p)][-1] * 1e3:.0f} ms"
                for p in spec.precisions
                for r in racers
            )
        )
    return times, per_round, peaks


# --- output --------------------------------------------------------------------------------------


def format_table(rows: list[dict]) -> str:
    head = [
        "model",
        "prec",
        "tokens/s",
        "vs HF",
        "step ms",
        "± ms",
        "peak MiB",
        "GFLOP/step",
        "peak GFLOP/s",
        "MFU",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r["model"],
                r["precision"],
                f"{r['tokens_per_s']:,.0f}",
                "-" if math.isnan(r["vs_hf"]) else f"{r['vs_hf']:.2f}x",
                f"{r['step_ms_median']:,.0f}",
                f"{r['step_ms_spread']:,.0f}",
                "-" if math.isnan(r["peak_mem_mib"]) else f"{r['peak_mem_mib']:,.0f}",
                f"{r['gflop_per_step']:,.1f}",
                f"{r['matmul_peak_gflops']:,.0f}",
                f"{100 * r['mfu']:.0f}%",
            ]
        )
    return markdown_table(head, body, text_columns=2)


def write_csv(rows: list[dict], path: Path, columns: list[str] = COLUMNS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in columns})


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__}"


# --- command line --------------------------------------------------------------------------------


def command(args: argparse.Namespace) -> int:
    """`symattn bench` (its arguments: `symattn.cli`)."""
    overhead_spec = None
    if args.overhead:
        from symattn.cell_overhead import check
        from symattn.sweep.spec import load_spec

        overhead_spec = load_spec(args.overhead)  # bad input is refused before any timing
        check(overhead_spec, args.overhead_steps)
    elif args.overhead_only:
        raise ValueError("--overhead-only needs --overhead SPEC, e.g. --overhead experiments/quick.yaml")
    if not args.overhead_only:
        _step_bench(args)
    if overhead_spec is not None:
        _overhead_bench(args, overhead_spec)
    return 0


def _step_bench(args: argparse.Namespace) -> None:
    spec = BenchSpec(
        size=args.size,
        batch=args.batch,
        seq_len=args.seq_len,
        vocab=args.vocab,
        phases=tuple(args.phases),
        ft_batch=args.ft_batch,
        ft_seq_len=args.ft_seq_len,
        variants=tuple(args.variants),
        precisions=tuple(args.precision),
        hf=not args.no_hf,
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        device=_device(args.device),
        threads=args.threads,
        compile=args.compile,
        memory=not args.no_memory,
        seed=args.seed,
        clock=args.clock,
        peak_size=args.peak_size,
        flush_denormal=not args.no_flush_denormal,
        retain_memory=not args.no_retain_memory,
    )
    rows = run_bench(spec)
    print(
        f"\n{spec.size}, vocab {spec.vocab:,}, {spec.clock} clock, "
        f"threads {rows[0]['threads'] if rows else '-'}; {machine()}"
    )
    for phase in spec.phases:
        part = [r for r in rows if r["phase"] == phase]
        print(f"\n{PHASES[phase]}, batch {part[0]['batch']} x {part[0]['seq_len']}")
        print(format_table(part))
    if args.csv:
        write_csv(rows, Path(args.csv))
        print(f"wrote {args.csv}")


def _overhead_bench(args: argparse.Namespace, spec) -> None:
    from symattn import cell_overhead

    rows = cell_overhead.measure(
        spec, steps=args.overhead_steps, devices="cpu" if _device(args.device) == "cpu" else "auto"
    )
    print(
        f"\nsweep cells of {args.overhead}, {args.overhead_steps} steps each, first matched group; {machine()}"
    )
    print(cell_overhead.format_table(rows))
    if args.csv:
        path = Path(args.csv)
        path = path.with_name(f"{path.stem}-overhead{path.suffix or '.csv'}")
        write_csv(rows, path, cell_overhead.COLUMNS)
        print(f"wrote {path}")


def _device(name: str) -> str:
    """`auto`: cuda when torch sees a GPU, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
