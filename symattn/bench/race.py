"""The timing of `symattn bench`: one full training step per model and precision (forward, loss,
backward, grad-norm clip, AdamW), warmed up, then timed in interleaved rounds that rotate the
models' order and re-measure the matmul peak each round, so that ratios to HF hold on a machine
whose speed drifts; `run_bench` turns the times into one row per phase, model and precision."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Optional

import torch
from torch import nn

from symattn.bench.batches import phase_batch
from symattn.bench.models import Contender, contenders
from symattn.bench.spec import PRECISIONS, BenchSpec
from symattn.run.speed import apply_speed_settings, matmul_peak, peak_step_memory, spread, synchronize


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


def run_bench(
    spec: BenchSpec, extra: Optional[list[Contender]] = None, log: Callable[[str], None] = print
) -> list[dict]:
    """Measure; returns one row (a dict over `report.COLUMNS`) per phase, model and precision."""
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
