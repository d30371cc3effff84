"""famwidget.metrics on hand-built cases whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import famwidget as fw
from famwidget import metrics
from famwidget.targets import ClassLogit, Dimension


class RegionSum(nn.Module):
    """Output ``(B,2)``: the mean of the input over ``region`` (all channels), and 0.

    Its score depends on the pixels of ``region`` only, linearly.
    """

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x * self.region).sum(dim=(1, 2, 3)) / (self.region.sum() * x.shape[1])
        return torch.stack([inside, torch.zeros_like(inside)], dim=1)


def first(output: torch.Tensor) -> torch.Tensor:
    return output[:, 0]


@pytest.fixture
def region() -> torch.Tensor:
    """The top-left quarter of an 8x8 image."""
    r = torch.zeros(8, 8, dtype=torch.bool)
    r[:4, :4] = True
    return r


def masks_of(region: torch.Tensor, b: int) -> torch.Tensor:
    return region.expand(b, -1, -1).clone()


# ----------------------------------------------------------------------------- localisation


def test_heatmap_equal_to_mask_points_and_has_all_mass(region):
    masks = masks_of(region, 3)
    heat = masks.float()
    assert metrics.pointing_game(heat, masks).tolist() == [True] * 3
    assert torch.allclose(metrics.mass_in_mask(heat, masks), torch.ones(3))


def test_heatmap_off_the_mask_misses_and_has_no_mass(region):
    masks = masks_of(region, 2)
    heat = (~masks).float()
    assert metrics.pointing_game(heat, masks).tolist() == [False, False]
    assert metrics.mass_in_mask(heat, masks).tolist() == [0.0, 0.0]


def test_uniform_map_has_the_mask_area_as_mass_and_no_point(region):
    masks = masks_of(region, 1)
    heat = torch.ones(1, 8, 8)
    assert metrics.mass_in_mask(heat, masks).item() == pytest.approx(0.25)
    assert metrics.pointing_game(heat, masks).tolist() == [False]  # constant: no point
    zero = torch.zeros(1, 8, 8)
    assert metrics.mass_in_mask(zero, masks).item() == 0.0
    assert metrics.pointing_game(zero, masks).tolist() == [False]


def test_pointing_tolerance_is_a_pixel_distance():
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 5, 5] = True
    heat = torch.zeros(1, 20, 20)
    heat[0, 5, 8] = 1.0  # 3 px to the right of the mask
    assert not metrics.pointing_game(heat, masks, tolerance=2).item()
    assert metrics.pointing_game(heat, masks, tolerance=3).item()
    heat[0, 7, 7] = 1.0  # now two maxima: (5,8) and (7,7), 2.83 px away: half inside
    assert metrics.pointing_game(heat, masks, tolerance=3).item()
    assert not metrics.pointing_game(heat, masks, tolerance=2).item()


def test_small_heatmaps_are_resized_to_the_mask(region):
    masks = masks_of(region, 1)
    heat = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # 2x2: the top-left cell is hot
    assert metrics.pointing_game(heat, masks).item()
    assert metrics.mass_in_mask(heat, masks).item() > 0.7


# ----------------------------------------------------------------------------- deletion / insertion


def test_deletion_and_insertion_follow_the_region_exactly(region):
    """Constant image, zero baseline, 4 steps of 16 pixels = the region's size: exact AUCs."""
    model = RegionSum(region)
    images = torch.ones(3, 3, 8, 8)
    on = region.float()
    heat = torch.stack([on, 1 - on, on])  # the region first / last / first
    deletion, insertion = metrics.deletion_insertion(
        model, images, heat, first, steps=4, baseline="zeros"
    )
    # deletion curves: 1,0,0,0,0 (region first) and 1,1,1,1,0 (region last)
    assert torch.allclose(deletion, torch.tensor([0.125, 0.875, 0.125]))
    assert torch.allclose(insertion, torch.tensor([0.875, 0.125, 0.875]))


def test_deletion_ranks_orders_as_expected_on_random_images(region):
    torch.manual_seed(0)
    model = RegionSum(region)
    images = torch.rand(4, 3, 8, 8) + 0.5
    on = region.float().expand(4, -1, -1)
    noise = torch.rand(4, 8, 8)
    good = metrics.deletion_insertion(model, images, on, first, baseline="zeros")
    rand = metrics.deletion_insertion(model, images, noise, first, baseline="zeros")
    bad = metrics.deletion_insertion(model, images, 1 - on, first, baseline="zeros")
    assert (good[0] < 0.2).all() and (bad[0] > 0.8).all()
    assert (good[0] < rand[0]).all() and (rand[0] < bad[0]).all()
    assert (good[1] > rand[1]).all() and (rand[1] > bad[1]).all()


