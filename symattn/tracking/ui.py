"""`symattn ui`: the MLflow UI on the project's store, and with `--optuna` optuna-dashboard on the
study storage, on loopback, until Ctrl-C or SIGTERM.

Each server runs under a guard (`symattn.tracking.guard`) in a session of its own (Ctrl-C at the terminal
reaches this process only): the guard stops the server's whole process group when this process
stops it or dies, SIGKILL included, so no server outlives `symattn ui`. Store URLs reach the servers
through their environment, never their command line, where any user could read a password. Every
store and port is checked before anything starts, so bad input creates nothing (MLflow and Optuna
would create an empty store at a path that has none). MLflow is not imported here: the address
printed is found through the server's REST API.

MLflow 3.17 opens an experiment in GenAI mode whatever its `mlflow.experimentKind` tag says (the
mode is the URL's `workflowType`, else the browser's last choice, else GenAI), so the addresses
printed carry `workflowType=machine_learning`. The newest study's address opens its comparison
(`symattn.tracking.ui_view`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from symattn import arguments as A
from symattn import keys
from symattn.errors import RunError
from symattn.paths import check_uri, is_server, project_root, resolve_uri, sqlite_path
from symattn.tracking.guard import STOP_SECONDS, guarded

READY_SECONDS = 180.0  # mlflow server takes 8-25 s to answer on a busy 2-core machine
MODEL_TRAINING = "workflowType=machine_learning"
DASHBOARD_STORAGE = "SYMATTN_DASHBOARD_STORAGE"  # the dashboard child's storage URL


class _Terminated(Exception):
    """SIGTERM: stop both servers and exit 0."""


class ServerDied(RunError):
    """A server exited before it answered, or while serving (one line: its last words)."""


def mlflow_store(uri: Optional[str]) -> tuple[str, Path]:
    """The backend store URI to serve and the folder of artifacts beside it; refused (ValueError)
    when the store does not exist, since `mlflow server` would create an empty one."""
    uri = check_uri(resolve_uri(uri))
    if is_server(uri):
        raise ValueError(f"{uri} is a tracking server already: open it in a browser")
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            raise ValueError(
                f"no MLflow store at {db}; run a sweep or `symattn train` first, or give --tracking-uri sqlite:///PATH"
            )
        return uri, db.resolve().parent / "mlartifacts"
    if uri.startswith("file:") and not Path(uri.removeprefix("file://")).is_dir():
        raise ValueError(f"no MLflow file store at {uri}; give --tracking-uri of an existing store")
    return uri, project_root() / "mlartifacts"


def optuna_storage(url: Optional[str]) -> str:
    """The Optuna storage URL or journal path to serve, refused when its file does not exist."""
    from symattn.sweep.storage import default_storage

    url = url or default_storage()
    path = sqlite_path(url) if url.startswith("sqlite:") else None
    if "://" not in url or url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
    if path is not None and not path.is_file():
        raise ValueError(f"no Optuna storage at {path}; queue a sweep first, or give --storage")
    return url


def check_port(host: str, port: int, flag: str) -> None:
    """Refuse a port another process listens on (bound as the servers bind: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ValueError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another port with {flag}"
            ) from None


class Server:
    """One server under a guard, in a session of its own, its output kept in a temporary file
    (shown if it dies)."""

    def __init__(self, name: str, argv: list[str], health_url: str, env: Optional[dict] = None):
        self.name, self.health_url = name, health_url
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            guarded(argv),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    def last_words(self) -> str:
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines()]
        raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b.*: ", line)]
        logged = [line for line in lines if "ERROR" in line]
        return (raised or logged or [line for line in lines if line] or ["no output"])[-1][:300]

    def died(self) -> ServerDied:
        return ServerDied(f"{self.name} exited with status {self.proc.returncode}: {self.last_words()}")

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.died()
            try:
                with urllib.request.urlopen(self.health_url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise ServerDied(f"{self.name} did not answer at {self.health_url} within {timeout:.0f} s")

    def stop(self) -> None:
        """The guard stops the server's group and exits; if the guard itself hangs, what it
        guards is killed from here."""
        import psutil

        try:
            guarded_procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            guarded_procs = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=2 * STOP_SECONDS + 5)
        except subprocess.TimeoutExpired:
            for p in [*guarded_procs, psutil.Process(self.proc.pid)]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            self.proc.wait()
        self.log.close()


def display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else (f"[{host}]" if ":" in host else host)


