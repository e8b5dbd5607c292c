"""Shared fixtures: a small English corpus written by the test, an isolated data cache, and a run
config on a temporary MLflow store, small enough to train in seconds on the CPU."""

import random

import pytest

_SUBJECTS = ["the council", "a local farmer", "the new minister", "our reporter", "the small company",
             "a group of students", "the city museum", "the national team", "a young engineer", "the hospital staff"]
_VERBS = ["announced", "rejected", "reviewed", "celebrated", "questioned", "delayed", "approved", "described", "opened"]
_OBJECTS = ["a plan for the harbour", "the annual budget", "new rules on housing", "the results of the election",
            "a report about rainfall", "the price of bread", "an exhibition of old maps", "the railway timetable"]
_TAILS = ["on Monday", "after a long debate", "in the morning", "despite strong protests", "for the third time",
          "with little warning", "before the winter", "at a crowded meeting", "in a short statement", "last week"]


def news_documents(n_docs: int, seed: int = 0) -> list[str]:
    """Short news-like reports from a fixed grammar: real words, deterministic, offline."""
    rng = random.Random(seed)

    def sentence() -> str:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        return s[0].upper() + s[1:] + "."

    return [f"Report {i}. " + " ".join(sentence() for _ in range(rng.randint(6, 14))) for i in range(n_docs)]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """A folder of 80 reports, one per file, and SYMATTN_CACHE pointed at a temporary folder."""
    monkeypatch.setenv("SYMATTN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(news_documents(80)):
        (folder / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


@pytest.fixture
def run_overrides(corpus, tmp_path):
    """`--set` overrides for a tiny, fast, fully isolated pre-training run."""
    return [
        f"data.source=path:{corpus}",
        "data.vocab_size=200",
        "data.seq_len=32",
        "data.val_docs=8",
        "model.size=tiny",
        "optim.batch_size=8",
        "optim.max_steps=40",
        "optim.lr=1e-3",
        "eval.every_n_steps=20",
        "eval.batches=2",
        "tracking.log_every_n_steps=5",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=test",
        f"checkpoint.dir={tmp_path / 'checkpoints'}",
        "speed.threads=1",
        "speed.progress_bar=false",
    ]
