"""What the MLflow UI shows first: ``lossflow ui`` on a store that holds the project's
experiments, and each link it prints opened in headless Chromium with a fresh profile (a browser
that never chose a view), lands on the experiment's runs with their charts, not on MLflow 3's
GenAI overview (traces, token usage, "No data available").

Needs Chromium (Debian: ``apt-get install chromium``); without it the test skips, and fails
under ``CI=true``, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import httpx
import pytest

from lossflow.config.common import Process
from lossflow.config.serving import load_serving_config
from lossflow.flows import server
from lossflow.telemetry import TELEMETRY_OFF
from lossflow.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND, open_runs

from .serving_models import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
RUN_NAME = "focal-seed-7"
SCREENSHOT = "mlflow-ui-training-charts.png"
GENAI_OVERVIEW = ("No data available", "Evaluation runs", "Token", "Detect Issues")


def _chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    message = f"no headless Chromium ({', '.join(BROWSERS)}); apt-get install chromium"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


def _open(browser: str, url: str, profile: Path, output: str, budget_s: int = 20) -> str:
    """Load ``url`` in a fresh headless profile and let its scripts run ``budget_s`` of virtual
    time; ``output`` is ``--dump-dom`` (the page's DOM is returned) or ``--screenshot=PATH``."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
         f"--user-data-dir={profile}", f"--virtual-time-budget={budget_s * 1000}", output, url],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{browser} {url}:\n{done.stderr[-3000:]}"
    return done.stdout


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0).status_code == 200
    except httpx.TransportError:
        return False


def test_lossflow_ui_links_open_each_experiment_on_its_runs_and_charts(tmp_path: Path) -> None:
    browser = _chromium()
    data = tmp_path / "data"
    tracking = load_serving_config([f"data_dir={data}"], ROOT / "configs").tracking
    training = open_runs(tracking, data, "training")
    with training.start_run(RUN_NAME, {"lossflow.loss": "focal"}) as run_id:
        for step in range(4):
            metrics = {"train/loss": 0.7 / (step + 1), "val/auc": 0.6 + 0.05 * step}
            training.log_metrics(run_id, metrics, step)
    for process in get_args(Process):
        runs = open_runs(tracking, data, process)
        with runs.start_run(f"{process}-run", {}) as run_id:
            runs.log_metrics(run_id, {f"{process}/rows": 100.0})
    # The last one as lossflow created it before it recorded the kind: `lossflow ui` adds it.
    runs.client.delete_experiment_tag(runs.experiment_id, EXPERIMENT_KIND_TAG)

    port, log = server.free_port(), tmp_path / "ui.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    command = [str(BIN / "lossflow"), "ui", "--port", str(port), f"data_dir={data}"]
    with server.child(command, log, env | TELEMETRY_OFF, cwd=ROOT) as ui:
        wait_for(lambda: ui.poll() is None and _ok(f"http://127.0.0.1:{port}/health"),
                 "the MLflow UI", 240, log.read_text)  # fmt: skip
        links = dict(re.findall(r"^  (\S+): (http://\S+)$", log.read_text(), re.MULTILINE))
        names = [tracking.experiment, *(tracking.experiment_of(p) for p in get_args(Process))]
        assert list(links) == names, log.read_text()
        assert runs.client.get_experiment(runs.experiment_id).tags[EXPERIMENT_KIND_TAG] == (
            TRAINING_KIND
        )
        their_run = {tracking.experiment: RUN_NAME}
        their_run |= {tracking.experiment_of(p): f"{p}-run" for p in get_args(Process)}
        for number, (name, link) in enumerate(links.items()):
            page = _open(browser, link, tmp_path / f"profile-{number}", "--dump-dom")
            # The runs view: its table of runs, with the switch to charts and artifacts.
            assert 'name="runs-view-mode"' in page, f"{name}: not the runs view ({link})"
            assert 'value="CHART"' in page, name
            assert their_run[name] in page, f"{name}: its run is not shown ({link})"
            shown = [text for text in GENAI_OVERVIEW if text in page]
            assert not shown, f"{name} opens on the GenAI view ({shown}) at {link}"
        # The training runs' charts (the switch's other side): a section per metric prefix.
        runs_tab = links[tracking.experiment].replace("?", "/runs?", 1)
        charts_link = f"{runs_tab}&compareRunsMode=CHART"
        # (a chart draws once plotly has loaded: a longer budget)
        charts = _open(browser, charts_link, tmp_path / "charts", "--dump-dom", budget_s=60)
        assert "Search metric charts" in charts, f"not the charts at {charts_link}"
        assert ">train<" in charts, "no section of the train/ metrics' charts"
        assert ">val<" in charts, "no section of the val/ metrics' charts"
        assert 'title="train/loss"' in charts, "no chart of train/loss"
        picture = tmp_path / SCREENSHOT
        _open(browser, charts_link, tmp_path / "picture", f"--screenshot={picture}", budget_s=60)
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
