"""`symattn status`: one row per cell, from its newest trial and its MLflow run."""

from __future__ import annotations

from typing import Optional

import optuna
from optuna.trial import FrozenTrial

from symattn import keys
from symattn.config import RunConfig
from symattn.sweep.records import latest_run
from symattn.sweep.storage import load_study, open_storage


def status_rows(study_name: str, storage_url: Optional[str] = None) -> list[dict]:
    """One row per cell: its latest trial's state, attempts, MLflow run, progress and final loss."""
    storage = open_storage(storage_url)
    study = load_study(study_name, storage, storage_url)
    from symattn.tracking import open_store  # MLflow: once there is a study to look up

    trials = list(study.get_trials(deepcopy=False))
    for name in study.user_attrs.get("searches", {}):
        trials += optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    latest: dict[str, FrozenTrial] = {}
    for t in trials:  # the newest attempt of each cell
        cell = t.user_attrs.get("cell")
        if cell and (cell not in latest or t.number > latest[cell].number):
            latest[cell] = t
    client = open_store(study.user_attrs["mlflow_uri"])
    rows = []
    for t in sorted(latest.values(), key=lambda t: t.user_attrs.get("index", 0)):
        run = latest_run(client, t)
        max_steps = RunConfig.model_validate(t.user_attrs["config"]).optim.max_steps
        step = 0
        if run is not None:
            hist = client.get_metric_history(run.info.run_id, keys.TRAIN_TOKENS)
            step = max((m.step for m in hist), default=0)
        rows.append(
            {
                "cell": t.user_attrs["name"],
                "group": t.user_attrs["group"],
                "state": t.state.name,
                "attempts": t.user_attrs.get("attempt", 1),
                "run_id": run.info.run_id if run else "",
                "run_status": run.info.status if run else "",
                "progress": f"{step}/{max_steps}",
                "val_loss": run.data.metrics.get(keys.VAL_LOSS) if run else None,
            }
        )
    return rows


def format_status(rows: list[dict]) -> str:
    head = f"{'cell':<34} {'group':<12} {'state':<9} {'try':>3} {'run':<32} {'status':<9} {'progress':>11} {'val/loss':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
        lines.append(
            f"{r['cell']:<34} {r['group']:<12} {r['state']:<9} {r['attempts']:>3} {r['run_id']:<32} "
            f"{r['run_status']:<9} {r['progress']:>11} {loss:>9}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)
