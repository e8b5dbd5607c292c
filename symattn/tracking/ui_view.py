"""The page `symattn ui` opens: a study's cells compared, as MLflow 3.17's UI can show them.

MLflow keeps no server-side default view, but it opens a *shared view*: an experiment tag
`mlflow.sharedViewState.<key>` holding the runs page's state, named by the URL's
`viewStateShareKey` on the route `#/experiments/<id>/runs` (the bare experiment route drops it).
The view written here filters the study's cells (a filter or a metric sort lists runs flat, not
under their study run; it also keeps grouping and charts inside one study), sorts them by escape
step (runs that never escaped last), shows the variant, seed and escape columns in the table, and
puts `val/loss` first, then the escape metrics, the training curves and the diagnostics. One
colour per variant comes from the run tag `mlflow.runColor`, set on each cell with the figures'
palette.

What MLflow cannot do: show columns beside the charts (the chart view lists run names only, in
the view's order; the table view, one click away, has the columns), choose a group's colour (they
are hashed from its name, so colours are per run here, not grouped), expand a parent row, or turn
off its Assistant panel, which opens by itself on a browser's first visit to a loopback address
(its close button keeps it closed in that browser). The view opens with a banner "You're viewing a
shared view".
"""

from __future__ import annotations

import json
import time
from typing import Callable

from symattn import keys

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RUN_COLOR = "mlflow.runColor"
CHART_ROWS = 100  # runs drawn per chart (MLflow's default is 10)
# Sections in the order they show, with their charts; MLflow adds every other metric's chart in a
# section of its prefix after these (`val`, `escape`, `train`, `diag`, ...).
SECTIONS = (
    ("val", [keys.VAL_LOSS]),
    ("escape", []),
    ("train", [keys.TRAIN_LOSS]),
)


def view_key(study: str) -> str:
    return f"study-{study}"


def cell_filter(study: str | None = None) -> str:
    """A study's cells; without a study, every pre-training run (not the study or fine-tuning runs)."""
    kind = f"tags.{keys.KIND} = '{keys.PRETRAIN}'"
    return f"tags.{keys.STUDY} = '{study}' and {kind}" if study else kind


def _chart(key: str, section: str) -> dict:
    """A line chart of `key` over steps, every run of the view drawn."""
    return {
        "type": "LINE",
        "uuid": f"symattn-{key}",
        "metricSectionId": f"symattn-{section}",
        "metricKey": key,
        "displayName": key,
        "isGenerated": True,
        "deleted": False,
        "runsCountToCompare": CHART_ROWS,
        "selectedMetricKeys": [key],
        "xAxisKey": "step",
        "scaleType": "linear",
        "lineSmoothness": 0,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def view_state(search_filter: str) -> dict:
    """The runs page's state for the runs `search_filter` finds (MLflow 3.17's
    `ExperimentPageUIState` and search facets)."""
    sections = [
        {
            "uuid": f"symattn-{name}",
            "name": name,
            "display": True,
            "isReordered": True,
            "deleted": False,
            "isGenerated": True,
        }
        for name, _ in SECTIONS
    ]
    charts = [_chart(key, name) for name, metrics in SECTIONS for key in metrics]
    return {
        "searchFilter": search_filter,
        "orderByKey": f"metrics.`{keys.ESCAPE_STEP}`",
        "orderByAsc": True,
        "selectedColumns": [
            f"tags.`{keys.SIZE}`",
            f"tags.`{keys.VARIANT}`",
            f"tags.`{keys.SEED}`",
            f"metrics.`{keys.ESCAPE_STEP}`",
            f"metrics.`{keys.ESCAPE_LOW}`",
            f"metrics.`{keys.ESCAPE_CENSORED}`",
            f"tags.`{keys.ESCAPE_FLOOR}`",
            f"metrics.`{keys.VAL_LOSS}`",
        ],
        "compareRunSections": sections,
        "compareRunCharts": charts,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


class RestStore:
    """The store as `symattn ui` reaches it: the server's REST API (`rest(path, body)`)."""

    def __init__(self, rest: Callable[[str, dict], dict]):
        self.rest = rest

    def runs(self, experiment_id: str, search_filter: str) -> list[tuple[str, dict]]:
        found, token = [], None
        while True:
            body = {"experiment_ids": [experiment_id], "filter": search_filter, "max_results": 1000}
            page = self.rest("runs/search", body | ({"page_token": token} if token else {}))
            found += [
                (run["info"]["run_id"], {t["key"]: t["value"] for t in run["data"].get("tags", [])})
                for run in page.get("runs", [])
            ]
            token = page.get("next_page_token")
            if not token:
                return found

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.rest("runs/set-tag", {"run_id": run_id, "key": key, "value": value})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.rest(
            "experiments/set-experiment-tag", {"experiment_id": experiment_id, "key": key, "value": value}
        )


class ClientStore:
    """The store through an `MlflowClient` (an import writes the paper's view so)."""

    def __init__(self, client):
        self.client = client

    def runs(self, experiment_id: str, search_filter: str) -> list[tuple[str, dict]]:
        from mlflow.entities import ViewType

        found, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], search_filter, ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
            )
            found += [(run.info.run_id, run.data.tags) for run in page]
            token = page.token
            if not token:
                return found

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)


def write_view(store, experiment_id: str, key: str, name: str, search_filter: str) -> str:
    """Colour the runs `search_filter` finds by variant and store their view on the experiment,
    named `name` in MLflow's views menu; returns its key."""
    from analysis.figures import variant_colors

    runs = store.runs(experiment_id, search_filter)
    colors = variant_colors([tags.get(keys.VARIANT, "") for _, tags in runs])
    for run_id, tags in runs:
        color = colors[tags.get(keys.VARIANT, "")]
        if tags.get(RUN_COLOR) != color:
            store.set_tag(run_id, RUN_COLOR, color)
    now = int(time.time() * 1000)
    view = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(view_state(search_filter))}
    store.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(view))
    return key


def write_study_view(rest: Callable[[str, dict], dict], experiment_id: str, study: str) -> str:
    """The view of a study's cells, through the server's REST API."""
    return write_view(RestStore(rest), experiment_id, view_key(study), f"Study {study}", cell_filter(study))


def view_route(experiment_id: str, key: str) -> str:
    """The route (after `#/`) that opens the view: charts first, in model-training mode."""
    return f"experiments/{experiment_id}/runs?workflowType=machine_learning&compareRunsMode=CHART&viewStateShareKey={key}"


def comparison_route(experiment_ids: list[str]) -> str:
    """The route that lists the pre-training runs of several experiments (a study's and the paper's)
    together, sorted by escape step."""
    from urllib.parse import quote

    ids = quote(json.dumps(sorted(experiment_ids)))
    order = quote(f"metrics.`{keys.ESCAPE_STEP}`", safe="")
    return (
        f"compare-experiments/s?experiments={ids}&searchFilter={quote(cell_filter(), safe='')}"
        f"&orderByKey={order}&orderByAsc=true&workflowType=machine_learning"
    )
