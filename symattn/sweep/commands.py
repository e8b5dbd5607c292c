"""The sweep's commands: `symattn queue`, `work`, `extend`, `status` and `run`, their arguments and
what each prints."""

from __future__ import annotations

import argparse
import sys

from symattn import arguments as A


def _dry_run(spec, cells, finetune_cells, data_slice=None) -> int:
    from symattn.sweep.dry_run import dry_run

    print(f"{'cell':<36} {'group':<12} {'parameters':>12} {'non-embedding':>14} {'loss after 2 steps':>19}")
    for r in dry_run(cells, data_slice=data_slice):
        print(
            f"{r['cell']:<36} {r['group']:<12} {r['total']:>12,} {r['non_embedding']:>14,} {r['loss']:>19.4f}"
        )
    if finetune_cells:
        print(
            f"and {len(finetune_cells)} fine-tuning cells, {len(finetune_cells) // len(cells)} per pre-training cell"
        )
    if data_slice is None:
        print("dry run: every cell is valid, builds and trains; nothing was written")
    else:
        print(
            f"dry run: every cell is valid, builds and trains on its batches from the token store of "
            f"{data_slice}; nothing was written but that store, in the data cache"
        )
    _warn_reach(spec, cells)
    return 0


def _expanded(path: str, overrides: list[str]):
    """The spec (`overrides` applied to its base config) and its cells, validated: a spec is
    expanded once per command."""
    from symattn.sweep.design import expand
    from symattn.sweep.finetune_cells import expand_finetune
    from symattn.sweep.spec import load_spec

    spec = load_spec(path, overrides)
    cells = expand(spec)
    return spec, cells, expand_finetune(spec, cells)


def _warn_reach(spec, cells) -> None:
    """After a spec was accepted: say so where its stated analysis can never reach its level."""
    if spec.analysis is not None and (warning := spec.analysis.reach_warning(cells)):
        print(warning, file=sys.stderr)


def _slice(args: argparse.Namespace):
    if args.data_slice is not None and not args.dry_run:
        raise ValueError("--data-slice is for --dry-run; add --dry-run, or leave --data-slice out")
    return args.data_slice


def _queue(args: argparse.Namespace) -> int:
    from symattn.paths import redact

    data_slice = _slice(args)
    spec, cells, finetune_cells = _expanded(args.spec, args.set)
    if args.dry_run:
        return _dry_run(spec, cells, finetune_cells, data_slice)
    from symattn.sweep.queue import queue

    result = queue(spec, args.storage, cells, finetune_cells)
    _warn_reach(spec, cells)
    print(
        f"study {result.study}: {result.added} cells added, {result.existing} already queued ({redact(result.storage)})"
    )
    return 0


def _work(args: argparse.Namespace) -> int:
    from symattn.sweep.worker import work

    done = work(args.study, args.storage, args.devices, args.per_device)
    failed = [name for name, state in done if state not in ("COMPLETE", "STOPPED")]
    stopped = sum(state == "STOPPED" for _, state in done)
    print(
        f"study {args.study}: {len(done) - len(failed) - stopped} cells completed, {len(failed)} failed "
        f"by this worker" + (f", {stopped} stopped and queued again" if stopped else "")
    )
    if stopped:
        return 1
    return 1 if failed else 0


def _extend(args: argparse.Namespace) -> int:
    from symattn.sweep.extend import extend
    from symattn.sweep.worker import parse_devices, work

    parse_devices(args.devices)  # before anything is queued
    done = extend(args.study, args.storage, args.max_steps)
    left = [
        f"{len(v)} {what}"
        for v, what in ((done.stopped_early, "stopped early"), (done.failed, "failed"))
        if v
    ]
    print(
        f"study {args.study}: {len(done.extended)} cells go on to {args.max_steps:,} steps"
        + (f" ({', '.join(left)}: left as they are)" if left else "")
    )
    if not done.extended:
        return 0
    outcomes = work(args.study, args.storage, args.devices, args.per_device)
    stopped = sum(state == "STOPPED" for _, state in outcomes)
    if stopped:
        print(
            f"study {args.study}: {stopped} cells stopped; the same command, or symattn work, continues them"
        )
        return 1
    return 0 if all(state == "COMPLETE" for _, state in outcomes) else 1