def rest(base: str, path: str, body: dict) -> dict:
    """POST to the MLflow server's REST API (`api/2.0/mlflow/PATH`)."""
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def rest_get(base: str, path: str) -> dict:
    """GET from the MLflow server's REST API (`api/2.0/mlflow/PATH?QUERY`)."""
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/{path}", timeout=30) as r:
        return json.load(r)


def newest_study(base: str, name: Optional[str] = None) -> Optional[dict]:
    """The `info` of the most recently started study run in the store (of study `name` if given),
    with its study's name (`study`), read through the server's REST API; None when there is none."""
    ids, token = [], None
    while True:
        page = rest(
            base, "experiments/search", {"max_results": 1000, **({"page_token": token} if token else {})}
        )
        ids += [e["experiment_id"] for e in page.get("experiments", [])]
        token = page.get("next_page_token")
        if not token:
            break
    query = f"tags.{keys.KIND} = '{keys.STUDY_RUN}'" + (f" and tags.{keys.STUDY} = '{name}'" if name else "")
    body = {
        "experiment_ids": ids,
        "filter": query,
        "order_by": ["attributes.start_time DESC"],
        "max_results": 1,
    }
    runs = rest(base, "runs/search", body).get("runs", []) if ids else []
    if not runs:
        return None
    tags = {t["key"]: t["value"] for t in runs[0]["data"].get("tags", [])}
    return {**runs[0]["info"], "study": tags.get(keys.STUDY)}


def study_page(base: str, study: dict) -> str:
    """The address of the study's comparison (`symattn.tracking.ui_view`); its experiment's runs page if the
    view cannot be written (a store the user may only read)."""
    from symattn.tracking.ui_view import view_route, write_study_view

    experiment_id = study["experiment_id"]
    plain = f"{base}/#/experiments/{experiment_id}?{MODEL_TRAINING}"
    if not study.get("study"):
        return plain
    try:
        key = write_study_view(lambda path, body: rest(base, path, body), experiment_id, study["study"])
    except (OSError, ValueError, KeyError):
        return plain
    return f"{base}/#/{view_route(experiment_id, key)}"


def paper_comparison(base: str, study: dict) -> Optional[str]:
    """The address listing the study's cells and the paper's imported runs together, sorted by
    escape step; None when the paper's runs are not in the store (`symattn import acl2024`)."""
    from analysis.frames import PAPER_NAME
    from symattn.tracking.ui_view import comparison_route

    try:
        paper = rest_get(base, f"experiments/get-by-name?experiment_name={PAPER_NAME}")["experiment"]
    except (OSError, ValueError, KeyError):
        return None
    if paper.get("lifecycle_stage") != "active":  # a deleted experiment is found by name too
        return None
    return f"{base}/#/{comparison_route([study['experiment_id'], paper['experiment_id']])}"


def link_trials(storage_url: str, base: str) -> None:
    """Each trial's MLflow run as a link in its optuna-dashboard note (the dashboard shows user
    attributes as plain text); a note is written only where it changed (the UI's port, a new run)."""
    import optuna
    from optuna_dashboard import get_note, save_note

    from symattn.sweep.optuna_internals import trial_id
    from symattn.sweep.progress import RUN_ID
    from symattn.sweep.storage import open_storage

    storage = open_storage(storage_url)
    experiments: dict[str, str] = {}
    for summary in storage.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for frozen in study.get_trials(deepcopy=False):
            run_id = frozen.user_attrs.get(RUN_ID)
            if not run_id:
                continue
            try:
                if run_id not in experiments:
                    experiments[run_id] = rest_get(base, f"runs/get?run_id={run_id}")["run"]["info"][
                        "experiment_id"
                    ]
            except (OSError, ValueError, KeyError):
                continue  # a run of another store, or deleted: no link
            url = f"{base}/#/experiments/{experiments[run_id]}/runs/{run_id}?{MODEL_TRAINING}"
            note = f"MLflow run: [{frozen.user_attrs.get('name', run_id)}]({url})"
            trial = optuna.Trial(study, trial_id(frozen))
            if get_note(trial) != note:
                save_note(trial, note)


