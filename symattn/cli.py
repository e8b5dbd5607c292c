"""The `symattn` command."""

from __future__ import annotations

import argparse
import sys

from symattn.errors import one_line


def _params(args: argparse.Namespace) -> int:
    from symattn.model import SIZES
    from symattn.params_table import format_rows, parameter_rows

    sizes = list(SIZES) if args.size == "all" else [args.size]
    for size in sizes:
        print(f"\n{size}  (vocab {args.vocab:,}, {args.max_positions} positions)")
        print(format_rows(parameter_rows(size, args.vocab, args.max_positions, args.seq_len), args.seq_len))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symattn",
        description="Controlled ablations of symmetric dot-product attention in BERT-style models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("params", help="parameter counts of every variant and coefficient scheme")
    p.add_argument("--size", default="base", help="model size preset, or 'all' (default: base)")
    p.add_argument("--vocab", type=int, default=30522, help="vocabulary size (default: 30522)")
    p.add_argument("--max-positions", type=int, default=512, help="position embeddings (default: 512)")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for FLOPs (default: 128)")
    p.set_defaults(func=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"symattn {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
