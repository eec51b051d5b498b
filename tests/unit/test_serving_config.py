"""The service's configuration (``load_serving_config``) and its deployment snapshots, with tiny
hand-made lossflow ONNX models (no registry, no training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from lossflow.config import ConfigError, ModelSource, ServingConfig, load_serving_config
from lossflow.data.preprocessing import Preprocessor
from lossflow.serving.router import Router, TrafficSplit
from lossflow.serving.variants import Deployment, ModelLoadError, VariantLoader, file_version

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


# --- load_serving_config ---------------------------------------------------------------------


def test_defaults_come_from_default_yaml_and_base_yaml() -> None:
    assert (CONFIG_DIR / "serving" / "default.yaml").is_file()
    cfg = load_serving_config([], CONFIG_DIR)
    # data_dir and tracking are inherited from base.yaml
    assert cfg.data_dir == Path("data")
    assert cfg.tracking.experiment == "lossflow-flights"
    assert cfg.tracking.registered_model == "lossflow-flights"
    # the rest is serving/default.yaml
    assert cfg.experiment == "loss-ab"
    assert cfg.variants == {}
    assert cfg.shadow is None
    assert cfg.log.enabled is True
    assert cfg.log.url is None
    assert (cfg.log.max_batch, cfg.log.max_delay_s, cfg.log.max_queue) == (256, 0.05, 100_000)
    assert (cfg.limits.max_body_bytes, cfg.limits.max_records) == (1_048_576, 1000)
    assert cfg.admin_token_env == "LOSSFLOW_ADMIN_TOKEN"
    assert (cfg.host, cfg.port, cfg.access_log) == ("127.0.0.1", 8000, False)


def test_dotted_overrides_set_any_key() -> None:
    cfg = load_serving_config(
        [
            "data_dir=/srv/lossflow",
            "port=8001",
            "log.url=sqlite:////srv/lossflow/p.db",
            "log.max_delay_s=0.2",
            "limits.max_records=5",
            "variants.champion.alias=champion",
            "variants.champion.weight=90",
            "variants.candidate.version='7'",
            "variants.candidate.weight=10",
            "variants.local.path=/models/m.onnx",
            "variants.local.weight=0",
            "tracking.registered_model=other-model",
        ],
        CONFIG_DIR,
    )
    assert cfg.data_dir == Path("/srv/lossflow")
    assert cfg.port == 8001
    assert cfg.log.url == "sqlite:////srv/lossflow/p.db"
    assert cfg.log.max_delay_s == 0.2
    assert cfg.limits.max_records == 5
    assert cfg.tracking.registered_model == "other-model"
    assert cfg.tracking.experiment == "lossflow-flights"  # the rest of the section is kept
    assert {n: (v.describe(), v.weight) for n, v in cfg.variants.items()} == {
        "champion": ("alias:champion", 90.0),
        "candidate": ("version:7", 10.0),
        "local": ("path:/models/m.onnx", 0.0),
    }


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the project's configs to add serving files to."""
    return Path(shutil.copytree(CONFIG_DIR, tmp_path / "configs"))


def test_serving_picks_another_file(config_dir: Path) -> None:
    (config_dir / "serving" / "canary.yaml").write_text(
        "experiment: canary-1\n"
        "variants:\n"
        "  champion: {alias: champion, weight: 95}\n"
        "  canary: {version: '4', weight: 5}\n"
        "shadow: {alias: candidate}\n"
        "port: 9000\n"
    )
    cfg = load_serving_config(["serving=canary", "variants.canary.weight=10"], config_dir)
    assert cfg.experiment == "canary-1"
    assert cfg.port == 9000
    assert cfg.variants["champion"].weight == 95.0
    assert cfg.variants["canary"].version == "4"
    assert cfg.variants["canary"].weight == 10.0  # the command line wins over the file
    assert cfg.shadow == ModelSource(alias="candidate")
    assert cfg.log.max_batch == 256  # keys the file does not set keep their defaults
    assert cfg.tracking.registered_model == "lossflow-flights"  # still from base.yaml


