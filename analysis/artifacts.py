"""A report's figures and tables as MLflow artifacts, so that the MLflow UI shows the comparison.

They go to the run that stands for the report's runs, in the artifact folder `figures/`: a sweep's
study run (kind `study`, the parent of its cells); for runs without one (standalone `symattn train`
runs, the imported paper), one run of kind `report` in their experiment, found or created, tagged
`report_of=NAME`. A new report logs its files, then removes from `figures/` every file it did not
write, so no figure of an earlier report survives; readers never take a study or report run for a
run of the design (they select runs by kind).

MLflow's client can log artifacts but neither delete nor rename them; its artifact repositories
(`mlflow.store.artifact`) can delete (local and file stores, S3, GCS, Azure, a tracking server
serving artifacts). There is no atomic swap: a report stopped between logging and removing leaves
the new files beside stale ones, which the next report removes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from analysis import mlflow_runs
from symattn import keys

COMMAND = "symattn figures"


def report_note(name: str) -> str:
    return (
        f"The figures and tables of `{name}` (`{COMMAND} {name}`), in the artifact folder "
        f"`{keys.FIGURES_ARTIFACTS}/`: each new report replaces them. Not a training run."
    )


def figures_run(mlflow_client, name: str, experiment_ids) -> str:
    """The run that holds the figures of `name`: its study run, else the report run of the
    experiment named `name`, or of the one holding most of its runs (`experiment_ids`)."""
    from symattn.tracking.store import find_or_create_run, source_tags

    studies = mlflow_runs.search_runs(mlflow_client, None, {keys.KIND: keys.STUDY_RUN, keys.STUDY: name})
    if studies:
        return min(studies, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "active":
        exp_id = experiment.experiment_id
    else:
        exp_id = Counter(experiment_ids).most_common(1)[0][0]
    match = {keys.KIND: keys.REPORT_RUN, keys.REPORT_OF: name}
    tags = {**source_tags(COMMAND), keys.NOTE: report_note(name)}
    return find_or_create_run(mlflow_client, exp_id, match, f"{name} figures", tags)


def log_figures(tracking_uri: str | None, name: str, written: list[Path], experiment_ids) -> str:
    """Log the written files under `figures/` of the run of `figures_run`; returns the line that
    says where (or why not: the files are on disk either way)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client = mlflow_runs.client(tracking_uri)
        run_id = figures_run(mlflow_client, name, list(experiment_ids))
        for path in written:
            mlflow_client.log_artifact(run_id, str(path), keys.FIGURES_ARTIFACTS)
        run = mlflow_client.get_run(run_id)
        removed = _remove_stale(mlflow_client, run, {Path(p).name for p in written})
        if run.data.tags.get(keys.KIND) == keys.REPORT_RUN:
            mlflow_client.set_terminated(run_id, "FINISHED")  # its end time: when last updated
    except (MlflowException, OSError) as error:
        return f"The figures were not logged to MLflow: {' '.join(str(error).split())[:300]}\n"
    kind = run.data.tags.get(keys.KIND)
    return (
        f"Logged to MLflow: {len(written)} files in {keys.FIGURES_ARTIFACTS}/ of the {kind} run "
        f"{run.info.run_name!r} ({run_id}).\n{removed}"
    )


def _remove_stale(mlflow_client, run, names: set) -> str:
    """Delete the files under `figures/` of `run` that are not in `names`; the line that says so."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    listed = mlflow_client.list_artifacts(run.info.run_id, keys.FIGURES_ARTIFACTS)
    stale = sorted(f.path for f in listed if f.path.rsplit("/", 1)[-1] not in names)
    if not stale:
        return ""
    try:
        repository = get_artifact_repository(run.info.artifact_uri)
        for path in stale:
            repository.delete_artifacts(path)
    except (MlflowException, OSError, NotImplementedError) as error:
        return (
            f"{len(stale)} files an earlier report logged in {keys.FIGURES_ARTIFACTS}/ stay there: this "
            f"artifact store refused to delete them ({' '.join(str(error).split())[:200]}).\n"
        )
    return f"{len(stale)} files an earlier report logged there and this one did not write: removed.\n"
