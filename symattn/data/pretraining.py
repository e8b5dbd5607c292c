"""Pre-training data: corpus -> document split -> tokenizer -> packed blocks, cached.

A cache entry holds each split's blocks as token shards (`train/`, `val/`; `symattn.data.store`,
opened memory-mapped), the tokenizer (`tokenizer.json`), the training split's token counts and
`meta.json`. It is named by its fingerprint: a hash of the tokenizer and of every token of both
splits. `index/<key>.json` maps the hash of the settings that produced it to that fingerprint, so a
second run with the same settings opens it without rebuilding. The build streams
(`symattn.data.build`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from tokenizers import Tokenizer

from symattn.data.build import build_entry, finish_build, open_blocks
from symattn.data.cache import (
    build_lock,
    cache_path,
    leave_as_found,
    sha256_file,
    stable_hash,
    write_json_atomic,
)
from symattn.data.checks import check_data
from symattn.data.config import BERT_UNCASED, WORDPIECE, DataConfig, PathSource
from symattn.data.errors import DataError
from symattn.data.floor import FLOOR_KEYS, data_floor, evaluated_floor, target_counts, token_counts
from symattn.data.sources import describe, fixed_identity, source_identity
from symattn.data.store import BlockStore, blocks_hash
from symattn.data.tokenizer import SpecialIds, check_vocab_size, vocab_digest
from symattn.tokens import IGNORE_INDEX

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PretrainingData:
    """Packed MLM blocks of both splits and the tokenizer that made them."""

    train: BlockStore  # [N_train, seq_len] int32 blocks, read from memory-mapped shards
    val: BlockStore
    tokenizer: Tokenizer
    special_ids: SpecialIds
    fingerprint: str
    path: Path
    stats: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def seq_len(self) -> int:
        return int(self.train.shape[1])

    @property
    def floor(self) -> dict:
        """The data's context-free floor (`symattn.data.floor`): `context_free_loss` (L*) and
        `unigram_entropy`, in nats."""
        return {key: self.stats[key] for key in FLOOR_KEYS}

    def evaluated_floor(self, batches) -> float:
        """The context-free loss of the targets of these (validation) batches, in nats."""
        labels = np.concatenate([b["labels"].numpy().ravel() for b in batches])
        shown = np.concatenate([b["input_ids"].numpy().ravel() for b in batches])
        chosen = labels != IGNORE_INDEX
        counts_file = self.path / "train_counts.npy"
        if counts_file.exists():
            counts = target_counts(np.load(counts_file), self.special_ids.all)
        else:  # an entry built before the counts were kept
            counts = token_counts(np.asarray(self.train), self.vocab_size, self.special_ids.all)
        return evaluated_floor(
            labels[chosen], shown[chosen], counts, self.special_ids.all, self.special_ids.mask
        )

    def check_model(self, vocab_size: int, max_positions: int) -> None:
        """Refuse a model whose vocabulary or positions do not fit this data."""
        check_vocab_size(self.tokenizer, vocab_size)
        if self.seq_len > max_positions:
            raise DataError(
                f"data.seq_len {self.seq_len} exceeds the model's {max_positions} positions; "
                f"lower data.seq_len or raise model.max_positions"
            )


def _settings_key(cfg: DataConfig, identity: str, tok_spec: dict) -> str:
    """The name of the index entry of these settings: what the blocks depend on."""
    return stable_hash(
        {
            "format": FORMAT_VERSION,
            "corpus": identity,
            "tokenizer": tok_spec,
            "seq_len": cfg.seq_len,
            "val_docs": cfg.val_docs,
        }
    )[:32]


def prepare_pretraining(cfg: DataConfig) -> PretrainingData:
    """Open the cached blocks for `cfg`, building them first if needed. Settings that cannot build
    are refused before the cache is created or locked (`checks`); a build that fails all the same
    (too few documents or tokens) leaves the cache as it was."""
    check_data(cfg)
    cache = cache_path(cfg.cache_dir)
    tok_spec = _tokenizer_spec(cfg)
    with leave_as_found(cache):
        # Pinned wheels and hub commits are known by name; local text is hashed in a stream.
        key = _settings_key(cfg, "+".join(source_identity(s) for s in cfg.source), tok_spec)
        found = _lookup(cache, key)
        if found is not None:
            return found
        with build_lock(cache, key):
            found = _lookup(cache, key)  # another process may have built it while we waited
            if found is not None:
                return found
            sources = " + ".join(describe(s) for s in cfg.source)
            t0 = _stage(
                f"building the data for {sources} ({cfg.tokenizer}, seq_len {cfg.seq_len}) in {cache}"
            )
            built = build_entry(cfg, cache, key, _stage, _settings(cfg))
            fingerprint = _settle(built, cache, t0)
            write_json_atomic(
                cache / "index" / f"{key}.json", {"fingerprint": fingerprint, "settings": _settings(cfg)}
            )
            finish_build(built.parent)
    return load_prepared(fingerprint, cache)


def _settle(built: Path, cache: Path, t0: float) -> str:
    """Name a built entry by its fingerprint and move it into `pretrain/` (an entry with the same
    tokens already there is kept)."""
    meta = json.loads((built / "meta.json").read_text())
    tokenizer = Tokenizer.from_file(str(built / "tokenizer.json"))
    fingerprint = _fingerprint(tokenizer, *open_blocks(built, meta))
    meta.update({"format": FORMAT_VERSION, "fingerprint": fingerprint})
    (built / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    entry = _entry_dir(cache, fingerprint)
    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(built, entry)
    except OSError:
        if not entry.is_dir():
            raise
    _stage(
        f"entry {fingerprint[:12]}: {meta['train_blocks']:,} train / {meta['val_blocks']:,} val blocks "
        f"of {meta['seq_len']} tokens, built",
        t0,
    )
    return fingerprint


def built_meta(cfg: DataConfig, read_local: bool = True) -> Optional[dict]:
    """The `meta.json` of the cache entry of these settings if it is built, else None; nothing is
    fetched, built or created. Local text is read to find its entry (`read_local`); a hub dataset
    only at a pinned commit (`sources.fixed_identity`), since reading it would mean fetching it."""
    cache = cache_path(cfg.cache_dir)
    if not (cache / "index").is_dir():
        return None
    identities = []
    for source in cfg.source:
        identity = fixed_identity(source)
        if identity is None and isinstance(source, PathSource) and read_local:
            try:
                identity = source_identity(source)
            except DataError:
                return None
        if identity is None:
            return None
        identities.append(identity)
    try:
        key = _settings_key(cfg, "+".join(identities), _tokenizer_spec(cfg))
        pointer = json.loads((cache / "index" / f"{key}.json").read_text())
        meta = json.loads((_entry_dir(cache, pointer["fingerprint"]) / "meta.json").read_text())
    except (OSError, ValueError, KeyError, DataError):
        return None
    return meta if meta.get("fingerprint") == pointer["fingerprint"] else None


def load_prepared(
    fingerprint: str, cache_dir: Union[str, Path, None] = None, verify: bool = False
) -> PretrainingData:
    """The cache entry with this fingerprint (as recorded by a run); `verify` re-hashes every token."""
    cache = cache_path(cache_dir)
    entry = _entry_dir(cache, fingerprint)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        train, val = open_blocks(entry, meta)
        tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"no usable data cache entry {fingerprint[:12]} in {cache} ({type(exc).__name__}); "
            "prepare it again with the run's data settings"
        ) from None
    if (
        meta.get("fingerprint") != fingerprint
        or train.shape[0] != meta["train_blocks"]
        or val.shape[0] != meta["val_blocks"]
    ):
        raise DataError(
            f"data cache entry {entry} does not match its meta.json; delete the folder to rebuild it"
        )
    if verify:
        got = _fingerprint(tokenizer, train, val)
        if got != fingerprint:
            raise DataError(
                f"data cache entry {entry} is corrupt (tokens hash to {got[:12]}); delete the folder to rebuild it"
            )
    special = SpecialIds.of(tokenizer)
    if not all(key in meta for key in FLOOR_KEYS):  # an entry built before the floor was recorded
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        meta.update(data_floor(np.asarray(train), np.asarray(val), vocab, special.all))
    return PretrainingData(train, val, tokenizer, special, fingerprint, entry, meta)


# --- internals ---------------------------------------------------------------------------------


def _tokenizer_spec(cfg: DataConfig) -> dict:
    if cfg.tokenizer == WORDPIECE:
        return {
            "kind": WORDPIECE,
            "vocab_size": cfg.resolved_vocab_size,
            "min_frequency": cfg.min_frequency,
            "v": 1,
        }
    if cfg.tokenizer == BERT_UNCASED:
        return {"kind": BERT_UNCASED}
    path = Path(cfg.tokenizer).expanduser()
    if not path.is_file():
        raise DataError(f"tokenizer file {path} does not exist; give a tokenizer.json or vocab.txt path")
    return {"kind": "file", "sha256": sha256_file(path)}


def _settings(cfg: DataConfig) -> dict:
    return {
        "source": [describe(s) for s in cfg.source],
        "tokenizer": cfg.tokenizer,
        "vocab_size": cfg.resolved_vocab_size,
        "min_frequency": cfg.min_frequency,
        "seq_len": cfg.seq_len,
        "val_docs": cfg.val_docs,
    }


def _entry_dir(cache: Path, fingerprint: str) -> Path:
    return cache / "pretrain" / fingerprint[:24]


def _lookup(cache: Path, key: str) -> Optional[PretrainingData]:
    pointer = cache / "index" / f"{key}.json"
    if not pointer.exists():
        return None
    try:
        fingerprint = json.loads(pointer.read_text())["fingerprint"]
        return load_prepared(fingerprint, cache)
    except (DataError, ValueError, KeyError):
        log.warning("data cache index %s points to a missing or broken entry; rebuilding", pointer.name)
        return None


def _fingerprint(tokenizer: Tokenizer, train: BlockStore, val: BlockStore) -> str:
    h = hashlib.sha256(f"symattn-blocks-v{FORMAT_VERSION}".encode())
    h.update(vocab_digest(tokenizer).encode())
    for blocks in (train, val):
        blocks_hash(h, blocks)
    return h.hexdigest()


def _stage(what: str, since: Optional[float] = None) -> float:
    """One line on stderr per stage of a cache build: what was done and, from `since`, how long it
    took (a cache hit prints nothing). Returns the time, for the next stage."""
    took = "" if since is None else f" in {time.perf_counter() - since:.1f}s"
    print(f"{time.strftime('%H:%M:%S')} data: {what}{took}", file=sys.stderr, flush=True)
    return time.perf_counter()
