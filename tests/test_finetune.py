"""`symattn finetune` on kept weights of a real pre-training run, with a local GLUE folder: the
runs it records, what the analysis reads from them, and the inputs it refuses before writing."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from symattn.config import FinetuneConfig, load_config
from symattn.errors import one_line
from symattn.finetune.run import _model, finetune
from symattn.finetune.source import hf_source, run_sources
from symattn.run.pretrain import pretrain

SST2_TRAIN = [
    ("a charming and moving film", 1),
    ("dull , flat and lifeless", 0),
    ("the best picture of the year", 1),
    ("a waste of two hours", 0),
    ("warm , funny and wise", 1),
    ("nothing works in this mess", 0),
    ("an utter delight", 1),
    ("boring beyond words", 0),
]
SST2_DEV = [("a moving and funny delight", 1), ("a dull mess", 0), ("the film works", 1)]
MNLI_HEAD = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
MNLI_ROWS = [
    ("The cat sat on the mat.", "A cat sat.", "entailment"),
    ("The cat sat on the mat.", "No cat was there.", "contradiction"),
    ("He went home.", "He was tired.", "neutral"),
    ("The market opened early.", "The market opened.", "entailment"),
]


def _glue(root):
    (root / "SST-2").mkdir(parents=True)
    for split, rows in (("train", SST2_TRAIN), ("dev", SST2_DEV)):
        lines = "".join(f"{text}\t{label}\n" for text, label in rows)
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + lines)
    (root / "MNLI").mkdir()
    for name in ("train", "dev_matched", "dev_mismatched"):
        lines = "".join(
            f"{i}\t1\t1e\tgov\t-\t-\t-\t-\t{a}\t{b}\t{y}\t{y}\n" for i, (a, b, y) in enumerate(MNLI_ROWS)
        )
        broken = "99\tmalformed row\n" if name == "train" else ""  # skipped, and recorded
        (root / "MNLI" / f"{name}.tsv").write_text(MNLI_HEAD + lines + broken)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, documents):
    """A tiny pre-training run that kept its weights at steps 10 and 20."""
    tmp = tmp_path_factory.mktemp("finetune")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(documents(60)):
        (corpus / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    cfg = load_config(
        None,
        [
            f"data.source=path:{corpus}",
            "data.vocab_size=200",
            "data.seq_len=32",
            "data.val_docs=8",
            f"data.cache_dir={tmp / 'cache'}",
            "model.size=tiny",
            "optim.batch_size=8",
            "optim.max_steps=20",
            "eval.every_n_steps=10",
            "eval.batches=2",
            f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
            "tracking.experiment=ft",
            f"checkpoint.dir={tmp / 'checkpoints'}",
            "checkpoint.keep=[10, 20]",
            "checkpoint.log_model=false",
            "speed.threads=1",
        ],
    )
    run_id = pretrain(cfg)["run_id"]
    return {"run_id": run_id, "uri": cfg.tracking.uri, "glue": _glue(tmp / "glue"), "cfg": cfg}


def _cfg(pretrained, **kw):
    return FinetuneConfig(glue_dir=str(pretrained["glue"]), max_steps=3, batch_size=4, threads=1, **kw)


def test_one_run_per_step_and_seed_linked_to_its_pretraining_run(pretrained):
    client = MlflowClient(pretrained["uri"])
    results = finetune(
        client, run_sources(client, pretrained["run_id"], "all"), ["sst2"], [1, 2], _cfg(pretrained)
    )
    assert [(r["step"], r["seed"]) for r in results] == [(10, 1), (10, 2), (20, 1), (20, 2)]
    parent = client.get_run(pretrained["run_id"])
    for r in results:
        run = client.get_run(r["run_id"])
        tags = run.data.tags
        assert run.info.status == "FINISHED" and run.info.experiment_id == parent.info.experiment_id
        assert tags["kind"] == "finetune" and tags["mlflow.parentRunId"] == pretrained["run_id"]
        assert tags["pretrain_run_id"] == pretrained["run_id"] and tags["task"] == "sst2"
        assert (tags["checkpoint_step"], tags["finetune_seed"]) == (str(r["step"]), str(r["seed"]))
        for key in ("variant", "group", "size", "seed"):
            assert tags[key] == parent.data.tags[key]
        assert {"eval/accuracy", "eval/score", "train/loss"} <= set(run.data.metrics)
        assert 0.0 <= run.data.metrics["eval/accuracy"] <= 1.0
    # the analysis reads them as GLUE rows keyed by the pre-training run and step
    from analysis import mlflow_runs

    data = mlflow_runs.load_runs("ft", pretrained["uri"])
    pairs = sorted(set(zip(data.glue_checkpoints["checkpoint_step"], data.glue_checkpoints["finetune_seed"])))
    assert pairs == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert set(data.glue["checkpoint_step"]) == {20}  # the final checkpoint's
    assert set(data.glue_checkpoints["metric"]) == {"accuracy"} and set(data.glue["variant"]) == {"vanilla"}


def test_mnli_evaluates_both_dev_sets_and_a_seed_repeats_itself(pretrained):
    client = MlflowClient(pretrained["uri"])
    a, b = (
        finetune(client, run_sources(client, pretrained["run_id"], [20]), ["mnli"], [3], _cfg(pretrained))[0]
        for _ in range(2)
    )
    assert {"eval/accuracy", "eval/accuracy_mm"} <= set(a)
    assert {k: v for k, v in a.items() if k.startswith("eval/")} == {
        k: v for k, v in b.items() if k.startswith("eval/")
    }
    losses = [[m.value for m in client.get_metric_history(r["run_id"], "train/loss")] for r in (a, b)]
    assert losses[0] == losses[1]
    params = client.get_run(a["run_id"]).data.params  # the malformed training row, counted
    assert params["data.skipped_rows.train"] == "1" and "data.skipped_rows.dev_matched" not in params


def test_weights_of_another_model_size_are_refused(pretrained):
    client = MlflowClient(pretrained["uri"])
    [src] = run_sources(client, pretrained["run_id"], [10])
    other = dataclasses.replace(src, model=src.model.model_copy(update={"size": "mini"}))
    with pytest.raises(ValueError, match="do not fit"):
        _model(other, 2, 1)


def test_a_kept_file_is_fine_tuned_as_its_run_and_step(pretrained):
    client = MlflowClient(pretrained["uri"])
    [src] = run_sources(client, pretrained["run_id"], [10])
    out = _cli(pretrained, "--weights", str(src.weights), "--task", "sst2", *_overrides(pretrained))
    assert out.returncode == 0, out.stderr
    run = client.get_run(out.stdout.split()[1].rstrip(":"))
    assert (
        run.data.tags["pretrain_run_id"] == pretrained["run_id"] and run.data.tags["checkpoint_step"] == "10"
    )
    copy = src.weights.parent.parent.parent / "elsewhere" / "kept" / src.weights.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(src.weights.read_bytes())
    out = _cli(pretrained, "--weights", str(copy), "--task", "sst2", *_overrides(pretrained))
    assert out.returncode == 2 and "no MLflow run 'elsewhere'" in out.stderr


def _hf_folder(root, corpus_words):
    """A tiny HF BertForMaskedLM, as `save_pretrained` writes it, with a vocab.txt."""
    from transformers import BertConfig, BertForMaskedLM

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(corpus_words))]
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(root)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return root


def test_a_hugging_face_folder_is_fine_tuned_in_its_own_experiment(pretrained, tmp_path):
    words = " ".join(text for text, _ in SST2_TRAIN + SST2_DEV).split()
    folder = _hf_folder(tmp_path / "hf-bert", words)
    src = hf_source(str(folder))
    assert src.model.size == "tiny" and src.model.vocab_size == len(set(words)) + 5
    out = _cli(pretrained, "--hf", str(folder), "--task", "sst2", "--seeds", "1,2", *_overrides(pretrained))
    assert out.returncode == 0, out.stderr
    client = MlflowClient(pretrained["uri"])
    runs = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        tags = r.data.tags
        assert tags["kind"] == "finetune" and tags["size"] == "tiny" and tags["variant"] == "vanilla"
        assert tags["weights_source"] == str(folder.resolve()) and len(tags["weights_sha256"]) == 64
        assert "mlflow.parentRunId" not in tags and "eval/accuracy" in r.data.metrics
        assert r.info.run_name == f"hf-bert-sst2-ft{tags['finetune_seed']}"
    (folder / "config.json").unlink()
    out = _cli(pretrained, "--hf", str(folder), "--task", "sst2", *_overrides(pretrained))
    assert out.returncode == 2 and "has no config.json" in out.stderr


def _overrides(pretrained):
    return [f"glue_dir={pretrained['glue']}", "max_steps=3", "batch_size=4", "threads=1"]


def _cli(pretrained, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "symattn", "finetune", "--tracking-uri", pretrained["uri"], *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--run", "0" * 32, "--step", "10", "--task", "sst2"], f"no MLflow run '{'0' * 32}'"),
        (["--step", "15", "--task", "sst2"], "kept no weights at step 15; kept steps: 10, 20"),
        (["--step", "10", "--task", "nosuchtask"], "'nosuchtask'"),
        (["--step", "10", "--task", "rte"], "RTE"),  # no RTE in the local GLUE folder
        (["--step", "10", "--task", "sst2", "epochs=0"], "epochs"),
        (["--step", "10", "--task", "sst2", "max_length=600"], "exceeds the model's 512 positions"),
    ],
)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(pretrained, args, words):
    client = MlflowClient(pretrained["uri"])
    before = len(client.search_runs([client.get_experiment_by_name("ft").experiment_id]))
    if "--run" not in args:
        args = ["--run", pretrained["run_id"], *args]
    out = _cli(pretrained, *args, f"glue_dir={pretrained['glue']}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and words in out.stderr, out.stderr
    assert len(client.search_runs([client.get_experiment_by_name("ft").experiment_id])) == before


HF_CONFIG = {
    "model_type": "bert",
    "vocab_size": 40,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "max_position_embeddings": 128,
}
HF_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]


def _bare_hf_folder(root, **config):
    """The files of an HF BERT folder, written by hand (hf_source reads them; the weights' header
    only): config.json, vocab.txt and model.safetensors."""
    from safetensors.numpy import save_file

    root.mkdir()
    (root / "config.json").write_text(json.dumps({**HF_CONFIG, **config}))
    (root / "vocab.txt").write_text("\n".join(HF_VOCAB) + "\n")
    save_file(
        {"bert.embeddings.word_embeddings.weight": np.zeros((40, 128), np.float32)},
        root / "model.safetensors",
    )
    return root


def _without(key):
    return lambda root: (root / "config.json").write_text(
        json.dumps({k: v for k, v in HF_CONFIG.items() if k != key})
    )


def _config(**changes):
    return lambda root: (root / "config.json").write_text(json.dumps({**HF_CONFIG, **changes}))


BAD_HF_FOLDERS = {
    "config-not-json": (
        lambda root: (root / "config.json").write_text('{"model_type": "bert",'),
        ["config.json", "is not valid JSON", "save_pretrained"],
    ),
    "config-not-a-mapping": (
        lambda root: (root / "config.json").write_text("[1, 2]"),
        ["config.json", "not a mapping"],
    ),
    "config-lacks-a-key": (_without("hidden_size"), ["config.json", "lacks hidden_size", "save_pretrained"]),
    "config-lacks-model-type": (_without("model_type"), ["config.json", "lacks model_type"]),
    "config-wrong-type": (_config(hidden_size="big"), ["config.json", "hidden_size", "whole number"]),
    "config-not-bert": (_config(model_type="roberta"), ["config.json", "roberta", "only BERT"]),
    "config-heads-do-not-divide": (_config(num_attention_heads=3), ["config.json", "heads do not divide"]),
    "no-config": (lambda root: (root / "config.json").unlink(), ["has no config.json", "save_pretrained"]),
    "no-tokenizer": (
        lambda root: (root / "vocab.txt").unlink(),
        ["no tokenizer (tokenizer.json or vocab.txt)", "save_pretrained"],
    ),
    "no-weights": (
        lambda root: (root / "model.safetensors").unlink(),
        ["no weights (model.safetensors or pytorch_model.bin)"],
    ),
    "weights-unreadable": (
        lambda root: (root / "model.safetensors").write_bytes(b"\x00" * 12),
        ["model.safetensors", "is not a readable safetensors file"],
    ),
    "tokenizer-without-pad": (
        lambda root: (root / "vocab.txt").write_text("\n".join(HF_VOCAB[1:]) + "\n"),
        ["vocab.txt", "[PAD]"],
    ),
    "tokenizer-beyond-vocab": (
        lambda root: (root / "vocab.txt").write_text(
            "\n".join(HF_VOCAB + [f"w{i}" for i in range(20)]) + "\n"
        ),
        ["vocab.txt", "51 tokens", "vocab_size 40"],
    ),
}


def test_a_sound_bare_hf_folder_passes(tmp_path):
    src = hf_source(str(_bare_hf_folder(tmp_path / "bert")))
    assert src.model.size == "tiny" and src.model.vocab_size == 40


@pytest.mark.parametrize("damage, words", list(BAD_HF_FOLDERS.values()), ids=list(BAD_HF_FOLDERS))
def test_a_bad_hf_folder_is_refused_in_one_line_naming_the_file_and_the_fix(tmp_path, damage, words):
    folder = _bare_hf_folder(tmp_path / "bert")
    damage(folder)
    with pytest.raises(ValueError) as info:
        hf_source(str(folder))
    line = one_line(info.value)
    assert all(w in line for w in words), line


def test_a_bad_hf_folder_is_refused_by_the_command_before_any_store_is_opened(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    folder = _bare_hf_folder(tmp_path / "bert")
    (folder / "config.json").write_text("{nope")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SYMATTN_CACHE")}
    env.update(SYMATTN_HOME=str(home), SYMATTN_CACHE=str(home / "cache"), HF_DATASETS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-m", "symattn", "finetune", "--hf", str(folder), "--task", "sst2"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert f"{folder / 'config.json'} is not valid JSON" in lines[0], lines[0]
    assert list(home.iterdir()) == []


def test_a_recorded_keep_list_past_the_budget_still_loads_its_run():
    from symattn.finetune.source import config_from_params

    params = {"optim.max_steps": "20", "checkpoint.keep": "[10, 20, 500]", "model.size": "tiny"}
    assert config_from_params(params).checkpoint.keep == [10, 20]
