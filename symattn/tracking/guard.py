"""A child server that cannot outlive the process that started it.

`python -m symattn.tracking.guard PARENT_PID CMD ...` starts CMD in a process group of its own and stays
beside it as its guard. When the guard's parent is gone, however it went (SIGKILL included), or
when the guard gets SIGTERM or SIGINT, it stops CMD's whole group: SIGTERM, then SIGKILL after
`STOP_SECONDS`, and exits once the group is empty. A server such as `mlflow server` starts a child
of its own (uvicorn) that a signal to the server alone would orphan; the group reaches it too.
When CMD exits by itself, the guard exits with its status.

The parent is watched by polling rather than by Linux's parent-death signal, so that a guard works
wherever Python does; `PARENT_PID` closes the race of a parent that died before the guard looked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STOP_SECONDS = 10.0
POLL_SECONDS = 0.2


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(proc: subprocess.Popen, seconds: float = STOP_SECONDS) -> None:
    """SIGTERM to the process group `proc` leads, SIGKILL to what is left of it after `seconds`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            proc.poll()  # reaps the leader: a zombie would keep its group alive
            if not group_alive(proc.pid):
                break
            time.sleep(0.05)
    proc.poll()


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop


STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def main(argv: list[str]) -> int:
    parent, cmd = int(argv[0]), argv[1:]
    for sig in STOPS:
        signal.signal(sig, _stop)
    child = None
    try:
        # A stop that came between the server's start and `child` being set would leave it
        # running: held back until then (the server itself starts with them open).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        while os.getppid() == parent:
            if child.poll() is not None:
                return child.returncode if child.returncode >= 0 else 128 - child.returncode
            time.sleep(POLL_SECONDS)
        return 143  # the parent is gone
    except _Stop:
        return 143
    finally:
        for sig in STOPS:  # the group is stopped whatever comes
            signal.signal(sig, signal.SIG_IGN)
        if child is not None:
            stop_group(child)


def guarded(cmd: list[str]) -> list[str]:
    """The command line that runs `cmd` under a guard watching this process."""
    return [sys.executable, "-m", "symattn.tracking.guard", str(os.getpid()), *cmd]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