def test_an_unknown_serving_file_lists_the_available_ones(config_dir: Path) -> None:
    (config_dir / "serving" / "canary.yaml").write_text("port: 9000\n")
    with pytest.raises(ConfigError, match=r"no serving config named 'nope'.*canary, default"):
        load_serving_config(["serving=nope"], config_dir)


def test_errors_in_a_file_name_the_file_and_the_key(config_dir: Path) -> None:
    path = config_dir / "serving" / "broken.yaml"
    path.write_text("colour: blue\nvariants:\n  a: {alias: champion, path: /m.onnx}\n")
    with pytest.raises(ConfigError) as caught:
        load_serving_config(["serving=broken"], config_dir)
    message = str(caught.value)
    assert f"{path}: colour: unknown key; valid keys here: access_log, admin_token_env" in message
    assert f"{path}: variants.a: give exactly one of alias, version or path" in message


def test_a_missing_base_config_says_where_to_run_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no base config at"):
        load_serving_config([], tmp_path)


@pytest.mark.parametrize("item", ["loss=focal", "data=flights"])
def test_training_groups_are_rejected_on_the_serve_command_line(item: str) -> None:
    with pytest.raises(
        ConfigError, match=r"command line: '.*' chooses a file of .*another command"
    ):
        load_serving_config([item], CONFIG_DIR)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["colour=blue"], "command line: colour: unknown key"),
        (["log.colour=blue"], "command line: log.colour: unknown key; valid keys here: db_schema"),
        (
            ["variants.a.alias=champion", "variants.a.path=/m.onnx"],
            "variants.a: give exactly one of alias, version or path (got alias, path)",
        ),
        (
            ["variants.a.weight=10"],
            "variants.a: give exactly one of alias, version or path (got none)",
        ),
        (
            ["variants.a.alias=champion", "variants.a.weight=-1"],
            "command line: variants.a.weight: Input should be greater than or equal to 0",
        ),
        (
            ["variants.a.alias=champion", "variants.a.weight=lots"],
            "command line: variants.a.weight: Input should be a valid number",
        ),
        (
            ["variants.a.alias=champion", "variants.a.weight=.inf"],
            "command line: variants.a.weight: Input should be a finite number",
        ),
        (
            ["variants.a.alias=champion", "variants.a.weight=0"],
            "at least one variant needs a positive weight",
        ),
        (
            ["variants.a.version=v3"],
            "variants.a: version must be a registry version number; got 'v3'",
        ),
        (["variants.shadow.alias=champion"], "variant name 'shadow' must be letters, digits"),
        (["variants.a b.alias=champion"], "variant name 'a b' must be letters, digits"),
        (["port=70000"], "command line: port: Input should be less than or equal to 65535"),
        (["limits.max_body_bytes=100"], "command line: limits.max_body_bytes:"),
        (["log.max_queue=0"], "command line: log.max_queue:"),
        (["port"], "must look like key=value"),
        (["port.number=1"], "cannot set 'port.number': 'port' is a value, not a section"),
    ],
)
def test_invalid_values_name_the_key_and_the_command_line(
    overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_serving_config(overrides, CONFIG_DIR)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["variants.a.alias=champion", "variants.a.path=/m.onnx"],
        ["variants.a.weight=10"],
        ["variants.a.version=v3"],
    ],
)
def test_errors_of_a_variant_given_on_the_command_line_blame_the_command_line(
    overrides: list[str],
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_serving_config(overrides, CONFIG_DIR)
    assert "command line: variants.a: " in str(caught.value)
    assert "default.yaml" not in str(caught.value)


def test_the_ab_experiment_can_be_renamed_on_the_command_line() -> None:
    cfg = load_serving_config(["experiment=loss-ab-2"], CONFIG_DIR)
    assert cfg.experiment == "loss-ab-2"


def test_an_unquoted_registry_version_is_accepted() -> None:
    cfg = load_serving_config(["variants.a.version=3"], CONFIG_DIR)
    assert cfg.variants["a"].version == "3"


def test_the_shadow_can_be_set_with_a_dotted_key() -> None:
    cfg = load_serving_config(["shadow.path=/models/shadow.onnx"], CONFIG_DIR)
    assert cfg.shadow == ModelSource(path=Path("/models/shadow.onnx"))


def test_the_shadow_can_be_set_as_a_mapping() -> None:
    cfg = load_serving_config(["shadow={path: /models/shadow.onnx}"], CONFIG_DIR)
    assert cfg.shadow == ModelSource(path=Path("/models/shadow.onnx"))


# --- ModelSource and ServingConfig rules -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "given"),
    [
        ({}, "none"),
        ({"alias": "champion", "version": "3"}, "alias, version"),
        ({"version": "3", "path": "/m.onnx"}, "version, path"),
        ({"alias": "a", "version": "3", "path": "/m.onnx"}, "alias, version, path"),
    ],
)
def test_a_model_source_has_exactly_one_origin(fields: dict[str, str], given: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"exactly one of alias, version or path \(got {given}\)"
    ):
        ModelSource.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "described"),
    [
        ({"alias": "champion"}, "alias:champion"),
        ({"version": "12"}, "version:12"),
        ({"path": "/models/m.onnx"}, "path:/models/m.onnx"),
    ],
)
def test_a_model_source_describes_its_origin(fields: dict[str, str], described: str) -> None:
    assert ModelSource.model_validate(fields).describe() == described


