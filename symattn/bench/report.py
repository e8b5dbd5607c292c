"""The output of `symattn bench`: the CSV's columns (one row per phase, model and precision), the
Markdown table printed per step, the CSV writer (also used for the sweep cells' overhead rows) and
the one-line description of the machine."""

from __future__ import annotations

import csv
import math
import platform
from pathlib import Path

import torch

from symattn.markdown import markdown_table

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
