"""A/B analysis of loss variants on live traffic: per-unit outcomes from the prediction log,
the sample-ratio gate, anytime-valid comparisons with guardrails, and promotion by alias.

- :mod:`lossflow.ab.metrics`: per variant and unit, the primary metric and the guardrails;
- :mod:`lossflow.ab.decision`: the pure decision (promote, reject, continue, invalid);
- :mod:`lossflow.ab.steps`: the test as the service runs it (variants, versions, weights,
  window) and the analysis;
- :mod:`lossflow.ab.promotion`: alias moves under a lease, compare-and-set, dry runs, rollback;
- :mod:`lossflow.ab.record`: the audit run in ``lossflow-ab`` and the version tags.
"""
