"""How a task split becomes tokens for fine-tuning: `encode_split` writes each example as
`[CLS] a [SEP] (b [SEP])`, truncated longest-first and unpadded, into an `EncodedSplit` (the rows'
ids end to end, with offsets); `text_digest` hashes what those tokens are made from. No torch: the
Dataset and collation over these arrays are in `tasks.py`."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from symattn.data.errors import DataError
from symattn.data.task_data import TaskSplit

# Bump when the encoding below changes the tokens of the same text, tokenizer and max_length, so
# that cached encodings made by the older code are not reused.
ENCODING_VERSION = 1


@dataclass(frozen=True)
class EncodedSplit:
    """A split's token ids and segment ids, its rows end to end; row i is `offsets[i]:offsets[i + 1]`."""

    ids: np.ndarray  # int32 [tokens]
    type_ids: np.ndarray  # int8 [tokens]
    offsets: np.ndarray  # int64 [rows + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.ids, self.type_ids, self.offsets):
            h.update(np.ascontiguousarray(arr).data)
        return h.hexdigest()


def encode_split(split: TaskSplit, tokenizer: Tokenizer, max_length: int) -> EncodedSplit:
    """`[CLS] a [SEP] (b [SEP])` per example, truncated longest-first to `max_length`, unpadded."""
    if max_length < 4:
        raise DataError(f"max_length {max_length} is too short for [CLS] text [SEP]; use at least 8")
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.enable_truncation(max_length, strategy="longest_first")
    tok.no_padding()
    inputs = list(zip(split.texts, split.pairs)) if split.pairs is not None else list(split.texts)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # the same ids, without offsets
    encodings = encode(inputs, add_special_tokens=True)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    offsets = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    types = np.fromiter(
        itertools.chain.from_iterable(e.type_ids for e in encodings), dtype=np.int8, count=total
    )
    return EncodedSplit(ids, types, offsets)


def text_digest(split: TaskSplit) -> str:
    """sha256 of a split's texts and pairs (what its tokens are made from; labels are not)."""
    h = hashlib.sha256(b"symattn-task-text")
    for column in (split.texts, split.pairs):
        if column is None:
            h.update(b"-")
            continue
        raw = [t.encode("utf-8", "surrogatepass") for t in column]
        h.update(np.asarray([len(raw), *map(len, raw)], dtype="<i8").tobytes())  # unambiguous boundaries
        h.update(b"".join(raw))
    return h.hexdigest()
