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

This module is the command. What it measures is `spec.py`; the batches `batches.py`; the models
and their FLOPs `models.py`; the timed step and the rounds `race.py`; the table and the CSV
`report.py`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from symattn.bench.race import run_bench
from symattn.bench.report import format_table, machine, write_csv
from symattn.bench.spec import PHASES, BenchSpec

# --- command line --------------------------------------------------------------------------------


def command(args: argparse.Namespace) -> int:
    """`symattn bench` (its arguments: `symattn.cli`)."""
    overhead_spec = None
    if args.overhead:
        from symattn.bench.cell_overhead import check
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
    from symattn.bench import cell_overhead

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
