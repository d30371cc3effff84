"""Procedural flowers (an8Flower-like) whose class is the colour of specific parts.

Every image shows one flower: 4-8 elliptical petals around a centre disc, a (slightly bent)
stem and one or two leaves, on a textured background (smooth colour gradient, illumination
field, optional stripes / colour blobs / grain). Pose (position, scale, rotation, petal count,
petal shape) varies randomly.

* ``variant="single"``: 6 classes, the petal colour. The centre colour comes from a palette
  that is independent of the class; stem and leaves are always green-ish (a hue that no class
  uses). Discriminative part: petals.
* ``variant="double"``: 12 classes = 4 petal colours x 3 centre colours. Discriminative
  parts: petals and centre.

The mask is exact: the part-id map is rendered first (painter's order: background, stem,
leaves, petals, centre; no anti-aliasing) and both the pixels and the masks are derived from
it.
"""

from __future__ import annotations

import numpy as np

from . import drawing as dr
from .drawing import F32, SyntheticSet

# part ids in the part-id map (painter's order)
BACKGROUND, STEM, LEAVES, PETALS, CENTRE = 0, 1, 2, 3, 4
BLOB0 = 5  # background colour blobs use ids BLOB0, BLOB0 + 1, ...
PART_NAMES = {STEM: "stem", LEAVES: "leaves", PETALS: "petals", CENTRE: "centre"}

#: class-defining petal colours: name -> hue in degrees (saturation 0.7-1, value 0.75-1)
PETAL_HUES_SINGLE: dict[str, float] = {
    "red": 0.0,
    "orange": 30.0,
    "yellow": 57.0,
    "cyan": 188.0,
    "blue": 232.0,
    "magenta": 305.0,
}
PETAL_HUES_DOUBLE: dict[str, float] = {"red": 0.0, "yellow": 57.0, "blue": 232.0, "magenta": 305.0}

#: centre colours: name -> ((hue lo, hue hi) deg, (sat lo, hi), (val lo, hi))
CENTRE_COLOURS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "brown": ((20.0, 32.0), (0.65, 0.85), (0.30, 0.45)),
    "white": ((0.0, 360.0), (0.0, 0.08), (0.88, 1.0)),
    "green": ((112.0, 128.0), (0.70, 0.95), (0.55, 0.80)),
    "black": ((0.0, 360.0), (0.0, 0.3), (0.06, 0.16)),
    "golden": ((45.0, 55.0), (0.80, 0.95), (0.85, 1.0)),
}
CENTRE_DOUBLE = ("brown", "white", "green")  # class-defining in variant "double"
CENTRE_DISTRACTORS = ("brown", "white", "green", "black", "golden")  # free in variant "single"

PETAL_HUE_JITTER = 5.0  # degrees
PETAL_SAT = (0.7, 1.0)
PETAL_VAL = (0.75, 1.0)
MAX_PETALS = 8
_CHUNK = 64


def class_names(variant: str = "single") -> list[str]:
    """Human-readable class names of a variant (index = label)."""
    if variant == "single":
        return [f"{p} petals" for p in PETAL_HUES_SINGLE]
    if variant == "double":
        return [f"{p} petals, {c} centre" for p in PETAL_HUES_DOUBLE for c in CENTRE_DOUBLE]
    raise ValueError(f"variant must be 'single' or 'double', got {variant!r}")


def class_colours(variant: str = "single") -> dict[str, np.ndarray]:
    """Nominal class colours as float RGB in [0, 1]: ``{"petals": (C,3)[, "centre": (C,3)]}``.

    Petals: the class hue at saturation 0.85 / value 0.875; centres: middle of their range.
    """
    names = class_names(variant)
    if variant == "single":
        hues = np.array(list(PETAL_HUES_SINGLE.values()))
        return {"petals": dr.hsv_to_rgb(hues / 360.0, np.full(6, 0.85), np.full(6, 0.875))}
    ph = np.repeat(np.array(list(PETAL_HUES_DOUBLE.values())), len(CENTRE_DOUBLE))
    petals = dr.hsv_to_rgb(ph / 360.0, np.full(len(names), 0.85), np.full(len(names), 0.875))
    cen = []
    for i in range(len(names)):
        (h0, h1), (s0, s1), (v0, v1) = CENTRE_COLOURS[CENTRE_DOUBLE[i % len(CENTRE_DOUBLE)]]
        cen.append(dr.hsv_to_rgb(np.array((h0 + h1) / 720.0), (s0 + s1) / 2, (v0 + v1) / 2))
    return {"petals": petals, "centre": np.stack(cen)}