@pytest.mark.parametrize("version", ["v3", "3.1", "-1", "", "latest"])
def test_a_registry_version_is_digits(version: str) -> None:
    with pytest.raises(ValidationError, match="version must be a registry version number"):
        ModelSource(version=version)


def test_a_model_source_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelSource.model_validate({"alias": "champion", "stage": "Production"})


@pytest.mark.parametrize("name", ["champion", "challenger", "loss-ab_2", "A1"])
def test_valid_variant_names(name: str) -> None:
    cfg = ServingConfig.model_validate({"variants": {name: {"alias": "champion"}}})
    assert list(cfg.variants) == [name]


@pytest.mark.parametrize("name", ["shadow", "", "a b", "a.b", "a/b", "é-ok?"])
def test_invalid_variant_names(name: str) -> None:
    with pytest.raises(
        ValidationError, match="must be letters, digits, '-' or '_' and not 'shadow'"
    ):
        ServingConfig.model_validate({"variants": {name: {"alias": "champion"}}})


def test_all_zero_weights_are_rejected() -> None:
    variants = {"a": {"alias": "champion", "weight": 0}, "b": {"alias": "challenger", "weight": 0}}
    with pytest.raises(ValidationError, match="at least one variant needs a positive weight"):
        ServingConfig.model_validate({"variants": variants})


def test_a_zero_weight_is_allowed_next_to_a_positive_one() -> None:
    variants = {"a": {"alias": "champion", "weight": 0}, "b": {"alias": "challenger"}}
    cfg = ServingConfig.model_validate({"variants": variants})
    assert {n: v.weight for n, v in cfg.variants.items()} == {"a": 0.0, "b": 50.0}


def test_the_serving_config_is_frozen() -> None:
    cfg = ServingConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.port = 1  # type: ignore[misc]


# --- deployments of tiny hand-made lossflow models -------------------------------------------