def _status(args: argparse.Namespace) -> int:
    from symattn.sweep.status import eta_line, format_status, status_rows, watch

    if args.watch:
        try:
            watch(args.study, args.storage, args.interval)
        except KeyboardInterrupt:  # the usual way to stop watching
            print()
        return 0
    rows = status_rows(args.study, args.storage)
    print(f"{format_status(rows)}\n{eta_line(rows)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    data_slice = _slice(args)
    spec, cells, finetune_cells = _expanded(args.spec, args.set)
    from symattn.sweep.worker import parse_devices

    parse_devices(args.devices)  # before the queue is written
    if args.dry_run:
        return _dry_run(spec, cells, finetune_cells, data_slice)
    from symattn.paths import resolve_uri
    from symattn.sweep.queue import queue
    from symattn.sweep.status import format_status, status_rows
    from symattn.sweep.worker import work

    result = queue(spec, args.storage, cells, finetune_cells)
    _warn_reach(spec, cells)
    print(f"study {result.study}: {result.added} cells added, {result.existing} already queued")
    work(spec.name, result.storage, args.devices, args.per_device)
    rows = status_rows(spec.name, result.storage)
    print(format_status(rows))
    left = sum(r["state"] in ("WAITING", "RUNNING") for r in rows)
    if left:  # stopped (Ctrl-C, SIGTERM): no figures of a study half done
        print(f"{spec.name}: {left} cells left; the same command continues the study where it stopped")
        return 1
    if args.figures:
        from analysis.report import runs_report

        print(runs_report(spec.name, resolve_uri(cells[0].config.tracking.uri)))
    return 0 if all(r["state"] == "COMPLETE" for r in rows) else 1


def add_dry_run(p) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate every cell, build its model, run 2 steps on random tokens; write nothing",
    )
    p.add_argument(
        "--data-slice",
        type=A.parquet_folder,
        metavar="DIR",
        help="with --dry-run: step every cell on its batches from the token store of these Parquet "
        "files (a local slice of the spec's corpus, in its format), built as the full corpus would be",
    )


def add_parsers(sub) -> None:
    """Register the sweep's commands on the `symattn` subparsers `sub`."""
    storage_help = (
        "Optuna storage: a journal file or sqlite:/// / postgresql:// URL (default: optuna.journal)"
    )
    p = sub.add_parser(
        "queue", help="create the stores and study of a sweep spec; enqueue every missing cell once"
    )
    p.add_argument("spec", type=A.existing_file, help="sweep spec YAML (see experiments/)")
    A.add_set(p, "the spec's base config")
    p.add_argument("--storage", help=storage_help)
    add_dry_run(p)
    p.set_defaults(func=_queue)

    def add_worker_args(p):
        p.add_argument("--storage", help=storage_help)
        p.add_argument(
            "--devices",
            type=A.devices,
            default="auto",
            help="cpu, auto (every GPU, else cpu), or GPU indices 0,1,...",
        )
        p.add_argument(
            "--per-device",
            type=A.positive,
            help="cells at once on each device (default: the spec's workers.per_device)",
        )

    p = sub.add_parser("work", help="pull cells of a queued study until none are left")
    p.add_argument("study", type=A.study, help="study name (the spec's name)")
    add_worker_args(p)
    p.set_defaults(func=_work)

    p = sub.add_parser(
        "extend",
        help="continue a study's cells that ran to their budget (constant schedule) to a larger one",
        description="Queue every pre-training cell of the study that ran to its budget (neither stopped "
        "early below its floor nor failed) to go on to --max-steps, in the same MLflow run from its last "
        "checkpoint, then work them on the local devices. Only a constant schedule can be extended.",
    )
    p.add_argument("study", type=A.study, help="study name (the spec's name)")
    p.add_argument("--max-steps", type=A.positive, required=True, help="the new budget of every cell")
    add_worker_args(p)
    p.set_defaults(func=_extend)

    p = sub.add_parser("status", help="cells of a study by state, with run ids, progress and final losses")
    p.add_argument("study", type=A.study, help="study name (the spec's name)")
    p.add_argument("--storage", help=storage_help)
    p.add_argument(
        "--watch",
        action="store_true",
        help="refresh until no cell is waiting or running (Ctrl-C stops), with the study's ETA",
    )
    p.add_argument(
        "--interval", type=A.seconds, default=5.0, metavar="S", help="seconds between refreshes (default: 5)"
    )
    p.set_defaults(func=_status)

    p = sub.add_parser("run", help="queue a sweep spec, work it on the local devices, then draw its figures")
    p.add_argument("spec", type=A.existing_file, help="sweep spec YAML")
    A.add_set(p, "the spec's base config")
    add_worker_args(p)
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the figures")
    add_dry_run(p)
    p.set_defaults(func=_run)
