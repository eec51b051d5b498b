"""Offline comparison of losses: the same cross-validation folds for every arm, a corrected
paired test between arms, ablations, hyper-parameter search over losses, loss landscapes,
robustness by slice and by later month, permutation importances, one report.

- ``plan``: the arms (and ablation variants) and the checks before training;
- ``scoring``: fold scores, which way each metric is better, convergence speed;
- ``cv``: the folds on disk and the arm x fold trainings (``parallel`` runs them in processes);
- ``summary``: intervals, pairwise tests with Holm's correction, the verdict;
- ``search``: the search space, the study's plan and a trial's configuration;
  ``optuna_study``: the Optuna adapter (the only module importing optuna), tickets included;
  ``hpo_worker``: the workers that train trials; ``results``: the trials, best, sensitivities;
- ``landscape``, ``slices``, ``importance``: what each trained model is inspected for;
- ``plots``, ``report`` (tables, figures, JSON) and ``html`` (the page).

Resolving the arms from the configuration files or a recipe, and publishing the report to MLflow
and disk, are use cases: :mod:`lossflow.usecases.compare`.
"""
