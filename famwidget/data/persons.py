"""Synthetic pedestrians for re-identification, with exact masks of the identity parts.

Each identity is a descriptor ``(shirt colour, shirt pattern, shoe colour, bag, hat)``;
identities are drawn without replacement from the 12 x 4 x 4 x 5 x 3 = 2880 combinations
(preferring descriptors that differ from all others in at least two attributes). Between images
of one identity everything else varies: camera (colour cast, brightness, background style),
pose (arm/leg swing, lean, facing side, bag side), scale, horizontal position, trousers, skin and
hair colour, background clutter and pixel noise.

Discriminative (identity) parts: ``torso`` (shirt incl. pattern), ``shoes``, ``bag`` (incl. its
strap) and ``hat``. Other parts: ``legs`` (trousers), ``arms`` and ``head`` (skin), ``hair``.
Painter's order: background clutter, hair, legs, shoes, torso, arms, bag, head, hat.
"""

from __future__ import annotations

import numpy as np

from . import drawing as dr
from .drawing import F32, SyntheticSet

HSV = tuple[float, float, float]  # hue in degrees, saturation, value

SHIRT_COLOURS: dict[str, HSV] = {
    "red": (0.0, 0.85, 0.8),
    "orange": (28.0, 0.9, 0.95),
    "yellow": (55.0, 0.85, 0.95),
    "green": (125.0, 0.7, 0.6),
    "cyan": (185.0, 0.7, 0.8),
    "blue": (225.0, 0.8, 0.7),
    "purple": (275.0, 0.6, 0.6),
    "pink": (330.0, 0.45, 0.95),
    "white": (0.0, 0.0, 0.95),
    "black": (0.0, 0.0, 0.12),
    "grey": (0.0, 0.0, 0.55),
    "brown": (25.0, 0.65, 0.42),
}
PATTERNS = ("plain", "horizontal stripes", "vertical stripes", "checks")
SHOE_COLOURS: dict[str, HSV] = {
    "black": (0.0, 0.0, 0.1),
    "white": (0.0, 0.0, 0.93),
    "red": (0.0, 0.85, 0.8),
    "blue": (220.0, 0.8, 0.75),
}
BAG_COLOURS: dict[str, HSV | None] = {
    "none": None,
    "black": (0.0, 0.0, 0.12),
    "tan": (33.0, 0.55, 0.7),
    "red": (355.0, 0.8, 0.65),
    "green": (140.0, 0.6, 0.5),
}
HAT_COLOURS: dict[str, HSV | None] = {"none": None, "red": (0.0, 0.85, 0.8), "white": (0, 0, 0.93)}
ATTRIBUTE_SIZES = (
    len(SHIRT_COLOURS),
    len(PATTERNS),
    len(SHOE_COLOURS),
    len(BAG_COLOURS),
    len(HAT_COLOURS),
)

# free (non-identity) colours, drawn per image
TROUSER_COLOURS: tuple[HSV, ...] = (
    (220.0, 0.5, 0.45),
    (0.0, 0.0, 0.12),
    (0.0, 0.0, 0.4),
    (38.0, 0.3, 0.75),
    (25.0, 0.5, 0.35),
    (70.0, 0.4, 0.4),
)
HAIR_COLOURS: tuple[HSV, ...] = (
    (0.0, 0.0, 0.08),
    (25.0, 0.6, 0.25),
    (45.0, 0.5, 0.8),
    (0.0, 0.0, 0.6),
    (15.0, 0.7, 0.45),
)

# part ids (painter's order); clutter rectangles use CLUTTER0, CLUTTER0 + 1, ...
BACKGROUND, HAIR, LEGS, SHOES, TORSO, TORSO_ALT, ARMS, BAG, HEAD, HAT = range(10)
CLUTTER0 = 10
N_CLUTTER = 6
PART_IDS: dict[str, tuple[int, ...]] = {
    "hair": (HAIR,),
    "legs": (LEGS,),
    "shoes": (SHOES,),
    "torso": (TORSO, TORSO_ALT),
    "arms": (ARMS,),
    "bag": (BAG,),
    "head": (HEAD,),
    "hat": (HAT,),
}
DISCRIMINATIVE = ("torso", "shoes", "bag", "hat")
N_CAMS = 6
_CHUNK = 64


