"""Where a fine-tuning's weights come from, checked before anything is written: a pre-training
run's kept step (`--run R --step S`), a kept weights file (`--weights FILE`, found on the run that
registered it), or a Hugging Face `BertForMaskedLM` folder (`--hf DIR`: config.json, the weights and
a vocab.txt or tokenizer.json). Each gives the model's config, the weights file, the tokenizer and
the tags every fine-tuning run of it carries."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from pydantic import ValidationError

from symattn import keys
from symattn.config import RunConfig, flatten
from symattn.data.cache import sha256_file
from symattn.errors import one_line
from symattn.model.config import SIZES, ModelConfig
from symattn.run.stored_checkpoints import fetch
from symattn.tracking.store import kept_checkpoints

# Params a pre-training run logs beside its config (`symattn.run.record.run_params`).
_NOT_CONFIG = {
    *keys.PARAM_COUNTS,
    keys.FLOPS_PER_TOKEN,
    keys.DATA_FLOOR,
    keys.UNIGRAM_ENTROPY,
    keys.VAL_FLOOR,
}
# Tags of a pre-training run that its fine-tuning runs carry too.
_INHERITED = (
    keys.VARIANT,
    keys.ATTENTION,
    keys.SCHEME,
    keys.INIT,
    keys.SIZE,
    keys.SEED,
    keys.GROUP,
    keys.STUDY,
    keys.DATA_FINGERPRINT,
)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_TOKENIZERS = ("tokenizer.json", "vocab.txt")


@dataclass(frozen=True)
class Source:
    """What a fine-tuning starts from."""

    model: ModelConfig
    weights: Path
    label: str  # names its fine-tuning runs: the pre-training run's name, or the folder's
    step: Optional[int] = None  # the pre-training step (None for an HF folder)
    run_id: Optional[str] = None  # the pre-training run (None for an HF folder)
    experiment_id: Optional[str] = None  # where its fine-tuning runs go (default: --experiment)
    tags: dict = field(default_factory=dict)
    data_fingerprint: Optional[str] = None  # the tokenizer: a pre-training run's data cache entry...
    tokenizer_file: Optional[Path] = None  # ...or an HF folder's file
    cache_dir: Optional[Path] = None

    def load_tokenizer(self):
        from symattn.data import load_prepared
        from symattn.data.tokenizer import load_tokenizer_file

        if self.tokenizer_file is not None:
            return load_tokenizer_file(self.tokenizer_file)
        return load_prepared(self.data_fingerprint, self.cache_dir).tokenizer


def config_from_params(params: dict[str, str]) -> RunConfig:
    """The resolved config a pre-training run logged as flattened params (MLflow keeps them as
    text: a setting whose default is text stays text, e.g. `speed.precision: "32"`)."""
    defaults = flatten(RunConfig().to_dict())
    config: dict = {}
    for key, text in params.items():
        if key in _NOT_CONFIG:
            continue
        as_text = isinstance(defaults.get(key), str) or key.startswith("tracking.tags.")  # tags are text
        value = None if text == "None" else text if as_text else yaml.safe_load(text)
        *blocks, leaf = key.split(".")
        node = config
        for block in blocks:
            node = node.setdefault(block, {})
        node[leaf] = value
    # A recorded keep list may name steps past the run's budget (which a config refuses): it never
    # reached them, so they are dropped, and the steps it did keep still load.
    keep, max_steps = config.get("checkpoint", {}).get("keep"), config.get("optim", {}).get("max_steps")
    if isinstance(keep, list) and isinstance(max_steps, int):
        config["checkpoint"]["keep"] = [s for s in keep if not isinstance(s, int) or s <= max_steps]
    # A run logs its size preset expanded; where the shape is the preset's, the preset stands alone.
    model = config.get("model", {})
    shape = {
        k: model.pop(k) for k in ("layers", "hidden", "heads", "intermediate") if model.get(k) is not None
    }
    preset = RunConfig.model_validate(config).model
    if any(getattr(preset, f"n_{k}") != v for k, v in shape.items()):
        model.update(shape)
    return RunConfig.model_validate(config)


def pretraining_run(client, run_id: str):
    """The pre-training run `run_id`, or a one-line `ValueError`."""
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ValueError(
            f"no MLflow run {run_id!r} in {client.tracking_uri}; check the run id (symattn status, or the MLflow UI)"
        ) from None
    if run.data.tags.get(keys.KIND, keys.PRETRAIN) != keys.PRETRAIN:
        raise ValueError(f"run {run_id} is a {run.data.tags[keys.KIND]} run; give a pre-training run")
    if keys.IMPORTED_FROM in run.data.tags:
        raise ValueError(
            f"run {run_id} holds published results imported from {run.data.tags[keys.IMPORTED_FROM]}, "
            "not weights; give a pre-training run of the suite, or a published model's folder with --hf"
        )
    return run


def run_sources(client, run_id: str, steps, roots=()) -> list[Source]:
    """Run `run_id` at each kept step (`"all"`: its whole kept series), every file checked against
    its recorded sha256; `roots`: checkpoint folders to look in first (`tracking.kept_checkpoints`)."""
    run = pretraining_run(client, run_id)
    kept = kept_checkpoints(run, roots)
    if steps == "all":
        steps = sorted(kept)
        if not steps:
            raise ValueError(f"run {run_id} kept no weights; set checkpoint.keep when pre-training")
    config = config_from_params(run.data.params)
    return [_run_source(client, run, config, kept, step) for step in steps]


def _run_source(client, run, config: RunConfig, kept: dict, step: int) -> Source:
    run_id = run.info.run_id
    if step not in kept:
        have = ", ".join(f"{s:,}" for s in sorted(kept)) or "none (set checkpoint.keep when pre-training)"
        raise ValueError(f"run {run_id} kept no weights at step {step:,}; kept steps: {have}")
    path = Path(kept[step]["path"])
    if not path.is_file() and "artifact" in kept[step]:  # logged to the store (checkpoint.upload)
        fetch(client, run_id, kept[step]["artifact"], kept[step]["sha256"], path)
    if not path.is_file():
        raise ValueError(
            f"the weights of run {run_id} at step {step:,} are missing ({path}); copy its checkpoint folder "
            "there, or set SYMATTN_HOME to the folder whose checkpoints/ holds it"
        )
    if sha256_file(path) != kept[step]["sha256"]:
        raise ValueError(
            f"the weights of run {run_id} at step {step:,} ({path}) do not match their recorded sha256"
        )
    pre = run.data.tags
    tags = {
        keys.PARENT_RUN_ID: run_id,
        keys.PRETRAIN_RUN_ID: run_id,
        keys.CHECKPOINT_STEP: step,
        **{key: pre[key] for key in _INHERITED if key in pre},
    }
    return Source(
        model=config.model,
        weights=path,
        label=run.info.run_name or run_id[:8],
        step=step,
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        tags=tags,
        data_fingerprint=pre.get(keys.DATA_FINGERPRINT),
        cache_dir=config.data.cache_dir,
    )


_KEPT_FILE = re.compile(r"step-(\d+)\.pt")


def file_source(client, path: str) -> Source:
    """A kept weights file, found on the run that registered it (`<run id>/kept/step-N.pt`)."""
    p = Path(path).expanduser().resolve()
    match = _KEPT_FILE.fullmatch(p.name)
    if not p.is_file() or not match or p.parent.name != "kept":
        raise ValueError(
            f"{path} is not a kept weights file (<checkpoints>/<experiment>/<run id>/kept/step-N.pt); "
            "give --run and --step, or --hf for a Hugging Face folder"
        )
    run_id, step = p.parent.parent.name, int(match[1])
    [src] = run_sources(client, run_id, [step], roots=[p.parents[3]])  # <root>/<experiment>/<run>/kept/
    if src.weights.resolve() != p:
        raise ValueError(f"{path} is not the file run {run_id} kept at step {step:,} ({src.weights})")
    return src


_SAVE_AGAIN = (
    "write the folder again with BertForMaskedLM.save_pretrained and the tokenizer's save_pretrained"
)
# What config.json must give (BertConfig writes them all): the model's dimensions.
_HF_DIMS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)


def hf_source(folder: str) -> Source:
    """A Hugging Face `BertForMaskedLM` folder (as `save_pretrained` writes it, with its tokenizer):
    vanilla attention, the model's dimensions taken from config.json. Every file is checked here,
    before a store is opened: the config, that the weights file is one, and the tokenizer."""
    root = Path(folder).expanduser()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"{folder} has no config.json; give a folder written by BertForMaskedLM.save_pretrained"
        )
    weights = next((root / n for n in HF_WEIGHTS if (root / n).is_file()), None)
    tokenizer_path = next((root / n for n in HF_TOKENIZERS if (root / n).is_file()), None)
    missing = [
        what
        for what, found in (
            (f"weights ({' or '.join(HF_WEIGHTS)})", weights),
            (f"tokenizer ({' or '.join(HF_TOKENIZERS)})", tokenizer_path),
        )
        if found is None
    ]
    if missing:
        raise ValueError(f"{folder} has no {' and no '.join(missing)}; {_SAVE_AGAIN} there")
    hf = _hf_config(config_path)
    dims = (hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"])
    size = next((name for name, preset in SIZES.items() if tuple(preset[:3]) == dims), None)
    try:
        model = ModelConfig(
            size=size or "base",
            layers=None if size else dims[0],
            hidden=None if size else dims[1],
            heads=None if size else dims[2],
            intermediate=hf["intermediate_size"] if hf["intermediate_size"] != 4 * dims[1] else None,
            vocab_size=hf["vocab_size"],
            max_positions=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id", 0),
        )
    except ValidationError as exc:
        raise ValueError(f"{config_path}: {one_line(exc)}") from None
    _check_weights_file(weights)
    _check_tokenizer(tokenizer_path, model.vocab_size)
    tags = {
        keys.VARIANT: model.attention.label,
        keys.ATTENTION: model.attention.variant,
        keys.SIZE: size or "{}x{}x{}".format(*dims),
        keys.WEIGHTS_SOURCE: str(root.resolve()),
        keys.WEIGHTS_SHA256: sha256_file(weights),
    }
    return Source(
        model=model, weights=weights, label=root.resolve().name, tags=tags, tokenizer_file=tokenizer_path
    )


def _hf_config(path: Path) -> dict:
    """config.json of an HF BERT folder, with the keys the model needs, or a one-line refusal that
    names the file, what is wrong and the fix."""
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text, so not a config.json; {_SAVE_AGAIN}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {_SAVE_AGAIN}"
        ) from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path} holds a JSON {type(hf).__name__}, not a mapping of settings; {_SAVE_AGAIN}")
    lacking = [key for key in ("model_type", *_HF_DIMS) if key not in hf]
    if lacking:
        raise ValueError(f"{path} lacks {', '.join(lacking)}, which the model needs; {_SAVE_AGAIN}")
    if hf["model_type"] != "bert":
        raise ValueError(
            f"{path} is a {hf['model_type']!r} model; only BERT loads here (a BertForMaskedLM folder)"
        )
    for key in _HF_DIMS:
        value = hf[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"{path}: {key} is {json.dumps(value)}, not a whole number above 0; {_SAVE_AGAIN}"
            )
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: only gelu activations and absolute positions load here")
    return hf


def _check_weights_file(path: Path) -> None:
    """That the weights file is one (its format's header reads), without loading the tensors:
    whether they fit the model is checked when the model is built, before any run is created."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors":
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            ok = 0 < n <= size - 8
            if ok:
                try:
                    ok = isinstance(json.loads(f.read(n)), dict)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    ok = False
            what = "safetensors"
        else:  # torch.save: a zip archive, or a pickle in the legacy format
            ok = head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")
            what = "PyTorch weights"
    if not ok:
        raise ValueError(f"{path} is not a readable {what} file ({size:,} bytes); {_SAVE_AGAIN}")


def _check_tokenizer(path: Path, vocab_size: int) -> None:
    """That the tokenizer loads, has BERT's special tokens, and emits no id the model lacks."""
    from symattn.data.errors import DataError
    from symattn.data.tokenizer import load_tokenizer_file

    try:
        tokenizer = load_tokenizer_file(path)
    except DataError as exc:
        text = one_line(exc)
        raise ValueError(text if str(path) in text else f"{path}: {text}") from None
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise ValueError(
            f"{path} has {n} tokens, but config.json's vocab_size {vocab_size} covers ids up to {vocab_size - 1}; "
            "give the tokenizer saved with this model"
        )
