"""The L1-constrained least-squares solver behind the interpretation method (seed 001).

For every column ``y_j`` of ``Y`` it solves

    min_w ||X w - y_j||²   subject to   ||w||_1 <= tau

all columns at once, as one matrix ``W`` ``(D,C)``: FISTA (accelerated projected gradient) with
an adaptive momentum restart per column, and the exact Euclidean projection of each column onto
the L1 ball (Duchi et al. 2008, sort-based). Runs in torch (float64 by default), on the device of
``X``.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRAM_MAX_DIM = 4096
"""Up to this many features the Gram matrix ``XᵀX`` is formed even when ``N < D``."""


def project_l1_ball(V: Tensor, tau: float) -> Tensor:
    """Euclidean projection of each column of ``V`` ``(D,C)`` onto ``{w : ||w||_1 <= tau}``.

    Columns already inside the ball come back unchanged. Otherwise the projection is
    ``sign(v) * max(|v| - theta, 0)`` with the threshold ``theta`` found by sorting ``|v|``
    (Duchi, Shalev-Shwartz, Singer, Chandra, ICML 2008). Returns ``(D,C)``.
    """
    if tau <= 0:
        raise ValueError(f"the L1 budget tau must be positive, got {tau}")
    a = V.abs()
    u, _ = torch.sort(a, dim=0, descending=True)
    css = torch.cumsum(u, dim=0)
    j = torch.arange(1, V.shape[0] + 1, device=V.device, dtype=V.dtype)[:, None]
    # The condition u_j > (css_j - tau) / j holds on a prefix of the sorted entries.
    rho = (u * j > css - tau).sum(dim=0).clamp_min(1)
    theta = (css.gather(0, (rho - 1)[None])[0] - tau) / rho.to(V.dtype)
    inside = a.sum(dim=0) <= tau
    theta = torch.where(inside, torch.zeros_like(theta), theta.clamp_min(0))
    return torch.sign(V) * (a - theta[None]).clamp_min(0)


def _largest_eigenvalue(G: Tensor, iters: int = 300, tol: float = 1e-7) -> float:
    """Largest eigenvalue of the symmetric PSD matrix ``G`` ``(D,D)`` by power iteration."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.rand(G.shape[0], 1, generator=gen, dtype=G.dtype).to(G.device) + 0.1
    v = v / v.norm()
    value = 0.0
    for _ in range(iters):
        w = G @ v
        new = float(w.norm())
        if new == 0.0:
            return 0.0
        v = w / new
        if abs(new - value) <= tol * new:
            return new
        value = new
    return value


def constrained_lasso(
    X: Tensor,
    Y: Tensor,
    tau: float,
    *,
    max_iter: int = 5000,
    tol: float = 1e-9,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Solve ``min_W ||X W - Y||²`` with ``||W[:, j]||_1 <= tau`` for every column ``j``.

    Args:
        X: ``(N,D)`` design matrix (one feature vector per row).
        Y: ``(N,C)`` targets, or ``(N,)`` for a single column.
        tau: the L1 budget of each column of ``W``.
        max_iter: FISTA iterations at most.
        tol: stop when no entry of ``W`` moves by more than ``tol * max(1, max|W|)``.
        dtype: the precision of the computation (float64 by default).

    Returns:
        ``W`` ``(D,C)`` (``(D,)`` for a 1-D ``Y``) in ``dtype``, every column within the budget.

    The objective's gradient is ``2 Xᵀ(XW - Y)``, computed from the Gram matrix ``G = XᵀX``
    (when ``N >= D`` or ``D <= GRAM_MAX_DIM``) and only from the rows of ``W`` that are not
    zero, so an iteration costs about ``D·S·C`` for ``S`` non-zero rows. The step is ``1 / L`` with
    ``L = 2 λ_max(XᵀX)``. Momentum restarts, per column, whenever it points uphill
    (O'Donoghue & Candès 2015), which makes the convergence linear on well-posed problems.
    """
    if X.dim() != 2:
        raise ValueError(f"X must be (N,D), got shape {tuple(X.shape)}")
    single = Y.dim() == 1
    Y = Y[:, None] if single else Y
    if Y.dim() != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must be (N,) or (N,C) with N={X.shape[0]}, got {tuple(Y.shape)}")
    X = X.to(dtype)
    Y = Y.to(device=X.device, dtype=dtype)
    n, d = X.shape
    use_gram = n >= d or d <= GRAM_MAX_DIM
    G = X.T @ X if use_gram else None
    B = X.T @ Y  # (D,C)
    L = 2.0 * _largest_eigenvalue(G if use_gram else X @ X.T) * 1.001
    W = torch.zeros(d, Y.shape[1], dtype=dtype, device=X.device)
    if L == 0.0:
        return W[:, 0] if single else W

    def gradient(V: Tensor) -> Tensor:
        # The iterates are sparse (the projection zeroes most rows): read only the rows in use.
        rows = V.abs().sum(dim=1).nonzero()[:, 0]
        if use_gram and rows.numel() < d // 2:
            product = G.index_select(0, rows).T @ V.index_select(0, rows)
        elif use_gram:
            product = G @ V
        else:
            product = X.T @ (X.index_select(1, rows) @ V.index_select(0, rows))
        return 2.0 * (product - B)

    Z = W.clone()
    t = torch.ones(Y.shape[1], dtype=dtype, device=X.device)
    for _ in range(max_iter):
        W_new = project_l1_ball(Z - gradient(Z) / L, tau)
        step = W_new - W
        # Restart the momentum of the columns where the last step went against the gradient map.
        restart = ((Z - W_new) * step).sum(dim=0) > 0
        t = torch.where(restart, torch.ones_like(t), t)
        t_new = (1.0 + torch.sqrt(1.0 + 4.0 * t * t)) / 2.0
        beta = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
        Z = W_new + beta[None] * step
        W, t = W_new, t_new
        if float(step.abs().max()) <= tol * max(1.0, float(W.abs().max())):
            break
    return W[:, 0] if single else W
