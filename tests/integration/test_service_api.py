"""The inference service through its ASGI app, in process: real ONNX models from a real MLflow
registry, a real SQLite prediction log, Starlette's TestClient running the app's lifespan."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import shutil
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pandas as pd
import pytest
from fastapi import FastAPI

from lossflow.config import ServingConfig, load_serving_config
from lossflow.predlog import BatchWriter, LogWriteError, PredictionLog
from lossflow.serving.app import create_app
from lossflow.serving.predictor import OnnxPredictor
from lossflow.serving.shadow import ShadowScorer, shadow_request_id
from lossflow.serving.state import ServiceState
from lossflow.serving.variants import ModelLoadError, Variant
from lossflow.tracking import WritableModelRegistry, default_tracking_uri

from .serving_models import CONFIG_DIR, Registry, copy_registry

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 in its TestClient; the project pins httpx, which still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow

TOKEN_ENV = "LOSSFLOW_ADMIN_TOKEN"
TOKEN = "test-admin-token-7f3a"
JSON = {"content-type": "application/json"}
PREDICTION_KEYS = {"request_id", "variant", "model_version", "loss_id", "predictions"}
UNITS = [f"unit-{i}" for i in range(2_000)]


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(built_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """focal v1 (champion) and bce v2 (challenger) in a real MLflow store; never modified."""
    return copy_registry(built_registry, tmp_path_factory.mktemp("registry"))


def _config(data_dir: Path, log_db: Path | None, *overrides: str) -> ServingConfig:
    log = [f"log.url=sqlite:///{log_db}"] if log_db is not None else ["log.enabled=false"]
    # No registry watcher: reloads happen only where a test asks for one.
    base = [f"data_dir={data_dir}", "watch_registry_s=null", *log]
    return load_serving_config([*base, *overrides], CONFIG_DIR)


@contextmanager
def _serve(cfg: ServingConfig) -> Iterator[TestClient]:
    """The app with its lifespan running (models loaded, log writer started)."""
    with TestClient(create_app(cfg)) as client:
        yield client


def _state(client: TestClient) -> ServiceState:
    return cast(ServiceState, cast(FastAPI, client.app).state.service)


def _copy_registry(registry: Registry, dst: Path) -> Path:
    """A data dir of its own holding a copy of the registry's store (artifacts are shared)."""
    dst.mkdir(parents=True)
    shutil.copy2(registry.data_dir / "mlflow.db", dst / "mlflow.db")
    return dst


def _tracker(data_dir: Path) -> WritableModelRegistry:
    return WritableModelRegistry(default_tracking_uri(data_dir))


def _unit_for(client: TestClient, variant: str) -> str:
    router = _state(client).current().router
    return next(u for u in (f"pick-{i}" for i in range(100_000)) if router.assign(u) == variant)


def _complete(registry: Registry) -> dict[str, Any]:
    """A test record with every feature present."""
    return dict(next(r for r in registry.records if all(v is not None for v in r.values())))


