"""A loaded downstream task, whatever its source: `TaskSplit` (texts, optional second segments and
labels of one split), `TaskData` (a task's training split, its named dev splits and its metric) and
`make_split`, which every loader uses to give its labels the task's dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from symattn.data.metrics import compute_metrics
from symattn.data.task_registry import TaskInfo


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


def make_split(info: TaskInfo, texts, pairs, labels) -> TaskSplit:
    dtype = np.float32 if info.is_regression else np.int64
    return TaskSplit(list(texts), list(pairs) if pairs is not None else None, np.asarray(labels, dtype=dtype))
