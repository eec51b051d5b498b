"""Learning-to-rank losses against independent references.

References: ``F.margin_ranking_loss`` and ``F.binary_cross_entropy_with_logits`` on pairs enumerated
by a Python loop, ``F.cross_entropy`` with probability targets and a scipy softmax for ListNet, and
a plain-Python Plackett-Luce likelihood for ListMLE. Everything is compared in float64, values and
gradients (the losses compute their gradients by hand, so the gradient check matters).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, logsumexp, softmax
from torch import Tensor

from lossflow.losses import LOSS_SPECS, LossConfigError, build_loss, target_checks
from lossflow.losses.ranking import (
    ListMLELoss,
    ListNetLoss,
    MarginRankingLoss,
    RankNetLoss,
    listmle_loss,
    listnet_loss,
    margin_ranking_loss,
    ranknet_loss,
)

Functional = Callable[..., Tensor]
FUNCTIONALS: dict[str, Functional] = {
    "margin_ranking": margin_ranking_loss,
    "ranknet": ranknet_loss,
    "listnet": listnet_loss,
    "listmle": listmle_loss,
}
MODULES: dict[str, type[torch.nn.Module]] = {
    "margin_ranking": MarginRankingLoss,
    "ranknet": RankNetLoss,
    "listnet": ListNetLoss,
    "listmle": ListMLELoss,
}
REDUCTIONS = ("mean", "sum", "none")


def _batch(
    seed: int, q: int = 7, n: int = 6, *, masked: bool = True, scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Scores, relevance with ties (grades 0-3), and a mask with padding and an empty query."""
    gen = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(q, n, generator=gen, dtype=torch.float64)
    relevance = torch.randint(0, 4, (q, n), generator=gen).to(torch.float64)
    relevance[0] = 2.0  # all tied: no pair
    relevance[1] = 0.0  # no positive relevance
    if not masked:
        return scores, relevance, None
    mask = torch.rand(q, n, generator=gen, dtype=torch.float64) > 0.3
    mask[2] = False  # no real item
    mask[3] = True
    return scores, relevance.where(mask, -1.0), mask


def _real(mask: Tensor | None, q: int, n: int) -> Tensor:
    return torch.ones(q, n, dtype=torch.bool) if mask is None else mask


# --- References ------------------------------------------------------------------------------


def _pairs(relevance: Tensor, mask: Tensor | None) -> list[tuple[list[int], list[int]]]:
    """For each query, the items i and j of every pair of real items with rel_i > rel_j."""
    q, n = relevance.shape
    real = _real(mask, q, n)
    out = []
    for row in range(q):
        pairs = [
            (i, j)
            for i in range(n)
            for j in range(n)
            if real[row, i] and real[row, j] and relevance[row, i] > relevance[row, j]
        ]
        out.append(([i for i, _ in pairs], [j for _, j in pairs]))
    return out


def _ref_margin(scores: Tensor, relevance: Tensor, mask: Tensor | None, margin: float) -> Tensor:
    losses = []
    for row, (i, j) in enumerate(_pairs(relevance, mask)):
        if not i:
            losses.append(scores.new_zeros(()))
            continue
        s_i, s_j = scores[row, i], scores[row, j]
        losses.append(F.margin_ranking_loss(s_i, s_j, torch.ones_like(s_i), margin=margin))
    return torch.stack(losses)


def _ref_ranknet(scores: Tensor, relevance: Tensor, mask: Tensor | None, sigma: float) -> Tensor:
    losses = []
    for row, (i, j) in enumerate(_pairs(relevance, mask)):
        if not i:
            losses.append(scores.new_zeros(()))
            continue
        gap = sigma * (scores[row, i] - scores[row, j])
        losses.append(F.binary_cross_entropy_with_logits(gap, torch.ones_like(gap)))
    return torch.stack(losses)


def _ref_listnet_numpy(
    scores: Tensor, relevance: Tensor, mask: Tensor | None, temperature: float
) -> np.ndarray:
    s, r = scores.detach().numpy(), relevance.numpy()
    real = _real(mask, *s.shape).numpy()
    out = np.zeros(s.shape[0])
    for row in range(s.shape[0]):
        keep = real[row]
        if keep.any() and (r[row, keep] > 0).any():
            target = softmax(r[row, keep] / temperature)
            out[row] = -(target * log_softmax(s[row, keep])).sum()
    return out


