"""What a cell's Optuna trial records, and how a trial and its MLflow run find each other.

A trial's user attributes: `cell` (the config hash), `name`, `group`, `index` (queue order),
`attempt`, `config` (the run config, as set by the spec; a fine-tuning cell's is its
`FinetuneConfig`, beside the attributes of `finetune_cells`), and what the running cell reports
(`progress`: its run id, step and validation loss, and the error it failed with); a retry adds
`retry_of` and `retry_reason`, a failure `failure` (`FAILURE`). Its run carries the tags
`keys.STUDY`, `keys.CELL` and `keys.OPTUNA_TRIAL`.
"""

from __future__ import annotations

from typing import Optional

from optuna.trial import FrozenTrial

from symattn import keys
from symattn.config import RunConfig

# Why a cell's trial FAILED, in a line, as its worker recorded it: the cell's error (or its run's
# failure reason) and how its process ended, `NonFiniteLoss: training loss became nan by step 12;
# lower optim.lr or enable grad_clip (exit code 3)`.
FAILURE = "failure"


def cell_attrs(config: RunConfig, name: str, index: int) -> dict:
    """A new cell's trial attributes."""
    return {
        "cell": config.config_hash(),
        "name": name,
        "group": config.group_id(),
        "index": index,
        "attempt": 1,
        "config": config.model_dump(mode="json", exclude_unset=True),
    }


def cell_config(
    trial: FrozenTrial, device: str, cpu_threads: int, study_run_id: Optional[str] = None
) -> RunConfig:
    """The cell's run config with this slot's speed and tracking settings (neither changes results);
    its run is a child of the study's run `study_run_id`."""
    cfg = RunConfig.model_validate(trial.user_attrs["config"])
    speed = {"progress_bar": False, "devices": 1, "accelerator": "cpu" if device == "cpu" else "gpu"}
    if device == "cpu":
        speed["threads"] = cpu_threads
    tracking = {
        "tags": {
            **cfg.tracking.tags,
            keys.STUDY: cfg.tracking.experiment,
            keys.CELL: trial.user_attrs["cell"],
            keys.OPTUNA_TRIAL: str(trial.number),
            # Not MLflow's dotted parent tag itself: a config's tags come back from its params by their dots.
            **({keys.STUDY_RUN_ID: study_run_id} if study_run_id else {}),
        }
    }
    if cfg.tracking.run_name is None:
        tracking["run_name"] = trial.user_attrs["name"]  # the cell's readable name in the MLflow UI
    return cfg.model_copy(
        update={
            "speed": cfg.speed.model_copy(update=speed),
            "tracking": cfg.tracking.model_copy(update=tracking),
        }
    )


def runs_of(client, trial: FrozenTrial, status: Optional[str] = None) -> list:
    """The MLflow runs of a trial's cell (every attempt's, newest first)."""
    attrs = trial.user_attrs
    exp = client.get_experiment_by_name(attrs.get("experiment") or attrs["config"]["tracking"]["experiment"])
    if exp is None:
        return []
    filt = f"tags.{keys.CELL} = '{trial.user_attrs['cell']}'"
    if status:
        filt += f" and attributes.status = '{status}'"
    return client.search_runs(
        [exp.experiment_id], filter_string=filt, order_by=["attributes.start_time DESC"]
    )


def finished_run(client, trial: FrozenTrial):
    """The cell's FINISHED run, if any; for an extension trial, one finished at its new budget."""
    from symattn.tracking.store import reached  # MLflow: not imported by queue and status

    runs = runs_of(client, trial, "FINISHED")
    if "extend_run" in trial.user_attrs:
        budget = trial.user_attrs["config"]["optim"]["max_steps"]
        runs = [r for r in runs if reached(r) >= budget]
    return runs[0] if runs else None


def latest_run(client, trial: FrozenTrial):
    runs = runs_of(client, trial)
    return runs[0] if runs else None
