"""The streaming build of a pre-training cache entry, in stages whose outputs stay on disk.

    documents  sources read in a stream, cleaned, deduplicated by sha256 -> documents.arrow
    split      validation = the documents with the smallest hashes (a 16-byte prefix each in memory)
    tokenizer  WordPiece trained from a stream of the training documents, or a fixed vocabulary
    tokens     each split tokenised by Hugging Face `datasets` (`map`, `num_proc` processes, order
               kept) into Arrow shards of little-endian uint16/uint32 ids
    blocks     one pass packs the ids into `[CLS] ... [SEP]` blocks, written as token shards
               (`symattn.data.store`), counting tokens for the context-free floor as they pass

Memory grows with the corpus only by what deduplication and the split keep: a 16-byte digest prefix
a document (in a Python set, about 90 bytes). Pages of the Arrow files read are let go as the passes
go (`symattn.data.mapped`). The stages run in `build/<settings key>/` under the cache's build lock: a build that is
killed resumes at the stage it was in (tokenising, at the shard of the process it was in), and a
refused one (`DataError`) removes its folder. Blocks and their order are those of one in-memory
pass (doc [SEP] doc [SEP] ..., cut into blocks), whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from symattn.data.config import BERT_UNCASED, WORDPIECE, DataConfig
from symattn.data.errors import DataError
from symattn.data.floor import floor_from_counts
from symattn.data.mapped import EVERY_BATCHES, release_mapped
from symattn.data.packing import join_documents, pack_blocks
from symattn.data.sources import (
    DOCS_PER_PROCESS,
    corpus_documents,
    data_processes,
    no_documents,
    quiet_datasets,
)
from symattn.data.split import check_split, validation_rows
from symattn.data.store import BlockStore, ShardWriter, token_dtype
from symattn.data.tokenizer import SpecialIds, bert_uncased, load_tokenizer_file, train_wordpiece_batches

_BATCH = 4096


def build_processes(documents: int) -> int:
    """Tokenising processes: `$SYMATTN_DATA_PROCS`, else one a core, and none idle for small corpora."""
    return max(1, min(data_processes(), documents // DOCS_PER_PROCESS))


def build_entry(cfg: DataConfig, cache: Path, key: str, stage: Callable, settings: dict) -> Path:
    """Build the entry of these settings in `build/<key>/` and return the finished entry folder
    (`entry/`, not yet named by its fingerprint). `stage(what, since)` reports progress."""
    work = cache / "build" / key
    try:
        return _build(cfg, cache, work, stage, settings)
    except DataError:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _build(cfg: DataConfig, cache: Path, work: Path, stage: Callable, settings: dict) -> Path:
    import datasets

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    docs_path, stats = _documents(cfg, cache, work)
    docs = datasets.Dataset.from_file(str(docs_path))
    t = stage(f"read {stats['documents']:,} documents (cleaned, without duplicates)", t0)
    val_rows = validation_rows(_digests(docs), check_split(len(docs), cfg.val_docs))
    is_val = np.zeros(len(docs), dtype=bool)
    is_val[val_rows] = True
    train_rows = np.flatnonzero(~is_val)

    tokenizer, what = _tokenizer(cfg, cache, work, lambda: _texts(docs, ~is_val), len(train_rows))
    t1 = stage(what, t)
    special = SpecialIds.of(tokenizer)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab)
    procs = build_processes(len(train_rows))
    entry = work / "entry"
    shutil.rmtree(entry, ignore_errors=True)  # packing is one cheap pass: redone whole
    meta = {"settings": settings, "corpus": stats, "vocab_size": vocab, "seq_len": cfg.seq_len}
    counts, since = {}, t1
    for name, rows in (("train", train_rows), ("val", val_rows)):
        ids = _tokenise(docs.select(rows), tokenizer, dtype, work / f"tokens-{name}.arrow", procs)
        writer = ShardWriter(entry / name, cfg.seq_len, dtype, vocab)
        tokens, unk, dropped = _pack(ids, writer, cfg.seq_len, special, dtype)
        if writer.blocks == 0:
            what = "training" if name == "train" else "validation"
            fix = "add text or lower seq_len" if name == "train" else "raise val_docs or lower seq_len"
            raise DataError(
                f"the {what} split has {tokens} tokens, fewer than one block of seq_len {cfg.seq_len}; {fix}"
            )
        counts[name] = writer.counts
        meta.update(
            {
                f"{name}_docs": len(rows),
                f"{name}_tokens": tokens,
                f"{name}_blocks": writer.blocks,
                f"{name}_tail_dropped": dropped,
                f"{name}_unk_fraction": round(unk / max(tokens, 1), 6),
            }
        )
        since = stage(f"tokenised and packed {name}: {tokens:,} tokens into {writer.blocks:,} blocks", since)
    _warn_if_lopsided(
        meta["val_tokens"], meta["train_tokens"] + meta["val_tokens"], len(val_rows), len(docs), stage
    )
    t2 = time.perf_counter()
    floor = floor_from_counts(counts["train"], counts["val"], special.all)
    stage(f"context-free floor L* = {floor['context_free_loss']:.3f} nats", t2)
    np.save(entry / "train_counts.npy", counts["train"])
    (entry / "tokenizer.json").write_text(tokenizer.to_str(pretty=False))
    meta.update(
        {
            "special_ids": special.as_dict(),
            "store": {"dtype": dtype.name, "rows_per_shard": writer.rows_per_shard, "processes": procs},
            "tokenize_seconds": round(time.perf_counter() - t1, 3),
            "tokenizer_seconds": round(t1 - t, 3),
            **floor,
        }
    )
    (entry / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return entry


def finish_build(work: Path) -> None:
    """Remove a build's folder once its entry is in place."""
    shutil.rmtree(work, ignore_errors=True)


