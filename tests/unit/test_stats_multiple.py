"""Holm and Benjamini–Hochberg against statsmodels' ``multipletests``, and their error rates."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from lossflow.stats.multiple import benjamini_hochberg, holm


def _p_lists() -> list[list[float]]:
    """300 seeded families of 1-40 p-values, with ties, zeros, ones and values near alpha."""
    rng = np.random.default_rng(3)
    lists = [[0.0], [1.0], [0.05, 0.05, 0.05], [0.0, 1.0, 0.5, 0.5], [0.01] * 40]
    for _ in range(295):
        p = rng.uniform(size=int(rng.integers(1, 41)))
        p[rng.random(p.size) < 0.1] = rng.choice([0.0, 1.0, 0.01, 0.05])  # ties and edges
        lists.append(p.tolist())
    return lists


def _holm_by_hand(p: list[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down, written out: the i-th smallest p times (m - i), running maximum."""
    values = np.asarray(p, dtype=float)
    order = np.argsort(values, kind="stable")
    m = values.size
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * values[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted <= alpha, adjusted


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_holm_and_bh_equal_statsmodels(alpha: float) -> None:
    # statsmodels' Holm takes 70 ms a call here, and over a second under the full suite's load
    # (its BH 70 us): it checks the 5 edge families and one more; the step-down written out checks
    # all 300.
    for i, p in enumerate(_p_lists()):
        expected_holm = _holm_by_hand(p, alpha)
        np.testing.assert_allclose(holm(p, alpha)[1], expected_holm[1], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(holm(p, alpha)[0], expected_holm[0], err_msg=str(p))
        for ours, method in ((holm, "holm"), (benjamini_hochberg, "fdr_bh")):
            if method == "holm" and i >= 6:
                continue
            rejected, adjusted = ours(p, alpha)
            expected_rejected, expected_adjusted, _, _ = multipletests(
                p, alpha=alpha, method=method
            )
            np.testing.assert_allclose(adjusted, expected_adjusted, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(rejected, expected_rejected, err_msg=str(p))


def test_error_rates_hold_in_simulation() -> None:
    # 2,000 families of 20 tests, 5 of them false nulls (p ~ Beta(0.1, 1)): Holm's family-wise
    # error and BH's false discovery proportion stay at or below alpha = 0.05 (binomial 3-sigma
    # margin of 0.015 at 2,000 families).
    rng = np.random.default_rng(7)
    families, alpha = 2000, 0.05
    any_false, fdp = 0, []
    for _ in range(families):
        p = np.concatenate([rng.uniform(size=15), rng.beta(0.1, 1.0, size=5)])
        holm_rejected, _ = holm(p, alpha)
        any_false += bool(holm_rejected[:15].any())
        bh_rejected, _ = benjamini_hochberg(p, alpha)
        fdp.append(bh_rejected[:15].sum() / max(int(bh_rejected.sum()), 1))
    assert any_false / families <= alpha + 0.015
    assert float(np.mean(fdp)) <= alpha + 0.015


@pytest.mark.parametrize("bad", [[0.1, 1.2], [-0.1], [float("nan")], [[0.1]]])
def test_invalid_p_values_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="p_values"):
        holm(bad)


def test_alpha_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="alpha"):
        benjamini_hochberg([0.1], alpha=1.5)
    assert holm([], 0.05)[0].size == 0