def _ref_listmle(scores: Tensor, relevance: Tensor, mask: Tensor | None) -> Tensor:
    """Plackett-Luce NLL, one item at a time; ties keep list order (Python's sort is stable)."""
    q, n = scores.shape
    real = _real(mask, q, n)
    losses = []
    for row in range(q):
        items = [i for i in range(n) if real[row, i]]
        if not any(relevance[row, i] > 0 for i in items):
            losses.append(scores.new_zeros(()))
            continue
        order = sorted(items, key=lambda i: -float(relevance[row, i]))
        terms = [
            torch.logsumexp(scores[row, order[t:]], 0) - scores[row, order[t]]
            for t in range(len(order))
        ]
        losses.append(torch.stack(terms).sum())
    return torch.stack(losses)


def _ref_listmle_numpy(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    out = np.zeros(scores.shape[0])
    for row in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: -relevance[row, i])
        ranked = scores[row, order]
        out[row] = sum(logsumexp(ranked[t:]) - ranked[t] for t in range(len(ranked)))
    return out


def _counted_mean(per_query: Tensor, counted: Tensor) -> Tensor:
    return per_query[counted].sum() / max(int(counted.sum()), 1)


def _pair_counted(relevance: Tensor, mask: Tensor | None) -> Tensor:
    return torch.tensor([bool(i) for i, _ in _pairs(relevance, mask)])


def _list_counted(relevance: Tensor, mask: Tensor | None) -> Tensor:
    return ((relevance > 0) & _real(mask, *relevance.shape)).any(1)


def _assert_matches(
    ours: Functional,
    reference: Callable[[Tensor], Tensor],
    counted: Tensor,
    scores: Tensor,
    **options: float,
) -> None:
    """Values for every reduction and the gradient of the sum equal the reference's."""
    leaf = scores.clone().requires_grad_(True)
    expected = reference(leaf)
    torch.testing.assert_close(ours(leaf, reduction="none", **options), expected)
    torch.testing.assert_close(ours(leaf, reduction="sum", **options), expected.sum())
    torch.testing.assert_close(
        ours(leaf, reduction="mean", **options), _counted_mean(expected, counted)
    )
    (want,) = torch.autograd.grad(expected.sum(), leaf)
    (got,) = torch.autograd.grad(ours(leaf, reduction="sum", **options), leaf)
    torch.testing.assert_close(got, want)


# --- Against the references --------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("margin", [0.0, 1.0, 2.5])
def test_margin_ranking_matches_torch_on_enumerated_pairs(masked: bool, margin: float) -> None:
    scores, relevance, mask = _batch(0, masked=masked)
    _assert_matches(
        lambda s, **kw: margin_ranking_loss(s, relevance, mask, **kw),
        lambda s: _ref_margin(s, relevance, mask, margin),
        _pair_counted(relevance, mask),
        scores,
        margin=margin,
    )


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_ranknet_matches_bce_with_logits_on_enumerated_pairs(masked: bool, sigma: float) -> None:
    scores, relevance, mask = _batch(1, masked=masked)
    _assert_matches(
        lambda s, **kw: ranknet_loss(s, relevance, mask, **kw),
        lambda s: _ref_ranknet(s, relevance, mask, sigma),
        _pair_counted(relevance, mask),
        scores,
        sigma=sigma,
    )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_listnet_matches_cross_entropy_with_probability_targets(temperature: float) -> None:
    scores, relevance, _ = _batch(2, masked=False)
    counted = _list_counted(relevance, None)

    def reference(s: Tensor) -> Tensor:
        target = torch.softmax(relevance / temperature, dim=1)
        return F.cross_entropy(s, target, reduction="none").where(counted, 0.0)

    _assert_matches(
        lambda s, **kw: listnet_loss(s, relevance, **kw),
        reference,
        counted,
        scores,
        temperature=temperature,
    )


