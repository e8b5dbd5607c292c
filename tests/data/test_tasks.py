"""Downstream tasks: GLUE from a GLUE-layout folder and from `datasets`, the offline suite's
parsers, encoding for fine-tuning, and the paper's metrics and GLUE score."""

import bz2
import csv
import io
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from symattn.data import tasks
from symattn.data.errors import DataError
from symattn.data.metrics import GLUE_SCORE_KEYS, compute_metrics, glue_score
from symattn.data.offline_tasks import (
    dedupe_labelled,
    hash_split,
    parse_rotten_tomatoes,
    parse_sms_spam,
    parse_trec,
)
from symattn.data.task_registry import GLUE_TASKS, OFFLINE_TASKS, TASKS, task_table
from symattn.data.tasks import TaskDataset, collate_task_batch, load_task
from symattn.data.tokenizer import train_wordpiece
from tests.conftest import REPO

# --- GLUE in the layout of the GLUE download ------------------------------------------------------

GLUE_FILES = {
    "CoLA/train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
    "CoLA/dev.tsv": "bc01\t1\t\tThe sailors rode the breeze clear of the rocks.\nbc01\t0\t*\tThe more we study verbs.\n",
    "SST-2/train.tsv": "sentence\tlabel\nhide new secretions \t0\ncontains no wit \t0\nclever and charming \t1\n",
    "SST-2/dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak \t0\n",
    "MRPC/train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as the witness .\n0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n",
    "MRPC/dev.tsv": '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said "hello" .\tHe greeted them .\n',
    "QQP/train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tHow do I learn?\tHow to learn?\t1\n1\t3\t4\tbroken row\n2\t5\t6\tWhy?\tWhat?\t0\n",
    "QQP/dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n9\t1\t2\tA?\tB?\t0\n",
    "STS-B/train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\tA man plays a guitar.\t1.6\n",
    "STS-B/dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hat.\tA man wearing a hat.\t4.2\n",
    "QNLI/train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen?\tIn 1990.\tentailment\n1\tWho?\tNobody knows why.\tnot_entailment\n",
    "QNLI/dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat?\tA thing.\tentailment\n",
    "RTE/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons found.\tWeapons found.\tnot_entailment\n",
    "RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana reads.\tDana reads books.\tentailment\n",
    "WNLI/train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tThe pin stuck.\t1\n",
    "WNLI/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe cat sat.\tIt sat.\t0\n",
}
_MNLI_TRAIN_HEAD = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
_MNLI_DEV_HEAD = _MNLI_TRAIN_HEAD.replace(
    "label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
)
GLUE_FILES.update(
    {
        "MNLI/train.tsv": _MNLI_TRAIN_HEAD
        + "0\t1\t1e\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tConceptually cream skimming.\tProduct and geography.\tneutral\tneutral\n",
        "MNLI/dev_matched.tsv": _MNLI_DEV_HEAD
        + "0\t1\t1e\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tThe new rights are nice.\tEveryone loves them.\tneutral\tneutral\tneutral\tneutral\tneutral\tneutral\n1\t2\t2e\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tHe left.\tHe stayed.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
        "MNLI/dev_mismatched.tsv": _MNLI_DEV_HEAD
        + "0\t1\t1e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tYour gift helps.\tYour gift matters.\tentailment\tentailment\tentailment\tentailment\tentailment\tentailment\n",
    }
)


@pytest.fixture
def glue_dir(tmp_path):
    root = tmp_path / "glue_data"
    for rel, text in GLUE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_a_malformed_row_is_skipped_with_its_file_and_line(glue_dir, caplog):
    with caplog.at_level("WARNING"):
        train = load_task("qqp", glue_dir=glue_dir).train
    assert len(train) == 2 and train.skipped == 1  # counted: a fine-tuning run records it
    warning = next(r.getMessage() for r in caplog.records if "malformed" in r.getMessage())
    assert str(glue_dir / "QQP" / "train.tsv") in warning and "at line(s) 3" in warning


