"""Cross-validation folds: the same folds on every call, no fold sees its own test rows, time
folds never see the future, and folds that cannot work are refused before any training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossflow.data.folds import FoldError, check_fold_classes, cv_folds


def _pool(n: int = 400, positives: float = 0.2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "y": (rng.uniform(size=n) < positives).astype(int),
            "t": pd.date_range("2013-01-01", periods=n, freq="h")[rng.permutation(n)],
        }
    )


def test_repeated_stratified_folds_partition_the_pool_and_keep_proportions() -> None:
    pool = _pool()
    folds = cv_folds(
        pool, kind="stratified", folds=5, repeats=2, seed=3, val_fraction=0.2, target="y"
    )
    assert [f.name for f in folds[:6]] == ["r0f0", "r0f1", "r0f2", "r0f3", "r0f4", "r1f0"]
    share = pool["y"].mean()
    for repeat in (0, 1):
        tests = np.concatenate([f.test for f in folds if f.repeat == repeat])
        assert sorted(tests) == list(range(len(pool)))  # each row is scored once per repeat
    for fold in folds:
        fit = np.concatenate([fold.train, fold.val])
        assert not set(fit) & set(fold.test)
        assert len(fit) + len(fold.test) == len(pool)
        assert pool["y"].iloc[fold.test].mean() == pytest.approx(share, abs=0.02)
        assert len(fold.val) == pytest.approx(0.2 * len(fit), abs=1)
    again = cv_folds(
        pool, kind="stratified", folds=5, repeats=2, seed=3, val_fraction=0.2, target="y"
    )
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))
    assert all(np.array_equal(a.val, b.val) for a, b in zip(folds, again, strict=True))
    assert not np.array_equal(folds[0].test, folds[5].test)  # a new shuffle per repeat


def test_forward_chaining_never_trains_on_the_future() -> None:
    pool = _pool()
    folds = cv_folds(
        pool, kind="time", folds=4, repeats=1, seed=0, val_fraction=0.25, target="y", time="t"
    )
    assert len(folds) == 4
    times = pool["t"]
    sizes = [len(f.train) + len(f.val) for f in folds]
    assert sizes == sorted(sizes)  # the training window grows
    for fold in folds:
        fit_end = times.iloc[np.concatenate([fold.train, fold.val])].max()
        assert fit_end < times.iloc[fold.test].min()
        assert times.iloc[fold.train].max() < times.iloc[fold.val].min()  # the latest rows


def test_kfold_is_for_targets_without_classes() -> None:
    pool = _pool().assign(y=np.linspace(0, 1, 400))
    folds = cv_folds(pool, kind="kfold", folds=3, repeats=1, seed=0, val_fraction=0.1, target="y")
    assert sorted(np.concatenate([f.test for f in folds])) == list(range(400))


def test_a_class_rarer_than_the_folds_is_refused_with_what_to_do() -> None:
    pool = _pool(40).assign(y=[1, 1, 1] + [0] * 37)
    with pytest.raises(FoldError, match=r"class 1 of 'y' has 3 rows .* use at most 3 folds"):
        cv_folds(pool, kind="stratified", folds=5, repeats=1, seed=0, val_fraction=0.2, target="y")


def test_a_fold_part_without_a_class_is_named() -> None:
    pool = pd.DataFrame(
        {"y": [0] * 55 + [1] * 5, "t": pd.date_range("2013-01-01", periods=60, freq="D")}
    )  # positives only in the latest rows: the first time fold trains without any
    folds = cv_folds(
        pool, kind="time", folds=2, repeats=1, seed=0, val_fraction=0.2, target="y", time="t"
    )
    with pytest.raises(
        FoldError, match=r"fold r0f0: its train rows \(\d+\) hold no row of class 1"
    ):
        check_fold_classes(pool["y"].to_numpy(), folds, "binary", "y")


def test_too_few_rows_and_too_few_folds() -> None:
    with pytest.raises(FoldError, match="at least 2 folds"):
        cv_folds(_pool(), kind="kfold", folds=1, repeats=1, seed=0, val_fraction=0.1, target="y")
    with pytest.raises(FoldError, match="cannot be cut into 5 folds"):
        cv_folds(_pool(8), kind="kfold", folds=5, repeats=1, seed=0, val_fraction=0.1, target="y")
