"""Screenshots of the MLflow UI as `symattn ui` serves it, through headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by Selenium; nothing is downloaded). tests/test_ui.py checks
the pages with these helpers; run as a script, it writes the README's picture: the address `symattn ui`
prints (the newest study's comparison), opened in a fresh browser without a click, 1600x900.

    .venv/bin/python tests/ui_screens.py OUT.png [--tracking-uri URI]

(default: the project's store, mlflow.db). It starts `symattn ui` on a free port and stops it when
done.

What it relies on is MLflow 3.17's UI: the shared view `symattn.tracking.ui_view` writes, the route
`#/experiments/<id>?workflowType=machine_learning` (the experiment kind tag alone does not choose
the mode), the runs table's ag-grid rows (`.ag-row[row-id=<run id>]` in
`.ag-pinned-left-cols-container`) and column headers (`[data-testid=sort-header-<column>]`), the
expand button of a parent run (`button[data-component-id*=runnamecellrenderer]`), Plotly's charts
(`.js-plotly-plot`, a run's line `path.js-line`), the "Search metric charts" box of a run's Model
metrics tab and its legend "<run name> (<metric>)", the artifact tree's entries as text and the
preview's `img` (a blob URL), and the assistant panel's localStorage keys.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

WIDTH, HEIGHT = 1600, 900
WAIT = 60  # seconds an element may take to appear (the 2-core VM renders slowly while busy)
MODEL_TRAINING = "workflowType=machine_learning"
APT = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver), installed with apt-get when missing and allowed; else why not."""

    def found():
        return shutil.which("chromium"), shutil.which("chromedriver")

    if None in found() and shutil.which("apt-get") and os.geteuid() == 0:
        for cmd in (APT, ["apt-get", "update", "-qq"], APT):
            if subprocess.run(cmd, capture_output=True, timeout=900).returncode == 0 and None not in found():
                break
    chromium, driver = found()
    if chromium is None or driver is None:
        return "chromium and chromedriver are not installed and apt-get could not install them"
    return chromium, driver


def chrome(chromium: str, driver: str):
    """Headless Chromium at a 1600x900 viewport; Selenium never looks for a browser or driver."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    return d


@contextmanager
def running_ui(*args: str, env: dict | None = None, timeout: float = 240, preexec_fn=None):
    """`symattn ui ARGS` in a child process, until it printed its address: yields its `proc`, `url`
    and the lines `printed`; at the end, if it still runs, Ctrl-C (SIGINT) to it, then SIGTERM and
    SIGKILL to it and its servers if they linger (pass or fail, nothing is left running); then its
    `stderr`."""
    from tests.processes import end_tree

    proc = subprocess.Popen(
        [sys.executable, "-m", "symattn", "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    # stderr is drained as it comes: a full pipe would block the process at its next write.
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    printed: list[str] = []
    ui = None
    deadline = time.monotonic() + timeout
    try:
        while not printed or not printed[-1].startswith("Ctrl-C"):
            if proc.poll() is not None and lines.empty() or time.monotonic() > deadline:
                raise AssertionError(f"symattn ui gave no address (its stderr is below): {printed}")
            try:
                printed.append(lines.get(timeout=1).rstrip("\n"))
            except queue.Empty:
                pass
        [address] = [line for line in printed if line.startswith("MLflow UI: ")]
        ui = SimpleNamespace(proc=proc, url=address.split()[2], printed=printed, stderr=None)
        yield ui
    finally:
        end_tree(proc)
        drain.join(timeout=10)
        stderr = "".join(errors)
        print(stderr, end="", file=sys.stderr)  # pytest shows it if the test fails
        if ui is not None:
            ui.stderr = stderr


def wait_for(d, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(d, WAIT).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {WAIT} s ({d.current_url})") from None


def body_text(d) -> str:
    from selenium.webdriver.common.by import By

    return d.find_element(By.TAG_NAME, "body").text


def open_page(d, base: str, route: str) -> None:
    """`base/#/route` in model-training mode, the MLflow assistant's panel closed."""
    if not d.current_url.startswith(base):
        d.get(f"{base}/")
    d.execute_script(
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
    )
    d.get(f"{base}/#/{route}{'&' if '?' in route else '?'}{MODEL_TRAINING}")


def parent_rows(d) -> list:
    from selenium.webdriver.common.by import By

    return d.find_elements(By.CSS_SELECTOR, ".ag-pinned-left-cols-container .ag-row")


def experiment_with_study_expanded(d, base: str, experiment_id: str, study_run_id: str) -> list[str]:
    """The experiment's runs table with the study run expanded; the run ids of its rows, in order."""
    from selenium.webdriver.common.by import By

    open_page(d, base, f"experiments/{experiment_id}")
    row = f".ag-pinned-left-cols-container .ag-row[row-id='{study_run_id}']"
    wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the study run in the runs table")
    before = len(parent_rows(d))
    d.find_element(By.CSS_SELECTOR, f"{row} button[data-component-id*='runnamecellrenderer']").click()
    wait_for(d, lambda d: len(parent_rows(d)) > before, "the study run's children")
    return [r.get_attribute("row-id") for r in parent_rows(d)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--tracking-uri", help="the MLflow store (default: the project's mlflow.db)")
    args = parser.parse_args(argv)
    paths = browser_paths()
    if isinstance(paths, str):
        print(paths, file=sys.stderr)
        return 2
    from selenium.webdriver.common.by import By

    ui_args = ["--port", str(free_port())]
    if args.tracking_uri:
        ui_args += ["--tracking-uri", args.tracking_uri]
    with running_ui(*ui_args) as ui:
        if "viewStateShareKey=" not in ui.url:
            print(f"no study in the store: symattn ui printed {ui.url}", file=sys.stderr)
            return 2
        d = chrome(*paths)
        try:
            d.get(ui.url)  # as a user opens it: a fresh browser, no clicks
            line = ".js-plotly-plot .scatterlayer .trace path.js-line"
            wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, line), "the charts")
            time.sleep(2)  # the other charts finish drawing
            d.save_screenshot(str(Path(args.out).resolve()))
        finally:
            d.quit()
    print(f"{args.out}: {ui.url}, {WIDTH}x{HEIGHT}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's symattn
    sys.exit(main())
