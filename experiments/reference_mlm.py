"""A minimal MLM pre-training loop beside the suite, to tell the suite's regime from a defect.

Plain PyTorch and Hugging Face `transformers.BertForMaskedLM`: no Lightning, no symattn model,
masking, data order, optimizer set-up or tracking. It reads only the suite's prepared token blocks
(so that both train on the same tokens and share one context-free floor L*), or, with
`--tokenizer-text`, blocks of its own from a tokenizer trained on other text.

Each suite component can be swapped in, one at a time, to find which of them moves the escape:
`--suite-model` (symattn's model and per-name initialisation), `--suite-masks` (the suite's seeded
masks and data order), `--eps`, `--weight-decay-all`, `--dropout`.

    python experiments/reference_mlm.py --vocab 4096 --seq-len 64 --lr 1e-3 --warmup 1000 \\
        --steps 10000 --schedule linear --every 250 --out ref.csv

Prints one line per evaluation (step, validation loss, how far below the context-free loss of its
validation targets it is); `--out` writes them as CSV.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time

import numpy as np
import torch

from symattn.tokens import IGNORE_INDEX


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="pypi-news", help="corpus, as data.source of a run config")
    p.add_argument("--vocab", type=int, default=4096, help="WordPiece vocabulary of the suite's data")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--val-docs", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--schedule", choices=("linear", "constant"), default="linear")
    p.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon (torch's default)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument(
        "--weight-decay-all",
        action="store_true",
        help="decay biases and LayerNorm too (the suite, as BERT, does not)",
    )
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0, help="hidden and attention dropout")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=250, help="evaluate every N steps")
    p.add_argument("--val-blocks", type=int, default=256, help="validation blocks per evaluation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--suite-model", action="store_true", help="symattn's model and initialisation")
    p.add_argument(
        "--suite-masks", action="store_true", help="symattn's seeded masks and data order instead of torch's"
    )
    p.add_argument(
        "--tokenizer-text",
        default=None,
        help="train the tokenizer on this text file instead of the training split",
    )
    p.add_argument("--out", default=None, help="write the evaluations to this CSV file")
    return p.parse_args(argv)


def prepared_blocks(args):
    """(train, val, vocab size, special ids, L*) from the suite's data cache (or own tokenizer)."""
    from symattn.data import DataConfig, prepare_pretraining
    from symattn.data.floor import data_floor

    data = prepare_pretraining(
        DataConfig(source=args.source, vocab_size=args.vocab, seq_len=args.seq_len, val_docs=args.val_docs)
    )
    train, val, vocab, special = (
        np.asarray(data.train),
        np.asarray(data.val),
        data.vocab_size,
        data.special_ids,
    )
    if args.tokenizer_text:
        if args.suite_masks:
            raise SystemExit("--suite-masks reads the suite's own blocks; drop --tokenizer-text")
        train, val, vocab = _retokenize(args, data)
    floor = data_floor(train, val, vocab, special.all)["context_free_loss"]
    return data, train, val, vocab, special, floor


def _retokenize(args, data):
    """The same documents, cut by a WordPiece tokenizer trained on `--tokenizer-text`."""
    from symattn.data import DataConfig
    from symattn.data.cache import resolve_cache_dir
    from symattn.data.packing import pack_blocks, token_stream
    from symattn.data.sources import load_corpus
    from symattn.data.split import split_documents
    from symattn.data.tokenizer import SpecialIds, encode_documents, train_wordpiece

    cfg = DataConfig(source=args.source, vocab_size=args.vocab, seq_len=args.seq_len, val_docs=args.val_docs)
    corpus = load_corpus(cfg.source, resolve_cache_dir(None))
    train_docs, val_docs = split_documents(corpus.documents, cfg.val_docs)
    extra = open(args.tokenizer_text, encoding="utf-8").read().split("\n\n")
    tokenizer = train_wordpiece(train_docs + extra, args.vocab, 2)
    special = SpecialIds.of(tokenizer)
    sep, cls = special.sep, special.cls
    blocks = [
        pack_blocks(token_stream(encode_documents(tokenizer, docs), sep), args.seq_len, cls, sep)[0]
        for docs in (train_docs, val_docs)
    ]
    return blocks[0], blocks[1], tokenizer.get_vocab_size(with_added_tokens=True)


def _evaluated_floor(fixed, train, vocab, special) -> float:
    from symattn.data.floor import evaluated_floor, token_counts

    labels = np.concatenate([b["labels"].numpy().ravel() for b in fixed])
    shown = np.concatenate([b["input_ids"].numpy().ravel() for b in fixed])
    chosen = labels != IGNORE_INDEX
    return evaluated_floor(
        labels[chosen], shown[chosen], token_counts(train, vocab, special.all), special.all, special.mask
    )


