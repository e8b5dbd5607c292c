"""Documents concatenated and cut into fixed-length blocks, as BERT pre-training expects.

The stream is doc1 [SEP] doc2 [SEP] ...; it is cut into pieces of seq_len - 2 tokens, each wrapped
as [CLS] piece [SEP]. Every block is full (no padding); the tail that does not fill a block is
dropped and counted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from symattn.data.errors import DataError


def token_stream(docs: Sequence[np.ndarray], sep_id: int) -> np.ndarray:
    """All documents' ids, each followed by [SEP], as one int32 array."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = np.concatenate(docs) if len(docs) else np.empty(0, dtype=np.int32)
    return join_documents(flat, lengths, sep_id)


def join_documents(flat: np.ndarray, lengths: np.ndarray, sep_id: int) -> np.ndarray:
    """Documents given as their ids end to end (`flat`) and their `lengths`, each followed by [SEP],
    as one int32 array."""
    return np.insert(np.asarray(flat, dtype=np.int32), np.cumsum(lengths), np.int32(sep_id))


def pack_blocks(stream: np.ndarray, seq_len: int, cls_id: int, sep_id: int) -> tuple[np.ndarray, int]:
    """[N, seq_len] int32 blocks of [CLS] piece [SEP], and how many tokens of the tail were dropped."""
    if seq_len < 3:
        raise DataError(f"seq_len {seq_len} leaves no room for text between [CLS] and [SEP]; use at least 8")
    body = seq_len - 2
    n = len(stream) // body
    blocks = np.empty((n, seq_len), dtype=np.int32)
    blocks[:, 0] = cls_id
    blocks[:, -1] = sep_id
    blocks[:, 1:-1] = stream[: n * body].reshape(n, body)
    return blocks, len(stream) - n * body
