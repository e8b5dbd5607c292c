"""A small data config on the corpus and cache of tests/conftest.py."""

import pytest


@pytest.fixture
def small_cfg(corpus_dir, cache):
    from symattn.data import DataConfig

    return DataConfig(source=f"path:{corpus_dir}", vocab_size=300, seq_len=32, val_docs=6, seed=1)
