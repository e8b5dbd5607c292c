"""The ACL 2024 paper's published results as tidy frames (`analysis.frames.Frames`).

`paper_frames` reads them from the reference CSVs (`reference/acl2024/`), `imported_paper_frames`
from their import into MLflow (`symattn import acl2024`, through `analysis.mlflow_runs`): the same
frames but for the run ids. `analysis.paper_import` writes that import from these readers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis.frames import (
    CURVE_COLUMNS,
    GLUE_COLUMNS,
    GLUE_METRICS,
    PAPER_NAME,
    RUN_COLUMNS,
    Frames,
    canonical_metric,
    to_ints,
)
from analysis.mlflow_runs import client, glue_frame, metrics_frame, runs_frame, search_runs
from analysis.paths import REFERENCE_DIR
from symattn import keys
from symattn.model.variants import COEFFICIENT_INITS, COEFFICIENT_SCHEMES

# The paper's pairwise coefficients: one full d_h x d_h matrix per head, initialised with torch.randn.
DEFAULT_SCHEME, DEFAULT_INIT = COEFFICIENT_SCHEMES[0], COEFFICIENT_INITS[0]

# Parameter counts of BertForMaskedLM as published with the paper (Courtois et al., ACL Findings 2024).
PAPER_PARAMS = {
    ("base", "vanilla"): 109_514_298,
    ("base", "symmetric"): 102_427_194,
    ("base", "pairwise"): 103_017_018,
    ("small", "vanilla"): 28_795_194,
    ("small", "symmetric"): 27_744_570,
    ("small", "pairwise"): 27_875_642,
}
PAPER_VARIANTS = ("vanilla", "symmetric", "pairwise")
PAPER_FINAL_STEP = 200_000
# The GLUE dev results: the final models (5 fine-tuning seeds), the base models over checkpoints (1).
PAPER_GLUE_FILES = {"final": "glue_final_5seeds.csv", "checkpoints": "glue_over_checkpoints.csv"}


def _paper_run_id(size: str, variant: str) -> str:
    return f"{PAPER_NAME}/{size}/{variant}"


def paper_runs(sizes=("base", "small")) -> pd.DataFrame:
    """The paper's six pre-training runs (one seed per variant and size) as a runs frame."""
    rows = []
    for size in sizes:
        for variant in PAPER_VARIANTS:
            pairwise = variant == "pairwise"
            rows.append(
                {
                    "run_id": _paper_run_id(size, variant),
                    "experiment_id": PAPER_NAME,
                    "run_name": f"bert_{size}_{variant}",
                    "state": "FINISHED",
                    "kind": keys.PRETRAIN,
                    "study": PAPER_NAME,
                    "size": size,
                    "attention": variant,
                    "scheme": DEFAULT_SCHEME if pairwise else "none",
                    "init": DEFAULT_INIT if pairwise else "none",
                    "variant": variant,
                    "seed": 1,
                    "group": f"{PAPER_NAME}/{size}",
                    "params_total": PAPER_PARAMS[(size, variant)],
                }
            )
    return to_ints(pd.DataFrame(rows).reindex(columns=RUN_COLUMNS))


_LOSS_COLUMN = re.compile(r"^bert_(?P<size>[a-z]+)_(?P<variant>[a-z]+)_[\d-]+ - eval/loss$")


def paper_curves(sizes=("base", "small"), reference_dir: Path = REFERENCE_DIR) -> pd.DataFrame:
    """The paper's evaluation-loss curves as a curves frame (metric `val/loss`)."""
    parts = []
    for size in sizes:
        raw = pd.read_csv(Path(reference_dir) / f"validation_loss_bert_{size}.csv")
        # The exported "Step" counts tracker log calls, not optimizer steps: each 250 optimizer
        # steps gave 10 training logs and 1 evaluation, so evaluation k sits at tracker step
        # 11k - 1. The file's last row (tracker step 8801) re-evaluates the final model and is
        # left out, as the authors' plotting notebook does.
        tracker = raw["Step"].astype(int)
        keep = (tracker + 1) % 11 == 0
        steps = (tracker[keep] + 1) // 11 * 250
        for column in raw.columns:
            match = _LOSS_COLUMN.match(column)
            if match:
                parts.append(
                    pd.DataFrame(
                        {
                            "run_id": _paper_run_id(match["size"], match["variant"]),
                            "metric": keys.VAL_LOSS,
                            "step": steps.to_numpy(),
                            "value": raw.loc[keep, column].astype(float).to_numpy(),
                        }
                    )
                )
    curves = pd.concat(parts, ignore_index=True)
    curves["step"] = curves["step"].astype("int64")
    return curves[CURVE_COLUMNS]