# --- stages -------------------------------------------------------------------------------------


def _documents(cfg: DataConfig, cache: Path, work: Path) -> tuple[Path, dict]:
    """The corpus's cleaned, distinct documents and their sha256 prefixes as an Arrow file, written
    in a stream (kept from an earlier, killed build of the same settings)."""
    import pyarrow as pa

    path, stats_path = work / "documents.arrow", work / "documents.json"
    if path.exists():
        return path, json.loads(stats_path.read_text())
    schema = pa.schema([("text", pa.large_string()), ("digest", pa.binary(16))])
    tmp, stats = work / ".tmp-documents.arrow", {}
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        texts, digests = [], []
        for doc, digest in corpus_documents(cfg.source, cache, stats, data_processes()):
            texts.append(doc)
            digests.append(digest[:16])
            if len(texts) == _BATCH:
                writer.write_batch(pa.record_batch([texts, digests], schema=schema))
                texts, digests = [], []
        if texts:
            writer.write_batch(pa.record_batch([texts, digests], schema=schema))
    if not stats.get("documents"):
        tmp.unlink()
        raise DataError(no_documents(cfg.source))
    stats_path.write_text(json.dumps(stats, sort_keys=True))
    os.replace(tmp, path)
    return path, stats


def _digests(docs) -> np.ndarray:
    """The 16-byte sha256 prefixes of the documents, as one `S16` array."""
    column = docs.data.column("digest")
    return np.concatenate(
        [np.frombuffer(c.buffers()[1], dtype="S16")[c.offset : c.offset + len(c)] for c in column.chunks]
    )


def _texts(docs, keep: np.ndarray) -> Iterator[list[str]]:
    """The kept documents' texts in order, a batch at a time."""
    for i, start in enumerate(range(0, len(docs), _BATCH), 1):
        batch = docs.data.slice(start, _BATCH).column("text").to_pylist()
        mask = keep[start : start + len(batch)]
        yield [text for text, k in zip(batch, mask) if k]
        if i % EVERY_BATCHES == 0:
            release_mapped()


def _tokenizer(cfg: DataConfig, cache: Path, work: Path, train_texts: Callable, n_train: int):
    from tokenizers import Tokenizer

    path = work / "tokenizer.json"
    if path.exists():
        return Tokenizer.from_file(str(path)), "the tokenizer of the interrupted build"
    if cfg.tokenizer == WORDPIECE:
        tokenizer = train_wordpiece_batches(train_texts, cfg.resolved_vocab_size, cfg.min_frequency)
        what = f"trained a WordPiece vocabulary of {tokenizer.get_vocab_size():,} on {n_train:,} documents"
    elif cfg.tokenizer == BERT_UNCASED:
        tokenizer, what = bert_uncased(cache), "loaded BERT's uncased vocabulary"
    else:
        tokenizer, what = load_tokenizer_file(cfg.tokenizer), f"loaded the tokenizer {cfg.tokenizer}"
    tmp = path.with_name(".tmp-tokenizer.json")
    tmp.write_text(tokenizer.to_str(pretty=False))
    os.replace(tmp, path)
    return tokenizer, what


