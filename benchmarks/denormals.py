"""Denormal floats and the pairwise step: how much flushing them to zero gives, and in which threads.

Pairwise attention with S ~ N(0, 1) drives attention logits apart as training goes on; softmax then
produces probabilities (and gradients) in the denormal range (|x| < 1.2e-38), which x86 cores process
far slower. Here the query weights are scaled up to put the model in that state at once, and training
steps are timed (process CPU time) with denormals kept, flushed in the calling thread only
(`torch.set_flush_denormal(True)`), and flushed in every thread (`symattn.run.speed.set_flush_denormal`).

    python benchmarks/denormals.py --threads 2 --scale 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from symattn.bench.batches import synthetic_batch
from symattn.bench.race import make_step
from symattn.bench.spec import BenchSpec
from symattn.model.bert import BertForMaskedLM
from symattn.run.speed import denormals_flushed, set_flush_denormal


def fraction_denormal(model, batch) -> float:
    """Share of attention probabilities in the denormal range, first layer, eval mode."""
    att = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        x = model.bert.embeddings(batch["input_ids"], None)
        q, k, v = att.query_key_value(x)
        probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    tiny = (probs != 0) & (probs.abs() < torch.finfo(torch.float32).tiny)
    return tiny.float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="mini")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--scale", type=float, default=30.0, help="factor on the query weights")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = BenchSpec(size=args.size, batch=args.batch, seq_len=args.seq_len)
    model = BertForMaskedLM(spec.model_config("pairwise"))
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(args.scale)
    batch = synthetic_batch(args.batch, args.seq_len, spec.vocab)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the model stays in that state
    step = make_step(model, opt, batch, "fp32", torch.device("cpu"))
    print(
        f"threads {args.threads}; denormal share of layer-0 probabilities: {fraction_denormal(model, batch):.2%}"
    )

    def kept():
        torch.set_flush_denormal(False)
        set_flush_denormal(False)

    def main_thread_only():
        set_flush_denormal(False)
        torch.set_flush_denormal(True)

    def all_threads():
        set_flush_denormal(True)

    modes = {
        "denormals kept": kept,
        "torch.set_flush_denormal only": main_thread_only,
        "flushed in every thread": all_threads,
    }
    times = {m: [] for m in modes}
    step()
    for _ in range(args.rounds):
        for name, setup in modes.items():
            setup()
            step()  # untimed: settle
            for _ in range(args.steps):
                t = time.process_time()
                step()
                times[name].append(time.process_time() - t)
    set_flush_denormal(False)
    base = statistics.median(times["denormals kept"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:32s} {med * 1e3:8.0f} ms CPU per step  ({base / med:.2f}x)")
    print(f"(all threads flushed at exit: {denormals_flushed()})")


if __name__ == "__main__":
    main()
