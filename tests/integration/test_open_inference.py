"""The Open Inference Protocol (V2) on a live ``lossflow serve``, called by the clients teams use.

A penguins project (palmerpenguins' ``penguins``: multiclass with string classes, numeric and
categorical columns, missing values) made as a user makes it: ``lossflow init`` on the table, then
``lossflow train`` twice with two losses (version 1 ``ce`` = champion, version 2
``logit_adjusted`` = challenger), served 50/50 by ``lossflow serve`` on loopback. Against it:

- ``tritonclient.http`` (binary tensors, its default, and JSON);
- KServe's ``InferenceRESTClient`` and MLServer's ``PandasCodec`` building a request from a
  DataFrame, each from its own virtual environment (``make peers``: neither installs beside the
  project's pins);
- the A/B split across units, the prediction log holding every V2 answer with its variant, and
  ``/feedback`` joining a V2 request's id;
- the protocol's own OpenAPI document (``tests/data/open_inference_protocol``) fuzzing the
  ``/v2`` routes with schemathesis: no 5xx, answers as the document says.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from lossflow.flows import server
from lossflow.predlog import PredictionLog

from .servers import fuzz
from .serving_models import wait_for
from .user_projects import LOSSFLOW, ROOT, lossflow, project_root, rdataset, ready

pytestmark = pytest.mark.slow

MODEL = "penguins"
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
FEATURES = [
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "year",
    "island",
    "sex",
]
CATEGORICAL = {"island", "sex"}
SPEC = ROOT / "tests" / "data" / "open_inference_protocol" / "open_inference_rest.yaml"
PEERS = ROOT / ".venv-peers"


@dataclass(frozen=True)
class Served:
    url: str
    root: Path
    table: pd.DataFrame  # the penguins, with their species

    def rows(self, count: int, *, complete: bool = True) -> pd.DataFrame:
        frame = self.table.dropna() if complete else self.table
        return frame.head(count).reset_index(drop=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = project_root(tmp_path_factory.mktemp("penguins"))
    csv = root / "penguins.csv"
    table = rdataset("palmerpenguins", "penguins")
    table.to_csv(csv, index=False)
    lossflow(root, "init", str(csv), "--target", "species")
    lossflow(root, "--project", MODEL, "train", "trainer.max_epochs=5")
    lossflow(root, "--project", MODEL, "train", "loss=logit_adjusted", "trainer.max_epochs=5")
    port = server.free_port()
    log = root / "serve.log"
    command = [LOSSFLOW, "--project", MODEL, "serve", "--port", str(port)]
    with server.child(command, log, cwd=root) as service:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: service.poll() is not None or ready(url), "the service", 180)
        assert service.poll() is None, log.read_text()
        yield Served(url, root, table)
    assert '"level":"error"' not in log.read_text()


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: None if pd.isna(v) else (v if k in CATEGORICAL else float(v)) for k, v in r.items()}
        for r in rows[FEATURES].to_dict("records")
    ]


def _tensors(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One JSON tensor per column, as a hand-written V2 request sends them."""
    records = _records(rows)
    return [
        {
            "name": name,
            "shape": [len(records)],
            "datatype": "BYTES" if name in CATEGORICAL else "FP32",
            "data": [r[name] for r in records],
        }
        for name in FEATURES
    ]


def _predict(url: str, unit: str, rows: pd.DataFrame) -> dict[str, Any]:
    answer = httpx.post(f"{url}/predict", json={"unit_id": unit, "records": _records(rows)})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _probabilities(native: dict[str, Any]) -> np.ndarray:
    return np.array([[p["probabilities"][c] for c in CLASSES] for p in native["predictions"]])


def _infer(url: str, body: dict[str, Any], path: str = f"/v2/models/{MODEL}/infer") -> Any:
    return httpx.post(f"{url}{path}", json=body, timeout=30)


def _peer(name: str) -> Path:
    python = PEERS / name / "bin" / "python"
    if not python.exists():
        message = f"{python} is missing: run `make peers`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


