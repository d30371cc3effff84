"""The L1-constrained least-squares solver behind the interpretation method (seed 001).

For every column ``y_j`` of ``Y`` it solves

    min_w ||X w - y_j||²   subject to   ||w||_1 <= tau

all columns at once, as one matrix ``W`` ``(D,C)``: FISTA (accelerated projected gradient) with
an adaptive momentum restart per column, and the exact Euclidean projection of each column onto
the L1 ball (Duchi et al. 2008, sort-based). Runs in torch (float64 by default), on the device of
``X``.
"""

from __future__ import annotations

from typing import Any

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
    if n >= d or d <= GRAM_MAX_DIM:
        W = constrained_lasso_gram(X.T @ X, X.T @ Y, tau, max_iter=max_iter, tol=tol, dtype=dtype)
        return W[:, 0] if single else W
    B = X.T @ Y  # (D,C)
    L = 2.0 * _largest_eigenvalue(X @ X.T) * 1.001

    def product(V: Tensor, rows: Tensor) -> Tensor:
        return X.T @ (X.index_select(1, rows) @ V.index_select(0, rows))

    W = _fista(product, B, L, tau, max_iter, tol)
    return W[:, 0] if single else W


def constrained_lasso_gram(
    G: Tensor,
    B: Tensor,
    tau: float,
    *,
    max_iter: int = 5000,
    tol: float = 1e-9,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The same problem as :func:`constrained_lasso`, given by its sufficient statistics.

    ``||X W - Y||² = tr(WᵀGW) - 2 tr(WᵀB) + ||Y||²`` with ``G = XᵀX`` ``(D,D)`` and
    ``B = XᵀY`` ``(D,C)`` (or ``(D,)``): both are sums over the rows of ``X``, so they can be
    accumulated batch by batch and summed over processes (:class:`GramStatistics`), and the
    solution is the one of the rows themselves. Returns ``W`` ``(D,C)`` (``(D,)`` for a 1-D
    ``B``) in ``dtype``, every column within the budget ``tau``.
    """
    if G.dim() != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"G = XᵀX must be a square (D,D) matrix, got shape {tuple(G.shape)}")
    single = B.dim() == 1
    B = B[:, None] if single else B
    if B.dim() != 2 or B.shape[0] != G.shape[0]:
        raise ValueError(f"B = XᵀY must be (D,) or (D,C) with D={G.shape[0]}, got {tuple(B.shape)}")
    if not bool(torch.isfinite(G).all()) or not bool(torch.isfinite(B).all()):
        raise ValueError("G and B must be finite (a feature vector held NaN or inf)")
    G = G.to(dtype)
    B = B.to(device=G.device, dtype=dtype)
    d = G.shape[0]
    L = 2.0 * _largest_eigenvalue(G) * 1.001

    def product(V: Tensor, rows: Tensor) -> Tensor:
        if rows.numel() < d // 2:
            return G.index_select(0, rows).T @ V.index_select(0, rows)
        return G @ V

    W = _fista(product, B, L, tau, max_iter, tol)
    return W[:, 0] if single else W


def _fista(product, B: Tensor, L: float, tau: float, max_iter: int, tol: float) -> Tensor:
    """FISTA with adaptive restart for ``min tr(WᵀGW) - 2 tr(WᵀB)`` on the L1 ball.

    ``product(V, rows)`` is ``G @ V`` ``(D,C)`` where ``rows`` are the non-zero rows of ``V``;
    ``L`` the gradient's Lipschitz constant ``2 λ_max(G)``.
    """
    if tau <= 0:
        raise ValueError(f"the L1 budget tau must be positive, got {tau}")
    W = torch.zeros_like(B)
    if L == 0.0:
        return W

    def gradient(V: Tensor) -> Tensor:
        # The iterates are sparse (the projection zeroes most rows): read only the rows in use.
        rows = V.abs().sum(dim=1).nonzero()[:, 0]
        return 2.0 * (product(V, rows) - B)

    Z = W.clone()
    t = torch.ones(B.shape[1], dtype=B.dtype, device=B.device)
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
    return W


class GramStatistics:
    """The sufficient statistics of a one-hot lasso fit, summed batch by batch.

    ``gram`` ``(D,D)`` is ``XᵀX``, ``sums[c]`` ``(D,)`` the sum of the rows of class ``c``
    (the column ``c`` of ``XᵀY`` for one-hot ``Y``) and ``count`` the number of rows, all in
    float64 on the device of the first batch. The rows themselves are not kept, so a
    training set of any size is fitted in the memory of one ``(D,D)`` matrix, and the
    statistics of several processes add up (:meth:`all_reduce`) to those of all their rows.
    Only while there are fewer rows than features and ``D > GRAM_MAX_DIM`` (a wide layer set
    and a small fit, where ``(D,D)`` would be the larger) the rows are kept instead and
    solved as rows; they turn into the Gram form once they outnumber the features.
    """

    def __init__(self) -> None:
        self.gram: Tensor | None = None
        self.sums: dict[int, Tensor] = {}
        self.count = 0
        self._rows: list[tuple[Tensor, Tensor]] = []

    @property
    def dim(self) -> int | None:
        """``D``, the length of a feature vector (``None`` before the first batch)."""
        if self._rows:
            return int(self._rows[0][0].shape[1])
        return None if self.gram is None else int(self.gram.shape[0])

    def add(self, X: Tensor, labels: Tensor) -> None:
        """Add the rows ``X`` ``(B,D)`` with their class labels ``labels`` ``(B,)`` (ints)."""
        if X.dim() != 2 or labels.dim() != 1 or labels.shape[0] != X.shape[0]:
            raise ValueError(
                f"need rows (B,D) and one label per row (B,), got {tuple(X.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if self.dim is not None and X.shape[1] != self.dim:
            raise ValueError(f"rows of {X.shape[1]} features after rows of {self.dim}")
        d = int(X.shape[1])
        labels = labels.to(X.device)
        if self.gram is None and d > GRAM_MAX_DIM and self.count + X.shape[0] < d:
            self._rows.append((X.detach().clone(), labels))
            self.count += int(X.shape[0])
            return
        self._to_gram(X.device, d)
        self._accumulate(X, labels)

    def _to_gram(self, device: torch.device, d: int) -> None:
        """Start the Gram form (and fold the rows kept so far into it)."""
        if self.gram is not None:
            return
        self.gram = torch.zeros(d, d, dtype=torch.float64, device=device)
        rows, self._rows = self._rows, []
        self.count -= sum(int(x.shape[0]) for x, _ in rows)
        for x, y in rows:
            self._accumulate(x, y)

    def _accumulate(self, X: Tensor, labels: Tensor) -> None:
        X = X.to(device=self.gram.device, dtype=torch.float64)
        self.gram += X.T @ X
        classes, column = torch.unique(labels.to(X.device), sorted=True, return_inverse=True)
        per_class = torch.zeros(len(classes), X.shape[1], dtype=X.dtype, device=X.device)
        per_class.index_add_(0, column, X)
        for c, row in zip(classes.tolist(), per_class, strict=True):
            self.sums[c] = self.sums[c] + row if c in self.sums else row
        self.count += int(X.shape[0])

    def cross(self, classes: list[int]) -> Tensor:
        """``XᵀY`` ``(D,C)`` for the one-hot targets of ``classes`` (zeros for absent ones)."""
        columns = [self.sums.get(c) for c in classes]
        zero = self.gram.new_zeros(self.gram.shape[0])
        return torch.stack([zero if col is None else col for col in columns], dim=1)

    def all_reduce(self, layout: Any = None, failure: BaseException | None = None) -> Any:
        """Sum the statistics of every process of ``torch.distributed``'s default group.

        Every rank calls it (also one with no rows, or whose loop failed: pass the error as
        ``failure``, and every rank raises instead of waiting forever). ``layout`` is whatever
        describes the feature vector (the layers and their sizes); the ranks with rows must
        agree on it, and it is returned (a rank with no rows gets the others'). Afterwards the
        statistics are the same on every rank: those of all the rows. One ``(D,D+C)`` float64
        all-reduce (gloo on CPUs, NCCL on the current GPU).
        """
        import torch.distributed as dist

        if self._rows:  # the ranks add up Gram matrices
            self._to_gram(self._rows[0][0].device, self.dim)
        mine = {
            "failure": None if failure is None else f"{type(failure).__name__}: {failure}",
            "dim": self.dim,
            "classes": sorted(self.sums),
            "count": self.count,
            "layout": layout if self.count else None,
        }
        every: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        failed = [(r, e["failure"]) for r, e in enumerate(every) if e["failure"]]
        if failed:
            if failure is not None:
                raise failure
            rank, why = failed[0]
            raise RuntimeError(f"the fit failed on rank {rank} of {len(every)}: {why}")
        filled = [(r, e) for r, e in enumerate(every) if e["count"]]
        if not filled:
            raise ValueError("fit got no images on any of the ranks")
        first_rank, first = filled[0]
        for rank, e in filled[1:]:
            if (e["dim"], e["layout"]) != (first["dim"], first["layout"]):
                raise ValueError(
                    f"rank {rank} has {e['dim']} features laid out as {e['layout']}, rank "
                    f"{first_rank} {first['dim']} as {first['layout']}: every rank must fit "
                    "the same model with the same layers"
                )
        d = first["dim"]
        classes = sorted({c for _, e in filled for c in e["classes"]})
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        if self.gram is None:
            self.gram = torch.zeros(d, d, dtype=torch.float64, device=device)
        home = self.gram.device
        packed = torch.cat([self.gram, self.cross(classes)], dim=1).to(device)
        dist.all_reduce(packed)
        packed = packed.to(home)
        self.gram = packed[:, :d].contiguous()
        self.sums = {c: packed[:, d + j].clone() for j, c in enumerate(classes)}
        self.count = sum(e["count"] for e in every)
        return first["layout"]

    def solve(
        self, tau: float, *, max_iter: int = 5000, tol: float = 1e-9
    ) -> tuple[Tensor, Tensor]:
        """``classes`` ``(C,)`` (sorted labels) and ``W`` ``(D,C)`` float64 of the lasso with
        budget ``tau`` on the one-hot targets (:func:`constrained_lasso_gram`)."""
        if self.count == 0:
            raise ValueError("fit got no images")
        if self._rows:
            X = torch.cat([x for x, _ in self._rows])
            y = torch.cat([y for _, y in self._rows])
            classes, column = torch.unique(y, sorted=True, return_inverse=True)
            Y = torch.nn.functional.one_hot(column, len(classes)).to(torch.float64)
            W = constrained_lasso(X, Y, tau, max_iter=max_iter, tol=tol)
            return classes.to(X.device), W
        classes = sorted(self.sums)
        W = constrained_lasso_gram(self.gram, self.cross(classes), tau, max_iter=max_iter, tol=tol)
        return torch.tensor(classes, device=self.gram.device), W
