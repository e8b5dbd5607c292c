"""Queue a sweep: create the study and enqueue every missing cell once. Queuing a spec again adds
only the cells that are not there yet. Only the Optuna store is written: the MLflow store and the
experiment are opened by the worker, so queuing stays quick (MLflow is not imported)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import optuna

from symattn.paths import check_uri, check_writable
from symattn.sweep.analysis_plan import check_registration, register
from symattn.sweep.design import expand
from symattn.sweep.finetune_cells import FinetuneCell, expand_finetune, finetune_attrs
from symattn.sweep.records import cell_attrs
from symattn.sweep.spec import OBJECTIVE_NAMES, Cell, SweepSpec, spec_digest
from symattn.sweep.storage import default_storage, open_storage
from symattn.sweep.trial_params import (
    cell_params,
    finetune_params,
    recorded_distributions,
    study_distributions,
    waiting_trial,
)


@dataclass
class QueueResult:
    study: str
    added: int
    existing: int
    storage: str


def queue(
    spec: SweepSpec,
    storage_url: Optional[str] = None,
    cells: Optional[list[Cell]] = None,
    finetune_cells: Optional[list[FinetuneCell]] = None,
) -> QueueResult:
    """`cells`, `finetune_cells`: the spec's cells when the caller has expanded it already."""
    from symattn.sweep.search import queue_searches

    cells = cells if cells is not None else expand(spec)  # every cell valid before anything is written
    finetune_cells = finetune_cells if finetune_cells is not None else expand_finetune(spec, cells)
    mlflow_uri = check_uri(cells[0].config.tracking.uri)
    check_writable(mlflow_uri)  # its workers will write runs there
    url = storage_url or spec.stores.optuna or default_storage()
    storage = open_storage(url)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.analysis is not None and spec.name in {s.study_name for s in storage.get_all_studies()}:
        # a changed analysis of cells that started: refused before anything is written
        check_registration(optuna.load_study(study_name=spec.name, storage=storage), spec.analysis)
    study = optuna.create_study(
        study_name=spec.name, storage=storage, direction="minimize", load_if_exists=True
    )
    with warnings.catch_warnings():  # experimental in Optuna 5: said once per queue otherwise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE_NAMES[spec.search.objective if spec.search else "final_loss"]])
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    register(study, spec.analysis, cells)
    study.set_user_attr("spec_digest", spec_digest(spec))
    study.set_user_attr("mlflow_uri", mlflow_uri)
    if spec.search is not None:
        added = queue_searches(spec, cells, study, storage)
    else:
        trials = study.get_trials(deepcopy=False)
        present = {t.user_attrs.get("cell") for t in trials}
        # Each trial carries its cell's design values as params (`trial_params`).
        distributions = study_distributions(spec, finetune_cells, recorded_distributions(trials))
        wanted = [
            (cell.id, cell_attrs(cell.config, cell.name, cell.index), cell_params(cell)) for cell in cells
        ]
        wanted += [(cell.id, finetune_attrs(cell), finetune_params(cell)) for cell in finetune_cells]
        missing = [(attrs, params) for cell_id, attrs, params in wanted if cell_id not in present]
        for attrs, params in missing:
            study.add_trial(waiting_trial(params, distributions, attrs))
        added = len(missing)
    return QueueResult(spec.name, added, len(cells) + len(finetune_cells) - added, url)
