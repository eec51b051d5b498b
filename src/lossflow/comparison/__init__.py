"""Offline comparison of losses: the same cross-validation folds for every arm, a corrected
paired test between arms, ablations, hyper-parameter search over losses, loss landscapes,
robustness by slice and by later month, permutation importances, one report.

- ``plan``: arms (and ablation variants) resolved into training configurations;
- ``scoring``: fold scores, which way each metric is better, convergence speed;
- ``cv``: the folds on disk and the arm x fold trainings (``parallel`` runs them in processes);
- ``summary``: intervals, pairwise tests with Holm's correction, the verdict;
- ``hpo``: the Optuna study (the only module importing optuna);
- ``landscape``, ``slices``, ``importance``: what each trained model is inspected for;
- ``plots`` and ``report``: figures, the HTML report and what goes to MLflow.
"""