def _predict(client: TestClient, unit_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/predict", json={"unit_id": unit_id, "records": records})
    assert response.status_code == 200, response.text
    return cast(dict[str, Any], response.json())


def _post_raw(client: TestClient, body: bytes) -> Any:
    return client.post("/predict", content=body, headers=JSON)


def _logged(client: TestClient, url: str, request_ids: set[str]) -> pd.DataFrame:
    """The log rows of ``request_ids``, read by a reader of its own once all are committed."""
    state = _state(client)
    if state.writer is None:
        raise LookupError("the service runs without a prediction log")
    reader = PredictionLog(url)
    deadline = time.monotonic() + 30.0
    try:
        while True:
            state.writer.flush(timeout=10.0)
            now = datetime.now(UTC)
            rows = reader.read(now - timedelta(hours=1), now + timedelta(hours=1))
            rows = rows[rows["request_id"].isin(request_ids)]
            # The shadow is scored after the answer is sent: wait until it is queued too.
            if set(rows["request_id"]) == request_ids or time.monotonic() > deadline:
                return rows.set_index("request_id")
            time.sleep(0.05)
    finally:
        reader.dispose()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def log_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "p.db"


@pytest.fixture(scope="module")
def client(registry: Registry, log_db: Path) -> Iterator[TestClient]:
    """The default service: champion and challenger aliases, SQLite log, admin API disabled."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(TOKEN_ENV, raising=False)
        with _serve(_config(registry.data_dir, log_db)) as c:
            yield c


# --- default variants ------------------------------------------------------------------------


def test_before_startup_the_service_is_alive_but_not_ready(registry: Registry) -> None:
    app = create_app(_config(registry.data_dir, None))
    bare = TestClient(app)  # no context manager: the lifespan does not run, nothing loads
    assert bare.get("/health").json() == {"status": "ok"}
    response = bare.get("/ready")
    assert response.status_code == 503
    assert "no models are loaded" in response.json()["detail"]


def test_info_and_ready_describe_champion_and_challenger_50_50(
    client: TestClient, registry: Registry
) -> None:
    champion = OnnxPredictor.from_path(registry.champion)
    challenger = OnnxPredictor.from_path(registry.challenger)
    assert champion.loss_id.startswith("focal-")
    assert challenger.loss_id.startswith("bce-")
    info = client.get("/info").json()
    assert info["model_name"] == registry.model_name
    assert info["target"] == champion.preprocessor.target
    assert info["label_names"] is None
    assert info["prediction_log"] is True
    assert info["limits"] == {"max_body_bytes": 1_048_576, "max_records": 1000}
    assert info["experiment"] == "loss-ab"
    assert info["task"] == "binary"
    assert info["features"] == list(champion.feature_columns)
    assert info["shadow"] is None
    assert info["variants"] == {
        "champion": {
            "model_version": "1",
            "loss_id": champion.loss_id,
            "source": "alias:champion",
            "weight": 50.0,
            "share": 0.5,
        },
        "challenger": {
            "model_version": "2",
            "loss_id": challenger.loss_id,
            "source": "alias:challenger",
            "weight": 50.0,
            "share": 0.5,
        },
    }
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    for key in ("experiment", "task", "features", "variants", "shadow"):
        assert body[key] == info[key], key
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("variant", ["champion", "challenger"])
@pytest.mark.parametrize("n_records", [1, 7, 100])  # 100 > 64: scored in the thread pool
def test_predictions_equal_the_variants_onnx_model(
    client: TestClient, registry: Registry, variant: str, n_records: int
) -> None:
    onnx = registry.champion if variant == "champion" else registry.challenger
    expected_version = "1" if variant == "champion" else "2"
    reference = OnnxPredictor.from_path(onnx)
    records = registry.records[:n_records]
    assert len(records) == n_records
    body = _predict(client, _unit_for(client, variant), records)
    assert set(body) == PREDICTION_KEYS
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert body["variant"] == variant
    assert body["model_version"] == expected_version
    assert body["loss_id"] == reference.loss_id
    expected = reference.predict(records)
    assert len(body["predictions"]) == n_records
    for got, want in zip(body["predictions"], expected, strict=True):
        assert set(got) == {"probability", "label"}  # binary: no value, no probabilities
        assert want.probability is not None
        assert got["probability"] == pytest.approx(want.probability, abs=1e-6)
        assert 0.0 <= got["probability"] <= 1.0
        assert got["label"] == want.label


def test_request_ids_are_unique(client: TestClient, registry: Registry) -> None:
    ids = {_predict(client, "same-unit", registry.records[:1])["request_id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("challenger", ["missing", "same as champion"])
def test_only_the_champion_is_served_without_a_distinct_challenger(
    registry: Registry, tmp_path: Path, challenger: str
) -> None:
    data_dir = _copy_registry(registry, tmp_path / "data")
    tracker = _tracker(data_dir)
    if challenger == "missing":
        tracker.client.delete_registered_model_alias(registry.model_name, "challenger")
    else:
        tracker.set_alias(registry.model_name, "challenger", "1")
    with _serve(_config(data_dir, tmp_path / "p.db")) as c:
        variants = c.get("/info").json()["variants"]
        assert list(variants) == ["champion"]
        assert variants["champion"]["model_version"] == "1"
        assert variants["champion"]["weight"] == 100.0
        assert variants["champion"]["share"] == 1.0
        for unit in UNITS[:20]:
            body = _predict(c, unit, registry.records[:1])
            assert (body["variant"], body["model_version"]) == ("champion", "1")


def test_local_file_variants_with_explicit_weights(registry: Registry, tmp_path: Path) -> None:
    data_dir = tmp_path / "air-gapped"
    overrides = [
        f"variants.a.path={registry.champion}",
        "variants.a.weight=70",
        f"variants.b.path={registry.challenger}",
        "variants.b.weight=30",
    ]
    with _serve(_config(data_dir, tmp_path / "p.db", *overrides)) as c:
        variants = c.get("/info").json()["variants"]
        assert list(variants) == ["a", "b"]
        for name, onnx, weight in (
            ("a", registry.champion, 70.0),
            ("b", registry.challenger, 30.0),
        ):
            described = variants[name]
            digest = hashlib.sha256(onnx.read_bytes()).hexdigest()[:12]
            assert described["model_version"] == f"file-{digest}"
            assert re.fullmatch(r"file-[0-9a-f]{12}", described["model_version"])
            assert described["source"] == f"path:{onnx}"
            assert described["loss_id"] == OnnxPredictor.from_path(onnx).loss_id
            assert described["weight"] == weight
            assert described["share"] == pytest.approx(weight / 100.0)
            body = _predict(c, _unit_for(c, name), registry.records[:2])
            assert body["variant"] == name
            assert body["model_version"] == described["model_version"]
            assert body["loss_id"] == described["loss_id"]
    # Local files only: no tracking store was opened (nor created) under the data dir.
    assert not (data_dir / "mlflow.db").exists()


def test_a_variant_whose_model_fails_answers_500_and_the_failure_is_logged(
    registry: Registry, tmp_path: Path
) -> None:
    """A real broken export: the graph's batch dimension fixed to 1, which onnxruntime refuses
    for a request of two records. The failure is counted against its variant and unit (the A/B
    analysis's error-rate guardrail reads it from the log)."""
    import onnx

    model = onnx.load(registry.challenger)
    for graph_input in model.graph.input:
        graph_input.type.tensor_type.shape.dim[0].dim_value = 1
    broken = tmp_path / "fixed-batch.onnx"
    onnx.save(model, broken)
    overrides = [f"variants.ok.path={registry.champion}", f"variants.broken.path={broken}"]
    log_db = tmp_path / "p.db"
    with _serve(_config(tmp_path / "data", log_db, *overrides)) as c:
        unit = _unit_for(c, "broken")
        assert _predict(c, unit, registry.records[:1])["variant"] == "broken", "batch 1 works"
        failed = c.post("/predict", json={"unit_id": unit, "records": registry.records[:2]})
        assert failed.status_code == 500
        assert failed.json() == {"detail": "variant 'broken' failed to answer; see the service log"}
        ok = _predict(c, _unit_for(c, "ok"), registry.records[:2])
        assert ok["variant"] == "ok"
        metrics = c.get("/metrics").text
        assert 'lossflow_request_errors_total{reason="model_error",variant="broken"} 1.0' in (
            metrics
        ), metrics
        version = c.get("/info").json()["variants"]["broken"]["model_version"]
    log = PredictionLog(f"sqlite:///{log_db}")
    with log.engine.connect() as conn:
        rows = conn.execute(log.failures.select()).mappings().all()
    log.dispose()
    assert len(rows) == 1
    row = rows[0]
    assert (row["unit_id"], row["variant"], row["model_version"], row["status"]) == (
        unit, "broken", version, 500,
    )  # fmt: skip
    assert row["experiment"] == "loss-ab"
    assert "dimensions" in row["error"] or "INVALID_ARGUMENT" in row["error"], row["error"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("variants.x.alias=no-such-alias", "has no alias 'no-such-alias'"),
        ("variants.x.version='99'", "version 99"),
        ("variants.x.path=/nonexistent/model.onnx", "no ONNX file at /nonexistent/model.onnx"),
        # shadow={...}: `shadow.path=` is refused while the YAML default is null (see report).
        ("shadow={path: /nonexistent/shadow.onnx}", "'shadow': no ONNX file at"),
    ],
)
def test_startup_fails_naming_the_model_that_cannot_load(
    registry: Registry, tmp_path: Path, override: str, message: str
) -> None:
    cfg = _config(registry.data_dir, tmp_path / "p.db", override)
    with pytest.raises(ModelLoadError, match=re.escape(message)), _serve(cfg):
        pass


def test_startup_fails_when_the_registry_has_no_champion(
    registry: Registry, tmp_path: Path
) -> None:
    data_dir = _copy_registry(registry, tmp_path / "data")
    _tracker(data_dir).client.delete_registered_model_alias(registry.model_name, "champion")
    cfg = _config(data_dir, tmp_path / "p.db")
    with pytest.raises(ModelLoadError, match="has no alias 'champion'"), _serve(cfg):
        pass


# --- request validation ----------------------------------------------------------------------


def _numeric(client: TestClient) -> str:
    variant = next(iter(_state(client).current().variants.values()))
    return variant.predictor.preprocessor.numeric_columns[0]


def _categorical(client: TestClient) -> str:
    variant = next(iter(_state(client).current().variants.values()))
    numeric = set(variant.predictor.preprocessor.numeric_columns)
    return next(f for f in variant.predictor.feature_columns if f not in numeric)


def _with(record: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**record, field: value}


def _without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


# Each case: (good record, numeric field, categorical field) -> (body, expected loc, in msg).
# Invalid records are sent second, so the loc must name record 1.
Case = Callable[[dict[str, Any], str, str], tuple[bytes, list[Any], str]]


def _two(good: dict[str, Any], bad: Any) -> bytes:
    return orjson.dumps({"unit_id": "u", "records": [good, bad]})


VALIDATION_CASES: dict[str, Case] = {
    "missing field": lambda r, num, cat: (
        _two(r, _without(r, num)),
        ["body", "records", 1, num],
        "missing",
    ),
    "extra field": lambda r, num, cat: (
        _two(r, _with(r, "surprise", 1.0)),
        ["body", "records", 1, "surprise"],
        "unknown field",
    ),
    "string for a number": lambda r, num, cat: (
        _two(r, _with(r, num, "12")),
        ["body", "records", 1, num],
        "not a number",
    ),
    "bool for a number": lambda r, num, cat: (
        _two(r, _with(r, num, True)),
        ["body", "records", 1, num],
        "not a number",
    ),
    "1e39 outside float32": lambda r, num, cat: (
        _two(r, _with(r, num, 1e39)),
        ["body", "records", 1, num],
        "float32",
    ),
    "nested object for a number": lambda r, num, cat: (
        _two(r, _with(r, num, {"value": 1})),
        ["body", "records", 1, num],
        "not a number",
    ),
    "nested object for a category": lambda r, num, cat: (
        _two(r, _with(r, cat, {"code": "UA"})),
        ["body", "records", 1, cat],
        "string or null",
    ),
    "number for a category": lambda r, num, cat: (
        _two(r, _with(r, cat, 5)),
        ["body", "records", 1, cat],
        "string or null",
    ),
    "record not an object": lambda r, num, cat: (
        _two(r, [1, 2]),
        ["body", "records", 1],
        "not an object",
    ),
    "body not an object": lambda r, num, cat: (
        orjson.dumps([{"unit_id": "u", "records": [r]}]),
        ["body"],
        "must be a JSON object",
    ),
    "invalid JSON": lambda r, num, cat: (
        b'{"unit_id": "u", "records": [',
        ["body"],
        "not valid JSON",
    ),
    # NaN is not JSON (RFC 8259): the parser rejects the body before any record is looked at.
    "NaN literal": lambda r, num, cat: (
        _two(r, _with(r, num, 123456.75)).replace(b"123456.75", b"NaN"),
        ["body"],
        "not valid JSON",
    ),
    "unknown top-level field": lambda r, num, cat: (
        orjson.dumps({"unit_id": "u", "records": [r], "debug": True}),
        ["body", "debug"],
        "unknown field",
    ),
    "records missing": lambda r, num, cat: (
        orjson.dumps({"unit_id": "u"}),
        ["body", "records"],
        "field required",
    ),
    "unit_id missing": lambda r, num, cat: (
        orjson.dumps({"records": [r]}),
        ["body", "unit_id"],
        "field required",
    ),
    "unit_id empty": lambda r, num, cat: (
        orjson.dumps({"unit_id": "", "records": [r]}),
        ["body", "unit_id"],
        "1 to 256 characters",
    ),
    "unit_id not a string": lambda r, num, cat: (
        orjson.dumps({"unit_id": 42, "records": [r]}),
        ["body", "unit_id"],
        "must be a string",
    ),
    "unit_id of 257 characters": lambda r, num, cat: (
        orjson.dumps({"unit_id": "u" * 257, "records": [r]}),
        ["body", "unit_id"],
        "1 to 256 characters",
    ),
}


@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_invalid_requests_get_422_naming_field_and_record(
    client: TestClient, registry: Registry, case: str
) -> None:
    body, loc, msg = VALIDATION_CASES[case](
        _complete(registry), _numeric(client), _categorical(client)
    )
    response = _post_raw(client, body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert msg in error["msg"]
    assert error["type"] == "value_error"


@pytest.mark.parametrize(
    ("records", "msg"),
    [([], "no records were sent"), ({"a": 1}, "must be a list"), ("abc", "must be a list")],
)
def test_records_that_are_not_a_non_empty_list_get_422(
    client: TestClient, records: Any, msg: str
) -> None:
    response = _post_raw(client, orjson.dumps({"unit_id": "u", "records": records}))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "records"]
    assert msg in error["msg"]


@pytest.mark.parametrize("records", [[], {"a": 1}])
def test_list_level_record_errors_point_at_the_records_field(
    client: TestClient, records: Any
) -> None:
    response = _post_raw(client, orjson.dumps({"unit_id": "u", "records": records}))
    assert response.json()["detail"][0]["loc"] == ["body", "records"]


def test_nulls_unknown_categories_and_a_256_character_unit_are_accepted(
    client: TestClient, registry: Registry
) -> None:
    good = _complete(registry)
    cat = _categorical(client)
    all_null = dict.fromkeys(good)
    unseen = _with(good, cat, "ZZ-never-seen-category")
    body = _predict(client, "u" * 256, [all_null, unseen])
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert math.isfinite(prediction["probability"])
        assert prediction["label"] in (0, 1)


def test_limits_answer_413_for_bytes_and_422_for_records(
    registry: Registry, tmp_path: Path
) -> None:
    overrides = [
        f"variants.a.path={registry.champion}",
        "variants.a.weight=100",
        "limits.max_body_bytes=4096",
        "limits.max_records=3",
    ]
    records = registry.records
    with _serve(_config(tmp_path / "data", None, *overrides)) as c:
        assert c.get("/info").json()["limits"] == {"max_body_bytes": 4096, "max_records": 3}
        assert len(_predict(c, "u", records[:3])["predictions"]) == 3

        # Too many records is a field-level problem: 422 naming the field.
        too_many = c.post("/predict", json={"unit_id": "u", "records": records[:4]})
        assert too_many.status_code == 422, too_many.text
        [error] = too_many.json()["detail"]
        assert error["loc"] == ["body", "records"]
        assert "4 records exceed the limit of 3" in error["msg"]

        big = orjson.dumps({"unit_id": "u", "records": records[:40]})
        assert len(big) > 4096
        too_big = _post_raw(c, big)
        assert too_big.status_code == 413
        assert "exceeds 4096 bytes" in too_big.json()["detail"]

        # Without a Content-Length (chunked upload) the cap applies while reading.
        chunks = (big[i : i + 1000] for i in range(0, len(big), 1000))
        chunked = c.post("/predict", content=chunks, headers=JSON)
        assert chunked.status_code == 413

        metrics = c.get("/metrics").text
        assert 'lossflow_request_errors_total{reason="too_large",variant="none"} 2.0' in metrics


# --- routing ---------------------------------------------------------------------------------


def test_routing_is_sticky_and_splits_2000_units_50_50(
    client: TestClient, registry: Registry
) -> None:
    record = registry.records[:1]
    versions = {"champion": "1", "challenger": "2"}
    first: dict[str, str] = {}
    for unit in UNITS:
        body = _predict(client, unit, record)
        first[unit] = body["variant"]
        assert body["model_version"] == versions[body["variant"]]
    for unit in UNITS[:50]:
        assert _predict(client, unit, record)["variant"] == first[unit], unit
    counts = Counter(first.values())
    assert set(counts) == {"champion", "challenger"}
    assert abs(counts["champion"] / len(UNITS) - 0.5) <= 0.04, counts


# --- prediction log and feedback -------------------------------------------------------------


def test_answered_predictions_are_logged(
    client: TestClient, registry: Registry, log_db: Path
) -> None:
    sent: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]] = {}
    for i, variant in enumerate(("champion", "challenger")):
        unit = _unit_for(client, variant)
        records = registry.records[3 * i : 3 * i + 3]
        records[0] = dict.fromkeys(records[0])  # nulls are logged as sent
        body = _predict(client, unit, records)
        sent[body["request_id"]] = (unit, records, body)
    rows = _logged(client, f"sqlite:///{log_db}", set(sent))
    assert len(rows) == 2
    for request_id, (unit, records, body) in sent.items():
        row = rows.loc[request_id]
        assert row["unit_id"] == unit
        assert row["variant"] == body["variant"]
        assert row["model_version"] == body["model_version"]
        assert row["loss_id"] == body["loss_id"]
        assert row["features"] == records
        assert row["outputs"] == body["predictions"]
        assert row["latency_ms"] > 0
        assert row["labels"] is None
        assert row["ts"].tzinfo is not None


