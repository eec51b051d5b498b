"""Ranking data: the movielens and modechoice sources, lists per group (kept, cut, padded), the
ranking checks of ``validate_frame``, and the ranking metrics against scikit-learn."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from lossflow.config.data import ColumnSchema, DataConfig, ListConfig
from lossflow.data.lists import gather, item_popularity, keep_lists, padded_index
from lossflow.data.sources import load_modechoice, load_movielens, movielens_columns
from lossflow.data.validation import (
    DataValidationError,
    check_groups_within_parts,
    validate_frame,
)
from lossflow.evaluation.metrics import per_query_ndcg, ranking_metrics

COLUMNS = ColumnSchema(numeric=["x"], categorical=[], target="rel", group="q", item="doc")


def _lists_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "q": ["a", "a", "b", "c", "c", "c", "c", "c", "d", "d"],
            "doc": list("uvuuvwxyuv"),
            "x": np.arange(10.0),
            "rel": [1.0, 0.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.0, 0.0],
        }
    )


def test_keep_lists_drops_short_and_irrelevant_lists_and_cuts_long_ones() -> None:
    frame = _lists_frame()
    first = keep_lists(frame, COLUMNS, ListConfig(max_items=3, long_lists="first"), 0, "train")
    # b has one item, d no relevant one: dropped; c keeps its first 3 items in data order.
    assert first["q"].tolist() == ["a", "a", "c", "c", "c"]
    assert first["x"].tolist() == [0.0, 1.0, 3.0, 4.0, 5.0]
    sample = keep_lists(frame, COLUMNS, ListConfig(max_items=3), 7, "train")
    c_rows = sample.loc[sample["q"] == "c", "x"].to_numpy()
    assert len(c_rows) == 3
    assert set(c_rows) <= {3.0, 4.0, 5.0, 6.0, 7.0}
    assert np.all(np.diff(c_rows) > 0), "a sample keeps the data order"
    again = keep_lists(frame, COLUMNS, ListConfig(max_items=3), 7, "train")
    assert again.equals(sample), "the sample is seeded"


def test_padded_index_and_gather_build_masked_lists() -> None:
    index, mask = padded_index([0, 0, 1, 0])
    assert index.tolist() == [[0, 1, 3], [2, -1, -1]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    values = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert gather(values, index, np.nan)[..., 0].tolist()[0] == [1.0, 2.0, 4.0]
    assert np.isnan(gather(values, index, np.nan)[1, 1:, 0]).all()


def test_item_popularity_is_the_mean_training_relevance() -> None:
    assert item_popularity(_lists_frame(), "doc", "rel") == pytest.approx(
        {"u": 0.75, "v": 1 / 3, "w": 2.0, "x": 0.0, "y": 1.0}
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(rel=f["rel"].where(f.index != 2, -1.0)), "is negative in 1 row"),
        (lambda f: f[f["q"] != "d"], "1 group\\(s\\) have a single item \\('b'\\)"),
        (lambda f: f[f["q"] != "b"], "1 group\\(s\\) have no relevant item .*'d'"),
    ],
)
def test_ranking_data_errors_name_what_is_wrong(change: object, message: str) -> None:
    frame = change(_lists_frame())  # type: ignore[operator]
    with pytest.raises(DataValidationError, match=message):
        validate_frame(frame, COLUMNS, "ranking")


def test_missing_relevance_is_refused() -> None:
    frame = _lists_frame().assign(rel=lambda f: f["rel"].where(f.index != 0, np.nan))
    with pytest.raises(DataValidationError, match="target column 'rel' is missing in 1 row"):
        validate_frame(frame, COLUMNS, "ranking")


def test_a_group_in_two_parts_is_refused() -> None:
    frame = _lists_frame()
    with pytest.raises(DataValidationError, match="group 'c' of column 'q' is in both the train"):
        check_groups_within_parts({"train": frame.iloc[:5], "test": frame.iloc[5:]}, "q")


def test_csv_with_a_group_column_reads_as_ranking_data(tmp_path: Path) -> None:
    path = tmp_path / "lists.csv"
    _lists_frame().query("q in ['a', 'c']").to_csv(path, index=False)
    cfg = DataConfig.model_validate(
        {"source": "csv", "task": "ranking", "path": path, "columns": COLUMNS.model_dump(),
         "split": {"kind": "random"}}
    )  # fmt: skip
    from lossflow.data.sources import load_frame

    frame = load_frame(cfg)
    validate_frame(frame, COLUMNS, "ranking")
    assert frame["q"].tolist()[:2] == ["a", "a"]


def test_modechoice_is_210_choice_sets_of_four_modes() -> None:
    frame = load_modechoice()
    sizes = frame.groupby("traveller").size()
    assert len(sizes) == 210
    assert set(sizes) == {4}
    assert frame.groupby("traveller")["choice"].sum().eq(1).all()
    assert set(frame["mode"]) == {"air", "train", "bus", "car"}


def test_movielens_statistics_come_from_the_training_period_only() -> None:
    train_end = date(2013, 1, 1)
    frame = load_movielens(train_end)
    validate_frame(frame, movielens_columns(), "ranking")
    assert frame["user"].nunique() == 671
    assert len(frame) == 100_004
    before = frame["rated_at"] < pd.Timestamp(train_end)
    movie = frame.loc[~before, "movie"].value_counts().index[0]
    rows = frame["movie"] == movie
    train_ratings = frame.loc[rows & before, "rating"]
    # A later row sees the mean of all training ratings; a training row leaves its own out.
    later = frame.loc[rows & ~before, "movie_mean"]
    assert later.to_numpy() == pytest.approx(train_ratings.mean())
    assert np.expm1(frame.loc[rows & ~before, "movie_count"]).to_numpy() == pytest.approx(
        len(train_ratings)
    )
    first_train = frame.loc[rows & before].iloc[0]
    loo = (train_ratings.sum() - first_train["rating"]) / (len(train_ratings) - 1)
    assert first_train["movie_mean"] == pytest.approx(loo)


# --- metrics against scikit-learn -----------------------------------------------------------


def _random_lists(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    relevance = rng.integers(0, 4, size=(20, 12)).astype(float)
    scores = rng.normal(size=(20, 12)).round(1)  # some ties
    lengths = rng.integers(2, 13, size=20)
    mask = np.arange(12)[None, :] < lengths[:, None]
    relevance[~mask], scores[~mask] = 3.0, 50.0  # junk in the padding
    return relevance, scores, mask


def test_ranking_metrics_match_sklearn_per_query() -> None:
    relevance, scores, mask = _random_lists(5)
    got = ranking_metrics(relevance, scores, mask, ks=(5, 10), relevant_at=2.0)
    ndcg: dict[int, list[float]] = {5: [], 10: []}
    ap, pairs_ok = [], []
    for q in range(len(relevance)):
        rel, sc = relevance[q, mask[q]], scores[q, mask[q]]
        for k in ndcg:
            ndcg[k].append(ndcg_score(rel[None], sc[None], k=k))
        relevant = rel >= 2.0
        if relevant.any():
            # sklearn breaks no ties; with tied scores it averages, so compare on a stable order
            order = np.argsort(-sc, kind="stable")
            ranks = np.empty(len(sc))
            ranks[order] = -np.arange(len(sc))
            ap.append(average_precision_score(relevant, ranks))
        else:
            ap.append(0.0)
        wins = [
            1.0 if sc[i] > sc[j] else 0.5 if sc[i] == sc[j] else 0.0
            for i in range(len(rel))
            for j in range(len(rel))
            if rel[i] > rel[j]
        ]
        if wins:
            pairs_ok.append(np.mean(wins))
    for k, values in ndcg.items():
        assert got[f"ndcg_{k}"] == pytest.approx(np.mean(values), rel=1e-12)
    assert got["map"] == pytest.approx(np.mean(ap), rel=1e-12)
    assert got["pairwise_accuracy"] == pytest.approx(np.mean(pairs_ok), rel=1e-12)
    per_query = per_query_ndcg(relevance, scores, mask, k=10)
    assert per_query == pytest.approx(ndcg[10], rel=1e-12)


# --- A/B: NDCG per unit ---------------------------------------------------------------------


def test_ab_outcome_of_ranked_lists_is_ndcg_per_unit() -> None:
    from datetime import UTC, datetime

    from lossflow.ab.metrics import HIGHER_IS_BETTER, variant_metrics
    from lossflow.predlog.reader import OutcomeChunk

    def listed(scores: list[float]) -> list[dict[str, float]]:
        return [{"score": s, "rank": 0} for s in scores]

    lists = [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.5, 0.1]]
    relevance = [[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 4.0]]
    chunk = OutcomeChunk(
        unit_id=["u1", "u1", "u2", "u3"],
        variant=["champion"] * 4,
        ts=[datetime(2026, 1, 1, tzinfo=UTC)] * 4,
        latency_ms=np.ones(4),
        outputs=[listed(lists[0]), listed(lists[1]), listed(lists[2]), listed([1.0, 0.0])],
        labels=[relevance[0], relevance[1], relevance[2], None],
    )
    got = variant_metrics([chunk], "ndcg_10")["champion"]
    ndcg = [ndcg_score([r], [s], k=10) for r, s in zip(relevance, lists, strict=True)]
    assert sorted(got.outcome.tolist()) == pytest.approx(sorted([np.mean(ndcg[:2]), ndcg[2]]))
    assert got.labelled_units == 2
    assert "ndcg_10" in HIGHER_IS_BETTER
    with pytest.raises(ValueError, match="does not apply to ranked lists"):
        variant_metrics([chunk], "mse")
