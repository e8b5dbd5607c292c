"""Bad input, across every argument of every command: one line saying what is wrong and how to fix
it, exit 2, and nothing created or changed in any store, journal, cache or folder.

Each case runs the real command (`symattn.cli.main` with the case's arguments, in a process of its
own: tests/forked_cli.py forks it from a server that imported the package once) in a fresh home
(`SYMATTN_HOME`, its data cache inside it), and compares a snapshot of every file and folder of the
home before and after. A home is either empty of stores or holds a finished tiny run and a queued
study ("seeded"); its data cache is either absent (cold) or built (warm). Each case runs in both
cache states: the one its home has by nature in the default set (an empty home's cache cold, a
seeded home's warm), the other in the slow set. Refusals of the input itself are also run as
`python -m symattn`, to show they import neither torch nor MLflow.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_documents
from tests.forked_cli import ForkedCli
from tests.processes import symattn_in

TINY = [
    "data.vocab_size=200",
    "data.seq_len=32",
    "data.val_docs=8",
    "model.size=tiny",
    "optim.batch_size=8",
    "optim.max_steps=20",
    "eval.every_n_steps=10",
    "eval.batches=2",
    "speed.threads=1",
    "speed.progress_bar=false",
]

SPEC = """name: tiny
base: base.yaml
axes:
  model.attention.variant: [vanilla, symmetric]
