"""A study's runs as plain files, so that its figures and tables regenerate without the MLflow store
and parts of one study that ran on different machines or days merge into one analysis.

`symattn figures NAME` writes the export into `export/` of its output folder:

- `runs.csv`: one row per pre-training run (tags, parameter counts, every param as `param.<name>`);
- `curves.csv.gz`: every evaluation of every run (`run_id, metric, step, value`): the validation
  loss and the attention diagnostics;
- `finetune.csv`: the fine-tuning results, one row per (run, checkpoint, task, seed), if any;
- `analyses.json`: the analyses the study stated, as recorded when it was queued;
- `meta.json`: the study it is an export of.

`symattn figures NAME --from-export DIR [--from-export DIR ...]` reads one or several exports
instead of the store: exports of one study only; a run in several is taken once (its finished
copy, else its longest), its curve points once each; an analysis stated in several is taken as
the export that saw the most cells started before it was stated (the least favourable label).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.frames import CURVE_COLUMNS, GLUE_COLUMNS, Frames, final_checkpoints

RUNS, CURVES, FINETUNE, ANALYSES, META = (
    "runs.csv",
    "curves.csv.gz",
    "finetune.csv",
    "analyses.json",
    "meta.json",
)
_TIMES = ("start_time", "end_time")
# Ids read back as text: a hash of digits only would otherwise become a number.
_TEXT = {c: str for c in ("run_id", "experiment_id", "pretrain_run_id", "group", "cell", "data_fingerprint")}


def write(data: Frames, registrations: dict, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / RUNS, folder / CURVES, folder / ANALYSES, folder / META]
    (folder / META).write_text(json.dumps({"study": data.source}, indent=1) + "\n")
    data.runs.to_csv(folder / RUNS, index=False)
    curves = data.curves[CURVE_COLUMNS].sort_values(["run_id", "metric", "step"], kind="stable")
    curves.to_csv(
        folder / CURVES, index=False, float_format="%.7g", compression={"method": "gzip", "mtime": 0}
    )
    (folder / ANALYSES).write_text(json.dumps(registrations, indent=1, sort_keys=True) + "\n")
    if len(data.glue_checkpoints):
        data.glue_checkpoints.to_csv(folder / FINETUNE, index=False)
        written.append(folder / FINETUNE)
    return written


def _check(folder: Path) -> Path:
    folder = Path(folder)
    missing = [name for name in (RUNS, CURVES, ANALYSES, META) if not (folder / name).is_file()]
    if missing:
        raise LookupError(
            f"{folder} is not an export of `symattn figures` (no {missing[0]}); give the export/ folder "
            "of a report's output"
        )
    return folder


def read(folders, name: str) -> tuple[Frames, dict]:
    """The frames and stated analyses of one or several exports, merged."""
    folders = [_check(f) for f in folders]
    for f in folders:
        study = json.loads((f / META).read_text()).get("study")
        if study != name:
            raise LookupError(f"{f} is an export of {study!r}, not of {name!r}; give exports of one study")
    runs = pd.concat([pd.read_csv(f / RUNS, dtype=_TEXT) for f in folders], ignore_index=True)
    curves = pd.concat([pd.read_csv(f / CURVES, dtype={"run_id": str}) for f in folders], ignore_index=True)
    curves = curves.drop_duplicates(["run_id", "metric", "step"], keep="last")
    for column in _TIMES:
        runs[column] = pd.to_datetime(runs[column], utc=True, format="ISO8601")
    points = curves.groupby("run_id").size()
    runs = (
        runs.assign(_finished=runs["state"].eq("FINISHED"), _points=runs["run_id"].map(points).fillna(0))
        .sort_values(["_finished", "_points"], kind="stable")
        .drop_duplicates("run_id", keep="last")
        .drop(columns=["_finished", "_points"])
        .sort_values("start_time", kind="stable")
        .reset_index(drop=True)
    )
    glue = [pd.read_csv(f / FINETUNE, dtype=_TEXT) for f in folders if (f / FINETUNE).is_file()]
    glue = (
        pd.concat(glue, ignore_index=True).drop_duplicates() if glue else pd.DataFrame(columns=GLUE_COLUMNS)
    )
    registrations: dict = {}
    for f in folders:
        for analysis, registration in json.loads((f / ANALYSES).read_text()).items():
            known = registrations.setdefault(analysis, registration)
            if known["digest"] != registration["digest"]:
                raise LookupError(
                    f"the exports state two different analyses named {analysis!r} ({f}); merge exports of one study"
                )
            if registration["cells_started"] > known["cells_started"]:
                registrations[analysis] = registration
    frames = Frames(
        runs=runs, curves=curves, glue=final_checkpoints(glue), glue_checkpoints=glue, source=name
    )
    return frames, registrations
