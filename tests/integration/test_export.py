"""ONNX export, metadata and the torch-vs-onnxruntime parity gate, on real onnxruntime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from lossflow.export import (
    OPSET,
    ExportError,
    ParityError,
    ParityReport,
    check_parity,
    export_onnx,
    read_metadata,
)
from lossflow.onnx_runner import OnnxRunner

N_NUMERIC = 4
CARDINALITIES = (5, 7)


class Standardize(nn.Module):
    """Stand-in for the preprocessing layer: NaN -> fill, then (x - mean) / std."""

    fill: Tensor
    mean: Tensor
    std: Tensor

    def __init__(self, fill: Tensor, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("fill", fill)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.where(torch.isnan(x), self.fill, x)
        return (x - self.mean) / self.std


class TabularMLP(nn.Module):
    """Stand-in for the tabular net: standardised numerics + one embedding per categorical."""

    def __init__(self) -> None:
        super().__init__()
        self.standardize = Standardize(
            fill=torch.linspace(-1.0, 1.0, N_NUMERIC),
            mean=torch.linspace(0.5, 2.0, N_NUMERIC),
            std=torch.linspace(0.5, 3.0, N_NUMERIC),
        )
        self.embeddings = nn.ModuleList(nn.Embedding(n, 3) for n in CARDINALITIES)
        self.head = nn.Sequential(
            nn.Linear(N_NUMERIC + 3 * len(CARDINALITIES), 16), nn.ReLU(), nn.Linear(16, 1)
        )

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        features = torch.cat([self.standardize(numeric), *embedded], dim=1)
        out: Tensor = self.head(features)
        return out.squeeze(-1)


class PixelCNN(nn.Module):
    """Stand-in for the digits CNN: (N, 64) pixels -> (N, 1, 8, 8) -> conv -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Linear(4 * 4 * 4, 10)

    def forward(self, pixels: Tensor) -> Tensor:
        x = pixels.reshape(-1, 1, 8, 8)
        out: Tensor = self.classifier(self.features(x).flatten(1))
        return out


def tabular_inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, N_NUMERIC)).astype(np.float32)
    numeric[rng.random(size=numeric.shape) < 0.2] = np.nan
    categorical = np.stack([rng.integers(0, n, size=rows) for n in CARDINALITIES], axis=1)
    return {"numeric": numeric, "categorical": categorical.astype(np.int64)}


def pixel_inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pixels": rng.uniform(0.0, 16.0, size=(rows, 64)).astype(np.float32)}