def test_curves_start_and_end_at_the_clean_and_baseline_scores(region):
    model = RegionSum(region)
    images = torch.full((2, 3, 8, 8), 2.0)
    heat = torch.rand(2, 8, 8)
    fractions, deletion, insertion = metrics.deletion_insertion_curves(
        model, images, heat, first, steps=8, baseline="zeros", normalise=False
    )
    assert torch.allclose(fractions, torch.linspace(0, 1, 9))
    assert deletion[:, 0].tolist() == [2.0, 2.0] and deletion[:, -1].tolist() == [0.0, 0.0]
    assert insertion[:, 0].tolist() == [0.0, 0.0] and insertion[:, -1].tolist() == [2.0, 2.0]
    assert (deletion[:, 1:] <= deletion[:, :-1] + 1e-6).all()  # only ever removes signal


def test_blurring_a_constant_image_removes_nothing(region):
    model = RegionSum(region)
    images = torch.ones(1, 3, 8, 8)
    deletion, insertion = metrics.deletion_insertion(
        model, images, region[None].float(), first, baseline="blur"
    )
    assert deletion.item() == pytest.approx(1.0) and insertion.item() == pytest.approx(1.0)


def test_batching_scores_and_targets_give_the_same_numbers(region):
    torch.manual_seed(1)
    model = RegionSum(region)
    images = torch.rand(3, 3, 8, 8) + 0.5
    heat = torch.rand(3, 8, 8)
    whole = metrics.deletion_insertion(model, images, heat, first, steps=6, baseline="mean")
    chunked = metrics.deletion_insertion(
        model, images, heat, Dimension(0), steps=6, baseline="mean", batch_size=4
    )
    two_args = metrics.deletion_insertion(
        model, images, heat, lambda out, index: out[:, 0], steps=6, baseline="mean", batch_size=1
    )
    for other in (chunked, two_args):
        assert torch.allclose(whole[0], other[0]) and torch.allclose(whole[1], other[1])


def test_non_positive_clean_scores_are_not_normalised(region):
    model = RegionSum(region)
    images = -torch.ones(1, 3, 8, 8)
    deletion, _ = metrics.deletion_insertion(model, images, torch.rand(1, 8, 8), first)
    assert deletion.isnan().all()


def test_probability_is_the_softmax_of_the_bound_class(region):
    model = RegionSum(region)
    images = torch.full((2, 3, 8, 8), 3.0)
    target = metrics.Probability(ClassLogit(0))
    bound = target.bind(model(images))
    expected = torch.softmax(torch.tensor([3.0, 0.0]), 0)[0]
    assert torch.allclose(bound.score(model(images), torch.tensor([0, 1])), expected.expand(2))
    with pytest.raises(TypeError, match="class target"):
        metrics.Probability(fw.targets.Embedding())


def test_bad_shapes_and_baselines_are_explained(region):
    model = RegionSum(region)
    with pytest.raises(ValueError, match=r"\(B,h,w\)"):
        metrics.deletion_insertion(model, torch.ones(2, 3, 8, 8), torch.ones(3, 8, 8), first)
    with pytest.raises(ValueError, match="baseline must be one of"):
        metrics.deletion_insertion(
            model, torch.ones(1, 3, 8, 8), torch.ones(1, 8, 8), first, baseline="noise"
        )


# ----------------------------------------------------------------------------- average drop


def test_average_drop_of_known_maps(region):
    model = RegionSum(region)
    images = torch.rand(3, 3, 8, 8) + 0.5
    ones = torch.ones(3, 8, 8)
    drop, increase = metrics.average_drop_increase(model, images, ones, first)
    assert drop.tolist() == [0.0] * 3 and increase.tolist() == [False] * 3
    drop, _ = metrics.average_drop_increase(model, images, 0.5 * ones, first)
    assert torch.allclose(drop, torch.full((3,), 0.5))
    drop, _ = metrics.average_drop_increase(model, images, region.float().expand(3, -1, -1), first)
    assert torch.allclose(drop, torch.zeros(3), atol=1e-6)
    drop, _ = metrics.average_drop_increase(model, images, torch.zeros(3, 8, 8), first)
    assert torch.allclose(drop, torch.ones(3))


def test_average_increase_when_masking_raises_the_score(region):
    model = RegionSum(region)
    images = torch.ones(2, 3, 8, 8)
    drop, increase = metrics.average_drop_increase(
        model, images, torch.full((2, 8, 8), 0.5), lambda out: 10 - out[:, 0]
    )
    assert increase.tolist() == [True, True] and drop.tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------- randomisation


