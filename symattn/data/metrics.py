"""Downstream metrics as the paper reports them, and its GLUE-score aggregation.

The same functions (scikit-learn, scipy) as the HF `run_glue` script the paper used: CoLA MCC;
MRPC and QQP the mean of accuracy and F1; STS-B the mean of Pearson and Spearman; accuracy elsewhere.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np

from symattn.data.errors import DataError

# The paper's GLUE table, column -> (task, metrics averaged), in GLUE's usual order: CoLA MCC;
# MRPC and QQP the mean of accuracy and F1; STS-B the mean of Pearson and Spearman; MNLI matched
# and mismatched as two columns; accuracy elsewhere. `analysis.glue` reads it too.
GLUE_COLUMNS = {
    "cola": ("cola", ("matthews_correlation",)),
    "sst2": ("sst2", ("accuracy",)),
    "mrpc": ("mrpc", ("accuracy", "f1")),
    "stsb": ("stsb", ("pearson", "spearmanr")),
    "qqp": ("qqp", ("accuracy", "f1")),
    "mnli-m": ("mnli", ("accuracy",)),
    "mnli-mm": ("mnli", ("accuracy_mm",)),
    "qnli": ("qnli", ("accuracy",)),
    "rte": ("rte", ("accuracy",)),
    "wnli": ("wnli", ("accuracy",)),
}
# The paper's GLUE score: the unweighted mean of the columns but WNLI (so MNLI counts twice).
GLUE_SCORE_KEYS = tuple(column for column in GLUE_COLUMNS if column != "wnli")


def as_predictions(preds, regression: bool) -> np.ndarray:
    """Class ids from logits [N, C] (or class ids as given); regression values from [N] or [N, 1]."""
    p = np.asarray(preds.detach().cpu() if hasattr(preds, "detach") else preds)
    if regression:
        return p.reshape(len(p), -1)[:, 0].astype(np.float64)
    return p.argmax(axis=-1) if p.ndim == 2 else p.astype(np.int64)


def _corr(fn, x: np.ndarray, y: np.ndarray) -> float:
    # A constant prediction (an untrained model) has no correlation: 0, not NaN, so scores average.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(fn(x, y)[0])
    return 0.0 if math.isnan(r) else r


def compute_metrics(metric: str, preds, labels) -> dict[str, float]:
    """Metrics of one evaluation; `score` is the number the paper reports for the task."""
    from scipy import stats  # imported here: slow to import, and only needed after fine-tuning
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    regression = metric == "pearson_spearman"
    p = as_predictions(preds, regression)
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if len(p) != len(y) or len(y) == 0:
        raise DataError(f"{len(p)} predictions for {len(y)} labels; evaluate on the whole split")
    if regression:
        pearson, spearman = (
            _corr(stats.pearsonr, p, y.astype(np.float64)),
            _corr(stats.spearmanr, p, y.astype(np.float64)),
        )
        return {"pearson": pearson, "spearmanr": spearman, "score": (pearson + spearman) / 2}
    y = y.astype(np.int64)
    out = {"accuracy": float(accuracy_score(y, p))}
    if metric == "mcc":
        out["matthews_correlation"] = float(matthews_corrcoef(y, p))
        out["score"] = out["matthews_correlation"]
    elif metric in ("acc_f1", "f1"):
        out["f1"] = float(f1_score(y, p, zero_division=0))
        out["score"] = (out["accuracy"] + out["f1"]) / 2 if metric == "acc_f1" else out["f1"]
    elif metric == "acc":
        if y.max(initial=0) > 1 or p.max(initial=0) > 1:
            out["macro_f1"] = float(f1_score(y, p, average="macro", zero_division=0))
        out["score"] = out["accuracy"]
    else:
        raise DataError(f"unknown task metric {metric!r}")
    return out


def glue_score(scores: Mapping[str, float]) -> float:
    """The paper's GLUE score in percent from per-task scores in [0, 1] (keys as GLUE_SCORE_KEYS)."""
    missing = [k for k in GLUE_SCORE_KEYS if k not in scores]
    if missing:
        raise DataError(
            f"GLUE score needs {', '.join(missing)} as well; it averages {', '.join(GLUE_SCORE_KEYS)}"
        )
    return 100.0 * float(np.mean([scores[k] for k in GLUE_SCORE_KEYS]))


# The metrics whose mean `compute_metrics` reports as a task's `score` (the number a table gives for
# the task), by the registry's metric name (`TaskInfo.metric`); `analysis.glue` reads them to score
# fine-tuning runs from their logged `eval/<metric>` values.
SCORE_METRICS = {
    "acc": ("accuracy",),
    "f1": ("f1",),
    "acc_f1": ("accuracy", "f1"),
    "mcc": ("matthews_correlation",),
    "pearson_spearman": ("pearson", "spearmanr"),
}
