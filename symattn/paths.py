"""Where local stores live by default: beside the project when run from a checkout, else the CWD."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout holding this package (an editable install), else the current directory.

    `SYMATTN_HOME` overrides both, e.g. to keep stores on a larger disk.
    """
    if os.environ.get("SYMATTN_HOME"):
        return Path(os.environ["SYMATTN_HOME"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "symattn").is_dir():
        return checkout
    return Path.cwd()


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def default_checkpoint_dir() -> Path:
    return project_root() / "checkpoints"