def build_model(args, vocab: int):
    if args.suite_model:
        from symattn.model.bert import BertForMaskedLM, ModelConfig

        cfg = ModelConfig(
            size="tiny",
            layers=args.layers,
            hidden=args.hidden,
            heads=args.heads,
            vocab_size=vocab,
            max_positions=max(args.seq_len, 64),
            dropout=args.dropout,
            attention_dropout=args.dropout,
            init_std=args.init_std,
        )
        model = BertForMaskedLM(cfg, seed=args.seed)
        return model, lambda batch: model(**batch).loss
    import transformers

    torch.manual_seed(args.seed)
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(args.seq_len, 64),
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
        initializer_range=args.init_std,
    )
    model = transformers.BertForMaskedLM(cfg)
    return model, lambda batch: model(**batch).loss


def torch_masks(ids: torch.Tensor, special, vocab: int, generator: torch.Generator):
    """HF DataCollatorForLanguageModeling's rule: 15% of non-special tokens; 80% [MASK], 10% a
    random id of the whole vocabulary, 10% unchanged."""
    labels = ids.clone()
    is_special = torch.isin(ids, torch.tensor(special.all))
    chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & ~is_special
    labels[~chosen] = IGNORE_INDEX
    inputs = ids.clone()
    as_mask = chosen & (torch.rand(ids.shape, generator=generator) < 0.8)
    inputs[as_mask] = special.mask
    as_random = chosen & ~as_mask & (torch.rand(ids.shape, generator=generator) < 0.5)
    inputs[as_random] = torch.randint(vocab, ids.shape, generator=generator)[as_random]
    return {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels}


def batches(args, data, train, val, vocab, special):
    """(training batch for a step, fixed validation batches)."""
    if args.suite_masks:
        from symattn.data import PretrainingBatches, val_batches

        suite = PretrainingBatches(data, args.batch, args.seed)
        fixed = val_batches(data, args.batch, args.seed, limit=args.val_blocks)
        return suite.batch, [{k: v for k, v in b.items() if k != "token_type_ids"} for b in fixed]
    else:
        gen = torch.Generator().manual_seed(args.seed)
        order: list[int] = []

        def train_batch(step):
            nonlocal order
            while len(order) < args.batch:
                order += torch.randperm(len(train), generator=gen).tolist()
            take, order = order[: args.batch], order[args.batch :]
            return torch_masks(torch.from_numpy(train[take].astype(np.int64)), special, vocab, gen)

        val_gen = torch.Generator().manual_seed(1234)

        def val_batch(rows):
            return torch_masks(torch.from_numpy(val[rows].astype(np.int64)), special, vocab, val_gen)

    n_val = min(args.val_blocks, len(val))
    fixed = [val_batch(np.arange(i, min(i + args.batch, n_val))) for i in range(0, n_val, args.batch)]
    return train_batch, fixed


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data, train, val, vocab, special, floor = prepared_blocks(args)
    model, loss_of = build_model(args, vocab)
    train_batch, val_fixed = batches(args, data, train, val, vocab, special)
    # The suite measures a run's escape from the context-free loss of its own validation targets.
    floor_all, floor = floor, _evaluated_floor(val_fixed, train, vocab, special)
    no_decay = ("bias", "LayerNorm.weight")
    decay = [p for n, p in model.named_parameters() if args.weight_decay_all or not n.endswith(no_decay)]
    rest = [p for n, p in model.named_parameters() if not (args.weight_decay_all or not n.endswith(no_decay))]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr,
        eps=args.eps,
    )

    def factor(step):
        if step < args.warmup:
            return step / max(1, args.warmup)
        if args.schedule == "constant":
            return 1.0
        return max(0.0, 1.0 - (step - args.warmup) / max(1, args.steps - args.warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    rows, start = [], time.time()
    print(
        f"# L* = {floor_all:.4f} nats, {floor:.4f} on these validation targets, vocabulary {vocab}, "
        f"{len(train)} training blocks",
        flush=True,
    )
    for step in range(1, args.steps + 1):
        model.train()
        loss = loss_of(train_batch(step - 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()
        if not math.isfinite(loss.item()):
            print(f"non-finite loss at step {step}", file=sys.stderr)
            return 1
        if step % args.every == 0:
            model.eval()
            total = count = 0.0
            with torch.no_grad():
                for batch in val_fixed:
                    n = int((batch["labels"] != IGNORE_INDEX).sum())
                    total += float(loss_of(batch)) * n
                    count += n
            value = total / count
            rows.append(
                {
                    "step": step,
                    "val_loss": value,
                    "below_floor": floor - value,
                    "seconds": round(time.time() - start, 1),
                }
            )
            print(f"{step}\t{value:.4f}\t{floor - value:+.3f}\t{time.time() - start:.0f}s", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
