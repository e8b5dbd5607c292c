import argparse

import pandas as pd
import pytest

from analysis import cli, report, tables

PNG = b"\x89PNG\r\n\x1a\n"


def _figure_ok(out, name):
    assert (out / f"{name}.png").read_bytes()[:8] == PNG
    assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.fixture(scope="module")
def paper_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("acl2024")
    return out, report.paper_report(out)


def test_paper_report_writes_the_papers_tables_and_figures(paper_out):
    out, text = paper_out
    for name in ("loss_base", "loss_small", "loss_base_log", "glue_over_checkpoints", "convergence_base"):
        _figure_ok(out, name)
    for name in ("glue_base", "glue_small", "glue_score", "glue_crossings", "params", "convergence_summary"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    base = pd.read_csv(out / "glue_base.csv").set_index("variant")
    assert round(base.loc["pairwise", "score"], 2) == 79.36
    assert round(base.loc["vanilla", "score"], 2) == 78.74
    assert "79.36 ± 0.37" in (out / "glue_base.md").read_text()
    # The key table on the terminal: GLUE scores and the crossing steps.
    assert "79.36 ± 0.37" in text and "78.74 ± 0.63" in text
    assert "32,799" in text and "65,515" in text and "not reached (>200,000)" in text
    assert "vanilla / pairwise crossing steps: 2.00" in text
    params = pd.read_csv(out / "params.csv").set_index(["size", "variant"])
    assert params.loc[("base", "pairwise"), "change_vs_vanilla_pct"] == pytest.approx(-5.93)


def test_cli_paper_and_errors(tmp_path, capsys, store):
    parser = argparse.ArgumentParser(prog="symattn")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "figures",
            "some-study",
            "--tracking-uri",
            "sqlite:///x.db",
            "--out",
            "o",
            "--loss-threshold",
            "3",
            "--loss-threshold",
            "4",
        ]
    )
    assert args.name == "some-study" and args.tracking_uri == "sqlite:///x.db"
    assert args.out == "o" and args.loss_threshold == [3.0, 4.0] and args.func is cli.run
    assert cli.main(["figures", "no-such-study", "--tracking-uri", store["uri"]]) == 2
    assert "no-such-study" in capsys.readouterr().err


def test_runs_report_through_the_cli(tmp_path, capsys, store, known):
    # `symattn figures NAME` calls report.runs_report: one real run checks both.
    assert (
        cli.main(
            [
                "figures",
                known.STUDY,
                "--tracking-uri",
                store["uri"],
                "--out",
                str(tmp_path),
                "--loss-threshold",
                "4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for name in ("loss_tiny", "loss_tiny_log", "convergence_tiny", "glue_over_checkpoints"):
        _figure_ok(tmp_path, name)
    summary = pd.read_csv(tmp_path / "convergence_summary.csv")
    escape = summary[summary["definition"] == "escape_0.25"].set_index("variant")
    assert escape.loc["vanilla", "mean"] == pytest.approx(925)
    assert escape.loc["symmetric", "n_censored"] == 1
    assert "10 pre-training runs used" in text and "1 failed" in text
    assert "loss<=4" in text and "escape_0.25" in text and "escape_0.5" in text
    assert "validation targets: 6.000 nats (10 runs) (the data's expected floor L*: 6.050)" in text
    # Three pairs: no p-value is printed, and every interval says its method and n.
    assert "n too small for p < 0.05 (n=3)" in text
    assert "(t-interval, n=3)" in text and "95% interval of the mean" in text
    assert "80.50 ± 0.71" in text and "not reached (>2,000)" in text
    assert (tmp_path / "glue_tiny.md").exists() and (tmp_path / "params.csv").exists()


def test_markdown_tables():
    frame = pd.DataFrame({"a": ["x|y", None], "b": [1.23456, float("nan")]})
    assert tables.to_markdown(frame) == (
        "| a    | b    |\n|------|------|\n| x\\|y | 1.23 |\n|      |      |\n"
    )
    assert tables.mean_std(79.3626, 0.3688) == "79.36 ± 0.37"
    assert tables.step_text(float("nan"), 200_000, "not reached") == "not reached (>200,000)"
    assert tables.step_text(32_799.4) == "32,799"