def mlflow_argv(artifacts: Path, host: str, port: int) -> list[str]:
    """`mlflow server` on the store named by `MLFLOW_BACKEND_STORE_URI` in its environment. The suite's experiments keep their artifacts at file:// URIs
    (mlartifacts/ beside a sqlite store), which the server reads itself for the artifacts tab and
    its previews; `--artifacts-destination` puts those of an experiment created in the UI (an
    mlflow-artifacts:/ root) in the same folder, not in ./mlartifacts of the current directory. One
    worker: the UI of one user."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--artifacts-destination",
        artifacts.as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--uvicorn-opts=--no-access-log",
    ]


def command(args: argparse.Namespace) -> int:
    backend, artifacts = mlflow_store(args.tracking_uri)
    storage = optuna_storage(args.storage) if args.optuna else None
    if args.optuna and args.optuna_port == args.port:
        raise ValueError(f"--optuna-port {args.optuna_port} is the MLflow UI's --port; pick another")
    check_port(args.host, args.port, "--port")
    if args.optuna:
        check_port(args.host, args.optuna_port, "--optuna-port")
    base = f"http://{display_host(args.host)}:{args.port}"

    def terminate(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    servers: list[Server] = []
    try:
        # MLflow's job runner (GenAI evaluation, scorers: 8 more processes) is not used by the suite.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": backend}
        argv = mlflow_argv(artifacts, args.host, args.port)
        servers.append(Server("mlflow server", argv, f"{base}/health", env))
        if storage is not None:
            dash = f"http://{display_host(args.host)}:{args.optuna_port}"
            argv = [sys.executable, "-m", "symattn.tracking.ui", args.host, str(args.optuna_port)]
            servers.append(Server("optuna-dashboard", argv, f"{dash}/api/meta", {DASHBOARD_STORAGE: storage}))
        for server in servers:
            server.wait_ready()
        try:
            study = newest_study(base)
        except (OSError, ValueError, KeyError):  # the address is a convenience: the root will do
            study = None
        if study is None:
            print(f"MLflow UI: {base}/ (no study yet; pick 'Model training' at the top left)", flush=True)
        else:
            print(f"MLflow UI: {study_page(base, study)} (the newest study, {study['run_name']})", flush=True)
            paper = paper_comparison(base, study)
            if paper:
                print(f"Beside the paper's runs: {paper}", flush=True)
        if storage is not None:
            try:
                link_trials(storage, base)
            except Exception as exc:  # noqa: BLE001  links are a convenience: the dashboard serves without them
                print(f"optuna-dashboard: trials not linked to their MLflow runs ({exc})", file=sys.stderr)
            print(f"Optuna dashboard: {dash}/dashboard", flush=True)
        print("Ctrl-C stops the server" + "s" * (len(servers) > 1) + ".", flush=True)
        while True:
            for server in servers:
                if server.proc.poll() is not None:
                    raise server.died()
            time.sleep(0.5)
    except _Terminated:
        return 0
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers:
            server.stop()
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)


def serve_optuna_dashboard(storage_url: str, host: str, port: int) -> None:
    """optuna-dashboard on the study storage (a journal file through Optuna's JournalFileBackend),
    served by wsgiref's threading server without a log line per request."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    from symattn.sweep.storage import open_storage

    class Threaded(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    app = wsgi(open_storage(storage_url))
    make_server(host, port, app, server_class=Threaded, handler_class=Quiet).serve_forever()


if __name__ == "__main__":  # the optuna-dashboard child: HOST PORT, its storage in the environment
    serve_optuna_dashboard(os.environ.pop(DASHBOARD_STORAGE), sys.argv[1], int(sys.argv[2]))


def add_parser(sub) -> None:
    """Register `symattn ui` on the `symattn` subparsers `sub`."""
    p = sub.add_parser(
        "ui",
        help="the MLflow UI on the project's store (and optuna-dashboard on the study storage)",
        description="Serves the MLflow UI (mlflow server) on the tracking store, the runs' artifacts "
        "included, and prints its address: the newest study's experiment, in model-training mode. "
        "Ctrl-C stops it.",
    )
    p.add_argument("--port", type=A.port, default=5000, help="port of the MLflow UI (default: 5000)")
    p.add_argument(
        "--host",
        type=A.host,
        default="127.0.0.1",
        help="interface to listen on (default: 127.0.0.1, this machine only)",
    )
    p.add_argument(
        "--tracking-uri",
        type=A.tracking_uri,
        help="the MLflow store (default: $MLFLOW_TRACKING_URI, else mlflow.db)",
    )
    p.add_argument("--optuna", action="store_true", help="also serve optuna-dashboard on the study storage")
    p.add_argument(
        "--optuna-port", type=A.port, default=8080, help="port of optuna-dashboard (default: 8080)"
    )
    p.add_argument(
        "--storage",
        help="Optuna storage of --optuna: a journal file or sqlite:/// / postgresql:// URL (default: optuna.journal)",
    )

    def ui(args: argparse.Namespace) -> int:
        return command(args)

    p.set_defaults(func=ui)
