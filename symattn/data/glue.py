"""GLUE, read from a local folder in the GLUE download's TSV layout (`glue_dir` or
`$SYMATTN_GLUE_DIR`) or from HF `datasets` (`nyu-mll/glue` by default). With neither a local copy nor
a hub that answers, a task is refused in one line that says what to provide, after one short request
to the hub instead of the `datasets` loader's half minute of retries."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from symattn.data.errors import DataError
from symattn.data.task_data import TaskData, TaskSplit, make_split
from symattn.data.task_registry import TaskInfo

log = logging.getLogger("symattn.data.tasks")  # the logger the task records had before the split
GLUE_DIR_ENV = "SYMATTN_GLUE_DIR"


def load_glue(
    info: TaskInfo, glue_dir: Union[str, Path, None], hf_name: str, revision: Optional[str]
) -> TaskData:
    """A GLUE task from `glue_dir` (or `$SYMATTN_GLUE_DIR`) when given, else from HF `datasets`."""
    glue_dir = glue_dir or os.environ.get(GLUE_DIR_ENV)
    if glue_dir:
        return _load_glue_tsv(info, Path(glue_dir).expanduser())
    return _load_glue_hf(info, hf_name, revision)


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
        make_split(info, texts, pairs if i_b is not None else None, labels), skipped=len(bad)
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
        out[split] = make_split(info, texts, pairs, labels[keep])
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