def test_spearman_with_ties_matches_scipy():
    torch.manual_seed(2)
    a = torch.rand(3, 40).round(decimals=1)  # many ties
    b = (a + 0.3 * torch.rand(3, 40)).round(decimals=1)
    ours = metrics.spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i], b[i]).statistic, abs=1e-6)
    assert metrics.spearman(a, a).tolist() == pytest.approx([1.0] * 3)
    assert metrics.spearman(a, -a).tolist() == pytest.approx([-1.0] * 3)
    assert metrics.spearman(a, torch.zeros_like(a)).tolist() == [0.0] * 3


def test_heat_ranks_put_the_hottest_first_and_break_ties():
    heat = torch.zeros(2, 4, 4)
    heat[0, 1, 2] = 1.0
    heat[1, 3, 3] = 1.0
    ranks = metrics.heat_ranks(heat)
    assert ranks[0, 1 * 4 + 2] == 0 and ranks[1, 15] == 0
    assert (ranks.sort(dim=1).values == torch.arange(16)).all()  # a permutation per image
    tied = ranks[0].clone()
    tied[6] = -1
    assert not (tied[tied >= 0] == torch.arange(1, 16)).all()  # zeros not in raster order


def test_randomisation_changes_a_gradient_map_and_not_the_model(tiny_embedding, images, one_thread):
    model = tiny_embedding.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    def explain_fn(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return fw.explain(m, x, method="grad-fam").heatmap

    check = metrics.randomisation_check(model, images, explain_fn)
    assert check["layers"] == ["head", "body.3", "body.1", "body.0"]
    assert check["correlation"].shape == (4, len(images))
    assert check["final"].mean().item() < 0.9
    assert check["mean"][-1].item() < 0.9
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert model.training and torch.equal(torch.get_rng_state(), rng)


def test_a_map_that_ignores_the_model_fails_the_sanity_check(tiny_embedding, images):
    def edges(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x.diff(dim=-1).abs().sum(1)

    check = metrics.randomisation_check(tiny_embedding, images, edges, layers=["head", "body.0"])
    assert check["layers"] == ["head", "body.0"]
    assert torch.allclose(check["correlation"], torch.ones(2, len(images)))


def test_randomisation_is_seeded_and_names_are_checked(tiny_embedding, images, one_thread):
    def explain_fn(m: nn.Module, x: torch.Tensor) -> fw.Explanation:
        return fw.explain(m, x, method="grad-fam")

    a = metrics.randomisation_check(tiny_embedding, images, explain_fn, layers=["body.3"])
    b = metrics.randomisation_check(tiny_embedding, images, explain_fn, layers=["body.3"])
    assert torch.equal(a["correlation"], b["correlation"])
    with pytest.raises(ValueError, match="not modules"):
        metrics.randomisation_check(tiny_embedding, images, explain_fn, layers=["nope"])


# ----------------------------------------------------------------------------- cost


def test_measure_sees_a_large_allocation():
    with metrics.measure("cpu") as usage:
        block = torch.ones(16 * 2**20)  # 64 MiB
        block += 1
        del block
    assert usage.peak_bytes is not None  # Linux: VmHWM, or ru_maxrss's growth
    if "VmHWM" in usage.what:
        assert 60 * 2**20 <= usage.peak_bytes < 1024 * 2**20
    else:
        assert "lower bound" in usage.what


class _Clock:
    """A perf_counter that returns the given readings in turn."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


def test_measure_reports_the_clock_and_the_peak_above_the_start(monkeypatch):
    """With a fake clock and fake /proc readings the figures are the hand-computed ones:
    end minus start, and VmHWM at the end minus VmRSS at the start (never below 0)."""
    status = {"VmRSS": 100 * 2**20, "VmHWM": 164 * 2**20}
    monkeypatch.setattr(metrics, "_reset_peak_rss", lambda: True)
    monkeypatch.setattr(metrics, "_proc_status", lambda field: status[field])
    monkeypatch.setattr(metrics, "time", _Clock(10.0, 12.5))
    with metrics.measure("cpu") as usage:
        pass
    assert usage.seconds == 2.5 and usage.peak_bytes == 64 * 2**20
    assert "VmHWM" in usage.what
    status["VmHWM"] = 90 * 2**20  # resident memory shrank: no negative peak
    monkeypatch.setattr(metrics, "time", _Clock(1.0, 1.25))
    with pytest.raises(RuntimeError, match="inside"), metrics.measure("cpu") as usage:
        raise RuntimeError("inside")
    assert usage.seconds == 0.25 and usage.peak_bytes == 0  # also measured on an error


def test_dilate_grows_by_a_disc():
    masks = torch.zeros(1, 9, 9, dtype=torch.bool)
    masks[0, 4, 4] = True
    grown = metrics.dilate(masks, 2)[0].numpy()
    yy, xx = np.mgrid[:9, :9]
    assert (grown == ((yy - 4) ** 2 + (xx - 4) ** 2 <= 4)).all()
