"""Queue a sweep: create (or migrate) both stores once, create the study, enqueue every missing cell
once. Queuing a spec again adds only the cells that are not there yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import optuna

from symattn.sweep.records import cell_attrs
from symattn.sweep.spec import Cell, SweepSpec, expand, spec_digest
from symattn.sweep.storage import default_storage, open_storage


@dataclass
class QueueResult:
    study: str
    added: int
    existing: int
    storage: str


def queue(
    spec: SweepSpec, storage_url: Optional[str] = None, cells: Optional[list[Cell]] = None
) -> QueueResult:
    """`cells`: the spec's cells when the caller has expanded it already."""
    from symattn.sweep.search import queue_searches
    from symattn.tracking import check_uri, experiment_id, open_store

    cells = cells if cells is not None else expand(spec)  # every cell valid before anything is written
    mlflow_uri = check_uri(cells[0].config.tracking.uri)
    url = storage_url or spec.stores.optuna or default_storage()
    storage = open_storage(url)
    client = open_store(mlflow_uri)
    experiment_id(client, spec.name)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name, storage=storage, direction="minimize", load_if_exists=True
    )
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    study.set_user_attr("spec_digest", spec_digest(spec))
    study.set_user_attr("mlflow_uri", client.tracking_uri)
    if spec.search is not None:
        added = queue_searches(spec, cells, study, storage)
    else:
        present = {t.user_attrs.get("cell") for t in study.get_trials(deepcopy=False)}
        missing = [cell for cell in cells if cell.id not in present]
        for cell in missing:
            study.enqueue_trial({}, user_attrs=cell_attrs(cell.config, cell.name, cell.index))
        added = len(missing)
    return QueueResult(spec.name, added, len(cells) - added, url)
