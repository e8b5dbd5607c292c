"""Processes a test starts, ended by the test whether it passes or fails.

`until` waits for a condition, polling, with a bound (never a bare sleep that guesses how long
something takes on a busy machine). `end_tree` stops a process and every process it started, asking first (the signal the test uses to
stop it, then SIGTERM) and killing what is left, so that a failed test leaves nothing running on
the machine. `ignoring_sigint` starts a child as a background job of a non-interactive shell does
(`cmd &` in a script, nohup): with SIGINT ignored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def end_tree(proc: subprocess.Popen, first: int = signal.SIGINT, timeout: float = 60) -> None:
    """`first`, then SIGTERM, each with up to `timeout` seconds to exit, then SIGKILL; then every
    descendant seen along the way that is still there is killed too."""
    seen = descendants(proc.pid)
    for sig in (first, signal.SIGTERM):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            seen += descendants(proc.pid)
    if proc.poll() is None:
        seen += descendants(proc.pid)
        proc.kill()
        proc.wait()
    for p in seen:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(seen, timeout=10)


def symattn_in(home: Path, env: dict, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`symattn ARGS` run in `home` with `env`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "symattn", *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ignoring_sigint() -> None:
    """A `preexec_fn`: the child starts with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def until(
    condition: Callable[[], object],
    what: str,
    timeout: float = 300,
    proc: Optional[subprocess.Popen] = None,
    every: float = 0.2,
):
    """`condition()`'s first true value, polled every `every` seconds; fails after `timeout`
    seconds, or as soon as `proc` (the process that should bring it about) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert proc is None or proc.poll() is None, (
            f"the process ended (exit {proc.returncode}) before {what}"
        )
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(every)


def heartbeats_stale(study, grace_seconds: float) -> bool:
    """Whether every running trial of an Optuna study has gone `grace_seconds` without a heartbeat,
    so that the next worker takes it as dead and retries it."""
    from symattn.sweep.optuna_internals import last_beat

    running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    return all(time.time() - last_beat(t) > grace_seconds for t in running)