def test_registry():
    assert GLUE_TASKS == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
    assert OFFLINE_TASKS == ("rotten-tomatoes", "sms-spam", "trec6", "bbc-news")
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli"].num_labels == 3 and TASKS["trec6"].num_labels == 6
    assert [TASKS["mnli"].score_key(s) for s in TASKS["mnli"].dev_splits] == ["mnli-m", "mnli-mm"]
    assert len(task_table()) == 13
    with pytest.raises(DataError, match="unknown task 'glue'; choose one of cola"):
        load_task("glue")


def test_glue_folder_all_nine_tasks(glue_dir):
    loaded = {n: load_task(n, glue_dir=glue_dir) for n in GLUE_TASKS}
    cola = loaded["cola"]
    assert (
        cola.train.texts == ["Our friends won't buy this analysis.", "They drank the pub."]
        and cola.train.pairs is None
    )
    assert cola.train.labels.tolist() == [1, 0] and cola.train.labels.dtype == np.int64
    assert loaded["sst2"].dev["dev"].labels.tolist() == [1, 0]
    mrpc = loaded["mrpc"]
    assert mrpc.train.pairs[0] == "Referring to him as the witness ." and mrpc.dev["dev"].texts == [
        'He said "hello" .'
    ]
    assert len(loaded["qqp"].train) == 2  # the malformed row is skipped
    stsb = loaded["stsb"]
    assert stsb.train.labels.dtype == np.float32 and stsb.train.labels.tolist() == pytest.approx([5.0, 1.6])
    mnli = loaded["mnli"]
    assert set(mnli.dev) == {"dev_matched", "dev_mismatched"}
    assert mnli.dev["dev_matched"].labels.tolist() == [1, 2] and mnli.dev[
        "dev_mismatched"
    ].labels.tolist() == [0]
    assert loaded["qnli"].train.labels.tolist() == [0, 1] and loaded["rte"].train.labels.tolist() == [1]
    assert loaded["wnli"].train.labels.tolist() == [1]