def test_feedback_is_stored_once(client: TestClient, registry: Registry, log_db: Path) -> None:
    request_id = _predict(client, "fb-unit", registry.records[:2])["request_id"]
    first = client.post("/feedback", json={"request_id": request_id, "labels": [0, 1]})
    assert first.status_code == 201, first.text
    assert first.json() == {"request_id": request_id, "stored": True}
    again = client.post("/feedback", json={"request_id": request_id, "labels": [0, 1]})
    assert again.status_code == 200
    assert again.json() == {"request_id": request_id, "stored": False}
    conflict = client.post("/feedback", json={"request_id": request_id, "labels": [1, 1]})
    assert conflict.status_code == 409
    assert "already has feedback" in conflict.json()["detail"]
    row = _logged(client, f"sqlite:///{log_db}", {request_id}).loc[request_id]
    assert row["labels"] == [0, 1]


def test_feedback_right_after_the_prediction_flushes_the_log(
    registry: Registry, tmp_path: Path
) -> None:
    # Batches wait up to 30 s, so the prediction is still unwritten when its feedback arrives;
    # the feedback's flush cuts the wait short.
    overrides = [f"variants.a.path={registry.champion}", "log.max_delay_s=30"]
    with _serve(_config(tmp_path / "data", tmp_path / "p.db", *overrides)) as c:
        request_id = _predict(c, "fb-now", registry.records[:2])["request_id"]
        writer = _state(c).writer
        assert writer is not None
        assert writer.pending >= 1  # the feedback takes the flush-then-retry path
        response = c.post("/feedback", json={"request_id": request_id, "labels": [1, 0]})
        assert response.status_code == 201, response.text
        assert response.json() == {"request_id": request_id, "stored": True}


