"""The token store of a cache entry: each split's packed blocks as shards on disk, read back
memory-mapped.

A split is a folder of `00000.npy`, `00001.npy`, ...: [rows, seq_len] arrays of uint16 where the
vocabulary fits (bert-base-uncased's 30,522 does), else uint32. Every shard but the last holds
`rows_per_shard` blocks, so block `i` is row `i % rows_per_shard` of shard `i // rows_per_shard`.
Entries built before the store was sharded hold one `<split>.npy` of int32; `BlockStore` reads both.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from symattn.data.mapped import EVERY_BATCHES, release_mapped

SHARD_BYTES = 128 << 20  # about 128 MB a shard: few files, each a cheap memory map


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def rows_per_shard(seq_len: int, dtype: np.dtype) -> int:
    return max(1, SHARD_BYTES // (seq_len * np.dtype(dtype).itemsize))


class BlockStore:
    """The blocks of one split as an [N, seq_len] int32 array: `len`, `shape`, integer, slice and
    index-array reads (`store[rows]`), and `np.asarray(store)`. Shards open memory-mapped on first
    read; a pickled store carries paths only, so DataLoader workers map the files themselves."""

    def __init__(self, shards: Sequence[Path], rows_per_shard: int):
        self.paths = [Path(p) for p in shards]
        self.rows_per_shard = int(rows_per_shard)
        self._maps: Optional[list[np.ndarray]] = None
        heads = [np.load(p, mmap_mode="r") for p in self.paths]
        if (
            not heads
            or any(len(h) != self.rows_per_shard for h in heads[:-1])
            or len(heads[-1]) > self.rows_per_shard
        ):
            raise ValueError(f"shards of {len(heads)} files do not hold {self.rows_per_shard} rows each")
        self.seq_len = int(heads[0].shape[1])
        self.stored_dtype = heads[0].dtype
        self._rows = (len(heads) - 1) * self.rows_per_shard + len(heads[-1])
        self._maps = heads

    @classmethod
    def open(cls, folder: Path, rows_per_shard: int) -> "BlockStore":
        return cls(sorted(Path(folder).glob("[0-9]*.npy")), rows_per_shard)

    @classmethod
    def single(cls, path: Path) -> "BlockStore":
        """An entry's split stored as one array (the format before shards)."""
        return cls([path], len(np.load(path, mmap_mode="r")))

    @property
    def shape(self) -> tuple[int, int]:
        return (self._rows, self.seq_len)

    dtype = np.dtype(np.int32)

    def __len__(self) -> int:
        return self._rows

    def _shards(self) -> list[np.ndarray]:
        if self._maps is None:
            self._maps = [np.load(p, mmap_mode="r") for p in self.paths]
        return self._maps

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # store[rows, cols]
            return self[key[0]][(slice(None), *key[1:])] if not np.isscalar(key[0]) else self[key[0]][key[1:]]
        if isinstance(key, slice):
            return self.rows(np.arange(*key.indices(self._rows)))
        if np.isscalar(key):
            i = int(key) + (self._rows if int(key) < 0 else 0)
            if not 0 <= i < self._rows:
                raise IndexError(key)
            q, r = divmod(i, self.rows_per_shard)
            return np.asarray(self._shards()[q][r], dtype=np.int32)
        return self.rows(np.asarray(key, dtype=np.int64))

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Blocks `index` as int32 [len(index), seq_len], read shard by shard in file order."""
        out = np.empty((len(index), self.seq_len), dtype=np.int32)
        if len(index) and (index.min() < 0 or index.max() >= self._rows):
            raise IndexError(f"block index out of range [0, {self._rows})")
        shard, row = np.divmod(index, self.rows_per_shard)
        maps = self._shards()
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = maps[s][row[sel]]
        return out

    def chunks(self, rows: int = 1 << 14) -> Iterable[np.ndarray]:
        """The blocks in order, a bounded number at a time (int32)."""
        for start in range(0, self._rows, rows):
            yield self[start : min(start + rows, self._rows)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate([np.asarray(m, dtype=np.int32) for m in self._shards()])
        return out if dtype is None else out.astype(dtype)

    def max(self) -> int:
        return max(int(m.max()) for m in self._shards())

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}


class ShardWriter:
    """Blocks appended in order, written as shards of `rows_per_shard` rows (each to a temporary
    name, then renamed), with the token counts and the fingerprint hash fed as they pass."""

    def __init__(self, folder: Path, seq_len: int, dtype: np.dtype, vocab_size: int):
        self.folder, self.seq_len, self.dtype = Path(folder), seq_len, np.dtype(dtype)
        self.rows_per_shard = rows_per_shard(seq_len, self.dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.counts = np.zeros(vocab_size, dtype=np.int64)
        self.blocks = 0
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._shard = 0

    def add(self, blocks: np.ndarray) -> None:
        if not len(blocks):
            return
        self.counts += np.bincount(blocks.ravel(), minlength=len(self.counts))[: len(self.counts)]
        self.blocks += len(blocks)
        self._pending.append(blocks.astype(self.dtype, copy=False))
        self._pending_rows += len(blocks)
        while self._pending_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def close(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)

    def _flush(self, rows: int) -> None:
        whole = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        head, rest = whole[:rows], whole[rows:]
        path = self.folder / f"{self._shard:05d}.npy"
        tmp = path.with_name(f".tmp-{path.name}")
        with open(tmp, "wb") as f:
            np.save(f, head)
        os.replace(tmp, path)
        self._shard += 1
        self._pending = [rest] if len(rest) else []
        self._pending_rows = len(rest)


def blocks_hash(h: "hashlib._Hash", store: BlockStore) -> None:
    """Feed a split into a fingerprint hash as its [N, seq_len] shape and little-endian int32
    tokens (the definition every entry's fingerprint has used), a chunk at a time."""
    h.update(np.asarray(store.shape, dtype=np.int64).tobytes())
    for i, chunk in enumerate(store.chunks(), 1):
        h.update(np.ascontiguousarray(chunk, dtype="<i4").tobytes())
        if i % EVERY_BATCHES == 0:
            release_mapped(".npy")  # the shards hashed so far