def test_glue_folder_errors(glue_dir, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_task("rte", glue_dir=tmp_path / "none")
    (glue_dir / "RTE" / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"RTE/dev.tsv is missing"):
        load_task("rte", glue_dir=glue_dir)
    (glue_dir / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nok\tmaybe\n")
    with pytest.raises(DataError, match="label 'maybe' is not one of"):
        load_task("sst2", glue_dir=glue_dir)
    monkeypatch.setenv("SYMATTN_GLUE_DIR", str(glue_dir))
    assert len(load_task("cola").train) == 2


def test_glue_from_datasets_layout(tmp_path):
    pytest.importorskip("datasets")
    # A local dataset repository laid out like the hub's 'nyu-mll/glue' (one config per task).
    root = tmp_path / "glue_hf"
    configs = []
    rows = {
        "cola": {
            "train": [("A sentence.", None, 1), ("Sentence a.", None, 0)],
            "validation": [("Fine.", None, 1)],
        },
        "mnli": {
            "train": [("P one.", "H one.", 0), ("P two.", "H two.", 2)],
            "validation_matched": [("P m.", "H m.", 1)],
            "validation_mismatched": [("P mm.", "H mm.", 2), ("P x.", "H x.", 0)],
        },
    }
    cols = {"cola": ("sentence", None), "mnli": ("premise", "hypothesis")}
    for task, splits in rows.items():
        files = []
        for split, examples in splits.items():
            path = root / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            a, b = cols[task]
            lines = [
                {a: x, **({b: y} if b else {}), "label": lab, "idx": i}
                for i, (x, y, lab) in enumerate(examples)
            ]
            path.write_text("".join(json.dumps(r) + "\n" for r in lines))
            files.append(f"  - split: {split}\n    path: {task}/{split}.jsonl\n")
        configs.append(f"- config_name: {task}\n  data_files:\n" + "".join(files))
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")
    cola = load_task("cola", hf_name=str(root))
    assert cola.train.texts == ["A sentence.", "Sentence a."] and cola.dev["dev"].labels.tolist() == [1]
    mnli = load_task("mnli", hf_name=str(root))
    assert mnli.train.pairs == ["H one.", "H two."] and mnli.dev["dev_mismatched"].labels.tolist() == [2, 0]
    with pytest.raises(DataError, match="cannot load GLUE rte"):
        load_task("rte", hf_name=str(root))


# --- the offline suite's parsers -----------------------------------------------------------------


def test_sms_spam_recovers_swallowed_messages():
    raw = (
        ',spam,text\n0,0,"Go until jurong point, crazy.."\n1,1,Free entry in 2 a wkly comp\n'
        '2,0,"He said ""hi"" to me\nham\tOk lar...\nspam\tWIN a prize now"\n3,0,Ok.\n'
    ).encode()
    texts, labels = parse_sms_spam(raw)
    assert texts == [
        "Go until jurong point, crazy..",
        "Free entry in 2 a wkly comp",
        'He said "hi" to me',
        "Ok lar...",
        "WIN a prize now",
        "Ok.",
    ]
    assert labels == ["ham", "spam", "ham", "ham", "spam", "ham"]


def test_trec_and_rotten_tomatoes():
    texts, labels = parse_trec(
        b"DESC:manner How did serfdom develop ?\nENTY:animal What fowl grabs the spotlight ?\n"
    )
    assert labels == ["DESC", "ENTY"] and texts[1] == "What fowl grabs the spotlight ?"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    w.writerows(
        [
            ["plot", "A synopsis.", "m", "False"],
            ["fresh", "A master class.", "m", "True"],
            ["rotten", "Dull.", "m", "True"],
        ]
    )
    texts, labels = parse_rotten_tomatoes(bz2.compress(buf.getvalue().encode()))
    assert texts == ["A master class.", "Dull."] and labels == ["fresh", "rotten"]


def test_dedupe_and_fixed_split():
    texts, labels = dedupe_labelled(["a b", "a  b ", "c", "c", "d", "e"], ["x", "x", "x", "y", "y", "x"])
    assert texts == ["a b", "d", "e"] and labels == ["x", "y", "x"]  # "c" has two labels: dropped
    many = [f"text {i}" for i in range(200)]
    dev = hash_split("t", many, 0.1)
    assert dev.sum() == 20
    assert hash_split("t", many[::-1], 0.1)[::-1].tolist() == dev.tolist()  # by content, not position


# --- encoding and metrics -------------------------------------------------------------------------


def test_task_dataset_and_collate(glue_dir, documents):
    tok = train_wordpiece(documents(30) + ["a plane is taking off"], vocab_size=300)
    stsb = load_task("stsb", glue_dir=glue_dir)
    ds = TaskDataset(stsb.train, tok, max_length=10)
    item = ds[0]
    assert (
        len(item["input_ids"]) <= 10 and item["input_ids"][0] == 2 and list(item["input_ids"]).count(3) == 2
    )
    assert item["token_type_ids"][-1] == 1
    batch = collate_task_batch([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["labels"].dtype == torch.float32
    short = min(range(2), key=lambda i: len(ds[i]["input_ids"]))
    n = len(ds[short]["input_ids"])
    assert (batch["input_ids"][short, n:] == 0).all() and (batch["attention_mask"][short, n:] == 0).all()
    cola = collate_task_batch([TaskDataset(load_task("cola", glue_dir=glue_dir).train, tok)[0]])
    assert cola["labels"].dtype == torch.long and (cola["token_type_ids"] == 0).all()


def test_encoding_matches_the_tokenizer_on_pairs(glue_dir, documents):
    tok = train_wordpiece(documents(30), vocab_size=300)
    mrpc = load_task("mrpc", glue_dir=glue_dir).train
    ds = TaskDataset(mrpc, tok, max_length=12)
    tok.enable_truncation(12, strategy="longest_first")
    want = tok.encode_batch(list(zip(mrpc.texts, mrpc.pairs)))
    for i, e in enumerate(want):
        assert ds[i]["input_ids"].tolist() == e.ids and ds[i]["token_type_ids"].tolist() == e.type_ids


# --- the encoding cache ---------------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the tokenising step behind the cache."""
    calls = []
    encode = tasks.encode_split

    def counting(*args):
        calls.append(args[2])
        return encode(*args)

    monkeypatch.setattr(tasks, "encode_split", counting)
    return calls


def _same(a: TaskDataset, b: TaskDataset) -> bool:
    fields = ("ids", "type_ids", "offsets")
    return all(np.array_equal(getattr(a.encoded, f), getattr(b.encoded, f)) for f in fields)


def _entries(cache):
    return sorted(p.name for p in (cache / "tasks").iterdir())


def test_second_load_comes_from_the_cache(glue_dir, documents, cache, counted):
    tok = train_wordpiece(documents(30), vocab_size=300)
    stsb = load_task("stsb", glue_dir=glue_dir).train
    first = TaskDataset.cached(stsb, tok, 10)
    assert counted == [10] and len(_entries(cache)) == 1
    second = TaskDataset.cached(stsb, tok, 10)
    assert counted == [10]  # no tokenising
    assert _same(first, second) and _same(second, TaskDataset(stsb, tok, 10))
    assert second.labels is stsb.labels and second[1]["input_ids"].dtype == np.int32
    assert collate_task_batch([second[0], second[1]])["input_ids"].dtype == torch.long


def test_max_length_tokenizer_and_text_each_change_the_key(glue_dir, documents, cache, counted):
    tok = train_wordpiece(documents(30), vocab_size=300)
    stsb = load_task("stsb", glue_dir=glue_dir).train
    TaskDataset.cached(stsb, tok, 10)
    TaskDataset.cached(stsb, tok, 12)
    TaskDataset.cached(stsb, train_wordpiece(documents(30), vocab_size=250), 10)
    TaskDataset.cached(stsb, tok, 10)  # the first again: a hit
    edited = tasks.TaskSplit([*stsb.texts[:-1], stsb.texts[-1] + "!"], stsb.pairs, stsb.labels)
    TaskDataset.cached(edited, tok, 10)
    assert counted == [10, 12, 10, 10] and len(_entries(cache)) == 4
    swapped = tasks.TaskSplit(stsb.pairs, stsb.texts, stsb.labels)  # same strings, other segments
    assert tasks.encoding_key(swapped, tok, 10) != tasks.encoding_key(stsb, tok, 10)


def test_an_interrupted_write_leaves_no_entry(glue_dir, documents, cache, counted, monkeypatch):
    tok = train_wordpiece(documents(30), vocab_size=300)
    cola = load_task("cola", glue_dir=glue_dir).train
    save = np.save

    def killed_after_the_first_file(path, arr):
        save(path, arr)
        raise KeyboardInterrupt

    monkeypatch.setattr(tasks.np, "save", killed_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        TaskDataset.cached(cola, tok, 16)
    monkeypatch.setattr(tasks.np, "save", save)
    assert _entries(cache) == []
    # A hard kill leaves its temporary folder behind; it is never read as an entry.
    key = tasks.encoding_key(cola, tok, 16)
    (cache / "tasks" / f".tmp-{key}-x1y2").mkdir()
    save(cache / "tasks" / f".tmp-{key}-x1y2" / "ids.npy", np.zeros(3, np.int32))
    rebuilt = TaskDataset.cached(cola, tok, 16)
    assert counted == [16, 16] and key in _entries(cache)
    assert _same(rebuilt, TaskDataset(cola, tok, 16))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta"])
def test_a_damaged_entry_is_rebuilt(glue_dir, documents, cache, counted, caplog, damage):
    tok = train_wordpiece(documents(30), vocab_size=300)
    cola = load_task("cola", glue_dir=glue_dir).train
    good = TaskDataset.cached(cola, tok, 16)
    entry = cache / "tasks" / tasks.encoding_key(cola, tok, 16)
    ids = entry / "ids.npy"
    raw = ids.read_bytes()
    if damage == "truncate":
        ids.write_bytes(raw[:-3])
    elif damage == "flip":
        ids.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    else:
        (entry / "meta.json").unlink()
    with caplog.at_level(logging.WARNING, logger="symattn.data.tasks"):
        again = TaskDataset.cached(cola, tok, 16)
    assert counted == [16, 16] and _same(good, again)
    assert f"task cache entry {entry} is" in caplog.text and "encoding the split again" in caplog.text
    assert TaskDataset.cached(cola, tok, 16) is not None and counted == [16, 16]  # rebuilt whole


def test_metrics_as_the_paper():
    y = np.array([1, 0, 1, 1, 0, 1])
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)  # predicts 1,0,0,1,0,1
    m = compute_metrics("acc_f1", logits, y)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["f1"] == pytest.approx(6 / 7)
    assert m["score"] == pytest.approx((5 / 6 + 6 / 7) / 2)
    assert compute_metrics("mcc", [1, 0, 0, 1, 0, 1], y)["score"] == pytest.approx(0.7071067811865476)
    sts = compute_metrics(
        "pearson_spearman", torch.tensor([[1.0], [2.0], [3.0], [5.0]]), [1.0, 2.0, 3.0, 4.0]
    )
    assert sts["spearmanr"] == pytest.approx(1.0) and sts["score"] == pytest.approx((sts["pearson"] + 1) / 2)
    assert compute_metrics("pearson_spearman", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["score"] == 0.0
    assert compute_metrics("acc", [0, 2, 1], [0, 2, 2])["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(DataError, match="2 predictions for 3 labels"):
        compute_metrics("acc", [0, 1], [0, 1, 1])


def test_glue_score_reproduces_the_paper():
    # Base pairwise model, fine-tuning seed 1, from the paper's released eval_results.json files.
    seed1 = {
        "cola": 0.49380076678433954,
        "mnli-m": 0.8159959246051961,
        "mnli-mm": 0.8200772986167616,
        "mrpc": (0.8529411764705882 + 0.8939929328621908) / 2,
        "qnli": 0.891085484166209,
        "qqp": (0.904575810042048 + 0.871622520963663) / 2,
        "rte": 0.6064981949458483,
        "sst2": 0.9139908256880734,
        "stsb": (0.867929826730112 + 0.8658677874357753) / 2,
        "wnli": 0.29577464788732394,
    }
    expected = 100 * np.mean([seed1[k] for k in GLUE_SCORE_KEYS])
    assert glue_score(seed1) == pytest.approx(expected) and 79.0 < expected < 80.0
    assert "wnli" not in GLUE_SCORE_KEYS and len(GLUE_SCORE_KEYS) == 9
    with pytest.raises(DataError, match="needs stsb, rte"):
        glue_score({k: v for k, v in seed1.items() if k not in ("rte", "stsb")})


# --- GLUE with no local copy and no hub ----------------------------------------------------------

# Nothing listens on port 9 of the loopback: the hub's address answers "connection refused" at once,
# as a machine without network does, whatever the machine running the tests can reach.
NO_HUB = "http://127.0.0.1:9"


def _glue_in_a_child(tmp_path, env: dict) -> tuple:
    """load_task('sst2') in a fresh process (the hub's address and offline flags are read at
    import), with an empty datasets cache; its exit status, stderr and seconds."""
    code = (
        "import sys\nfrom symattn.data.errors import DataError\nfrom symattn.data.tasks import load_task\n"
        "try:\n    load_task('sst2')\nexcept DataError as exc:\n    print(exc, file=sys.stderr)\n    sys.exit(2)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SYMATTN_GLUE"))}
    base.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO), **env)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stderr.strip().splitlines(), time.perf_counter() - started


def test_glue_without_a_local_copy_or_a_hub_fails_fast_in_one_line(tmp_path):
    pytest.importorskip("datasets")
    code, lines, seconds = _glue_in_a_child(tmp_path, {"HF_ENDPOINT": NO_HUB})
    assert code == 2 and len(lines) == 1, lines  # no retry lines before it
    line = lines[0]
    assert "GLUE sst2" in line and NO_HUB in line and "glue_dir=DIR" in line and "SYMATTN_GLUE_DIR" in line, (
        line
    )
    assert "SST-2/train.tsv" in line and "HF_DATASETS_OFFLINE=1" in line, line
    assert seconds < 15, seconds  # the datasets loader's retries took about 30 s
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.arrow"))


@pytest.mark.parametrize("flag", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_glue_offline_without_a_cached_copy_says_where_it_looked(tmp_path, flag):
    pytest.importorskip("datasets")
    code, lines, seconds = _glue_in_a_child(tmp_path, {flag: "1", "HF_ENDPOINT": NO_HUB})
    assert code == 2 and len(lines) == 1, lines
    line = lines[0]
    assert "GLUE sst2" in line and "no copy" in line and str(tmp_path / "hf") in line, line
    assert flag in line and "glue_dir=DIR" in line and "SYMATTN_GLUE_DIR" in line, line
    assert seconds < 15, seconds
