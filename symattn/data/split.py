"""The train/validation split of a pre-training corpus: `check_split` (how many validation
documents `val_docs` asks for, refused when none are left for training) and `split_documents`
(validation = the documents with the smallest content hashes). Light (no torch), so that the
checks made before the cache is touched and the build use the same rule."""

from __future__ import annotations

import hashlib
from typing import Sequence, Union

import numpy as np

from symattn.data.errors import DataError


def check_split(documents: int, val_docs, exact: bool = True) -> int:
    """The number of validation documents of a corpus of `documents` (`exact`: else at most that
    many); refused when none are left for training."""
    n_val = val_docs if isinstance(val_docs, int) else max(1, round(val_docs * documents))
    if n_val >= documents:
        has = f"has {documents}" if exact else f"has at most {documents}"
        raise DataError(
            f"val_docs {val_docs} leaves no training documents (the corpus {has}); lower val_docs"
        )
    return n_val


def validation_rows(digests: Union[Sequence[bytes], np.ndarray], n_val: int) -> np.ndarray:
    """The positions of the `n_val` documents with the smallest content hashes (sha256 digests, or
    equal-length prefixes of them), in corpus order."""
    keys = np.asarray(digests, dtype=bytes)
    return np.sort(np.argsort(keys, kind="stable")[:n_val])


def split_documents(documents: Sequence[str], val_docs: Union[int, float]) -> tuple[list[str], list[str]]:
    """Validation = the documents with the smallest content hashes; training = the rest, in order.

    Depends on the text alone (not on order or seed), so it is the same for every run and stays the
    same when documents are added elsewhere in the corpus.
    """
    n_val = check_split(len(documents), val_docs)
    val_idx = set(validation_rows([hashlib.sha256(d.encode()).digest() for d in documents], n_val).tolist())
    return [d for i, d in enumerate(documents) if i not in val_idx], [documents[i] for i in sorted(val_idx)]
