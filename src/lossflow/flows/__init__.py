"""The Prefect flows (``training``, ``monitoring``, ``ab_analysis``, ``retrain``,
``compare_losses``), their deployments and the local Prefect server: composition roots that call
the use cases (:mod:`lossflow.usecases`) one task each. Only this package, the CLI and the
rehearsal import Prefect."""
