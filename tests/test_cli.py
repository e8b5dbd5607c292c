"""The `symattn` command, run as a user runs it."""

import subprocess
import sys


def symattn(*args):
    return subprocess.run([sys.executable, "-m", "symattn", *args], capture_output=True, text=True)


def test_params_prints_the_paper_counts():
    out = symattn("params", "--size", "base")
    assert out.returncode == 0, out.stderr
    assert "109,514,298" in out.stdout and "102,427,194" in out.stdout and "103,017,018" in out.stdout
    assert "-5.93%" in out.stdout


def test_params_bad_size_is_one_line_error():
    out = symattn("params", "--size", "huge")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "invalid choice: 'huge'" in out.stderr


def test_train_takes_bare_overrides_beside_set_and_prints_the_resolved_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("optim: {lr: 1.0e-3}\nmodel: {size: mini}\n")
    out = symattn(
        "train", str(config), "optim.lr=3e-4", "seed=2", "--set", "model.size=tiny", "--print-config"
    )
    assert out.returncode == 0, out.stderr
    import yaml

    resolved = yaml.safe_load(out.stdout)
    assert resolved["optim"]["lr"] == 3e-4 and resolved["model"]["size"] == "tiny"
    assert resolved["seed"] == 2 and resolved["data"]["seed"] == 2
    assert not (tmp_path / "mlflow.db").exists()


def test_train_refuses_two_config_files(tmp_path):
    out = symattn("train", "a.yaml", "b.yaml")
    assert out.returncode == 2 and "more than one config file" in out.stderr


def test_queue_set_changes_the_base_config(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nbase: {optim: {max_steps: 10, warmup_steps: 0}, data: {seq_len: 16}}\n"
        "axes: {model.attention.variant: [vanilla]}\n"
    )
    out = symattn("queue", str(spec), "--set", "optim.lr=0.02", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "tiny-vanilla-lr0.02-s0" in out.stdout
