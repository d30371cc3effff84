"""The constrained lasso solver: the L1-ball projection and agreement with scikit-learn's LARS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from famwidget.explainers.lasso import (
    GramStatistics,
    constrained_lasso,
    constrained_lasso_gram,
    project_l1_ball,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def lars_at_budget(X: np.ndarray, y: np.ndarray, tau: float) -> np.ndarray:
    """scikit-learn's exact lasso path, interpolated to ``||w||_1 = tau`` (linear between knots)."""
    from sklearn.linear_model import lars_path

    _, _, coefs = lars_path(X, y, method="lasso")
    l1 = np.abs(coefs).sum(axis=0)
    assert l1[-1] > tau, "the budget must be active for this reference"
    k = int(np.searchsorted(l1, tau))
    a = (tau - l1[k - 1]) / (l1[k] - l1[k - 1])
    return (1 - a) * coefs[:, k - 1] + a * coefs[:, k]


def test_projection_is_the_euclidean_projection_onto_the_l1_ball():
    torch.manual_seed(0)
    V = torch.randn(50, 6, dtype=torch.float64) * torch.tensor([0.01, 0.1, 1, 2, 5, 10])
    tau = 3.0
    P = project_l1_ball(V, tau)
    for j in range(V.shape[1]):
        v, p = V[:, j], P[:, j]
        if v.abs().sum() <= tau:
            assert torch.equal(p, v)
            continue
        assert p.abs().sum().item() == pytest.approx(tau, abs=1e-12)
        # Optimality: p = sign(v) * max(|v| - theta, 0) for one threshold theta >= 0.
        theta = (v.abs() - p.abs())[p != 0]
        assert torch.allclose(theta, theta[0].expand_as(theta), atol=1e-12)
        assert bool((v.abs()[p == 0] <= theta[0] + 1e-12).all())
        assert bool((torch.sign(p[p != 0]) == torch.sign(v[p != 0])).all())


@pytest.mark.parametrize("shape", [(200, 40), (30, 60)], ids=["tall", "wide"])
def test_matches_scikit_learn_lars_at_the_same_budget(shape):
    rng = np.random.default_rng(0)
    n, d = shape
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, 4))
    for tau in (0.2, 1.0):
        W = constrained_lasso(torch.from_numpy(X), torch.from_numpy(Y), tau).numpy()
        assert W.shape == (d, 4)
        for j in range(4):  # all columns solved at once, each matches its own reference
            reference = lars_at_budget(X, Y[:, j], tau)
            assert np.abs(W[:, j] - reference).max() < 1e-4
            assert np.abs(W[:, j]).sum() <= tau + 1e-9


def test_one_hot_targets_and_an_inactive_budget():
    """With a budget larger than the least-squares solution's L1 norm, that solution comes back."""
    torch.manual_seed(0)
    X = torch.rand(300, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (300,))
    Y = torch.nn.functional.one_hot(y, 3).double()
    least_squares = torch.linalg.lstsq(X, Y).solution
    W = constrained_lasso(X, Y, float(least_squares.abs().sum(0).max()) + 1.0)
    assert torch.allclose(W, least_squares, atol=1e-6)
    single = constrained_lasso(X, Y[:, 1], 0.5)
    assert single.shape == (12,) and single.abs().sum() <= 0.5 + 1e-9
    assert torch.allclose(single, constrained_lasso(X, Y, 0.5)[:, 1], atol=1e-7)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="tau"):
        project_l1_ball(torch.ones(3, 1), 0.0)
    with pytest.raises(ValueError, match="Y must be"):
        constrained_lasso(torch.ones(4, 2), torch.ones(5), 1.0)


def test_the_gram_form_solves_the_same_problem():
    """From ``XᵀX`` and ``XᵀY`` alone: LARS's solution, and the row form's (wide, D > N)."""
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(30, 60)), rng.normal(size=(30, 3))
    W = constrained_lasso_gram(torch.from_numpy(X.T @ X), torch.from_numpy(X.T @ Y), 1.0)
    for j in range(3):
        assert np.abs(W[:, j].numpy() - lars_at_budget(X, Y[:, j], 1.0)).max() < 1e-4
    one = constrained_lasso_gram(torch.from_numpy(X.T @ X), torch.from_numpy(X.T @ Y[:, 0]), 1.0)
    assert one.shape == (60,) and torch.allclose(one, W[:, 0], atol=1e-7)


def test_statistics_summed_in_batches_give_the_fit_of_all_rows():
    torch.manual_seed(2)
    X = torch.rand(90, 20, dtype=torch.float64)
    y = torch.tensor([3, 7, 9])[torch.randint(0, 3, (90,))]
    whole = constrained_lasso(
        X, torch.nn.functional.one_hot(torch.unique(y, return_inverse=True)[1]).double(), 2.0
    )
    stats = GramStatistics()
    for i in range(0, 90, 16):  # a batch may miss a class
        stats.add(X[i : i + 16].float(), y[i : i + 16])
    assert stats.count == 90 and stats.dim == 20 and sorted(stats.sums) == [3, 7, 9]
    classes, W = stats.solve(2.0)
    assert classes.tolist() == [3, 7, 9]
    assert torch.allclose(
        W,
        constrained_lasso(
            X.float(),
            torch.nn.functional.one_hot(torch.unique(y, return_inverse=True)[1]).double(),
            2.0,
        ),
        atol=1e-8,
    )
    assert (W - whole).abs().max() < 1e-5  # float32 rows, float64 statistics
    assert torch.allclose(stats.cross([3, 5])[:, 1], torch.zeros(20, dtype=torch.float64))


def test_gram_form_and_statistics_reject_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        constrained_lasso_gram(torch.ones(3, 4), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="B = XᵀY"):
        constrained_lasso_gram(torch.eye(3), torch.ones(4, 2), 1.0)
    with pytest.raises(ValueError, match="finite"):
        constrained_lasso_gram(torch.eye(2) * float("nan"), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="tau"):
        constrained_lasso_gram(torch.eye(2), torch.ones(2), -1.0)
    stats = GramStatistics()
    with pytest.raises(ValueError, match="no images"):
        stats.solve(1.0)
    with pytest.raises(ValueError, match="one label per row"):
        stats.add(torch.ones(4, 3), torch.zeros(3, dtype=torch.long))
    stats.add(torch.ones(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="rows of 5 features after rows of 3"):
        stats.add(torch.ones(4, 5), torch.zeros(4, dtype=torch.long))


def test_a_small_fit_of_wide_features_keeps_rows_until_they_outnumber_the_features(monkeypatch):
    from famwidget.explainers import lasso

    monkeypatch.setattr(lasso, "GRAM_MAX_DIM", 10)
    torch.manual_seed(3)
    X = torch.rand(30, 20, dtype=torch.float64)
    y = torch.arange(30) % 3
    Y = torch.nn.functional.one_hot(y).double()
    stats = GramStatistics()
    stats.add(X[:12], y[:12])
    assert stats.gram is None and stats.count == 12 and stats.dim == 20, "rows, no (D,D)"
    classes, W = stats.solve(1.5)
    assert classes.tolist() == [0, 1, 2]
    assert torch.allclose(W, constrained_lasso(X[:12], Y[:12], 1.5), atol=1e-9)
    stats.add(X[12:], y[12:])  # 30 rows > 20 features: the Gram form from here on
    assert stats.gram is not None and stats.count == 30
    assert torch.allclose(stats.solve(1.5)[1], constrained_lasso(X, Y, 1.5), atol=1e-7)
