"""Unit tests of famwidget.targets: numbers small enough to check by hand."""

from __future__ import annotations

import math

import pytest
import torch

from famwidget.targets import (
    ClassLogit,
    Custom,
    Dimension,
    Embedding,
    Predicted,
    Similarity,
    as_target,
    feature_vector,
)

FEATS = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # norms 5 and 2


def test_feature_vector_of_each_output_shape():
    assert torch.equal(feature_vector(FEATS), FEATS)
    maps = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # (1,2,1,2): pooled -> [2, 2]
    assert torch.equal(feature_vector(maps), torch.tensor([[2.0, 2.0]]))
    assert torch.equal(feature_vector(torch.tensor([1.0, 2.0])), torch.tensor([[1.0], [2.0]]))
    assert torch.equal(feature_vector((FEATS, None)), FEATS)
    assert torch.equal(feature_vector((None, FEATS), key=1), FEATS)
    assert torch.equal(feature_vector({"emb": FEATS}), FEATS)
    assert torch.equal(feature_vector({"a": maps, "emb": FEATS}, key="emb"), FEATS)


def test_feature_vector_errors_say_what_is_accepted():
    with pytest.raises(ValueError, match="pass output_key"):
        feature_vector({"a": FEATS, "b": FEATS})
    with pytest.raises(ValueError, match="not in the model output"):
        feature_vector({"a": FEATS}, key="b")
    with pytest.raises(ValueError, match="does not index"):
        feature_vector((FEATS,), key=3)
    with pytest.raises(TypeError, match="a tensor is needed"):
        feature_vector("features")


def test_embedding_scalar_is_the_norm_and_score_the_cosine():
    bound = Embedding().bind(FEATS)
    assert torch.allclose(bound.scalar(FEATS), torch.tensor([5.0, 2.0]))
    copies = torch.tensor([[4.0, -3.0], [6.0, 8.0], [0.0, -1.0]])  # orthogonal, parallel, opposite
    scores = bound.score(copies, torch.tensor([0, 0, 1]))
    assert torch.allclose(scores, torch.tensor([0.0, 1.0, -1.0]), atol=1e-6)
    zero = bound.score(torch.zeros(1, 2), torch.tensor([0]))
    assert torch.equal(zero, torch.zeros(1))  # never NaN


def test_predicted_and_classlogit():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    pred = Predicted().bind(logits)
    assert torch.equal(pred.scalar(logits), torch.tensor([3.0, 5.0]))
    # masked copies are scored on the class of their source image, fixed at bind time
    copies = torch.tensor([[9.0, 1.0, 0.0], [0.0, 7.0, 0.0]])
    assert torch.equal(pred.score(copies, torch.tensor([1, 0])), torch.tensor([9.0, 7.0]))
    one = ClassLogit(2).bind(logits)
    assert torch.equal(one.scalar(logits), torch.tensor([2.0, 1.0]))
    each = ClassLogit([0, 2]).bind(logits)
    assert torch.equal(each.scalar(logits), torch.tensor([1.0, 1.0]))
    assert repr(ClassLogit(torch.tensor([0, 2]))) == "ClassLogit([0, 2])"


def test_class_probability_is_the_softmax_of_the_bound_class():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    bound = Predicted().bind(logits)
    assert torch.allclose(bound.probability(logits, torch.tensor([0])), torch.tensor([0.75]))
    bound = ClassLogit(0).bind(logits)
    assert torch.allclose(bound.probability(logits, torch.tensor([0])), torch.tensor([0.25]))
    with pytest.raises(TypeError, match="needs Predicted"):
        Embedding().bind(FEATS).probability(FEATS, torch.tensor([0, 1]))


def test_classlogit_errors():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"must be in 0\.\.2"):
        ClassLogit(3).bind(logits)
    with pytest.raises(ValueError, match="3 classes for a batch of 2"):
        ClassLogit([0, 1, 2]).bind(logits)


