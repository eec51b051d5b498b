"""Retraining on a monitoring decision, where the loss itself may change.

- :mod:`lossflow.retrain.request`: the ``lossflow.retrain.requested`` payload;
- :mod:`lossflow.retrain.data`: the pool (history and the log's labelled rows, by policy) and
  the evidence window's rows;
- :mod:`lossflow.retrain.posthoc`: the champion's logits adjusted for a new label prior;
- :mod:`lossflow.retrain.prescreen`: candidates against the champion, paired per unit.

What the ``retrain`` flow's tasks call is :mod:`lossflow.usecases.retrain`.
"""
