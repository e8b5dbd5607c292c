"""`symattn ui`: the MLflow UI (and optuna-dashboard) on the project's stores, refused on bad input,
stopped cleanly; and, in a real browser, a real study as a user browses it (slow)."""

import json
import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import optuna
import psutil
import pytest

from symattn import keys
from symattn.cli import main
from symattn.sweep.storage import open_storage
from symattn.tracking.ui_view import view_route
from tests.processes import ignoring_sigint
from tests.ui_screens import (
    body_text,
    browser_paths,
    chrome,
    experiment_with_study_expanded,
    free_port,
    open_page,
    running_ui,
    wait_for,
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    """A folder with an MLflow store (one experiment, `ui-test`) and an Optuna journal (one study,
    `ui-study`), made once: the servers only read them."""
    from symattn.tracking.store import experiment_id, open_store

    folder = tmp_path_factory.mktemp("stores")
    experiment_id(open_store(f"sqlite:///{folder / 'mlflow.db'}"), "ui-test")
    backend = optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal"))
    optuna.create_study(study_name="ui-study", storage=optuna.storages.JournalStorage(backend))
    return folder


def get_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.mark.parametrize(
    "stop, status, optuna_too, launch",
    [
        (signal.SIGINT, 130, False, None),
        (signal.SIGINT, 130, True, ignoring_sigint),  # as `symattn ui &` from a script starts it
        (signal.SIGTERM, 0, True, None),
    ],
    ids=["int", "int-when-ignored", "term"],
)
def test_ui_serves_the_stores_until_stopped_and_leaves_no_process(
    stores, child_env, stop, status, optuna_too, launch
):
    port, dash_port = free_port(), free_port()
    args = ["--port", str(port), "--tracking-uri", f"sqlite:///{stores / 'mlflow.db'}"]
    if optuna_too:
        args += ["--optuna", "--optuna-port", str(dash_port), "--storage", str(stores / "optuna.journal")]
    with running_ui(*args, env=child_env, preexec_fn=launch) as ui:
        assert ui.url == f"http://127.0.0.1:{port}/"  # no study in the store: its root
        children = psutil.Process(ui.proc.pid).children(recursive=True)
        assert children
        found = get_json(f"{ui.url}api/2.0/mlflow/experiments/search", {"max_results": 10})
        assert {e["name"] for e in found["experiments"]} == {"Default", "ui-test"}
        if optuna_too:
            assert f"Optuna dashboard: http://127.0.0.1:{dash_port}/dashboard" in ui.printed
            studies = get_json(f"http://127.0.0.1:{dash_port}/api/studies")["study_summaries"]
            assert [s["study_name"] for s in studies] == ["ui-study"]
        ui.proc.send_signal(stop)
        assert ui.proc.wait(timeout=60) == status
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    assert ui.stderr == ("symattn ui: interrupted\n" if stop == signal.SIGINT else "")
    assert {p.name for p in stores.iterdir()} == {"mlflow.db", "mlflow.db.lock", "optuna.journal"}


def test_ui_killed_leaves_no_server_running(stores, child_env):
    """SIGKILL gives `symattn ui` no chance to stop its servers: their guards do it."""
    args = ["--port", str(free_port()), "--tracking-uri", f"sqlite:///{stores / 'mlflow.db'}", "--optuna"]
    args += ["--optuna-port", str(free_port()), "--storage", str(stores / "optuna.journal")]
    with running_ui(*args, env=child_env) as ui:
        children = psutil.Process(ui.proc.pid).children(recursive=True)
        assert len(children) >= 4  # two guards, two servers (and the MLflow server's uvicorn)
        ui.proc.kill()
        assert ui.proc.wait(timeout=10) == -signal.SIGKILL
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]


