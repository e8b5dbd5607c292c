"""The page `symattn ui` opens: a study's cells compared, as MLflow 3.17's UI can show them.

MLflow keeps no server-side default view, but it opens a *shared view*: an experiment tag
`mlflow.sharedViewState.<key>` holding the runs page's state, named by the URL's
`viewStateShareKey` on the route `#/experiments/<id>/runs` (the bare experiment route drops it).
The view written here filters the study's cells (a filter or a metric sort lists runs flat, not
under their study run; it also keeps grouping and charts inside one study), sorts them by escape
step (runs that never escaped last), shows the variant, seed and escape columns in the table, and
puts `val/loss` first, then the escape metrics, the training curves and the diagnostics. One colour per
variant comes from the run tag `mlflow.runColor`, set on each cell with the figures' palette.

What MLflow cannot do: show columns beside the charts (the chart view lists run names only, in
the view's order; the table view, one click, has the columns), choose a group's colour (they are hashed from its
name, so colours are per run here, not grouped), expand a parent row, or turn off its Assistant
panel, which opens by itself on a browser's first visit to a loopback address (its close button
keeps it closed in that browser). The view opens with a banner "You're viewing a shared view".
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


def cell_filter(study: str) -> str:
    return f"tags.{keys.STUDY} = '{study}' and tags.{keys.KIND} = '{keys.PRETRAIN}'"


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


def view_state(study: str) -> dict:
    """The runs page's state for `study` (MLflow 3.17's `ExperimentPageUIState` and search facets)."""
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
        "searchFilter": cell_filter(study),
        "orderByKey": f"metrics.`{keys.ESCAPE_STEP}`",
        "orderByAsc": True,
        "selectedColumns": [
            f"tags.`{keys.VARIANT}`",
            f"tags.`{keys.SEED}`",
            f"metrics.`{keys.ESCAPE_STEP}`",
            f"metrics.`{keys.ESCAPE_LOW}`",
            f"metrics.`{keys.ESCAPE_CENSORED}`",
            f"metrics.`{keys.VAL_LOSS}`",
        ],
        "compareRunSections": sections,
        "compareRunCharts": charts,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def write_view(rest: Callable[[str, dict], dict], experiment_id: str, study: str) -> str:
    """Colour the study's cells by variant and store its view on the experiment, through the
    server's REST API (`rest(path, body)`); returns the view's key."""
    from analysis.figures import variant_colors

    cells, token = [], None
    while True:
        body = {"experiment_ids": [experiment_id], "filter": cell_filter(study), "max_results": 1000}
        page = rest("runs/search", body | ({"page_token": token} if token else {}))
        cells += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in cells]
    colors = variant_colors([t.get(keys.VARIANT, "") for t in tags])
    for run, tag in zip(cells, tags):
        color = colors[tag.get(keys.VARIANT, "")]
        if tag.get(RUN_COLOR) != color:
            rest("runs/set-tag", {"run_id": run["info"]["run_id"], "key": RUN_COLOR, "value": color})
    now = int(time.time() * 1000)
    view = {
        "name": f"Study {study}",
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(view_state(study)),
    }
    key = view_key(study)
    rest(
        "experiments/set-experiment-tag",
        {"experiment_id": experiment_id, "key": VIEW_TAG_PREFIX + key, "value": json.dumps(view)},
    )
    return key


def view_route(experiment_id: str, key: str) -> str:
    """The route (after `#/`) that opens the view: charts first, in model-training mode."""
    return f"experiments/{experiment_id}/runs?workflowType=machine_learning&compareRunsMode=CHART&viewStateShareKey={key}"