def _tiny_model(
    path: Path,
    features: tuple[str, ...] = ("x", "y"),
    task: str = "binary",
    loss_id: str = "bce-000000000000",
    weight: float = 0.5,
) -> Path:
    """A real lossflow ONNX file: numeric features -> weighted sum (-> sigmoid for binary)."""
    n = len(features)
    pre = Preprocessor(
        numeric_columns=features,
        categorical_columns=(),
        target="t",
        task=task,  # type: ignore[arg-type]
        impute="median",
        fill=[0.0] * n,
        mean=[0.0] * n,
        std=[1.0] * n,
        vocabularies={},
    )
    head = "Sigmoid" if task == "binary" else "Identity"
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["numeric", "w"], ["z"]),
            helper.make_node("Squeeze", ["z", "axes"], ["s"]),
            helper.make_node(head, ["s"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(np.full((n, 1), weight, dtype=np.float32), "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "lossflow.loss_id": loss_id,
            "lossflow.task": task,
            "lossflow.preprocessor": json.dumps(pre.to_dict()),
            "lossflow.threshold": "0.5" if task == "binary" else "null",
            "lossflow.label_names": "null",
        },
    )
    onnx.checker.check_model(model)
    onnx.save_model(model, path)
    return path


def _loader(tmp_path: Path, *overrides: str) -> VariantLoader:
    return VariantLoader(load_serving_config([f"data_dir={tmp_path}", *overrides], CONFIG_DIR))


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    """Two binary models on the same features with different losses, and misfits."""
    return {
        "a": _tiny_model(tmp_path / "a.onnx", loss_id="focal-aaaaaaaaaaaa", weight=0.5),
        "b": _tiny_model(tmp_path / "b.onnx", loss_id="bce-bbbbbbbbbbbb", weight=-0.5),
        "other_features": _tiny_model(tmp_path / "xz.onnx", features=("x", "z")),
        "regression": _tiny_model(tmp_path / "r.onnx", task="regression", loss_id="mse-1"),
    }


def test_local_files_make_a_deployment(tmp_path: Path, models: dict[str, Path]) -> None:
    loader = _loader(
        tmp_path,
        f"variants.a.path={models['a']}",
        "variants.a.weight=3",
        f"variants.b.path={models['b']}",
        "variants.b.weight=1",
        f"shadow={{path: {models['b']}}}",
    )
    deployment = loader.deployment()
    assert deployment.features == ("x", "y")
    assert deployment.task == "binary"
    assert deployment.weights == {"a": 3.0, "b": 1.0}
    assert deployment.versions == {
        "a": file_version(models["a"]),
        "b": file_version(models["b"]),
        "shadow": file_version(models["b"]),
    }
    assert file_version(models["a"]).startswith("file-")
    assert len(file_version(models["a"])) == len("file-") + 12
    assert deployment.describe() == {
        "experiment": "loss-ab",
        "task": "binary",
        "features": ["x", "y"],
        "variants": {
            "a": {
                "model_version": file_version(models["a"]),
                "loss_id": "focal-aaaaaaaaaaaa",
                "source": f"path:{models['a']}",
                "weight": 3.0,
                "share": 0.75,
            },
            "b": {
                "model_version": file_version(models["b"]),
                "loss_id": "bce-bbbbbbbbbbbb",
                "source": f"path:{models['b']}",
                "weight": 1.0,
                "share": 0.25,
            },
        },
        "shadow": {
            "model_version": file_version(models["b"]),
            "loss_id": "bce-bbbbbbbbbbbb",
            "source": f"path:{models['b']}",
        },
    }
    # The models are real: sigmoid(0.5 * (1 + 1)) and sigmoid(-0.5 * (1 + 1)).
    [a] = deployment.variants["a"].predictor.predict([{"x": 1.0, "y": 1.0}])
    [b] = deployment.variants["b"].predictor.predict([{"x": 1.0, "y": 1.0}])
    assert a.probability == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6)
    assert (a.label, b.label) == (1, 0)
    # Local files only: no tracking store was opened.
    assert not (tmp_path / "mlflow.db").exists()


