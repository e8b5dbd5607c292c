"""Deterministic MLM batches: order and masks are pure functions of (seed, sample index).

Training sample g (g = step * batch_size + position) is block perm_e[g mod N] of epoch e = g div N,
where perm_e is a seeded permutation; its mask depends on (seed, g) only. So a run resumed at any
step, a run split into micro-batches or across devices (same global batch), and every attention
variant of a matched group see identical inputs and targets. Validation block i has a mask that
depends on i only (`VAL_MASK_SEED`), whatever the batch size or the run's seed.

Random numbers come from a counter-based hash (splitmix64) rather than a stateful generator: no
state to save on resume, and the same numbers on every platform and numpy version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from symattn.data.errors import DataError
from symattn.data.floor import MASK_SHARE, RANDOM_SHARE
from symattn.data.pretraining import PretrainingData
from symattn.data.tokenizer import SpecialIds
from symattn.tokens import IGNORE_INDEX

if TYPE_CHECKING:
    from symattn.data.config import DataConfig

_TRAIN, _VAL, _ORDER = 0x7A1, 0x7A2, 0x7A3  # independent random streams
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_POS = np.uint64(0xD6E8FEB86659FD93)
_RANDOM_END = round(MASK_SHARE + RANDOM_SHARE, 12)  # 0.9 exactly, as the masks were always drawn
# Validation masks do not follow the run's seed: every run of a data set is measured on the same
# targets, so seeds differ in training only (with seed-dependent masks, the context-free loss of
# the evaluated targets moved by up to 0.1 nats from seed to seed).
VAL_MASK_SEED = 0


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (multiplications wrap, as intended)."""
    x = (x ^ (x >> np.uint64(30))) * _C1
    x = (x ^ (x >> np.uint64(27))) * _C2
    return x ^ (x >> np.uint64(31))


def _key(seed: int, stream: int, extra: int = 0) -> np.uint64:
    # One-element arrays, since numpy warns on wrapping scalar arithmetic but not on arrays.
    k = _mix(np.array([seed], dtype=np.uint64))
    k = _mix(k ^ np.array([stream], dtype=np.uint64) * _GOLDEN)
    return _mix(k + np.array([extra], dtype=np.uint64) * _GOLDEN)[0]


def uniforms(seed: int, stream: int, rows: np.ndarray, width: int, draw: int) -> np.ndarray:
    """[len(rows), width] floats in [0, 1), a function of (seed, stream, row, column, draw) only."""
    base = _mix(np.asarray(rows, dtype=np.uint64) * _GOLDEN + _key(seed, stream, draw))
    cols = _mix((np.arange(width, dtype=np.uint64) + np.uint64(1)) * _POS)
    x = _mix(base[:, None] ^ cols[None, :])
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def block_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The seeded permutation of n blocks for one epoch."""
    keys = _mix(np.arange(n, dtype=np.uint64) * _GOLDEN + _key(seed, _ORDER, epoch))
    return np.argsort(keys, kind="stable")


def mask_tokens(
    ids: np.ndarray,
    rows: np.ndarray,
    seed: int,
    stream: int,
    special: SpecialIds,
    vocab_size: int,
    mlm_probability: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of [B, T] ids: each non-special token is chosen with `mlm_probability`; of those
    80% become [MASK], 10% a random non-special token, 10% stay (`symattn.data.floor` shares). Returns (input_ids, labels) as int64,
    labels IGNORE_INDEX where not chosen. A block with no token chosen gets its most likely one, so no
    batch is ever without a target."""
    ids = np.asarray(ids, dtype=np.int64)
    b, t = ids.shape
    u_pick = uniforms(seed, stream, rows, t, 0)
    u_kind = uniforms(seed, stream, rows, t, 1)
    u_token = uniforms(seed, stream, rows, t, 2)
    is_special = np.isin(ids, special.all)
    pick = (u_pick < mlm_probability) & ~is_special
    none = ~pick.any(axis=1) & ~is_special.all(axis=1)
    if none.any():
        first = np.where(is_special, np.inf, u_pick).argmin(axis=1)
        pick[np.flatnonzero(none), first[none]] = True
    labels = np.where(pick, ids, IGNORE_INDEX)
    inputs = ids.copy()
    inputs[pick & (u_kind < MASK_SHARE)] = special.mask
    rand = pick & (u_kind >= MASK_SHARE) & (u_kind < _RANDOM_END)
    candidates = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), np.asarray(special.all))
    inputs[rand] = candidates[(u_token[rand] * len(candidates)).astype(np.int64)]
    return inputs, labels


def _as_batch(inputs: np.ndarray, labels: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    input_ids = torch.from_numpy(inputs)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != pad_id).long(),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.from_numpy(labels),
    }