@pytest.mark.parametrize("temperature", [0.25, 1.0, 3.0])
def test_listnet_masked_matches_scipy(temperature: float) -> None:
    scores, relevance, mask = _batch(3)
    got = listnet_loss(scores, relevance, mask, temperature, reduction="none")
    expected = _ref_listnet_numpy(scores, relevance, mask, temperature)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    counted = _list_counted(relevance, mask)
    mean = listnet_loss(scores, relevance, mask, temperature)
    assert mean.item() == pytest.approx(expected[counted.numpy()].mean(), rel=1e-12)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
def test_listmle_matches_plain_python_plackett_luce(masked: bool) -> None:
    scores, relevance, mask = _batch(4, masked=masked)
    _assert_matches(
        lambda s, **kw: listmle_loss(s, relevance, mask, **kw),
        lambda s: _ref_listmle(s, relevance, mask),
        _list_counted(relevance, mask),
        scores,
    )


def test_listmle_matches_numpy_for_wide_and_narrow_lists_in_both_precisions() -> None:
    # Lists whose scores span thousands need the exact path; the others use one shift per list.
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(6, 9)) * np.array([[1.0], [3e3], [1.0], [80.0], [1e4], [0.1]])
    relevance = rng.integers(0, 4, size=(6, 9)).astype(np.float64)
    relevance[:, 0] = 3.0
    expected = _ref_listmle_numpy(scores, relevance)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        got = listmle_loss(
            torch.tensor(scores, dtype=dtype),
            torch.tensor(relevance, dtype=dtype),
            reduction="none",
        )
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("scale", [300.0, 1e4])
def test_all_losses_match_references_at_huge_score_gaps(scale: float) -> None:
    scores, relevance, mask = _batch(6, scale=scale)
    references: dict[str, Callable[[Tensor], Tensor]] = {
        "margin_ranking": lambda s: _ref_margin(s, relevance, mask, 1.0),
        "ranknet": lambda s: _ref_ranknet(s, relevance, mask, 1.0),
        "listnet": lambda s: torch.from_numpy(_ref_listnet_numpy(s, relevance, mask, 1.0)),
        "listmle": lambda s: _ref_listmle(s, relevance, mask),
    }
    for name, reference in references.items():
        got = FUNCTIONALS[name](scores, relevance, mask, reduction="none")
        torch.testing.assert_close(got, reference(scores), msg=name)


# --- Semantics ---------------------------------------------------------------------------------


def test_mean_is_over_queries_that_count_and_none_gives_them_zero() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 5.0], [3.0, -1.0, 0.0]])
    relevance = torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    for name, loss in FUNCTIONALS.items():
        none = loss(scores, relevance, mask, reduction="none")
        # Query 0 is all ties (no pair) but has positive relevance; query 2 has neither.
        counted = [1] if name in ("margin_ranking", "ranknet") else [0, 1]
        zero = [0, 2] if name in ("margin_ranking", "ranknet") else [2]
        assert torch.equal(none[zero], torch.zeros(len(zero))), name
        assert (none[counted] > 0).all(), name
        torch.testing.assert_close(loss(scores, relevance, mask), none[counted].mean(), msg=name)
        torch.testing.assert_close(loss(scores, relevance, mask, reduction="sum"), none.sum())


@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_batch_where_no_query_counts_gives_zero_mean_and_zero_gradient(name: str) -> None:
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    relevance = torch.zeros(3, 4, dtype=torch.float64)
    value = FUNCTIONALS[name](scores, relevance)
    assert value.item() == 0.0
    value.backward()
    assert scores.grad is not None
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_ranknet_and_margin_form_no_pair_from_ties() -> None:
    scores = torch.tensor([[0.0, 5.0, -5.0]])
    tied = torch.tensor([[1.0, 1.0, 1.0]])
    assert ranknet_loss(scores, tied).item() == 0.0
    assert margin_ranking_loss(scores, tied).item() == 0.0
    # One distinct grade makes exactly the two pairs with the odd item.
    graded = torch.tensor([[2.0, 1.0, 1.0]])
    expected = (F.softplus(torch.tensor(5.0)) + F.softplus(torch.tensor(-5.0))) / 2
    torch.testing.assert_close(ranknet_loss(scores, graded), expected)