def persons(
    n_ids: int, per_id: int, size: tuple[int, int] = (128, 64), seed: int = 0
) -> SyntheticSet:
    """Generate ``n_ids * per_id`` pedestrian images, grouped by identity.

    Args:
        n_ids: number of identities (<= 2880).
        per_id: images per identity; with ``per_id >= 2`` every identity is seen by 2 to
            ``min(6, per_id)`` of the 6 cameras.
        size: ``(H, W)`` of the images (at least 48 x 24).
        seed: seed for ``np.random.default_rng``; the same call gives identical arrays.

    Returns:
        :class:`SyntheticSet` with ``images`` uint8 ``(N,H,W,3)``, ``labels == ids`` int64
        ``(N,)`` identity index (image ``i`` shows identity ``i // per_id``), ``cams`` int64
        ``(N,)`` in ``[0, 6)``, ``masks`` bool ``(N,H,W)`` = visible torso, shoes, bag, hat;
        ``classes[i]`` describes identity ``i``; ``part_masks`` for every part in
        :data:`PART_IDS`.
    """
    n_ids, per_id = int(n_ids), int(per_id)
    H, W = (int(s) for s in size)
    total = int(np.prod(ATTRIBUTE_SIZES))
    if not 0 <= n_ids <= total:
        raise ValueError(f"n_ids must be in [0, {total}]")
    if per_id < 1:
        raise ValueError("per_id must be >= 1")
    if H < 48 or W < 24:
        raise ValueError("size must be at least (48, 24)")
    rng = np.random.default_rng(seed)
    desc = sample_identities(rng, n_ids)
    classes = [describe(d) for d in desc]
    n = n_ids * per_id
    labels = np.repeat(np.arange(n_ids, dtype=np.int64), per_id)
    cams = _assign_cameras(rng, n_ids, per_id)
    cam_par = _camera_params(rng)
    p = _sample(rng, desc[labels], cams, cam_par, H, W)

    images = np.empty((n, H, W, 3), np.uint8)
    pid = np.empty((n, H, W), np.uint8)
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(n, s + _CHUNK))
        images[sl], pid[sl] = _render(rng, {k: v[sl] for k, v in p.items()}, H, W)

    part_masks = {
        name: np.isin(pid, ids) if len(ids) > 1 else pid == ids[0] for name, ids in PART_IDS.items()
    }
    masks = np.zeros((n, H, W), bool)
    for name in DISCRIMINATIVE:
        masks |= part_masks[name]
    return SyntheticSet(
        images=images,
        labels=labels,
        masks=masks,
        classes=classes,
        part_masks=part_masks,
        ids=labels.copy(),
        cams=cams,
        discriminative=DISCRIMINATIVE,
    )


def sample_identities(rng: np.random.Generator, n_ids: int) -> np.ndarray:
    """``n_ids`` distinct descriptors, int64 ``(n_ids, 5)``: indices into shirt colour,
    pattern, shoe colour, bag, hat. Greedy: descriptors at Hamming distance >= 2 from all
    previously chosen ones first, then any unused ones."""
    combos = np.stack(
        np.unravel_index(rng.permutation(int(np.prod(ATTRIBUTE_SIZES))), ATTRIBUTE_SIZES), 1
    )
    chosen = np.zeros(len(combos), bool)
    picked: list[np.ndarray] = []
    for i, c in enumerate(combos):
        if len(picked) >= n_ids:
            break
        if not picked or np.min(np.sum(np.stack(picked) != c, 1)) >= 2:
            picked.append(c)
            chosen[i] = True
    rest = combos[~chosen][: n_ids - len(picked)]
    out = np.concatenate([np.array(picked, np.int64).reshape(-1, 5), rest])[:n_ids]
    return out.astype(np.int64)


