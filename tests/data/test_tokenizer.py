"""WordPiece training (reproducible, BERT specials with [PAD] = 0) and vocabulary files."""

import json
import subprocess
import sys

import pytest

from symattn.data.errors import DataError
from symattn.data.tokenizer import (
    SPECIAL_TOKENS,
    SpecialIds,
    bert_pipeline,
    check_vocab_size,
    load_tokenizer_file,
    train_wordpiece,
    vocab_digest,
    wordpiece_floor,
)


@pytest.fixture(scope="module")
def docs(documents):
    return documents(40)


@pytest.fixture(scope="module")
def trained(docs):
    return train_wordpiece(docs, vocab_size=300)


def test_specials_come_first_like_bert(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert SpecialIds.of(trained) == SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    assert trained.get_vocab_size() == 300


def test_uncased_bert_pipeline(trained):
    enc = trained.encode("The Council approved it.", "Ms. Rivera said so")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert "council" in enc.tokens and "[UNK]" not in enc.tokens
    assert enc.type_ids[: enc.tokens.index("[SEP]") + 1] == [0] * (enc.tokens.index("[SEP]") + 1)
    assert enc.type_ids[-1] == 1
    assert trained.decode(trained.encode("the council").ids) == "the council"
    assert trained.encode("[MASK]", add_special_tokens=False).ids == [4]


_SCRIPT = """
import json, sys
from symattn.data.tokenizer import train_wordpiece, vocab_digest
print(vocab_digest(train_wordpiece(json.load(open(sys.argv[1])), vocab_size=300)))
"""


def test_training_is_reproducible_across_processes(trained, docs, tmp_path, child_env):
    # The trainer of `tokenizers` alone gives a different vocabulary in every process.
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "docs.json")],
        capture_output=True,
        text=True,
        check=True,
        env=child_env,
    )
    assert out.stdout.strip() == vocab_digest(trained)


def test_vocab_too_small_for_the_alphabet(docs):
    with pytest.raises(DataError, match="leaves no room for merges.*raise vocab_size above"):
        train_wordpiece(docs, vocab_size=30)


def test_vocab_txt_and_tokenizer_json(tmp_path, trained):
    vocab = sorted(trained.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    from_txt = load_tokenizer_file(tmp_path / "vocab.txt")
    assert from_txt.encode("the council met").ids == trained.encode("the council met").ids
    trained.save(str(tmp_path / "tokenizer.json"))
    assert vocab_digest(load_tokenizer_file(tmp_path / "tokenizer.json")) == vocab_digest(trained)

    (tmp_path / "bad.txt").write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"\[PAD\] has id 1.*put \[PAD\] first"):
        load_tokenizer_file(tmp_path / "bad.txt")
    with pytest.raises(DataError, match=r"lacks \[MASK\]"):
        bert_pipeline({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3})
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer_file(tmp_path / "none.json")


def test_model_vocabulary_must_match(trained):
    check_vocab_size(trained, 300)
    with pytest.raises(
        DataError,
        match="the tokenizer has 300 tokens but the model's vocab_size is 30522; set model.vocab_size to 300",
    ):
        check_vocab_size(trained, 30522)


@pytest.mark.parametrize("min_frequency", [1, 2])
def test_the_vocabulary_floor_is_known_before_training(docs, min_frequency):
    # Characters the normaliser changes, drops or splits off: accents, CJK, control and zero-width.
    messy = docs + ["Café NAÏVE résumé, 東京 and 北京.\x07 Zero\u200bwidth ﬁ ½ İstanbul", "ÀÉÎ 東 ½ x\ttab"]
    floor = wordpiece_floor(messy, min_frequency)
    with pytest.raises(DataError, match=f"needs {floor} tokens for its characters alone"):
        train_wordpiece(messy, floor, min_frequency)
    assert train_wordpiece(messy, floor + 1, min_frequency).get_vocab_size() <= floor + 1
