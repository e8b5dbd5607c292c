"""Does the training data loader keep up at the paper's shape? Batches of 64 blocks of 512 tokens
from the streaming store (read memory-mapped, masked by (seed, sample) as in training), against one
training step of the paper's small model (4 layers, 512 hidden, 8 heads, BERT's vocabulary) at the
same batch, fp32, on this CPU. The two run interleaved, round by round, so that both are measured
at the same machine speed.

    python benchmarks/loader.py --rounds 3 --csv benchmarks/results/loader.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from symattn.bench.race import make_step
from symattn.data import DataConfig, PretrainingBatches, prepare_pretraining
from symattn.model.bert import BertForMaskedLM
from symattn.model.config import ModelConfig

BATCH, SEQ_LEN = 64, 512


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=20, help="loader batches timed per round")
    ap.add_argument("--variant", default="symmetric")
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args()
    cfg = DataConfig(source="pypi-news", tokenizer="bert-base-uncased", seq_len=SEQ_LEN, val_docs=100)
    data = prepare_pretraining(cfg)
    batches = PretrainingBatches.from_config(data, cfg, BATCH)
    model = BertForMaskedLM(
        ModelConfig.model_validate(
            {"size": "small", "vocab_size": data.vocab_size, "attention": {"variant": args.variant}}
        ),
        seed=0,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)
    step = make_step(model, opt, batches.batch(0), "fp32", torch.device("cpu"))
    step()  # warm-up
    loader_s, step_s, at = [], [], 1
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            batches.batch(at)
            at += 97  # steps far apart: other blocks, other shards, no warm cache lines
        loader_s.append((time.perf_counter() - t0) / args.batches)
        t0 = time.perf_counter()
        step()
        step_s.append(time.perf_counter() - t0)
    row = {
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "train_blocks": len(data.train),
        "loader_batch_ms": round(1e3 * statistics.median(loader_s), 2),
        "loader_batches_per_s": round(1 / statistics.median(loader_s), 1),
        "small_step_ms": round(1e3 * statistics.median(step_s), 1),
        "step_over_loader": round(statistics.median(step_s) / statistics.median(loader_s), 1),
        "threads": torch.get_num_threads(),
        "variant": args.variant,
    }
    for key, value in row.items():
        print(f"{key:22} {value}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)


if __name__ == "__main__":
    main()
