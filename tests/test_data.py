"""Tests for famwidget.data: synthetic flowers/persons with exact masks, bundled photos."""

from __future__ import annotations

import numpy as np
import pytest

from famwidget.data import SyntheticSet, flowers, persons, photos
from famwidget.data.flowers import (
    CENTRE_DOUBLE,
    PETAL_HUES_DOUBLE,
    PETAL_HUES_SINGLE,
    class_colours,
    render_flowers,
)
from famwidget.data.persons import ATTRIBUTE_SIZES, SHIRT_COLOURS, sample_identities


def hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB (..., 3) -> hue in degrees [0, 360), saturation, value in [0, 1]."""
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    c = mx - mn
    safe = np.where(c > 0, c, 1.0)
    h = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = np.where(c > 0, h * 60.0, 0.0)
    s = np.where(mx > 0, c / np.where(mx > 0, mx, 1.0), 0.0)
    return h, s, mx


def hue_dist(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    d = np.abs(np.asarray(a) - b) % 360.0
    return np.minimum(d, 360.0 - d)


@pytest.fixture(scope="module")
def single() -> SyntheticSet:
    return flowers(96, variant="single", size=112, seed=5)


@pytest.fixture(scope="module")
def double() -> SyntheticSet:
    return flowers(96, variant="double", size=112, seed=6)


@pytest.fixture(scope="module")
def people() -> SyntheticSet:
    return persons(40, 8, seed=3)


# --------------------------------------------------------------------------------- flowers


@pytest.mark.parametrize("variant,n_cls", [("single", 6), ("double", 12)])
def test_flowers_shapes_and_balance(variant: str, n_cls: int) -> None:
    ds = flowers(50, variant=variant, size=64, seed=1)
    assert len(ds) == 50
    assert ds.images.shape == (50, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (50,) and ds.labels.dtype == np.int64
    assert ds.masks.shape == (50, 64, 64) and ds.masks.dtype == bool
    assert len(ds.classes) == n_cls == ds.n_classes and len(set(ds.classes)) == n_cls
    assert ds.ids is None and ds.cams is None
    counts = np.bincount(ds.labels, minlength=n_cls)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 50
    assert set(ds.part_masks) == {"petals", "centre", "stem", "leaves"}
    for m in ds.part_masks.values():
        assert m.shape == (50, 64, 64) and m.dtype == bool


def test_flowers_bad_arguments() -> None:
    with pytest.raises(ValueError):
        flowers(4, variant="triple")
    with pytest.raises(ValueError):
        flowers(4, size=8)


def test_flowers_deterministic() -> None:
    a = flowers(24, seed=11)
    b = flowers(24, seed=11)
    c = flowers(24, seed=12)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert a.images.tobytes() != c.images.tobytes()
    assert a.masks.tobytes() != c.masks.tobytes()


@pytest.mark.parametrize(
    "fixture,disc", [("single", ("petals",)), ("double", ("petals", "centre"))]
)
def test_flowers_masks_are_union_of_discriminative_parts(fixture, disc, request) -> None:
    ds: SyntheticSet = request.getfixturevalue(fixture)
    assert ds.discriminative == disc
    union = np.zeros_like(ds.masks)
    for name in disc:
        union |= ds.part_masks[name]
    assert np.array_equal(ds.masks, union)
    # parts are disjoint (one part id per pixel)
    total = sum(m.astype(np.int32) for m in ds.part_masks.values())
    assert total.max() == 1
    # every image has a non-trivial mask and every discriminative part is visible
    per_image = ds.masks.reshape(len(ds), -1).sum(1)
    assert per_image.min() >= 150
    for name in disc:
        assert ds.part_masks[name].reshape(len(ds), -1).sum(1).min() >= 40


@pytest.mark.parametrize("variant", ["single", "double"])
def test_flowers_mask_matches_flat_rendering(variant: str) -> None:
    """A flat re-render with the same seed has identical geometry and paints exactly the mask
    pixels with the nominal class colours."""
    seed = 21
    ds, full = render_flowers(40, variant=variant, size=80, seed=seed)
    flat, full_flat = render_flowers(40, variant=variant, size=80, seed=seed, flat=True)
    assert np.array_equal(ds.masks, flat.masks)
    for name in ds.part_masks:
        assert np.array_equal(ds.part_masks[name], flat.part_masks[name])
        assert np.array_equal(full[name], full_flat[name])
    cols = {k: np.round(v * 255).astype(np.uint8) for k, v in class_colours(variant).items()}
    for i in range(len(flat)):
        img, lab = flat.images[i], flat.labels[i]
        petal_px = np.all(img == cols["petals"][lab], axis=-1)
        assert np.array_equal(petal_px, flat.part_masks["petals"][i])
        if variant == "double":
            centre_px = np.all(img == cols["centre"][lab], axis=-1)
            assert np.array_equal(centre_px, flat.part_masks["centre"][i])
            assert np.array_equal(petal_px | centre_px, flat.masks[i])
        drawn = np.any(np.stack([flat.part_masks[k][i] for k in flat.part_masks]), axis=0)
        assert np.all(img[~drawn] == 0)  # flat background is black


def test_flowers_visible_parts_and_occlusion(single: SyntheticSet) -> None:
    ds, full = render_flowers(60, variant="single", size=112, seed=5)
    for name, vis in ds.part_masks.items():
        assert not np.any(vis & ~full[name]), name  # visible pixels are drawn pixels
    # the centre is drawn last, so it is never covered
    assert np.array_equal(ds.part_masks["centre"], full["centre"])
    # petals are mostly visible (only their inner ends are under the centre disc)
    vis = ds.part_masks["petals"].reshape(60, -1).sum(1)
    drawn = full["petals"].reshape(60, -1).sum(1)
    assert np.all(vis / drawn >= 0.7)
    assert np.mean(vis / drawn) >= 0.85


def test_flowers_petal_hue_matches_class(single: SyntheticSet) -> None:
    hues = np.array(list(PETAL_HUES_SINGLE.values()))
    for i in range(len(single)):
        h, s, _ = hsv(single.images[i][single.masks[i]])
        target = hues[single.labels[i]]
        d = hue_dist(h, target)
        assert np.median(d) < 8.0
        assert np.mean(d < 20.0) > 0.95
        assert np.median(s) > 0.5
        # the nearest class hue is the right one
        med_h = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(h)))))
        assert np.argmin(hue_dist(hues, med_h)) == single.labels[i]


def test_flowers_double_centre_colour(double: SyntheticSet) -> None:
    petal_hues = np.array(list(PETAL_HUES_DOUBLE.values()))
    n_c = len(CENTRE_DOUBLE)
    for i in range(len(double)):
        lab = double.labels[i]
        h, _, _ = hsv(double.images[i][double.part_masks["petals"][i]])
        assert np.median(hue_dist(h, petal_hues[lab // n_c])) < 8.0
        h, s, _ = hsv(double.images[i][double.part_masks["centre"][i]])
        name = CENTRE_DOUBLE[lab % n_c]
        if np.median(s) < 0.25:
            got = "white"
        elif np.median(hue_dist(h, 120.0)) < 30:
            got = "green"
        else:
            got = "brown"
        assert got == name, (i, double.classes[lab])


def test_flowers_background_does_not_give_class() -> None:
    ds = flowers(600, variant="single", size=48, seed=9)
    bg = ~np.any(np.stack(list(ds.part_masks.values())), axis=0)
    feats = np.array([ds.images[i][bg[i]].mean(0) for i in range(len(ds))])
    tr, te = slice(0, 300), slice(300, 600)
    cent = np.array([feats[tr][ds.labels[tr] == c].mean(0) for c in range(6)])
    pred = np.argmin(((feats[te][:, None] - cent[None]) ** 2).sum(-1), 1)
    assert np.mean(pred == ds.labels[te]) < 0.35  # chance is 1/6


def test_flowers_pose_varies(single: SyntheticSet) -> None:
    ys, xs = [], []
    for m in single.masks:
        yy, xx = np.nonzero(m)
        ys.append(yy.mean())
        xs.append(xx.mean())
    assert np.std(xs) > 6 and np.std(ys) > 4
    area = single.masks.reshape(len(single), -1).sum(1)
    assert area.max() > 2 * area.min()


def test_subset_getitem_and_tensors(single: SyntheticSet) -> None:
    sub = single[:10]
    assert isinstance(sub, SyntheticSet) and len(sub) == 10
    assert np.array_equal(sub.images, single.images[:10])
    assert np.array_equal(sub.part_masks["petals"], single.part_masks["petals"][:10])
    img, lab, mask = single[3]
    assert img.shape == (112, 112, 3) and lab == single.labels[3] and mask.shape == (112, 112)
    pick = single.subset(np.array([5, 1]))
    assert np.array_equal(pick.labels, single.labels[[5, 1]])
    torch = pytest.importorskip("torch")
    x, y, m = sub.tensors()
    assert x.shape == (10, 3, 112, 112) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert np.allclose(x[2].permute(1, 2, 0).numpy() * 255, single.images[2], atol=1e-3)
    assert y.dtype == torch.int64 and y.tolist() == single.labels[:10].tolist()
    assert m.dtype == torch.bool and m.shape == (10, 112, 112)
    assert bool((m.numpy() == sub.masks).all())


# --------------------------------------------------------------------------------- persons


def test_persons_shapes(people: SyntheticSet) -> None:
    n = 40 * 8
    assert people.images.shape == (n, 128, 64, 3) and people.images.dtype == np.uint8
    assert people.masks.shape == (n, 128, 64) and people.masks.dtype == bool
    assert people.labels.dtype == np.int64 and people.cams.dtype == np.int64
    assert np.array_equal(people.labels, np.repeat(np.arange(40), 8))
    assert np.array_equal(people.ids, people.labels)
    assert len(people.classes) == 40 and len(set(people.classes)) == 40
    assert people.cams.min() >= 0 and people.cams.max() < 6
    small = persons(3, 2, size=(96, 48), seed=0)
    assert small.images.shape == (6, 96, 48, 3)


def test_persons_cameras(people: SyntheticSet) -> None:
    n_cams = [len(np.unique(people.cams[people.labels == i])) for i in range(40)]
    assert min(n_cams) >= 2 and max(n_cams) <= 6
    assert len(np.unique(people.cams)) == 6


def test_persons_deterministic() -> None:
    a, b, c = persons(5, 3, seed=2), persons(5, 3, seed=2), persons(5, 3, seed=4)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert np.array_equal(a.cams, b.cams) and a.classes == b.classes
    assert a.images.tobytes() != c.images.tobytes()


def test_persons_masks(people: SyntheticSet) -> None:
    union = np.zeros_like(people.masks)
    for name in ("torso", "shoes", "bag", "hat"):
        union |= people.part_masks[name]
    assert np.array_equal(people.masks, union)
    total = sum(m.astype(np.int32) for m in people.part_masks.values())
    assert total.max() == 1
    area = lambda name: people.part_masks[name].reshape(len(people), -1).sum(1)  # noqa: E731
    assert area("torso").min() >= 150 and area("shoes").min() >= 10
    has_bag = np.array(["no bag" not in people.classes[i] for i in people.labels])
    has_hat = np.array(["no hat" not in people.classes[i] for i in people.labels])
    assert np.all((area("bag") > 0) == has_bag)
    assert np.all((area("hat") > 0) == has_hat)
    assert has_bag.any() and (~has_bag).any() and has_hat.any() and (~has_hat).any()


def test_persons_identity_colour_stable_across_cameras(people: SyntheticSet) -> None:
    """Plain shirts: the median torso colour is stable within an identity (over cameras and
    poses) and separates identities with different shirt colours."""
    shirt = [c.split(" shirt")[0] for c in people.classes]
    plain = [i for i, c in enumerate(people.classes) if " shirt," in c]
    assert len(plain) >= 5
    med = {
        i: np.array(
            [
                np.median(people.images[k][people.part_masks["torso"][k]], 0)
                for k in np.nonzero(people.labels == i)[0]
            ]
        )
        for i in plain
    }
    cent = {i: m.mean(0) for i, m in med.items()}
    for i in plain:
        assert np.abs(med[i] - cent[i]).max() < 70, people.classes[i]
        target = np.array(SHIRT_COLOURS[shirt[i]])
        h, _, _ = hsv(cent[i].astype(np.uint8))
        if target[1] > 0.3:  # chromatic shirts keep their hue
            assert hue_dist(h, target[0]) < 20, people.classes[i]
    correct = total = 0
    for i in plain:
        others = [j for j in plain if shirt[j] != shirt[i]] + [i]
        for m in med[i]:
            d = [np.abs(m - cent[j]).sum() for j in others]
            correct += others[int(np.argmin(d))] == i
            total += 1
    assert correct / total >= 0.95


def test_persons_free_parts_vary_within_identity(people: SyntheticSet) -> None:
    legs = np.array(
        [np.median(people.images[k][people.part_masks["legs"][k]], 0) for k in range(len(people))]
    )
    spread = [legs[people.labels == i].std(0).max() for i in range(40)]
    assert np.median(spread) > 20  # trousers colour changes between images of one identity
    cx = np.array([np.nonzero(m)[1].mean() for m in people.part_masks["torso"]])
    assert np.mean([cx[people.labels == i].std() for i in range(40)]) > 1.5


def test_sample_identities_distinct() -> None:
    rng = np.random.default_rng(0)
    d = sample_identities(rng, 200)
    assert d.shape == (200, 5)
    assert len({tuple(r) for r in d}) == 200
    assert np.all(d >= 0) and np.all(d < np.array(ATTRIBUTE_SIZES))
    small = sample_identities(np.random.default_rng(1), 60)
    ham = (small[:, None] != small[None]).sum(-1) + 5 * np.eye(60, dtype=int)
    assert ham.min() >= 2
    with pytest.raises(ValueError):
        persons(int(np.prod(ATTRIBUTE_SIZES)) + 1, 2)


# ---------------------------------------------------------------------------------- photos


def test_photos() -> None:
    pics = photos()
    assert len(pics) >= 5
    for name, img in pics.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert img.shape[0] >= 64 and img.shape[1] >= 64
        assert img.std() > 10, name
    assert {"astronaut", "cat", "coffee", "china", "grace_hopper"} <= set(pics)
    one = photos(["cat"])
    assert list(one) == ["cat"] and np.array_equal(one["cat"], pics["cat"])
    one["cat"][:] = 0  # callers get copies
    assert photos(["cat"])["cat"].any()
    with pytest.raises(ValueError, match="unknown photo"):
        photos(["no-such-photo"])


def test_photos_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    mod = importlib.import_module("famwidget.data.photos")
    monkeypatch.setattr(mod, "_CACHE", {})
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match="scikit-image"):
        photos(["astronaut"])


def test_empty_sets() -> None:
    assert len(flowers(0)) == 0 and flowers(0).images.shape == (0, 112, 112, 3)
    assert len(persons(0, 3)) == 0
