"""The loop for a model that is not flights: a team's raw table from an installed package,
``lossflow init`` on it, then ``lossflow rehearse`` on the project it wrote, as a user types them
(each command a subprocess). The rehearsal runs the whole loop on real components: a Prefect
server on loopback with the ``retrain`` deployment served by ``lossflow schedule``, ``lossflow
serve`` following the registry, the replay of each later period with its labels, the
``monitoring`` flow emitting ``lossflow.retrain.requested``, the retrain deployment registering a
challenger from the champion's recipe, and the ``ab_analysis`` flow deciding.

- regression: modeldata's ``hotel_rates`` (a room price in the hundreds, by arrival date);
- binary with string labels: carData's ``MplsStops`` (was the person searched, YES/NO, missing
  where not recorded; by date and time);
- ranking: mosaicData's ``Birthdays`` (the states of each day ranked by births, by day);
- multiclass with string classes: palmerpenguins' ``penguins`` (no time column: trained, served
  and given feedback by class name; a rehearsal needs later periods).

What drifted and what was decided is in each test's assertions and in the closing note; the
statistical error rates of those decisions are shown by simulation elsewhere
(``tests/unit/test_monitoring_stats.py``, ``tests/unit/test_stats_ab.py``, ``benchmarks/
ab_validity.py``). These tests check that the loop closes for each kind of model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from lossflow.contract import CHAMPION, PREVIOUS
from lossflow.flows import server
from lossflow.tracking import ModelRegistry, default_tracking_uri
from lossflow.usecases.recipe import fetch_recipe

from .serving_models import wait_for
from .user_projects import LOSSFLOW, lossflow, project_root, rdataset, ready

pytestmark = pytest.mark.slow


def _rehearse(workdir: Path, project: str, *args: str) -> list[dict[str, Any]]:
    out = workdir / "timeline.json"
    lossflow(workdir, "--project", project, "rehearse", "--config-dir", "configs",
              "--json", str(out), *args)  # fmt: skip
    events: list[dict[str, Any]] = json.loads(out.read_text())
    return events


def _events(timeline: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in timeline if e["kind"] == kind]


def _registry(workdir: Path, project: str) -> ModelRegistry:
    root = workdir / "data" / project / "rehearsal"
    return ModelRegistry(default_tracking_uri(root))


def _check_loop(
    workdir: Path, project: str, timeline: list[dict[str, Any]], csv: Path, loss: str
) -> dict[str, Any]:
    """The loop closed: a retrain on the event registered a challenger from the champion's
    recipe, and the A/B analysis decided it with the aliases as the decision says."""
    [requested, *_] = _events(timeline, "retrain_requested")
    [retrained, *_] = _events(timeline, "retrained")
    assert retrained["details"]["outcome"] == "challenger", retrained["summary"]
    version = retrained["details"]["challenger_version"]
    assert requested["details"]["candidate_losses"], "the decision names the losses to try"
    registry = _registry(workdir, project)
    champion = fetch_recipe(registry, project, "1")
    challenger = fetch_recipe(registry, project, version)
    # The challenger is the champion's recipe with the loss and the data window changed.
    assert champion.config["data"] == challenger.config["data"]
    assert challenger.config["data"]["path"] == str(csv)
    assert challenger.config["loss"]["name"] in {loss, *(
        c["name"] for c in requested["details"]["candidate_losses"])}  # fmt: skip
    pool = challenger.config["pool"]
    assert champion.config.get("pool") is None
    assert pool is not None
    assert pool["until"].startswith(requested["clock"][:4])
    for key in ("model", "trainer", "evaluation"):
        assert champion.config[key] == challenger.config[key], key
    [decided, *_] = _events(timeline, "ab_decision")
    verdict = decided["details"]["decision"]["verdict"]
    assert verdict in ("promote", "reject", "continue"), decided["summary"]
    aliases = registry.aliases(project)
    if verdict == "promote" and decided is _events(timeline, "ab_decision")[-1]:
        assert aliases[CHAMPION] == version
        assert aliases[PREVIOUS] == "1"
    return decided


def test_a_regression_model_trains_serves_and_retrains_in_its_target_s_unit(
    tmp_path: Path,
) -> None:
    workdir = project_root(tmp_path)
    csv = workdir / "hotel_rates.csv"
    rdataset("modeldata", "hotel_rates").to_csv(csv, index=False)
    init = lossflow(workdir, "init", str(csv), "--target", "avg_price_per_room", "--name",
                     "hotels")  # fmt: skip
    assert "task regression" in init.stdout
    assert "arrival_date" in init.stdout
    timeline = _rehearse(workdir, "hotels", "--periods", "2")
    [trained] = _events(timeline, "trained")
    # Prices in the hundreds: the parity gate passed, and the model beats the training mean.
    assert "beats" in trained["summary"]
    assert "training mean" in trained["summary"]
    assert trained["details"]["metrics"]["test/r2"] > 0.0
    [june, july] = _events(timeline, "monitored")
    assert june["details"]["decision"]["status"] == "retrain"  # summer prices: drift, decay
    decided = _check_loop(workdir, "hotels", timeline, csv, "mse")
    assert decided["clock"] == july["clock"]
    # July's prices are far above the spring's: the retrained challenger wins clearly.
    assert decided["details"]["decision"]["verdict"] == "promote", decided["summary"]


def test_a_binary_model_with_string_labels_takes_them_as_they_come(tmp_path: Path) -> None:
    workdir = project_root(tmp_path)
    csv = workdir / "mpls_stops.csv"
    rdataset("carData", "MplsStops").to_csv(csv, index=False)
    init = lossflow(workdir, "init", str(csv), "--target", "personSearch", "--name", "stops")
    assert "positive class 'YES'" in init.stdout
    assert "8221 of 51920 rows have no target" in init.stdout
    # The one real drift of these months: citationIssued is recorded from July 2017 on. The
    # default policy retrains when half the features drift; this team retrains on any.
    timeline = _rehearse(workdir, "stops", "--periods", "3",
                         "--set", "monitoring:drift.dataset_share=0.05")  # fmt: skip
    [trained] = _events(timeline, "trained")
    assert "training prior" in trained["summary"]
    assert "beats" in trained["summary"]
    replayed = _events(timeline, "replayed")
    assert all(e["details"]["failed"] == 0 for e in replayed), "YES/NO feedback is accepted"
    _check_loop(workdir, "stops", timeline, csv, "bce")
    log = workdir / "data" / "stops" / "rehearsal" / "predictions.db"
    import sqlalchemy as sa

    with sa.create_engine(f"sqlite:///{log}").connect() as conn:
        labels = {row[0] for row in conn.execute(sa.text("select labels from feedback"))}
        outputs = conn.execute(sa.text("select outputs from predictions limit 1")).scalar_one()
    assert labels <= {"[0]", "[1]"}, "stored as 0/1 whatever the classes are called"
    assert json.loads(outputs)[0]["class"] in ("YES", "NO")


def test_a_ranking_model_is_monitored_retrained_and_ab_tested_on_its_lists(
    tmp_path: Path,
) -> None:
    workdir = project_root(tmp_path)
    csv = workdir / "birthdays.csv"
    rdataset("mosaicData", "Birthdays").to_csv(csv, index=False)
    init = lossflow(workdir, "init", str(csv), "--task", "ranking", "--target", "births",
                     "--group", "date", "--time-column", "date", "--item", "state",
                     "--name", "birthdays")  # fmt: skip
    assert "loss listmle" in init.stdout
    # A list a day: a year is a period. Births moved west and south between 1969 and 1988;
    # the year a list is from is the drifting feature, and this team retrains when one drifts.
    timeline = _rehearse(workdir, "birthdays", "--period", "year", "--periods", "2",
                         "--rows-per-period", "20000",
                         "--set", "monitoring:drift.dataset_share=0.2")  # fmt: skip
    [trained] = _events(timeline, "trained")
    assert "beats" in trained["summary"]
    assert "popularity" in trained["summary"]
    first = _events(timeline, "monitored")[0]
    assert first["details"]["metric"] == "ndcg_10", "a ranking model is judged on its lists"
    decided = _check_loop(workdir, "birthdays", timeline, csv, "listmle")
    assert min(decided["details"]["decision"]["comparisons"][0]["units"]) > 100


def test_a_multiclass_model_with_string_classes_trains_serves_and_takes_their_names(
    tmp_path: Path,
) -> None:
    workdir = project_root(tmp_path)
    csv = workdir / "penguins.csv"
    rdataset("palmerpenguins", "penguins").to_csv(csv, index=False)
    init = lossflow(workdir, "init", str(csv), "--target", "species")
    assert "task multiclass" in init.stdout
    assert "stratified fractions" in init.stdout
    trained = lossflow(workdir, "--project", "penguins", "train")
    assert "beats" in trained.stdout
    assert "training prior" in trained.stdout
    port = server.free_port()
    log = workdir / "serve.log"
    command = [LOSSFLOW, "--project", "penguins", "serve", "--port", str(port)]
    with server.child(command, log, cwd=workdir) as service:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: service.poll() is not None or ready(url), "the service", 180)
        assert service.poll() is None, log.read_text()
        rows = pd.read_csv(csv).dropna().head(3)
        features = [c for c in rows.columns if c not in ("species", "rownames")]
        records = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
                   for r in rows[features].to_dict("records")]  # fmt: skip
        answer = httpx.post(f"{url}/predict", json={"unit_id": "u", "records": records}).json()
        predictions = answer["predictions"]
        assert {p["label"] for p in predictions} <= {"Adelie", "Chinstrap", "Gentoo"}
        assert set(predictions[0]["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
        feedback = httpx.post(f"{url}/feedback", json={"request_id": answer["request_id"],
                              "labels": rows["species"].tolist()})  # fmt: skip
        assert feedback.status_code == 201, feedback.text
