"""The `figures` subcommand: `symattn figures acl2024` or `symattn figures NAME [--tracking-uri URI]
[--out DIR]`. `add_parser` registers it on the main CLI's argparse subparsers; the handler is left
in the parsed namespace as `func` (and `handler`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "figures",
        help="figures and tables of a set of runs",
        description="Write the figures (PNG, PDF) and tables (CSV, Markdown) of an MLflow experiment "
        "or study to analysis/figures/NAME/ and print the key table. NAME 'acl2024' "
        "regenerates the paper's own figures and tables from its published results.",
    )
    parser.add_argument("name", help="'acl2024', or an MLflow experiment or study name")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: analysis/figures/NAME)")
    parser.add_argument(
        "--loss-threshold",
        type=float,
        action="append",
        default=[],
        help="also report steps to this validation loss (repeatable)",
    )
    parser.set_defaults(func=run, handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here so that building the main CLI's parser stays fast.
    from analysis import frames, report

    if args.name == frames.PAPER_NAME:
        text = report.paper_report(args.out)
    else:
        try:
            text = report.runs_report(
                args.name, args.tracking_uri, args.out, thresholds=tuple(args.loss_threshold)
            )
        except (LookupError, FileNotFoundError) as error:
            print(f"symattn figures: {error}", file=sys.stderr)
            return 1
    print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="symattn")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