def test_feedback_for_an_unknown_request_is_404(client: TestClient) -> None:
    response = client.post("/feedback", json={"request_id": "0" * 32, "labels": [1]})
    assert response.status_code == 404
    assert "no prediction logged" in response.json()["detail"]


@pytest.mark.parametrize(
    ("labels", "loc", "msg"),
    [
        ([0, 1, 1], ["body", "labels"], "had 2 records but feedback has 3 labels"),
        ([0], ["body", "labels"], "had 2 records but feedback has 1 labels"),
        ([0, 2], ["body", "labels", 1], "binary labels are 0 or 1"),
        (["x", 0], ["body", "labels", 0], "binary labels are 0 or 1"),
    ],
)
def test_invalid_feedback_is_422(
    client: TestClient, registry: Registry, labels: list[Any], loc: list[Any], msg: str
) -> None:
    request_id = _predict(client, "fb-bad", registry.records[:2])["request_id"]
    response = client.post("/feedback", json={"request_id": request_id, "labels": labels})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert msg in error["msg"]


def test_feedback_without_labels_is_422(client: TestClient) -> None:
    response = client.post("/feedback", json={"request_id": "r", "labels": []})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "labels"]


# --- shadow ----------------------------------------------------------------------------------


def test_the_shadow_is_logged_and_labelled_but_never_returned(
    registry: Registry, tmp_path: Path
) -> None:
    log_db = tmp_path / "p.db"
    cfg = _config(registry.data_dir, log_db, f"shadow={{path: {registry.challenger}}}")
    shadow = OnnxPredictor.from_path(registry.challenger)
    with _serve(cfg) as c:
        described = c.get("/info").json()["shadow"]
        assert described["source"] == f"path:{registry.challenger}"
        assert described["loss_id"] == shadow.loss_id
        records = registry.records[:3]
        response = c.post("/predict", json={"unit_id": "shadowed", "records": records})
        assert response.status_code == 200
        assert "shadow" not in response.text
        body = response.json()
        assert set(body) == PREDICTION_KEYS
        request_id = body["request_id"]
        shadow_id = shadow_request_id(request_id)
        assert shadow_id == f"{request_id}:shadow"

        rows = _logged(c, f"sqlite:///{log_db}", {request_id, shadow_id})
        assert set(rows.index) == {request_id, shadow_id}
        row = rows.loc[shadow_id]
        assert row["variant"] == "shadow"
        assert row["model_version"] == described["model_version"]
        assert row["loss_id"] == shadow.loss_id
        assert row["unit_id"] == "shadowed"
        assert row["features"] == records
        expected = [p.probability for p in shadow.predict(records)]
        assert [o["probability"] for o in row["outputs"]] == pytest.approx(expected, abs=1e-6)

        labels = [1, 0, 1]
        feedback = c.post("/feedback", json={"request_id": request_id, "labels": labels})
        assert feedback.status_code == 201, feedback.text
        labelled = _logged(c, f"sqlite:///{log_db}", {request_id, shadow_id})
        assert labelled.loc[request_id, "labels"] == labels
        assert labelled.loc[shadow_id, "labels"] == labels
        assert 'lossflow_records_scored_total{variant="shadow"} 3.0' in c.get("/metrics").text