def describe(d: np.ndarray) -> str:
    """Human-readable identity description from a descriptor ``(5,)``."""
    shirt = list(SHIRT_COLOURS)[d[0]]
    pattern = PATTERNS[d[1]]
    text = f"{shirt} shirt" if pattern == "plain" else f"{shirt} shirt with {pattern}"
    text += f", {list(SHOE_COLOURS)[d[2]]} shoes"
    bag, hat = list(BAG_COLOURS)[d[3]], list(HAT_COLOURS)[d[4]]
    text += ", no bag" if bag == "none" else f", {bag} bag"
    text += ", no hat" if hat == "none" else f", {hat} hat"
    return text


def _assign_cameras(rng: np.random.Generator, n_ids: int, per_id: int) -> np.ndarray:
    cams = np.empty((n_ids, per_id), np.int64)
    for i in range(n_ids):
        k = int(rng.integers(2, min(N_CAMS, per_id) + 1)) if per_id >= 2 else 1
        which = rng.choice(N_CAMS, k, replace=False)
        row = np.concatenate([which, rng.choice(which, per_id - k)])
        cams[i] = rng.permutation(row)
    return cams.reshape(-1)


def _camera_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-camera appearance: colour cast, brightness, background style, figure scale."""
    c = N_CAMS
    cast = 1.0 + rng.uniform(-0.08, 0.08, (c, 3))
    cast /= cast.mean(1, keepdims=True)
    return {
        "cast": cast.astype(F32),
        "brightness": rng.uniform(0.82, 1.12, c).astype(F32),
        "wall_hsv": np.stack(
            [rng.uniform(0, 360, c), rng.uniform(0.05, 0.4, c), rng.uniform(0.45, 0.9, c)], 1
        ),
        "floor_hsv": np.stack(
            [rng.uniform(0, 360, c), rng.uniform(0.05, 0.35, c), rng.uniform(0.25, 0.7, c)], 1
        ),
        "horizon": rng.uniform(0.45, 0.8, c),
        "scale": rng.uniform(0.8, 0.92, c),
    }


def _rgb(
    table: dict | tuple, idx: np.ndarray, rng: np.random.Generator, jitter: HSV = (4.0, 0.05, 0.05)
) -> np.ndarray:
    """Colours ``(n, 3)`` from a table of HSV entries (None -> black), jittered per image."""
    vals = list(table.values()) if isinstance(table, dict) else list(table)
    hsv = np.array([v if v is not None else (0.0, 0.0, 0.0) for v in vals], float)[idx]
    n = idx.shape[0]
    h = hsv[:, 0] + rng.uniform(-jitter[0], jitter[0], n)
    s = hsv[:, 1] + rng.uniform(-jitter[1], jitter[1], n)
    v = hsv[:, 2] + rng.uniform(-jitter[2], jitter[2], n)
    return dr.hsv_to_rgb(h / 360.0, s, v)


def _sample(
    rng: np.random.Generator, desc: np.ndarray, cams: np.ndarray, cam: dict, H: int, W: int
) -> dict[str, np.ndarray]:
    """Per-image parameters (arrays with first axis N) for the identity descriptors ``desc``."""
    n = desc.shape[0]
    u = lambda lo, hi, shape=n: rng.uniform(lo, hi, shape).astype(F32)  # noqa: E731
    p: dict[str, np.ndarray] = {}

    # --- colours (palette indexed by part id) --------------------------------------------
    pal = np.zeros((n, CLUTTER0 + N_CLUTTER, 3), F32)
    shirt = _rgb(SHIRT_COLOURS, desc[:, 0], rng)
    pal[:, TORSO] = shirt
    dark = np.array([c[2] < 0.65 for c in SHIRT_COLOURS.values()])[desc[:, 0]]
    pal[:, TORSO_ALT] = np.where(dark[:, None], 0.93, 0.1)
    pal[:, SHOES] = _rgb(SHOE_COLOURS, desc[:, 2], rng)
    pal[:, BAG] = _rgb(BAG_COLOURS, desc[:, 3], rng)
    pal[:, HAT] = _rgb(HAT_COLOURS, desc[:, 4], rng)
    pal[:, LEGS] = _rgb(TROUSER_COLOURS, rng.integers(0, len(TROUSER_COLOURS), n), rng)
    pal[:, HAIR] = _rgb(HAIR_COLOURS, rng.integers(0, len(HAIR_COLOURS), n), rng)
    skin = dr.hsv_to_rgb(u(18, 32) / 360, u(0.3, 0.6), u(0.35, 0.95))
    pal[:, ARMS] = skin
    pal[:, HEAD] = skin
    pal[:, CLUTTER0:] = dr.hsv_to_rgb(
        u(0, 1, (n, N_CLUTTER)), u(0.05, 0.6, (n, N_CLUTTER)), u(0.2, 0.95, (n, N_CLUTTER))
    )
    p["palette"] = pal
    pattern = desc[:, 1]
    p["stripes_h"] = np.isin(pattern, (1, 3))
    p["stripes_v"] = np.isin(pattern, (2, 3))
    p["has_bag"] = desc[:, 3] > 0
    p["has_hat"] = desc[:, 4] > 0

    # --- figure geometry (h = figure height in pixels) ----------------------------------
    h = (cam["scale"][cams] * u(0.92, 1.06) * H).astype(F32)
    h = np.minimum(h, 0.97 * H)
    top = (H - h) * u(0.15, 0.85)
    cx = W / 2 + u(-0.1, 0.1) * W
    lean = u(-0.06, 0.06)
    hip_y = top + 0.52 * h
    hw = u(0.1, 0.125) * h
    p["h"], p["top"], p["cx"], p["lean"], p["hw"], p["hip_y"] = h, top, cx, lean, hw, hip_y
    # x of the body axis at height y (lean rotates the upper body around the hip)
    axis_x = lambda y: cx + np.sin(lean) * (hip_y - y)  # noqa: E731
    sh_y = top + 0.16 * h
    p["torso"] = np.stack([top + 0.335 * h, axis_x(top + 0.335 * h), 0.185 * h, hw, lean], 1)
    face_y = top + 0.085 * h
    p["face"] = np.stack([face_y, axis_x(face_y), 0.062 * h, 0.05 * h], 1)
    hair_ry = u(0.055, 0.1) * h
    hair_y = top + 0.06 * h + (hair_ry - 0.055 * h) * 0.8
    p["hair"] = np.stack([hair_y, axis_x(face_y), hair_ry, 0.058 * h], 1)
    hat = p["has_hat"].astype(F32)
    p["hat_crown"] = np.stack([top + 0.022 * h, axis_x(top), 0.035 * h * hat, 0.05 * h * hat], 1)
    p["hat_brim"] = np.stack([top + 0.052 * h, axis_x(top), 0.01 * h * hat, 0.078 * h * hat], 1)
    # legs: stride angle s, one leg forward, one back
    stride = u(-0.22, 0.22)
    leg_len = 0.45 * h
    legs, shoes = [], []
    facing = rng.choice(np.array([-1.0, 1.0], F32), n)
    for side, a in ((-1, stride), (1, -stride)):
        y0, x0 = hip_y - 0.02 * h, cx + side * 0.055 * h
        y1, x1 = y0 + leg_len * np.cos(a), x0 + leg_len * np.sin(a)
        legs.append(np.stack([y0, x0, y1, x1, 0.045 * h], 1))
        shoes.append(np.stack([y1 + 0.012 * h, x1 + facing * 0.025 * h, 0.028 * h, 0.055 * h], 1))
    p["legs"], p["shoes"] = np.stack(legs, 1), np.stack(shoes, 1)
    arms = []
    for side, sw in ((-1, -0.8 * stride), (1, 0.8 * stride)):
        y0 = sh_y + 0.03 * h
        x0 = axis_x(y0) + side * (hw - 0.025 * h)
        a = side * u(0.06, 0.3) + sw
        arms.append(
            np.stack([y0, x0, y0 + 0.34 * h * np.cos(a), x0 + 0.34 * h * np.sin(a), 0.03 * h], 1)
        )
    p["arms"] = np.stack(arms, 1)
    # bag hanging at one hip, strap to the opposite shoulder
    bag_side = rng.choice(np.array([-1.0, 1.0], F32), n)
    bag = p["has_bag"].astype(F32)
    bx = cx + bag_side * (hw + 0.04 * h)
    bag_hh = u(0.06, 0.085) * h
    p["bag"] = np.stack([hip_y - 0.02 * h, bx, bag_hh * bag, 0.055 * h * bag], 1)
    p["strap"] = np.stack(
        [
            hip_y - 0.02 * h - bag_hh,
            bx - bag_side * 0.01 * h,
            sh_y,
            axis_x(sh_y) - bag_side * (hw - 0.03 * h),
            0.012 * h * bag,
        ],
        1,
    )

    # --- background ------------------------------------------------------------------------
    wall = cam["wall_hsv"][cams]
    floor = cam["floor_hsv"][cams]
    p["wall"] = dr.hsv_to_rgb(
        (wall[:, 0] + u(-10, 10)) / 360, wall[:, 1] + u(-0.05, 0.05), wall[:, 2] + u(-0.08, 0.08)
    )
    p["floor"] = dr.hsv_to_rgb(
        (floor[:, 0] + u(-10, 10)) / 360, floor[:, 1] + u(-0.05, 0.05), floor[:, 2] + u(-0.08, 0.08)
    )
    p["horizon"] = ((cam["horizon"][cams] + u(-0.06, 0.06)) * H).astype(F32)
    p["vgrad"] = u(-0.25, 0.25)
    present = rng.random((n, N_CLUTTER)) < 0.55
    p["clutter"] = np.stack(
        [
            u(0, H, (n, N_CLUTTER)),
            u(0, W, (n, N_CLUTTER)),
            u(0.03, 0.2, (n, N_CLUTTER)) * H * present,
            u(0.05, 0.3, (n, N_CLUTTER)) * W * present,
        ],
        2,
    )
    p["stripe_amp"] = np.where(rng.random(n) < 0.35, u(0.05, 0.18), 0).astype(F32)
    p["stripe_freq"] = (2 * np.pi / (u(4, 14) * H / 128)).astype(F32)
    p["stripe_angle"] = u(0, np.pi)
    p["stripe_phase"] = u(0, 2 * np.pi)

    # --- lighting ------------------------------------------------------------------------
    p["gain"] = (cam["brightness"][cams] * u(0.92, 1.08)).astype(F32)
    p["cast"] = cam["cast"][cams]
    p["light_amp"] = u(0.0, 0.15)
    p["light_angle"] = u(0, 2 * np.pi)
    p["noise"] = u(0.015, 0.04)
    for k, v in p.items():
        if v.dtype == np.float64:
            p[k] = v.astype(F32)
    return p


def _render(rng: np.random.Generator, p: dict, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk: ``(uint8 images (n,H,W,3), uint8 part-id map (n,H,W))``."""
    n = p["cx"].shape[0]
    pid = np.zeros((n, H, W), np.uint8)
    for j in range(N_CLUTTER):
        cy, cx, hh, hw = p["clutter"][:, j].T
        if np.any(hh > 0):
            dr.paint(pid, dr.box(H, W, cy, cx, hh, hw), CLUTTER0 + j)
    dr.paint(pid, dr.ellipse(H, W, *p["hair"].T), HAIR)
    for i in range(2):
        dr.paint(pid, dr.capsule(H, W, *p["legs"][:, i].T), LEGS)
    for i in range(2):
        dr.paint(pid, dr.ellipse(H, W, *p["shoes"][:, i].T), SHOES)
    # torso with its pattern (stripes/checks in torso-local coordinates)
    cy, cx, hh, hw, ang = p["torso"].T
    torso = dr.box(H, W, cy, cx, hh, hw, ang)
    dr.paint(pid, torso, TORSO)
    dy, dx = dr.offsets(H, W, cy, cx)
    ux, uy = np.cos(dr.col(ang)), np.sin(dr.col(ang))
    along = (ux / dr.col(2 * hw)) * dx + (uy / dr.col(2 * hw)) * dy + F32(0.5)  # 0..1 across
    across = (ux / dr.col(2 * hh)) * dy - (uy / dr.col(2 * hh)) * dx + F32(0.5)  # 0..1 down
    alt = np.floor(across * F32(6.0)).astype(np.int16) % 2 == 1
    alt &= p["stripes_h"].reshape(-1, 1, 1)
    alt_v = np.floor(along * F32(5.0)).astype(np.int16) % 2 == 1
    alt_v &= p["stripes_v"].reshape(-1, 1, 1)
    alt ^= alt_v
    dr.paint(pid, torso & alt, TORSO_ALT)
    for i in range(2):
        dr.paint(pid, dr.capsule(H, W, *p["arms"][:, i].T), ARMS)
    y0, x0, y1, x1, r = p["strap"].T
    bag = dr.box(H, W, *p["bag"].T) | dr.band(H, W, y0, x0, y1, x1, r)
    dr.paint(pid, bag, BAG)
    dr.paint(pid, dr.ellipse(H, W, *p["face"].T), HEAD)
    hat = dr.box(H, W, *p["hat_crown"].T) | dr.box(H, W, *p["hat_brim"].T)
    dr.paint(pid, hat, HAT)

    # brightness factor: background texture / body shading, gain and illumination gradient
    is_bg = (pid == BACKGROUND) | (pid >= CLUTTER0)
    factor = dr.smooth_field(rng, n, H, W, 3)
    factor -= F32(0.5)
    factor *= F32(0.3)
    factor += F32(1.0)
    if np.any(p["stripe_amp"] > 0):
        factor += dr.col(p["stripe_amp"]) * dr.wave(
            H, W, p["stripe_freq"], p["stripe_angle"], p["stripe_phase"]
        )
    # body: simple cylindrical shading across the figure
    body = dx / dr.col(2.2 * hw)
    body *= body
    body = F32(1.0) - body
    np.maximum(body, F32(0.75), out=body)
    np.copyto(factor, body, where=~is_bg)
    ang = dr.col(p["light_angle"])
    ly, lx = dr.offsets(H, W, np.full(n, H / 2), np.full(n, W / 2))
    S = F32(max(H, W))
    grad = (np.cos(ang) / S) * lx + (np.sin(ang) / S) * ly
    grad *= dr.col(p["light_amp"])
    grad += F32(1.0)
    grad *= dr.col(p["gain"])
    factor *= grad

    # wall above the horizon, floor below, with a vertical gradient
    t = (ly + F32(H / 2)) / F32(H) - F32(0.5)  # (n, H, 1)
    upper = ly + F32(H / 2) < dr.col(p["horizon"])  # (n, H, 1)
    shade_v = F32(1.0) + dr.col(p["vgrad"]) * t
    is_plain = pid == BACKGROUND
    n_ids = p["palette"].shape[1]
    idx = pid.astype(np.int32)
    idx += (np.arange(n, dtype=np.int32) * n_ids)[:, None, None]
    out = np.empty((n, H, W, 3), np.uint8)
    noise_amp = dr.col(p["noise"] * 2.0 / 255.0)
    for c in range(3):
        plane = np.take(p["palette"][:, :, c].ravel(), idx)
        wall_floor = np.where(upper, dr.col(p["wall"][:, c]), dr.col(p["floor"][:, c]))
        wall_floor = np.broadcast_to(wall_floor * shade_v, (n, H, W))
        np.copyto(plane, wall_floor, where=is_plain)
        plane *= factor
        plane *= dr.col(p["cast"][:, c])
        noise = np.frombuffer(rng.bytes(n * H * W), np.uint8).reshape(n, H, W).astype(F32)
        noise -= F32(127.5)
        noise *= noise_amp
        plane += noise
        out[..., c] = dr.to_uint8(plane)
    return out, pid