def test_listmle_breaks_ties_by_list_position() -> None:
    scores = torch.tensor([[0.3, 2.0]], dtype=torch.float64)
    tied = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # Item 0 comes first: -log P(0 then 1) = logsumexp(s) - s_0.
    expected = torch.logsumexp(scores[0], 0) - scores[0, 0]
    torch.testing.assert_close(listmle_loss(scores, tied), expected)
    swapped = listmle_loss(scores.flip(1), tied)
    torch.testing.assert_close(swapped, torch.logsumexp(scores[0], 0) - scores[0, 1])


def test_listmle_tie_break_holds_on_long_lists_of_few_grades() -> None:
    # Long rows of ties are where an unstable sort reorders equal keys.
    rng = np.random.default_rng(12)
    scores, relevance = rng.normal(size=(4, 48)), rng.integers(0, 2, size=(4, 48)).astype(float)
    relevance[:, 0] = 1.0
    got = listmle_loss(torch.from_numpy(scores), torch.from_numpy(relevance), reduction="none")
    np.testing.assert_allclose(got.numpy(), _ref_listmle_numpy(scores, relevance), rtol=1e-12)


def test_listnet_tiny_temperature_does_not_overflow() -> None:
    scores = torch.tensor([[0.5, 2.0, -1.0]], dtype=torch.float64)
    relevance = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
    got = listnet_loss(scores, relevance, temperature=1e-308)  # 3 / 1e-308 overflows float64
    torch.testing.assert_close(got, -torch.log_softmax(scores[0], 0)[0])


def test_listnet_temperature_flattens_or_sharpens_the_target() -> None:
    scores, relevance, _ = _batch(7, masked=False)
    counted = _list_counted(relevance, None)
    uniform = torch.logsumexp(scores, 1) - scores.mean(1)  # CE against a uniform target
    flat = listnet_loss(scores, relevance, temperature=1e9, reduction="none")
    torch.testing.assert_close(flat[counted], uniform[counted])
    # A tiny temperature puts all the target on the most relevant items (here, all tied).
    sharp = listnet_loss(scores, relevance, temperature=1e-6, reduction="none")
    top = relevance == relevance.amax(1, keepdim=True)
    one_hot = top / top.sum(1, keepdim=True)
    expected = -(one_hot * torch.log_softmax(scores, 1)).sum(1)
    torch.testing.assert_close(sharp[counted], expected[counted])


@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_padding_contributes_nothing_whatever_it_holds(name: str) -> None:
    scores, relevance, mask = _batch(8)
    assert mask is not None
    nan, inf = float("nan"), float("inf")
    junk_scores = scores.where(mask, torch.tensor([1e30, nan, -7.0, inf, -inf, 0.0]))
    junk_relevance = relevance.where(mask, torch.tensor([-1.0, nan, 1e30, 2.0, inf, -1.0]))
    values, grads = [], []
    for s, r in ((scores, relevance), (junk_scores, junk_relevance)):
        leaf = s.clone().requires_grad_(True)
        value = FUNCTIONALS[name](leaf, r, mask, reduction="none")
        (grad,) = torch.autograd.grad(value.sum(), leaf)
        values.append(value)
        grads.append(grad)
    torch.testing.assert_close(values[1], values[0])
    torch.testing.assert_close(grads[1], grads[0])
    assert torch.equal(grads[1][~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))


@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_value_without_autograd_equals_value_with_it(name: str) -> None:
    scores, relevance, mask = _batch(9)
    with torch.no_grad():
        plain = FUNCTIONALS[name](scores.requires_grad_(True), relevance, mask, reduction="none")
    tracked = FUNCTIONALS[name](scores, relevance, mask, reduction="none")
    assert tracked.requires_grad
    assert not plain.requires_grad
    torch.testing.assert_close(plain, tracked.detach())