def _metric(client: TestClient, sample: str) -> float:
    """The value of the metric ``sample`` (name and labels as exposed); 0 when absent."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{sample} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


SHADOW_FAILED = 'lossflow_request_errors_total{reason="shadow_failed",variant="shadow"}'
SHADOW_DROPPED = 'lossflow_request_errors_total{reason="shadow_dropped",variant="shadow"}'
SHADOW_SCORED = 'lossflow_records_scored_total{variant="shadow"}'


@contextmanager
def _shadowed(registry: Registry, tmp_path: Path) -> Iterator[tuple[TestClient, Variant]]:
    """A service of one local variant (the champion) with the challenger as its shadow."""
    overrides = [f"variants.a.path={registry.champion}", f"shadow={{path: {registry.challenger}}}"]
    with _serve(_config(tmp_path / "data", tmp_path / "p.db", *overrides)) as c:
        shadow = _state(c).current().shadow
        assert shadow is not None
        yield c, shadow


def _flush_times_out(timeout: float | None = None) -> None:
    raise TimeoutError("flush timed out (a database slower than the feedback's wait)")


def test_feedback_without_a_shadow_never_looks_for_one(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a shadow, feedback once looked up `<id>:shadow`, missed, flushed the writer and
    # looked again; a flush that timed out answered 503 after the labels were stored.
    overrides = [f"variants.a.path={registry.champion}"]
    with _serve(_config(tmp_path / "data", tmp_path / "p.db", *overrides)) as c:
        state = _state(c)
        assert state.log is not None
        assert state.writer is not None
        request_id = _predict(c, "no-shadow", registry.records[:2])["request_id"]
        state.writer.flush(timeout=10)  # the prediction is committed: no flush is needed
        looked_up: list[str] = []
        record = state.log.record_feedback

        def spy(request_id: str, labels: list[Any], ts: datetime | None = None) -> bool:
            looked_up.append(request_id)
            return record(request_id, labels, ts)

        monkeypatch.setattr(state.log, "record_feedback", spy)
        monkeypatch.setattr(state.writer, "flush", _flush_times_out)
        response = c.post("/feedback", json={"request_id": request_id, "labels": [0, 1]})
        assert response.status_code == 201, response.text
        assert looked_up == [request_id]
        again = c.post("/feedback", json={"request_id": request_id, "labels": [0, 1]})
        assert again.status_code == 200, again.text


def test_a_missing_shadow_answer_is_no_error_of_the_feedback(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _shadowed(registry, tmp_path) as (c, shadow):
        state = _state(c)
        assert state.writer is not None

        def broken(records: list[dict[str, Any]]) -> list[Any]:
            raise RuntimeError("the shadow cannot score (test)")

        monkeypatch.setattr(shadow.predictor, "predict", broken)
        request_id = _predict(c, "shadow-missing", registry.records[:2])["request_id"]
        _eventually(lambda: _metric(c, SHADOW_FAILED) == 1.0)  # no shadow row will come
        state.writer.flush(timeout=10)
        monkeypatch.setattr(state.writer, "flush", _flush_times_out)
        response = c.post("/feedback", json={"request_id": request_id, "labels": [1, 0]})
        assert response.status_code == 201, response.text
        assert response.json() == {"request_id": request_id, "stored": True}
        assert _metric(c, 'lossflow_feedback_total{outcome="stored"}') == 1.0
        assert _metric(c, 'lossflow_feedback_total{outcome="shadow_unlabelled"}') == 1.0


def test_the_shadow_scores_off_the_event_loop(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _shadowed(registry, tmp_path) as (c, shadow):
        scored = shadow.predictor.predict
        seen: list[tuple[str, bool]] = []

        def spy(records: list[dict[str, Any]]) -> list[Any]:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                seen.append((threading.current_thread().name, False))
            else:
                seen.append((threading.current_thread().name, True))
            return scored(records)

        monkeypatch.setattr(shadow.predictor, "predict", spy)
        for n_records in (1, 100):  # the primary scores 1 on the loop, 100 in its thread pool
            _predict(c, "off-loop", registry.records[:n_records])
        _eventually(lambda: _metric(c, SHADOW_SCORED) == 101.0)
        assert seen  # one model call per batch: one or two here
        assert not any(on_loop for _, on_loop in seen), seen
        assert all(name == "lossflow-shadow" for name, _ in seen), seen


def test_a_shadow_that_falls_behind_drops_requests_and_counts_them(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _shadowed(registry, tmp_path) as (c, shadow):
        state = _state(c)
        assert state.shadow is not None
        state.shadow.close(timeout=10)
        scorer = ShadowScorer(state.metrics, max_pending=1)
        monkeypatch.setattr(state, "shadow", scorer)
        release = threading.Event()
        scored = shadow.predictor.predict

        def slow(records: list[dict[str, Any]]) -> list[Any]:
            release.wait(10)
            return scored(records)

        monkeypatch.setattr(shadow.predictor, "predict", slow)
        ids = [_predict(c, f"behind-{i}", registry.records[:1])["request_id"] for i in range(3)]
        assert _metric(c, SHADOW_DROPPED) == 2.0  # the first one holds the only place
        release.set()
        assert scorer.wait(ids[0], timeout=10)
        assert _metric(c, SHADOW_SCORED) == 1.0
        rows = _logged(c, f"sqlite:///{tmp_path / 'p.db'}", {*ids, shadow_request_id(ids[0])})
        assert len(rows) == 4


# --- the fast path of /predict ---------------------------------------------------------------


def _predict_cases(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Requests covering every way /predict answers, as ``TestClient.post`` arguments."""
    return {
        "ok": {"json": {"unit_id": "u-1", "records": records[:2]}},
        "not json": {"content": b'{"unit_id": ', "headers": JSON},
        "too large": {"content": b" " * 1_048_577, "headers": JSON},
        "unknown field": {"json": {"unit_id": "u-1", "records": records[:1], "x": 1}},
        "bad record": {"json": {"unit_id": "u-1", "records": [{**records[0], "distance": "far"}]}},
        "crash": {"json": {"unit_id": "u-1", "records": records[:1]}},
    }


