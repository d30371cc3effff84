"""The constrained lasso solver: the L1-ball projection and agreement with scikit-learn's LARS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from famwidget.explainers.lasso import constrained_lasso, project_l1_ball

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
