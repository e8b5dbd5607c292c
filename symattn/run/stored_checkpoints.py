"""A run's checkpoints in its MLflow store, for machines that share no disk with the one that ran it.

With `checkpoint.upload` on (`auto`: where the store is an MLflow server), every resumable checkpoint
is also logged as an artifact of its run (`checkpoint/step-N/last.ckpt`; the tag `stored_checkpoint`
points at it once the upload is complete, and only then is the previous one deleted), and every
kept weights file as `kept/step-N.pt` (its tag gains `artifact`). A cell that a dead node left
resumes on another node from the stored checkpoint, and kept weights fine-tune wherever the server
is reached. Every file fetched is checked against its recorded sha256 before it takes its name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

from symattn import keys
from symattn.config import RunConfig
from symattn.data.cache import sha256_file
from symattn.errors import one_line
from symattn.paths import is_server, resolve_uri

CHECKPOINT_ARTIFACTS, KEPT_ARTIFACTS = "checkpoint", "kept"


def uploads(cfg: RunConfig) -> bool:
    """Whether this run logs its checkpoints to its store."""
    if cfg.checkpoint.upload == "auto":
        return is_server(resolve_uri(cfg.tracking.uri))
    return cfg.checkpoint.upload


def upload_checkpoint(tracker, path: Path, step: int) -> None:
    """Log the resumable checkpoint `path` at `step`, point the run's tag at it, then drop the one
    it replaces: a node that dies during the upload leaves the previous one in force."""
    previous = stored_checkpoint(tracker.client.get_run(tracker.run_id))
    folder = f"{CHECKPOINT_ARTIFACTS}/step-{step:07d}"
    tracker.log_artifact(path, folder)
    record = {"artifact": f"{folder}/{path.name}", "step": step, "sha256": sha256_file(path)}
    tracker.set_tags({keys.STORED_CHECKPOINT: json.dumps(record)})
    if previous is not None and previous["artifact"] != record["artifact"]:
        _delete(tracker.client, tracker.run_id, previous["artifact"].rsplit("/", 1)[0])


def upload_kept(tracker, path: Path) -> str:
    """Log a kept weights file; the artifact path its tag records."""
    tracker.log_artifact(path, KEPT_ARTIFACTS)
    return f"{KEPT_ARTIFACTS}/{path.name}"


def stored_checkpoint(run) -> Optional[dict]:
    """The run's stored checkpoint ({"artifact", "step", "sha256"}), if it has one."""
    value = run.data.tags.get(keys.STORED_CHECKPOINT)
    return json.loads(value) if value else None


def fetch_newer_checkpoint(client, run_id: str, dest: Path) -> Optional[int]:
    """The run's stored checkpoint downloaded to `dest` when it is newer than the one there (none,
    or a stale one of a node that came back); its step, or None when `dest` stands."""
    record = stored_checkpoint(client.get_run(run_id))
    if record is None or dest.exists() and checkpoint_step(dest) >= record["step"]:
        return None
    fetch(client, run_id, record["artifact"], record["sha256"], dest)
    return record["step"]


def checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was written at (memory-mapped: nothing else read)."""
    import torch

    return torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"]


def fetch(client, run_id: str, artifact: str, sha256: str, dest: Path) -> None:
    """Download an artifact of the run to `dest`, which it takes only once its sha256 matches."""
    from mlflow.artifacts import download_artifacts

    # A bar per file would interleave with the run's own lines; the run says what it fetched.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest.parent))  # same file system: an atomic rename
    try:
        local = Path(
            download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=str(tmp), tracking_uri=client.tracking_uri
            )
        )
        if sha256_file(local) != sha256:
            raise ValueError(
                f"artifact {artifact} of run {run_id} does not match its recorded sha256; "
                "it was changed in the store after it was logged"
            )
        os.replace(local, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _delete(client, run_id: str, folder: str) -> None:
    """Delete an artifact folder of the run; a store that refuses costs only its disk."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        run = client.get_run(run_id)
        get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts(
            folder
        )
    except Exception as exc:  # noqa: BLE001
        warnings.warn(
            f"run {run_id}: the replaced checkpoint {folder} stays in the store ({one_line(exc)})",
            stacklevel=2,
        )
