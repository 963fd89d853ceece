"""The synthetic street-scene renderer: a small street-like scene (sky, skyline of
buildings, a road in perspective with lane markings, trees / poles / signs as clutter)
with 2-8 objects of three classes whose silhouettes differ clearly (:data:`CLASSES`).
Objects follow a ground-plane perspective: the lower their ground contact row, the
closer and bigger they are. Fog follows the atmospheric scattering model
``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``, where the depth ``d`` of a ground
pixel grows like ``1 / (row - horizon)`` (sky and horizon are far), and every object /
clutter item takes the depth of its ground contact row, so far objects fade into the fog
while near ones stay visible.

Everything is drawn from a seed key: :func:`make_image` of the same key gives the same
pixels and boxes on every machine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .scene_objects import DRAW, jitter_color, random_color

CLASSES: Tuple[str, ...] = ("car", "person", "bus")  # in scene_objects.DRAW's order


# ---------------------------------------------------------------- scene parameters
_CLASS_PROBS = np.array([0.45, 0.35, 0.20])  # car, person, bus
_NEAR_HEIGHT = (0.21, 0.36, 0.34)  # object height at the bottom row, in units of H
_ASPECT = ((1.8, 2.3), (0.34, 0.46), (2.3, 2.9))  # width / height
_MIN_BOX = 6  # px, both sides of a (visible) box
_MIN_VISIBLE = 0.6  # fraction of an object's pixels that must stay unoccluded
_MIN_OBJECTS, _MAX_OBJECTS = 2, 8
_NEAREST_S, _FARTHEST_S = 1.0, 0.1  # object ground rows, as (row - horizon) / (H - horizon)
_DEPTH_MAX = 40.0  # sky / horizon depth; 1.0 at the bottom row
_BETA_RANGE = (0.16, 0.30)
_AIRLIGHT_RANGE = (0.80, 0.90)
# The harder target, "dusk": the scene lit at about a sixth of daylight through an orange
# (sodium-lamp) tint, in fog about one and a half times as dense, against a dim
# orange-grey sky. (Lit at 0.30-0.45 of daylight, a source-only model still scored ~68
# AP50 on it: too easy to show self-training going wrong.)
_DUSK_BETA_RANGE = (0.30, 0.45)
_DUSK_GAIN_RANGE = (0.12, 0.22)
_DUSK_TINT = (1.0, 0.72, 0.42)
_DUSK_AIRLIGHT_RANGE = (0.30, 0.42)
_DUSK_AIRLIGHT_TINT = (1.0, 0.85, 0.65)

_BUILDING_COLORS = np.array(
    [(0.55, 0.52, 0.48), (0.62, 0.55, 0.45), (0.45, 0.45, 0.50), (0.70, 0.66, 0.60), (0.50, 0.38, 0.32)],
    dtype=np.float64,
)



@dataclass
class _Object:
    category: int  # 0-based index into SYNTHETIC_CLASSES
    x0: int
    y0: int
    depth: float
    image: np.ndarray  # (h, w, 3) float32
    mask: np.ndarray  # (h, w) bool
    box: Optional[Tuple[int, int, int, int]] = None  # visible box, x0 y0 x1 y1 (inclusive)


@dataclass
class _Scene:
    image: np.ndarray  # (H, W, 3) float32 RGB in [0, 1], without fog or noise
    depth: np.ndarray  # (H, W) float32, 1 at the bottom row, _DEPTH_MAX for the sky
    horizon: int
    objects: List[_Object] = field(default_factory=list)


def _ground_depth(rows: np.ndarray, horizon: int, height: int) -> np.ndarray:
    """Pinhole ground-plane depth: 1 at the bottom row, ~1/(row - horizon) above it."""
    dist = (rows - horizon).astype(np.float32)
    with np.errstate(divide="ignore"):
        d = np.where(dist > 0, (height - 1 - horizon) / np.maximum(dist, 1e-6), _DEPTH_MAX)
    return np.minimum(d, _DEPTH_MAX).astype(np.float32)


def _visibility(objects: Sequence[_Object], H: int, W: int):
    """Paste order is far -> near. Returns per object (visible fraction, visible box)."""
    order = sorted(range(len(objects)), key=lambda i: -objects[i].depth)
    ids = np.full((H, W), -1, np.int32)
    for i in order:
        o = objects[i]
        h, w = o.mask.shape
        ids[o.y0 : o.y0 + h, o.x0 : o.x0 + w][o.mask] = i
    out = []
    for i, o in enumerate(objects):
        h, w = o.mask.shape
        vis = (ids[o.y0 : o.y0 + h, o.x0 : o.x0 + w] == i) & o.mask
        n = int(vis.sum())
        if n == 0:
            out.append((0.0, None))
            continue
        ys, xs = np.nonzero(vis)
        box = (o.x0 + int(xs.min()), o.y0 + int(ys.min()), o.x0 + int(xs.max()), o.y0 + int(ys.max()))
        out.append((n / float(o.mask.sum()), box))
    return out


def _acceptable(vis) -> bool:
    frac, box = vis
    return (
        box is not None
        and frac >= _MIN_VISIBLE
        and box[2] - box[0] + 1 >= _MIN_BOX
        and box[3] - box[1] + 1 >= _MIN_BOX
    )


def _sample_object(rng, H, W, horizon) -> Optional[_Object]:
    cat = int(rng.choice(len(CLASSES), p=_CLASS_PROBS))
    s = rng.uniform(_FARTHEST_S, _NEAREST_S)
    yc = int(round(horizon + s * (H - 1 - horizon)))  # ground contact row
    s = (yc - horizon) / float(H - 1 - horizon)
    h = int(round(_NEAR_HEIGHT[cat] * H * s * rng.uniform(0.88, 1.12)))
    w = int(round(h * rng.uniform(*_ASPECT[cat])))
    if min(h, w) < _MIN_BOX + 1 or w > W - 2 or h > yc:
        return None
    x0 = int(rng.integers(0, W - w + 1))
    img, mask = DRAW[cat](rng, h, w)
    depth = float(_ground_depth(np.array([yc]), horizon, H)[0])
    return _Object(cat, x0, yc - h + 1, depth, img, mask)


def _render_scene(rng: np.random.Generator, H: int, W: int) -> _Scene:
    """Render one clear scene (no fog, no sensor noise) with its depth map and objects."""
    img = np.empty((H, W, 3), np.float32)
    horizon = int(round(H * rng.uniform(0.34, 0.44)))
    rows = np.arange(H)
    row_depth = _ground_depth(rows, horizon, H)
    depth = np.repeat(row_depth[:, None], W, axis=1)
    s_rows = np.clip((rows - horizon) / float(H - 1 - horizon), 0.0, 1.0).astype(np.float32)

    # sky: vertical gradient + a few clouds
    top = np.array(jitter_color(rng, (0.30, 0.50, 0.82), 0.10), np.float32)
    low = np.array(jitter_color(rng, (0.75, 0.83, 0.92), 0.06), np.float32)
    t = np.linspace(0.0, 1.0, horizon + 1, dtype=np.float32)[:, None]
    img[: horizon + 1] = top * (1 - t[:, :, None]) + low * t[:, :, None]
    for _ in range(int(rng.integers(0, 4))):
        c = (int(rng.integers(0, W)), int(rng.integers(0, max(1, horizon // 2))))
        axes = (int(rng.integers(W // 16, W // 5) + 1), int(rng.integers(2, max(3, H // 20) + 1)))
        cv2.ellipse(img, c, axes, 0, 0, 360, jitter_color(rng, (0.93, 0.94, 0.96), 0.03), -1)

    # ground (sidewalks / verge) below the horizon
    side = np.array(jitter_color(rng, (0.58, 0.56, 0.52), 0.08), np.float32)
    shade = (0.85 + 0.15 * s_rows[horizon + 1 :])[:, None, None]
    img[horizon + 1 :] = side * shade

    # skyline: buildings standing on the horizon, with window grids
    build_depth = float(rng.uniform(7.0, 11.0))
    x = int(rng.integers(-W // 10, 1))
    while x < W:
        bw = int(rng.integers(max(4, W // 16), max(6, W // 5)))
        bh = int(rng.uniform(0.15, 0.9) * horizon)
        y0 = max(0, horizon - bh)
        col = jitter_color(rng, rng.choice(_BUILDING_COLORS), 0.05)
        cv2.rectangle(img, (x, y0), (x + bw - 1, horizon), col, -1)
        xa, xb = max(x, 0), min(x + bw, W)
        if xb > xa:
            depth[y0 : horizon + 1, xa:xb] = build_depth
        if rng.random() < 0.7:  # dark or lit windows
            win = jitter_color(rng, (0.25, 0.28, 0.32), 0.08)
        else:
            win = jitter_color(rng, (0.85, 0.82, 0.6), 0.05)
        ws = max(1, int(round(H / 80)))
        gap = ws + max(1, int(round(H / 80)))
        if bh > 3 * gap and bw > 3 * gap:  # a grid of ws x (ws+1) windows
            wy = np.arange(y0 + gap, horizon - ws, gap + ws)[:, None] + np.arange(ws + 1)
            wx = np.arange(x + gap // 2 + 1, x + bw - ws, gap)[:, None] + np.arange(ws)
            wy, wx = wy.ravel(), wx.ravel()
            wx = wx[(wx >= 0) & (wx < W)]
            if len(wy) and len(wx):
                img[np.ix_(wy, wx)] = win
        x += bw + int(rng.integers(0, max(2, W // 40)))

    # road in perspective: a trapezoid from the vanishing point to the bottom edge
    vx = W * rng.uniform(0.40, 0.60)
    xb = vx + W * rng.uniform(-0.12, 0.12)
    half_b = W * rng.uniform(0.38, 0.62)
    asphalt = jitter_color(rng, (0.30, 0.30, 0.32), 0.05)
    road = np.array(
        [(vx - 1, horizon), (vx + 1, horizon), (xb + half_b, H - 1), (xb - half_b, H - 1)],
        np.float32,
    )
    cv2.fillPoly(img, [np.round(road).astype(np.int32)], asphalt)
    s_g = s_rows[horizon + 1 :]
    xl = vx + (xb - half_b - vx) * s_g  # road edges per ground row
    xr = vx + (xb + half_b - vx) * s_g
    cols = np.arange(W, dtype=np.float32)[None, :]
    ground = img[horizon + 1 :]
    n_lanes = int(rng.integers(2, 4))
    paint = jitter_color(rng, (0.88, 0.88, 0.84), 0.04)
    period, phase = rng.uniform(0.35, 0.6), rng.uniform(0, 1)
    with np.errstate(divide="ignore"):
        z = 1.0 / np.maximum(s_g, 1e-6)
    dash_on = (((z / period) + phase) % 1.0) < 0.5
    lines = [(0.03, None), (0.97, None)] + [(k / n_lanes, dash_on) for k in range(1, n_lanes)]
    for frac, on in lines:
        xc = xl + frac * (xr - xl)
        hw = np.maximum(0.35, 0.008 * W * s_g)
        m = np.abs(cols - xc[:, None]) <= hw[:, None]
        m &= (s_g > 0.04)[:, None]
        if on is not None:
            m &= on[:, None]
        ground[m] = paint

    # clutter on the sidewalks: poles, signs, trees (unannotated distractors)
    for _ in range(int(rng.integers(2, 7))):
        s = rng.uniform(0.1, 0.95)
        yc = int(round(horizon + s * (H - 1 - horizon)))
        g = yc - horizon - 1
        if g < 0 or g >= len(xl):
            continue
        left = rng.random() < 0.5
        lo, hi = (0.0, xl[g] - 2) if left else (xr[g] + 2, W - 1.0)
        if hi - lo < 3:
            lo, hi = (xr[g] + 2, W - 1.0) if left else (0.0, xl[g] - 2)
            if hi - lo < 3:
                continue
        cx = int(rng.uniform(lo, hi))
        d = float(row_depth[yc])
        kind = int(rng.integers(3))
        hgt = max(4, int(round(H * s * rng.uniform(0.45, 0.7))))
        top_y = yc - hgt
        th = max(1, int(round(0.025 * H * s)))
        layer = np.zeros((H, W), np.uint8)
        pole_col = jitter_color(rng, (0.35, 0.33, 0.32) if kind != 2 else (0.35, 0.24, 0.14), 0.05)
        for tgt, c in ((img, pole_col), (layer, 255)):
            cv2.rectangle(tgt, (cx - th // 2, top_y), (cx + (th - 1) // 2, yc), c, -1)
        if kind == 1:  # sign
            rad = max(1, int(round(0.06 * H * s)))
            sc = random_color(rng, sat=(0.6, 1.0), val=(0.6, 1.0))
            for tgt, c in ((img, sc), (layer, 255)):
                cv2.circle(tgt, (cx, top_y), rad, c, -1)
        elif kind == 2:  # tree crown
            rad = max(2, int(round(hgt * rng.uniform(0.25, 0.4))))
            tc = jitter_color(rng, (0.18, 0.42, 0.16), 0.08)
            for tgt, c in ((img, tc), (layer, 255)):
                cv2.circle(tgt, (cx, top_y + rad // 3), rad, c, -1)
        depth[layer > 0] = d

    # objects: sample, reject those that would hide others (or be hidden) too much
    n_target = int(rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1))
    objects: List[_Object] = []
    vis = []
    for attempt in range(30 * _MAX_OBJECTS):
        if len(objects) >= n_target or (attempt >= 12 * n_target and len(objects) >= _MIN_OBJECTS):
            break
        cand = _sample_object(rng, H, W, horizon)
        if cand is None:
            continue
        trial_vis = _visibility(objects + [cand], H, W)
        if all(_acceptable(v) for v in trial_vis):
            objects.append(cand)
            vis = trial_vis
    for o, (_, box) in zip(objects, vis):
        o.box = box

    # contact shadows, then objects far -> near
    shadow = np.zeros((H, W), np.float32)
    for o in objects:
        h, w = o.mask.shape
        cx, cy = o.x0 + w // 2, o.y0 + h - 1
        cv2.ellipse(shadow, (cx, cy), (max(1, int(0.55 * w)), max(1, int(0.07 * h))), 0, 0, 360, 1.0, -1)
    img *= (1.0 - 0.45 * shadow)[:, :, None]
    for o in sorted(objects, key=lambda o: -o.depth):
        h, w = o.mask.shape
        img[o.y0 : o.y0 + h, o.x0 : o.x0 + w][o.mask] = o.image[o.mask]
        depth[o.y0 : o.y0 + h, o.x0 : o.x0 + w][o.mask] = o.depth

    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return _Scene(np.clip(img, 0.0, 1.0), depth, horizon, objects)


def _sample_fog(rng: np.random.Generator) -> Tuple[float, np.ndarray]:
    beta = float(rng.uniform(*_BETA_RANGE))
    a = rng.uniform(*_AIRLIGHT_RANGE)
    airlight = np.clip(a + rng.uniform(-0.015, 0.015, 3), 0.0, 1.0).astype(np.float32)
    return beta, airlight


def _apply_fog(image: np.ndarray, depth: np.ndarray, beta: float, airlight) -> np.ndarray:
    """Atmospheric scattering: ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``."""
    t = np.exp(-beta * depth.astype(np.float32))[:, :, None]
    return image * t + np.asarray(airlight, np.float32).reshape(1, 1, 3) * (1.0 - t)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _sample_dusk(rng: np.random.Generator) -> Tuple[float, np.ndarray, float, np.ndarray]:
    """Dense fog at dusk under sodium street lights: (beta, airlight, light gain, tint)."""
    beta = float(rng.uniform(*_DUSK_BETA_RANGE))
    gain = float(rng.uniform(*_DUSK_GAIN_RANGE))
    tint = np.clip(np.asarray(_DUSK_TINT) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0).astype(np.float32)
    airlight = (rng.uniform(*_DUSK_AIRLIGHT_RANGE) * np.asarray(_DUSK_AIRLIGHT_TINT)).astype(np.float32)
    return beta, airlight, gain, tint


DOMAIN_STYLES = ("clear", "foggy", "dusk")


def make_image(key: Tuple[int, ...], H: int, W: int, style: str):
    """One image from its seed key, in one of :data:`DOMAIN_STYLES`. Returns (uint8 RGB,
    scene, the drawn fog / light parameters or None). (No per-pixel sensor noise: it
    would make the PNGs ~4x larger and slower to write.)"""
    if style not in DOMAIN_STYLES:
        raise ValueError(f"style must be one of {DOMAIN_STYLES}, got {style!r}")
    scene = _render_scene(np.random.default_rng(list(key)), H, W)
    img = scene.image
    params = None
    if style == "foggy":
        beta, airlight = _sample_fog(np.random.default_rng(list(key) + [101]))
        img = _apply_fog(img, scene.depth, beta, airlight)
        params = {"beta": round(beta, 6), "airlight": [round(float(a), 6) for a in airlight]}
    elif style == "dusk":
        beta, airlight, gain, tint = _sample_dusk(np.random.default_rng(list(key) + [102]))
        img = _apply_fog(img * (gain * tint).reshape(1, 1, 3), scene.depth, beta, airlight)
        params = {"beta": round(beta, 6), "airlight": [round(float(a), 6) for a in airlight],
                  "light_gain": round(gain, 6), "tint": [round(float(c), 6) for c in tint]}
    return _to_uint8(img), scene, params
