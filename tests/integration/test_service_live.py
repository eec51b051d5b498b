"""The inference service as users run it: `lossflow serve` under uvicorn on loopback.

Real registry (MLflow SQLite store with champion v1 = focal, challenger v2 = bce), real
onnxruntime, real prediction log (SQLite, and the machine's PostgreSQL), real signals.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lossflow.predlog import PredictionLog
from lossflow.serving.predictor import OnnxPredictor
from lossflow.tracking import WritableModelRegistry

from .servers import fuzz
from .serving_models import PG_URL, Registry, copy_registry, free_port

pytestmark = pytest.mark.slow

LOSSFLOW = Path(sys.executable).parent / "lossflow"
TOKEN = "test-admin-token"


class Service:
    """`lossflow serve` in a subprocess; stopped with SIGTERM like a container runtime does."""

    def __init__(self, data_dir: Path, *overrides: str, token: str | None = TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.pop("LOSSFLOW_ADMIN_TOKEN", None)
        if token is not None:
            env["LOSSFLOW_ADMIN_TOKEN"] = token
        self.log_path = data_dir / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(LOSSFLOW), "serve", f"data_dir={data_dir}", f"port={self.port}", *overrides],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited at startup:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"service not ready in 60 s:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            self._log.close()
        return code

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.stop()


@pytest.fixture(scope="module")
def registry(built_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return copy_registry(built_registry, tmp_path_factory.mktemp("live-registry"))


@pytest.fixture
def data_dir(registry: Registry, tmp_path: Path) -> Path:
    """A private copy of the registry's store (the service writes its log and cache there)."""
    target = tmp_path / "data"
    target.mkdir()
    for name in ("mlflow.db", "mlartifacts"):
        source = registry.data_dir / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy2(source, target / name)
    return target


def _body(unit: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"unit_id": unit, "records": records}