"""

# (id, arguments, what the one line must say, home: "empty" or "seeded"). In the arguments, {corpus}
# is a corpus folder of the home, {run} the seeded run's id, {home} the home itself.
CASES = [
    # config of a run
    ("train-unknown-key", ["train", "model.attention.varient=symmetric"], "varient", "empty"),
    ("train-unknown-variant", ["train", "model.attention.variant=skew"], "skew", "empty"),
    ("train-unknown-size", ["train", "model.size=huge"], "huge", "empty"),
    ("train-negative-lr", ["train", "optim.lr=-1"], "lr", "empty"),
    ("train-lr-not-a-number", ["train", "optim.lr=fast"], "lr", "empty"),
    ("train-zero-steps", ["train", "optim.max_steps=0"], "max_steps", "empty"),
    ("train-zero-seq-len", ["train", "data.seq_len=0"], "seq_len", "empty"),
    ("train-missing-config", ["train", "nope.yaml"], "nope.yaml", "empty"),
    ("train-malformed-config", ["train", "broken.yaml"], "broken.yaml", "empty"),
    ("train-two-configs", ["train", "a.yaml", "b.yaml"], "more than one config file", "empty"),
    ("train-bad-override-syntax", ["train", "--set", "optim.lr"], "optim.lr", "empty"),
    # data
    (
        "train-missing-corpus",
        ["train", "data.source=path:/nonexistent/corpus"],
        "/nonexistent/corpus",
        "empty",
    ),
    ("train-unknown-source", ["train", "data.source=ftp:corpus"], "ftp", "empty"),
    ("train-unknown-tokenizer", ["train", "data.tokenizer=sentencepiece-xl"], "tokenizer", "empty"),
    # stores
    (
        "train-uri-one-slash",
        ["train", "base.yaml", "tracking.uri=sqlite:/x.db"],
        "sqlite",
        "empty",
    ),
    (
        "train-uri-missing-folder",
        ["train", "base.yaml", "tracking.uri=sqlite:////nonexistent/dir/mlflow.db"],
        "/nonexistent/dir",
        "empty",
    ),
    (
        "train-uri-unknown-scheme",
        ["train", "base.yaml", "tracking.uri=ftp://host/db"],
        "ftp",
        "empty",
    ),
    # resume
    (
        "resume-unknown-run-fresh",
        ["train", "base.yaml", "--resume", "0123456789abcdef0123456789abcdef"],
        "no MLflow store",
        "empty",
    ),
    (
        "resume-unknown-run",
        ["train", "base.yaml", "--resume", "0123456789abcdef0123456789abcdef"],
        "0123456789abcdef0123456789abcdef",
        "seeded",
    ),
    (
        "resume-another-config",
        [
            "train",
            "data.source=path:{corpus}",
            *TINY,
            "model.attention.variant=pairwise",
            "--resume",
            "{run}",
        ],
        "{run}",
        "seeded",
    ),
    ("resume-override-after", ["train", "--resume", "optim.lr=1e-3"], "--resume", "empty"),
    # sweep specs
    ("queue-missing-spec", ["queue", "nope.yaml"], "nope.yaml", "empty"),
    ("queue-malformed-spec", ["queue", "broken.yaml"], "broken.yaml", "empty"),
    ("queue-unknown-axis", ["queue", "bad-axis.yaml"], "model.attention.varient", "empty"),
    ("queue-bad-axis-value", ["queue", "bad-value.yaml"], "skew", "empty"),
    ("queue-bad-study-name", ["queue", "bad-name.yaml"], "name", "empty"),
    ("queue-bad-set", ["queue", "spec.yaml", "--set", "optim.lr=fast"], "lr", "empty"),
    ("queue-unknown-storage", ["queue", "spec.yaml", "--storage", "bogus://x"], "bogus", "empty"),
    (
        "queue-storage-missing-folder",
        ["queue", "spec.yaml", "--storage", "/nonexistent/dir/optuna.journal"],
        "/nonexistent/dir",
        "empty",
    ),
    ("run-missing-spec", ["run", "nope.yaml", "--devices", "cpu"], "nope.yaml", "empty"),
    # sweep studies
    ("status-unknown-study-fresh", ["status", "nosuch"], "nosuch", "empty"),
    ("status-unknown-study", ["status", "nosuch"], "nosuch", "seeded"),
    ("work-unknown-study-fresh", ["work", "nosuch", "--devices", "cpu"], "nosuch", "empty"),
    ("work-unknown-study", ["work", "nosuch", "--devices", "cpu"], "nosuch", "seeded"),
    (
        "work-missing-storage",
        ["work", "tiny", "--storage", "{home}/other.journal"],
        "other.journal",
        "seeded",
    ),
    ("work-no-such-gpu", ["work", "tiny", "--devices", "7"], "7", "seeded"),
    (
        "work-zero-per-device",
        ["work", "tiny", "--devices", "cpu", "--per-device", "0"],
        "per-device",
        "seeded",
    ),
    # figures
    ("figures-unknown-experiment", ["figures", "nosuch"], "nosuch", "seeded"),
    (
        "figures-missing-store",
        ["figures", "tiny", "--tracking-uri", "sqlite:///{home}/none.db"],
        "none.db",
        "seeded",
    ),
    ("figures-no-store-yet", ["figures", "tiny"], "mlflow.db", "empty"),
    ("figures-bad-threshold", ["figures", "tiny", "--loss-threshold", "low"], "loss-threshold", "seeded"),
    # fine-tuning
    (
        "finetune-unknown-run",
        ["finetune", "--run", "0123456789abcdef0123456789abcdef", "--step", "10", "--task", "sst2"],
        "0123456789abcdef0123456789abcdef",
        "seeded",
    ),
    ("finetune-no-step", ["finetune", "--run", "{run}", "--task", "sst2"], "--step", "seeded"),
    (
        "finetune-step-not-kept",
        ["finetune", "--run", "{run}", "--step", "7", "--task", "sst2"],
        "7",
        "seeded",
    ),
    (
        "finetune-unknown-task",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "nosuchtask"],
        "nosuchtask",
        "seeded",
    ),
    (
        "finetune-bad-seeds",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "--seeds", "a,b"],
        "seeds",
        "seeded",
    ),
    (
        "finetune-missing-hf",
        ["finetune", "--hf", "/nonexistent/bert", "--task", "sst2"],
        "/nonexistent/bert",
        "empty",
    ),
    (
        "finetune-missing-weights",
        ["finetune", "--weights", "/nonexistent/step.pt", "--task", "sst2"],
        "/nonexistent/step.pt",
        "seeded",
    ),
    (
        "finetune-no-store",
        ["finetune", "--run", "0123456789abcdef0123456789abcdef", "--step", "10", "--task", "sst2"],
        "mlflow.db",
        "empty",
    ),
    (
        "finetune-bad-recipe",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "lr=fast"],
        "lr",
        "seeded",
    ),
    # the paper's results and the UI
    ("import-unknown-source", ["import", "acl2025"], "acl2025", "empty"),
    (
        "import-missing-store-folder",
        ["import", "acl2024", "--tracking-uri", "sqlite:////nonexistent/m.db"],
        "/nonexistent",
        "empty",
    ),
    ("ui-no-store-yet", ["ui", "--port", "5999"], "mlflow.db", "empty"),
    # benchmark and parameter table
    ("bench-unknown-size", ["bench", "--size", "huge"], "huge", "empty"),
    ("bench-unknown-variant", ["bench", "--variants", "skew"], "skew", "empty"),
    ("bench-unknown-precision", ["bench", "--precision", "fp8"], "fp8", "empty"),
    ("bench-unknown-phase", ["bench", "--phases", "inference"], "inference", "empty"),
    (
        "bench-missing-overhead-spec",
        ["bench", "--overhead", "nope.yaml", "--overhead-only"],
        "nope.yaml",
        "empty",
    ),
    ("params-unknown-size", ["params", "--size", "huge"], "huge", "empty"),
    # every argument of every command: types, ranges, paths, repeats (refused while parsing)
    ("no-such-command", ["nosuch"], "nosuch", "empty"),
    ("unknown-flag", ["train", "--nosuch"], "--nosuch", "empty"),
    ("params-zero-vocab", ["params", "--vocab", "0"], "--vocab", "empty"),
    ("params-negative-positions", ["params", "--max-positions", "-1"], "--max-positions", "empty"),
    ("params-seq-len-not-a-number", ["params", "--seq-len", "long"], "--seq-len", "empty"),
    ("params-seq-len-past-positions", ["params", "--seq-len", "600"], "--max-positions", "empty"),
    ("train-key-twice", ["train", "optim.lr=1e-3", "optim.lr=2e-3"], "optim.lr is set twice", "empty"),
    ("train-set-twice", ["train", "--set", "seed=1", "--set", "seed=2"], "seed is given twice", "empty"),
    ("train-config-is-a-folder", ["train", "adir"], "adir", "empty"),
    ("resume-not-a-run-id", ["train", "base.yaml", "--resume", "last"], "not an MLflow run id", "seeded"),
    (
        "finetune-run-not-a-run-id",
        ["finetune", "--run", "abc", "--step", "1", "--task", "sst2"],
        "--run",
        "seeded",
    ),
    (
        "finetune-weights-a-folder",
        ["finetune", "--weights", "adir", "--task", "sst2"],
        "not a file",
        "seeded",
    ),
    ("finetune-hf-a-file", ["finetune", "--hf", "afile.txt", "--task", "sst2"], "not a folder", "empty"),
    (
        "finetune-negative-step",
        ["finetune", "--run", "{run}", "--step", "-1", "--task", "sst2"],
        "--step",
        "seeded",
    ),
    (
        "finetune-steps-not-all",
        ["finetune", "--run", "{run}", "--steps", "some", "--task", "sst2"],
        "--steps",
        "seeded",
    ),
    (
        "finetune-step-without-run",
        ["finetune", "--hf", "adir", "--step", "1", "--task", "sst2"],
        "--run",
        "empty",
    ),
    (
        "finetune-empty-experiment",
        ["finetune", "--hf", "adir", "--task", "sst2", "--experiment", " "],
        "--experiment",
        "empty",
    ),
    (
        "finetune-task-twice",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "--task", "sst2"],
        "sst2 is given twice",
        "seeded",
    ),
    (
        "finetune-seed-twice",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "--seeds", "1,1"],
        "repeats 1",
        "seeded",
    ),
    (
        "finetune-empty-seeds",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "--seeds", ""],
        "--seeds",
        "seeded",
    ),
    (
        "finetune-uri-unknown-scheme",
        ["finetune", "--run", "{run}", "--step", "20", "--task", "sst2", "--tracking-uri", "ftp://x/db"],
        "ftp",
        "seeded",
    ),
    ("queue-spec-a-folder", ["queue", "adir"], "not a file", "empty"),
    (
        "queue-set-twice",
        ["queue", "spec.yaml", "--set", "seed=1", "--set", "seed=2"],
        "seed is given twice",
        "empty",
    ),
    ("work-bad-study-name", ["work", "my study!", "--devices", "cpu"], "not a study name", "seeded"),
    ("work-devices-not-indices", ["work", "tiny", "--devices", "gpu"], "--devices", "seeded"),
    ("work-gpu-twice", ["work", "tiny", "--devices", "0,0"], "repeats GPU 0", "seeded"),
    ("work-per-device-not-a-number", ["work", "tiny", "--per-device", "two"], "--per-device", "seeded"),
    (
        "extend-unknown-study",
        ["extend", "nosuch", "--max-steps", "100", "--devices", "cpu"],
        "nosuch",
        "seeded",
    ),
    ("extend-no-budget", ["extend", "tiny", "--devices", "cpu"], "--max-steps", "seeded"),
    ("extend-zero-budget", ["extend", "tiny", "--max-steps", "0"], "--max-steps", "seeded"),
    (
        "extend-devices-not-indices",
        ["extend", "tiny", "--max-steps", "100", "--devices", "gpu"],
        "--devices",
        "seeded",
    ),
    (
        "extend-cells-waiting",
        ["extend", "tiny", "--max-steps", "100", "--devices", "cpu"],
        "still has cells waiting",
        "seeded",
    ),
    ("status-bad-study-name", ["status", "a/b"], "not a study name", "seeded"),
    (
        "status-missing-storage",
        ["status", "tiny", "--storage", "{home}/other.journal"],
        "other.journal",
        "seeded",
    ),
    ("status-zero-interval", ["status", "tiny", "--watch", "--interval", "0"], "--interval", "seeded"),
    ("status-interval-not-a-number", ["status", "tiny", "--interval", "often"], "--interval", "seeded"),
    ("run-spec-a-folder", ["run", "adir", "--devices", "cpu"], "not a file", "empty"),
    ("run-bad-axis-value", ["run", "bad-value.yaml", "--devices", "cpu"], "skew", "empty"),
    (
        "run-unknown-storage",
        ["run", "spec.yaml", "--devices", "cpu", "--storage", "bogus://x"],
        "bogus",
        "empty",
    ),
    ("run-devices-not-indices", ["run", "spec.yaml", "--devices", "gpu"], "--devices", "empty"),
    ("run-no-such-gpu", ["run", "spec.yaml", "--devices", "7"], "7", "empty"),
    (
        "run-zero-per-device",
        ["run", "spec.yaml", "--devices", "cpu", "--per-device", "0"],
        "--per-device",
        "empty",
    ),
    (
        "run-set-twice",
        ["run", "spec.yaml", "--set", "seed=1", "--set", "seed=2"],
        "seed is given twice",
        "empty",
    ),
    (
        "figures-negative-threshold",
        ["figures", "tiny", "--loss-threshold", "-1"],
        "--loss-threshold",
        "seeded",
    ),
    (
        "figures-threshold-twice",
        ["figures", "tiny", "--loss-threshold", "5", "--loss-threshold", "5"],
        "given twice",
        "seeded",
    ),
    ("figures-out-a-file", ["figures", "tiny", "--out", "afile.txt"], "afile.txt is a file", "seeded"),
    ("figures-out-under-a-file", ["figures", "tiny", "--out", "afile.txt/figs"], "is a file", "seeded"),
    ("figures-uri-unknown-scheme", ["figures", "tiny", "--tracking-uri", "ftp://x/db"], "ftp", "seeded"),
    ("import-uri-unknown-scheme", ["import", "acl2024", "--tracking-uri", "ftp://x/db"], "ftp", "empty"),
    ("bench-variant-twice", ["bench", "--variants", "vanilla,vanilla"], "repeats vanilla", "empty"),
    ("bench-precision-twice", ["bench", "--precision", "fp32,fp32"], "repeats fp32", "empty"),
    ("bench-phase-twice", ["bench", "--phases", "pretrain,pretrain"], "repeats pretrain", "empty"),
    ("bench-zero-batch", ["bench", "--batch", "0"], "--batch", "empty"),
    ("bench-seq-len-past-positions", ["bench", "--seq-len", "600"], "512", "empty"),
    ("bench-zero-ft-batch", ["bench", "--ft-batch", "0"], "--ft-batch", "empty"),
    ("bench-ft-seq-len-not-a-number", ["bench", "--ft-seq-len", "long"], "--ft-seq-len", "empty"),
    ("bench-zero-vocab", ["bench", "--vocab", "0"], "--vocab", "empty"),
    ("bench-zero-rounds", ["bench", "--rounds", "0"], "--rounds", "empty"),
    ("bench-zero-steps", ["bench", "--steps", "0"], "--steps", "empty"),
    ("bench-negative-warmup", ["bench", "--warmup", "-1"], "--warmup", "empty"),
    ("bench-unknown-device", ["bench", "--device", "tpu"], "tpu", "empty"),
    ("bench-no-gpu", ["bench", "--device", "cuda", "--no-memory"], "cuda", "empty"),
    ("bench-zero-threads", ["bench", "--threads", "0"], "--threads", "empty"),
    ("bench-unknown-clock", ["bench", "--clock", "sun"], "sun", "empty"),
    ("bench-zero-peak-size", ["bench", "--peak-size", "0"], "--peak-size", "empty"),
    ("bench-negative-seed", ["bench", "--seed", "-1"], "--seed", "empty"),
    ("bench-csv-a-folder", ["bench", "--csv", "adir"], "adir is a folder", "empty"),
    ("bench-csv-under-a-file", ["bench", "--csv", "afile.txt/b.csv"], "is a file", "empty"),
    (
        "bench-zero-overhead-steps",
        ["bench", "--overhead", "spec.yaml", "--overhead-steps", "0"],
        "--overhead-steps",
        "empty",
    ),
    ("bench-overhead-only-alone", ["bench", "--overhead-only"], "--overhead", "empty"),
    ("ui-port-out-of-range", ["ui", "--port", "70000"], "--port", "seeded"),
    ("ui-port-not-a-number", ["ui", "--port", "web"], "--port", "seeded"),
    ("ui-bad-host", ["ui", "--host", "my host"], "--host", "seeded"),
    ("ui-server-uri", ["ui", "--tracking-uri", "http://127.0.0.1:1"], "tracking server already", "seeded"),
    ("ui-optuna-port-out-of-range", ["ui", "--optuna", "--optuna-port", "0"], "--optuna-port", "seeded"),
    (
        "ui-missing-journal",
        ["ui", "--optuna", "--storage", "{home}/other.journal"],
        "other.journal",
        "seeded",
    ),
    (
        "ui-same-ports",
        ["ui", "--optuna", "--port", "5999", "--optuna-port", "5999"],
        "--optuna-port",
        "seeded",
    ),
    # what a run's data and tokenizer must be, checked before the cache is touched
    (
        "train-tokenizer-missing",
        ["train", "base.yaml", "data.vocab_size=null", "data.tokenizer={home}/nope.json"],
        "nope.json",
        "empty",
    ),
    (
        "train-tokenizer-not-json",
        ["train", "base.yaml", "data.vocab_size=null", "data.tokenizer={home}/broken-tokenizer.json"],
        "broken-tokenizer.json",
        "seeded",
    ),
    (
        "train-tokenizer-without-pad",
        ["train", "base.yaml", "data.vocab_size=null", "data.tokenizer={home}/nopad.txt"],
        "[PAD]",
        "empty",
    ),
    (
        "train-model-vocab-vs-tokenizer-file",
        [
            "train",
            "base.yaml",
            "data.vocab_size=null",
            "data.tokenizer={home}/vocab.txt",
            "model.vocab_size=999",
        ],
        "model.vocab_size 999",
        "seeded",
    ),
    (
        "train-model-vocab-vs-bert",
        [
            "train",
            "base.yaml",
            "data.vocab_size=null",
            "data.tokenizer=bert-base-uncased",
            "model.vocab_size=8192",
        ],
        "model.vocab_size 8192",
        "empty",
    ),
    (
        "train-model-vocab-vs-wordpiece",
        ["train", "base.yaml", "model.vocab_size=300"],
        "model.vocab_size 300",
        "empty",
    ),
    (
        "train-val-docs-every-document-fresh",
        ["train", "base.yaml", "data.val_docs=60"],
        "val_docs 60",
        "empty",
    ),
    ("train-val-docs-every-document", ["train", "base.yaml", "data.val_docs=60"], "val_docs 60", "seeded"),
    (
        "train-corpus-glob-matches-nothing",
        ["train", "base.yaml", "data.source={{type: path, path: {corpus}, glob: '*.md'}}"],
        "*.md",
        "empty",
    ),
    (
        "train-cache-under-a-file",
        ["train", "base.yaml", "data.cache_dir={home}/base.yaml/cache"],
        "data cache",
        "empty",
    ),
    (
        "train-vocab-below-the-alphabet",
        ["train", "base.yaml", "data.vocab_size=20"],
        "vocab_size 20",
        "seeded",
    ),
    (
        "train-keep-beyond-max-steps",
        ["train", "base.yaml", "checkpoint.keep=[10, 30]"],
        "checkpoint.keep step 30",
        "empty",
    ),
    (
        "train-variant-under-both-names",
        ["train", "model.attention.kind=pairwise", "model.attention.variant=vanilla"],
        "same setting",
        "empty",
    ),
    ("queue-variant-axis-under-both-names", ["queue", "both-names.yaml"], "same setting", "empty"),
    (
        "finetune-hf-config-not-json",
        ["finetune", "--hf", "{home}/bert-broken", "--task", "sst2"],
        "config.json is not valid JSON",
        "empty",
    ),
    (
        "finetune-hf-no-tokenizer",
        ["finetune", "--hf", "{home}/bert-no-tokenizer", "--task", "sst2"],
        "tokenizer.json or vocab.txt",
        "empty",
    ),
    (
        "train-corpus-not-utf8",
        [
            "train",
            "base.yaml",
            "data.source={{type: path, path: {home}/latin1, invalid_utf8: error}}",
            "data.val_docs=0.1",
        ],
        "not valid UTF-8",
        "empty",
    ),
    (
        "train-corpus-all-empty",
        ["train", "base.yaml", "data.source=path:{home}/blank", "data.val_docs=0.1"],
        "no documents",
        "empty",
    ),
    ("finetune-glue-no-hub", ["finetune", "--hf", "{home}/bert", "--task", "sst2"], "GLUE sst2", "empty"),
]


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
HF_CONFIG = {
    "model_type": "bert",
    "vocab_size": 31,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "max_position_embeddings": 128,
}


def _hf_folder(root: Path, config_text: str | None = None, tokenizer: bool = True) -> None:
    """A Hugging Face BERT folder as save_pretrained writes it (weights zero: only read, never run)."""
    import numpy as np
    from safetensors.numpy import save_file

    root.mkdir()
    (root / "config.json").write_text(config_text or json.dumps(HF_CONFIG))
    if tokenizer:
        (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    weights = {"bert.embeddings.word_embeddings.weight": np.zeros((31, 128), np.float32)}
    save_file(weights, root / "model.safetensors")


def _write_inputs(home: Path) -> None:
    corpus = home / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(make_documents(60)):
        (corpus / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    (home / "broken.yaml").write_text("model: {size: tiny\n  optim: [\n")
    (home / "a.yaml").write_text("seed: 1\n")
    (home / "b.yaml").write_text("seed: 2\n")
    (home / "adir").mkdir()
    (home / "afile.txt").write_text("not a folder\n")
    base: dict = {}
    for item in [f"data.source=path:{corpus}", *TINY]:
        key, value = item.split("=")
        *parents, leaf = key.split(".")
        node = base
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    (home / "base.yaml").write_text(yaml.safe_dump(base))
    (home / "spec.yaml").write_text(SPEC)
    (home / "bad-axis.yaml").write_text(SPEC.replace("model.attention.variant", "model.attention.varient"))
    (home / "bad-value.yaml").write_text(SPEC.replace("symmetric]", "skew]"))
    (home / "bad-name.yaml").write_text(SPEC.replace("name: tiny", "name: my study!"))
    (home / "both-names.yaml").write_text(SPEC + "  model.attention.kind: [pairwise]\n")
    (home / "latin1").mkdir()
    (home / "latin1" / "a.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (home / "blank").mkdir()
    (home / "blank" / "a.txt").write_text("  \n\n ")
    (home / "broken-tokenizer.json").write_text("{nope")
    (home / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (home / "nopad.txt").write_text("\n".join(VOCAB[1:]) + "\n")
    _hf_folder(home / "bert")
    _hf_folder(home / "bert-broken", config_text="{nope")
    _hf_folder(home / "bert-no-tokenizer", tokenizer=False)


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SYMATTN_CACHE")}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # The hub's address refuses at once: a command that would reach it says so without waiting.
    home_env = {
        "SYMATTN_HOME": str(home),
        "SYMATTN_CACHE": str(home / "cache"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    return {**env, **home_env, "PYTHONPATH": path}


def _symattn(home: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return symattn_in(home, _env(home), args, timeout)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory) -> tuple[Path, str]:
    """A home with a finished tiny run (kept weights at step 20), its data cache, and a queued study."""
    home = tmp_path_factory.mktemp("seeded")
    _write_inputs(home)
    out = _symattn(home, ["train", "base.yaml", "checkpoint.keep=[20]"])
    assert out.returncode == 0, out.stderr
    run = out.stdout.split()[1]
    out = _symattn(home, ["queue", "spec.yaml"])
    assert out.returncode == 0, out.stderr
    assert (home / "cache").is_dir()
    return home, run


@pytest.fixture(scope="module")
def cli():
    server = ForkedCli(_env(REPO))
    yield server
    server.close()


def _snapshot(home: Path) -> dict:
    entries = {}
    for path in sorted(home.rglob("*")):
        stat = path.stat()
        entries[str(path.relative_to(home))] = None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return entries


def _home(kind: str, cache: str, seeded: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A fresh home of the case's kind, its data cache warm (built by the seeded run) or cold."""
    home = tmp_path / "home"
    if kind == "seeded":
        shutil.copytree(seeded[0], home, symlinks=True)
        if cache == "cold":
            shutil.rmtree(home / "cache")
        return home, seeded[1]
    home.mkdir()
    _write_inputs(home)
    if cache == "warm":
        shutil.copytree(seeded[0] / "cache", home / "cache", symlinks=True)
    return home, "none"


