"""What a pre-training run records in MLflow: its tags, params (config, parameter counts, FLOPs and
the data's floor), dataset input, its escape from the floor when it ends, and its artifacts."""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

from symattn import keys
from symattn.config import RunConfig, flatten
from symattn.data.sources import source_param
from symattn.errors import one_line
from symattn.model.bert import flops_per_token
from symattn.model.diagnostics import coefficient_spectra
from symattn.run.checkpoints import save_weights
from symattn.run.mlm import MLMPretraining
from symattn.tracking.store import RunTracker, StoreFull, package_versions, source_tags


def run_tags(cfg: RunConfig, data_fingerprint: str) -> dict[str, str]:
    att = cfg.model.attention
    own = cfg.tracking.tags
    cell = keys.STUDY in own  # a sweep cell: a run of the worker, the child of its study's run
    return {
        keys.KIND: keys.PRETRAIN,
        keys.ATTENTION: att.variant,
        keys.SCHEME: att.resolved_scheme,
        keys.INIT: att.resolved_init,
        keys.VARIANT: att.label,
        keys.SIZE: cfg.model.size,
        keys.SEED: str(cfg.seed),
        keys.GROUP: cfg.group_id(),
        keys.CONFIG_HASH: cfg.config_hash(),
        keys.DATA_FINGERPRINT: data_fingerprint,
        **source_tags(keys.WORK_COMMAND if cell else keys.TRAIN_COMMAND),
        **({keys.PARENT_RUN_ID: own[keys.STUDY_RUN_ID]} if keys.STUDY_RUN_ID in own else {}),
        **{f"{keys.VERSION_PREFIX}{k}": v for k, v in package_versions().items()},
        **own,
    }


def skipped_files(corpus: dict) -> dict[str, str]:
    """The corpus files its data left out as not UTF-8 (`invalid_utf8: skip`), as the run's tags: how
    many, and the first (when the corpus stats name it); none when no file was skipped. `corpus`:
    the data's corpus stats, one source's or several (`sources`)."""
    parts = corpus.get("sources") or [corpus]
    count = sum(int(part.get("invalid_utf8_skipped") or 0) for part in parts)
    if not count:
        return {}
    first = next((part["invalid_utf8_first"] for part in parts if part.get("invalid_utf8_first")), None)
    return {keys.INVALID_UTF8_SKIPPED: str(count), **({keys.INVALID_UTF8_FIRST: str(first)} if first else {})}


# The description of an experiment of standalone runs (a sweep's worker describes its study's).
STANDALONE_NOTE = (
    "Pre-training runs of `symattn train`: one MLflow run per run config and seed, named "
    "size-variant-lr-seed; a resumed run continues its own run. Runs with the same tag `group` "
    "differ only in their attention block. What each run records: symattn/README.md."
)


def corpus_name(cfg: RunConfig) -> str:
    """The run's corpus as its dataset input is named: `pypi-news`, `hf:wikitext:<config>`, or
    a local file's or folder's name; several sources joined by `+`."""
    names = []
    for source in cfg.data.source:
        if source.type == "path":
            names.append(Path(source.path).name or str(source.path))
        elif source.type == "hf":
            names.append(f"hf:{source.name}" + (f":{source.config}" if source.config else ""))
        else:
            names.append(source.name)
    return "+".join(names)


def log_dataset(tracker: RunTracker, cfg: RunConfig, data) -> None:
    """The run's packed data (the data cache entry) as its dataset input, digest its fingerprint."""
    profile = {
        "train_blocks": len(data.train),
        "val_blocks": len(data.val),
        "seq_len": data.seq_len,
        "vocab_size": data.vocab_size,
        "fingerprint": data.fingerprint,
    }
    tracker.log_dataset(corpus_name(cfg), data.fingerprint, {"uri": str(data.path)}, profile)


def run_params(cfg: RunConfig, counts: dict[str, int], floor: dict, val_floor: float) -> dict:
    """The flattened config, parameter counts and FLOPs, and the data's context-free floor: L*, the
    unigram cross-entropy, and the context-free loss of the run's own validation targets, which its
    escape is measured from (`symattn.keys`)."""
    params = flatten(cfg.to_dict())
    m = cfg.model  # the size preset expanded: the shape the run had, not `None`
    params.update(
        {
            "model.layers": m.n_layers,
            "model.hidden": m.n_hidden,
            "model.heads": m.n_heads,
            "model.intermediate": m.n_intermediate,
            "data.source": source_param(cfg.data.source),
        }
    )
    params.update(zip(keys.PARAM_COUNTS, (counts["total"], counts["non_embedding"], counts["attention"])))
    params[keys.FLOPS_PER_TOKEN] = flops_per_token(cfg.model, cfg.data.seq_len, cfg.data.mlm_probability)
    params.update(
        {
            keys.DATA_FLOOR: floor["context_free_loss"],
            keys.UNIGRAM_ENTROPY: floor["unigram_entropy"],
            keys.VAL_FLOOR: val_floor,
        }
    )
    return params


def record_escape(tracker: RunTracker, floor: float, step: int) -> None:
    """Record the run's escape from `floor` as the report measures it (`analysis.convergence.
    headline_escape`), from its whole `val/loss` curve in the store, steps logged before a resume
    included, so that the run table sorts by it: metrics at `step` (`escape/low`, `escape/censored`,
    and `escape/step` only when the step is exact) and the tag `escape` as the report prints it
    (`symattn.keys`). A censored run never shows an exact-looking `escape/step`: one that an earlier
    end of the run recorded is overwritten with NaN. Never raises but `StoreFull` (the run cannot end
    in a full store): a run's end is not to be lost to its summary."""
    from symattn.convergence import TARGETS_FLOOR, escape_metrics, floor_tag, headline_escape

    try:
        client, run_id = tracker.client, tracker.run_id
        history = client.get_metric_history(run_id, keys.VAL_LOSS)
        values = [m.value for m in history]
        if not any(math.isfinite(v) for v in values):
            return  # no evaluation: no curve
        escape = headline_escape([m.step for m in history], values, floor)
        metrics = escape_metrics(escape)
        if escape.censored and keys.ESCAPE_STEP in client.get_run(run_id).data.metrics:
            metrics[keys.ESCAPE_STEP] = float("nan")
        tracker.log(step, metrics)
        tracker.flush()
        tracker.set_tags({keys.ESCAPE: str(escape), keys.ESCAPE_FLOOR: floor_tag(TARGETS_FLOOR, floor)})
    except StoreFull:
        raise
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"run {tracker.run_id}: its escape was not recorded ({one_line(exc)})", stacklevel=2)


def log_artifacts(tracker: RunTracker, cfg: RunConfig, module: MLMPretraining) -> None:
    layers = [layer.attention.self for layer in module.model.bert.encoder.layer]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        tracker.log_artifact(tmp / "config.yaml")
        diagnostics = {
            "metrics": module.val_metrics,
            "coefficient_singular_values": coefficient_spectra(layers),
        }
        (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=1))
        tracker.log_artifact(tmp / "diagnostics.json")
        if cfg.checkpoint.log_model:
            save_weights(module.model, tmp / "model.pt")
            tracker.log_artifact(tmp / "model.pt", "model")