@pytest.mark.slow
def test_no_password_shows_on_a_servers_command_line(postgres, child_env):
    """Both stores on a real PostgreSQL server with a password: the servers get their URLs through
    their environment, where only their user can read them."""
    from symattn.sweep.storage import open_storage
    from tests.postgres import PASSWORD

    optuna.create_study(study_name="pg-ui", storage=open_storage(postgres.url()))
    postgres.create_database("mlflow_ui")
    mlflow_store = postgres.url(database="mlflow_ui", driver="+psycopg2")  # SQLAlchemy's default is psycopg 3
    args = ["--port", str(free_port()), "--tracking-uri", mlflow_store]
    args += ["--optuna", "--optuna-port", str(free_port()), "--storage", postgres.url()]
    with running_ui(*args, env=child_env) as ui:
        children = psutil.Process(ui.proc.pid).children(recursive=True)
        assert len(children) >= 4  # two guards, two servers (and the MLflow server's uvicorn)
        for child in children:
            assert PASSWORD not in " ".join(child.cmdline()), child.cmdline()
        found = get_json(f"{ui.url}api/2.0/mlflow/experiments/search", {"max_results": 10})
        assert [e["name"] for e in found["experiments"]] == ["Default"]  # the server reads the store
        [line] = [line for line in ui.printed if line.startswith("Optuna dashboard: ")]
        dash = line.split()[-1].removesuffix("/dashboard")
        studies = get_json(f"{dash}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["pg-ui"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tracking-uri", "sqlite:///{tmp}/none/mlflow.db"], "tracking store folder"),
        (["--tracking-uri", "sqlite:///{tmp}/mlflow.db"], "no MLflow store at {tmp}/mlflow.db"),
        (["--tracking-uri", "http://127.0.0.1:1"], "is a tracking server already"),
        (["--optuna", "--storage", "{tmp}/optuna.journal"], "no Optuna storage at {tmp}/optuna.journal"),
        (["--optuna", "--storage", "sqlite:///{tmp}/optuna.db"], "no Optuna storage at {tmp}/optuna.db"),
        (["--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}"),
        (["--optuna", "--optuna-port", "{busy}"], "pick another port with --optuna-port"),
        (["--optuna", "--optuna-port", "{free}"], "--optuna-port {free} is the MLflow UI's --port"),
    ],
    ids=["no-folder", "no-store", "server", "no-journal", "no-sqlite", "port", "optuna-port", "same-port"],
)
def test_bad_input_is_refused_in_one_line_and_creates_nothing(stores, tmp_path, capsys, flags, message):
    """The stores exist unless a flag names another; nothing is started or written."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        values = {"tmp": str(tmp_path), "busy": str(busy.getsockname()[1]), "free": str(free_port())}
        args = ["--tracking-uri", f"sqlite:///{stores / 'mlflow.db'}", "--port", values["free"]]
        args += ["--storage", str(stores / "optuna.journal")]
        args += [f.format(**values) for f in flags]  # the last of a repeated flag counts
        before = sorted(tmp_path.rglob("*")), sorted(stores.iterdir())
        assert main(["ui", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symattn ui: error: ") and err.count("\n") == 1
    assert message.format(**values) in err
    assert (sorted(tmp_path.rglob("*")), sorted(stores.iterdir())) == before


# --- in a browser ----------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium (installed with apt-get when missing and possible), and the folder its
    screenshots go to: $SYMATTN_TEST_ARTIFACTS/test_ui if set, else the test's tmp_path."""
    paths = browser_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    shots = Path(os.environ.get("SYMATTN_TEST_ARTIFACTS") or tmp_path) / "test_ui"
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    d = chrome(*paths)
    yield d, shots
    d.quit()


@pytest.fixture
def study(tmp_path, run_overrides):
    """A real study, `browse`: two matched cells of 30 steps (validation every 10), worked by one
    worker, and its figures (`symattn figures`, logged to the study run)."""
    from symattn.sweep.queue import queue
    from symattn.sweep.spec import load_spec
    from symattn.sweep.worker import work
    from tests.test_browse import spec_file

    axes = {"model.attention.variant": ["vanilla", "symmetric"]}
    spec = load_spec(
        spec_file(tmp_path, run_overrides, axes), ["optim.max_steps=30", "eval.every_n_steps=10"]
    )
    queue(spec)
    done = work("browse", str(tmp_path / "optuna.journal"), "cpu", per_device=2)
    assert sorted(state for _, state in done) == ["COMPLETE", "COMPLETE"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["figures", "browse", "--tracking-uri", uri, "--out", str(tmp_path / "figures")]) == 0
    return uri


