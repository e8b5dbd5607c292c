"""What a sweep cell costs besides its training steps, measured on a real sweep.

The first matched group of a sweep spec (every attention variant; the first value of every other
axis), shortened to a few hundred steps, runs through a real `symattn work` process on stores in a
temporary folder, so the project's stores are untouched. Each run records its own costs anyway
(see `symattn.run.lifecycle.RunLifecycle`); this reads them back:

- start-up: from the worker's launch of the cell to its first step (`time/startup_s`), and from
  the worker process's start to that step, which adds the worker's own imports and its forkserver;
- tracking: the share of the training loop's wall time spent in MLflow calls (`time/tracking_share`).

The corpus is prepared (or found in the cache) before the clock starts: a sweep prepares it once.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from symattn import keys
from symattn.config import apply_overrides
from symattn.errors import RunError
from symattn.naming import is_attention_axis
from symattn.sweep.design import expand
from symattn.sweep.spec import StoresSpec, SweepSpec

COLUMNS = [
    "cell",
    "variant",
    "slot_order",
    "launch_to_first_step_s",
    "worker_to_first_step_s",
    "step_ms",
    "tracking_share",
    "steps",
    "threads",
]


def first_group(spec: SweepSpec, steps: int, folder: Path) -> SweepSpec:
    """The spec's first matched group, `steps` long, with its stores and checkpoints in `folder`."""
    axes = {k: (v if is_attention_axis(k) else v[:1]) for k, v in spec.axes.items() if k != "optim.max_steps"}
    base = apply_overrides(
        copy.deepcopy(spec.base),
        [f"optim.max_steps={steps}", f"checkpoint.dir={json.dumps(str(folder / 'checkpoints'))}"],
    )
    stores = StoresSpec(optuna=str(folder / "optuna.journal"), mlflow=f"sqlite:///{folder / 'mlflow.db'}")
    return spec.model_copy(
        update={"name": f"{spec.name}-overhead", "axes": axes, "base": base, "search": None, "stores": stores}
    )


def check(spec: SweepSpec, steps: int) -> None:
    """Refuse a step count that cannot give the figures, before anything runs."""
    if steps < 1:
        raise ValueError(f"--overhead-steps must be at least 1 (got {steps})")
    every = expand(first_group(spec, steps, Path(tempfile.gettempdir())))[0].config.tracking.log_every_n_steps
    if steps < every:
        raise ValueError(
            f"--overhead-steps {steps} is below the spec's tracking.log_every_n_steps ({every}), "
            f"so no step time would be logged; give at least {every}"
        )


def measure(
    spec: SweepSpec, steps: int = 200, devices: str = "cpu", log: Callable[[str], None] = print
) -> list[dict]:
    """One row per cell of the spec's first group, in the order the cells reached their first step.
    The worker's own lines (a cell started, a cell ended) pass through as progress."""
    from mlflow.tracking import MlflowClient

    from symattn.data import prepare_pretraining
    from symattn.sweep.queue import queue
    from symattn.sweep.status import status_rows

    check(spec, steps)
    with tempfile.TemporaryDirectory(prefix="symattn-overhead-", ignore_cleanup_errors=True) as tmp:
        short = first_group(spec, steps, Path(tmp))
        cells = expand(short)
        log(f"overhead: preparing the corpus of {spec.name} (once, as a sweep does)")
        prepare_pretraining(cells[0].config.data)
        queue(short, cells=cells)
        cmd = [
            sys.executable,
            "-m",
            "symattn",
            "work",
            short.name,
            "--devices",
            devices,
            "--storage",
            short.stores.optuna,
        ]
        log(
            f"overhead: {len(cells)} cells x {steps} steps through `symattn work` ({spec.workers.per_device} per device)"
        )
        sys.stdout.flush()
        worker_start = time.time()
        done = subprocess.run(
            cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            failed = [
                r["cell"] for r in status_rows(short.name, short.stores.optuna) if r["state"] != "COMPLETE"
            ]
            tail = done.stderr.strip().splitlines()[-1:] or ["no error output"]
            raise RunError(
                f"the overhead sweep's worker exited with {done.returncode}; cells not complete: "
                f"{', '.join(failed) or 'none'}; last error line: {tail[0]}"
            )
        client = MlflowClient(short.stores.mlflow)
        exp = client.get_experiment_by_name(short.name)
        cells = client.search_runs([exp.experiment_id], filter_string=f"tags.kind = '{keys.PRETRAIN}'")
        rows = [_row(client, run, worker_start) for run in cells]
    rows.sort(key=lambda r: r["worker_to_first_step_s"])
    for i, r in enumerate(rows, 1):
        r["slot_order"] = i
    return rows


def _row(client, run, worker_start: float) -> dict:
    run_id, params = run.info.run_id, run.data.params
    # A retried cell records a start-up per start: its first is the one the sweep paid first.
    startup = min(client.get_metric_history(run_id, keys.STARTUP_S), key=lambda m: m.step)
    share = max(client.get_metric_history(run_id, keys.TRACKING_SHARE), key=lambda m: m.step)
    speeds = [m.value for m in client.get_metric_history(run_id, keys.TRAIN_TOKENS_PER_S)]
    tokens_per_step = (
        int(params["optim.batch_size"]) * int(params["optim.accumulate"]) * int(params["data.seq_len"])
    )
    step_ms = 1000 * tokens_per_step / statistics.median(speeds)
    return {
        "cell": run.info.run_name,
        "variant": run.data.tags[keys.VARIANT],
        "slot_order": 0,
        "launch_to_first_step_s": startup.value,
        "worker_to_first_step_s": startup.timestamp / 1000 - worker_start,
        "step_ms": step_ms,
        "tracking_share": share.value,
        "steps": int(params["optim.max_steps"]),
        "threads": params.get("speed.threads", ""),
    }


def format_table(rows: list[dict]) -> str:
    from symattn.markdown import markdown_table

    head = ["cell", "launch → 1st step s", "worker start → 1st step s", "step ms", "tracking"]
    body = [
        [
            r["cell"],
            f"{r['launch_to_first_step_s']:.2f}",
            f"{r['worker_to_first_step_s']:.2f}",
            f"{r['step_ms']:.1f}",
            f"{100 * r['tracking_share']:.2f}%",
        ]
        for r in rows
    ]
    return markdown_table(head, body)