def flowers(n: int, variant: str = "single", size: int = 112, seed: int = 0) -> SyntheticSet:
    """Generate ``n`` flower images with balanced classes.

    Args:
        n: number of images.
        variant: ``"single"`` (6 classes, petal colour) or ``"double"`` (12 classes, petal
            colour x centre colour).
        size: image side ``S`` in pixels (images are ``S x S``); >= 32.
        seed: seed for ``np.random.default_rng``; the same call gives identical arrays.

    Returns:
        :class:`SyntheticSet` with ``images`` uint8 ``(n,S,S,3)``, ``labels`` int64 ``(n,)``,
        ``masks`` bool ``(n,S,S)`` (petals, plus centre for ``"double"``), ``part_masks``
        for ``"petals"``, ``"centre"``, ``"stem"``, ``"leaves"``; ``ids``/``cams`` None.
    """
    ds, _ = render_flowers(n, variant=variant, size=size, seed=seed)
    return ds


def render_flowers(
    n: int, variant: str = "single", size: int = 112, seed: int = 0, flat: bool = False
) -> tuple[SyntheticSet, dict[str, np.ndarray]]:
    """Like :func:`flowers` but also returns the unoccluded coverage of every part.

    Args:
        flat: if True, draw a diagnostic image with the same geometry: black background, no
            lighting or noise, every part in one flat colour (petals/centre: their nominal
            class colour from :func:`class_colours`; stem: (0, 255, 0); leaves: (0, 128, 0);
            single-variant centre: (128, 128, 128)).

    Returns:
        ``(dataset, full)`` where ``full[part]`` is bool ``(n,S,S)``: pixels covered by that
        part before later parts are painted over it.
    """
    names = class_names(variant)
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    size = int(size)
    if size < 32:
        raise ValueError("size must be >= 32")
    rng = np.random.default_rng(seed)
    n_cls = len(names)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % n_cls)
    p = _sample(rng, labels, variant, size)
    if flat:
        _flatten_palette(p, labels, variant)

    images = np.empty((n, size, size, 3), np.uint8)
    pid = np.empty((n, size, size), np.uint8)
    full = {name: np.empty((n, size, size), bool) for name in PART_NAMES.values()}
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(n, s + _CHUNK))
        chunk = {k: v[sl] for k, v in p.items()}
        images[sl], pid[sl], parts = _render(rng, chunk, size, flat)
        for name in full:
            full[name][sl] = parts[name]

    part_masks = {name: pid == k for k, name in PART_NAMES.items()}
    disc = ("petals",) if variant == "single" else ("petals", "centre")
    masks = np.zeros((n, size, size), bool)
    for name in disc:
        masks |= part_masks[name]
    ds = SyntheticSet(
        images=images,
        labels=labels,
        masks=masks,
        classes=names,
        part_masks=part_masks,
        discriminative=disc,
    )
    return ds, full


