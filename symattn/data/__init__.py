"""Data: corpus sources and cache, tokenizer, block packing, seeded MLM masking, downstream tasks.

Names are imported on first use, so `from symattn.data.config import DataConfig` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "DataConfig": "config",
    "RegistrySource": "config",
    "PathSource": "config",
    "HFSource": "config",
    "DataError": "errors",
    "PretrainingData": "pretraining",
    "prepare_pretraining": "pretraining",
    "load_prepared": "pretraining",
    "split_documents": "split",
    "PretrainingBatches": "masking",
    "val_batches": "masking",
    "mask_tokens": "masking",
    "IGNORE_INDEX": "masking",
    "CORPORA": "registry",
    "load_corpus": "sources",
    "SPECIAL_TOKENS": "tokenizer",
    "SpecialIds": "tokenizer",
    "TASKS": "task_registry",
    "GLUE_TASKS": "task_registry",
    "OFFLINE_TASKS": "task_registry",
    "TaskData": "task_data",
    "TaskInfo": "task_registry",
    "TaskSplit": "task_data",
    "TaskDataset": "tasks",
    "collate_task_batch": "tasks",
    "load_task": "tasks",
    "GLUE_SCORE_KEYS": "metrics",
    "compute_metrics": "metrics",
    "glue_score": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'symattn.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"symattn.data.{_EXPORTS[name]}"), name)


if TYPE_CHECKING:  # pragma: no cover
    from symattn.data.config import DataConfig, HFSource, PathSource, RegistrySource  # noqa: F401
    from symattn.data.errors import DataError  # noqa: F401
    from symattn.data.masking import IGNORE_INDEX, PretrainingBatches, mask_tokens, val_batches  # noqa: F401
    from symattn.data.metrics import GLUE_SCORE_KEYS, compute_metrics, glue_score  # noqa: F401
    from symattn.data.pretraining import PretrainingData, load_prepared, prepare_pretraining  # noqa: F401
    from symattn.data.registry import CORPORA  # noqa: F401
    from symattn.data.sources import load_corpus  # noqa: F401
    from symattn.data.split import split_documents  # noqa: F401
    from symattn.data.task_data import TaskData, TaskSplit  # noqa: F401
    from symattn.data.task_registry import GLUE_TASKS, OFFLINE_TASKS, TASKS, TaskInfo  # noqa: F401
    from symattn.data.tasks import TaskDataset, collate_task_batch, load_task  # noqa: F401
    from symattn.data.tokenizer import SPECIAL_TOKENS, SpecialIds  # noqa: F401
