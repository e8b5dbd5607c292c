"""The `figures` subcommand: `symattn figures acl2024 [--from-mlflow]` or `symattn figures NAME
[--tracking-uri URI] [--out DIR]`; and `symattn import acl2024`. `add_parser` and
`add_import_parser` register them on the main CLI's argparse subparsers; the handler is left in the
parsed namespace as `func` (and `handler`)."""

from __future__ import annotations

import argparse
import sys

from symattn import arguments as A

TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "figures",
        help="figures and tables of a set of runs",
        description="Write the figures (PNG, PDF) and tables (CSV, Markdown) of an MLflow experiment "
        "or study to analysis/figures/NAME/, log them under figures/ of its study run (or of a run "
        "of kind report in its experiment), and print the key table. NAME 'acl2024' regenerates "
        "the paper's own figures and tables from its published results: from the CSV files shipped "
        "with the package, or with --from-mlflow (or --tracking-uri) from its runs imported into "
        "MLflow by 'symattn import acl2024'.",
    )
    parser.add_argument("name", help="'acl2024', or an MLflow experiment or study name")
    parser.add_argument(
        "--tracking-uri",
        type=A.tracking_uri,
        default=None,
        help=TRACKING_URI_HELP + "; for acl2024 it implies --from-mlflow",
    )
    parser.add_argument(
        "--from-mlflow",
        action="store_true",
        help="acl2024: read the paper's runs imported into the tracking store, not the CSV files",
    )
    parser.add_argument(
        "--from-export",
        dest="exports",
        metavar="DIR",
        type=A.existing_folder,
        action=A.AppendOnce,
        default=[],
        help="read the runs from an export (the export/ folder a report writes) instead of the store; "
        "repeatable: the exports of one study's parts merge",
    )
    parser.add_argument(
        "--no-artifacts",
        dest="artifacts",
        action="store_false",
        help="do not log the figures and tables to MLflow (they are written to --out either way)",
    )
    parser.add_argument(
        "--out", type=A.output_folder, default=None, help="output folder (default: analysis/figures/NAME)"
    )
    parser.add_argument(
        "--loss-threshold",
        type=A.real(above=0, what="a validation loss"),
        action=A.AppendOnce,
        default=[],
        help="also report steps to this validation loss (repeatable)",
    )
    parser.add_argument(
        "--until",
        type=A.positive,
        metavar="STEP",
        help="the runs as they stood at STEP: every curve cut there, an early stop after it undone "
        "(e.g. an extended study at its first budget; exploratory)",
    )
    parser.set_defaults(func=run, handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here so that building the main CLI's parser stays fast.
    from analysis import frames, report
    from symattn.errors import one_line
    from symattn.paths import resolve_uri

    try:
        if args.exports and (args.name == frames.PAPER_NAME or args.tracking_uri or args.from_mlflow):
            raise LookupError(
                "--from-export reads a study's runs from its export, not a store: drop --tracking-uri "
                "and --from-mlflow (acl2024's results ship with the package)"
            )
        if args.until is not None and args.name == frames.PAPER_NAME:
            raise LookupError(
                "--until cuts a study's runs; the paper's results are drawn whole: drop --until"
            )
        if args.name == frames.PAPER_NAME:
            from_mlflow = args.from_mlflow or args.tracking_uri is not None
            uri = resolve_uri(args.tracking_uri) if from_mlflow else None
            text = report.paper_report(args.out, uri, log_artifacts=args.artifacts)
        else:
            text = report.runs_report(
                args.name,
                args.tracking_uri,
                args.out,
                thresholds=tuple(args.loss_threshold),
                log_artifacts=args.artifacts,
                exports=tuple(args.exports),
                until=args.until,
            )
    except (LookupError, FileNotFoundError) as error:  # bad input: a name or store that is not there
        print(f"symattn figures: error: {one_line(error)}", file=sys.stderr)
        return 2
    print(text)
    return 0


def add_import_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import",
        help="import the paper's published results into MLflow as runs",
        description="Import the published results of Courtois et al. (ACL Findings 2024), shipped in "
        "analysis/reference/acl2024/, into the MLflow experiment 'acl2024': one pre-training run "
        "per model with its validation loss by step, and its GLUE dev results as fine-tuning runs, "
        "in the shape of the suite's own runs and tagged imported_from=acl2024. A second import "
        "adds only what is missing. 'symattn figures acl2024 --from-mlflow' reads them.",
    )
    parser.add_argument("source", choices=["acl2024"], help="the published results to import")
    parser.add_argument("--tracking-uri", type=A.tracking_uri, default=None, help=TRACKING_URI_HELP)
    parser.set_defaults(func=run_import, handler=run_import)
    return parser


def run_import(args: argparse.Namespace) -> int:
    from analysis.paper_import import import_paper
    from symattn.paths import redact, resolve_uri

    result = import_paper(args.tracking_uri)
    print(
        f"{args.source}: {result.counts()} "
        f"(experiment {args.source}, id {result.experiment_id}, in {redact(resolve_uri(args.tracking_uri))}; "
        f"{result.seconds:.1f} s)"
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="symattn")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    add_import_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
