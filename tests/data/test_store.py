"""The streaming token store: shards read back as the blocks of one in-memory pass, a killed build
resumed at its stage, builders racing for one entry, and the same blocks whatever the number of
tokenising processes."""

import multiprocessing
import os

import numpy as np
import pytest

from symattn.data import DataConfig, prepare_pretraining, store
from symattn.data import build as build_module
from symattn.data import sources as sources_module
from symattn.data.errors import DataError
from symattn.data.packing import pack_blocks, token_stream
from symattn.data.sources import load_corpus
from symattn.data.split import split_documents
from symattn.data.tokenizer import SpecialIds, encode_documents, train_wordpiece


def test_shards_read_back_as_the_blocks_of_one_in_memory_pass(small_cfg, cache, monkeypatch):
    monkeypatch.setattr(store, "SHARD_BYTES", 64 * 32 * 2)  # 64 blocks a shard: 12 shards
    data = prepare_pretraining(small_cfg)
    assert len(list((data.path / "train").glob("*.npy"))) == -(-len(data.train) // 64) > 10
    # The same blocks, built the way the whole corpus used to be held in memory.
    docs = load_corpus(small_cfg.source, cache).documents
    train_docs, _ = split_documents(docs, small_cfg.val_docs)
    tok = train_wordpiece(train_docs, 300)
    sp = SpecialIds.of(tok)
    expected, _ = pack_blocks(token_stream(encode_documents(tok, train_docs), sp.sep), 32, sp.cls, sp.sep)
    assert np.array_equal(np.asarray(data.train), expected)
    rows = np.array([700, 3, 64, 63, 128, 3])
    assert np.array_equal(data.train[rows], expected[rows])
    assert np.array_equal(data.train[60:70], expected[60:70]) and np.array_equal(data.train[-1], expected[-1])
    assert data.stats["train_tokens"] == len(token_stream(encode_documents(tok, train_docs), sp.sep))


def test_wide_vocabularies_are_stored_as_uint32(tmp_path):
    assert store.token_dtype(30_522) == np.uint16 and store.token_dtype(70_000) == np.uint32
    writer = store.ShardWriter(tmp_path / "s", seq_len=4, dtype=np.uint32, vocab_size=70_001)
    writer.rows_per_shard = 2
    blocks = np.array([[2, 69_999, 70_000, 3]] * 5, dtype=np.int32)
    writer.add(blocks[:3])
    writer.add(blocks[3:])
    writer.close()
    read = store.BlockStore.open(tmp_path / "s", 2)
    assert read.stored_dtype == np.uint32 and read.shape == (5, 4)
    assert np.array_equal(np.asarray(read), blocks) and writer.counts[70_000] == 5


def test_a_killed_build_resumes_at_its_stage(small_cfg, cache, monkeypatch):
    clean = prepare_pretraining(small_cfg.model_copy(update={"cache_dir": cache.parent / "clean"}))
    real_pack = build_module._pack

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed after tokenising, while packing

    monkeypatch.setattr(build_module, "_pack", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_pretraining(small_cfg)
    (work,) = (cache / "build").iterdir()
    assert {"documents.arrow", "tokenizer.json"} <= {p.name for p in work.iterdir()}
    assert list(work.glob("tokens-train*.arrow"))
    assert not (cache / "pretrain").exists() and not (cache / "index").exists()

    def not_again(*args, **kwargs):
        raise AssertionError("read the corpus again")

    monkeypatch.setattr(build_module, "_pack", real_pack)
    monkeypatch.setattr(build_module, "corpus_documents", not_again)
    monkeypatch.setattr(build_module, "train_wordpiece_batches", not_again)
    resumed = prepare_pretraining(small_cfg)
    assert resumed.fingerprint == clean.fingerprint
    assert not (cache / "build").exists() or not list((cache / "build").iterdir())


def test_the_blocks_do_not_depend_on_the_number_of_processes(small_cfg, cache, monkeypatch):
    one = prepare_pretraining(small_cfg.model_copy(update={"cache_dir": cache.parent / "one"}))
    monkeypatch.setattr(build_module, "DOCS_PER_PROCESS", 10)
    monkeypatch.setattr(sources_module, "DOCS_PER_PROCESS", 10)  # cleaning forks after 1,000 documents
    monkeypatch.setenv(sources_module.PROCS_ENV, "3")
    three = prepare_pretraining(small_cfg)
    assert three.stats["store"]["processes"] == 3 and one.stats["store"]["processes"] == 1
    assert three.fingerprint == one.fingerprint
    assert three.stats["corpus"] == one.stats["corpus"]  # documents, empty and duplicates dropped


def test_cleaning_in_processes_keeps_every_document_in_order(monkeypatch):
    texts = [f"  Document {i % 2_700}\r\nabout  rivers.\u200b " if i % 13 else "  " for i in range(5_000)]
    one_stats, three_stats = {}, {}
    one = list(sources_module.unique_documents(texts, one_stats))
    monkeypatch.setattr(sources_module, "DOCS_PER_PROCESS", 1_500)  # forks after two batches
    three = list(sources_module.unique_documents(texts, three_stats, procs=3))
    assert three == one and three_stats == one_stats
    cleaned = [sources_module.clean_text(t) for t in texts]
    assert [doc for doc, _ in one] == list(dict.fromkeys(c for c in cleaned if c))
    assert one_stats["empty_dropped"] == 385  # every 13th

    def failing():  # a source whose reading fails part-way fails the build with its own error
        yield from texts
        raise DataError("corpus file x.txt is not valid UTF-8")

    with pytest.raises(DataError, match="x.txt is not valid UTF-8"):
        list(sources_module.unique_documents(failing(), {}, procs=3))


def _build_in_child(cfg_json: str, out) -> None:
    data = prepare_pretraining(DataConfig.model_validate_json(cfg_json))
    out.put((data.fingerprint, str(data.path)))


def test_two_processes_building_one_entry_build_it_once(small_cfg, cache, capfd):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    cfg = small_cfg.model_copy(update={"cache_dir": cache}).model_dump_json()
    procs = [ctx.Process(target=_build_in_child, args=(cfg, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    assert len(list((cache / "pretrain").iterdir())) == 1
    assert capfd.readouterr().err.count(", built in ") == 1  # one built it, the other read it
    assert os.listdir(cache / "build") == []


def test_an_entry_of_one_int32_array_a_split_is_read_as_well(small_cfg, cache):
    import json
    import shutil

    from symattn.data import load_prepared

    data = prepare_pretraining(small_cfg)
    train, val = np.asarray(data.train), np.asarray(data.val)
    for name, blocks in (("train", train), ("val", val)):
        shutil.rmtree(data.path / name)
        np.save(data.path / f"{name}.npy", blocks)
    (data.path / "train_counts.npy").unlink()
    meta = json.loads((data.path / "meta.json").read_text())
    del meta["store"]
    (data.path / "meta.json").write_text(json.dumps(meta))
    old = load_prepared(data.fingerprint, verify=True)
    assert old.train.stored_dtype == np.int32 and np.array_equal(old.train[[5, 2]], train[[5, 2]])
    from symattn.data import val_batches

    batches = val_batches(old, 8)
    assert old.evaluated_floor(batches) == pytest.approx(data.evaluated_floor(val_batches(data, 8)))