def test_similarity_cosine_to_a_reference():
    ref = torch.tensor([0.0, 1.0])
    bound = Similarity(ref).bind(FEATS)
    assert torch.allclose(bound.scalar(FEATS), torch.tensor([0.8, 1.0]))  # 4/5 and 2/2
    copies = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([0.0, 1 / math.sqrt(2)])
    assert torch.allclose(bound.score(copies, torch.tensor([1, 0])), expected)
    per_image = Similarity(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).bind(FEATS)
    assert torch.allclose(per_image.scalar(FEATS), torch.tensor([0.6, 1.0]))
    with pytest.raises(ValueError, match=r"\(D,\)=\(2,\) or \(B,D\)"):
        Similarity(torch.ones(3)).bind(FEATS)
    with pytest.raises(TypeError, match="needs a tensor"):
        Similarity([0.0, 1.0])


def test_dimension():
    bound = Dimension(1).bind(FEATS)
    assert torch.equal(bound.scalar(FEATS), torch.tensor([4.0, 2.0]))
    assert torch.equal(Dimension(-2).bind(FEATS).scalar(FEATS), torch.tensor([3.0, 0.0]))
    assert torch.equal(bound.score(FEATS, torch.tensor([1, 0])), torch.tensor([4.0, 2.0]))
    with pytest.raises(ValueError, match="outside the 2-dimensional"):
        Dimension(2).bind(FEATS)


def test_custom_callable_and_as_target():
    def total(out):
        return out.sum(dim=1)

    target = as_target(total, None)
    assert isinstance(target, Custom)
    bound = target.bind(FEATS)
    assert torch.equal(bound.scalar(FEATS), torch.tensor([7.0, 2.0]))
    assert torch.equal(bound.score(FEATS, torch.tensor([0, 0])), torch.tensor([7.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        Custom(lambda out: out).bind(FEATS).scalar(FEATS)
    assert isinstance(as_target(None, Embedding()), Embedding)
    with pytest.raises(TypeError, match="not the class"):
        as_target(Embedding, None)
    with pytest.raises(TypeError, match="a callable output"):
        as_target(3, None)


def test_tuple_dict_and_4d_outputs_through_a_bound_target():
    maps = torch.tensor([[[[1.0, 3.0]], [[4.0, 4.0]]]])  # pooled feature [2, 4]
    bound = Embedding().bind((maps, "aux"))
    assert torch.allclose(bound.scalar((maps, "aux")), torch.tensor([math.sqrt(20.0)]))
    bound = Dimension(0).bind({"logits": FEATS, "emb": maps}, key="emb")
    assert torch.equal(bound.scalar({"logits": FEATS, "emb": maps}), torch.tensor([2.0]))


def test_embedding_and_similarity_scores_do_not_depend_on_the_feature_scale():
    from famwidget.targets import Embedding, Similarity, cosine

    torch.manual_seed(0)
    f, g = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.allclose(cosine(f * 1e-13, g * 1e-13), cosine(f, g), atol=1e-6)
    assert torch.equal(cosine(torch.zeros(1, 8), g[:1]), torch.zeros(1))
    bound = Embedding().bind(f * 1e-13)
    index = torch.tensor([0, 1, 2])
    assert torch.allclose(bound.score(g * 1e-13, index), cosine(g, f), atol=1e-6)
    sim = Similarity(f[0] * 1e-13).bind(g)
    assert torch.allclose(sim.scalar(g), cosine(g, f[:1].expand(3, -1)), atol=1e-6)


def test_dataclass_outputs_are_read_by_field():
    import dataclasses

    from famwidget.targets import feature_vector

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        extra: torch.Tensor | None = None

    t = torch.randn(2, 4)
    assert feature_vector(Out(t)) is t
    with pytest.raises(ValueError, match="pass output_key="):
        feature_vector(Out(t, t * 2))
    assert torch.equal(feature_vector(Out(t, t * 2), "extra"), t * 2)
