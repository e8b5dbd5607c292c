"""`symattn bench`: training-step speed of every variant, side by side with HF `BertForMaskedLM`.

For each model (HF BERT of the same configuration, then each attention variant) and precision (fp32,
bf16 autocast), a full training step is timed: forward, MLM loss, backward, grad-norm clip, AdamW.
Models run interleaved (round 1: HF, vanilla, ..., round 2: ...), so that the ratio to HF holds on
a machine whose speed drifts; each round also re-measures the matmul peak that MFU is taken against.

Reported per model and precision: tokens/s (median over steps), the ratio to HF (median of
per-round ratios), step time (median and half the 10-90 percentile range), peak memory (model
state + optimizer state + the step's peak allocations), MFU (FLOPs the model performs per step /
step time / matmul peak of that round, median over rounds; HF's FLOPs include its full-vocabulary
decoder, ours the masked positions only, as each computes them).

Batches are synthetic MLM batches (random ids, 15% of positions per row masked and labelled, -100
elsewhere, no padding), the same for every model.
"""

from __future__ import annotations

import argparse
import csv
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
from symattn.model import SIZES, BertForMaskedLM, ModelConfig, flops_per_token
from symattn.speed import apply_speed_settings, matmul_peak, peak_step_memory, spread, synchronize
from symattn.tokens import IGNORE_INDEX, MASK_TOKEN_ID, NUM_SPECIAL_TOKENS
from symattn.variants import VARIANTS

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}

COLUMNS = [
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
        for name in ("batch", "seq_len", "rounds", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"unknown clock {self.clock!r}; choose wall or cpu")
        if self.clock == "cpu" and self.device != "cpu":
            raise ValueError("--clock cpu measures CPU time; use it with --device cpu")
        if self.warmup < 0:
            raise ValueError("warmup must be 0 or more")
        if not 0 < self.mlm_fraction <= 1:
            raise ValueError("mlm fraction must be in (0, 1]")
        if self.seq_len > 512:
            raise ValueError(f"seq-len {self.seq_len} exceeds the 512 position embeddings")
        if not self.variants and not self.hf:
            raise ValueError("nothing to measure: give --variants or drop --no-hf")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} is not available here; use --device cpu")

    def model_config(self, kind: str = "vanilla") -> ModelConfig:
        return ModelConfig(size=self.size, vocab_size=self.vocab, attention=AttentionConfig(kind=kind))


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


def hf_model(c: ModelConfig) -> nn.Module:
    """HF BertForMaskedLM of the same configuration, randomly initialised (no download)."""
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
    )
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(hf_cfg)


@dataclass
class Contender:
    """One model in the race: how to build it and the FLOPs it performs per token."""

    name: str
    attention: str
    build: Callable[[], nn.Module]
    flops_per_token: float
    model: Optional[nn.Module] = None
    optimizers: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # precision -> callable running one step


def contenders(spec: BenchSpec) -> list[Contender]:
    out = []
    if spec.hf:
        c = spec.model_config("vanilla")
        # HF computes the decoder on every position: mlm_fraction 1 for its head.
        out.append(
            Contender("hf-bert", "vanilla", lambda c=c: hf_model(c), flops_per_token(c, spec.seq_len, 1.0))
        )
    for v in spec.variants:
        c = spec.model_config(v)
        out.append(
            Contender(
                v,
                v,
                lambda c=c: BertForMaskedLM(c, seed=spec.seed),
                flops_per_token(c, spec.seq_len, spec.mlm_fraction),
            )
        )
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
    """Measure; returns one row (dict over COLUMNS) per model and precision."""
    spec.check()
    device = torch.device(spec.device)
    clock = time.process_time if spec.clock == "cpu" else time.perf_counter
    settings = {"threads": None}
    if device.type == "cpu":
        settings = apply_speed_settings(spec.threads, spec.flush_denormal, spec.retain_memory)
    batch = synthetic_batch(spec.batch, spec.seq_len, spec.vocab, spec.mlm_fraction, spec.seed, device)
    tokens = spec.batch * spec.seq_len
    racers = contenders(spec) + list(extra or [])
    log(
        f"bench: {spec.size} batch {spec.batch} x {spec.seq_len}, {device.type}, threads {settings['threads']}, "
        f"denormals flushed {settings.get('flush_denormal')}; models: {', '.join(r.name for r in racers)}"
    )
    for r in racers:
        r.model = r.build().to(device).train()
        compiled = torch.compile(r.model) if spec.compile else None
        for p in spec.precisions:
            r.optimizers[p] = make_optimizer(r.model, device)
            r.steps[p] = make_step(r.model, r.optimizers[p], batch, p, device, compiled)
    # warm-up: first calls allocate, compile, pick kernels
    for p in spec.precisions:
        for r in racers:
            for _ in range(spec.warmup):
                r.steps[p]()
            synchronize(device)
    times = {(r.name, p): [] for r in racers for p in spec.precisions}
    per_round = {(r.name, p): [] for r in racers for p in spec.precisions}
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
                times[(r.name, p)] += ts
                per_round[(r.name, p)].append(statistics.median(ts))
        log(
            f"  round {i + 1}/{spec.rounds}: "
            + ", ".join(
                f"{r.name} {p} {per_round[(r.name, p)][-1] * 1e3:.0f} ms"
                for p in spec.precisions
                for r in racers
            )
        )
    rows = []
    c0 = spec.model_config()
    for p in spec.precisions:
        hf_rounds = per_round.get(("hf-bert", p)) if spec.hf else None
        for r in racers:
            key = (r.name, p)
            med, spr = spread(times[key])
            flops = r.flops_per_token * tokens
            mfu = statistics.median(flops / t / pk for t, pk in zip(per_round[key], peaks[p]))
            vs_hf = (
                statistics.median(h / t for h, t in zip(hf_rounds, per_round[key])) if hf_rounds else math.nan
            )
            peak_mem = state = math.nan
            if spec.memory:
                opt = r.optimizers[p]
                state = state_bytes(r.model, opt)
                peak_mem = state + peak_step_memory(r.steps[p], device)
            rows.append(
                {
                    "model": r.name,
                    "attention": r.attention,
                    "precision": p,
                    "size": spec.size,
                    "layers": c0.n_layers,
                    "hidden": c0.n_hidden,
                    "heads": c0.n_heads,
                    "vocab": spec.vocab,
                    "batch": spec.batch,
                    "seq_len": spec.seq_len,
                    "device": device.type,
                    "threads": settings["threads"],
                    "compile": spec.compile,
                    "clock": spec.clock,
                    "steps": len(times[key]),
                    "tokens_per_s": tokens / med,
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


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


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
        variants=_names(args.variants),
        precisions=_names(args.precision),
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
        f"\n{spec.size}, batch {spec.batch} x {spec.seq_len}, vocab {spec.vocab:,}, {spec.clock} clock, "
        f"threads {rows[0]['threads'] if rows else '-'}; {machine()}"
    )
    print(format_table(rows))
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
