"""prepare_pretraining end to end on a small corpus: blocks, split, cache reuse, refusals."""

import json
import time

import numpy as np
import pytest

from symattn.data import (
    DataConfig,
    DataError,
    load_prepared,
    prepare_pretraining,
    pretraining,
    split_documents,
)
from symattn.data.store import BlockStore


def test_blocks_tokenizer_and_fingerprint(small_cfg, cache):
    data = prepare_pretraining(small_cfg)
    # Token shards of uint16 (the vocabulary fits), read back as int32 blocks.
    assert isinstance(data.train, BlockStore) and data.train.stored_dtype == np.uint16
    assert (
        data.train[[3, 1]].dtype == np.int32 and (data.train[[3, 1]] == np.asarray(data.train)[[3, 1]]).all()
    )
    assert sorted(p.name for p in (data.path / "train").iterdir()) == ["00000.npy"]
    assert data.train.shape[1] == data.val.shape[1] == data.seq_len == 32
    assert data.train.shape[0] > 100 and data.val.shape[0] >= 1
    sp = data.special_ids
    assert (sp.pad, sp.unk, sp.cls, sp.sep, sp.mask) == (0, 1, 2, 3, 4)
    for blocks in (data.train, data.val):
        assert (blocks[:, 0] == sp.cls).all() and (blocks[:, -1] == sp.sep).all()
        assert not (np.asarray(blocks) == sp.pad).any() and int(blocks.max()) < data.vocab_size
    assert data.vocab_size == 300 and data.tokenizer.get_vocab_size() == 300
    assert data.path.parent == cache / "pretrain" and data.path.name == data.fingerprint[:24]
    assert data.stats["val_docs"] == 6 and data.stats["train_docs"] == 54
    assert data.stats["train_tokens"] == data.stats["train_blocks"] * 30 + data.stats["train_tail_dropped"]
    text = data.tokenizer.decode(data.train[0].tolist())
    assert text.startswith("report number") and "[SEP]" not in text
    assert load_prepared(data.fingerprint, verify=True).fingerprint == data.fingerprint


def test_second_run_reuses_the_entry(small_cfg, monkeypatch):
    first = prepare_pretraining(small_cfg)

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a cached entry")

    monkeypatch.setattr(pretraining, "build_entry", no_rebuild)
    t0 = time.perf_counter()
    again = prepare_pretraining(small_cfg)
    assert time.perf_counter() - t0 < 2.0
    assert again.fingerprint == first.fingerprint and again.path == first.path
    # The data seed and masking rate change batches only, not the cache entry.
    other_seed = small_cfg.model_copy(update={"seed": 7, "mlm_probability": 0.2})
    assert prepare_pretraining(other_seed).fingerprint == first.fingerprint


def test_settings_that_change_tokens_change_the_fingerprint(small_cfg):
    base = prepare_pretraining(small_cfg).fingerprint
    assert prepare_pretraining(small_cfg.model_copy(update={"seq_len": 48})).fingerprint != base
    assert prepare_pretraining(small_cfg.model_copy(update={"vocab_size": 320})).fingerprint != base


def test_tokenizer_file_reproduces_the_tokens(small_cfg, tmp_path):
    data = prepare_pretraining(small_cfg)
    cfg = small_cfg.model_copy(update={"tokenizer": str(data.path / "tokenizer.json"), "vocab_size": None})
    again = prepare_pretraining(cfg)
    assert again.fingerprint == data.fingerprint  # same tokens, same entry


def test_interrupted_build_leaves_no_entry_and_the_next_run_builds(small_cfg, cache, monkeypatch):
    real_save = np.save
    calls = []

    def dying_save(path, arr):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed half-way through writing the entry
        real_save(path, arr)

    monkeypatch.setattr(pretraining.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_pretraining(small_cfg)
    assert not (cache / "index").exists() or not list((cache / "index").iterdir())
    assert not (cache / "pretrain").exists() or not list((cache / "pretrain").iterdir())
    monkeypatch.setattr(pretraining.np, "save", real_save)
    assert prepare_pretraining(small_cfg).train.shape[0] > 0


def test_broken_entry_is_rebuilt(small_cfg):
    data = prepare_pretraining(small_cfg)
    meta = json.loads((data.path / "meta.json").read_text())
    meta["train_blocks"] += 1
    (data.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="does not match its meta.json; delete the folder"):
        load_prepared(data.fingerprint)
    import shutil

    shutil.rmtree(data.path)
    assert prepare_pretraining(small_cfg).fingerprint == data.fingerprint


def test_validation_split_is_by_content(documents):
    docs = documents(30)
    train, val = split_documents(docs, 5)
    assert len(val) == 5 and len(train) == 25 and not set(train) & set(val)
    assert sorted(split_documents(docs[::-1], 5)[1]) == sorted(val)  # order does not matter
    assert len(split_documents(docs, 0.1)[1]) == 3
    with pytest.raises(DataError, match="leaves no training documents"):
        split_documents(docs, 30)


def test_too_little_text_for_one_block(tmp_path, cache):
    (tmp_path / "tiny.txt").write_text("A few words only.\n\nAnother short one.\n\nAnd a third line here.")
    cfg = DataConfig(source=f"path:{tmp_path / 'tiny.txt'}", vocab_size=100, seq_len=64, val_docs=1)
    with pytest.raises(
        DataError,
        match="the training split has .* tokens, fewer than one block of seq_len 64; add text or lower seq_len",
    ):
        prepare_pretraining(cfg)


def test_model_compatibility(small_cfg):
    data = prepare_pretraining(small_cfg)
    data.check_model(vocab_size=300, max_positions=512)
    with pytest.raises(DataError, match="model's vocab_size is 30522"):
        data.check_model(vocab_size=30522, max_positions=512)
    with pytest.raises(DataError, match="data.seq_len 32 exceeds the model's 16 positions"):
        data.check_model(vocab_size=300, max_positions=16)


def test_a_validation_split_that_holds_far_more_than_its_share_of_tokens_is_warned_about(capsys):
    from symattn.data.build import _warn_if_lopsided
    from symattn.data.pretraining import _stage

    _warn_if_lopsided(720, 1000, val_docs=20, docs=264, stage=_stage)  # 72% of tokens, 8% of docs
    err = capsys.readouterr().err
    assert "warning: the validation split holds 72% of the tokens with 20 of 264 documents (8%)" in err
    _warn_if_lopsided(150, 1000, val_docs=20, docs=264, stage=_stage)  # under twice its share
    assert capsys.readouterr().err == ""


def _snapshot(root):
    return {
        str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_a_failed_build_leaves_a_cold_cache_uncreated_and_a_warm_one_unchanged(small_cfg, cache):
    # Only the build tells: the one validation document is shorter than a block of 512 tokens.
    failing = small_cfg.model_copy(update={"seq_len": 512, "val_docs": 1})
    with pytest.raises(DataError, match="fewer than one block of seq_len 512"):
        prepare_pretraining(failing)
    assert not cache.exists()  # no folder, no lock file
    prepare_pretraining(small_cfg)
    before = _snapshot(cache)
    assert any(name.startswith("locks/") for name in before)  # a successful build keeps its lock file
    with pytest.raises(DataError, match="fewer than one block"):
        prepare_pretraining(failing)
    assert _snapshot(cache) == before