def _run_peer(name: str, script: str, served: Served, stdin: str) -> dict[str, Any]:
    """Run ``script`` with the peer venv's Python against the service; its JSON output."""
    done = subprocess.run(
        [str(_peer(name)), "-c", script, served.url, MODEL],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_tritonclient_calls_the_service_with_binary_and_json_tensors(served: Served) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready("flights")
    assert not client.is_model_ready(MODEL, "9")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["versions"] == ["1", "2"]
    assert [i["name"] for i in metadata["inputs"]] == FEATURES
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {
        "probabilities": [-1, 3],
        "label": [-1],
    }
    assert json.loads(metadata["properties"]["classes"]) == CLASSES

    rows = served.rows(6, complete=False)  # row 3 of the table has no measurements
    assert rows[FEATURES].isna().any(axis=None)
    for binary in (True, False):
        inputs = []
        for name in FEATURES:
            column = rows[name]
            if name in CATEGORICAL:
                tensor = triton.InferInput(name, [len(rows)], "BYTES")
                values = np.array([str(v) if isinstance(v, str) else "" for v in column], object)
            else:
                tensor = triton.InferInput(name, [len(rows)], "FP32")
                values = column.to_numpy(np.float32)  # NaN: missing
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        # Binary: the client's defaults (binary inputs, every output binary); JSON: asked for.
        outputs = None
        if not binary:
            outputs = [
                triton.InferRequestedOutput(n, binary_data=False)
                for n in ("probabilities", "label")
            ]
        result = client.infer(
            MODEL, inputs, outputs=outputs, parameters={"unit_id": f"triton-{binary}"}
        )
        answer = result.get_response()
        native = _predict(
            served.url,
            f"triton-{binary}",
            rows.assign(**{c: rows[c].fillna("") for c in CATEGORICAL}),
        )
        assert answer["parameters"]["variant"] == native["variant"]
        assert answer["model_version"] == native["model_version"]
        np.testing.assert_allclose(result.as_numpy("probabilities"), _probabilities(native))
        # BYTES: the client gives bytes from a binary tensor, str from JSON.
        labels = [v.decode() if binary else v for v in result.as_numpy("label").tolist()]
        assert labels == [p["label"] for p in native["predictions"]]

    with pytest.raises(InferenceServerException, match=r"\[400\] parameters.unit_id is required"):
        client.infer(MODEL, inputs)


def test_v2_splits_units_as_predict_does_logs_every_answer_and_feedback_joins_it(
    served: Served,
) -> None:
    rows = served.rows(2)
    answers = {}
    for i in range(60):
        answer = _infer(
            served.url,
            {"id": f"call-{i}", "parameters": {"unit_id": f"v2-{i}"}, "inputs": _tensors(rows)},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["id"] == f"call-{i}"
        assert body["model_name"] == MODEL
        answers[f"v2-{i}"] = body
    variants = {a["parameters"]["variant"] for a in answers.values()}
    assert variants == {"champion", "challenger"}, "the split reaches both arms"
    for unit in ("v2-0", "v2-1", "v2-2"):
        native = _predict(served.url, unit, rows)
        v2 = answers[unit]
        assert v2["parameters"]["variant"] == native["variant"], "a unit keeps its arm"
        probabilities = np.reshape(v2["outputs"][0]["data"], (len(rows), 3))
        np.testing.assert_allclose(probabilities, _probabilities(native))

    # A versioned path answers only the units the split gives that version.
    unit, answer = next(iter(answers.items()))
    other = "1" if answer["model_version"] == "2" else "2"
    body = {"parameters": {"unit_id": unit}, "inputs": _tensors(rows)}
    pinned = _infer(
        served.url, body, f"/v2/models/{MODEL}/versions/{answer['model_version']}/infer"
    )
    assert pinned.status_code == 200, pinned.text
    refused = _infer(served.url, body, f"/v2/models/{MODEL}/versions/{other}/infer")
    assert refused.status_code == 400
    assert "by the A/B split" in refused.json()["error"]

    request_ids = {a["parameters"]["request_id"]: a for a in answers.values()}
    log = PredictionLog(f"sqlite:///{served.root / 'data' / MODEL / 'predictions.db'}")
    try:
        now = datetime.now(UTC)

        def logged() -> list[dict[str, Any]] | None:
            frame = log.read(now - timedelta(hours=1), now + timedelta(hours=1))
            found = frame[frame["request_id"].isin(request_ids)].to_dict("records")
            return found if len(found) == len(request_ids) else None

        for row in wait_for(logged, "every V2 answer in the log"):
            answer = request_ids[row["request_id"]]
            assert row["variant"] == answer["parameters"]["variant"]
            assert row["loss_id"] == answer["parameters"]["loss_id"]
            assert row["features"] == _records(rows)
            assert [p["label"] for p in row["outputs"]] == answer["outputs"][1]["data"]
        first = next(iter(request_ids))
        species = rows["species"].tolist()
        stored = httpx.post(f"{served.url}/feedback", json={"request_id": first, "labels": species})
        assert stored.status_code == 201, stored.text

        def labelled() -> Any:
            frame = log.read(now - timedelta(hours=1), now + timedelta(hours=1))
            return frame.loc[frame["request_id"] == first, "labels"].iloc[0]

        assert wait_for(labelled, "the feedback joined") == species
    finally:
        log.dispose()


def test_kserve_rest_client_calls_the_service(served: Served) -> None:
    rows = served.rows(3)
    script = """
import asyncio, json, sys
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main():
    url, model, tensors = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
    client = InferenceRESTClient(config=RESTConfig(protocol="v2", timeout=30))
    inputs = [InferInput(name=t["name"], shape=t["shape"], datatype=t["datatype"], data=t["data"])
              for t in tensors]
    request = InferRequest(model_name=model, infer_inputs=inputs,
                           parameters={"unit_id": "kserve-1"})
    response = await client.infer(url, request, model_name=model)
    print(json.dumps({
        "server_ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, model),
        "parameters": response.parameters,
        "outputs": {o.name: o.data for o in response.outputs},
    }))
    await client.close()

asyncio.run(main())
"""
    answer = _run_peer("kserve", script, served, json.dumps(_tensors(rows)))
    assert answer["server_ready"]
    assert answer["model_ready"]
    native = _predict(served.url, "kserve-1", rows)
    assert answer["parameters"]["variant"] == native["variant"]
    probabilities = np.reshape(answer["outputs"]["probabilities"], (len(rows), 3))
    np.testing.assert_allclose(probabilities, _probabilities(native))
    assert answer["outputs"]["label"] == [p["label"] for p in native["predictions"]]


def test_mlserver_codec_sends_a_dataframe_and_decodes_the_answer(served: Served) -> None:
    rows = served.rows(4)
    script = """
import json, sys, urllib.request
import pandas as pd
from mlserver.codecs import NumpyCodec, PandasCodec, StringCodec
from mlserver.types import InferenceResponse

url, model = sys.argv[1], sys.argv[2]
frame = pd.read_json(sys.stdin, orient="records")
request = PandasCodec.encode_request(frame, use_bytes=False)
request.parameters.unit_id = "mlserver-1"
http = urllib.request.Request(f"{url}/v2/models/{model}/infer",
                              data=request.model_dump_json(exclude_none=True).encode(),
                              headers={"Content-Type": "application/json"})
response = InferenceResponse.model_validate_json(urllib.request.urlopen(http).read())
outputs = {o.name: o for o in response.outputs}
print(json.dumps({
    "parameters": response.parameters.model_dump(exclude_none=True),
    "probabilities": NumpyCodec.decode_output(outputs["probabilities"]).tolist(),
    "label": StringCodec.decode_output(outputs["label"]),
}))
"""
    table = rows[FEATURES].astype({"flipper_length_mm": int, "body_mass_g": int, "year": int})
    answer = _run_peer("mlserver", script, served, table.to_json(orient="records"))
    native = _predict(served.url, "mlserver-1", rows)
    assert answer["parameters"]["variant"] == native["variant"]
    np.testing.assert_allclose(answer["probabilities"], _probabilities(native))
    assert answer["label"] == [p["label"] for p in native["predictions"]]


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        (lambda b: b.pop("parameters"), 400, "parameters.unit_id is required"),
        (lambda b: b["inputs"].pop(), 400, "input 'sex' is missing"),
        (lambda b: b["inputs"][0].update(datatype="BYTES", data=["3", "4"]), 400, "numeric column"),
        (lambda b: b["inputs"][-1].update(datatype="FP32"), 400, "is a categorical column"),
        (lambda b: b["inputs"][0].update(data=["x", "y"]), 400, "record 0: not a number"),
        (lambda b: b["inputs"][0].update(shape=[3]), 400, "shape says 3 values"),
        (lambda b: b["parameters"].update(priority=1), 400, "parameter 'priority'"),
        (lambda b: b.update(outputs=[{"name": "value"}]), 400, "output 'value' is not given"),
        (lambda b: b.update(model_name="flights"), 400, "is not the path's"),
    ],
)
def test_a_caller_s_mistake_is_a_4xx_naming_it(
    served: Served, change: Any, status: int, says: str
) -> None:
    body = {"parameters": {"unit_id": "mistake"}, "inputs": _tensors(served.rows(2))}
    change(body)
    answer = _infer(served.url, body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]


