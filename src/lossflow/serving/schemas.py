"""The service's documented request and answer bodies, and how their routes describe them.

``/predict`` and ``/rank`` read their JSON bodies themselves (orjson, a size cap), so FastAPI
does not validate them; their models here only document them, and :func:`records_body_schema`
replaces the generic record in the OpenAPI document with the loaded models' exact features.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lossflow.config.serving import ServingLimits
from lossflow.serving.variants import Deployment

MAX_UNIT_ID: Final = 256
JSON: Final = "application/json"
_FLOAT32_MAX: Final = 3.4028234663852886e38

RecordsField = Literal["records", "items"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Routed(_Body):
    unit_id: str = Field(
        min_length=1,
        max_length=MAX_UNIT_ID,
        description="user, session or device id; the same unit always gets the same variant",
    )


class PredictRequest(_Routed):
    """``POST /predict``: the unit to route and its raw feature records."""

    records: list[dict[str, float | str | None]] = Field(
        min_length=1, description="raw feature records; null is a missing value"
    )


class RankRequest(_Routed):
    """``POST /rank``: the unit to route and the raw feature records of one list's items."""

    items: list[dict[str, float | str | None]] = Field(
        min_length=1, description="raw feature records of the list's items; null is missing"
    )


class RankResponse(BaseModel):
    """``POST /rank``'s answer."""

    request_id: str = Field(description="send it back with POST /feedback (one relevance/item)")
    variant: str
    model_version: str
    loss_id: str
    scores: list[float | None] = Field(
        description="the model's score of each item, in request order; null where the model "
        "gave no finite score (NaN, inf)"
    )
    order: list[int] = Field(
        description="item positions from the highest score down; equal scores keep the request "
        "order; items without a score come last, in request order"
    )


class PredictionOut(BaseModel):
    """One record's answer; fields that do not apply to the model's task are absent."""

    probability: float | None = Field(None, description="binary: P(positive)")
    probabilities: dict[str, float] | None = Field(None, description="multiclass: P(class)")
    label: int | str | None = Field(None, description="binary 0/1 at the threshold; class name")
    class_: str | None = Field(
        None,
        alias="class",
        description="binary with named classes: the class the label stands for (yes, good...)",
    )
    value: float | None = Field(None, description="regression: the predicted value")


class PredictResponse(BaseModel):
    """``POST /predict``'s answer."""

    request_id: str = Field(description="send it back with POST /feedback")
    variant: str
    model_version: str
    loss_id: str
    predictions: list[PredictionOut]


class FeedbackRequest(_Body):
    """``POST /feedback``: the true labels of a request's records, in order."""

    request_id: str = Field(min_length=1, max_length=128)
    labels: list[bool | int | float | str] = Field(
        min_length=1,
        description="binary 0/1, multiclass class name, regression number; one per record",
    )
    ts: AwareDatetime | None = Field(
        None, description="replay_clock services only: when the truth became known"
    )


class FeedbackResponse(BaseModel):
    """Whether the labels were stored now (201) or were already stored (200)."""

    request_id: str
    stored: bool


class TrafficRequest(_Body):
    """``PUT /admin/traffic``: new weights for some or all variants."""

    weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        min_length=1, description="variant -> weight; variants not named keep their weight"
    )
    experiment: str | None = Field(
        None, min_length=1, description="new assignment name (reshuffles every unit)"
    )


class ErrorItem(BaseModel):
    """Where a request was invalid and why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: every item names the field (and record) and the problem."""

    detail: list[ErrorItem]


class ErrorResponse(BaseModel):
    """Any other error: what went wrong and what to do."""

    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entry documenting the error ``codes`` of a route."""
    return {
        code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse} for code in codes
    }


def raw_json_route(request: type[BaseModel], response: type[BaseModel]) -> dict[str, Any]:
    """Route options of an endpoint that reads its JSON body itself (orjson, size cap) but
    documents it as ``request`` and answers ``response`` (or a documented error)."""
    return {
        "response_class": Response,
        "responses": {200: {"model": response}, **errors(413, 422, 503)},
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": request.model_json_schema()}},
            }
        },
    }


def records_body_schema(
    deployment: Deployment, limits: ServingLimits, field: RecordsField = "records"
) -> dict[str, Any]:
    """The /predict (or /rank) body schema with the loaded models' exact record fields."""
    predictor = deployment.predictor
    numeric = set(predictor.preprocessor.numeric_columns)
    number = {"type": "number", "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}
    properties = {
        name: {"anyOf": [number if name in numeric else {"type": "string"}, {"type": "null"}]}
        for name in deployment.features
    }
    return {
        "type": "object",
        "title": "PredictRequest" if field == "records" else "RankRequest",
        "additionalProperties": False,
        "required": ["unit_id", field],
        "properties": {
            "unit_id": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_ID},
            field: {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_records,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": list(deployment.features),
                    "properties": properties,
                },
            },
        },
    }