def paper_glue(which: str = "final", reference_dir: Path = REFERENCE_DIR) -> pd.DataFrame:
    """The paper's GLUE dev results: `final` (200K-step models, 5 fine-tuning seeds, base and small)
    or `checkpoints` (base models along pre-training, 1 fine-tuning seed)."""
    raw = pd.read_csv(Path(reference_dir) / PAPER_GLUE_FILES[which])
    raw["metric"] = raw["metric"].map(canonical_metric)
    raw = raw[raw["metric"].isin(GLUE_METRICS)].copy()
    if "checkpoint_step" not in raw:
        raw["checkpoint_step"] = PAPER_FINAL_STEP
    raw["pretrain_run_id"] = [_paper_run_id(s, v) for s, v in zip(raw["size"], raw["variant"])]
    raw["seed"] = 1
    raw["group"] = PAPER_NAME + "/" + raw["size"]
    raw["recipe"] = ""  # one recipe, the paper's
    return _paper_glue_order(to_ints(raw[GLUE_COLUMNS]))


def _paper_glue_order(glue: pd.DataFrame) -> pd.DataFrame:
    """The paper's fine-tuning rows in one order, whichever source they were read from."""
    by = ["size", "variant", "checkpoint_step", "finetune_seed", "task", "metric"]
    return glue.sort_values(by, kind="stable").reset_index(drop=True)


def paper_frames(reference_dir: Path = REFERENCE_DIR) -> Frames:
    return Frames(
        runs=paper_runs(),
        curves=paper_curves(reference_dir=reference_dir),
        glue=paper_glue("final", reference_dir),
        glue_checkpoints=paper_glue("checkpoints", reference_dir),
        source=PAPER_NAME,
    )


def imported_paper_frames(tracking_uri: str | None = None) -> Frames:
    """`paper_frames` from the paper's runs imported into MLflow (`symattn import acl2024`), read
    as our own runs are (`search_runs`, `runs_frame`, `metrics_frame`, `glue_frame`): the same
    frames but for the run ids, which are the MLflow runs'. The final fine-tunings and those over
    checkpoints are told apart by the reference file each run was imported from."""
    mlflow_client = client(tracking_uri)
    imported = {keys.IMPORTED_FROM: PAPER_NAME}
    try:
        pretrain = search_runs(mlflow_client, PAPER_NAME, {**imported, keys.KIND: keys.PRETRAIN})
    except LookupError:
        pretrain = []
    if len(pretrain) != len(PAPER_PARAMS) or any(r.info.status != "FINISHED" for r in pretrain):
        raise LookupError(
            f"{len(pretrain)} of the paper's {len(PAPER_PARAMS)} pre-training runs are imported in "
            f"{mlflow_client.tracking_uri}; import them with: symattn import {PAPER_NAME} "
            f"--tracking-uri {mlflow_client.tracking_uri}"
        )
    order = {run_id: i for i, run_id in enumerate(paper_runs()["run_id"])}
    pretrain.sort(key=lambda run: order[run.data.tags[keys.IMPORTED_ID]])
    runs = runs_frame(pretrain)

    def glue_of(file: str) -> pd.DataFrame:
        found = search_runs(
            mlflow_client, PAPER_NAME, {**imported, keys.KIND: keys.FINETUNE, keys.IMPORTED_FILE: file}
        )
        return _paper_glue_order(glue_frame(found, runs))

    return Frames(
        runs=runs,
        curves=metrics_frame(mlflow_client, pretrain),
        glue=glue_of(PAPER_GLUE_FILES["final"]),
        glue_checkpoints=glue_of(PAPER_GLUE_FILES["checkpoints"]),
        source=PAPER_NAME,
    )
