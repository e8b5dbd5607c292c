"""The `symattn` command, run as a user runs it."""

import subprocess
import sys


def symattn(*args):
    return subprocess.run([sys.executable, "-m", "symattn.cli", *args], capture_output=True, text=True)


def test_params_prints_the_paper_counts():
    out = symattn("params", "--size", "base")
    assert out.returncode == 0, out.stderr
    assert "109,514,298" in out.stdout and "102,427,194" in out.stdout and "103,017,018" in out.stdout
    assert "-5.93%" in out.stdout


def test_params_bad_size_is_one_line_error():
    out = symattn("params", "--size", "huge")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown model size 'huge'" in out.stderr
