"""Bad input, across every command: one line saying what is wrong and how to fix it, exit 2, within a
second or two, and nothing created or changed in any store, journal, cache or folder.

Each case runs the real command in a fresh home (`SYMATTN_HOME`, the data cache inside it), either
empty or holding a finished tiny run and a queued study, and compares a snapshot of every file and
folder of the home before and after."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_documents

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
        ["train", "base.yaml", "--resume", "0123456789abcdef"],
        "no MLflow store",
        "empty",
    ),
    (
        "resume-unknown-run",
        ["train", "base.yaml", "--resume", "0123456789abcdef"],
        "0123456789abcdef",
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
        ["finetune", "--run", "0123456789abcdef", "--step", "10", "--task", "sst2"],
        "0123456789abcdef",
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
        ["finetune", "--run", "0123456789abcdef", "--step", "10", "--task", "sst2"],
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
]


def _write_inputs(home: Path) -> None:
    corpus = home / "corpus"
    corpus.mkdir()
    for i, doc in enumerate(make_documents(60)):
        (corpus / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    (home / "broken.yaml").write_text("model: {size: tiny\n  optim: [\n")
    (home / "a.yaml").write_text("seed: 1\n")
    (home / "b.yaml").write_text("seed: 2\n")
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


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SYMATTN_CACHE")}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, "SYMATTN_HOME": str(home), "SYMATTN_CACHE": str(home / "cache"), "PYTHONPATH": path}


def _symattn(home: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "symattn", *args],
        cwd=home,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
    return home, run


def _snapshot(home: Path) -> dict:
    entries = {}
    for path in sorted(home.rglob("*")):
        stat = path.stat()
        entries[str(path.relative_to(home))] = None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return entries


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_before_anything_is_written(case, seeded, tmp_path):
    _, args, says, kind = case
    home = tmp_path / "home"
    if kind == "seeded":
        shutil.copytree(seeded[0], home, symlinks=True)
        run = seeded[1]
    else:
        home.mkdir()
        _write_inputs(home)
        run = "none"
    fill = {"corpus": str(home / "corpus"), "run": run, "home": str(home)}
    args = [a.format(**fill) for a in args]
    before = _snapshot(home)
    out = _symattn(home, args, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert len(lines) == 1, out.stderr[-2000:]
    assert says.format(**fill) in lines[0], lines[0]
    assert lines[0].startswith("symattn "), lines[0]
    assert _snapshot(home) == before, "the refused command changed the home"


# Refusals of what a command is given (not of what a store holds) come before the heavy imports.
LIGHT = [
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
    args = [a.format(corpus=home / "corpus") for a in args]
    code = (
        "import sys\nfrom symattn.cli import main\ncode = main(sys.argv[1:])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=home, env=_env(home), capture_output=True, text=True
    )
    assert out.returncode == 2, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