def test_unknown_models_paths_and_bodies_are_v2_errors(served: Served) -> None:
    body = {"parameters": {"unit_id": "u"}, "inputs": _tensors(served.rows(1))}
    unknown = _infer(served.url, body, "/v2/models/flights/infer")
    assert unknown.status_code == 404
    assert "this service serves 'penguins'" in unknown.json()["error"]
    assert httpx.get(f"{served.url}/v2/nowhere").json() == {"error": "Not Found"}
    assert httpx.get(f"{served.url}/v2/models/{MODEL}/versions/7").status_code == 404
    garbage = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", content=b"{not json")
    assert garbage.status_code == 400
    assert "not valid JSON" in garbage.json()["error"]
    huge = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", content=b"x" * 2_000_000)
    assert huge.status_code == 413
    assert "error" in huge.json()
    native = httpx.get(f"{served.url}/nowhere")
    assert native.json() == {"detail": "Not Found"}, "the native API keeps its errors"


def test_v2_routes_fuzzed_against_the_protocol_document_give_no_server_error(
    served: Served, tmp_path: Path
) -> None:
    # The document writes path parameters as ${NAME}; the served model's name and a version
    # it serves go in their place, so that the fuzzing reaches inference, not only a 404.
    document = yaml.safe_load(SPEC.read_text())
    paths = {}
    for path, item in document["paths"].items():
        item.pop("parameters", None)
        concrete = path.replace("${MODEL_NAME}", MODEL).replace("${MODEL_VERSION}", "1")
        paths[concrete] = item
    document["paths"] = paths
    spec = tmp_path / "open_inference_rest.json"
    spec.write_text(json.dumps(document))
    fuzz(str(spec), served.url, tmp_path, seconds=20)
