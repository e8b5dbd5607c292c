"""Concatenation with [SEP] between documents, and [CLS] ... [SEP] blocks."""

import numpy as np
import pytest

from symattn.data.errors import DataError
from symattn.data.packing import pack_blocks, token_stream

CLS, SEP = 2, 3


def test_stream_separates_documents():
    docs = [np.array([10, 11], np.int32), np.array([], np.int32), np.array([12], np.int32)]
    assert token_stream(docs, SEP).tolist() == [10, 11, SEP, SEP, 12, SEP]


def test_blocks_are_cls_piece_sep_and_tail_is_counted():
    stream = np.arange(100, 123, dtype=np.int32)  # 23 tokens
    blocks, dropped = pack_blocks(stream, seq_len=8, cls_id=CLS, sep_id=SEP)
    assert blocks.shape == (3, 8) and blocks.dtype == np.int32
    assert (blocks[:, 0] == CLS).all() and (blocks[:, -1] == SEP).all()
    assert blocks[:, 1:-1].ravel().tolist() == list(range(100, 118))
    assert dropped == 5


def test_too_short_for_a_block():
    blocks, dropped = pack_blocks(np.arange(5, dtype=np.int32), 8, CLS, SEP)
    assert blocks.shape == (0, 8) and dropped == 5
    with pytest.raises(DataError, match="no room"):
        pack_blocks(np.arange(5, dtype=np.int32), 2, CLS, SEP)
