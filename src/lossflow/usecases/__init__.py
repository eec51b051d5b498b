"""The use cases: what one flow task (or one CLI command) calls, composed from the domain
packages and the stores.

- :mod:`lossflow.usecases.training`: train, evaluate, export, register a model version;
- :mod:`lossflow.usecases.monitoring`: plan, read and judge a monitoring window, record it;
- :mod:`lossflow.usecases.ab`: resolve, measure and judge an A/B test; act on the aliases under
  the lease; roll back;
- :mod:`lossflow.usecases.retrain`: gate a retrain request, train the candidates from the
  champion's recipe, pre-screen them, register the challenger;
- :mod:`lossflow.usecases.compare`: resolve a comparison's arms into a plan; log its units and
  trials and publish its report to MLflow and disk;
- :mod:`lossflow.usecases.recipe`: fetch a version's recipe, resolve it with overrides.

This layer opens the stores (the prediction log through :func:`lossflow.predlog.open_log`, MLflow
through :mod:`lossflow.tracking`) and may call several domain packages; the domain packages never
import it, nor SQLAlchemy (outside ``predlog``), Prefect or the config loader's YAML
(``tests/unit/test_import_contract.py``).
"""