def _hsv(h_deg: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return dr.hsv_to_rgb(np.asarray(h_deg) / 360.0, s, v)


def _sample_centre(rng: np.random.Generator, which: np.ndarray, table: tuple[str, ...]):
    n = which.shape[0]
    lo = np.array([[CENTRE_COLOURS[t][i][0] for i in range(3)] for t in table])[which]
    hi = np.array([[CENTRE_COLOURS[t][i][1] for i in range(3)] for t in table])[which]
    u = rng.random((n, 3))
    hsv = lo + u * (hi - lo)
    return _hsv(hsv[:, 0], hsv[:, 1], hsv[:, 2])


def _sample(rng: np.random.Generator, labels: np.ndarray, variant: str, size: int) -> dict:
    """All per-image random parameters (arrays with first axis N)."""
    n = labels.shape[0]
    S = float(size)
    u = lambda lo, hi, shape=n: rng.uniform(lo, hi, shape).astype(F32)  # noqa: E731
    p: dict[str, np.ndarray] = {}

    # --- colours -----------------------------------------------------------------------
    if variant == "single":
        hue = np.array(list(PETAL_HUES_SINGLE.values()))[labels]
        centre_rgb = _sample_centre(
            rng, rng.integers(0, len(CENTRE_DISTRACTORS), n), CENTRE_DISTRACTORS
        )
    else:
        hue = np.array(list(PETAL_HUES_DOUBLE.values()))[labels // len(CENTRE_DOUBLE)]
        centre_rgb = _sample_centre(rng, labels % len(CENTRE_DOUBLE), CENTRE_DOUBLE)
    hue = hue + u(-PETAL_HUE_JITTER, PETAL_HUE_JITTER)
    petal_rgb = _hsv(hue, u(*PETAL_SAT), u(*PETAL_VAL))
    stem_h = u(85, 150)
    stem_rgb = _hsv(stem_h, u(0.45, 0.85), u(0.3, 0.7))
    leaf_rgb = _hsv(np.clip(stem_h + u(-12, 12), 80, 155), u(0.45, 0.9), u(0.3, 0.75))
    pal = np.zeros((n, 5, 3), F32)
    pal[:, STEM], pal[:, LEAVES], pal[:, PETALS], pal[:, CENTRE] = (
        stem_rgb,
        leaf_rgb,
        petal_rgb,
        centre_rgb,
    )
    p["palette"] = pal

    # --- background ----------------------------------------------------------------------
    p["bg0"] = _hsv(u(0, 360), u(0.05, 0.45), u(0.25, 0.9))
    p["bg1"] = _hsv(u(0, 360), u(0.05, 0.45), u(0.25, 0.9))
    p["bg_angle"] = u(0, 2 * np.pi)
    p["bg_contrast"] = u(0.3, 1.0)
    p["stripe_amp"] = np.where(rng.random(n) < 0.35, u(0.06, 0.22), 0).astype(F32)
    p["stripe_freq"] = (2 * np.pi / (u(5, 18) * S / 112)).astype(F32)
    p["stripe_angle"] = u(0, np.pi)
    p["stripe_phase"] = u(0, 2 * np.pi)
    n_blobs = 5
    has_blobs = rng.random(n) < 0.5
    p["blob_r"] = (u(0.04, 0.16, (n, n_blobs)) * S * has_blobs[:, None]).astype(F32)
    p["blob_ratio"] = u(0.4, 1.0, (n, n_blobs))
    p["blob_y"] = u(0, S, (n, n_blobs))
    p["blob_x"] = u(0, S, (n, n_blobs))
    p["blob_angle"] = u(0, np.pi, (n, n_blobs))
    p["blob_rgb"] = _hsv(
        u(0, 360, (n, n_blobs)), u(0.05, 0.55, (n, n_blobs)), u(0.2, 0.95, (n, n_blobs))
    )
    p["grain_amp"] = np.where(rng.random(n) < 0.5, u(0.05, 0.2), 0).astype(F32)

    # --- flower geometry -----------------------------------------------------------------
    R = u(0.2, 0.32) * S
    cx = rng.uniform(R + 1, S - R - 1).astype(F32)
    cy = rng.uniform(R + 1, np.maximum(0.62 * S, R + 2)).astype(F32)
    k = rng.integers(4, MAX_PETALS + 1, n)
    a = R * u(0.42, 0.5)  # radial semi-axis; the petal tip is at distance R
    b = a * u(0.4, 0.62)
    phi0 = u(0, 2 * np.pi)
    j = np.arange(MAX_PETALS)
    jitter_len = u(0.9, 1.0, (n, MAX_PETALS))
    ang = phi0[:, None] + 2 * np.pi * j[None] / k[:, None] + u(-0.08, 0.08, (n, MAX_PETALS))
    pa = a[:, None] * jitter_len
    dist = R[:, None] * jitter_len - pa
    active = j[None] < k[:, None]
    p["petal_a"] = np.where(active, pa, 0).astype(F32)
    p["petal_b"] = np.where(active, b[:, None] * u(0.9, 1.1, (n, MAX_PETALS)), 0).astype(F32)
    p["petal_y"] = (cy[:, None] + dist * np.sin(ang)).astype(F32)
    p["petal_x"] = (cx[:, None] + dist * np.cos(ang)).astype(F32)
    p["petal_angle"] = ang.astype(F32)
    p["cy"], p["cx"], p["R"] = cy, cx, R
    p["centre_r"] = np.maximum(R * u(0.22, 0.3), 2.5).astype(F32)

    # stem from the flower centre to below the bottom edge, gently bent
    y1 = np.full(n, S + 2, F32)
    x1 = cx + u(-0.25, 0.25) * S
    bend = u(-0.08, 0.08) * S
    p["stem"] = np.stack([cy, cx, y1, x1]).T.astype(F32)
    p["stem_hw"] = np.maximum(u(0.012, 0.025) * S, 1.0).astype(F32)
    p["stem_bend"] = bend
    # leaves: attached on the (bent) stem axis, pointing outwards/upwards
    vy, vx = y1 - cy, x1 - cx
    length = np.hypot(vx, vy)
    uy, ux = vy / length, vx / length
    stem_angle = np.arctan2(uy, ux)
    n_leaves = rng.integers(1, 3, n)
    side0 = rng.choice(np.array([-1.0, 1.0], F32), n)
    leaf = []
    for i in range(2):
        t = u(0.45, 0.8)
        side = side0 * (1 if i == 0 else -1)
        off = 4 * bend * t * (1 - t)
        ay = cy + t * vy + off * ux
        ax = cx + t * vx - off * uy
        # rotate away from "down the stem" towards the side, i.e. pointing up and out
        la = stem_angle + np.pi - side * u(0.6, 1.2)
        long = u(0.11, 0.19) * S * (i < n_leaves)
        short = long * u(0.3, 0.42)
        leaf.append(
            np.stack(
                [ay + 0.9 * long * np.sin(la), ax + 0.9 * long * np.cos(la), short, long, la]
            ).T
        )
    p["leaves"] = np.stack(leaf, 1).astype(F32)  # (n, 2, 5): cy, cx, ry, rx, angle

    # --- lighting ------------------------------------------------------------------------
    p["gain"] = u(0.8, 1.15)
    p["light_amp"] = u(0.0, 0.25)
    p["light_angle"] = u(0, 2 * np.pi)
    p["noise"] = u(0.02, 0.045)
    return p


def _flatten_palette(p: dict, labels: np.ndarray, variant: str) -> None:
    cols = class_colours(variant)
    pal = p["palette"]
    pal[:, PETALS] = cols["petals"][labels]
    if variant == "double":
        pal[:, CENTRE] = cols["centre"][labels]
    else:
        pal[:, CENTRE] = 128 / 255
    pal[:, STEM] = (0.0, 1.0, 0.0)
    pal[:, LEAVES] = (0.0, 128 / 255, 0.0)


def _render(rng: np.random.Generator, p: dict, size: int, flat: bool):
    """Render one chunk. Returns ``(uint8 images, uint8 part-id map, full part coverage)``.

    Works on colour planes ``(n, H, W)`` (contiguous, fast) and interleaves at the end.
    """
    n, H, W = p["cy"].shape[0], size, size
    S = F32(size)
    pid = np.zeros((n, H, W), np.uint8)
    full: dict[str, np.ndarray] = {}

    # background colour blobs (ids BLOB0..), then stem, leaves, petals, centre
    n_blobs = p["blob_r"].shape[1]
    for j in range(n_blobs):
        if flat or not np.any(p["blob_r"][:, j] > 0):
            continue
        blob = dr.ellipse(
            H,
            W,
            p["blob_y"][:, j],
            p["blob_x"][:, j],
            p["blob_r"][:, j] * p["blob_ratio"][:, j],
            p["blob_r"][:, j],
            p["blob_angle"][:, j],
        )
        dr.paint(pid, blob, BLOB0 + j)
    y0, x0, y1, x1 = p["stem"].T
    cover = dr.band(H, W, y0, x0, y1, x1, p["stem_hw"], p["stem_bend"])
    full["stem"] = cover
    dr.paint(pid, cover, STEM)
    lv = p["leaves"]
    cover = dr.ellipse(H, W, *(lv[:, 0, i] for i in range(5)))
    cover |= dr.ellipse(H, W, *(lv[:, 1, i] for i in range(5)))
    full["leaves"] = cover
    dr.paint(pid, cover, LEAVES)
    cover = np.zeros((n, H, W), bool)
    for j in range(MAX_PETALS):
        if not np.any(p["petal_a"][:, j] > 0):
            continue
        cover |= dr.ellipse(
            H,
            W,
            p["petal_y"][:, j],
            p["petal_x"][:, j],
            p["petal_b"][:, j],
            p["petal_a"][:, j],
            p["petal_angle"][:, j],
        )
    full["petals"] = cover
    dr.paint(pid, cover, PETALS)
    r = p["centre_r"]
    cover = dr.ellipse(H, W, p["cy"], p["cx"], r, r)
    full["centre"] = cover
    dr.paint(pid, cover, CENTRE)

    n_ids = BLOB0 + n_blobs
    pal = np.concatenate([p["palette"], p["blob_rgb"]], axis=1)  # (n, n_ids, 3)
    idx = pid.astype(np.int32)
    idx += (np.arange(n, dtype=np.int32) * n_ids)[:, None, None]
    out = np.empty((n, H, W, 3), np.uint8)
    if flat:
        pal[:, BACKGROUND] = 0.0
        for c in range(3):
            out[..., c] = dr.to_uint8(np.take(pal[:, :, c].ravel(), idx))
        return out, pid, full

    # one multiplicative factor per pixel: background texture or flower shading, times the
    # global gain and a linear illumination gradient
    is_bg = (pid == BACKGROUND) | (pid >= BLOB0)
    factor = _background_modulation(rng, p, H, W)
    dy, dx = dr.offsets(H, W, p["cy"], p["cx"])
    r2 = dx * dx + dy * dy  # full
    r2 *= dr.col(1.0 / p["R"] ** 2)
    np.minimum(r2, 1.0, out=r2)
    r2 *= F32(0.22)
    r2 += F32(0.78)
    np.copyto(r2, F32(1.0), where=pid < PETALS)
    np.copyto(factor, r2, where=~is_bg)
    ang = dr.col(p["light_angle"])
    ly, lx = dr.offsets(H, W, np.full(n, H / 2), np.full(n, W / 2))
    grad = (np.cos(ang) / S) * lx + (np.sin(ang) / S) * ly
    grad *= dr.col(p["light_amp"])
    grad += F32(1.0)
    grad *= dr.col(p["gain"])
    factor *= grad

    # gradient background colours
    ang = dr.col(p["bg_angle"])
    t = (np.cos(ang) / S) * lx + (np.sin(ang) / S) * ly  # in [-0.71, 0.71]
    t *= dr.col(p["bg_contrast"])
    t += F32(0.5)
    is_grad = pid == BACKGROUND
    noise_amp = dr.col(p["noise"] * 2.0 / 255.0)
    for c in range(3):
        plane = np.take(pal[:, :, c].ravel(), idx)
        c0 = dr.col(p["bg0"][:, c])
        g = t * (dr.col(p["bg1"][:, c]) - c0)
        g += c0
        np.copyto(plane, g, where=is_grad)
        plane *= factor
        noise = np.frombuffer(rng.bytes(n * H * W), np.uint8).reshape(n, H, W)
        noise = noise.astype(F32)
        noise -= F32(127.5)
        noise *= noise_amp
        plane += noise
        out[..., c] = dr.to_uint8(plane)
    return out, pid, full


def _background_modulation(rng: np.random.Generator, p: dict, H: int, W: int) -> np.ndarray:
    """Background brightness texture, float32 ``(n, H, W)`` around 1: a low-frequency field,
    optional stripes and optional fine grain."""
    n = p["bg0"].shape[0]
    mod = dr.smooth_field(rng, n, H, W, 3)
    mod -= F32(0.5)
    mod *= F32(0.35)
    mod += F32(1.0)
    if np.any(p["stripe_amp"] > 0):
        mod += dr.col(p["stripe_amp"]) * dr.wave(
            H, W, p["stripe_freq"], p["stripe_angle"], p["stripe_phase"]
        )
    if np.any(p["grain_amp"] > 0):
        g = dr.smooth_field(rng, n, H, W, max(4, H // 5))
        g -= F32(0.5)
        g *= dr.col(2 * p["grain_amp"])
        mod += g
    return mod
