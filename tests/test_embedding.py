"""famwidget.embedding: features in batches, exact PCA, cosine neighbours, k-NN accuracy."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from sklearn import decomposition

from famwidget.embedding import (
    features,
    knn_accuracy,
    neighbour_table,
    neighbours,
    pca,
    project,
)
from famwidget.explanation import DegenerateMapWarning


def _data(n: int = 300, d: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    scale = torch.linspace(3.0, 0.2, d)  # distinct variances: well separated components
    return torch.randn(n, d, generator=g) * scale + torch.randn(d, generator=g)


def test_pca_equals_sklearn_and_pca_lowrank_up_to_sign(one_thread):
    x = _data()
    ours = pca(x, dim=2)
    reference = torch.from_numpy(
        decomposition.PCA(n_components=2).fit_transform(x.double().numpy())
    ).float()
    _, _, lowrank_v = torch.pca_lowrank(x, q=x.shape[1], center=True, niter=6)
    lowrank = (x - x.mean(0)) @ lowrank_v[:, :2]
    for ref in (reference, lowrank):
        signs = (ours.coords * ref).sum(0).sign()
        assert torch.allclose(ours.coords, ref * signs, atol=1e-4), (
            (ours.coords - ref * signs).abs().max()
        )
    assert torch.allclose(ours.components.norm(dim=1), torch.ones(2), atol=1e-5)
    # the sign rule: each component's largest-|loading| entry is positive
    pivots = ours.components.abs().argmax(dim=1)
    assert (ours.components.gather(1, pivots[:, None]) > 0).all()
    assert ours.explained[0] > ours.explained[1] > 0 and float(ours.explained.sum()) < 1


def test_pca_is_deterministic_and_sign_stable(one_thread):
    x = _data()
    a, b = project(x), project(x.clone())
    assert torch.equal(a, b)
    # reordering the images flips no axis of the map: the sign is fixed by the loadings
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    order = pca(shuffled).coords
    assert torch.allclose(order.sort(dim=0).values, a.sort(dim=0).values, atol=1e-4)


def test_pca_of_few_points_and_degenerate_input(one_thread):
    two = pca(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=3)
    assert two.coords.shape == (2, 3) and torch.allclose(two.coords[:, 1:], torch.zeros(2, 2))
    with pytest.warns(DegenerateMapWarning, match="same"):
        same = pca(torch.ones(5, 4))
    assert torch.equal(same.coords, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(N,D\)"):
        pca(torch.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        pca(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="projection must be one of"):
        project(torch.ones(3, 2), projection="tsne")


def test_umap_without_umap_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ImportError, match=r"umap-learn.*famwidget\[umap\].*'pca'"):
        project(_data(20, 4), projection="umap")


def test_neighbours_equal_a_direct_cosine_ranking(one_thread):
    x = _data(120, 16)
    idx, sim = neighbour_table(x, k=6, batch=50)  # several batches
    unit = F.normalize(x.double(), dim=1)
    direct = unit @ unit.T
    direct.fill_diagonal_(-2)
    order = direct.argsort(dim=1, descending=True)[:, :6]
    assert torch.equal(idx, order)
    assert torch.allclose(sim.double(), direct.gather(1, order), atol=1e-5)
    one, one_sim = neighbours(x, 7, k=6)
    assert torch.equal(one, order[7]) and torch.allclose(one_sim, sim[7])
    assert neighbour_table(x[:1], k=3)[0].shape == (1, 0)
    with pytest.raises(IndexError, match="out of range"):
        neighbours(x, 500)


def test_knn_accuracy_counts_label_agreement(one_thread):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 5
    labels = torch.arange(90) % 3
    clustered = centres[labels] + 0.1 * torch.randn(90, 8, generator=g)
    assert knn_accuracy(clustered, labels, k=5) == 1.0
    shuffled = labels[torch.randperm(90, generator=g)]
    assert knn_accuracy(clustered, shuffled, k=5) < 0.6
    with pytest.raises(ValueError, match="labels for"):
        knn_accuracy(clustered, labels[:10])


def test_features_in_batches_keep_the_model_as_it_was(tiny_embedding, images, one_thread):
    model = tiny_embedding.train()
    flags = [p.requires_grad for p in model.parameters()]
    stats = model.body[1].running_mean.clone()
    feats = features(model, images, batch_size=2)
    assert feats.shape == (5, 6) and feats.dtype == torch.float32 and not feats.is_inference()
    with torch.no_grad():
        expected = model.eval()(images)
    model.train()
    assert torch.allclose(feats, expected, atol=1e-6)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model.body[1].running_mean, stats)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        features(model, images[0])
    with pytest.raises(ValueError, match="batch_size"):
        features(model, images, batch_size=0)