@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_bf16_scores_give_float32_and_float64_relevance_is_accepted(name: str) -> None:
    scores, relevance, mask = _batch(10)
    low = FUNCTIONALS[name](scores.to(torch.bfloat16), relevance, mask)
    assert low.dtype == torch.float32
    mixed = FUNCTIONALS[name](scores.float(), relevance, mask)
    assert mixed.dtype == torch.float32
    expected = FUNCTIONALS[name](scores, relevance, mask)
    torch.testing.assert_close(mixed.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("margin_ranking", {"margin": 0.5}),
        ("ranknet", {"sigma": 2.0}),
        ("listnet", {"temperature": 0.5}),
        ("listmle", {}),
    ],
)
def test_module_and_spec_equal_functional_for_every_reduction(
    name: str, options: dict[str, float]
) -> None:
    scores, relevance, mask = _batch(11)
    for reduction in REDUCTIONS:
        expected = FUNCTIONALS[name](scores, relevance, mask, reduction=reduction, **options)
        module = MODULES[name](reduction=reduction, **options)
        torch.testing.assert_close(module(scores, relevance, mask), expected)
        built = build_loss({"name": name, "reduction": reduction, **options})
        assert type(built) is MODULES[name]
        torch.testing.assert_close(built(scores, relevance, mask), expected)
    unmasked = FUNCTIONALS[name](scores, relevance.clamp_min(0.0), **options)
    torch.testing.assert_close(MODULES[name](**options)(scores, relevance.clamp_min(0.0)), unmasked)


def test_specs_are_registered_for_ranking_with_documented_defaults() -> None:
    defaults = {
        "margin_ranking": {"margin": 1.0},
        "ranknet": {"sigma": 1.0},
        "listnet": {"temperature": 1.0},
        "listmle": {},
    }
    for name, options in defaults.items():
        spec = LOSS_SPECS[name]
        assert spec.tasks == frozenset({"ranking"})
        assert spec.reference
        parsed = spec.model_validate({"name": name})
        assert parsed.model_dump() == {"name": name, "reduction": "mean", **options}
        for option in options:
            assert spec.model_fields[option].description
    with pytest.raises(LossConfigError, match="did you mean 'sigma'"):
        build_loss({"name": "ranknet", "sigam": 2.0})


# --- Properties --------------------------------------------------------------------------------