class Load:
    """Concurrent 1-record requests from a background thread until stopped (or refused)."""

    def __init__(self, url: str, records: list[dict[str, Any]], clients: int = 8) -> None:
        self.url = url
        self.records = records
        self.clients = clients
        self.answers: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        self.transport_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _client(self, client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            record = self.records[(worker * 997 + n) % len(self.records)]
            n += 1
            try:
                response = await client.post("/predict", json=_body(f"load-{worker}-{n}", [record]))
            except httpx.TransportError:
                self.transport_errors += 1
                await asyncio.sleep(0.01)
                continue
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.answers.append(response.json())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            await asyncio.gather(*(self._client(client, w) for w in range(self.clients)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _logged_ids(url: str, schema: str | None = None) -> set[str]:
    log = PredictionLog(url, schema)
    try:
        now = datetime.now(UTC)
        frame = log.read(now - timedelta(days=1), now + timedelta(days=1))
    finally:
        log.dispose()
    return set(frame["request_id"])


def test_predictions_over_http_equal_onnxruntime(registry: Registry, data_dir: Path) -> None:
    expected = {
        "1": OnnxPredictor.from_path(registry.champion).predict(registry.records),
        "2": OnnxPredictor.from_path(registry.challenger).predict(registry.records),
    }
    with Service(data_dir) as service, httpx.Client(base_url=service.url) as client:
        seen = set()
        for i, record in enumerate(registry.records[:300]):
            answer = client.post("/predict", json=_body(f"u{i}", [record])).json()
            seen.add(answer["variant"])
            want = expected[answer["model_version"]][i]
            got = answer["predictions"][0]
            assert got["probability"] == pytest.approx(want.probability, abs=1e-6)
            assert got["label"] == want.label
        batch = client.post("/predict", json=_body("batch", registry.records[:50])).json()
        want_batch = expected[batch["model_version"]][:50]
        assert [p["probability"] for p in batch["predictions"]] == pytest.approx(
            [w.probability for w in want_batch], abs=1e-6
        )
    assert seen == {"champion", "challenger"}


def test_split_over_10000_units_is_within_2_points_and_sticky(
    registry: Registry, data_dir: Path
) -> None:
    record = registry.records[0]

    async def assign(url: str, units: list[str]) -> dict[str, str]:
        variants: dict[str, str] = {}
        queue = list(units)

        async def worker(client: httpx.AsyncClient) -> None:
            while queue:
                unit = queue.pop()
                response = await client.post("/predict", json=_body(unit, [record]))
                assert response.status_code == 200, response.text
                variants[unit] = response.json()["variant"]

        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(16)))
        return variants

    units = [f"user-{i}" for i in range(10_000)]
    with Service(
        data_dir,
        "variants.champion.alias=champion",
        "variants.champion.weight=70",
        "variants.challenger.alias=challenger",
        "variants.challenger.weight=30",
    ) as svc:
        first = asyncio.run(assign(svc.url, units))
        again = asyncio.run(assign(svc.url, units[:2000]))
    shares = Counter(first.values())
    assert abs(shares["champion"] / len(units) - 0.70) <= 0.02
    assert abs(shares["challenger"] / len(units) - 0.30) <= 0.02
    assert all(again[u] == first[u] for u in units[:2000])


def test_reload_under_load_loses_no_request(registry: Registry, data_dir: Path) -> None:
    tracker = WritableModelRegistry(f"sqlite:///{data_dir / 'mlflow.db'}")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        Service(data_dir, "variants.main.alias=champion", "variants.main.weight=1") as service,
        Load(service.url, registry.records) as load,
    ):
        versions = []
        for version in ("2", "1", "2", "1", "2"):
            time.sleep(0.4)
            tracker.set_alias(registry.model_name, "champion", version)
            response = httpx.post(f"{service.url}/admin/reload", headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            versions.append(response.json()["variants"]["main"]["model_version"])
        time.sleep(0.4)
    assert versions == ["2", "1", "2", "1", "2"]
    assert load.transport_errors == 0
    assert set(load.statuses) == {200}, load.statuses
    served = Counter(answer["model_version"] for answer in load.answers)
    assert served["1"] > 0
    assert served["2"] > 0


def test_moved_alias_is_picked_up_by_the_registry_watch(registry: Registry, data_dir: Path) -> None:
    tracker = WritableModelRegistry(f"sqlite:///{data_dir / 'mlflow.db'}")
    with (
        Service(data_dir, "watch_registry_s=0.3", "variants.main.alias=champion") as service,
        Load(service.url, registry.records, clients=4) as load,
    ):
        tracker.set_alias(registry.model_name, "champion", "2")  # what the A/B analysis does
        deadline = time.monotonic() + 30
        while httpx.get(f"{service.url}/info").json()["variants"]["main"]["model_version"] != "2":
            assert time.monotonic() < deadline, service.log_path.read_text()
            time.sleep(0.1)
        time.sleep(0.3)
    assert set(load.statuses) == {200}
    assert load.answers[-1]["model_version"] == "2"
    assert '"trigger":"registry"' in service.log_path.read_text()


def test_sigterm_under_load_loses_no_answered_prediction(
    registry: Registry, data_dir: Path
) -> None:
    db = data_dir / "sigterm.db"
    service = Service(data_dir, f"log.url=sqlite:///{db}", "log.max_delay_s=0.5")
    with Load(service.url, registry.records, clients=12) as load:
        time.sleep(2.0)
        code = service.stop()
        time.sleep(0.3)  # clients now meet a closed port
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports it.
    assert code in (0, -signal.SIGTERM), service.log_path.read_text()
    answered = {answer["request_id"] for answer in load.answers}
    assert len(answered) > 100
    assert answered <= _logged_ids(f"sqlite:///{db}")
    assert set(load.statuses) == {200}
    assert '"event":"drained"' in service.log_path.read_text()


def test_admin_needs_the_bearer_token(data_dir: Path) -> None:
    with Service(data_dir) as service:
        for method, path in (("POST", "/admin/reload"), ("PUT", "/admin/traffic")):
            bare = httpx.request(method, f"{service.url}{path}", json={"weights": {"x": 1}})
            wrong = httpx.request(
                method,
                f"{service.url}{path}",
                json={"weights": {"champion": 1}},
                headers={"Authorization": "Bearer not-the-token"},
            )
            assert bare.status_code == wrong.status_code == 401
            assert bare.headers["www-authenticate"] == "Bearer"
        ok = httpx.put(
            f"{service.url}/admin/traffic",
            json={"weights": {"champion": 100, "challenger": 0}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert ok.status_code == 200
        assert ok.json()["variants"]["challenger"]["share"] == 0.0
    assert TOKEN not in service.log_path.read_text()


def _get_health(conn: socket.socket) -> bytes:
    """``GET /health`` on a kept-alive connection; the whole response (headers and body)."""
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_idle_connections_outlive_the_clients_pool_and_keep_alive_s_is_honoured(
    data_dir: Path,
) -> None:
    """A pooled client (httpx keeps idle connections 5 s, nginx upstreams 60 s) reuses an idle
    connection when it likes: a server closing first races that request into a reset (seen as
    ``httpx.ReadError`` under load). The default keeps idle connections 75 s; the 7 s idle here
    is longer than uvicorn's own 5 s default. ``keep_alive_s=1`` closes within about a second."""
    with Service(data_dir) as service, socket.create_connection(("127.0.0.1", service.port)) as c:
        assert _get_health(c).startswith(b"HTTP/1.1 200")
        c.settimeout(7.0)
        with pytest.raises(TimeoutError):  # nothing arrives: the server has not closed it
            c.recv(1)
        assert _get_health(c).startswith(b"HTTP/1.1 200")
    with (
        Service(data_dir, "keep_alive_s=1") as service,
        socket.create_connection(("127.0.0.1", service.port)) as c,
    ):
        assert _get_health(c).startswith(b"HTTP/1.1 200")
        c.settimeout(30.0)
        assert c.recv(1) == b""  # closed by the server


def test_prediction_log_and_feedback_in_postgresql(
    registry: Registry, data_dir: Path, pg_schema: str
) -> None:
    with (
        Service(data_dir, f"log.url={PG_URL}", f"log.db_schema={pg_schema}") as service,
        httpx.Client(base_url=service.url) as client,
    ):
        answers = [
            client.post("/predict", json=_body(f"pg-{i}", registry.records[i : i + 2])).json()
            for i in range(20)
        ]
        for i, answer in enumerate(answers[:10]):
            labels = registry.labels[i : i + 2]
            feedback = client.post(
                "/feedback", json={"request_id": answer["request_id"], "labels": labels}
            )
            assert feedback.status_code == 201, feedback.text
    log = PredictionLog(PG_URL, pg_schema)
    try:
        now = datetime.now(UTC)
        frame = log.read(now - timedelta(hours=1), now + timedelta(hours=1))
    finally:
        log.dispose()
    assert set(frame["request_id"]) == {a["request_id"] for a in answers}
    by_id = frame.set_index("request_id")
    for i, answer in enumerate(answers):
        row = by_id.loc[answer["request_id"]]
        assert row["unit_id"] == f"pg-{i}"
        assert row["variant"] == answer["variant"]
        assert row["loss_id"] == answer["loss_id"]
        assert row["features"] == registry.records[i : i + 2]
        assert row["labels"] == (registry.labels[i : i + 2] if i < 10 else None)


def test_openapi_fuzzed_with_schemathesis_gives_no_server_error(data_dir: Path) -> None:
    with Service(data_dir) as service:
        fuzz(f"{service.url}/openapi.json", None, data_dir)
        server_log = service.log_path.read_text()
    assert '"level":"error"' not in server_log