class PretrainingBatches(Dataset):
    """Training batches by optimizer step: `batch(step)`, or item i = batch(start_step + i).

    Use with `DataLoader(batches, batch_size=None)` (see `loader`). For data parallelism give each
    device its `rank` and `world_size`: it gets its slice of the same global batch.
    """

    def __init__(
        self,
        data: PretrainingData,
        batch_size: int,
        seed: int,
        mlm_probability: float = 0.15,
        start_step: int = 0,
        num_steps: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"batch_size {batch_size}, rank {rank}, world_size {world_size}: "
                "need batch_size >= 1 and 0 <= rank < world_size"
            )
        if batch_size % world_size:
            raise DataError(
                f"batch_size {batch_size} does not split evenly over {world_size} devices; use a multiple of {world_size}"
            )
        if start_step < 0 or (num_steps is not None and num_steps < start_step):
            raise DataError(f"start_step {start_step} must lie in [0, num_steps {num_steps}]")
        self.batch_size, self.seed, self.mlm_probability = batch_size, seed, mlm_probability
        self.start_step, self.num_steps = start_step, num_steps
        self.rank, self.world_size = rank, world_size
        self.special, self.vocab_size = data.special_ids, data.vocab_size
        self.n_blocks, self.seq_len = len(data.train), data.seq_len
        self._data: Optional[PretrainingData] = data
        self._train = data.train  # a BlockStore: pickled as its shards' paths
        self._perms: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(
        cls, data: PretrainingData, cfg: "DataConfig", batch_size: int, **kwargs
    ) -> "PretrainingBatches":
        """Batches with the seed and masking rate of a DataConfig."""
        return cls(data, batch_size, cfg.seed, cfg.mlm_probability, **kwargs)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_blocks // self.batch_size)

    def __len__(self) -> int:
        end = self.num_steps if self.num_steps is not None else self.steps_per_epoch
        return max(0, end - self.start_step)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.batch(self.start_step + i)

    def sample_indices(self, step: int) -> np.ndarray:
        """Global sample indices of this device's part of the batch for `step`."""
        local = self.batch_size // self.world_size
        start = step * self.batch_size + self.rank * local
        return np.arange(start, start + local, dtype=np.int64)

    def block_indices(self, step: int) -> np.ndarray:
        """Which training blocks make up this device's part of the batch for `step`."""
        g = self.sample_indices(step)
        epochs, pos = np.divmod(g, self.n_blocks)
        out = np.empty_like(g)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[pos[sel]]
        return out

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, token_type_ids, labels: int64 tensors [B, seq_len]."""
        if step < 0:
            raise IndexError(step)
        blocks = self.block_indices(step)
        order = np.argsort(blocks, kind="stable")  # read the memory map in file order
        ids = np.empty((len(blocks), self.seq_len), dtype=np.int32)
        ids[order] = self._train.rows(blocks[order])
        inputs, labels = mask_tokens(
            ids,
            self.sample_indices(step),
            self.seed,
            _TRAIN,
            self.special,
            self.vocab_size,
            self.mlm_probability,
        )
        return _as_batch(inputs, labels, self.special.pad)

    def val_batches(
        self, batch_size: Optional[int] = None, limit: Optional[int] = None
    ) -> list[dict[str, torch.Tensor]]:
        """The fixed validation batches for this masking rate (see `val_batches`)."""
        if self._data is None:
            raise DataError("validation batches are made in the main process; call val_batches there")
        return val_batches(
            self._data, batch_size or self.batch_size, VAL_MASK_SEED, self.mlm_probability, limit
        )

    def loader(self, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        return DataLoader(
            self,
            batch_size=None,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = block_order(self.seed, epoch, self.n_blocks)
        return self._perms[epoch]

    def __getstate__(self) -> dict:
        # Worker processes map the shards themselves instead of receiving a copy of the data.
        return {**self.__dict__, "_data": None}


def val_batches(
    data: PretrainingData,
    batch_size: int,
    seed: int = VAL_MASK_SEED,
    mlm_probability: float = 0.15,
    limit: Optional[int] = None,
) -> list[dict[str, torch.Tensor]]:
    """The validation blocks in order, masked by (seed, block index) only, in batches of `batch_size`
    (the last may be smaller). `limit` keeps the first `limit` blocks. Runs use `VAL_MASK_SEED`
    whatever their own seed, so every run of a data set is measured on the same targets."""
    if batch_size < 1:
        raise DataError(f"batch_size {batch_size} must be at least 1")
    n = int(data.val.shape[0]) if limit is None else min(limit, int(data.val.shape[0]))
    out = []
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        inputs, labels = mask_tokens(
            np.asarray(data.val[start : start + len(rows)]),
            rows,
            seed,
            _VAL,
            data.special_ids,
            data.vocab_size,
            mlm_probability,
        )
        out.append(_as_batch(inputs, labels, data.special_ids.pad))
    return out
