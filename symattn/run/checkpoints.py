"""Where a run's checkpoints are, and its weights written so that a kill never leaves half a file."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from symattn.config import RunConfig
from symattn.paths import default_checkpoint_dir


def checkpoint_root(cfg: RunConfig) -> Path:
    """The folder of every run's checkpoints: `checkpoint.dir`, else the default."""
    return Path(cfg.checkpoint.dir or default_checkpoint_dir())


def run_checkpoint_dir(cfg: RunConfig, run_id: str) -> Path:
    """Where a run's checkpoints are: the checkpoint folder, its experiment, its run."""
    return checkpoint_root(cfg) / cfg.tracking.experiment / run_id


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict, atomically. HF BERT parameter names: it loads into HF
    `BertForMaskedLM` (vanilla) or back into symattn's model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # a kill never leaves a half-written file under the final name