def _natural(kind: str) -> str:
    return "warm" if kind == "seeded" else "cold"


PARAMS = [
    pytest.param(
        case, cache, id=f"{case[0]}-{cache}", marks=() if cache == _natural(case[3]) else pytest.mark.slow
    )
    for case in CASES
    for cache in ("cold", "warm")
]


@pytest.mark.parametrize("case, cache", PARAMS)
def test_bad_input_is_refused_in_one_line_before_anything_is_written(case, cache, seeded, cli, tmp_path):
    _, args, says, kind = case
    home, run = _home(kind, cache, seeded, tmp_path)
    fill = {"corpus": str(home / "corpus"), "run": run, "home": str(home)}
    args = [a.format(**fill) for a in args]
    before = _snapshot(home)
    out = cli.run(args, home, _env(home), timeout=120)
    # What only a build of local text can tell (a vocabulary with no room for merges) is refused
    # after the build's progress lines ("HH:MM:SS data: ..."), still in one line of its own.
    lines = [line for line in out.stderr.strip().splitlines() if not re.match(r"\d\d:\d\d:\d\d data: ", line)]
    assert out.returncode == 2, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert len(lines) == 1 and not out.stdout.strip(), out.stdout[-1000:] + out.stderr[-2000:]
    assert says.format(**fill) in lines[0], lines[0]
    assert lines[0].startswith("symattn"), lines[0]
    assert _snapshot(home) == before, "the refused command changed the home"


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_what_only_a_build_can_tell_ends_it_with_the_cache_as_it_was(cache, seeded, cli, tmp_path):
    """A validation split that tokenises to fewer tokens than one block: the build prints its
    stages, then the refusal as its last line, and leaves the cache as it found it."""
    home, _ = _home("empty", cache, seeded, tmp_path)
    before = _snapshot(home)
    out = cli.run(["train", "base.yaml", "data.seq_len=512", "data.val_docs=1"], home, _env(home))
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last.startswith("symattn train: "), out.stderr[-2000:]
    assert "fewer than one block" in last
    assert _snapshot(home) == before, "the refused build changed the home or its cache"


# Refusals of what a command is given (not of what a store holds) come before the heavy imports.
LIGHT = [
    "train-tokenizer-missing",
    "train-tokenizer-without-pad",
    "train-model-vocab-vs-bert",
    "train-model-vocab-vs-wordpiece",
    "train-val-docs-every-document-fresh",
    "train-corpus-glob-matches-nothing",
    "train-cache-under-a-file",
    "train-keep-beyond-max-steps",
    "ui-port-out-of-range",
    "bench-variant-twice",
    "bench-csv-a-folder",
    "train-unknown-key",
    "train-uri-one-slash",
    "train-missing-corpus",
    "queue-bad-axis-value",
    "work-zero-per-device",
]
HEAVY = ("torch", "pytorch_lightning", "mlflow")


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in LIGHT], ids=lambda c: c[0])
def test_a_refusal_of_the_input_itself_imports_neither_torch_nor_mlflow(case, tmp_path):
    _, args, _, _ = case
    home = tmp_path / "home"
    home.mkdir()
    _write_inputs(home)
    args = [a.format(corpus=home / "corpus", home=home) for a in args]
    code = (
        "import sys\nfrom symattn.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=home, env=_env(home), capture_output=True, text=True
    )
    assert out.returncode == 2, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
