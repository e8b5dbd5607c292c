"""The data settings checked before the cache is created or locked (`symattn.data.checks`): each
refusal is one line, and nothing is created or fetched."""

import pytest

from symattn.data.checks import check_data
from symattn.data.config import DataConfig
from symattn.data.errors import DataError


def test_a_validation_split_of_every_registry_document_is_refused_before_the_fetch(cache):
    with pytest.raises(
        DataError, match=r"val_docs 3786 leaves no training documents \(the corpus has at most 3786\)"
    ):
        check_data(DataConfig(val_docs=3786))
    with pytest.raises(DataError, match="at most 5912"):  # both corpora: 3,786 + 2,126 documents
        check_data(DataConfig(source=["pypi-news", "pypi-bbc"], val_docs=6000))
    check_data(DataConfig(val_docs=3785))
    check_data(DataConfig(val_docs=0.5))
    assert not cache.exists()


def test_a_folder_is_at_most_one_document_per_file(corpus_dir, cache):
    with pytest.raises(DataError, match="val_docs 60 .* has at most 60"):
        check_data(DataConfig(source=f"path:{corpus_dir}", val_docs=60))
    with pytest.raises(DataError, match="no files matching '\\*.md'"):
        check_data(DataConfig(source={"type": "path", "path": str(corpus_dir), "glob": "*.md"}))
    check_data(DataConfig(source=f"path:{corpus_dir}", val_docs=59))
    assert not cache.exists()


def test_a_tokenizer_file_is_loaded_and_the_model_vocabulary_checked_against_it(tmp_path, cache):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    cfg = DataConfig(tokenizer=str(vocab))
    check_data(cfg, model_vocab_size=7)
    with pytest.raises(DataError, match="model.vocab_size 8 does not match the 7 tokens of the tokenizer"):
        check_data(cfg, model_vocab_size=8)
    vocab.write_text("a\nb\n")
    with pytest.raises(DataError, match=r"lacks \[PAD\]"):
        check_data(cfg)
    assert not cache.exists()


def test_a_cache_that_cannot_be_created_is_refused_without_creating_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot create the data cache .* is not a folder"):
        check_data(DataConfig(cache_dir=blocker / "cache"))
    check_data(DataConfig(cache_dir=tmp_path / "new" / "cache"))
    assert not (tmp_path / "new").exists()
