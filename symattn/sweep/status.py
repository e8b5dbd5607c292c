"""`symattn status`: one row per cell, from its newest trial alone (what the cell reported to it),
so that it answers without opening MLflow."""

from __future__ import annotations

from typing import Optional

import optuna
from optuna.trial import FrozenTrial

from symattn.config import RunConfig
from symattn.sweep.finetune_cells import is_finetune
from symattn.sweep.progress import RUN_ID, STEP, VAL_LOSS
from symattn.sweep.storage import load_study, open_storage


def status_rows(study_name: str, storage_url: Optional[str] = None) -> list[dict]:
    """One row per cell: its latest trial's state, attempts, MLflow run id, progress and last loss."""
    storage = open_storage(storage_url)
    study = load_study(study_name, storage, storage_url)
    trials = list(study.get_trials(deepcopy=False))
    for name in study.user_attrs.get("searches", {}):
        trials += optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    latest: dict[str, FrozenTrial] = {}
    for t in trials:  # the newest attempt of each cell
        cell = t.user_attrs.get("cell")
        if cell and (cell not in latest or t.number > latest[cell].number):
            latest[cell] = t
    rows = []
    for t in sorted(latest.values(), key=lambda t: t.user_attrs.get("index", 0)):
        # A fine-tuning cell reports no progress: it runs in about a minute on the CPU.
        max_steps = (
            None if is_finetune(t) else RunConfig.model_validate(t.user_attrs["config"]).optim.max_steps
        )
        rows.append(
            {
                "cell": t.user_attrs["name"],
                "group": t.user_attrs["group"],
                "state": t.state.name,
                "attempts": t.user_attrs.get("attempt", 1),
                "run_id": t.user_attrs.get(RUN_ID, ""),
                "progress": f"{t.user_attrs.get(STEP, 0)}/{max_steps}" if max_steps else "-",
                "val_loss": t.user_attrs.get(VAL_LOSS),
            }
        )
    return rows


def format_status(rows: list[dict]) -> str:
    w = max([34, *(len(r["cell"]) for r in rows)])  # fine-tuning cells have the longest names
    head = f"{'cell':<{w}} {'group':<12} {'state':<9} {'try':>3} {'run':<32} {'progress':>13} {'val/loss':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
        lines.append(
            f"{r['cell']:<{w}} {r['group']:<12} {r['state']:<9} {r['attempts']:>3} {r['run_id']:<32} "
            f"{r['progress']:>13} {loss:>9}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)