@st.composite
def ranking_batches(draw: st.DrawFn, distinct: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    q, n = draw(st.integers(1, 4)), draw(st.integers(1, 7))
    scores = draw(arrays(np.float64, (q, n), elements=st.floats(-30, 30)))
    if distinct:
        rows = [draw(st.permutations(range(n))) for _ in range(q)]
        relevance = np.array(rows, dtype=np.float64)
    else:
        relevance = draw(arrays(np.int64, (q, n), elements=st.integers(0, 3))).astype(np.float64)
    mask = draw(arrays(np.bool_, (q, n)))
    return torch.from_numpy(scores), torch.from_numpy(relevance), torch.from_numpy(mask)


PROPERTY = settings(max_examples=40, deadline=None)


@PROPERTY
@given(batch=ranking_batches(), name=st.sampled_from(list(FUNCTIONALS)))
def test_losses_are_non_negative(batch: tuple[Tensor, Tensor, Tensor], name: str) -> None:
    scores, relevance, mask = batch
    assert (FUNCTIONALS[name](scores, relevance, mask, reduction="none") >= -1e-12).all()


@PROPERTY
@given(
    batch=ranking_batches(),
    name=st.sampled_from(list(FUNCTIONALS)),
    shift=st.floats(-1e3, 1e3),
)
def test_shifting_a_list_s_scores_changes_nothing(
    batch: tuple[Tensor, Tensor, Tensor], name: str, shift: float
) -> None:
    scores, relevance, mask = batch
    shifts = shift * torch.arange(1, scores.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    before = FUNCTIONALS[name](scores, relevance, mask, reduction="none")
    after = FUNCTIONALS[name](scores + shifts, relevance, mask, reduction="none")
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


@PROPERTY
@given(data=st.data(), name=st.sampled_from(list(FUNCTIONALS)))
def test_permuting_items_with_their_relevance_and_mask_changes_nothing(
    data: st.DataObject, name: str
) -> None:
    # ListMLE breaks ties by position, so it is permutation invariant for distinct grades only.
    scores, relevance, mask = data.draw(ranking_batches(distinct=name == "listmle"))
    perm = torch.tensor(data.draw(st.permutations(range(scores.shape[1]))), dtype=torch.long)
    before = FUNCTIONALS[name](scores, relevance, mask, reduction="none")
    after = FUNCTIONALS[name](scores[:, perm], relevance[:, perm], mask[:, perm], reduction="none")
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


@PROPERTY
@given(batch=ranking_batches(distinct=True), gap=st.floats(50.0, 1e4))
def test_a_perfect_ranking_with_a_huge_gap_costs_nothing_pairwise(
    batch: tuple[Tensor, Tensor, Tensor], gap: float
) -> None:
    _, relevance, mask = batch
    scores = gap * relevance  # distinct grades are at least 1 apart
    assert margin_ranking_loss(scores, relevance, mask).item() == 0.0
    assert ranknet_loss(scores, relevance, mask).item() < 1e-20
    # The opposite order costs at least the gap for every pair that exists.
    reversed_loss = margin_ranking_loss(-scores, relevance, mask, reduction="none")
    has_pair = (mask.sum(1) >= 2).to(torch.float64)
    assert (reversed_loss >= gap * has_pair).all()


# --- Invalid input -----------------------------------------------------------------------------

_S, _R, _M = torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)
_BAD_R = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("scores", "relevance", "mask", "match"),
    [
        (torch.zeros(6), torch.ones(6), None, r"scores must have shape \(Q, L\)"),
        (torch.zeros(2, 3, 4), torch.ones(2, 3, 4), None, r"scores must have shape \(Q, L\)"),
        (_S, torch.ones(2, 4), None, "relevance must have the shape of scores"),
        (_S, _R, _M.float(), "mask must be a bool tensor"),
        (_S, _R, torch.ones(3, 2, dtype=torch.bool), "mask must have the shape of scores"),
        (_S.long(), _R, None, "scores must be a floating-point tensor"),
        (_S, _R.long(), None, "relevance must be a floating-point tensor"),
        (torch.zeros(0, 3), torch.ones(0, 3), None, "scores is empty"),
        (_S, _BAD_R, None, "relevance must be finite and >= 0"),
        (_S, _BAD_R, _M, "relevance must be finite and >= 0"),
        (_S, _R * float("nan"), _M, "relevance must be finite and >= 0"),
        (_S, _R * float("inf"), None, "relevance must be finite and >= 0"),
    ],
)
@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_invalid_inputs_raise_naming_the_problem(
    name: str, scores: Tensor, relevance: Tensor, mask: Tensor | None, match: str
) -> None:
    # Relevance values are checked only under target_checks (data is validated where it is
    # prepared); shapes and dtypes always.
    with target_checks(), pytest.raises(ValueError, match=match):
        FUNCTIONALS[name](scores, relevance, mask)


def test_negative_relevance_is_allowed_on_padding_only() -> None:
    mask = torch.tensor([[True, False, True], [True, True, True]])
    with target_checks():
        for loss in FUNCTIONALS.values():
            assert torch.isfinite(loss(_S, _BAD_R, mask))


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("margin_ranking", "margin", -1.0),
        ("margin_ranking", "margin", float("inf")),
        ("ranknet", "sigma", 0.0),
        ("ranknet", "sigma", float("nan")),
        ("listnet", "temperature", 0.0),
        ("listnet", "temperature", -2.0),
    ],
)
def test_invalid_options_raise_naming_the_option(name: str, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        FUNCTIONALS[name](_S, _R, **{option: value})
    with pytest.raises(ValueError, match=option):
        MODULES[name](**{option: value})
    with pytest.raises(ValueError, match=option):
        build_loss({"name": name, option: value})


@pytest.mark.parametrize("name", list(FUNCTIONALS))
def test_unknown_reduction_raises(name: str) -> None:
    with pytest.raises(ValueError, match="reduction"):
        FUNCTIONALS[name](_S, _R, reduction="max")
    with pytest.raises(ValueError, match="reduction"):
        MODULES[name](reduction="max")
