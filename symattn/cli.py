"""The `symattn` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from symattn import arguments as A
from symattn.data.task_registry import TASKS
from symattn.errors import RunError, one_line
from symattn.model.config import SIZES
from symattn.model.variants import VARIANTS


def _params(args: argparse.Namespace) -> int:
    from symattn.model.params_table import format_rows, parameter_rows

    if args.seq_len > args.max_positions:
        raise ValueError(
            f"--seq-len {args.seq_len} exceeds --max-positions {args.max_positions}; lower it or raise --max-positions"
        )
    sizes = list(SIZES) if args.size == "all" else [args.size]
    for size in sizes:
        print(f"\n{size}  (vocab {args.vocab:,}, {args.max_positions} positions)")
        print(format_rows(parameter_rows(size, args.vocab, args.max_positions, args.seq_len), args.seq_len))
    return 0


def _config_and_overrides(items: list[str], flagged: list[str]) -> tuple[str | None, list[str]]:
    """`symattn train [CONFIG] [key=value ...] [--set key=value ...]`: the config path (the one item
    without "="), and the overrides in the order given (bare ones first)."""
    paths = [item for item in items if "=" not in item]
    if len(paths) > 1:
        raise ValueError(
            f"more than one config file given ({', '.join(paths)}); give one, and overrides as key=value"
        )
    overrides = [A.override(item) for item in items if "=" in item] + list(flagged)
    keys = [A.override_key(item) for item in overrides]
    repeated = [k for i, k in enumerate(keys) if k in keys[:i]]
    if repeated:
        raise ValueError(f"{repeated[0]} is set twice on the command line; set it once")
    return (paths[0] if paths else None), overrides


def _train(args: argparse.Namespace) -> int:
    from symattn.config import load_config

    path, overrides = _config_and_overrides(args.items, args.set)
    cfg = load_config(path, overrides)  # validated completely before anything is created
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from symattn.run.preflight import check_train

    check_train(cfg, args.resume)  # stores, corpus paths and the run to resume, before any is touched
    import psutil

    from symattn.run.pretrain import pretrain

    result = pretrain(cfg, resume=args.resume, started_at=psutil.Process().create_time())  # imports count
    if os.environ.get("LOCAL_RANK", "0") != "0":  # other DDP ranks: rank zero reports
        return 0
    print(f"run {result['run_id']} {result['status']} after {result['steps']} steps")
    for key in sorted(k for k in result if k.startswith("val/")):
        print(f"  {key} = {result[key]:.4f}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from symattn.paths import default_tracking_uri

    if args.run is None and (args.step is not None or args.steps):
        raise ValueError("--step and --steps pick kept steps of --run; give --run too")
    if args.run is not None and args.step is None and not args.steps:
        raise ValueError("--run needs --step S (one kept step) or --steps all (its whole kept series)")
    uri = args.tracking_uri or default_tracking_uri()
    needs_store = args.hf is None  # a run or a kept file is looked up in its store
    if needs_store and uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        raise ValueError(
            f"no MLflow store at {uri}; give the store of the pre-training run with --tracking-uri"
        )
    seeds = args.seeds
    from symattn.finetune.run import finetune, load_finetune_config, prepare
    from symattn.finetune.source import file_source, hf_source, run_sources
    from symattn.tracking.store import open_store

    cfg = load_finetune_config(args.items)
    if args.hf is not None:  # the weights and tasks are checked before the store is created
        sources = [hf_source(args.hf)]
        prepared = prepare(sources, args.task, cfg)
        client = open_store(uri)
    else:
        client = open_store(uri)
        if args.weights is not None:
            sources = [file_source(client, args.weights)]
        else:
            sources = run_sources(client, args.run, "all" if args.steps else [args.step])
        prepared = prepare(sources, args.task, cfg)
    results = finetune(client, sources, args.task, seeds, cfg, experiment=args.experiment, prepared=prepared)
    for r in results:
        scores = ", ".join(
            f"{k.removeprefix('eval/')} {v:.4f}" for k, v in sorted(r.items()) if k.startswith("eval/")
        )
        at = "" if r["step"] is None else f" at step {r['step']:,}"
        print(f"run {r['run_id']}: {r['task']}{at}, seed {r['seed']}: {scores}")
    return 0


def _add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="training-step speed of every variant beside HF BERT (pre-training and fine-tuning)",
        description="Times full training steps (forward, backward, AdamW) of each attention variant and of "
        "HF BERT of the same configuration, interleaved: the pre-training step (BertForMaskedLM) and the "
        "fine-tuning step (BertForSequenceClassification); prints a table per step and writes CSV.",
    )
    p.add_argument(
        "--size", default="mini", choices=SIZES, help=f"model size preset: {', '.join(SIZES)} (default: mini)"
    )
    p.add_argument(
        "--phases",
        type=A.listed(),
        default="pretrain,finetune",
        help="comma-separated steps to time: pretrain (MLM), finetune (sequence classification)",
    )
    p.add_argument(
        "--batch", type=A.positive, default=32, help="sequences per pre-training step (default: 32)"
    )
    p.add_argument(
        "--seq-len", type=A.positive, default=128, help="tokens per pre-training sequence (default: 128)"
    )
    p.add_argument(
        "--ft-batch",
        type=A.positive,
        default=16,
        help="sequences per fine-tuning step (default: 16, the paper's)",
    )
    p.add_argument(
        "--ft-seq-len",
        type=A.positive,
        default=128,
        help="width of a fine-tuning batch, rows padded within it (default: 128, the paper's max length)",
    )
    p.add_argument("--vocab", type=A.positive, default=30522, help="vocabulary size (default: 30522)")
    p.add_argument(
        "--variants",
        type=A.listed(choices=VARIANTS),
        default=",".join(VARIANTS),
        help="comma-separated attention variants",
    )
    p.add_argument(
        "--precision", type=A.listed(), default="fp32,bf16", help="comma-separated: fp32, bf16 (autocast)"
    )
    p.add_argument("--no-hf", action="store_true", help="leave out HF BertForMaskedLM")
    p.add_argument("--rounds", type=A.positive, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--steps", type=A.positive, default=2, help="timed steps per model per round (default: 2)")
    p.add_argument("--warmup", type=A.count, default=2, help="untimed steps per model first (default: 2)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["cpu", "cuda", "auto"],
        help="cpu, cuda, or auto: cuda when there is a GPU (default)",
    )
    p.add_argument(
        "--threads", type=A.positive, default=None, help="CPU threads (default: torch's, one per core)"
    )
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time, steadier on a shared machine",
    )
    p.add_argument(
        "--peak-size",
        type=A.positive,
        default=None,
        help="n of the n x n matmul peak (default: 1024 CPU, 8192 GPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile every model (HF too)")
    p.add_argument(
        "--no-memory", action="store_true", help="skip the profiled step that measures peak memory"
    )
    p.add_argument(
        "--no-flush-denormal", action="store_true", help="leave denormal floats on (to measure that setting)"
    )
    p.add_argument(
        "--no-retain-memory",
        action="store_true",
        help="let freed memory go back to the OS (to measure that setting)",
    )
    p.add_argument("--seed", type=A.count, default=0, help="seed of the batch and the models (default: 0)")
    p.add_argument(
        "--csv",
        type=A.output_file,
        default="bench.csv",
        help="CSV file to write ('' for none; default: bench.csv); the overhead rows go to NAME-overhead.csv",
    )
    p.add_argument(
        "--overhead",
        metavar="SPEC",
        type=A.existing_file,
        default=None,
        help="also run the first matched group of this sweep spec through a real worker, shortened, and "
        "report each cell's start-up (launch and worker start to first step) and tracking share",
    )
    p.add_argument(
        "--overhead-steps",
        type=A.positive,
        default=200,
        help="steps per cell of the overhead sweep (default: 200)",
    )
    p.add_argument(
        "--overhead-only", action="store_true", help="skip the step benchmark; only the overhead sweep"
    )
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from symattn.bench.command import command

    return command(args)


class _Parser(argparse.ArgumentParser):
    """A usage error in one line, as every other refusal (exit 2); subcommands' parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symattn",
        description="Controlled ablations of symmetric dot-product attention in BERT-style models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("params", help="parameter counts of every variant and coefficient scheme")
    p.add_argument(
        "--size", default="base", choices=[*SIZES, "all"], help="model size preset, or 'all' (default: base)"
    )
    p.add_argument("--vocab", type=A.positive, default=30522, help="vocabulary size (default: 30522)")
    p.add_argument("--max-positions", type=A.positive, default=512, help="position embeddings (default: 512)")
    p.add_argument("--seq-len", type=A.positive, default=128, help="sequence length for FLOPs (default: 128)")
    p.set_defaults(func=_params)

    p = sub.add_parser("train", help="one tracked MLM pre-training run")
    p.add_argument(
        "items",
        nargs="*",
        metavar="[CONFIG] [KEY=VALUE ...]",
        help="YAML run config (defaults apply to what it leaves out), and dotted overrides, "
        "e.g. optim.lr=3e-4",
    )
    A.add_set(p, "the run config")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=A.resume,
        metavar="RUN_ID",
        help="continue the newest unfinished run of this config, or the given run, from its last checkpoint",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_train)

    p = sub.add_parser("finetune", help="fine-tune pre-trained weights on downstream tasks")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--run", type=A.run_id, help="a pre-training run (MLflow run id), with --step or --steps"
    )
    source.add_argument(
        "--weights",
        type=A.existing_file,
        help="a kept weights file (<run id>/kept/step-N.pt) of a run in the store",
    )
    source.add_argument(
        "--hf",
        metavar="DIR",
        type=A.existing_folder,
        help="a Hugging Face BertForMaskedLM folder with its tokenizer",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", type=A.count, help="one kept step of the run")
    which.add_argument("--steps", choices=["all"], help="all: the run's whole kept series")
    p.add_argument(
        "--experiment", type=A.name, help="the MLflow experiment of an --hf folder's runs (default: finetune)"
    )
    p.add_argument(
        "--task",
        action=A.AppendOnce,
        choices=TASKS,
        metavar="TASK",
        required=True,
        help="a task (repeatable): GLUE or offline",
    )
    p.add_argument(
        "--seeds",
        type=A.listed(A.count),
        default=[1],
        help="fine-tuning seeds, comma-separated (default: 1)",
    )
    p.add_argument(
        "--tracking-uri",
        type=A.tracking_uri,
        help="the pre-training run's store (default: $MLFLOW_TRACKING_URI, else mlflow.db)",
    )
    p.add_argument(
        "items",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides of the paper's recipe, e.g. epochs=3 lr=2e-5 max_steps=100 glue_dir=DIR",
    )
    p.set_defaults(func=_finetune)

    from symattn.sweep.commands import add_parsers as add_sweep_parsers
    from symattn.tracking.ui import add_parser as add_ui_parser

    add_sweep_parsers(sub)
    from analysis.cli import add_import_parser
    from analysis.cli import add_parser as add_figures_parser

    add_figures_parser(sub)
    add_import_parser(sub)
    _add_bench_parser(sub)
    add_ui_parser(sub)
    return parser


def _starts_cells(argv: list[str]) -> bool:
    return argv[:1] in (["work"], ["run"], ["extend"]) and not {"--dry-run", "-h", "--help"} & set(argv)


def _interruptible() -> None:
    """Ctrl-C (SIGINT) stops every command, however it was started. A background job of a
    non-interactive shell (`cmd &` in a script, nohup) starts with SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: a server or worker would be unstoppable by SIGINT. So a
    command started in the background of a script also stops at a Ctrl-C at that terminal, as the
    MLflow server and uvicorn do (symattn/README.md)."""
    if (
        signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        and threading.current_thread() is threading.main_thread()
    ):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _interruptible()
    try:
        args = build_parser().parse_args(argv)  # a bad argument is refused here, before anything starts
    except SystemExit as exc:  # argparse's refusal (2) or --help (0), as a status like any other
        return exc.code if isinstance(exc.code, int) else 2
    if _starts_cells(argv):
        from symattn.sweep.cell_server import context

        context()  # first: the cells' server imports torch and co. while this process does
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"symattn {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"symattn {args.command}: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"symattn {args.command}: interrupted", file=sys.stderr)
        return 130
