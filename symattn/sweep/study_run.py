"""The study as one MLflow run of kind `keys.STUDY_RUN` in its experiment: the parent of its
pre-training cells' runs in the MLflow UI, holding the spec (`spec.yaml`) and the design's axes as
params, and the experiment's description. MLflow is imported only by the functions that open it."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import yaml
from optuna.trial import TrialState

from symattn import keys
from symattn.sweep.analysis_plan import registered
from symattn.sweep.spec import SweepSpec


def study_note(spec: SweepSpec) -> str:
    """The description of a study's experiment and run (markdown): its name and design."""
    axes = "\n".join(
        f"- `{key}`: {', '.join(json.dumps(v) for v in values)}" for key, values in spec.axes.items()
    )
    cells = math.prod(len(values) for values in spec.axes.values())
    lines = [f"Sweep study `{spec.name}`" + (f": {spec.description}" if spec.description else "")]
    lines += ["", f"Design, {cells} pre-training cell{'s' * (cells != 1)}:", axes or "- one cell, no axes"]
    if spec.search is not None:
        s = spec.search
        lines += [
            "",
            f"Search per cell: `{s.param}` in [{s.low:g}, {s.high:g}], {s.trials} trials, on {s.objective}.",
        ]
    if spec.tuned_from is not None:
        lines += ["", f"Each cell at the best value of its search in the study `{spec.tuned_from}`."]
    if spec.finetune is not None:
        f = spec.finetune
        lines += ["", f"Fine-tuning: {', '.join(f.tasks)}; seeds {', '.join(map(str, f.seeds))}."]
    lines += [
        "",
        f"Cells are runs of `{keys.WORK_COMMAND}`, children of the run `{spec.name}`"
        f" (kind `{keys.STUDY_RUN}`), which holds the spec.",
    ]
    return "\n".join(lines)


def open_study_run(uri: str, study) -> tuple:
    """The MLflow client and the id of the study's run, found or created (one per study, also when
    workers start at once); its experiment described by the study's design, as last queued."""
    from mlflow.entities import Param, RunTag

    from symattn.tracking.store import experiment_id, find_or_create_run, open_store, source_tags

    spec = SweepSpec.model_validate(study.user_attrs["spec"])
    name, note = study.study_name, study_note(spec)
    client = open_store(uri)
    exp_id = experiment_id(client, name, note)
    client.set_experiment_tag(exp_id, keys.NOTE, note)  # the design may have grown since
    match = {keys.KIND: keys.STUDY_RUN, keys.STUDY: name}
    run_id = find_or_create_run(
        client, exp_id, match, name, {**source_tags(keys.WORK_COMMAND), keys.NOTE: note}
    )
    run = client.get_run(run_id)
    # Params cannot change: an axis given more values later keeps its first; spec.yaml is the latest.
    params = [
        Param(f"{keys.AXIS_PREFIX}{key}", json.dumps(values))
        for key, values in spec.axes.items()
        if f"{keys.AXIS_PREFIX}{key}" not in run.data.params
    ]
    client.log_batch(run_id, params=params, tags=[RunTag(keys.NOTE, note)])
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / keys.SPEC_ARTIFACT
        path.write_text(yaml.safe_dump(study.user_attrs["spec"], sort_keys=False))
        client.log_artifact(run_id, str(path))
        analyses = registered(study)
        if analyses:  # as stated, with when: what the report computes first
            path = Path(tmp) / keys.ANALYSES_ARTIFACT
            path.write_text(json.dumps(analyses, indent=1))
            client.log_artifact(run_id, str(path))
    return client, run_id


def end_study_run(client, run_id: str, studies: list, stopped: bool) -> None:
    """The study run's state when a worker leaves: still RUNNING while another worker runs a cell,
    else FINISHED once no cell waits, else KILLED (cells wait for a worker)."""
    states = {t.state for study in studies for t in study.get_trials(deepcopy=False)}
    if TrialState.RUNNING in states:
        return
    client.set_terminated(run_id, "KILLED" if stopped or TrialState.WAITING in states else "FINISHED")