def test_reload_keeps_weights_only_for_the_same_variants(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    loader = _loader(tmp_path, f"variants.a.path={models['a']}", f"variants.b.path={models['b']}")
    assert loader.deployment().weights == {"a": 50.0, "b": 50.0}
    assert loader.deployment({"a": 100.0, "b": 0.0}).weights == {"a": 100.0, "b": 0.0}
    # weights of another set of variants (e.g. before a challenger disappeared) do not apply
    assert loader.deployment({"a": 100.0}).weights == {"a": 50.0, "b": 50.0}
    assert loader.deployment({"a": 1.0, "c": 1.0}).weights == {"a": 50.0, "b": 50.0}


def test_with_split_keeps_the_models(tmp_path: Path, models: dict[str, Path]) -> None:
    loader = _loader(
        tmp_path,
        f"variants.a.path={models['a']}",
        f"variants.b.path={models['b']}",
        f"shadow={{path: {models['b']}}}",
    )
    before = loader.deployment()
    after = before.with_split(TrafficSplit("exp-2", {"a": 1.0, "b": 0.0}))
    assert after.variants is before.variants
    assert after.shadow is before.shadow
    assert after.describe()["experiment"] == "exp-2"
    assert {after.router.assign(f"u{i}") for i in range(50)} == {"a"}
    assert before.weights == {"a": 50.0, "b": 50.0}  # snapshots are never mutated


@pytest.mark.parametrize(
    ("a", "b", "shadow", "message"),
    [
        ("a", "other_features", None, "variant 'b' (path:"),
        ("a", "regression", None, "variant 'b' is a regression model but 'a' is binary"),
        ("a", "b", "other_features", "variant 'shadow' (path:"),
    ],
)
def test_variants_must_take_the_same_records_and_task(
    tmp_path: Path, models: dict[str, Path], a: str, b: str, shadow: str | None, message: str
) -> None:
    overrides = [f"variants.a.path={models[a]}", f"variants.b.path={models[b]}"]
    if shadow is not None:
        overrides.append(f"shadow={{path: {models[shadow]}}}")
    with pytest.raises(ModelLoadError) as caught:
        _loader(tmp_path, *overrides).deployment()
    assert message in str(caught.value)
    if "features" in message or "(path:" in message:
        assert "must take the same records" in str(caught.value)


def test_a_missing_file_and_a_foreign_onnx_file_name_the_variant(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ModelLoadError, match=rf"variant 'a': no ONNX file at {missing}"):
        _loader(tmp_path, f"variants.a.path={missing}").deployment()

    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["numeric"], ["output"])],
            "plain",
            [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", 2])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    plain.ir_version = 8
    foreign = tmp_path / "plain.onnx"
    onnx.save_model(plain, foreign)
    with pytest.raises(ModelLoadError, match=rf"variant 'a' \(path:{foreign}\): .*not a lossflow"):
        _loader(tmp_path, f"variants.a.path={foreign}").deployment()


def _variants(tmp_path: Path, models: dict[str, Path]) -> dict[str, Any]:
    loader = _loader(tmp_path, f"variants.a.path={models['a']}", f"variants.b.path={models['b']}")
    return dict(loader.deployment().variants)


def test_a_deployment_needs_variants_and_weights_of_loaded_variants(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    variants = _variants(tmp_path, models)
    with pytest.raises(ModelLoadError, match="needs at least one variant"):
        Deployment({}, Router(TrafficSplit("e", {"a": 1.0})))
    with pytest.raises(ModelLoadError, match="weights name variants that are not loaded"):
        Deployment(variants, Router(TrafficSplit("e", {"a": 1.0, "b": 1.0, "c": 1.0})))


def test_a_variant_without_a_weight_is_rejected_or_described(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    variants = _variants(tmp_path, models)
    try:
        deployment = Deployment(variants, Router(TrafficSplit("e", {"a": 1.0})))
    except ModelLoadError:
        return
    assert deployment.describe()["variants"]["b"]["weight"] == 0.0
