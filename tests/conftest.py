"""Shared fixtures: a small English corpus written by the test, an isolated data cache, and a run
config on a temporary MLflow store, small enough to train in seconds on the CPU."""

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_speed_settings():
    """Puts back torch's thread count and the denormal flag a test changed."""
    import torch

    from symattn.run.speed import set_flush_denormal

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    set_flush_denormal(False)


@pytest.fixture(scope="session")
def child_env() -> dict:
    """The environment for a child Python that must import this checkout's symattn."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


_SUBJECTS = [
    "the council",
    "a local farmer",
    "the new minister",
    "our reporter",
    "the small company",
    "a group of students",
    "the city museum",
    "the national team",
    "a young engineer",
    "the hospital staff",
    "the river authority",
]
_VERBS = [
    "announced",
    "rejected",
    "reviewed",
    "celebrated",
    "questioned",
    "delayed",
    "approved",
    "described",
    "opened",
    "measured",
]
_OBJECTS = [
    "a plan for the harbour",
    "the annual budget",
    "new rules on housing",
    "the results of the election",
    "a report about rainfall",
    "the price of bread",
    "an exhibition of old maps",
    "the railway timetable",
    "a study of bird migration",
    "the school holidays",
]
_TAILS = [
    "on Monday",
    "after a long debate",
    "in the morning",
    "despite strong protests",
    "for the third time",
    "with little warning",
    "before the winter",
    "at a crowded meeting",
    "in a short statement",
    "last week",
]


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
    if rng.random() < 0.3:
        s += f", said {rng.choice(['officials', 'witnesses', 'Ms. Rivera', 'Dr. Okafor', 'the mayor'])}"
    return s[0].upper() + s[1:] + "."


def make_documents(n_docs: int, seed: int = 0, sentences: tuple[int, int] = (6, 14)) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        paras = [
            " ".join(sentence(rng) for _ in range(rng.randint(*sentences))) for _ in range(rng.randint(1, 3))
        ]
        docs.append(f"Report number {i}: " + "\n".join(paras))
    return docs


@pytest.fixture(scope="session")
def documents():
    """make_documents, for tests that need text in memory."""
    return make_documents


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SYMATTN_CACHE", str(path))
    return path


@pytest.fixture
def corpus_dir(tmp_path, documents):
    """A folder of 60 short English news-like reports, one per file."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(documents(60)):
        (folder / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return folder


@pytest.fixture
def run_overrides(corpus_dir, cache, tmp_path):
    """`--set` overrides for a tiny, fast, fully isolated pre-training run."""
    return [
        f"data.source=path:{corpus_dir}",
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
        "tracking.system_metrics=false",  # a thread's samples would make the logged keys timing-dependent
    ]


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server (tests/postgres.py) for the module that asks for it; skipped where
    the server binaries are not installed."""
    from tests.postgres import running_postgres

    yield from running_postgres()