def _answers_of(
    app: FastAPI, records: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    """What each case answers and logs, and the request counters after all of them."""
    seen: dict[str, Any] = {}
    with TestClient(app) as c:
        for case, request in _predict_cases(records).items():
            caplog.clear()
            writer = _state(c).writer
            assert writer is not None
            if case == "crash":  # an error the endpoint did not foresee

                def crash(record: Any) -> None:
                    raise RuntimeError("the log writer broke (test)")

                submit = writer.submit
                writer.submit = crash  # type: ignore[method-assign]
            try:
                response = c.post("/predict", **request)
            finally:
                if case == "crash":
                    writer.submit = submit  # type: ignore[method-assign]
            body = response.json()
            if isinstance(body, dict):
                body.pop("request_id", None)
            logged = [
                (r.getMessage(), r.exc_info is not None)
                for r in caplog.records
                if r.name == "lossflow.serving"
            ]
            seen[case] = (response.status_code, response.headers["content-type"], body, logged)
        metrics = c.get("/metrics").text
    seen["counts"] = sorted(
        line
        for line in metrics.splitlines()
        if line.startswith(("lossflow_requests_total", "lossflow_request_errors_total"))
    )
    return seen


def test_predict_answers_logs_and_counts_alike_on_the_fast_and_the_routed_path(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lossflow.serving")
    overrides = [f"variants.a.path={registry.champion}", "access_log=true"]
    cfg = _config(tmp_path / "data", tmp_path / "p.db", *overrides)
    fast = _answers_of(create_app(cfg), registry.records, caplog)
    routed = _answers_of(create_app(cfg, predict_fast_path=False), registry.records, caplog)
    assert fast == routed
    statuses = {case: fast[case][0] for case in _predict_cases(registry.records)}
    assert statuses == {
        "ok": 200,
        "not json": 422,
        "too large": 413,
        "unknown field": 422,
        "bad record": 422,
        "crash": 500,
    }
    assert fast["crash"][2] == {"detail": "internal error; see the service log"}
    assert ("predict failed", True) in fast["crash"][3]  # logged with its traceback
    assert fast["ok"][3] == [("predict", False)]  # the access log line
    assert 'lossflow_request_errors_total{reason="internal",variant="none"} 1.0' in fast["counts"]


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_fast_path_skips_the_middleware_stack_for_predict_only(
    registry: Registry, tmp_path: Path, fast_path: bool
) -> None:
    cfg = _config(tmp_path / "data", tmp_path / "p.db", f"variants.a.path={registry.champion}")
    app = create_app(cfg, predict_fast_path=fast_path)
    with TestClient(app) as c:
        stack = app.middleware_stack
        assert stack is not None  # built by the lifespan's start
        through_stack: list[str] = []

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            through_stack.append(f"{scope['method']} {scope['path']}")
            await stack(scope, receive, send)

        app.middleware_stack = counting
        _predict(c, "stack", registry.records[:1])
        v2 = c.post(f"/v2/models/{cfg.tracking.registered_model}/infer", json=_v2(registry))
        assert v2.status_code == 200, v2.text
        assert c.post("/v2/models/x/infer/more", json={}).json() == {"error": "Not Found"}
        assert c.post("/rank", json={"unit_id": "u", "items": registry.records[:1]}).status_code
        assert c.get("/predict").status_code == 405  # only POST takes the fast path
        assert c.get("/health").status_code == 200
    routed = ["POST /v2/models/x/infer/more", "POST /rank", "GET /predict", "GET /health"]
    fast = ["POST /predict", f"POST /v2/models/{cfg.tracking.registered_model}/infer"]
    assert through_stack == (routed if fast_path else [*fast, *routed])


def _v2(registry: Registry) -> dict[str, Any]:
    """An Open Inference Protocol request for the first record: a tensor per column."""
    record = registry.records[0]
    inputs = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64"}
        | {"data": [v]}
        for k, v in record.items()
    ]
    return {"parameters": {"unit_id": "stack"}, "inputs": inputs}


def test_a_middleware_added_by_the_user_sees_predict_too(
    registry: Registry, tmp_path: Path
) -> None:
    cfg = _config(tmp_path / "data", tmp_path / "p.db", f"variants.a.path={registry.champion}")
    app = create_app(cfg)
    seen: list[str] = []

    @app.middleware("http")
    async def tag(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        response = await call_next(request)
        response.headers["x-seen-by"] = "user-middleware"
        return response

    with TestClient(app) as c:
        response = c.post("/predict", json={"unit_id": "u", "records": registry.records[:1]})
        assert response.status_code == 200
        assert response.headers["x-seen-by"] == "user-middleware"
    assert seen == ["/predict"]


# --- admin -----------------------------------------------------------------------------------


def test_admin_api_is_403_when_no_token_was_set_at_startup(client: TestClient) -> None:
    for method, path, body in (
        ("PUT", "/admin/traffic", {"weights": {"champion": 100}}),
        ("POST", "/admin/reload", None),
    ):
        response = client.request(method, path, json=body, headers=_bearer(TOKEN))
        assert response.status_code == 403, (path, response.text)
        assert TOKEN_ENV in response.json()["detail"]


@pytest.fixture
def admin(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The default variants with the admin API enabled (token set before startup)."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with _serve(_config(registry.data_dir, tmp_path / "p.db")) as c:
        yield c


@pytest.mark.parametrize("headers", [{}, _bearer("wrong-token"), {"Authorization": TOKEN}])
def test_admin_needs_the_bearer_token(admin: TestClient, headers: dict[str, str]) -> None:
    for method, path, body in (
        ("PUT", "/admin/traffic", {"weights": {"champion": 100}}),
        ("POST", "/admin/reload", None),
    ):
        response = admin.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "bearer token" in response.json()["detail"]
    assert admin.get("/info").json()["variants"]["champion"]["weight"] == 50.0


def test_a_replay_clock_is_taken_only_by_a_service_configured_for_it(
    client: TestClient, registry: Registry, tmp_path: Path, log_db: Path
) -> None:
    record = _complete(registry)
    refused = client.post(
        "/predict", json={"unit_id": "u", "records": [record], "ts": "2013-09-01T08:00:00Z"}
    )
    assert refused.status_code == 422
    assert "replay_clock: true" in refused.json()["detail"][0]["msg"]
    answered = _predict(client, "u", [record])
    late = client.post(
        "/feedback",
        json={"request_id": answered["request_id"], "labels": [1], "ts": "2013-09-02T00:00:00Z"},
    )
    assert late.status_code == 422
    replay_db = tmp_path / "replay.db"
    served = [f"variants.a.path={registry.champion}", "replay_clock=true"]
    with _serve(_config(tmp_path / "data", replay_db, *served)) as replay:
        assert replay.get("/info").json()["replay_clock"] is True
        body = _predict_ts(replay, record, "2013-09-01T08:00:00-04:00")
        stored = replay.post(
            "/feedback",
            json={"request_id": body["request_id"], "labels": [0], "ts": "2013-09-01T14:00:00Z"},
        )
        assert stored.status_code == 201, stored.text
        naive = replay.post(
            "/predict", json={"unit_id": "u", "records": [record], "ts": "2013-09-01T08:00:00"}
        )
        assert naive.status_code == 422
        assert "with a zone" in naive.json()["detail"][0]["msg"]
    log = PredictionLog(f"sqlite:///{replay_db}")
    frame = log.read(datetime(2013, 9, 1, tzinfo=UTC), datetime(2013, 9, 2, tzinfo=UTC))
    with log.engine.connect() as conn:
        feedback_ts = conn.execute(log.feedback.select()).mappings().one()["ts"]
    log.dispose()
    assert frame["ts"].tolist() == [pd.Timestamp("2013-09-01T12:00:00", tz="UTC")]
    assert frame["labels"].tolist() == [[0]]
    assert feedback_ts.replace(tzinfo=UTC) == datetime(2013, 9, 1, 14, tzinfo=UTC)


def _predict_ts(client: TestClient, record: dict[str, Any], ts: str) -> dict[str, Any]:
    response = client.post("/predict", json={"unit_id": "u", "records": [record], "ts": ts})
    assert response.status_code == 200, response.text
    return cast(dict[str, Any], response.json())


def test_traffic_change_moves_every_unit(admin: TestClient, registry: Registry) -> None:
    before = {u: _predict(admin, u, registry.records[:1])["variant"] for u in UNITS[:60]}
    assert set(before.values()) == {"champion", "challenger"}
    response = admin.put(
        "/admin/traffic",
        json={"weights": {"champion": 100, "challenger": 0}},
        headers=_bearer(TOKEN),
    )
    assert response.status_code == 200, response.text
    variants = response.json()["variants"]
    assert (variants["champion"]["share"], variants["challenger"]["share"]) == (1.0, 0.0)
    assert admin.get("/info").json()["variants"] == variants
    for unit in UNITS[:60]:
        body = _predict(admin, unit, registry.records[:1])
        assert (body["variant"], body["model_version"]) == ("champion", "1"), unit


def test_a_traffic_change_on_one_replica_reaches_every_replica(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cfg = _config(registry.data_dir, tmp_path / "shared.db", "watch_registry_s=0.1")
    with _serve(cfg) as a, _serve(cfg) as b:
        response = a.put(
            "/admin/traffic",
            json={"weights": {"champion": 80, "challenger": 20}, "experiment": "loss-ab-2"},
            headers=_bearer(TOKEN),
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 20
        while b.get("/info").json()["experiment"] != "loss-ab-2":
            assert time.monotonic() < deadline, "replica b never followed the change"
            time.sleep(0.05)
        assert b.get("/info").json()["variants"] == a.get("/info").json()["variants"]
        for unit in UNITS[:100]:  # both replicas route every unit alike
            on_a = _predict(a, unit, registry.records[:1])["variant"]
            assert _predict(b, unit, registry.records[:1])["variant"] == on_a, unit
    with _serve(cfg) as c:  # a replica started later begins with the shared routing
        info = c.get("/info").json()
        assert info["experiment"] == "loss-ab-2"
        assert info["variants"]["challenger"]["share"] == pytest.approx(0.2)
    solo = _config(registry.data_dir, tmp_path / "shared.db", "share_traffic=false")
    with _serve(solo) as d:
        assert d.get("/info").json()["experiment"] == "loss-ab", "sharing is a choice"


@pytest.mark.parametrize(
    ("weights", "loc", "msg"),
    [
        ({"nope": 10}, ["body", "weights", "nope"], "not a loaded variant"),
        ({"champion": -1}, ["body", "weights", "champion"], "greater than or equal to 0"),
        ({"champion": 0, "challenger": 0}, ["body", "weights"], "positive weight"),
        ({}, ["body", "weights"], "at least 1 item"),
    ],
)
def test_invalid_traffic_changes_are_422_and_change_nothing(
    admin: TestClient, weights: dict[str, float], loc: list[Any], msg: str
) -> None:
    before = admin.get("/info").json()["variants"]
    response = admin.put("/admin/traffic", json={"weights": weights}, headers=_bearer(TOKEN))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert msg in error["msg"]
    assert admin.get("/info").json()["variants"] == before


def test_reload_picks_up_a_moved_alias(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = _copy_registry(registry, tmp_path / "data")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bce = OnnxPredictor.from_path(registry.challenger).loss_id
    with _serve(_config(data_dir, tmp_path / "p.db")) as c:
        assert _predict(c, _unit_for(c, "champion"), registry.records[:1])["model_version"] == "1"
        _tracker(data_dir).set_alias(registry.model_name, "champion", "2")
        response = c.post("/admin/reload", headers=_bearer(TOKEN))
        assert response.status_code == 200, response.text
        # champion and challenger now both point at version 2: the champion alone serves.
        assert response.json()["variants"] == {
            "champion": {
                "model_version": "2",
                "loss_id": bce,
                "source": "alias:champion",
                "weight": 100.0,
                "share": 1.0,
            }
        }
        for unit in UNITS[:30]:
            body = _predict(c, unit, registry.records[:1])
            assert (body["variant"], body["model_version"], body["loss_id"]) == (
                "champion",
                "2",
                bce,
            )


def test_a_failed_reload_is_502_and_keeps_serving(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    a = Path(shutil.copy2(registry.champion, models / "a.onnx"))
    b = Path(shutil.copy2(registry.challenger, models / "b.onnx"))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    overrides = [f"variants.a.path={a}", f"variants.b.path={b}"]
    with _serve(_config(tmp_path / "data", tmp_path / "p.db", *overrides)) as c:
        before = c.get("/info").json()
        b.unlink()
        response = c.post("/admin/reload", headers=_bearer(TOKEN))
        assert response.status_code == 502
        detail = response.json()["detail"]
        assert "still serving the previous models" in detail
        assert str(b) in detail
        assert c.get("/info").json() == before
        body = _predict(c, _unit_for(c, "b"), registry.records[:2])
        assert body["model_version"] == before["variants"]["b"]["model_version"]


# --- metrics, backpressure, OpenAPI ----------------------------------------------------------


def test_metrics_expose_requests_latency_models_and_log_backlog(
    client: TestClient, registry: Registry
) -> None:
    _predict(client, _unit_for(client, "champion"), registry.records[:2])
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r'^lossflow_requests_total\{[^}]*variant="champion"[^}]*\} \d', text, re.M)
    assert re.search(
        r'^lossflow_request_duration_seconds_bucket\{[^}]*variant="champion"', text, re.M
    )
    for variant, onnx, version in (
        ("champion", registry.champion, "1"),
        ("challenger", registry.challenger, "2"),
    ):
        loss = OnnxPredictor.from_path(onnx).loss_id
        info = re.search(
            rf'^lossflow_model_info\{{[^}}]*variant="{variant}"[^}}]*\}} 1\.0$', text, re.M
        )
        assert info is not None, variant
        assert f'model_version="{version}"' in info.group(0)
        assert f'loss_id="{loss}"' in info.group(0)
    assert re.search(r"^lossflow_prediction_log_pending \d", text, re.M)
    assert re.search(r'^lossflow_traffic_share\{variant="champion"\} 0\.5$', text, re.M)


def test_a_poison_batch_is_dead_lettered_counted_and_the_service_keeps_serving(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service's uuid4 request ids never collide; a second writer of the same database (or a
    # broken id generator) can. Here uuid4 is made to repeat one id: the only stand-in.
    db = tmp_path / "log.db"
    cfg = _config(_copy_registry(registry, tmp_path / "data"), db, "log.max_delay_s=0.01")
    with _serve(cfg) as client:
        first = _predict(client, "unit-1", registry.records[:1])
        _state(client).writer.flush(timeout=10)  # type: ignore[union-attr]
        repeated = type("Fixed", (), {"hex": first["request_id"]})()
        monkeypatch.setattr("lossflow.serving.answering.uuid.uuid4", lambda: repeated)
        for unit in ("unit-2", "unit-3"):
            _predict(client, unit, registry.records[:1])  # answered: the log write fails later
        monkeypatch.undo()
        after = _predict(client, "unit-4", registry.records[:1])
        state = _state(client)
        state.writer.flush(timeout=10)  # type: ignore[union-attr]
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert re.search(r"^lossflow_prediction_log_dead_letters_total 2\.0$", metrics, re.M)
        assert state.log is not None
        letters = state.log.read_dead_letters()
        assert letters["request_id"].tolist() == [first["request_id"]] * 2
        assert {r["unit_id"] for r in letters["record"]} == {"unit-2", "unit-3"}
        logged = _logged(client, f"sqlite:///{db}", {first["request_id"], after["request_id"]})
        assert len(logged) == 2


def test_a_full_log_queue_answers_503_and_close_returns_the_unwritten_records(
    registry: Registry, tmp_path: Path
) -> None:
    overrides = [f"variants.a.path={registry.champion}", "variants.a.weight=100"]
    with _serve(_config(tmp_path / "data", tmp_path / "p.db", *overrides)) as c:
        state = _state(c)
        healthy = state.writer
        # Nothing listens on port 1: every write fails and the one-record queue fills up.
        dead_log = PredictionLog("postgresql://nobody@127.0.0.1:1/x")
        dead = BatchWriter(
            dead_log, max_delay_s=0.0, max_queue=1, write_attempts=1, retry_backoff_s=0.01
        )
        state.writer = dead
        answered: list[str] = []
        try:
            for _ in range(5):  # one record queued, a batch or two held by the failing writer
                response = c.post(
                    "/predict", json={"unit_id": "bp", "records": registry.records[:1]}
                )
                if response.status_code != 200:
                    break
                answered.append(response.json()["request_id"])
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            assert "queue is full" in response.json()["detail"]
            assert 1 <= len(answered) <= 4
            metrics = c.get("/metrics").text
            assert (
                'lossflow_request_errors_total{reason="log_backpressure",variant="none"}' in metrics
            )
        finally:
            state.writer = healthy
            with pytest.raises(LogWriteError) as caught:
                dead.close(timeout=0.5)
            dead_log.dispose()
        assert [r.request_id for r in caught.value.records] == answered
        # The real writer is back: predictions are answered and logged again.
        _predict(c, "bp", registry.records[:1])


def test_openapi_lists_the_models_features_with_types(client: TestClient) -> None:
    predictor = next(iter(_state(client).current().variants.values())).predictor
    numeric = set(predictor.preprocessor.numeric_columns)
    features = list(predictor.feature_columns)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    request = body["schema"]
    assert request["required"] == ["unit_id", "records"]
    assert request["properties"]["unit_id"]["maxLength"] == 256
    records = request["properties"]["records"]
    assert (records["minItems"], records["maxItems"]) == (1, 1000)
    items = records["items"]
    assert items["additionalProperties"] is False
    assert list(items["properties"]) == features
    assert items["required"] == features
    assert numeric
    assert numeric != set(features)
    for name, prop in items["properties"].items():
        first, null = prop["anyOf"]
        assert null == {"type": "null"}
        assert first["type"] == ("number" if name in numeric else "string"), name
