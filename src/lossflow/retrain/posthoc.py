"""Post-hoc logit adjustment: a champion corrected for a new label prior, without retraining.

Under pure label-prior shift (``p(x | y)`` unchanged, ``p(y)`` moved from ``pi`` to ``pi'``),
Bayes' rule gives the new posterior from the old logits ``z`` by adding the log-prior ratio:
``z_k + log(pi'_k / pi_k)`` before the softmax, or for a binary sigmoid ``z + log(pi'_1 / pi'_0)
- log(pi_1 / pi_0)`` (Saerens et al. 2002; the post-hoc form of Menon et al. 2021's logit
adjustment). The ONNX graph gets one ``Add`` of that constant in front of its final ``Sigmoid``
or ``Softmax``; its metadata names the new loss decision (``<loss id>+prior-<hash>``). The
decision threshold of a binary model is kept (it was chosen on the old prior's validation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lossflow.contract import ModelMetadata
from lossflow.errors import UserError

OUTPUT = "output"
PROP = "lossflow.posthoc_prior"


class PosthocError(UserError):
    """The model cannot be adjusted; the message says why."""


def prior_shift(reference: Sequence[float], new: Sequence[float], task: str) -> np.ndarray:
    """The constant added to the logits: per class ``log(new / reference)``; binary: one value.

    Raises:
        PosthocError: the priors do not fit the task or are not probabilities.
    """
    ref, nxt = np.asarray(reference, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if ref.shape != nxt.shape or ref.size < 2:
        raise PosthocError(f"priors {list(reference)} and {list(new)} must name the same classes")
    if (ref <= 0).any() or (nxt <= 0).any():
        raise PosthocError("a class with prior 0 cannot be adjusted for (log of 0)")
    ref, nxt = ref / ref.sum(), nxt / nxt.sum()
    per_class: np.ndarray = (np.log(nxt) - np.log(ref)).astype(np.float32)
    if task == "binary":
        if ref.size != 2:
            raise PosthocError(f"a binary model has 2 classes; got priors over {ref.size}")
        binary: np.ndarray = per_class[1:] - per_class[:1]
        return binary
    return per_class


def adjust_onnx(
    source: Path, target: Path, reference: Sequence[float], new: Sequence[float]
) -> ModelMetadata:
    """Write ``source`` with its logits shifted from prior ``reference`` to ``new`` to ``target``.

    Returns:
        The new model's metadata (as written).

    Raises:
        PosthocError: the graph does not end in a Sigmoid/Softmax producing ``output``, or the
            model is not a classifier.
    """
    model = onnx.load_model(source)
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_props(props, str(source))
    if meta.task not in ("binary", "multiclass"):
        raise PosthocError(f"only classifiers have a prior to adjust; this model is {meta.task}")
    shift = prior_shift(reference, new, meta.task)
    final = [n for n in model.graph.node if OUTPUT in n.output]
    if len(final) != 1 or final[0].op_type not in ("Sigmoid", "Softmax"):
        raise PosthocError(
            f"{source}: the graph's {OUTPUT!r} is not made by a final Sigmoid or Softmax; only "
            "lossflow classifiers can be adjusted"
        )
    node = final[0]
    logits = node.input[0]
    constant = "lossflow_prior_shift"
    adjusted = f"{logits}_prior_adjusted"
    model.graph.initializer.append(numpy_helper.from_array(shift, constant))
    position = list(model.graph.node).index(node)
    model.graph.node.insert(position, helper.make_node("Add", [logits, constant], [adjusted]))
    node.input[0] = adjusted
    digest = hashlib.sha256(json.dumps([list(reference), list(new)]).encode()).hexdigest()[:8]
    described = {
        "reference": [float(v) for v in reference],
        "new": [float(v) for v in new],
        "shift": [float(v) for v in shift],
        "from_loss_id": meta.loss_id,
    }
    new_meta = dataclasses.replace(meta, loss_id=f"{meta.loss_id}+prior-{digest}")
    props = {**props, **new_meta.to_props(), PROP: json.dumps(described)}
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, target)
    return new_meta


def adjusted_probabilities(
    probabilities: np.ndarray, reference: Sequence[float], new: Sequence[float]
) -> np.ndarray:
    """What the adjusted graph must output for the original model's ``probabilities``
    (binary: P(positive) per row; multiclass: one row per record), computed without it."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        shift = float(prior_shift(reference, new, "binary")[0])
        clipped = np.clip(p, 1e-12, 1 - 1e-12)
        logit = np.log(clipped) - np.log1p(-clipped) + shift
        return np.asarray(1.0 / (1.0 + np.exp(-logit)))
    shift_k = prior_shift(reference, new, "multiclass").astype(np.float64)
    weighted = p * np.exp(shift_k)
    return np.asarray(weighted / weighted.sum(axis=1, keepdims=True))
