"""What `symattn train` checks before it builds data, opens a store or imports torch: the tracking
URI, the data settings (the cache folder, local corpus paths, a tokenizer file and the model's
vocabulary against it: `symattn.data.checks`), and the run a `--resume` asks for. A refused command
writes nothing, in a store or in the data cache, and answers in a second or two; `pretrain` checks
the same facts again once the data is built (the vocabulary it resolves is part of a run's
identity)."""

from __future__ import annotations

from typing import Union

from symattn import keys
from symattn.config import RunConfig
from symattn.data.checks import check_data
from symattn.paths import check_uri, check_writable, sqlite_path


def check_train(cfg: RunConfig, resume: Union[bool, str, None]) -> None:
    uri = check_uri(cfg.tracking.uri)
    check_writable(uri)
    given_vocab = cfg.model.vocab_size if "vocab_size" in cfg.model.model_fields_set else None
    check_data(cfg.data, given_vocab)
    if resume:
        _check_resume(cfg, uri, resume)


def _check_resume(cfg: RunConfig, uri: str, resume: Union[bool, str]) -> None:
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise ValueError(f"no MLflow store at {db}, so no run to resume; drop --resume to start a new run")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if isinstance(resume, str) and resume != "auto":
        try:
            run = client.get_run(resume)
        except MlflowException:
            raise ValueError(f"no MLflow run {resume!r} in {uri}; check the run id") from None
        if not _same_config(cfg, run):
            raise ValueError(
                f"run {resume} was made with a different config (hash {run.data.tags.get(keys.CONFIG_HASH)}, "
                f"this one {cfg.config_hash()}); resume it with its own config"
            )
        if run.info.status == "FINISHED":
            raise ValueError(f"run {resume} is already FINISHED; start a new run instead")
    elif resume is True:
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = (
            [] if exp is None else client.search_runs([exp.experiment_id], "attributes.status != 'FINISHED'")
        )
        if not any(_same_config(cfg, run) for run in runs):
            raise ValueError("no unfinished run of this config to resume; drop --resume to start a new run")


def _same_config(cfg: RunConfig, run) -> bool:
    """Whether `run` is a run of `cfg`: its hash is that of the config as given, or (runs made before
    a run's identity was its config as given) of the config with the run's resolved vocabulary."""
    recorded = run.data.tags.get(keys.CONFIG_HASH)
    if recorded == cfg.config_hash():
        return True
    vocab = run.data.params.get("model.vocab_size")
    if vocab is None or not vocab.isdigit():
        return False
    resolved = cfg.model_copy(update={"model": cfg.model.model_copy(update={"vocab_size": int(vocab)})})
    return recorded == resolved.config_hash()
