"""A/B analysis of loss variants on live traffic: per-unit outcomes from the prediction log,
the sample-ratio gate, anytime-valid comparisons with guardrails, and promotion by alias.

- :mod:`lossflow.ab.metrics`: per variant and unit, the primary metric and the guardrails;
- :mod:`lossflow.ab.decision`: the pure decision (promote, reject, continue, invalid);
- :mod:`lossflow.ab.setup`: the test as the service runs it (arms, versions, weights, window);
- :mod:`lossflow.ab.promotion`: the alias moves a decision calls for, compare-and-set;
- :mod:`lossflow.ab.record`: the audit run in ``lossflow-ab`` and the version tags.
"""
