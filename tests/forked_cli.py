"""The `symattn` command, run many times fast: each run is a process of its own, forked from a
server that imported the command and its heavy dependencies (torch, Lightning, MLflow, Optuna)
once. A run gets its own arguments, working folder and environment, runs `symattn.cli.main` as
`python -m symattn` does, and reports its exit status and what it printed. Only the imports are
shared, so a run sees what a fresh command sees, at a fraction of its start-up time.

    server = ForkedCli(); result = server.run(argv, cwd, env); server.close()

Run as a script, this module is the server: one JSON request a line on stdin, one JSON answer a
line on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "@forked-cli@ "  # the server's answers, told from anything else printed on its stdout


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class ForkedCli:
    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        if self._answer() != "ready":
            raise RuntimeError("the forked-cli server did not start")

    def _answer(self) -> str:
        """The server's next answer; other lines (what an import may print) are skipped."""
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return line[len(MARK) :].rstrip("\n")
        raise RuntimeError("the forked-cli server died")

    def run(self, argv: list[str], cwd: Path, env: dict, timeout: float = 120) -> Result:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return Result(**json.loads(self._answer()))

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _child(request: dict, out: int, err: int) -> None:
    """In the forked process: the request's folder, environment and output files, then the command."""
    os.setpgid(0, 0)  # a command's own children are ended with it on a timeout
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the server's requests
    os.dup2(out, 1)
    os.dup2(err, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 1
    try:
        from symattn.cli import main

        code = main(request["argv"])
    except SystemExit as exc:  # argparse's refusals and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # an uncaught error, printed as Python prints it
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_one(request: dict) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            _child(request, out.fileno(), err.fileno())
        deadline = time.monotonic() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = -signal.SIGKILL
                break
            time.sleep(0.01)
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return {"returncode": code, "stdout": texts[0], "stderr": texts[1]}


def serve() -> None:
    sys.path.insert(0, str(REPO))
    # What the commands import, loaded once (the heaviest first).
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import optuna  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401

    import analysis.report  # noqa: F401
    import symattn.bench.command  # noqa: F401
    import symattn.cli  # noqa: F401
    import symattn.finetune.run  # noqa: F401
    import symattn.run.pretrain  # noqa: F401
    import symattn.sweep.worker  # noqa: F401

    print(f"{MARK}ready", flush=True)
    for line in sys.stdin:
        print(MARK + json.dumps(_serve_one(json.loads(line))), flush=True)
    os._exit(0)  # not waiting for threads that imports started


if __name__ == "__main__":
    serve()