def torch_outputs(model: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out: Tensor = model(*(torch.from_numpy(a) for a in inputs.values()))
    return out.numpy()


METADATA = {"loss_id": "focal-3f2a", "features": json.dumps({"numeric": ["a", "b", "c", "d"]})}


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = TabularMLP()
    example = {k: torch.from_numpy(v) for k, v in tabular_inputs(3, seed=1).items()}
    path = tmp_path_factory.mktemp("tabular") / "nested" / "model.onnx"
    return model, export_onnx(model, example, path, METADATA)


@pytest.fixture(scope="module")
def cnn_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[PixelCNN, Path, bool]:
    """The CNN exported from train mode, and whether it was in train mode right after export."""
    torch.manual_seed(0)
    model = PixelCNN()
    model.train()
    example = {k: torch.from_numpy(v) for k, v in pixel_inputs(2, seed=1).items()}
    path = export_onnx(model, example, tmp_path_factory.mktemp("cnn") / "model.onnx", {})
    return model, path, model.training


@pytest.fixture
def cnn(cnn_export: tuple[PixelCNN, Path, bool]) -> tuple[PixelCNN, Path]:
    return cnn_export[0], cnn_export[1]


@pytest.mark.parametrize("rows", [1, 1000])
def test_tabular_export_runs_any_batch_and_matches_torch(
    tabular: tuple[nn.Module, Path], rows: int
) -> None:
    model, path = tabular
    inputs = tabular_inputs(rows, seed=rows)
    out = OnnxRunner(path).run(inputs)
    assert out.shape == (rows,)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, torch_outputs(model, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows", [1, 1000])
def test_cnn_export_runs_any_batch_and_matches_torch(cnn: tuple[PixelCNN, Path], rows: int) -> None:
    model, path = cnn
    inputs = pixel_inputs(rows, seed=rows)
    out = OnnxRunner(path, intra_op_threads=1).run(inputs)
    assert out.shape == (rows, 10)
    np.testing.assert_allclose(out, torch_outputs(model.eval(), inputs), atol=1e-4, rtol=0)


def test_export_restores_training_mode(cnn_export: tuple[PixelCNN, Path, bool]) -> None:
    assert cnn_export[2] is True
    assert read_metadata(cnn_export[1]) == {}


def test_graph_contract_names_opset_and_dynamic_batch(tabular: tuple[nn.Module, Path]) -> None:
    _, path = tabular
    proto = onnx.load_model(path)
    assert [i.name for i in proto.graph.input] == ["numeric", "categorical"]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert {op.domain: op.version for op in proto.opset_import}[""] == OPSET
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param != ""
    assert OnnxRunner(path).input_names == ["numeric", "categorical"]
    assert not list(path.parent.glob("*.data")), "weights must be inside the .onnx file"


def test_metadata_round_trips(tabular: tuple[nn.Module, Path]) -> None:
    _, path = tabular
    assert read_metadata(path) == METADATA
    assert OnnxRunner(path).metadata == METADATA
    assert json.loads(read_metadata(path)["features"]) == {"numeric": ["a", "b", "c", "d"]}


def test_parity_passes_on_exported_model_over_all_rows(tabular: tuple[nn.Module, Path]) -> None:
    model, path = tabular
    report = check_parity(model, path, tabular_inputs(2500, seed=7), batch_size=1000)
    assert isinstance(report, ParityReport)
    assert report.rows == 2500
    assert (report.atol, report.rtol) == (1e-5, 1e-5)
    assert 0.0 <= report.max_abs_diff <= 1e-5


class Scaled(nn.Module):
    """The tabular net's output moved to ``offset + scale * output``: a regression model whose
    target lives in its own unit (prices in the hundreds, amounts in the thousands)."""

    def __init__(self, base: nn.Module, scale: float, offset: float) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("scale", torch.tensor(scale))
        self.register_buffer("offset", torch.tensor(offset))

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        out: Tensor = self.offset + self.scale * self.base(numeric, categorical)
        return out


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 1e3, 1e5])
def test_parity_judges_float32_at_every_scale_and_catches_a_wrong_weight(
    tabular: tuple[nn.Module, Path], tmp_path: Path, magnitude: float
) -> None:
    base, _ = tabular
    model = Scaled(base, scale=magnitude / 4, offset=magnitude).eval()
    inputs = tabular_inputs(2000, seed=11)
    example = {k: torch.from_numpy(v[:2]) for k, v in inputs.items()}
    path = export_onnx(model, example, tmp_path / "scaled.onnx", {})
    outputs = torch_outputs(model, inputs)
    assert np.median(np.abs(outputs)) == pytest.approx(magnitude, rel=0.5)
    report = check_parity(model, path, inputs)
    # The float32 rounding of outputs near 1e3 and 1e5 is beyond an absolute 1e-5 tolerance:
    # the relative part is what lets them pass.
    assert report.max_rel_diff <= 1e-5

    proto = onnx.load_model(path)
    head = next(t for t in proto.graph.initializer if tuple(t.dims) == (1, 16))
    values = numpy_helper.to_array(head).copy()
    values.flat[np.argmax(np.abs(values))] *= -1.0  # one weight of the last layer flipped
    head.CopyFrom(numpy_helper.from_array(values, name=head.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save_model(proto, wrong)
    with pytest.raises(ParityError) as raised:
        check_parity(model, wrong, inputs)
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(
        r"differs from torch by \S+ at row \d+ \(torch \S+, onnxruntime \S+; "
        r"tolerance 1e-05 \+ 1e-05 x \|torch\| = \S+; 2000 rows compared\): the "
        r"ONNX file does not reproduce this model, so it is not registered",
        message,
    )


def test_parity_fails_on_tampered_initializer(
    tabular: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    model, path = tabular
    proto = onnx.load_model(path)
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    target = max(weights, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(target).copy()
    values.flat[0] += 0.1
    target.CopyFrom(numpy_helper.from_array(values, name=target.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save_model(proto, tampered)
    with pytest.raises(ParityError, match=r"differs from torch by .* at row \d+ \(torch "):
        check_parity(model, tampered, tabular_inputs(300, seed=3))


def test_parity_fails_when_torch_weights_change_after_export(
    cnn: tuple[PixelCNN, Path],
) -> None:
    model, path = cnn
    inputs = pixel_inputs(50, seed=4)
    check_parity(model, path, inputs, atol=1e-4)
    original = model.classifier.bias.detach().clone()
    try:
        with torch.no_grad():
            model.classifier.bias[3] += 0.5
        with pytest.raises(ParityError, match=r"by 0\.5\d* at row \d+ "):
            check_parity(model, path, inputs, atol=1e-4, batch_size=7)
    finally:
        with torch.no_grad():
            model.classifier.bias.copy_(original)


def test_parity_reports_the_worst_row(tabular: tuple[nn.Module, Path], tmp_path: Path) -> None:
    model, path = tabular
    inputs = tabular_inputs(40, seed=5)
    inputs["numeric"][:, :] = 0.0
    inputs["categorical"][:, :] = 0
    inputs["categorical"][23, 1] = 6
    proto = onnx.load_model(path)
    emb = next(t for t in proto.graph.initializer if tuple(t.dims) == (7, 3))
    values = numpy_helper.to_array(emb).copy()
    values[6] += 1.0
    emb.CopyFrom(numpy_helper.from_array(values, name=emb.name))
    tampered = tmp_path / "row.onnx"
    onnx.save_model(proto, tampered)
    with pytest.raises(ParityError, match=r"at row 23 "):
        check_parity(model, tampered, inputs, batch_size=16)


def test_parity_rejects_mismatched_inputs(tabular: tuple[nn.Module, Path]) -> None:
    model, path = tabular
    inputs = tabular_inputs(5, seed=0)
    with pytest.raises(ValueError, match="graph inputs"):
        check_parity(model, path, {"numeric": inputs["numeric"]})
    with pytest.raises(ValueError, match="same number of rows"):
        check_parity(model, path, {**inputs, "numeric": inputs["numeric"][:3]})
    with pytest.raises(ValueError, match="batch_size"):
        check_parity(model, path, inputs, batch_size=0)


def test_runner_casts_within_kind_and_rejects_lossy_dtypes(
    tabular: tuple[nn.Module, Path],
) -> None:
    _, path = tabular
    inputs = tabular_inputs(6, seed=2)
    runner = OnnxRunner(path)
    widened = {
        "numeric": inputs["numeric"].astype(np.float64),
        "categorical": inputs["categorical"],
    }
    np.testing.assert_allclose(runner.run(widened), runner.run(inputs), atol=0, rtol=0)
    with pytest.raises(TypeError, match="'categorical' must be int64"):
        runner.run({**inputs, "categorical": inputs["categorical"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"missing \['categorical'\]"):
        runner.run({"numeric": inputs["numeric"]})


def test_export_rejects_bad_arguments(tmp_path: Path) -> None:
    model = PixelCNN()
    with pytest.raises(ValueError, match="example_inputs is empty"):
        export_onnx(model, {}, tmp_path / "m.onnx", {})
    with pytest.raises(TypeError, match="JSON-encode"):
        export_onnx(model, {"pixels": torch.zeros(2, 64)}, tmp_path / "m.onnx", {"a": 1})  # type: ignore[dict-item]
    with pytest.raises(FileNotFoundError, match="export it with export_onnx"):
        OnnxRunner(tmp_path / "absent.onnx")


class TwoOutputs(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2, x + 1


def test_export_rejects_models_breaking_the_graph_contract(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exactly one tensor"):
        export_onnx(TwoOutputs(), {"x": torch.zeros(2, 3)}, tmp_path / "two.onnx", {})
    assert not (tmp_path / "two.onnx").exists()
