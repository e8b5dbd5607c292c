"""Steps of the paper-small cell, for each attention variant, from the streaming token store: a real
`symattn` pre-training run each (Lightning Trainer, MLflow on a sqlite file in OUT), timed as the run
logs it. Prints and writes (OUT/train_slice.csv) tokens per second (the median of the run's
`train/tokens_per_s` windows, the first left out as warm-up), MFU against the device's bf16 peak,
and peak accelerator memory. Part of `benchmarks/gpu_slice.sh`; `--tiny` runs it at tiny size on
the CPU.

    python benchmarks/train_slice.py --out OUT [--slice DIR] [--steps 1000] [--tiny]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch

# Dense bf16 peaks of the data sheets, FLOP/s: MFU's yardstick where the GPU is known.
BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
VARIANTS = ("vanilla", "symmetric", "pairwise")


def device_peak(device: str) -> tuple[float, str]:
    """The bf16 peak of this GPU from its data sheet, else the measured matmul peak (fp32 on a CPU)."""
    from symattn.run.speed import matmul_peak

    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peak in BF16_PEAKS.items():
            if key in name:
                return peak, f"{name} bf16 data sheet"
        return matmul_peak(torch.bfloat16, "cuda"), f"{name} measured bf16 matmul"
    return matmul_peak(torch.float32, "cpu"), "CPU measured fp32 matmul"


def cell_config(variant: str, args: argparse.Namespace, out: Path):
    """The paper-small spec's seed-1 cell of `variant`, shortened to `args.steps` steps of one
    micro-batch, on the slice's store (or the offline `pypi-news`), tracked in OUT."""
    from symattn.sweep.design import expand
    from symattn.sweep.dry_run import slice_data
    from symattn.sweep.spec import load_spec

    overrides = [
        f"optim.max_steps={args.steps}",
        "optim.accumulate=1",
        f"optim.batch_size={args.batch}",
        f"eval.every_n_steps={args.steps}",
        "eval.batches=2",
        "eval.diagnostics=false",
        "checkpoint.keep=[]",
        "checkpoint.log_model=false",
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
        "tracking.experiment=gpu-slice",
        "tracking.system_metrics=false",
        f"checkpoint.dir={out / 'checkpoints'}",
        "speed.progress_bar=false",
        f"speed.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "speed.precision=" + ("bf16-mixed" if args.device == "cuda" else "'32'"),
        "tracking.log_every_n_steps=" + str(max(1, args.steps // 20)),
    ]
    if args.tiny:
        overrides += [
            "model.size=tiny",
            f"data.seq_len={args.seq_len}",
            "data.val_docs=20",
            "optim.warmup_steps=2",
        ]
    if not args.slice:
        overrides.append("data.source=pypi-news")
    spec = load_spec("experiments/paper-small.yaml", overrides)
    cell = next(c for c in expand(spec) if c.config.seed == 1 and c.config.model.attention.variant == variant)
    cfg = cell.config
    return cfg.model_copy(update={"data": slice_data(cfg.data, args.slice)}) if args.slice else cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--slice", type=Path, help="a folder of Parquet files in FineWeb-Edu's format (default: pypi-news)"
    )
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--tiny", action="store_true", help="tiny model, short blocks, on the CPU")
    args = ap.parse_args()
    args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    from mlflow.tracking import MlflowClient

    from symattn.model.bert import flops_per_token
    from symattn.run.pretrain import pretrain

    peak, peak_source = device_peak(args.device)
    rows = []
    for variant in VARIANTS:
        cfg = cell_config(variant, args, args.out.resolve())
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = pretrain(cfg)
        client = MlflowClient(cfg.tracking.uri)
        history = [m.value for m in client.get_metric_history(result["run_id"], "train/tokens_per_s")]
        tokens_per_s = statistics.median(history[1:] or history)
        model_cfg = cfg.model.model_copy(update={"vocab_size": 30522})  # the spec's BERT vocabulary
        flops = flops_per_token(model_cfg, cfg.data.seq_len, cfg.data.mlm_probability)
        rows.append(
            {
                "variant": variant,
                "size": cfg.model.size,
                "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                "precision": cfg.speed.precision,
                "batch": cfg.optim.batch_size,
                "seq_len": cfg.data.seq_len,
                "steps": result["steps"],
                "tokens_per_s": round(tokens_per_s),
                "mfu": round(tokens_per_s * flops / peak, 4),
                "peak": f"{peak:.3g} ({peak_source})",
                "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
                if args.device == "cuda"
                else "",
                "run_id": result["run_id"],
            }
        )
        print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    with open(args.out / "train_slice.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