_ENCODERS: dict = {}


def encode_ids(texts: list[str], tokenizer_json: str, dtype: str) -> dict:
    """`datasets.map` function: each text's ids (no special tokens) as little-endian bytes."""
    from tokenizers import Tokenizer

    tok = _ENCODERS.get(tokenizer_json)
    if tok is None:
        _ENCODERS.clear()
        tok = _ENCODERS[tokenizer_json] = Tokenizer.from_str(tokenizer_json)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    kind = np.dtype(dtype).newbyteorder("<")
    release_mapped()  # the documents read so far (texts holds this batch's own copy)
    return {"ids": [np.asarray(e.ids, dtype=kind).tobytes() for e in encode(texts, add_special_tokens=False)]}


def _tokenise(docs, tokenizer, dtype: np.dtype, cache_file: Path, procs: int):
    """The documents' ids through `datasets.map` in `procs` processes; each process's Arrow shard
    is kept once written, so a killed build tokenises only what was left."""
    import datasets

    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    if procs > 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread a process
    try:
        with quiet_datasets():
            return docs.map(
                encode_ids,
                batched=True,
                batch_size=1000,
                input_columns="text",
                remove_columns=docs.column_names,
                fn_kwargs={"tokenizer_json": tokenizer.to_str(), "dtype": dtype.name},
                features=datasets.Features({"ids": datasets.Value("binary")}),
                num_proc=procs if procs > 1 else None,
                cache_file_name=str(cache_file),
                new_fingerprint=cache_file.stem,
            )
    finally:
        if parallelism is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallelism


def _pack(
    ids, writer: ShardWriter, seq_len: int, special: SpecialIds, dtype: np.dtype
) -> tuple[int, int, int]:
    """Pack the documents' ids, in order, as one stream cut into blocks (`symattn.data.packing`),
    a batch of documents at a time; returns the stream's tokens, its [UNK]s and the tail dropped."""
    kind, tail = np.dtype(dtype).newbyteorder("<"), np.empty(0, dtype=np.int32)
    tokens = unk = 0
    for i, table in enumerate(ids.with_format("arrow").iter(batch_size=_BATCH), 1):
        if i % EVERY_BATCHES == 0:
            release_mapped()  # ids packed already
        for chunk in table.column("ids").chunks:
            _, offsets, data = chunk.buffers()
            ends = np.frombuffer(offsets, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
            flat = np.frombuffer(data if data is not None else b"", dtype=np.uint8)[ends[0] : ends[-1]].view(
                kind
            )
            stream = join_documents(flat, np.diff(ends) // kind.itemsize, special.sep)
            tokens += len(stream)
            unk += int((stream == special.unk).sum())
            stream = np.concatenate([tail, stream])
            blocks, dropped = pack_blocks(stream, seq_len, special.cls, special.sep)
            writer.add(blocks)
            tail = stream[len(stream) - dropped :]
    writer.close()
    return tokens, unk, len(tail)


def _warn_if_lopsided(val_tokens: int, tokens: int, val_docs: int, docs: int, stage: Callable) -> None:
    """The split picks documents, not tokens: a few very long documents can make the validation set
    far larger (or smaller) than `val_docs` suggests. Said when it holds over twice its share."""
    share, doc_share = val_tokens / max(tokens, 1), val_docs / docs
    if share > 2 * doc_share:
        stage(
            f"warning: the validation split holds {share:.0%} of the tokens with {val_docs:,} of "
            f"{docs:,} documents ({doc_share:.0%}); a few long documents dominate it: split them into "
            "smaller files or lower val_docs"
        )


def open_blocks(entry: Path, meta: dict) -> tuple[BlockStore, BlockStore]:
    """An entry's train and validation blocks: token shards, or one int32 array a split (older
    entries)."""
    with contextlib.suppress(KeyError):
        rows = meta["store"]["rows_per_shard"]
        return BlockStore.open(entry / "train", rows), BlockStore.open(entry / "val", rows)
    return BlockStore.single(entry / "train.npy"), BlockStore.single(entry / "val.npy")
