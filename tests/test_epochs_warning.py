"""The suite says how many epochs of its corpus a budget is, and warns beyond a few: the dry run of
a spec (from the built data, or a hub corpus's published size), and a run whose data is built."""

import json
from pathlib import Path

import pytest
import yaml

from symattn.cli import main
from symattn.config import apply_overrides
from symattn.data import DataConfig, prepare_pretraining
from symattn.data.budget import EPOCHS_WARNING, corpus_size, epochs_warning
from symattn.sweep.design import expand
from symattn.sweep.dry_run import budget_lines
from symattn.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
DATA = ["data.vocab_size=200", "data.seq_len=32", "data.val_docs=8"]


def spec_file(tmp_path, corpus, max_steps: int) -> Path:
    base = apply_overrides(
        {},
        [
            f"data.source=path:{corpus}",
            *DATA,
            "model.size=tiny",
            "optim.batch_size=8",
            f"optim.max_steps={max_steps}",
            "optim.warmup_steps=0",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    path = tmp_path / f"budget-{max_steps}.yaml"
    spec = {"name": "budget", "base": base, "axes": {"model.attention.variant": ["vanilla", "symmetric"]}}
    path.write_text(yaml.safe_dump(spec))
    return path


def dry_run_output(capsys, path) -> list[str]:
    assert main(["queue", str(path), "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_dry_run_warns_when_the_budget_is_many_epochs_of_the_built_corpus(
    corpus_dir, cache, tmp_path, capsys
):
    data = prepare_pretraining(
        DataConfig(source=f"path:{corpus_dir}", vocab_size=200, seq_len=32, val_docs=8)
    )
    blocks = len(data.train)
    long_run = 20 * blocks  # 8 sequences a step: 160 epochs
    out = dry_run_output(capsys, spec_file(tmp_path, corpus_dir, long_run))
    [line] = [line for line in out if line.startswith("warning:")]  # one line for both cells' data
    assert f"{long_run:,} steps x 8 sequences of 32 tokens" in line
    assert f"160.0 epochs of its {blocks:,} training blocks" in line
    assert "every block is seen about 160 times" in line and line == line.strip()
    assert out[-1].startswith("dry run: every cell is valid")

    short = dry_run_output(capsys, spec_file(tmp_path, corpus_dir, blocks // 8))  # about one epoch
    [line] = [line for line in short if line.startswith("data path:")]
    assert " 1.0 epochs of its" in line and not any(x.startswith("warning:") for x in short)
    assert not list(tmp_path.glob("*.db"))  # the dry run wrote nothing


def test_the_dry_run_says_when_the_corpus_is_not_built(corpus_dir, cache, tmp_path, capsys):
    out = dry_run_output(capsys, spec_file(tmp_path, corpus_dir, 100_000))
    [line] = [line for line in out if line.startswith("data path:")]
    assert "epochs unknown until its data is built" in line
    assert not (cache / "pretrain").exists()  # nothing was built


def test_the_paper_specs_are_a_few_epochs_of_their_hub_corpus():
    for name in ("paper-small", "paper-base"):
        spec = load_spec(REPO / "experiments" / f"{name}.yaml")
        [line] = budget_lines(expand(spec))
        assert line.startswith("data hf:HuggingFaceFW/fineweb-edu:sample-10BT: 200,000 steps x 256 sequences")
        assert "26.2B tokens, 2.7 epochs of about 9.72B tokens" in line
    # the same budget on wikitext-103, or on part of the sample, has no published size: said so
    for source in (
        "hf:wikitext:wikitext-103-raw-v1",
        "{type: hf, name: HuggingFaceFW/fineweb-edu, config: sample-10BT, max_docs: 1000}",
    ):
        small = load_spec(REPO / "experiments" / "paper-small.yaml", [f"data.source={source}"])
        [line] = budget_lines(expand(small))
        assert "epochs unknown" in line and "only at a pinned commit" in line  # neither is pinned


def test_a_run_warns_beyond_a_few_epochs_of_its_blocks():
    assert epochs_warning("pypi-news", 3000, 32, 52_349) is None  # the demo: 1.8 epochs
    line = epochs_warning("pypi-news", 100_000, 32, 52_349)
    assert line.startswith(
        "warning: 100,000 steps x 32 sequences are 61.1 epochs of the 52,349 training blocks"
    )
    assert epochs_warning("x", int(EPOCHS_WARNING * 100), 1, 100) is None  # exactly the threshold


def test_a_hub_dataset_at_a_pinned_commit_is_found_in_the_cache_without_reading_it(
    cache, tmp_path, monkeypatch, documents
):
    datasets = pytest.importorskip("datasets")
    # The hub is out of reach: the hub name reads a local JSON-lines copy, through the real
    # `datasets` loader, and every read is counted.
    local = tmp_path / "corpus.jsonl"
    local.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents(40)))
    real, loads = datasets.load_dataset, []

    def load_dataset(name, config=None, split=None, revision=None, data_files=None):
        loads.append((name, config, split, revision))
        return real("json", data_files=str(local), split=split, cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = {"type": "hf", "name": "someone/corpus", "config": "small", "revision": "a" * 40}
    cfg = DataConfig(source=[source], vocab_size=200, seq_len=32, val_docs=4)
    assert corpus_size(cfg) is None and loads == []  # not built, and not fetched to find out
    built = prepare_pretraining(cfg)
    again = prepare_pretraining(cfg)
    assert loads == [("someone/corpus", "small", "train", "a" * 40)]  # read once, to build
    assert again.fingerprint == built.fingerprint
    size = corpus_size(cfg)
    assert size.exact and size.blocks == len(built.train) and len(loads) == 1
    # unpinned (a branch name can move), the dataset is read each time to hash its text, and again
    # in a stream to build it
    moving = DataConfig(source=[{**source, "revision": "main"}], vocab_size=200, seq_len=32, val_docs=4)
    assert prepare_pretraining(moving).fingerprint == built.fingerprint and len(loads) == 3
    assert prepare_pretraining(moving).fingerprint == built.fingerprint and len(loads) == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper-small", "paper-base"])
def test_the_paper_specs_pass_their_dry_run_on_the_cpu(name, tmp_path, capsys, monkeypatch):
    """Every cell's model at full size, two steps on random tokens; the hub corpus is not fetched."""
    monkeypatch.setenv("SYMATTN_HOME", str(tmp_path))
    out = dry_run_output(capsys, REPO / "experiments" / f"{name}.yaml")
    assert sum(f"-s{seed}" in line for line in out for seed in (1, 2, 3)) >= 9  # 3 variants x 3 seeds
    assert any("2.7 epochs" in line for line in out)
    assert list(tmp_path.iterdir()) == []  # nothing written