@pytest.mark.slow
def test_a_study_browsed_in_the_mlflow_ui(study, browser, child_env):
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    d, shots = browser
    client = MlflowClient(study)
    exp_id = client.get_experiment_by_name("browse").experiment_id
    [parent] = client.search_runs([exp_id], f"tags.{keys.KIND} = '{keys.STUDY_RUN}'")
    cells = {
        r.info.run_name: r.info.run_id
        for r in client.search_runs([exp_id], f"tags.{keys.KIND} = '{keys.PRETRAIN}'")
    }
    pngs = [a.path for a in client.list_artifacts(parent.info.run_id, keys.FIGURES_ARTIFACTS)]
    pngs = sorted((p for p in pngs if p.endswith(".png")), key=lambda p: not p.startswith("figures/loss"))
    assert pngs, "symattn figures logged no PNG under figures/ of the study run"
    started = time.monotonic()
    # The paper's runs beside ours: whole loss curves (their escapes), a few fine-tunings.
    from analysis.paper_import import import_paper
    from analysis.paths import REFERENCE_DIR
    from tests.analysis.test_paper_import import small_reference

    reference = small_reference(Path(study.removeprefix("sqlite:///")).parent / "reference")
    for size in ("base", "small"):
        name = f"validation_loss_bert_{size}.csv"
        (reference / name).write_text((REFERENCE_DIR / name).read_text())
    import_paper(study, reference)
    journal = study.removeprefix("sqlite:///").replace("mlflow.db", "optuna.journal")
    dashboard = ["--optuna", "--storage", journal, "--optuna-port", str(free_port())]
    with running_ui("--port", str(free_port()), "--tracking-uri", study, *dashboard, env=child_env) as ui:
        base = ui.url.split("/#/")[0]
        assert ui.url == f"{base}/#/{view_route(exp_id, 'study-browse')}"
        print(f"symattn ui answered in {time.monotonic() - started:.1f} s")

        # The address printed, opened as printed (no clicks, nothing set in the browser): the study's
        # cells listed flat, sorted by escape step, and val/loss charted first, a colour per variant.
        d.get(ui.url)
        rows = ".ag-pinned-left-cols-container .ag-row"
        wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == len(cells), "the cells listed")
        assert sorted(r.get_attribute("row-id") for r in d.find_elements(By.CSS_SELECTOR, rows)) == sorted(
            cells.values()
        )  # the cells, not their study run
        for name in cells:
            assert name in body_text(d)
        assert d.find_elements(By.XPATH, "//*[normalize-space(text())='Sort: escape/step']")
        line = ".scatterlayer .trace path.js-line"
        plots = wait_for(
            d,
            lambda d: [
                p
                for p in d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                if p.find_elements(By.CSS_SELECTOR, line)
            ],
            "the charts",
        )
        first = min(plots, key=lambda p: (p.location["y"], p.location["x"]))
        card = first.find_element(
            By.XPATH, "./ancestor::*[count(.//*[contains(@class, 'js-plotly-plot')]) = 1][last()]"
        )
        assert card.text.split("\n")[0] == "val/loss"
        assert first.location["y"] + first.size["height"] < d.execute_script("return window.innerHeight")

        def colours(d) -> set:  # each run's line is drawn as its history arrives
            return {
                path.value_of_css_property("stroke") for path in first.find_elements(By.CSS_SELECTOR, line)
            }

        wait_for(d, lambda d: len(colours(d)) == 2, "a line in vanilla's colour and one in symmetric's")
        titles = [
            e.text
            for e in d.find_elements(
                By.XPATH,
                "//*[normalize-space(text())='val/loss' or starts-with(normalize-space(text()), 'diag/')]",
            )
        ]
        assert titles and titles[0] == "val/loss"  # the loss before the diagnostics
        d.save_screenshot(str(shots / "0-printed-address.png"))

        # The same view as a table: the escape columns (`escape/step` once a cell escaped; here the
        # censored cells' bound and flag), the sort on the escape step.
        d.get(ui.url.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"))
        for column in ("escape/low", "escape/censored", "variant"):
            header = f"[data-testid='sort-header-{column}']"
            wait_for(d, lambda d, h=header: d.find_elements(By.CSS_SELECTOR, h), f"the {column} column")
        assert d.find_elements(By.XPATH, "//*[normalize-space(text())='Sort: escape/step']")
        d.save_screenshot(str(shots / "0-printed-address-table.png"))

        # The second address: our cells and the paper's runs in one list, by escape step (each in
        # its own steps, from the floor its tag names); censored runs (our 30-step cells) last.
        [beside] = [line.split()[-1] for line in ui.printed if line.startswith("Beside the paper's runs: ")]
        d.get(beside)
        wait_for(
            d,
            lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 8,
            "our 2 cells and the paper's 6 runs",
        )
        paper = {
            r.info.run_id: r.data.metrics[keys.ESCAPE_STEP]
            for r in client.search_runs(
                [client.get_experiment_by_name("acl2024").experiment_id], "tags.kind = 'pretrain'"
            )
        }
        listed = [r.get_attribute("row-id") for r in d.find_elements(By.CSS_SELECTOR, rows)]
        assert listed[:6] == sorted(paper, key=paper.get) and sorted(listed[6:]) == sorted(cells.values())
        d.save_screenshot(str(shots / "0-beside-the-paper.png"))

        # optuna-dashboard's note of each trial links its MLflow run.
        from optuna_dashboard import get_note

        trials = optuna.load_study(study_name="browse", storage=open_storage(journal)).get_trials()
        for trial in trials:
            run_id = trial.user_attrs["mlflow_run_id"]
            url = f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"
            live = optuna.Trial(
                optuna.load_study(study_name="browse", storage=open_storage(journal)), trial._trial_id
            )
            assert get_note(live) == f"MLflow run: [{trial.user_attrs['name']}]({url})"

        # The experiment is listed.
        open_page(d, base, "experiments")
        link = f"a[href$='/experiments/{exp_id}']"
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, link), "the study's experiment in the list")
        assert d.find_element(By.CSS_SELECTOR, link).text == "browse"
        d.save_screenshot(str(shots / "1-experiments.png"))

        # It opens in model-training mode on its runs table; the study run holds its two cells.
        rows = experiment_with_study_expanded(d, base, exp_id, parent.info.run_id)
        assert re.search(f"/experiments/{exp_id}/runs\\?", d.current_url)  # GenAI opens .../overview
        assert d.find_elements(By.CSS_SELECTOR, "[data-testid='sort-header-Run Name']")
        text = body_text(d)
        assert "Evaluation runs" not in text  # a GenAI page's sidebar
        assert "Sweep study browse: a tiny study" in text  # the experiment's description
        assert rows[0] == parent.info.run_id and sorted(rows[1:]) == sorted(cells.values())
        for name in cells:
            assert name in text
        d.save_screenshot(str(shots / "2-study-expanded.png"))

        # A cell's validation loss, charted on its page.
        name, run_id = sorted(cells.items())[0]
        open_page(d, base, f"experiments/{exp_id}/runs/{run_id}/model-metrics")
        search = "input[placeholder='Search metric charts']"
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, search), "the metric charts")
        d.find_element(By.CSS_SELECTOR, search).send_keys("val/loss")
        wait_for(d, lambda d: f"{name} (val/loss)" in body_text(d), "the val/loss chart's legend")
        line = ".js-plotly-plot .scatterlayer .trace path.js-line"
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, line), "the val/loss curve")
        assert f"{name} (diag/layer0/entropy)" not in body_text(d)  # the search kept one chart
        d.save_screenshot(str(shots / "3-cell-val-loss.png"))

        # A figure of the study, previewed in its run's artifacts.
        open_page(d, base, f"experiments/{exp_id}/runs/{parent.info.run_id}/artifacts")

        def entry(label: str):
            xpath = f"//div[normalize-space(text())='{label}']"
            shown = lambda d: [e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()]  # noqa: E731
            return wait_for(d, shown, f"the artifact {label}")[0]

        entry(keys.FIGURES_ARTIFACTS).click()
        entry(Path(pngs[0]).name).click()

        def loaded_image(d):
            return [
                img
                for img in d.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")  # and a hidden copy
                if img.is_displayed()
                and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            ]

        img = wait_for(d, loaded_image, f"the preview of {pngs[0]}")[0]
        assert d.execute_script("return arguments[0].naturalWidth", img) > 500
        assert pngs[0] in body_text(d)
        d.save_screenshot(str(shots / "4-study-figure.png"))
    print(f"browser checks: {time.monotonic() - started:.1f} s")
